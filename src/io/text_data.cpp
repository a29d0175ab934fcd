#include "aigc/text_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "aigc/error.h"
#include "aigc/rng.h"

namespace aigc {

std::string clean_fortune_text(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  std::istringstream in(raw);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "%") {  // record separator: keep records apart by a blank line
      if (!out.empty() && out.back() == '\n' && (out.size() < 2 || out[out.size() - 2] != '\n')) out += '\n';
      continue;
    }
    std::string clean;
    for (size_t i = 0; i < line.size(); i++) {
      if (line[i] == '\x1b' && i + 1 < line.size() && line[i + 1] == '[') {  // CSI ... final byte in @..~
        size_t j = i + 2;
        while (j < line.size() && !(line[j] >= 0x40 && line[j] <= 0x7e)) j++;
        i = j;
        continue;
      }
      clean += line[i];
    }
    out += clean;
    out += '\n';
  }
  return out;
}

std::string read_text_corpus(const std::vector<std::string>& paths) {
  AIGC_CHECK(!paths.empty(), "no training text given");
  std::string all;
  for (const std::string& p : paths) {
    std::ifstream f(p, std::ios::binary);
    AIGC_CHECK(f.good(), "cannot open text file '" + p + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string raw = ss.str();
    bool fortune = raw.find("\n%\n") != std::string::npos;
    all += fortune ? clean_fortune_text(raw) : raw;
  }
  AIGC_CHECK(!all.empty(), "the training text is empty");
  return all;
}

namespace {
const char* kFortuneDir = "/usr/share/games/fortunes";

// English fortune files: every plain file of the fortunes directory except the index files (.dat), the
// .u8 aliases, ASCII drawings and the Chinese collections.
std::vector<std::string> english_fortune_files() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kFortuneDir, ec)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    std::string name = e.path().filename().string();
    if (e.path().has_extension() || name == "ascii-art" || name == "chinese" || name == "tang300" || name == "song100")
      continue;
    files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());  // directory order is not stable across machines
  return files;
}
}  // namespace

std::vector<std::string> resolve_corpus(const std::vector<std::string>& data) {
  if (data.size() == 1 && (data[0] == "fortunes" || data[0] == "poems")) {
    std::vector<std::string> files;
    if (data[0] == "fortunes") {
      files = english_fortune_files();
      AIGC_CHECK(!files.empty(),
                 "the built-in corpus 'fortunes' (Debian packages fortunes, fortunes-min) is not "
                 "installed in " +
                     std::string(kFortuneDir) + "; run scripts/setup.sh or pass --data FILE");
    } else {
      for (const char* name : {"tang300", "song100"}) {
        std::string p = std::string(kFortuneDir) + "/" + name;
        if (std::filesystem::exists(p)) files.push_back(p);
      }
      AIGC_CHECK(!files.empty(),
                 "the built-in corpus 'poems' (Debian package fortunes-zh) is not installed; run "
                 "scripts/setup.sh or pass --data FILE");
    }
    return files;
  }
  return data.empty() ? resolve_corpus({"fortunes"}) : data;
}

TokenLoader::TokenLoader(std::vector<int32_t> tokens, int64_t B, int64_t T, uint64_t seed, int rank, int world,
                         int64_t accum)
    : tokens_(std::move(tokens)), B_(B), T_(T), cursor_(rank, world, accum) {
  n_windows_ = (int64_t(tokens_.size()) - 1) / T_;
  AIGC_CHECK(n_windows_ >= 1, "the text has " + std::to_string(tokens_.size()) + " tokens; at least " +
                                  std::to_string(T_ + 1) + " are needed for context length " + std::to_string(T_));
  order_.resize(size_t(n_windows_));
  for (int64_t i = 0; i < n_windows_; i++) order_[size_t(i)] = i;
  Rng rng(seed);
  for (int64_t i = n_windows_ - 1; i > 0; i--) std::swap(order_[size_t(i)], order_[rng.next_u64() % uint64_t(i + 1)]);
}

void TokenLoader::next(Tensor& idx, Tensor& targets) {
  const int64_t g = cursor_.next();
  int32_t* x = idx.i32();
  int32_t* y = targets.i32();
  for (int64_t b = 0; b < B_; b++) {
    int64_t w = (g * B_ + b) % n_windows_;
    const int32_t* src = tokens_.data() + order_[size_t(w)] * T_;
    for (int64_t t = 0; t < T_; t++) {
      x[b * T_ + t] = src[t];
      y[b * T_ + t] = src[t + 1];
    }
  }
}

}  // namespace aigc

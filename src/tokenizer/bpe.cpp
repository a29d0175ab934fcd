// Byte-level BPE as GPT-2 does it: repeatedly take the adjacent pair of lowest rank and merge every occurrence of
// it left to right (non-overlapping), until no pair has a rank. Ranks are keyed by the pair itself, as in GPT-2's
// encoder.py, Hugging Face tokenizers and llama.cpp. (The npm gpt-3-encoder, the first oracle, keys them by the
// string first + "," + second, so around commas a pair can borrow another merge's rank; aigc does not copy that:
// on GPT-2's vocabulary no input is known where it changes the ids, and llama.cpp is the oracle for vocabularies
// where it would, tests/test_llama_cpp.cpp.)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "aigc/error.h"
#include "aigc/json_brief.h"
#include "tokenizer_internal.h"

namespace fs = std::filesystem;

namespace aigc::tok {

const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; b++) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[size_t(b)] = printable ? char32_t(b) : next++;
    }
    return t;
  }();
  return table;
}

std::string bytes_to_gpt2_text(std::string_view bytes) {
  const auto& t = byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(out, t[static_cast<unsigned char>(c)]);
  return out;
}

std::optional<std::string> gpt2_text_to_bytes(std::string_view s) {
  static const std::array<int, 324> inverse = [] {
    std::array<int, 324> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; b++) inv[byte_to_unicode()[size_t(b)]] = b;
    return inv;
  }();
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_len_at(s, i);
    if (!len) return std::nullopt;
    char32_t cp = utf8_decode_valid(s, i, len);
    if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
    out += char(inverse[cp]);
    i += len;
  }
  return out;
}

}  // namespace aigc::tok

namespace aigc {
std::vector<std::string> gpt2_byte_alphabet() {
  std::vector<std::string> out;
  for (int b = 0; b < 256; b++) out.push_back(tok::bytes_to_gpt2_text(std::string(1, char(b))));
  return out;
}
}  // namespace aigc

namespace aigc::tok {

// ---- BpeTokenizer ----

BpeTokenizer::BpeTokenizer(std::vector<std::string> vocab, const std::vector<std::pair<int, int>>& merges,
                           const std::string& source)
    : text_(std::move(vocab)), merges_(merges) {
  std::unordered_map<std::string, int> id_of;
  id_of.reserve(text_.size() * 2);
  tokens_.reserve(text_.size());
  for (size_t id = 0; id < text_.size(); id++) {
    std::optional<std::string> raw = gpt2_text_to_bytes(text_[id]);
    AIGC_CHECK(raw && !raw->empty(), source + ": token \"" + text_[id] + "\" (id " + std::to_string(id) +
                                         ") is empty or has a character outside GPT-2's byte alphabet");
    tokens_.push_back(std::move(*raw));
    auto [it, fresh] = id_of.emplace(text_[id], int(id));
    AIGC_CHECK(fresh, source + ": token \"" + text_[id] + "\" appears twice (ids " + std::to_string(it->second) +
                          " and " + std::to_string(id) + ")");
  }
  for (int b = 0; b < 256; b++) {
    std::string t;
    append_utf8(t, byte_to_unicode()[size_t(b)]);
    auto it = id_of.find(t);
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", unsigned(b));
    AIGC_CHECK(it != id_of.end(), source + ": the vocabulary lacks the single-byte token \"" + t + "\" for byte " +
                                      hex + "; byte-level BPE needs all 256");
    byte_id_[size_t(b)] = it->second;
  }
  if (auto it = id_of.find("<|endoftext|>"); it != id_of.end()) eos_ = it->second;

  // (left, right) -> rank and result; a pair listed twice takes its later rank, as a Python dict would.
  table_.reserve(merges_.size() * 2);
  for (size_t r = 0; r < merges_.size(); r++) {
    auto [a, b] = merges_[r];
    AIGC_CHECK(a >= 0 && b >= 0 && size_t(a) < text_.size() && size_t(b) < text_.size(),
               source + ": merge " + std::to_string(r) + " names an unknown token id");
    auto xy = id_of.find(text_[size_t(a)] + text_[size_t(b)]);
    AIGC_CHECK(xy != id_of.end(),
               source + ": merge result \"" + text_[size_t(a)] + text_[size_t(b)] + "\" is not in the vocabulary");
    table_[key(a, b)] = Merge{uint32_t(r), xy->second};
  }
}

std::string BpeTokenizer::decode_token(int id) const {
  AIGC_CHECK(id >= 0 && size_t(id) < tokens_.size(), "BPE tokenizer: token id " + std::to_string(id) +
                                                         " is out of range (vocabulary of " +
                                                         std::to_string(tokens_.size()) + ")");
  return tokens_[size_t(id)];
}

// Merges lowest rank first over a linked list, with a heap of (rank, position). Each round takes every place the
// lowest-ranked pair occurs (one rank is one pair) and merges them left to right, skipping overlaps.
void BpeTokenizer::apply_merges(std::vector<int>& sym) const {
  const int n = int(sym.size());
  if (n < 2) return;
  std::vector<int> next(sym.size()), prev(sym.size());
  for (int i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> heap;
  auto rank_at = [&](int p) -> int64_t {
    if (p < 0 || sym[p] < 0 || next[p] < 0) return -1;
    const Merge* m = find_merge(sym[p], sym[next[p]]);
    return m ? int64_t(m->rank) : -1;
  };
  auto push = [&](int p) {
    int64_t r = rank_at(p);
    if (r >= 0) heap.push((uint64_t(r) << 32) | uint32_t(p));
  };
  for (int i = 0; i + 1 < n; i++) push(i);
  std::vector<int> cand;
  while (!heap.empty()) {
    const uint64_t r = heap.top() >> 32;
    cand.clear();
    while (!heap.empty() && (heap.top() >> 32) == r) {
      int p = int(uint32_t(heap.top()));
      heap.pop();
      if ((cand.empty() || cand.back() != p) && rank_at(p) == int64_t(r)) cand.push_back(p);
    }
    if (cand.empty()) continue;
    const int result = find_merge(sym[cand.back()], sym[next[cand.back()]])->result;
    for (int p : cand) {
      // A candidate still holds the pair unless the merge just left of it took its first symbol.
      const int q = next[p];
      if (sym[p] < 0 || q < 0) continue;
      sym[p] = result;
      sym[q] = -1;
      next[p] = next[q];
      if (next[q] >= 0) prev[next[q]] = p;
      push(prev[p]);
      push(p);
    }
  }
  sym.erase(std::remove(sym.begin(), sym.end(), -1), sym.end());
}

void BpeTokenizer::encode_chunk(std::string_view chunk, std::vector<int>& out) const {
  if (chunk.size() == 1) {
    out.push_back(byte_id_[static_cast<unsigned char>(chunk[0])]);
    return;
  }
  constexpr size_t kMaxCachedLen = 64, kMaxCacheEntries = 1 << 18;
  const bool cacheable = chunk.size() <= kMaxCachedLen;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(std::string(chunk));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> sym;
  sym.reserve(chunk.size());
  for (char c : chunk) sym.push_back(byte_id_[static_cast<unsigned char>(c)]);
  apply_merges(sym);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // bounded memory on huge, varied inputs
    cache_.emplace(std::string(chunk), std::move(sym));
  }
}

std::vector<int> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  out.reserve(text.size() / 3 + 1);
  gpt2_split_each(text, [&](std::string_view chunk) { encode_chunk(chunk, out); });
  return out;
}

std::string BpeTokenizer::to_json() const {
  nlohmann::json merges = nlohmann::json::array();
  for (auto [a, b] : merges_) merges.push_back(text_[size_t(a)] + " " + text_[size_t(b)]);
  nlohmann::json j = {{"kind", "bpe"}, {"vocab", text_}, {"merges", std::move(merges)}};
  return j.dump();
}

std::unique_ptr<Tokenizer> bpe_from_texts(const std::vector<std::string>& vocab_text,
                                          const std::vector<std::string>& merge_lines,
                                          const std::vector<std::string>& merge_where, const std::string& source) {
  std::unordered_map<std::string, int> id_of;
  id_of.reserve(vocab_text.size() * 2);
  for (size_t i = 0; i < vocab_text.size(); i++) {
    auto [it, fresh] = id_of.emplace(vocab_text[i], int(i));
    AIGC_CHECK(fresh, source + ": token \"" + vocab_text[i] + "\" appears twice (ids " + std::to_string(it->second) +
                          " and " + std::to_string(i) + ")");
  }
  std::vector<std::pair<int, int>> merges;
  merges.reserve(merge_lines.size());
  std::unordered_map<uint64_t, size_t> seen;  // pair -> index of its first merge line
  seen.reserve(merge_lines.size() * 2);
  for (size_t i = 0; i < merge_lines.size(); i++) {
    const std::string& where = merge_where[i];
    std::istringstream fields(merge_lines[i]);
    std::string a, b, extra;
    fields >> a >> b;
    AIGC_CHECK(!b.empty() && !(fields >> extra),
               where + ": expected two tokens separated by a space, got \"" + merge_lines[i] + "\"");
    auto ia = id_of.find(a), ib = id_of.find(b);
    AIGC_CHECK(ia != id_of.end(), where + ": unknown token \"" + a + "\" (not in the vocabulary)");
    AIGC_CHECK(ib != id_of.end(), where + ": unknown token \"" + b + "\" (not in the vocabulary)");
    AIGC_CHECK(id_of.count(a + b), where + ": merge result \"" + a + b + "\" is not in the vocabulary");
    auto [it, fresh] = seen.emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second), i);
    AIGC_CHECK(fresh, where + ": duplicate merge \"" + a + " " + b + "\" (first at " + merge_where[it->second] + ")");
    merges.emplace_back(ia->second, ib->second);
  }
  return std::make_unique<BpeTokenizer>(vocab_text, merges, source);
}

}  // namespace aigc::tok

namespace aigc {
namespace {

std::string read_whole_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  AIGC_CHECK(f.good(), "cannot open '" + p.string() + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  AIGC_CHECK(!f.bad(), "error reading '" + p.string() + "'");
  return ss.str();
}

// Vocabulary file: a JSON object mapping token text to id, ids dense 0..n-1.
std::vector<std::string> read_vocab_json(const fs::path& p) {
  const std::string name = p.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_whole_file(p));
  } catch (const nlohmann::json::exception& e) {
    fail(name + ": malformed JSON: " + e.what());
  }
  AIGC_CHECK(j.is_object(), name + ": expected a JSON object mapping token text to id");
  std::vector<std::string> vocab(j.size());
  std::vector<bool> used(j.size(), false);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& tok = it.key();
    AIGC_CHECK(it->is_number_integer(),
               name + ": token \"" + tok + "\": id must be an integer, got " + json_brief(*it));
    int64_t id = it->get<int64_t>();
    AIGC_CHECK(id >= 0 && id < int64_t(vocab.size()),
               name + ": token \"" + tok + "\" has id " + std::to_string(id) + "; ids must be dense, 0.." +
                   std::to_string(int64_t(vocab.size()) - 1) + " for " + std::to_string(vocab.size()) + " tokens");
    AIGC_CHECK(!used[size_t(id)], name + ": id " + std::to_string(id) + " is used by both \"" + vocab[size_t(id)] +
                                      "\" and \"" + tok + "\"");
    used[size_t(id)] = true;
    vocab[size_t(id)] = tok;
  }
  return vocab;
}

// Finds the (vocab, merges) file pair from a directory or from either file.
std::pair<fs::path, fs::path> resolve_bpe_files(const std::string& path) {
  fs::path p(path);
  AIGC_CHECK(fs::exists(p), "BPE tokenizer: '" + path + "' does not exist");
  auto both = [](const fs::path& dir, const char* v, const char* m) {
    return fs::is_regular_file(dir / v) && fs::is_regular_file(dir / m);
  };
  if (fs::is_directory(p)) {
    if (both(p, "vocab.json", "merges.txt")) return {p / "vocab.json", p / "merges.txt"};
    if (both(p, "encoder.json", "vocab.bpe")) return {p / "encoder.json", p / "vocab.bpe"};
    fail("BPE tokenizer: directory '" + path + "' holds neither vocab.json + merges.txt nor encoder.json + vocab.bpe");
  }
  fs::path dir = p.parent_path();
  std::string fname = p.filename().string();
  auto sibling = [&](std::initializer_list<const char*> names) -> fs::path {
    for (const char* n : names)
      if (fs::is_regular_file(dir / n)) return dir / n;
    std::string list;
    for (const char* n : names) list += (list.empty() ? "" : " or ") + std::string(n);
    fail("BPE tokenizer: '" + path + "' has no " + list + " next to it");
  };
  if (fname == "vocab.json") return {p, sibling({"merges.txt", "vocab.bpe"})};
  if (fname == "encoder.json") return {p, sibling({"vocab.bpe", "merges.txt"})};
  if (fname == "merges.txt") return {sibling({"vocab.json", "encoder.json"}), p};
  if (fname == "vocab.bpe") return {sibling({"encoder.json", "vocab.json"}), p};
  if (p.extension() == ".json") return {p, sibling({"merges.txt", "vocab.bpe"})};
  return {sibling({"vocab.json", "encoder.json"}), p};
}

// Writes a file atomically: temp file in the same directory, fsync, rename over the target.
void write_file_atomic(const fs::path& target, const std::string& data) {
  std::string base = ".";
  base += target.filename().string();
  base += ".tmp.XXXXXX";
  std::string tmpl = (target.parent_path() / base).string();
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  int fd = ::mkstemp(name.data());
  AIGC_CHECK(fd >= 0, "cannot create a temporary file next to '" + target.string() + "': " + std::strerror(errno));
  std::string tmp(name.data());
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("cannot write '" + tmp + "': " + err);
    }
    done += size_t(w);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail("cannot write '" + tmp + "': " + err);
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail("cannot rename '" + tmp + "' to '" + target.string() + "': " + err);
  }
  int dfd = ::open(target.parent_path().empty() ? "." : target.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {  // make the rename itself durable; best effort
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path) {
  auto [vocab_path, merges_path] = resolve_bpe_files(path);
  std::vector<std::string> vocab = read_vocab_json(vocab_path);
  std::string text = read_whole_file(merges_path);
  std::vector<std::string> lines, where;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    line_no++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    lines.push_back(std::move(line));
    where.push_back(merges_path.string() + ":" + std::to_string(line_no));
  }
  return tok::bpe_from_texts(vocab, lines, where, vocab_path.string());
}

void save_bpe_tokenizer(const Tokenizer& bpe, const std::string& dir) {
  const auto* t = dynamic_cast<const tok::BpeTokenizer*>(&bpe);
  AIGC_CHECK(t, "save_bpe_tokenizer: expected a BPE tokenizer, got a '" + bpe.kind() + "' tokenizer");
  std::error_code ec;
  fs::create_directories(dir, ec);
  AIGC_CHECK(!ec, "cannot create directory '" + dir + "': " + ec.message());
  // One line, keys in id order, like GPT-2's encoder.json.
  std::string vocab = "{";
  const auto& text = t->vocab_text();
  for (size_t id = 0; id < text.size(); id++)
    vocab += (id ? ", " : "") + nlohmann::json(text[id]).dump() + ": " + std::to_string(id);
  vocab += "}\n";
  std::string merges = "#version: 0.2\n";
  for (auto [a, b] : t->merges()) merges += text[size_t(a)] + " " + text[size_t(b)] + "\n";
  write_file_atomic(fs::path(dir) / "vocab.json", vocab);
  write_file_atomic(fs::path(dir) / "merges.txt", merges);
}

}  // namespace aigc

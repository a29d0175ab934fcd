// Checkpoints: aigc files round trip exactly; Hugging Face GPT-2 directories load (Conv1D layout, optional
// "transformer." prefix, mask buffers, tied or separate lm_head); damaged files fail with clear errors.
#include <gtest/gtest.h>

#include "test_util.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/safetensors.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

GPTConfig tiny() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 12, c.vocab_size = 256;
  return c;
}

std::vector<float> logits_of(GPT& m) {
  NoGradGuard ng;
  return m.forward(Tensor::from_ints({1, 50, 200, 7, 9, 255}, {1, 6})).to_vector();
}

// Writes `m` as a Hugging Face GPT-2 directory: Conv1D (in, out) projections, mask buffers, optional prefix.
void write_hf_dir(GPT& m, const fs::path& dir, bool prefix, bool separate_head) {
  const GPTConfig& c = m.config();
  nlohmann::json cfg = {{"model_type", "gpt2"},
                        {"n_layer", c.n_layer},
                        {"n_head", c.n_head},
                        {"n_embd", c.n_embd},
                        {"n_positions", c.block_size},
                        {"vocab_size", c.vocab_size},
                        {"activation_function", "gelu_new"},
                        {"layer_norm_epsilon", 1e-5}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  std::vector<std::vector<float>> keep;  // owns transposed copies
  std::vector<StTensorOut> out;
  std::string pre = prefix ? "transformer." : "";
  for (const Param& p : m.params().params()) {
    bool conv1d = p.name.ends_with(".weight") &&
                  (p.name.find(".attn.") != std::string::npos || p.name.find(".mlp.") != std::string::npos);
    if (!conv1d) {
      out.push_back({pre + p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
      continue;
    }
    int64_t O = p.value.size(0), I = p.value.size(1);
    std::vector<float> t(size_t(O * I));
    for (int64_t o = 0; o < O; o++)
      for (int64_t i = 0; i < I; i++) t[size_t(i * O + o)] = p.value.f32()[o * I + i];
    keep.push_back(std::move(t));
    out.push_back({pre + p.name, StDType::F32, {I, O}, keep.back().data(), size_t(O * I) * 4});
  }
  // The causal-mask buffers real GPT-2 files carry are not parameters.
  std::vector<float> mask(size_t(c.block_size * c.block_size), 1.0f);
  for (int64_t l = 0; l < c.n_layer; l++)
    out.push_back({pre + "h." + std::to_string(l) + ".attn.bias",
                   StDType::F32,
                   {1, 1, c.block_size, c.block_size},
                   mask.data(),
                   mask.size() * 4});
  std::vector<float> head;
  if (separate_head) {
    head.assign(m.params().data(), m.params().data() + c.vocab_size * c.n_embd);  // wte is the first parameter
    for (float& v : head) v *= 0.5f;
    out.push_back({"lm_head.weight", StDType::F32, {c.vocab_size, c.n_embd}, head.data(), head.size() * 4});
  }
  write_safetensors((dir / "model.safetensors").string(), out, {{"format", "pt"}});
  // A byte-level BPE vocabulary (256 byte tokens, no merges) in GPT-2's file format.
  save_bpe_tokenizer(*train_bpe_tokenizer("ab", 256), dir.string());
}

}  // namespace

TEST(Checkpoint, SaveLoadRoundTripIsExact) {
  fs::path d = aigc::testing::fresh_temp_dir("ckpt_rt");
  GPT m(tiny());
  m.init_weights(3);
  auto tok = make_bytes_tokenizer();
  save_checkpoint((d / "c.safetensors").string(), m, *tok, nullptr, "{\"step\": 5}");
  LoadedModel lm = load_model((d / "c.safetensors").string());
  EXPECT_EQ(lm.model->config().to_json(), m.config().to_json());
  EXPECT_EQ(lm.tokenizer->kind(), "bytes");
  EXPECT_EQ(lm.train_state, "{\"step\": 5}");
  EXPECT_EQ(logits_of(*lm.model), logits_of(m));
  fs::remove_all(d);
}

TEST(Checkpoint, HuggingFaceGpt2Directory) {
  for (bool prefix : {false, true}) {
    fs::path d = aigc::testing::fresh_temp_dir(prefix ? "hf_prefix" : "hf");
    GPT m(tiny());
    m.init_weights(4);
    write_hf_dir(m, d, prefix, false);
    LoadedModel lm = load_model(d.string());
    EXPECT_TRUE(lm.model->config().tie_embeddings);
    EXPECT_EQ(lm.tokenizer->kind(), "bpe");
    EXPECT_EQ(logits_of(*lm.model), logits_of(m)) << "prefix " << prefix;
    fs::remove_all(d);
  }
}

TEST(Checkpoint, HuggingFaceSeparateLmHead) {
  fs::path d = aigc::testing::fresh_temp_dir("ckpt_hf_head");
  GPT m(tiny());
  m.init_weights(5);
  write_hf_dir(m, d, true, true);
  LoadedModel lm = load_model(d.string());
  EXPECT_FALSE(lm.model->config().tie_embeddings);
  const Param* head = lm.model->params().find("lm_head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->value.f32()[3], 0.5f * m.params().data()[3]);
  fs::remove_all(d);
}

TEST(Checkpoint, DamagedFilesFailClearly) {
  fs::path d = aigc::testing::fresh_temp_dir("ckpt_bad");
  GPT m(tiny());
  auto tok = make_bytes_tokenizer();
  std::string path = (d / "c.safetensors").string();
  save_checkpoint(path, m, *tok, nullptr, "");
  std::string bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 100));  // truncated
  try {
    load_model(path);
    FAIL() << "a truncated checkpoint loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_model((d / "missing.safetensors").string()), Error);
  fs::remove_all(d);
}

TEST(Checkpoint, InterruptedWriteKeepsThePreviousFile) {
  fs::path d = aigc::testing::fresh_temp_dir("ckpt_atomic");
  std::string path = (d / "f.bin").string();
  write_file_atomic(path, "old contents");
  {
    AtomicFileWriter w(path);
    w.write("new", 3);
    // destroyed without commit(), as when the process dies mid-save
  }
  EXPECT_EQ(read_file(path), "old contents");
  int entries = 0;
  for (auto& e : fs::directory_iterator(d)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1) << "the temporary file was left behind";
  fs::remove_all(d);
}

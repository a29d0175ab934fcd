// Parity with PyTorch (the oracles: reference/torch/torch_gpt_oracle.py, and torch_llama_oracle.py, a twin of
// Hugging Face's LlamaForCausalLM with its state-dict keys; run in float64 by Debian's python3-torch): logits,
// loss, every parameter's gradient, and every parameter after one AdamW step, for every GPT variant.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/models/gpt.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

struct MaxErr {
  double abs = 0, rel = 0;
  std::string where;
};

// Largest |a - b| / (|b| + floor) over all elements; floor keeps near-zero entries from dominating. An element that
// cancels far below its tensor's scale (a tied embedding's row summed from terms near the tensor's peak) keeps the
// rounding of those terms, so the floor is at least 1e-3 of the tensor's largest value.
void compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double rtol,
             double floor, MaxErr& worst, const std::vector<bool>* mask = nullptr) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double peak = 0;
  for (float w : want) peak = std::max(peak, std::abs(double(w)));
  floor = std::max(floor, 1e-3 * peak);
  for (size_t i = 0; i < got.size(); i++) {
    if (mask && !(*mask)[i]) continue;
    double d = std::abs(double(got[i]) - double(want[i]));
    double rel = d / (std::abs(double(want[i])) + floor);
    if (rel > worst.rel) worst = {d, rel, what + "[" + std::to_string(i) + "]"};
    ASSERT_LE(rel, rtol) << what << "[" << i << "]: aigc " << got[i] << " vs torch " << want[i]
                         << " (largest |value| of the tensor " << peak << ")";
  }
}

void run_parity(GPTConfig cfg, const char* label) {
  const int64_t B = 2, T = 8;
  GPT model(cfg);
  model.init_weights(42);
  {  // Qwen2's q, k and v biases start at zero: random ones, so that the oracle checks how they are added
    Rng brng(11);
    NoGradGuard ng;
    for (const Param& p : model.params().params())
      if (p.name.find("self_attn.") != std::string::npos && p.name.ends_with(".bias"))
        init::normal(p.value, 0.0f, 0.5f, brng);
  }
  Rng rng(7);
  std::vector<int32_t> idx(B * T), tgt(B * T);
  for (auto& v : idx) v = int32_t(rng.next_u64() % uint64_t(cfg.vocab_size));
  for (auto& v : tgt) v = int32_t(rng.next_u64() % uint64_t(cfg.vocab_size));
  OptimConfig oc;
  oc.lr = 1e-3f, oc.beta1 = 0.9f, oc.beta2 = 0.95f, oc.eps = 1e-8f, oc.weight_decay = 0.1f;

  fs::path dir = aigc::testing::fresh_temp_dir("parity_" + std::string(label));
  std::vector<StTensorOut> tensors = {{"idx", StDType::I32, {B, T}, idx.data(), idx.size() * 4},
                                      {"targets", StDType::I32, {B, T}, tgt.data(), tgt.size() * 4}};
  for (const Param& p : model.params().params())
    tensors.push_back({p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  nlohmann::json oj = {
      {"lr", oc.lr}, {"beta1", oc.beta1}, {"beta2", oc.beta2}, {"eps", oc.eps}, {"weight_decay", oc.weight_decay}};
  write_safetensors((dir / "in.safetensors").string(), tensors, {{"config", cfg.to_json()}, {"optim", oj.dump()}});

  const char* oracle = cfg.is_llama() ? "torch_llama_oracle.py " : "torch_gpt_oracle.py ";
  std::string cmd = "/usr/bin/python3 " + std::string(AIGC_SOURCE_DIR) + "/reference/torch/" + oracle +
                    (dir / "in.safetensors").string() + " " + (dir / "out.safetensors").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the PyTorch oracle failed (is python3-torch installed? run "
                                            "scripts/setup.sh): "
                                         << cmd;
  SafeTensorsReader ref((dir / "out.safetensors").string());

  Tensor x = Tensor::from_ints(idx, {B, T}), y = Tensor::from_ints(tgt, {B, T});
  model.params().zero_grad();
  Tensor logits = model.forward(x);
  Tensor loss = ops::cross_entropy(logits, y);
  backward(loss);

  MaxErr e_fwd, e_grad, e_step;
  compare("logits", logits.to_vector(), ref.read_f32("logits"), 1e-4, 1e-3, e_fwd);
  compare("loss", loss.to_vector(), ref.read_f32("loss"), 1e-5, 0.0, e_fwd);
  std::map<std::string, std::vector<float>> ref_grads;
  for (const Param& p : model.params().params()) {
    ref_grads[p.name] = ref.read_f32("grad." + p.name);
    compare("grad." + p.name, p.value.grad().to_vector(), ref_grads[p.name], 1e-4, 1e-4, e_grad);
  }
  Optimizer opt(model.params(), oc);
  opt.step(oc.lr);
  for (const Param& p : model.params().params()) {
    // AdamW's first step moves each weight by ~lr * g / (|g| + eps): where |g| is at fp32 rounding level the
    // update direction is noise (e.g. the key part of attn.c_attn.bias, whose exact gradient is 0). Compare the
    // elements whose reference gradient is well above that level, and require that they are the vast majority.
    const std::vector<float>& g = ref_grads[p.name];
    std::vector<bool> mask(g.size());
    for (size_t i = 0; i < g.size(); i++) mask[i] = std::abs(g[i]) > 1e-5f;
    compare("param." + p.name, p.value.to_vector(), ref.read_f32("param." + p.name), 1e-5, 1e-3, e_step, &mask);
  }
  std::printf("[%s] worst relative error: forward %.2e (%s), gradients %.2e (%s), after AdamW %.2e (%s)\n", label,
              e_fwd.rel, e_fwd.where.c_str(), e_grad.rel, e_grad.where.c_str(), e_step.rel, e_step.where.c_str());
  fs::remove_all(dir);
}

GPTConfig small(GPTConfig c) {
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 16, c.vocab_size = 37;
  return c;
}

}  // namespace

TEST(Parity, Gpt2VariantMatchesPyTorch) { run_parity(small(GPTConfig::gpt2_style()), "gpt2"); }
TEST(Parity, TransformerVariantMatchesPyTorch) { run_parity(small(GPTConfig::transformer_style()), "transformer"); }

// Llama: 4 query heads sharing 2 kv heads, an untied head, llama3 frequency scaling (all three bands occur).
TEST(Parity, LlamaGroupedQueryMatchesPyTorch) {
  GPTConfig c = small(GPTConfig::llama_style());
  c.n_head = 4, c.n_kv_head = 2, c.n_hidden = 40, c.rope_theta = 500000.0f;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0f, c.rope_scaling.original_max_position = 64;
  run_parity(c, "llama-gqa");
}

// Qwen2: biased q, k and v projections, 6 query heads sharing 2 kv heads, a tied head, rope theta 1e6.
TEST(Parity, Qwen2BiasedProjectionsMatchPyTorch) {
  GPTConfig c = small(GPTConfig::llama_style());
  c.n_head = 6, c.n_kv_head = 2, c.head_dim = 8, c.qkv_bias = true, c.tie_embeddings = true, c.rope_theta = 1e6f;
  run_parity(c, "qwen2");
}

// Multi-query attention (one kv head), a tied head, a head size unlike n_embd / n_head, linear scaling.
TEST(Parity, LlamaTiedMultiQueryMatchesPyTorch) {
  GPTConfig c = small(GPTConfig::llama_style());
  c.n_head = 2, c.n_kv_head = 1, c.head_dim = 12, c.tie_embeddings = true, c.ln_eps = 1e-6f;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 2.0f;
  run_parity(c, "llama-mqa");
}

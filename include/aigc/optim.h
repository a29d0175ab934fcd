// Optimizers over a ParamStore's flat buffers (PyTorch semantics), learning-rate schedules and gradient clipping.
#pragma once
#include <string>

#include "aigc/params.h"

namespace aigc {

struct OptimConfig {
  std::string name = "adamw";  // "adamw" | "adam" | "sgd"
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;  // applied only to parameters marked decay (matrices, embeddings)
  float momentum = 0.9f;      // sgd
};

class Optimizer {
 public:
  Optimizer(ParamStore& params, const OptimConfig& cfg);
  // One update from the gradients in params.grad(); lr overrides cfg.lr (for schedules).
  void step(float lr);
  int64_t steps() const { return t_; }
  const OptimConfig& config() const { return cfg_; }
  // State buffers (m and v for Adam, the momentum buffer as m for SGD), same layout as the parameters.
  Tensor& m() { return m_; }
  Tensor& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  ParamStore& params_;
  OptimConfig cfg_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

// lr at step `step` (0-based): linear warmup over `warmup` steps, then cosine decay to min_lr at `total`.
// "constant" ignores everything but warmup.
float lr_at(const std::string& schedule, int64_t step, float lr, float min_lr, int64_t warmup, int64_t total);

// L2 norm of all gradients; scales them down to max_norm when larger (max_norm <= 0: no clipping).
double clip_grad_norm(ParamStore& params, double max_norm);

}  // namespace aigc

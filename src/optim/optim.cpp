#include "aigc/optim.h"

#include <cmath>

#include "aigc/backend.h"
#include "aigc/error.h"

namespace aigc {

Optimizer::Optimizer(ParamStore& params, const OptimConfig& cfg) : params_(params), cfg_(cfg) {
  AIGC_CHECK(cfg.name == "adamw" || cfg.name == "adam" || cfg.name == "sgd",
             "optimizer must be adamw, adam or sgd; got \"" + cfg.name + "\"");
  m_ = Tensor::zeros({params.numel()});
  if (cfg.name != "sgd") v_ = Tensor::zeros({params.numel()});
}

void Optimizer::step(float lr) {
  t_++;
  Backend& be = backend_for(params_.device());
  for (const Param& p : params_.params()) {
    int64_t n = p.value.numel(), o = p.offset;
    float wd = p.decay ? cfg_.weight_decay : 0.0f;
    float* w = params_.data() + o;
    const float* g = params_.grad() + o;
    if (cfg_.name == "sgd") {
      be.sgd_update(w, g, m_.f32() + o, n, lr, cfg_.momentum, wd, t_ == 1);
    } else {
      be.adam_update(w, g, m_.f32() + o, v_.f32() + o, n, lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd,
                     cfg_.name == "adamw", t_);
    }
  }
}

float lr_at(const std::string& schedule, int64_t step, float lr, float min_lr, int64_t warmup, int64_t total) {
  if (step < warmup) return lr * float(step + 1) / float(warmup);
  if (schedule == "constant") return lr;
  AIGC_CHECK(schedule == "cosine", "lr schedule must be constant or cosine; got \"" + schedule + "\"");
  if (step >= total) return min_lr;
  double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return float(min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (lr - min_lr));
}

double clip_grad_norm(ParamStore& params, double max_norm) {
  Backend& be = backend_for(params.device());  // the gradients' own backend
  double norm = std::sqrt(be.sum_squares(params.grad(), params.numel()));
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm))
    be.scale(params.grad(), float(max_norm / (norm + 1e-6)), params.numel());
  return norm;
}

}  // namespace aigc

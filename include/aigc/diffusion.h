// Gaussian diffusion (Ho et al. 2020) and its samplers: DDPM ancestral sampling and DDIM (Song et al. 2021).
//
// Forward process: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), t = 1..T, so in one jump
// q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s.
// Training (Ho et al.'s L_simple): with x_0 from the data, t ~ Uniform{1..T} and eps ~ N(0, I),
//     minimize E || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2,
// the variational bound's per-step KL terms with their t-dependent weights dropped.
// In code, step t (1-based in the formulas) is index t - 1 in [0, T) of the schedule arrays, and the network sees
// that index as its timestep.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aigc/tensor.h"

namespace aigc {

class Rng;
class UNet;

struct NoiseSchedule {
  std::string kind;                     // "linear" (beta 1e-4 .. 0.02, Ho et al.) or "cosine" (Nichol & Dhariwal 2021)
  std::vector<double> beta, alpha_bar;  // T entries each
  int64_t T() const { return int64_t(beta.size()); }
  double abar_prev(int64_t i) const { return i > 0 ? alpha_bar[size_t(i - 1)] : 1.0; }
  // Variance of the posterior q(x_{t-1} | x_t, x_0): beta_t (1 - abar_{t-1}) / (1 - abar_t).
  double posterior_variance(int64_t i) const;
  static NoiseSchedule make(const std::string& kind, int64_t T);  // validates kind and T
};

// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, one timestep index per sample.
Tensor q_sample(const NoiseSchedule& s, const Tensor& x0, const std::vector<int64_t>& t, const Tensor& eps);

// The random part of one training minibatch, drawn from rng in this order: a timestep index per image, the noise
// eps (the shape of x0), then (labels defined, p_uncond > 0) each label replaced by the "no class" index
// n_classes with probability p_uncond (training for classifier-free guidance). labels is what the network sees.
struct TrainingDraws {
  std::vector<int64_t> t;
  Tensor eps, labels;
};
TrainingDraws draw_training_noise(const NoiseSchedule& s, const Tensor& x0, const Tensor& labels, Rng& rng,
                                  float p_uncond, int64_t n_classes);

// The network's training target for its config's prediction (eps, v or x0), from x0, the noise and abar_t per
// sample; and back: the noise estimate that an output `out` at x_t implies (x_t = sqrt(abar) x0 + sqrt(1 - abar)
// eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, so eps = sqrt(abar) v + sqrt(1 - abar) x_t and, from x0,
// eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)). Every sampler works on that noise estimate.
Tensor prediction_target(const std::string& prediction, const Tensor& x0, const Tensor& eps,
                         const std::vector<double>& abar);
Tensor eps_from_prediction(const std::string& prediction, const Tensor& out, const Tensor& xt,
                           const std::vector<double>& abar);

// One L_simple minibatch loss: draws as above, noises x0, and regresses the network's output on its target (the
// noise, v or x0). labels may be undefined (unconditional).
Tensor diffusion_loss(UNet& net, const NoiseSchedule& s, const Tensor& x0, const Tensor& labels, Rng& rng,
                      float p_uncond, uint64_t dropout_seed);

struct SamplerOptions {
  // "ddpm" (ancestral, T steps), "ddim", or an ODE sampler of samplers.h: euler, euler-a, heun, dpm++2m
  std::string sampler = "ddim";
  int64_t steps = 50;                  // DDIM: evenly spaced timesteps floor(i T / steps), i = steps-1 .. 0
  std::string spacing = "uniform";     // ODE samplers' noise levels: "uniform" (DDIM's timesteps) or "karras"
  double eta = 0.0;                    // DDIM: 0 deterministic, 1 the DDPM posterior noise
  std::string variance = "posterior";  // DDPM: sigma_t^2 = "posterior" variance or "beta" (beta_t)
  double guidance = 0.0;               // classifier-free guidance w: eps = (1 + w) eps(x, c) - w eps(x, none); 0 = off
  bool clip = true;                    // clip the predicted x_0 to [-1, 1] at every step (Ho et al.'s sampler does)
};

// Called after each sampling step with the step's index, its timestep and the current x.
using SampleStepFn = std::function<void(int64_t step, int64_t t, const Tensor& x)>;

// Generates images from noise x_T ~ N(0, I) drawn from rng (the same rng draws every later noise, so one seed
// fixes the output). labels (n) may be undefined (unconditional). on_step, when set, sees the timestep index
// and the current x after each step (for trajectories and progress).
Tensor diffusion_sample(UNet& net, const NoiseSchedule& s, int64_t n, const Tensor& labels, const SamplerOptions& o,
                        Rng& rng, const SampleStepFn& on_step = {});

}  // namespace aigc

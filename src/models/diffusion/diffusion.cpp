// Noise schedules, the L_simple loss and the DDPM / DDIM samplers (see diffusion.h), composed from ops.
#include "aigc/diffusion.h"

#include <cmath>
#include <numbers>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/models/unet.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "aigc/samplers.h"

namespace aigc {

double NoiseSchedule::posterior_variance(int64_t i) const {
  return beta[size_t(i)] * (1.0 - abar_prev(i)) / (1.0 - alpha_bar[size_t(i)]);
}

NoiseSchedule NoiseSchedule::make(const std::string& kind, int64_t T) {
  AIGC_CHECK(T >= 2 && T <= 100000, "noise schedule: T must be between 2 and 100000, not " + std::to_string(T));
  NoiseSchedule s;
  s.kind = kind;
  s.beta.resize(size_t(T));
  s.alpha_bar.resize(size_t(T));
  if (kind == "linear") {
    // Ho et al.: 1e-4 .. 0.02 over T = 1000; other T keep the same total noise (betas scaled by 1000 / T).
    const double k = 1000.0 / double(T);
    for (int64_t i = 0; i < T; i++) s.beta[size_t(i)] = k * (1e-4 + (0.02 - 1e-4) * double(i) / double(T - 1));
  } else if (kind == "cosine") {
    // Nichol & Dhariwal: abar(t) = f(t) / f(0), f(t) = cos^2((t / T + 0.008) / 1.008 * pi / 2), betas capped at
    // 0.999 so the last steps stay invertible.
    auto f = [T](double t) {
      const double c = std::cos((t / double(T) + 0.008) / 1.008 * std::numbers::pi / 2);
      return c * c;
    };
    for (int64_t i = 0; i < T; i++) s.beta[size_t(i)] = std::min(1.0 - f(double(i + 1)) / f(double(i)), 0.999);
  } else {
    fail("noise schedule: unknown kind '" + kind + "' (expected linear or cosine)");
  }
  double abar = 1.0;
  for (int64_t i = 0; i < T; i++) s.alpha_bar[size_t(i)] = abar *= 1.0 - s.beta[size_t(i)];
  return s;
}

Tensor q_sample(const NoiseSchedule& s, const Tensor& x0, const std::vector<int64_t>& t, const Tensor& eps) {
  std::vector<float> a, b;
  for (int64_t i : t) {
    AIGC_CHECK(i >= 0 && i < s.T(), "q_sample: timestep index out of range");
    a.push_back(float(std::sqrt(s.alpha_bar[size_t(i)])));
    b.push_back(float(std::sqrt(1.0 - s.alpha_bar[size_t(i)])));
  }
  return ops::combine_rows(a, x0, b, eps);
}

namespace {

Tensor timesteps(const std::vector<int64_t>& t) {
  return Tensor::from_vector(std::vector<float>(t.begin(), t.end()), {int64_t(t.size())});
}
Tensor timesteps(int64_t n, double t) { return Tensor::from_vector(std::vector<float>(size_t(n), float(t)), {n}); }

// x and y stacked along the batch: (2N, ...).
Tensor stack_batch(const Tensor& x, const Tensor& y) {
  Shape shape = x.shape();
  shape[0] *= 2;
  return ops::concat_channels(x.view({1, x.numel()}), y.view({1, y.numel()})).view(shape);
}

// The network's noise estimate at timestep index t (fractional between the trained ones for the ODE samplers),
// with classifier-free guidance when asked for: the conditional and the "no class" halves run as one batch of 2n.
// abar is x's signal level (x = sqrt(abar) x0 + sqrt(1 - abar) eps); guidance mixes the outputs, which is the same
// as mixing the noise estimates since each is affine in the output with the same coefficients.
Tensor predict_eps(UNet& net, const Tensor& x, double t, double abar, const Tensor& labels, double w) {
  const int64_t n = x.size(0);
  const bool guided = w != 0.0 && labels.defined() && net.config().n_classes > 0;
  Tensor out;
  if (!guided) {
    out = net.forward(x, timesteps(n, t), labels, false);
  } else {
    std::vector<int32_t> lab(labels.i32(), labels.i32() + n);
    lab.resize(size_t(2 * n), int32_t(net.config().n_classes));
    Tensor e = net.forward(stack_batch(x, x), timesteps(2 * n, t), Tensor::from_ints(lab, {2 * n}), false);
    out = ops::combine_rows(std::vector<float>(size_t(n), float(1.0 + w)), e.narrow0(0, n),
                            std::vector<float>(size_t(n), float(-w)), e.narrow0(n, n));
  }
  return eps_from_prediction(net.config().prediction, out, x, std::vector<double>(size_t(n), abar));
}

std::vector<float> fill(int64_t n, double v) { return std::vector<float>(size_t(n), float(v)); }

// The ODE samplers (samplers.h) on the network: x lives at noise level sigma, the network sees
// x / sqrt(1 + sigma^2) at the timestep of sigma, and D = x - sigma eps.
Tensor ode_sample_unet(UNet& net, const NoiseSchedule& s, int64_t n, const Tensor& labels, const SamplerOptions& o,
                       Rng& rng, const SampleStepFn& on_step) {
  const UNetConfig& c = net.config();
  const std::vector<double> sched = schedule_sigmas(s);
  const std::vector<double> sigmas = sampling_sigmas(o.spacing, o.steps, sched.front(), sched.back(), sched);
  Denoiser denoise = [&](const Tensor& x, double sigma) {
    const double k = 1.0 / std::sqrt(1.0 + sigma * sigma);
    Tensor eps = predict_eps(net, ops::combine_rows(fill(n, k), x, fill(n, 0.0), x), timestep_of_sigma(sched, sigma),
                             k * k, labels, o.guidance);
    Tensor d = ops::combine_rows(fill(n, 1.0), x, fill(n, -sigma), eps);
    return o.clip ? ops::clamp(d, -1.0f, 1.0f) : d;
  };
  // x_T ~ N(0, I) is x = x_T sqrt(1 + sigma_max^2) at the first noise level.
  Tensor x = randn({n, c.channels, c.image_size, c.image_size}, rng, float(std::sqrt(1.0 + sigmas[0] * sigmas[0])));
  std::function<void(int64_t, const Tensor&)> step_fn;
  if (on_step)
    step_fn = [&](int64_t k, const Tensor& xk) {
      const double sn = sigmas[size_t(k) + 1], scale = 1.0 / std::sqrt(1.0 + sn * sn);
      on_step(k, sn > 0 ? int64_t(std::lround(timestep_of_sigma(sched, sn))) : -1,
              ops::combine_rows(fill(n, scale), xk, fill(n, 0.0), xk));
    };
  return ode_sample(o.sampler, denoise, x, sigmas, rng, step_fn);
}

}  // namespace

TrainingDraws draw_training_noise(const NoiseSchedule& s, const Tensor& x0, const Tensor& labels, Rng& rng,
                                  float p_uncond, int64_t n_classes) {
  const int64_t B = x0.size(0);
  TrainingDraws d;
  d.t.resize(size_t(B));
  for (int64_t& ti : d.t) ti = int64_t(rng.next_u64() % uint64_t(s.T()));
  d.eps = randn(x0.shape(), rng);
  d.labels = labels;
  if (labels.defined() && p_uncond > 0.0f) {
    std::vector<int32_t> l(labels.i32(), labels.i32() + B);
    for (int32_t& v : l)
      if (rng.uniform() < p_uncond) v = int32_t(n_classes);
    d.labels = Tensor::from_ints(l, {B});
  }
  return d;
}

Tensor diffusion_loss(UNet& net, const NoiseSchedule& s, const Tensor& x0, const Tensor& labels, Rng& rng,
                      float p_uncond, uint64_t dropout_seed) {
  const TrainingDraws d = draw_training_noise(s, x0, labels, rng, p_uncond, net.config().n_classes);
  Tensor xt;
  {
    NoGradGuard ng;  // the noised input is data, not a function of the weights
    xt = q_sample(s, x0, d.t, d.eps);
  }
  Tensor target = d.eps;
  if (net.config().prediction != "eps") {
    NoGradGuard ng;
    std::vector<double> ab;
    for (int64_t ti : d.t) ab.push_back(s.alpha_bar[size_t(ti)]);
    target = prediction_target(net.config().prediction, x0, d.eps, ab);
  }
  return ops::mse_loss(net.forward(xt, timesteps(d.t), d.labels, true, dropout_seed), target);
}

namespace {

std::vector<float> coef(const std::vector<double>& abar, double (*f)(double)) {
  std::vector<float> c;
  for (double a : abar) c.push_back(float(f(a)));
  return c;
}

void check_prediction(const std::string& p, int64_t n, const std::vector<double>& abar) {
  AIGC_CHECK(p == "eps" || p == "v" || p == "x0", "unknown prediction '" + p + "' (eps, v, x0)");
  AIGC_CHECK(int64_t(abar.size()) == n, "prediction: one abar per sample");
  for (double a : abar) AIGC_CHECK(a >= 0 && a <= 1, "prediction: abar must lie in [0, 1]");
}

}  // namespace

Tensor prediction_target(const std::string& p, const Tensor& x0, const Tensor& eps, const std::vector<double>& abar) {
  check_prediction(p, x0.size(0), abar);
  if (p == "eps") return eps;
  if (p == "x0") return x0;
  return ops::combine_rows(coef(abar, [](double a) { return std::sqrt(a); }), eps,
                           coef(abar, [](double a) { return -std::sqrt(1.0 - a); }), x0);
}

Tensor eps_from_prediction(const std::string& p, const Tensor& out, const Tensor& xt, const std::vector<double>& abar) {
  check_prediction(p, out.size(0), abar);
  if (p == "eps") return out;
  if (p == "v")
    return ops::combine_rows(coef(abar, [](double a) { return std::sqrt(a); }), out,
                             coef(abar, [](double a) { return std::sqrt(1.0 - a); }), xt);
  for (double a : abar) AIGC_CHECK(a < 1, "x0-prediction: no noise estimate at abar = 1 (no noise)");
  return ops::combine_rows(coef(abar, [](double a) { return 1.0 / std::sqrt(1.0 - a); }), xt,
                           coef(abar, [](double a) { return -std::sqrt(a / (1.0 - a)); }), out);
}

Tensor diffusion_sample(UNet& net, const NoiseSchedule& s, int64_t n, const Tensor& labels, const SamplerOptions& o,
                        Rng& rng, const std::function<void(int64_t, int64_t, const Tensor&)>& on_step) {
  const UNetConfig& c = net.config();
  AIGC_CHECK(n >= 1, "sample: n must be positive");
  if (is_ode_sampler(o.sampler)) return ode_sample_unet(net, s, n, labels, o, rng, on_step);
  AIGC_CHECK(o.sampler == "ddpm" || o.sampler == "ddim",
             "sample: unknown sampler '" + o.sampler + "' (ddpm, ddim, euler, euler-a, heun, dpm++2m)");
  AIGC_CHECK(o.variance == "posterior" || o.variance == "beta", "sample: variance must be posterior or beta");
  AIGC_CHECK(o.eta >= 0.0, "sample: eta must not be negative");
  const int64_t T = s.T();
  std::vector<int64_t> ts;  // the timestep indices visited, descending
  if (o.sampler == "ddpm") {
    for (int64_t i = T - 1; i >= 0; i--) ts.push_back(i);
  } else {
    AIGC_CHECK(o.steps >= 1 && o.steps <= T, "sample: DDIM steps must be between 1 and T = " + std::to_string(T));
    for (int64_t k = o.steps - 1; k >= 0; k--) ts.push_back(k * T / o.steps);
  }
  NoGradGuard ng;
  Tensor x = randn({n, c.channels, c.image_size, c.image_size}, rng);
  for (size_t k = 0; k < ts.size(); k++) {
    const int64_t i = ts[k], prev = k + 1 < ts.size() ? ts[k + 1] : -1;
    const double ab = s.alpha_bar[size_t(i)], ab_prev = prev >= 0 ? s.alpha_bar[size_t(prev)] : 1.0;
    Tensor eps = predict_eps(net, x, double(i), ab, labels, o.guidance);
    // The implied clean image: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).
    Tensor x0 = ops::combine_rows(fill(n, 1.0 / std::sqrt(ab)), x, fill(n, -std::sqrt(1.0 - ab) / std::sqrt(ab)), eps);
    if (o.clip) x0 = ops::clamp(x0, -1.0f, 1.0f);
    double sigma;
    if (o.sampler == "ddpm") {
      // Posterior mean of q(x_{t-1} | x_t, x0): sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0
      //                                         + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t.
      const double beta = s.beta[size_t(i)];
      x = ops::combine_rows(fill(n, std::sqrt(ab_prev) * beta / (1.0 - ab)), x0,
                            fill(n, std::sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)), x);
      sigma = i > 0 ? std::sqrt(o.variance == "posterior" ? s.posterior_variance(i) : beta) : 0.0;
    } else {
      // DDIM: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with eps re-derived from
      // the (clipped) x0 so that both agree.
      if (o.clip)
        eps = ops::combine_rows(fill(n, 1.0 / std::sqrt(1.0 - ab)), x, fill(n, -std::sqrt(ab / (1.0 - ab))), x0);
      sigma = o.eta * std::sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev));
      x = ops::combine_rows(fill(n, std::sqrt(ab_prev)), x0,
                            fill(n, std::sqrt(std::max(0.0, 1.0 - ab_prev - sigma * sigma))), eps);
    }
    if (sigma > 0.0) x = ops::combine_rows(fill(n, 1.0), x, fill(n, sigma), randn(x.shape(), rng));
    if (on_step) on_step(int64_t(k), i, x);
  }
  return x;
}

}  // namespace aigc

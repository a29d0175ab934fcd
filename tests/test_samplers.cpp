// The ODE/SDE samplers (samplers.h) on data whose denoiser is known in closed form: Gaussian data N(mu, s^2), for
// which E[x0 | x0 + sigma n] = mu + s^2 / (s^2 + sigma^2) (x - mu). The probability-flow ODE is then linear, so a
// deterministic sampler maps its start x to a x + b, and its error against the exact solution must shrink with the
// number of steps at the order the method promises. The ancestral sampler must reach the data's mean and variance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "aigc/autograd.h"
#include "aigc/diffusion.h"
#include "aigc/error.h"
#include "aigc/models/unet.h"
#include "aigc/ops.h"
#include "aigc/params.h"
#include "aigc/rng.h"
#include "aigc/samplers.h"
#include "test_util.h"

using namespace aigc;

namespace {

constexpr double kMu = 0.3, kS = 0.5, kSigmaMin = 0.02, kSigmaMax = 80.0;

Denoiser gaussian_denoiser() {
  return [](const Tensor& x, double sigma) {
    const double k = kS * kS / (kS * kS + sigma * sigma);
    const int64_t n = x.size(0);
    Tensor mu = Tensor::from_vector(std::vector<float>(size_t(x.numel()), float(kMu)), x.shape());
    return ops::combine_rows(std::vector<float>(size_t(n), float(k)), x, std::vector<float>(size_t(n), float(1 - k)),
                             mu);
  };
}

// The sampler's affine map x -> a x + b over the Karras levels, and its distance to the exact one: the ODE from
// sigma_max to sigma_min, x - mu scaled by sqrt((s^2 + sigma_min^2) / (s^2 + sigma_max^2)), then the last step
// every sampler takes, the denoiser at sigma_min.
double affine_error(const std::string& sampler, int64_t steps) {
  Tensor x = Tensor::from_vector({0.0f, 1.0f}, {2, 1});
  Rng rng(1);
  const std::vector<double> sigmas = sampling_sigmas("karras", steps, kSigmaMin, kSigmaMax);
  const std::vector<float> y = ode_sample(sampler, gaussian_denoiser(), x, sigmas, rng).to_vector();
  const double a = double(y[1]) - double(y[0]), b = y[0];
  const double s2 = kS * kS, m2 = kSigmaMin * kSigmaMin;
  const double a_exact = std::sqrt((s2 + m2) / (s2 + kSigmaMax * kSigmaMax)) * s2 / (s2 + m2);
  const double b_exact = kMu * (1 - a_exact);
  // a multiplies a start of scale sigma_max: compare what it does to a typical start.
  return std::abs(a - a_exact) * kSigmaMax + std::abs(b - b_exact);
}

}  // namespace

TEST(Samplers, DeterministicSamplersConvergeAtTheirOrderOnGaussianData) {
  struct Case {
    const char* name;
    double order_lo, order_hi;
  };
  // The observed order over the finest doubling (the coarser ones are printed: dpm++2m reaches its order late).
  for (const Case& c : {Case{"euler", 0.8, 1.3}, Case{"heun", 1.7, 2.5}, Case{"dpm++2m", 1.7, 2.5}}) {
    double prev = 0, order = 0;
    for (int64_t steps : {10, 20, 40, 80}) {
      const double e = affine_error(c.name, steps);
      std::printf("%s, %lld steps: error %.3e", c.name, (long long)steps, e);
      if (prev > 0) {
        order = std::log2(prev / e);
        std::printf(", observed order %.2f", order);
        EXPECT_LT(e, prev) << c.name << " at " << steps << " steps";
      }
      std::printf("\n");
      prev = e;
    }
    EXPECT_GE(order, c.order_lo) << c.name;
    EXPECT_LE(order, c.order_hi) << c.name;
  }
}

// Started from the exact marginal at sigma_max, euler-a's samples approach the data's mean and variance (less the
// last, deterministic step's known shrinkage) as the steps grow: within 5 standard errors of 40,000 samples at 800.
TEST(Samplers, AncestralSamplerReachesTheDataDistribution) {
  const int64_t n = 40000;
  auto moments = [&](int64_t steps) {
    Rng rng(7);
    Tensor x = randn({n, 1}, rng, float(std::sqrt(kS * kS + kSigmaMax * kSigmaMax)), float(kMu));
    const std::vector<double> sigmas = sampling_sigmas("karras", steps, kSigmaMin, kSigmaMax);
    std::vector<float> y = ode_sample("euler-a", gaussian_denoiser(), x, sigmas, rng).to_vector();
    double m = 0, v = 0;
    for (float f : y) m += f;
    m /= double(n);
    for (float f : y) v += (f - m) * (f - m);
    return std::pair<double, double>{m, v / double(n - 1)};
  };
  const double s2 = kS * kS, shrink = s2 / (s2 + kSigmaMin * kSigmaMin);  // the last, deterministic step
  const double v_expected = s2 * shrink;
  // Euler-a is first order in distribution: the variance's error falls about 4x per 4x steps (measured: 0.184,
  // 0.046, 0.015, 0.003 at 5, 50, 200, 800 steps); at 800 steps it is within sampling error.
  double prev = 0;
  for (int64_t steps : {5, 50, 200, 800}) {
    const auto [m, v] = moments(steps);
    std::printf("euler-a, %lld steps: mean %.4f (data %.4f), variance %.4f (expected %.4f)\n", (long long)steps, m, kMu,
                v, v_expected);
    const double err = std::abs(v - v_expected);
    if (prev > 0) EXPECT_LT(err, prev / 2) << steps << " steps";
    prev = err;
    if (steps == 800) {
      EXPECT_LT(std::abs(m - kMu), 5 * kS / std::sqrt(double(n)));
      EXPECT_LT(err, 5 * s2 * std::sqrt(2.0 / double(n)));
    }
  }
}

TEST(Samplers, NoiseLevelsAndTimesteps) {
  const NoiseSchedule s = NoiseSchedule::make("linear", 100);
  const std::vector<double> sched = schedule_sigmas(s);
  for (size_t i = 1; i < sched.size(); i++) ASSERT_GT(sched[i], sched[i - 1]);
  for (int64_t i : {0, 17, 99}) EXPECT_NEAR(timestep_of_sigma(sched, sched[size_t(i)]), double(i), 1e-9);
  EXPECT_NEAR(timestep_of_sigma(sched, std::sqrt(sched[10] * sched[11])), 10.5, 1e-9);  // halfway in log sigma
  const std::vector<double> k = sampling_sigmas("karras", 5, 0.1, 10.0);
  ASSERT_EQ(k.size(), 6u);
  EXPECT_DOUBLE_EQ(k.front(), 10.0);
  EXPECT_NEAR(k[4], 0.1, 1e-12);
  EXPECT_EQ(k.back(), 0.0);
  const std::vector<double> u = sampling_sigmas("uniform", 4, sched.front(), sched.back(), sched);
  EXPECT_EQ(u, (std::vector<double>{sched[75], sched[50], sched[25], sched[0], 0.0}));  // DDIM's timesteps
  EXPECT_THROW(sampling_sigmas("cubic", 4, 0.1, 1.0), Error);
  Rng rng(1);
  EXPECT_THROW(ode_sample("rk4", gaussian_denoiser(), Tensor::zeros({1, 1}), k, rng), Error);
}

// Every sampler runs on a (random) U-Net through diffusion_sample, with both spacings and guidance: finite images in
// [-1, 1], the same for the same seed, one progress call per step.
TEST(Samplers, EverySamplerRunsOnAUNet) {
  UNetConfig c;
  c.image_size = 8, c.channels = 1, c.ch = 8, c.ch_mult = {1, 2}, c.num_res_blocks = 1, c.attn_resolutions = {};
  c.groups = 4, c.n_classes = 3;
  UNet net(c, 3);
  const NoiseSchedule s = NoiseSchedule::make("linear", 50);
  for (const char* sampler : {"euler", "euler-a", "heun", "dpm++2m"})
    for (const char* spacing : {"uniform", "karras"}) {
      SamplerOptions o;
      o.sampler = sampler, o.spacing = spacing, o.steps = 6, o.guidance = 1.0;
      int calls = 0;
      Rng r1(5), r2(5);
      Tensor labels = Tensor::from_ints({0, 2}, {2});
      Tensor a = diffusion_sample(net, s, 2, labels, o, r1, [&](int64_t, int64_t, const Tensor&) { calls++; });
      Tensor b = diffusion_sample(net, s, 2, labels, o, r2);
      EXPECT_EQ(calls, 6) << sampler << " " << spacing;
      EXPECT_EQ(a.to_vector(), b.to_vector()) << sampler << " " << spacing;
      for (float v : a.to_vector()) ASSERT_TRUE(std::isfinite(v) && v >= -1.0f && v <= 1.0f) << sampler;
    }
}

// The training targets (eps, v, x0) and the noise estimate each implies at x_t are exact inverses, and v is
// Salimans & Ho's sqrt(abar) eps - sqrt(1 - abar) x0.
TEST(Prediction, TargetsInvertToTheNoise) {
  Rng rng(8);
  const int64_t n = 4;
  Tensor x0 = randn({n, 1, 3, 3}, rng), eps = randn({n, 1, 3, 3}, rng);
  const std::vector<double> ab = {0.9999, 0.7, 0.2, 0.004};
  std::vector<float> a, b;
  for (double v : ab) a.push_back(float(std::sqrt(v))), b.push_back(float(std::sqrt(1 - v)));
  Tensor xt = ops::combine_rows(a, x0, b, eps);
  for (const char* p : {"eps", "v", "x0"}) {
    Tensor target = prediction_target(p, x0, eps, ab);
    EXPECT_LT(aigc::testing::max_abs_diff(eps_from_prediction(p, target, xt, ab), eps), 2e-3) << p;
  }
  std::vector<float> v = prediction_target("v", x0, eps, ab).to_vector(), e = eps.to_vector(), x = x0.to_vector();
  for (size_t i = 0; i < v.size(); i++) {
    const size_t s = i / 9;
    ASSERT_NEAR(v[i], std::sqrt(ab[s]) * e[i] - std::sqrt(1 - ab[s]) * x[i], 1e-5);
  }
  EXPECT_THROW(prediction_target("score", x0, eps, ab), Error);
}

// A U-Net with zero weights outputs zero: as an x0-predictor it claims the clean image is 0 everywhere, so every
// sampler must end exactly there. That holds only if each converts the output to noise at the signal level of the
// x it fed the network (the ODE samplers' scaled inputs included).
TEST(Prediction, EverySamplerHonoursAnX0Predictor) {
  UNetConfig c;
  c.image_size = 8, c.channels = 1, c.ch = 8, c.ch_mult = {1, 2}, c.num_res_blocks = 1, c.attn_resolutions = {};
  c.groups = 4, c.prediction = "x0";
  UNet net(c, 3);
  {
    NoGradGuard ng;
    for (const Param& p : net.params().params()) init::constant(p.value, 0.0f);
  }
  const NoiseSchedule s = NoiseSchedule::make("linear", 50);
  for (const char* sampler : {"ddpm", "ddim", "euler", "euler-a", "heun", "dpm++2m"}) {
    SamplerOptions o;
    o.sampler = sampler, o.steps = 7, o.clip = false;
    Rng rng(6);
    Tensor x = diffusion_sample(net, s, 2, Tensor(), o, rng);
    for (float v : x.to_vector()) ASSERT_NEAR(v, 0.0f, 1e-4) << sampler;
  }
}

// Diffusion: the U-Net against its PyTorch twin (float64), the noise schedules, the closed-form q(x_t | x_0)
// against iterating q(x_t | x_{t-1}), DDIM (eta 1, all steps) against DDPM ancestral sampling, reproducible
// seeds, short training runs (the loss falls; resume is exact) and the distributions of training's random draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numbers>

#include "aigc/autograd.h"
#include "aigc/diffusion.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/image_model.h"
#include "aigc/models/unet.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"
#include "layer_oracle.h"
#include "test_util.h"

using namespace aigc;

namespace {

UNetConfig tiny_config(int64_t n_classes) {
  UNetConfig c;
  c.image_size = 8, c.channels = 1, c.ch = 8, c.ch_mult = {1, 2}, c.num_res_blocks = 1;
  c.attn_resolutions = {4}, c.groups = 4, c.n_head = 2, c.dropout = 0.0f, c.n_classes = n_classes;
  return c;
}

// Every weight random (the zero-initialized layers would hide most of the network).
void randomize(UNet& net, uint64_t seed, float std = 0.2f) {
  Rng rng(seed);
  for (const Param& p : net.params().params())
    init::normal(p.value, p.name.find("norm") != std::string::npos && p.name.ends_with(".weight") ? 1.0f : 0.0f, std,
                 rng);
}

}  // namespace

TEST(Parity, UNetMatchesPyTorch) {
  UNet net(tiny_config(3));
  randomize(net, 5);
  Rng rng(6);
  const int64_t B = 3;
  Tensor x = randn({B, 1, 8, 8}, rng), dout = randn({B, 1, 8, 8}, rng);
  Tensor t = Tensor::from_vector({0.0f, 500.0f, 999.0f}, {B});
  Tensor y = Tensor::from_ints({0, 2, 3}, {B}), yf = Tensor::from_vector({0.0f, 2.0f, 3.0f}, {B});  // 3 = no class
  x.set_requires_grad(true);
  Tensor out = net.forward(x, t, y, false);
  aigc::testing::backward_from(out, dout.to_vector());

  auto dir = aigc::testing::fresh_temp_dir("unet_oracle");
  std::vector<StTensorOut> ts;
  for (const Param& p : net.params().params())
    ts.push_back({p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  for (auto& [name, v] : std::vector<std::pair<std::string, Tensor>>{{"x", x}, {"t", t}, {"y", yf}, {"dout", dout}})
    ts.push_back({name, StDType::F32, v.shape(), v.f32(), size_t(v.numel()) * 4});
  // "order": aigc's parameter order, which the PyTorch twin must share (reference/torch/torch_diffusion_bench.py writes
  // its trained weights into aigc's flat checkpoint layout in that order).
  nlohmann::json order = nlohmann::json::array();
  for (const Param& p : net.params().params()) order.push_back(p.name);
  write_safetensors((dir / "in.safetensors").string(), ts,
                    {{"config", net.config().to_json()}, {"order", order.dump()}});
  const std::string cmd = "/usr/bin/python3 " + std::string(AIGC_SOURCE_DIR) +
                          "/reference/torch/torch_unet_oracle.py " + (dir / "in.safetensors").string() + " " +
                          (dir / "out.safetensors").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  SafeTensorsReader ref((dir / "out.safetensors").string());
  double worst_out = aigc::testing::expect_close(ref, "out", out, 1e-4);
  double worst_grad = aigc::testing::expect_close(ref, "dx", x.grad(), 1e-4);
  for (const Param& p : net.params().params())
    worst_grad = std::max(worst_grad, aigc::testing::expect_close(ref, "grad." + p.name, p.value.grad(), 1e-4));
  std::printf(
      "[ parity ] U-Net (%lld parameters): output %.2e, gradients %.2e (worst, relative to each tensor's max)\n",
      (long long)net.params().numel(), worst_out, worst_grad);
}

TEST(Diffusion, SchedulesFollowTheirDefinitions) {
  NoiseSchedule lin = NoiseSchedule::make("linear", 1000);
  EXPECT_NEAR(lin.beta.front(), 1e-4, 1e-12);
  EXPECT_NEAR(lin.beta.back(), 0.02, 1e-12);
  EXPECT_LT(lin.alpha_bar.back(), 1e-4);  // x_T is (almost) pure noise
  NoiseSchedule cos = NoiseSchedule::make("cosine", 1000);
  auto f = [](double t) { return std::pow(std::cos((t / 1000.0 + 0.008) / 1.008 * std::numbers::pi / 2), 2); };
  for (int64_t i : {0, 100, 500, 900})
    EXPECT_NEAR(cos.alpha_bar[size_t(i)], f(double(i + 1)) / f(0.0), 1e-9) << "t index " << i;
  for (double b : cos.beta) EXPECT_LE(b, 0.999);
  EXPECT_NEAR(lin.posterior_variance(0), 0.0, 1e-15);  // x_0 given x_1 and x_0 is certain
  EXPECT_THROW(NoiseSchedule::make("quadratic", 1000), Error);
  EXPECT_THROW(NoiseSchedule::make("linear", 1), Error);
}

// q(x_t | x_0) in one jump must have the distribution of t single steps: compare sample means and variances of
// both with the closed form N(sqrt(abar_t) x_0, (1 - abar_t) I), within 5 standard errors.
TEST(Diffusion, ClosedFormNoisingMatchesIteratedSteps) {
  NoiseSchedule s = NoiseSchedule::make("linear", 100);
  const int64_t N = 20000;
  const std::vector<float> values = {-1.0f, -0.3f, 0.4f, 1.0f};
  std::vector<float> x0v;
  for (int64_t n = 0; n < N; n++) x0v.insert(x0v.end(), values.begin(), values.end());
  Tensor x0 = Tensor::from_vector(x0v, {N, 4});
  Rng rng(11);
  Tensor x = x0;
  for (int64_t i = 0; i < s.T(); i++) {
    x = ops::combine_rows(std::vector<float>(size_t(N), float(std::sqrt(1.0 - s.beta[size_t(i)]))), x,
                          std::vector<float>(size_t(N), float(std::sqrt(s.beta[size_t(i)]))), randn({N, 4}, rng));
    if (i != 9 && i != 49 && i != 99) continue;
    Tensor jump = q_sample(s, x0, std::vector<int64_t>(size_t(N), i), randn({N, 4}, rng));
    const double ab = s.alpha_bar[size_t(i)], var = 1.0 - ab;
    for (const Tensor& got : {x, jump}) {
      std::vector<float> g = got.to_vector();
      for (size_t k = 0; k < values.size(); k++) {
        double m = 0, v = 0;
        for (int64_t n = 0; n < N; n++) m += g[size_t(n) * 4 + k];
        m /= double(N);
        for (int64_t n = 0; n < N; n++) v += (g[size_t(n) * 4 + k] - m) * (g[size_t(n) * 4 + k] - m);
        v /= double(N - 1);
        EXPECT_NEAR(m, std::sqrt(ab) * values[k], 5.0 * std::sqrt(var / double(N))) << "t index " << i;
        EXPECT_NEAR(v, var, 5.0 * var * std::sqrt(2.0 / double(N))) << "t index " << i;
      }
    }
  }
}

// DDIM with eta = 1 over every timestep has sigma_t^2 = the posterior variance and the posterior mean, so with
// the same noise draws it must reproduce DDPM ancestral sampling (clipped or not).
TEST(Diffusion, DdimEtaOneOverAllStepsEqualsDdpm) {
  UNet net(tiny_config(0));
  randomize(net, 7, 0.1f);
  NoiseSchedule s = NoiseSchedule::make("linear", 25);
  for (bool clip : {false, true}) {
    SamplerOptions ddpm, ddim;
    ddpm.sampler = "ddpm", ddpm.variance = "posterior", ddpm.clip = clip;
    ddim.sampler = "ddim", ddim.steps = s.T(), ddim.eta = 1.0, ddim.clip = clip;
    Rng r1(3), r2(3);
    std::vector<float> a = diffusion_sample(net, s, 4, Tensor(), ddpm, r1).to_vector();
    std::vector<float> b = diffusion_sample(net, s, 4, Tensor(), ddim, r2).to_vector();
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); i++)
      worst = std::max(worst, double(std::abs(a[i] - b[i]))), scale = std::max(scale, double(std::abs(a[i])));
    EXPECT_LT(worst, 1e-4 * std::max(1.0, scale)) << (clip ? "clipped" : "unclipped");
    EXPECT_GT(scale, 0.1);  // not a trivial all-zero output
  }
}

TEST(Diffusion, SamplingIsReproducibleAndGuidanceRuns) {
  UNet net(tiny_config(3));
  randomize(net, 8, 0.1f);
  NoiseSchedule s = NoiseSchedule::make("cosine", 50);
  SamplerOptions o;
  o.steps = 10, o.guidance = 2.0;
  Tensor labels = Tensor::from_ints({0, 1, 2}, {3});
  Rng a(1), b(1), c(2);
  std::vector<float> x1 = diffusion_sample(net, s, 3, labels, o, a).to_vector();
  EXPECT_EQ(x1, diffusion_sample(net, s, 3, labels, o, b).to_vector());
  EXPECT_NE(x1, diffusion_sample(net, s, 3, labels, o, c).to_vector());
  o.guidance = 0.0;
  Rng d(1);
  EXPECT_NE(x1, diffusion_sample(net, s, 3, labels, o, d).to_vector());  // guidance changes the images
  for (float v : x1) EXPECT_TRUE(std::isfinite(v));
}

namespace {
DiffusionTrainOptions tiny_run(const std::string& dir, int64_t steps) {
  DiffusionTrainOptions o;
  o.model = tiny_config(0);
  o.model.ch_mult = {1, 2}, o.model.attn_resolutions = {14};
  o.batch_size = 16, o.steps = steps, o.lr = 2e-3f, o.warmup = 10, o.timesteps = 100;
  o.log_interval = 10, o.sample_interval = 100000, o.ckpt_interval = 100000, o.sample_steps = 5;
  o.out_dir = dir, o.quiet = true;
  return o;
}
}  // namespace

TEST(DiffusionTraining, LossFallsOnFashionMnist) {
  auto dir = aigc::testing::fresh_temp_dir("ddpm_train");
  DiffusionTrainResult r = train_diffusion(tiny_run(dir.string(), 120));
  std::printf("[ ddpm ] 120 steps: loss %.4f -> %.4f\n", r.first_loss, r.last_loss);
  EXPECT_GT(r.first_loss, 0.5f);  // an untrained net predicts ~0: the loss starts near E[eps^2] = 1
  EXPECT_LT(r.last_loss, 0.5f * r.first_loss);
  LoadedDiffusion ld = load_diffusion(r.checkpoint);
  EXPECT_EQ(ld.schedule.T(), 100);
  EXPECT_EQ(checkpoint_kind(r.checkpoint), "ddpm");

  // The same checkpoint behind ImageModel (what the server's /v1/images/generations calls): DDIM, seeded.
  auto im = ImageModel::load(r.checkpoint);
  EXPECT_EQ(im->kind, "ddpm");
  EXPECT_EQ(im->image_size, 28);
  ImageModel::Options o;
  o.sampler.steps = 3;
  Tensor a = im->generate(2, 5, o), b = im->generate(2, 5, o);
  EXPECT_EQ(a.shape(), Shape({2, 1, 28, 28}));
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), im->generate(2, 6, o).to_vector());
  std::vector<int64_t> seen;  // the step callback sees every step, the last one's x being the result
  o.on_step = [&](int64_t k, int64_t, const Tensor& x) {
    seen.push_back(k);
    if (k == 2) {
      EXPECT_EQ(x.to_vector(), a.to_vector());
    }
  };
  im->generate(2, 5, o);
  EXPECT_EQ(seen, std::vector<int64_t>({0, 1, 2}));
  o.interpolate = true;
  EXPECT_THROW(im->generate(2, 5, o), Error);      // a DCGAN's latent walk
  EXPECT_THROW(class_index("bag", {}, 0), Error);  // unconditional: no classes to ask for
}

// v- and x0-prediction train too, and the checkpoint keeps what the network predicts.
TEST(DiffusionTraining, VAndX0PredictionLearn) {
  for (const char* p : {"v", "x0"}) {
    auto dir = aigc::testing::fresh_temp_dir(std::string("ddpm_") + p);
    DiffusionTrainOptions o = tiny_run(dir.string(), 60);
    o.model.prediction = p;
    DiffusionTrainResult r = train_diffusion(o);
    std::printf("[ ddpm ] %s-prediction, 60 steps: loss %.4f -> %.4f\n", p, r.first_loss, r.last_loss);
    EXPECT_LT(r.last_loss, 0.7f * r.first_loss) << p;  // measured: v 0.55x, x0 0.32x
    EXPECT_EQ(load_diffusion(r.checkpoint).net->config().prediction, p);
  }
}

TEST(DiffusionTraining, ResumeIsExact) {
  auto a = aigc::testing::fresh_temp_dir("ddpm_straight"), b = aigc::testing::fresh_temp_dir("ddpm_resumed");
  train_diffusion(tiny_run(a.string(), 6));
  DiffusionTrainOptions half = tiny_run(b.string(), 6);
  half.stop_after = 3;
  train_diffusion(half);
  half.stop_after = 0, half.resume = true;
  train_diffusion(half);
  SafeTensorsReader x((a / "ckpt.safetensors").string()), y((b / "ckpt.safetensors").string());
  for (const char* name : {"model", "ema", "optim.m", "optim.v"}) EXPECT_EQ(x.read_f32(name), y.read_f32(name)) << name;
}

// With the same arithmetic (the same-streams runs in bench/diffusion_run), aigc's and PyTorch's trainings can
// still differ through their random draws, so these are checked to have the distributions the method assumes:
// t uniform over the T steps, eps standard normal and independent, each epoch a fresh permutation of the data,
// dropout masks at rate p and independent across steps, initial weights at PyTorch's default scale. Each bound
// is six standard errors from the expected value.
TEST(DiffusionTraining, RandomDrawsHaveTheirDistributions) {
  const NoiseSchedule s = NoiseSchedule::make("linear", 1000);
  const int64_t B = 64, steps = 300, px = 256;
  std::vector<int64_t> counts(1000, 0);
  double sum = 0, sum2 = 0, sum4 = 0, lag = 0, tails = 0, t_eps = 0;
  for (int64_t k = 0; k < steps; k++) {
    Rng rng = diffusion_noise_rng(1, k);  // each batch's own generator, as training draws them
    const TrainingDraws d = draw_training_noise(s, Tensor::zeros({B, 1, 16, 16}), Tensor(), rng, 0.0f, 0);
    const std::vector<float> e = d.eps.to_vector();
    for (int64_t b = 0; b < B; b++) {
      counts[size_t(d.t[size_t(b)])]++;
      double row = 0;
      for (int64_t i = 0; i < px; i++) {
        const double v = e[size_t(b * px + i)];
        sum += v, sum2 += v * v, sum4 += v * v * v * v, tails += std::abs(v) > 3.0, row += v;
        if (i > 0) lag += v * e[size_t(b * px + i - 1)];
      }
      t_eps += (double(d.t[size_t(b)]) - 499.5) / 288.7 * row / std::sqrt(double(px));  // both scaled to unit variance
    }
  }
  const double n = double(steps * B * px), nt = double(steps * B);
  double chi2 = 0;
  for (int64_t c : counts) chi2 += (double(c) - nt / 1000) * (double(c) - nt / 1000) / (nt / 1000);
  EXPECT_NEAR(chi2, 999.0, 6 * std::sqrt(2 * 999.0)) << "timesteps are not uniform over [0, T)";
  EXPECT_NEAR(sum / n, 0.0, 6 / std::sqrt(n));
  EXPECT_NEAR(sum2 / n, 1.0, 6 * std::sqrt(2 / n));
  EXPECT_NEAR(sum4 / n, 3.0, 6 * std::sqrt(96 / n));  // E[eps^4] = 3, Var[eps^4] = 105 - 9
  EXPECT_NEAR(tails / n, 0.0026998, 6 * std::sqrt(0.0027 / n));
  EXPECT_NEAR(lag / n, 0.0, 6 / std::sqrt(n)) << "neighbouring noise values are correlated";
  EXPECT_NEAR(t_eps / nt, 0.0, 6 / std::sqrt(nt)) << "the noise depends on the timestep";

  // The loader: images 0..999 tagged by their pixels; three epochs of batch 10.
  ImageSet data;
  data.n = 1000, data.channels = 1, data.height = 1, data.width = 2;
  for (int64_t i = 0; i < data.n; i++) data.pixels.insert(data.pixels.end(), {uint8_t(i % 256), uint8_t(i / 256)});
  ImageLoader loader(data, 10, 1);
  std::vector<std::vector<double>> epochs(3);
  for (auto& order : epochs)
    for (int64_t k = 0; k < loader.batches_per_epoch(); k++) {
      Tensor x;
      std::vector<int32_t> labels;
      loader.next(x, labels);
      const std::vector<float> v = x.to_vector();
      for (size_t j = 0; j < v.size(); j += 2)
        order.push_back(std::lround((v[j] + 1) * 127.5f) + 256 * std::lround((v[j + 1] + 1) * 127.5f));
    }
  // Pearson correlation between two orders (positions are a permutation when each index appears once).
  auto corr = [](const std::vector<double>& a, const std::vector<double>& b) {
    double ma = 0, mb = 0, ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < a.size(); i++) ma += a[i] / double(a.size()), mb += b[i] / double(a.size());
    for (size_t i = 0; i < a.size(); i++)
      ab += (a[i] - ma) * (b[i] - mb), aa += (a[i] - ma) * (a[i] - ma), bb += (b[i] - mb) * (b[i] - mb);
    return ab / std::sqrt(aa * bb);
  };
  std::vector<double> identity(size_t(data.n));
  for (size_t i = 0; i < identity.size(); i++) identity[i] = double(i);
  for (const auto& order : epochs) {
    std::vector<double> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity) << "an epoch is not a permutation of the data";
    EXPECT_LT(std::abs(corr(order, identity)), 6 / std::sqrt(1000.0)) << "an epoch keeps the data's order";
  }
  EXPECT_LT(std::abs(corr(epochs[0], epochs[1])), 6 / std::sqrt(1000.0)) << "consecutive epochs are alike";
  EXPECT_LT(std::abs(corr(epochs[1], epochs[2])), 6 / std::sqrt(1000.0)) << "consecutive epochs are alike";

  // Dropout masks, seeded as UNet::forward seeds them (block k of step s).
  const int64_t m = 100000;
  const Tensor ones = Tensor::from_vector(std::vector<float>(size_t(m), 1.0f), {m});
  std::vector<double> rate, both;  // per mask: dropped share; per pair of steps: share dropped in both
  std::vector<float> prev;
  for (uint64_t step = 0; step < 4; step++)
    for (uint64_t block = 1; block <= 3; block++) {
      const std::vector<float> mask = ops::dropout(ones, 0.1f, UNet::block_dropout_seed(step, block)).to_vector();
      rate.push_back(double(std::count(mask.begin(), mask.end(), 0.0f)) / double(m));
      if (block == 1 && !prev.empty()) {
        int64_t k = 0;
        for (int64_t i = 0; i < m; i++) k += mask[size_t(i)] == 0.0f && prev[size_t(i)] == 0.0f;
        both.push_back(double(k) / double(m));
      }
      if (block == 1) prev = mask;
    }
  for (double r : rate) EXPECT_NEAR(r, 0.1, 6 * std::sqrt(0.09 / double(m)));
  for (double r : both) EXPECT_NEAR(r, 0.01, 6 * std::sqrt(0.0099 / double(m))) << "masks repeat across steps";

  // Initial weights: uniform in +-1/sqrt(fan_in), so their standard deviation is 1/sqrt(3 fan_in).
  UNet net(UNetConfig{}, 1);
  int64_t checked = 0;
  for (const Param& p : net.params().params()) {
    if (!p.name.ends_with(".weight") || p.name.find("norm") != std::string::npos || p.value.numel() < 4096) continue;
    const std::vector<float> w = p.value.to_vector();
    double ss = 0;
    for (float v : w) ss += double(v) * v;
    if (ss == 0) continue;  // the zero-initialized layers
    const double fan_in = double(p.value.numel() / p.value.size(0)), want = 1 / std::sqrt(3 * fan_in);
    // Var[w^2] = bound^4 (1/5 - 1/9): the sample variance's relative standard error is sqrt(0.8 / numel), the
    // standard deviation's half that, so six of them are 3 sqrt(0.8 / numel).
    EXPECT_NEAR(std::sqrt(ss / double(w.size())) / want, 1.0, 3 * std::sqrt(0.8 / double(w.size()))) << p.name;
    checked++;
  }
  EXPECT_GT(checked, 20);
}

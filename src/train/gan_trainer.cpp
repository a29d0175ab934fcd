// DCGAN training as a TrainTask. Each update: D learns on real batches (target 1) and generated ones (target 0,
// generated without recording G's graph), then G learns through D on fresh noise: two optimizers, each applied
// through the loop's policy.
#include "aigc/gan_trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/image_io.h"
#include "aigc/image_model.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/train_loop.h"
#include "image_train_state.h"

namespace aigc {

namespace {

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

double mean_sigmoid(const Tensor& t) {
  double s = 0;
  for (float v : t.to_vector()) s += 1.0 / (1.0 + std::exp(-double(v)));
  return s / double(t.numel());
}

// BatchNorm's running statistics take one EMA step per training forward. One process accumulating micro-batches
// takes the steps of every micro-batch in turn; each data-parallel rank takes only its own. merge() puts on every
// rank what the one process would hold: since the snapshot, each rank's steps are the affine map
// m -> a m + c_r (a = (1 - momentum)^steps), and the ranks' maps compose in rank order (the order their batches
// have in the global stream), so the result is a^W m0 + sum_r a^(W-1-r) c_r.
class RunningStats {
 public:
  RunningStats(ConvNet& net, GradSync* sync) : net_(net), sync_(sync) { snapshot(); }

  void merge() {
    if (!sync_ || sync_->world() == 1) return;
    const int world = sync_->world(), rank = sync_->rank();
    const double a = std::pow(1.0 - ConvNet::kBnMomentum, double(net_.running_stat_steps() - steps_));
    std::vector<float> now = flat(), part(now.size());
    for (size_t i = 0; i < now.size(); i++)
      part[i] = float(std::pow(a, world - 1 - rank) * (double(now[i]) - a * double(before_[i])));
    sync_->all_reduce(part.data(), int64_t(part.size()), GradSync::Op::Sum);
    size_t i = 0;
    for (auto& [name, t] : net_.buffers()) {
      if (!ConvNet::is_running_stat(name)) continue;  // spectral norm's u, v: the same on every rank
      std::vector<float> v(size_t(t.numel()));
      for (float& x : v) x = float(std::pow(a, world) * double(before_[i]) + double(part[i])), i++;
      backend_for(t.device()).from_host(t.f32(), v.data(), v.size() * 4);
    }
    snapshot();
  }

 private:
  std::vector<float> flat() const {
    std::vector<float> all;
    for (auto& [name, t] : net_.buffers()) {
      if (!ConvNet::is_running_stat(name)) continue;
      std::vector<float> v = t.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  }
  void snapshot() {
    if (sync_ && sync_->world() > 1) before_ = flat(), steps_ = net_.running_stat_steps();
  }

  ConvNet& net_;
  GradSync* sync_;
  std::vector<float> before_;
  int64_t steps_ = 0;
};

// The mean of a batch of logits (B), as a one-element tensor with its gradient.
Tensor mean_of(const Tensor& x) {
  const int64_t B = x.numel();
  Tensor w = Tensor::empty({1, B});
  init::constant(w, 1.0f / float(B));
  return ops::linear(x.view({1, B}), w, Tensor::zeros({1})).view({1});
}

// a x + b y for one-element x, y.
Tensor mix(float a, const Tensor& x, float b, const Tensor& y) { return ops::combine_rows({a}, x, {b}, y); }

// The objectives. D's loss from its logits on real and generated images; G's as a tensor and a weight (G
// minimizes, and reports, weight x tensor).
//   nonsaturating, minimax (Goodfellow et al.): D: BCE(real, 1) + BCE(fake, 0); G: BCE(fake, 1), or
//       log(1 - D(G(z))) = -BCE(fake, 0)
//   hinge (Lim & Ye; SAGAN, BigGAN): D: mean relu(1 - real) + mean relu(1 + fake); G: -mean fake
//   lsgan (Mao et al., a = 0, b = c = 1): D: (mean (real - 1)^2 + mean fake^2) / 2; G: mean (fake - 1)^2 / 2
//   wgan-gp (Gulrajani et al.): D: mean fake - mean real (its penalty is added by gan_update); G: -mean fake
Tensor d_loss(const std::string& loss, const Tensor& real, const Tensor& fake) {
  const int64_t B = real.numel();
  Tensor ones = Tensor::empty({B}), zeros = Tensor::zeros({B});
  init::constant(ones, 1.0f);
  if (loss == "hinge")
    return ops::add(mean_of(ops::relu(ops::combine_rows({-1.0f}, real.view({1, B}), {1.0f}, ones.view({1, B})))),
                    mean_of(ops::relu(ops::combine_rows({1.0f}, fake.view({1, B}), {1.0f}, ones.view({1, B})))));
  if (loss == "lsgan") return mix(0.5f, ops::mse_loss(real, ones), 0.5f, ops::mse_loss(fake, zeros));
  if (loss == "wgan-gp") return mix(1.0f, mean_of(fake), -1.0f, mean_of(real));
  return ops::add(ops::bce_with_logits(real, ones), ops::bce_with_logits(fake, zeros));
}

std::pair<Tensor, float> g_loss(const std::string& loss, const Tensor& fake) {
  const int64_t B = fake.numel();
  Tensor ones = Tensor::empty({B}), zeros = Tensor::zeros({B});
  init::constant(ones, 1.0f);
  if (loss == "minimax") return {ops::bce_with_logits(fake, zeros), -1.0f};
  if (loss == "hinge" || loss == "wgan-gp") return {mean_of(fake), -1.0f};
  if (loss == "lsgan") return {ops::mse_loss(fake, ones), 0.5f};
  return {ops::bce_with_logits(fake, ones), 1.0f};
}

// weight x mean (|grad_x D(x)| - center)^2 over the batch, recorded so that D's backward differentiates it.
Tensor input_gradient_penalty(Discriminator& d, const Tensor& x, const Tensor& labels, float center, float weight) {
  Tensor xi = x.view(x.shape());  // a leaf of its own that takes a gradient
  xi.set_requires_grad(true);
  Tensor score = d.forward(xi, labels, true);
  Tensor ones = Tensor::empty(score.shape());
  init::constant(ones, 1.0f);
  Tensor gp = ops::gradient_penalty(grad_graph(score, ones, {xi})[0], center);
  return ops::combine_rows({weight}, gp, {}, Tensor());
}

class GanTask : public TrainTask {
 public:
  GanTask(const GanTrainOptions& opt, const ImageSet& data, const DCGANConfig& cfg)
      : opt_(opt),
        data_(data),
        cfg_(cfg),
        g_(cfg),
        d_(cfg),
        loader_(data, opt.batch_size, opt.seed, opt.hflip, opt.rank, opt.world,
                opt.grad_accum * opt.objective.n_critic) {
    init_gan(g_, d_, opt.seed);
    OptimConfig oc;
    oc.name = "adam", oc.lr = opt.lr, oc.beta1 = opt.beta1, oc.beta2 = opt.beta2, oc.weight_decay = 0.0f;
    og_ = std::make_unique<Optimizer>(g_.params(), oc);
    od_ = std::make_unique<Optimizer>(d_.params(), oc);
    if (opt.resume) {
      const std::string ckpt = RunDir(opt.out_dir).checkpoint();
      start_ = restore_image_train_state(ckpt, load_dcgan(ckpt, g_, d_, *og_, *od_), loader_);
      og_->set_steps(start_), od_->set_steps(start_ * opt.objective.n_critic);
    }
    // A fixed noise batch (and fixed labels) shows progress on the same latent points in every sample grid.
    Rng fixed_rng(opt.seed + 99);
    fixed_z_ = randn({64, cfg.nz}, fixed_rng);
    fixed_labels_ = labels_for(64, cfg.n_classes, 0, false);  // classes cycling 0, 1, ...
  }

  std::string describe() {
    return "dcgan: G " + std::to_string(g_.params().numel()) + " + D " + std::to_string(d_.params().numel()) +
           " parameters; " + std::to_string(data_.n) + " training images " + std::to_string(data_.channels) + "x" +
           std::to_string(data_.height) + "x" + std::to_string(data_.width) +
           (cfg_.n_classes ? ", class-conditional" : "") + "; batch " + std::to_string(opt_.batch_size) + ", " +
           objective_str();
  }

  std::string objective_str() const {
    const GanObjective& o = opt_.objective;
    std::string s = o.loss + " loss";
    if (o.loss == "wgan-gp") s += " (gradient penalty " + num(o.gp_lambda) + ")";
    if (o.r1_gamma > 0) s += ", R1 " + num(o.r1_gamma);
    if (o.n_critic > 1) s += ", " + std::to_string(o.n_critic) + " D updates per G update";
    if (cfg_.spectral_norm) s += ", spectral norm in D";
    if (cfg_.d_norm == "none") s += ", no BatchNorm in D";
    return s + "; Adam lr " + num(opt_.lr) + ", betas " + num(opt_.beta1) + ", " + num(opt_.beta2);
  }

  int64_t start_step() const override { return start_; }
  std::string unit() const override { return "images"; }
  int64_t units_per_update() const override { return opt_.batch_size * opt_.grad_accum; }
  int64_t batch_size() const override { return opt_.batch_size; }
  std::vector<ParamStore*> param_stores() override { return {&g_.params(), &d_.params()}; }
  std::string config_json() const override {
    return nlohmann::json{{"family", "dcgan"},
                          {"data", opt_.data},
                          {"model", nlohmann::json::parse(cfg_.to_json())},
                          {"batch_size", opt_.batch_size},
                          {"beta1", opt_.beta1},
                          {"beta2", opt_.beta2},
                          {"loss", opt_.objective.loss},
                          {"gp_lambda", opt_.objective.gp_lambda},
                          {"r1", opt_.objective.r1_gamma},
                          {"n_critic", opt_.objective.n_critic},
                          {"hflip", opt_.hflip},
                          {"seed", opt_.seed}}
        .dump();
  }

  StepValues update(StepContext& ctx) override {
    std::vector<GanBatch> micro(size_t(ctx.micro_batches * opt_.objective.n_critic));
    for (GanBatch& b : micro) {
      std::vector<int32_t> lab;
      loader_.next(b.real, lab);
      b.labels = Tensor::from_ints(lab, {opt_.batch_size});
      Rng rng = gan_noise_rng(opt_.seed, loader_.last_index());
      b.z_d = randn({opt_.batch_size, cfg_.nz}, rng), b.z_g = randn({opt_.batch_size, cfg_.nz}, rng);
      if (opt_.objective.loss == "wgan-gp") {
        b.eps = Tensor::empty({opt_.batch_size});
        init::uniform(b.eps, 0.0f, 1.0f, rng);
      }
    }
    GanStep st = gan_update(g_, d_, *og_, *od_, micro, opt_.objective, ctx);
    StepValues v;
    v.add("loss_d", st.loss_d), v.add("loss_g", st.loss_g);
    if (opt_.objective.penalized()) v.add("penalty", st.penalty);
    v.add("d_x", st.d_x), v.add("d_g_z", st.d_g_z);
    return v;
  }

  std::string sample(const RunDir& run, int64_t step) override {
    NoGradGuard ng;
    const std::string path = run.sample(step, "png");
    Tensor grid = g_.forward(fixed_z_, fixed_labels_, false);
    if (run.writer()) save_image_grid(path, grid, 8);
    return path;
  }

  void save(const RunDir& run, int64_t step) override {
    save_dcgan(run.checkpoint(), g_, d_, og_.get(), od_.get(),
               cfg_.n_classes ? data_.class_names : std::vector<std::string>{}, image_train_state(step, loader_));
  }

 private:
  const GanTrainOptions& opt_;
  const ImageSet& data_;
  DCGANConfig cfg_;
  Generator g_;
  Discriminator d_;
  std::unique_ptr<Optimizer> og_, od_;
  ImageLoader loader_;
  int64_t start_ = 0;
  Tensor fixed_z_, fixed_labels_;
};

}  // namespace

GanStep gan_update(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const std::vector<GanBatch>& micro,
                   const GanObjective& obj, StepContext& ctx) {
  AIGC_CHECK(is_gan_loss(obj.loss),
             "unknown GAN loss '" + obj.loss + "' (nonsaturating, minimax, hinge, lsgan, wgan-gp)");
  AIGC_CHECK(obj.n_critic >= 1, "a GAN update needs n_critic >= 1");
  const size_t M = size_t(ctx.micro_batches);
  AIGC_CHECK(M >= 1 && micro.size() == M * size_t(obj.n_critic),
             "a GAN update takes ctx.micro_batches x n_critic batches");
  RunningStats stats_g(g, ctx.sync()), stats_d(d, ctx.sync());
  const float scale = 1.0f / float(M);
  GanStep st;
  double loss_d = 0, penalty = 0, dx = 0, dgz = 0;
  for (int64_t k = 0; k < obj.n_critic; k++) {
    // D: real batches and generated ones (generated without recording G's graph), plus the penalties.
    d.power_iteration();
    d.params().zero_grad();
    double loss_k = 0;
    for (size_t m = 0; m < M; m++) {
      const GanBatch& b = micro[size_t(k) * M + m];
      Tensor fake;
      {
        NoGradGuard ng;
        fake = g.forward(b.z_d, b.labels, true);
      }
      st.d_real = d.forward(b.real, b.labels, true), st.d_fake = d.forward(fake, b.labels, true);
      Tensor l = d_loss(obj.loss, st.d_real, st.d_fake);
      loss_d += l.item(), dx += mean_sigmoid(st.d_real), dgz += mean_sigmoid(st.d_fake);
      if (obj.loss == "wgan-gp") {
        AIGC_CHECK(b.eps.defined() && b.eps.numel() == b.real.size(0), "wgan-gp needs eps, one weight per image");
        Tensor mixed;
        {
          NoGradGuard ng;
          std::vector<float> e = b.eps.to_vector(), e1(e.size());
          for (size_t i = 0; i < e.size(); i++) e1[i] = 1.0f - e[i];
          mixed = ops::combine_rows(e, b.real, e1, fake);
        }
        Tensor p = input_gradient_penalty(d, mixed, b.labels, 1.0f, obj.gp_lambda);
        penalty += p.item(), l = ops::add(l, p);
      }
      if (obj.r1_gamma > 0) {
        Tensor p = input_gradient_penalty(d, b.real, b.labels, 0.0f, 0.5f * obj.r1_gamma);
        penalty += p.item(), l = ops::add(l, p);
      }
      loss_k += l.item();
      ctx.backward(l, d.params(), int64_t(m));
    }
    ctx.apply(d.params(), od, loss_k * scale, "d");
    stats_g.merge(), stats_d.merge();
  }
  const double per_d = scale / double(obj.n_critic);
  st.loss_d = float(loss_d * per_d), st.penalty = float(penalty * per_d), st.d_x = dx * per_d, st.d_g_z = dgz * per_d;
  // G through D on fresh noise (D's gradients from it are discarded by the next zero_grad).
  g.params().zero_grad();
  double loss_g = 0;
  for (size_t m = 0; m < M; m++) {
    const GanBatch& b = micro[size_t(obj.n_critic - 1) * M + m];
    Tensor logits = d.forward(g.forward(b.z_g, b.labels, true), b.labels, true);
    auto [l, weight] = g_loss(obj.loss, logits);
    ctx.backward(l, g.params(), int64_t(m), weight);
    loss_g += weight * l.item();
  }
  st.loss_g = float(loss_g * scale);
  ctx.apply(g.params(), og, st.loss_g, "g");
  stats_g.merge(), stats_d.merge();
  return st;
}

GanStep gan_step(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const std::vector<GanBatch>& batches,
                 const GanObjective& obj, float lr) {
  StepContext ctx;
  ctx.lr = lr;
  return gan_update(g, d, og, od, batches, obj, ctx);
}

bool is_gan_loss(const std::string& loss) {
  return loss == "nonsaturating" || loss == "minimax" || loss == "hinge" || loss == "lsgan" || loss == "wgan-gp";
}

void init_gan(Generator& g, Discriminator& d, uint64_t seed) { g.init_weights(seed), d.init_weights(seed + 1); }

Rng gan_noise_rng(uint64_t seed, int64_t batch) {
  return Rng((seed ^ 0x6a09e667f3bcc909ULL) + uint64_t(batch) * 0x9e3779b97f4a7c15ULL);
}

LoopOptions GanTrainOptions::loop() const {
  LoopOptions l;
  l.steps = steps, l.stop_after = stop_after, l.max_minutes = max_minutes, l.grad_accum = grad_accum;
  l.lr = lr, l.lr_schedule = "constant", l.warmup = 0, l.grad_clip = grad_clip, l.max_bad_steps = max_bad_steps;
  l.log_interval = log_interval, l.sample_interval = sample_interval, l.ckpt_interval = ckpt_interval;
  l.out_dir = out_dir, l.resume = resume, l.quiet = quiet;
  return l;
}

GanTrainResult train_dcgan(const GanTrainOptions& options, GradSync* sync) {
  GanTrainOptions opt = options;
  GanObjective& obj = opt.objective;
  AIGC_CHECK(is_gan_loss(obj.loss), "--gan-loss must be nonsaturating, minimax, hinge, lsgan or wgan-gp");
  if (obj.n_critic == 0) obj.n_critic = obj.loss == "wgan-gp" ? 5 : 1;
  AIGC_CHECK(obj.n_critic >= 1 && obj.n_critic <= 100, "--n-critic must be in 1..100");
  AIGC_CHECK(obj.gp_lambda >= 0 && obj.r1_gamma >= 0, "--gp-lambda and --r1 must be >= 0");
  const bool wants_plain_d = obj.penalized() || opt.model.spectral_norm;
  if (opt.d_norm == "auto") opt.d_norm = wants_plain_d ? "none" : "batch";
  AIGC_CHECK(opt.d_norm == "batch" || opt.d_norm == "none", "--d-norm must be auto, batch or none");
  AIGC_CHECK(!obj.penalized() || opt.d_norm == "none",
             "--gan-loss wgan-gp and --r1 penalize each image's gradient, which BatchNorm in D mixes across the "
             "batch: use --d-norm none (the default with a penalty)");
  opt.model.d_norm = opt.d_norm;
  const ImageSet data = load_image_dataset(opt.data, "train");
  AIGC_CHECK((data.height == 28 || data.height == 32) && data.width == data.height,
             "DCGAN needs 28x28 or 32x32 images; '" + opt.data + "' has " + std::to_string(data.height) + "x" +
                 std::to_string(data.width));
  AIGC_CHECK(!opt.conditional || !data.labels.empty(), "--conditional needs a labeled dataset");
  DCGANConfig cfg = opt.model;
  cfg.image_size = data.height, cfg.channels = data.channels;
  cfg.n_classes = opt.conditional ? int64_t(std::max<size_t>(data.class_names.size(), 1)) : 0;
  if (opt.resume) {
    const std::string ckpt = RunDir(opt.out_dir).checkpoint();
    AIGC_CHECK(std::filesystem::exists(ckpt), "--resume: no checkpoint at '" + ckpt + "'");
    cfg = dcgan_config_of(ckpt);
    AIGC_CHECK(!obj.penalized() || cfg.d_norm == "none",
               "--resume: the checkpoint's D has BatchNorm, which a gradient penalty cannot train (--d-norm none)");
  }
  GanTask task(opt, data, cfg);
  if (!opt.quiet) std::fprintf(stderr, "%s\n", task.describe().c_str());
  LoopOptions lo = opt.loop();
  lo.sync = sync;
  LoopResult r = run_training(task, lo);
  GanTrainResult res;
  res.steps_done = r.steps_done, res.checkpoint = r.checkpoint;
  if (!r.history.empty())
    res.last_d_loss = float(r.history.back().get("loss_d")), res.last_g_loss = float(r.history.back().get("loss_g"));
  return res;
}

}  // namespace aigc

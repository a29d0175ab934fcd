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
Tensor d_loss(const std::string& loss, const Tensor& real, const Tensor& fake) {
  const int64_t B = real.numel();
  Tensor ones = Tensor::empty({B}), zeros = Tensor::zeros({B});
  init::constant(ones, 1.0f);
  if (loss == "hinge")
    return ops::add(mean_of(ops::relu(ops::combine_rows({-1.0f}, real.view({1, B}), {1.0f}, ones.view({1, B})))),
                    mean_of(ops::relu(ops::combine_rows({1.0f}, fake.view({1, B}), {1.0f}, ones.view({1, B})))));
  if (loss == "lsgan") return mix(0.5f, ops::mse_loss(real, ones), 0.5f, ops::mse_loss(fake, zeros));
  return ops::add(ops::bce_with_logits(real, ones), ops::bce_with_logits(fake, zeros));
}

std::pair<Tensor, float> g_loss(const std::string& loss, const Tensor& fake) {
  const int64_t B = fake.numel();
  Tensor ones = Tensor::empty({B}), zeros = Tensor::zeros({B});
  init::constant(ones, 1.0f);
  if (loss == "minimax") return {ops::bce_with_logits(fake, zeros), -1.0f};
  if (loss == "hinge") return {mean_of(fake), -1.0f};
  if (loss == "lsgan") return {ops::mse_loss(fake, ones), 0.5f};
  return {ops::bce_with_logits(fake, ones), 1.0f};
}

class GanTask : public TrainTask {
 public:
  GanTask(const GanTrainOptions& opt, const ImageSet& data, const DCGANConfig& cfg)
      : opt_(opt),
        data_(data),
        cfg_(cfg),
        g_(cfg),
        d_(cfg),
        loader_(data, opt.batch_size, opt.seed, opt.hflip, opt.rank, opt.world, opt.grad_accum) {
    init_gan(g_, d_, opt.seed);
    OptimConfig oc;
    oc.name = "adam", oc.lr = opt.lr, oc.beta1 = opt.beta1, oc.beta2 = opt.beta2, oc.weight_decay = 0.0f;
    og_ = std::make_unique<Optimizer>(g_.params(), oc);
    od_ = std::make_unique<Optimizer>(d_.params(), oc);
    if (opt.resume) {
      const std::string ckpt = RunDir(opt.out_dir).checkpoint();
      start_ = restore_image_train_state(ckpt, load_dcgan(ckpt, g_, d_, *og_, *od_), loader_);
      og_->set_steps(start_), od_->set_steps(start_);
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
           opt_.loss + " G loss";
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
                          {"loss", opt_.loss},
                          {"hflip", opt_.hflip},
                          {"seed", opt_.seed}}
        .dump();
  }

  StepValues update(StepContext& ctx) override {
    std::vector<GanBatch> micro(size_t(ctx.micro_batches));
    for (GanBatch& b : micro) {
      std::vector<int32_t> lab;
      loader_.next(b.real, lab);
      b.labels = Tensor::from_ints(lab, {opt_.batch_size});
      Rng rng = gan_noise_rng(opt_.seed, loader_.last_index());
      b.z_d = randn({opt_.batch_size, cfg_.nz}, rng), b.z_g = randn({opt_.batch_size, cfg_.nz}, rng);
    }
    GanStep st = gan_update(g_, d_, *og_, *od_, micro, opt_.loss, ctx);
    StepValues v;
    v.add("loss_d", st.loss_d), v.add("loss_g", st.loss_g), v.add("d_x", st.d_x), v.add("d_g_z", st.d_g_z);
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
                   const std::string& loss, StepContext& ctx) {
  AIGC_CHECK(!micro.empty(), "a GAN update needs at least one batch");
  AIGC_CHECK(int64_t(micro.size()) == ctx.micro_batches, "a GAN update takes ctx.micro_batches batches");
  RunningStats stats_g(g, ctx.sync()), stats_d(d, ctx.sync());
  AIGC_CHECK(is_gan_loss(loss), "unknown GAN loss '" + loss + "' (nonsaturating, minimax, hinge, lsgan)");
  const float scale = 1.0f / float(micro.size());
  GanStep st;
  // D: real batches (target 1) and generated ones (target 0, generated without recording G's graph).
  d.params().zero_grad();
  double loss_d = 0, dx = 0, dgz = 0;
  for (size_t m = 0; m < micro.size(); m++) {
    const GanBatch& b = micro[m];
    Tensor fake;
    {
      NoGradGuard ng;
      fake = g.forward(b.z_d, b.labels, true);
    }
    st.d_real = d.forward(b.real, b.labels, true), st.d_fake = d.forward(fake, b.labels, true);
    Tensor l = d_loss(loss, st.d_real, st.d_fake);
    ctx.backward(l, d.params(), int64_t(m));
    loss_d += l.item(), dx += mean_sigmoid(st.d_real), dgz += mean_sigmoid(st.d_fake);
  }
  st.loss_d = float(loss_d * scale), st.d_x = dx * scale, st.d_g_z = dgz * scale;
  ctx.apply(d.params(), od, st.loss_d, "d");
  stats_g.merge(), stats_d.merge();
  // G through D on fresh noise (D's gradients from it are discarded by the next zero_grad).
  g.params().zero_grad();
  double loss_g = 0;
  for (size_t m = 0; m < micro.size(); m++) {
    const GanBatch& b = micro[m];
    Tensor logits = d.forward(g.forward(b.z_g, b.labels, true), b.labels, true);
    auto [l, weight] = g_loss(loss, logits);
    ctx.backward(l, g.params(), int64_t(m), weight);
    loss_g += weight * l.item();
  }
  st.loss_g = float(loss_g * scale);
  ctx.apply(g.params(), og, st.loss_g, "g");
  stats_g.merge(), stats_d.merge();
  return st;
}

GanStep gan_step(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const Tensor& real, const Tensor& labels,
                 const Tensor& z_d, const Tensor& z_g, const std::string& loss, float lr) {
  StepContext ctx;
  ctx.lr = lr;
  return gan_update(g, d, og, od, {{real, labels, z_d, z_g}}, loss, ctx);
}

bool is_gan_loss(const std::string& loss) {
  return loss == "nonsaturating" || loss == "minimax" || loss == "hinge" || loss == "lsgan";
}

void init_gan(Generator& g, Discriminator& d, uint64_t seed) { g.init_weights(seed), d.init_weights(seed + 1); }

Rng gan_noise_rng(uint64_t seed, int64_t batch) {
  return Rng((seed ^ 0x6a09e667f3bcc909ULL) + uint64_t(batch) * 0x9e3779b97f4a7c15ULL);
}

LoopOptions GanTrainOptions::loop() const {
  LoopOptions l;
  l.steps = steps, l.stop_after = stop_after, l.grad_accum = grad_accum;
  l.lr = lr, l.lr_schedule = "constant", l.warmup = 0, l.grad_clip = grad_clip, l.max_bad_steps = max_bad_steps;
  l.log_interval = log_interval, l.sample_interval = sample_interval, l.ckpt_interval = ckpt_interval;
  l.out_dir = out_dir, l.resume = resume, l.quiet = quiet;
  return l;
}

GanTrainResult train_dcgan(const GanTrainOptions& opt, GradSync* sync) {
  AIGC_CHECK(is_gan_loss(opt.loss), "--gan-loss must be nonsaturating, minimax, hinge or lsgan");
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

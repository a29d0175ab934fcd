// DDPM training as a TrainTask: each update draws batches, noises them at random timesteps, and moves the U-Net
// toward predicting the noise (L_simple); an EMA of the weights, kept after every applied update, is what
// sampling uses. Checkpoints hold the weights, their EMA, Adam's state and the data/generator positions.
#include "aigc/diffusion_trainer.h"

#include <algorithm>
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
#include "aigc/optim.h"
#include "image_train_state.h"

namespace aigc {

namespace {

class DiffusionTask : public TrainTask {
 public:
  DiffusionTask(const DiffusionTrainOptions& opt, const ImageSet& data, const UNetConfig& cfg,
                const NoiseSchedule& sched)
      : opt_(opt),
        data_(data),
        cfg_(cfg),
        sched_(sched),
        net_(cfg, opt.seed),
        loader_(data, opt.batch_size, opt.seed, opt.hflip, opt.rank, opt.world, opt.grad_accum) {
    const int64_t n = net_.params().numel();
    OptimConfig oc;
    oc.name = "adam", oc.lr = opt.lr, oc.beta1 = 0.9f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
    adam_ = std::make_unique<Optimizer>(net_.params(), oc);
    ema_ = Tensor::empty({n});
    std::copy(net_.params().data(), net_.params().data() + n, ema_.f32());
    if (opt.resume) {
      const std::string ckpt = RunDir(opt.out_dir).checkpoint();
      start_ = restore_image_train_state(ckpt, load_ddpm(ckpt, net_, ema_, *adam_), loader_);
      adam_->set_steps(start_);
    }
    if (cfg.n_classes) class_names_ = data.class_names;
  }

  std::string describe() {
    return "ddpm: U-Net " + std::to_string(net_.params().numel()) + " parameters; " + std::to_string(data_.n) +
           " training images " + std::to_string(data_.channels) + "x" + std::to_string(data_.height) + "x" +
           std::to_string(data_.width) + (cfg_.n_classes ? ", class-conditional" : "") + "; " + sched_.kind +
           " schedule, T = " + std::to_string(sched_.T()) + ", predicts " + cfg_.prediction + "; batch " +
           std::to_string(opt_.batch_size);
  }

  int64_t start_step() const override { return start_; }
  std::string unit() const override { return "images"; }
  int64_t units_per_update() const override { return opt_.batch_size * opt_.grad_accum; }
  int64_t batch_size() const override { return opt_.batch_size; }
  std::vector<ParamStore*> param_stores() override { return {&net_.params()}; }
  std::string config_json() const override {
    return nlohmann::json{
        {"family", "ddpm"},          {"data", opt_.data},           {"model", nlohmann::json::parse(cfg_.to_json())},
        {"schedule", sched_.kind},   {"timesteps", sched_.T()},     {"batch_size", opt_.batch_size},
        {"p_uncond", opt_.p_uncond}, {"ema_decay", opt_.ema_decay}, {"hflip", opt_.hflip},
        {"seed", opt_.seed}}
        .dump();
  }

  StepValues update(StepContext& ctx) override {
    net_.params().zero_grad();
    double loss_sum = 0;
    for (int64_t micro = 0; micro < ctx.micro_batches; micro++) {
      Tensor x0;
      std::vector<int32_t> lab;
      loader_.next(x0, lab);
      Tensor labels = cfg_.n_classes ? Tensor::from_ints(lab, {opt_.batch_size}) : Tensor();
      // Timesteps, noise and dropout are keyed by the global batch index: independent of how batches are split.
      const int64_t g = loader_.last_index();
      Rng rng = diffusion_noise_rng(opt_.seed, g);
      Tensor loss = diffusion_loss(net_, sched_, x0, labels, rng, cfg_.n_classes ? opt_.p_uncond : 0.0f, uint64_t(g));
      ctx.backward(loss, net_.params(), micro);
      loss_sum += loss.item();
    }
    const double loss = loss_sum / double(ctx.micro_batches);
    if (ctx.apply(net_.params(), *adam_, loss)) {
      const float decay = std::min(opt_.ema_decay, float(2 + ctx.step) / float(11 + ctx.step));
      backend_for(ema_.device()).ema_update(ema_.f32(), net_.params().data(), net_.params().numel(), decay);
    }
    StepValues v;
    v.add("loss", float(loss));
    return v;
  }

  // Progress grids: DDIM from the same noise (and classes cycling 0-9) every time, with the EMA weights.
  std::string sample(const RunDir& run, int64_t step) override {
    if (!sampler_) sampler_ = std::make_unique<UNet>(cfg_);
    std::copy(ema_.f32(), ema_.f32() + ema_.numel(), sampler_->params().data());
    SamplerOptions so;
    so.steps = std::min(opt_.sample_steps, sched_.T());
    Rng grid_rng(opt_.seed + 99);
    Tensor x = diffusion_sample(*sampler_, sched_, 64,
                                cfg_.n_classes ? labels_for(64, cfg_.n_classes, 0, false) : Tensor(), so, grid_rng);
    const std::string path = run.sample(step, "png");
    if (run.writer()) save_image_grid(path, x, 8);
    return path;
  }

  void save(const RunDir& run, int64_t step) override {
    save_ddpm(run.checkpoint(), net_, ema_, adam_.get(), sched_, class_names_, image_train_state(step, loader_));
  }

 private:
  const DiffusionTrainOptions& opt_;
  const ImageSet& data_;
  UNetConfig cfg_;
  NoiseSchedule sched_;
  UNet net_;
  std::unique_ptr<UNet> sampler_;
  std::unique_ptr<Optimizer> adam_;
  Tensor ema_;
  ImageLoader loader_;
  int64_t start_ = 0;
  std::vector<std::string> class_names_;
};

}  // namespace

Rng diffusion_noise_rng(uint64_t seed, int64_t batch) {
  return Rng((seed ^ 0x3c6ef372fe94f82bULL) + uint64_t(batch) * 0x9e3779b97f4a7c15ULL);
}

LoopOptions DiffusionTrainOptions::loop() const {
  LoopOptions l;
  l.steps = steps, l.stop_after = stop_after, l.max_minutes = max_minutes, l.grad_accum = grad_accum;
  l.lr = lr, l.lr_schedule = "constant", l.warmup = warmup, l.grad_clip = grad_clip, l.max_bad_steps = max_bad_steps;
  l.log_interval = log_interval, l.sample_interval = sample_interval, l.ckpt_interval = ckpt_interval;
  l.out_dir = out_dir, l.resume = resume, l.quiet = quiet;
  return l;
}

DiffusionTrainResult train_diffusion(const DiffusionTrainOptions& opt, GradSync* sync) {
  const ImageSet data = load_image_dataset(opt.data, "train");
  AIGC_CHECK(data.width == data.height, "diffusion needs square images; '" + opt.data + "' has " +
                                            std::to_string(data.height) + "x" + std::to_string(data.width));
  AIGC_CHECK(!opt.conditional || !data.labels.empty(), "--conditional needs a labeled dataset");
  AIGC_CHECK(opt.batch_size >= 1 && opt.steps >= 1, "batch size and steps must be positive");
  UNetConfig cfg = opt.model;
  cfg.image_size = data.height, cfg.channels = data.channels;
  cfg.n_classes = opt.conditional ? int64_t(std::max<size_t>(data.class_names.size(), 1)) : 0;
  NoiseSchedule sched = NoiseSchedule::make(opt.schedule, opt.timesteps);
  if (opt.resume) {
    const std::string ckpt = RunDir(opt.out_dir).checkpoint();
    AIGC_CHECK(std::filesystem::exists(ckpt), "--resume: no checkpoint at '" + ckpt + "'");
    cfg = ddpm_config_of(ckpt);
    sched = ddpm_schedule_of(ckpt);
  }
  DiffusionTask task(opt, data, cfg, sched);
  if (!opt.quiet) std::fprintf(stderr, "%s\n", task.describe().c_str());
  LoopOptions lo = opt.loop();
  lo.sync = sync;
  LoopResult r = run_training(task, lo);
  DiffusionTrainResult res;
  res.steps_done = r.steps_done, res.checkpoint = r.checkpoint;
  if (!r.history.empty()) {
    res.first_loss = float(r.history.front().get("loss"));
    // The mean of the last log interval: the updates after the last multiple of log_interval before the end.
    const int64_t end = r.steps_done, from = std::max(r.first_step, (end - 1) / opt.log_interval * opt.log_interval);
    double sum = 0;
    for (int64_t s = from; s < end; s++) sum += r.history[size_t(s - r.first_step)].get("loss");
    res.last_loss = float(sum / double(end - from));
  }
  return res;
}

}  // namespace aigc

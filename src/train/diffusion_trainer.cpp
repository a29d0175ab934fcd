// The DDPM training loop: each step draws a batch, noises it at random timesteps, and moves the U-Net toward
// predicting the noise (L_simple); an EMA of the weights is kept for sampling. Checkpoints hold the weights,
// their EMA, Adam's state and the data/generator positions, so --resume continues exactly.
#include "aigc/diffusion_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/image_io.h"
#include "aigc/interrupt.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"

namespace aigc {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "aigc-ddpm-1";

const std::string& meta(const SafeTensorsReader& st, const std::string& key) {
  auto it = st.metadata().find(key);
  AIGC_CHECK(it != st.metadata().end(), "'" + st.path() + "': missing metadata field '" + key + "'");
  return it->second;
}

NoiseSchedule schedule_of(const SafeTensorsReader& st) {
  nlohmann::json j = nlohmann::json::parse(meta(st, "aigc.schedule"), nullptr, false);
  AIGC_CHECK(
      j.is_object() && j.contains("kind") && j["kind"].is_string() && j.contains("T") && j["T"].is_number_integer(),
      "'" + st.path() + "': aigc.schedule must be {\"kind\": string, \"T\": integer}");
  return NoiseSchedule::make(j["kind"].get<std::string>(), j["T"].get<int64_t>());
}

std::vector<std::string> classes_of(const SafeTensorsReader& st) {
  auto it = st.metadata().find("aigc.classes");
  if (it == st.metadata().end()) return {};
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  AIGC_CHECK(j.is_array(), "'" + st.path() + "': aigc.classes must be a list of names");
  std::vector<std::string> out;
  for (auto& v : j) out.push_back(v.is_string() ? v.get<std::string>() : "");
  return out;
}

// Copies the EMA buffer into a model's parameters (for sampling the progress grids).
void load_flat(UNet& net, const Tensor& flat) { std::copy(flat.f32(), flat.f32() + flat.numel(), net.params().data()); }

}  // namespace

std::string checkpoint_kind(const std::string& path) {
  SafeTensorsReader st(path);
  auto it = st.metadata().find("format");
  if (it == st.metadata().end()) return "";
  if (it->second == kFormat) return "ddpm";
  if (it->second == "aigc-dcgan-1") return "dcgan";
  if (it->second == "aigc-gpt-1") return "gpt";
  return "";
}

LoadedDiffusion load_diffusion(const std::string& path, bool ema) {
  SafeTensorsReader st(path);
  AIGC_CHECK(meta(st, "format") == kFormat, "'" + path + "' is not a diffusion checkpoint (format \"" +
                                                meta(st, "format") + "\", expected \"" + kFormat + "\")");
  LoadedDiffusion out;
  out.net = std::make_unique<UNet>(UNetConfig::from_json(meta(st, "aigc.config")));
  const int64_t n = out.net->params().numel();
  st.read_f32_into(ema ? "ema" : "model", out.net->params().data(), {n});
  out.schedule = schedule_of(st);
  out.class_names = classes_of(st);
  return out;
}

Rng diffusion_noise_rng(uint64_t seed) { return Rng(seed ^ 0x3c6ef372fe94f82bULL); }

DiffusionTrainResult train_diffusion(const DiffusionTrainOptions& opt) {
  auto log = [&](const std::string& s) {
    if (!opt.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };
  const ImageSet data = load_image_dataset(opt.data, "train");
  AIGC_CHECK(data.width == data.height, "diffusion needs square images; '" + opt.data + "' has " +
                                            std::to_string(data.height) + "x" + std::to_string(data.width));
  AIGC_CHECK(!opt.conditional || !data.labels.empty(), "--conditional needs a labeled dataset");
  AIGC_CHECK(opt.batch_size >= 1 && opt.steps >= 1, "batch size and steps must be positive");
  UNetConfig cfg = opt.model;
  cfg.image_size = data.height, cfg.channels = data.channels;
  cfg.n_classes = opt.conditional ? int64_t(std::max<size_t>(data.class_names.size(), 1)) : 0;
  NoiseSchedule sched = NoiseSchedule::make(opt.schedule, opt.timesteps);
  const std::string ckpt = (fs::path(opt.out_dir) / "ckpt.safetensors").string();
  nlohmann::json state = {{"step", 0}, {"position", 0}, {"rng", ""}};
  if (opt.resume) {
    AIGC_CHECK(fs::exists(ckpt), "--resume: no checkpoint at '" + ckpt + "'");
    SafeTensorsReader st(ckpt);
    cfg = UNetConfig::from_json(meta(st, "aigc.config"));
    sched = schedule_of(st);
  }
  UNet net(cfg, opt.seed);
  const int64_t n = net.params().numel();
  OptimConfig oc;
  oc.name = "adam", oc.lr = opt.lr, oc.beta1 = 0.9f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
  Optimizer adam(net.params(), oc);
  Tensor ema = Tensor::empty({n});
  std::copy(net.params().data(), net.params().data() + n, ema.f32());
  ImageLoader loader(data, opt.batch_size, opt.seed, opt.hflip);
  Rng rng = diffusion_noise_rng(opt.seed);
  if (opt.resume) {
    SafeTensorsReader st(ckpt);
    st.read_f32_into("model", net.params().data(), {n});
    st.read_f32_into("ema", ema.f32(), {n});
    st.read_f32_into("optim.m", adam.m().f32(), {n});
    st.read_f32_into("optim.v", adam.v().f32(), {n});
    state = nlohmann::json::parse(meta(st, "aigc.train_state"), nullptr, false);
    AIGC_CHECK(state.is_object() && state.contains("step") && state.contains("position") && state.contains("rng"),
               "'" + ckpt + "': aigc.train_state is damaged");
    adam.set_steps(state["step"].get<int64_t>());
    loader.set_position(state["position"].get<int64_t>());
    rng.set_state(state["rng"].get<std::string>());
  }
  int64_t step = state["step"].get<int64_t>();
  const int64_t last = opt.stop_after > 0 ? std::min(opt.stop_after, opt.steps) : opt.steps, B = opt.batch_size;
  fs::create_directories(fs::path(opt.out_dir) / "samples");
  std::ofstream metrics(fs::path(opt.out_dir) / "metrics.jsonl", opt.resume ? std::ios::app : std::ios::trunc);
  log("ddpm: U-Net " + std::to_string(n) + " parameters; " + std::to_string(data.n) + " training images " +
      std::to_string(data.channels) + "x" + std::to_string(data.height) + "x" + std::to_string(data.width) +
      (cfg.n_classes ? ", class-conditional" : "") + "; " + sched.kind + " schedule, T = " + std::to_string(sched.T()) +
      "; batch " + std::to_string(B));

  const std::vector<std::string> names = cfg.n_classes ? data.class_names : std::vector<std::string>{};
  auto save = [&](int64_t s) {
    nlohmann::json st = {{"step", s}, {"position", loader.position()}, {"rng", rng.state()}};
    std::vector<StTensorOut> ts = {{"model", StDType::F32, {n}, net.params().data(), size_t(n) * 4},
                                   {"ema", StDType::F32, {n}, ema.f32(), size_t(n) * 4},
                                   {"optim.m", StDType::F32, {n}, adam.m().f32(), size_t(n) * 4},
                                   {"optim.v", StDType::F32, {n}, adam.v().f32(), size_t(n) * 4}};
    write_safetensors(ckpt, ts,
                      {{"format", kFormat},
                       {"aigc.config", cfg.to_json()},
                       {"aigc.schedule", nlohmann::json{{"kind", sched.kind}, {"T", sched.T()}}.dump()},
                       {"aigc.train_state", st.dump()},
                       {"aigc.classes", nlohmann::json(names).dump()}});
  };
  // Progress grids: DDIM from the same noise (and classes cycling 0-9) every time, with the EMA weights.
  UNet sampler(cfg);
  auto sample_grid = [&](int64_t s) {
    load_flat(sampler, ema);
    std::vector<int32_t> lab(64);
    for (int i = 0; i < 64; i++) lab[size_t(i)] = cfg.n_classes ? int32_t(i % cfg.n_classes) : 0;
    SamplerOptions so;
    so.steps = std::min(opt.sample_steps, sched.T());
    Rng grid_rng(opt.seed + 99);
    Tensor x =
        diffusion_sample(sampler, sched, 64, cfg.n_classes ? Tensor::from_ints(lab, {64}) : Tensor(), so, grid_rng);
    std::string path = (fs::path(opt.out_dir) / "samples" / ("step_" + std::to_string(s) + ".png")).string();
    save_image_grid(path, x, 8);
    return path;
  };

  SigintGuard interrupt;
  DiffusionTrainResult res;
  double loss_sum = 0;
  int64_t loss_count = 0;
  auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step;
  while (step < last && !interrupt.requested()) {
    Tensor x0;
    std::vector<int32_t> lab;
    loader.next(x0, lab);
    net.params().zero_grad();
    Tensor loss = diffusion_loss(net, sched, x0, cfg.n_classes ? Tensor::from_ints(lab, {B}) : Tensor(), rng,
                                 cfg.n_classes ? opt.p_uncond : 0.0f, uint64_t(step));
    backward(loss);
    const double gnorm = clip_grad_norm(net.params(), opt.grad_clip);
    const float lr = lr_at("constant", step, opt.lr, opt.lr, opt.warmup, opt.steps);
    adam.step(lr);
    step++;
    const float decay = std::min(opt.ema_decay, float(1 + step) / float(10 + step));
    cpu_backend().ema_update(ema.f32(), net.params().data(), n, decay);

    const float l = loss.item();
    AIGC_CHECK(std::isfinite(l),
               "training diverged at step " + std::to_string(step) + " (the loss is not finite); try a lower --lr");
    if (step == first + 1) res.first_loss = l;
    loss_sum += l, loss_count++;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ips = double((step - first) * B) / secs;
    metrics
        << nlohmann::json{{"step", step}, {"loss", l}, {"grad_norm", gnorm}, {"lr", lr}, {"images_per_s", ips}}.dump()
        << "\n";
    if (step % opt.log_interval == 0 || step == last || step == first + 1) {
      res.last_loss = float(loss_sum / double(loss_count));
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %6lld/%lld | loss %.4f | grad norm %.3f | lr %.2e | %.0f img/s | ETA %.0fs", (long long)step,
                    (long long)last, res.last_loss, gnorm, lr, ips,
                    double(last - step) * double(B) / std::max(ips, 1e-9));
      log(line);
      loss_sum = 0, loss_count = 0;
    }
    if (step % opt.sample_interval == 0) log("samples: " + sample_grid(step));
    if (step % opt.ckpt_interval == 0 && step != last) save(step);
  }
  metrics.flush();
  if (loss_count) res.last_loss = float(loss_sum / double(loss_count));
  save(step);
  if (step % opt.sample_interval != 0 && step > first) log("samples: " + sample_grid(step));
  log(std::string(interrupt.requested() ? "interrupted; " : "") + "saved " + ckpt);
  res.steps_done = step, res.checkpoint = ckpt;
  return res;
}

}  // namespace aigc

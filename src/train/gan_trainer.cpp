// The DCGAN training loop. Each step: D learns on a real batch (target 1) and a generated batch (target 0,
// generated without recording G's graph), then G learns through D on a fresh batch.
#include "aigc/gan_trainer.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/image_io.h"
#include "aigc/interrupt.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"

namespace aigc {

namespace fs = std::filesystem;

namespace {

// Every tensor of both networks and both optimizers, under one prefix per owner.
void add_net(std::vector<StTensorOut>& out, const std::string& prefix, ConvNet& net, Optimizer* opt) {
  for (const Param& p : net.params().params())
    out.push_back({prefix + p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  for (auto& [name, t] : net.buffers())
    out.push_back({prefix + name, StDType::F32, t.shape(), t.f32(), size_t(t.numel()) * 4});
  if (opt) {
    const int64_t n = net.params().numel();
    out.push_back({prefix + "optim.m", StDType::F32, {n}, opt->m().f32(), size_t(n) * 4});
    out.push_back({prefix + "optim.v", StDType::F32, {n}, opt->v().f32(), size_t(n) * 4});
  }
}

void read_net(const SafeTensorsReader& st, const std::string& prefix, ConvNet& net, Optimizer* opt) {
  for (const Param& p : net.params().params()) st.read_f32_into(prefix + p.name, p.value.f32(), p.value.shape());
  for (auto& [name, t] : net.buffers()) st.read_f32_into(prefix + name, t.f32(), t.shape());
  if (opt) {
    const int64_t n = net.params().numel();
    st.read_f32_into(prefix + "optim.m", opt->m().f32(), {n});
    st.read_f32_into(prefix + "optim.v", opt->v().f32(), {n});
  }
}

DCGANConfig config_of(const SafeTensorsReader& st) {
  auto fmt = st.metadata().find("format");
  AIGC_CHECK(fmt != st.metadata().end() && fmt->second == "aigc-dcgan-1",
             "'" + st.path() + "' is not an aigc DCGAN checkpoint (metadata format must be aigc-dcgan-1)");
  auto cfg = st.metadata().find("aigc.config");
  AIGC_CHECK(cfg != st.metadata().end(), "'" + st.path() + "': metadata lacks aigc.config");
  return DCGANConfig::from_json(cfg->second);
}

std::vector<std::string> classes_of(const SafeTensorsReader& st) {
  auto it = st.metadata().find("aigc.classes");
  if (it == st.metadata().end()) return {};
  return nlohmann::json::parse(it->second).get<std::vector<std::string>>();
}

}  // namespace

LoadedGenerator load_generator(const std::string& path) {
  SafeTensorsReader st(path);
  LoadedGenerator out;
  out.g = std::make_unique<Generator>(config_of(st));
  read_net(st, "G.", *out.g, nullptr);
  out.class_names = classes_of(st);
  return out;
}

GanStep gan_step(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const Tensor& real, const Tensor& labels,
                 const Tensor& z_d, const Tensor& z_g, const std::string& loss, float lr) {
  const int64_t B = real.size(0);
  Tensor ones = Tensor::empty({B}), zeros = Tensor::zeros({B});
  init::constant(ones, 1.0f);
  // D step: a real batch (target 1) and a generated one (target 0, generated without recording G's graph).
  Tensor fake;
  {
    NoGradGuard ng;
    fake = g.forward(z_d, labels, true);
  }
  d.params().zero_grad();
  GanStep st;
  st.d_real = d.forward(real, labels, true), st.d_fake = d.forward(fake, labels, true);
  Tensor loss_d = ops::add(ops::bce_with_logits(st.d_real, ones), ops::bce_with_logits(st.d_fake, zeros));
  backward(loss_d);
  od.step(lr);
  // G step through D on fresh noise (D's gradients from it are discarded by the next zero_grad).
  g.params().zero_grad();
  Tensor logits = d.forward(g.forward(z_g, labels, true), labels, true);
  // minimax: minimize log(1 - D(G(z))) = -BCE(logits, 0); nonsaturating: minimize BCE(logits, 1).
  Tensor loss_g = loss == "minimax" ? ops::bce_with_logits(logits, zeros) : ops::bce_with_logits(logits, ones);
  backward(loss_g, loss == "minimax" ? -1.0f : 1.0f);
  og.step(lr);
  st.loss_d = loss_d.item(), st.loss_g = loss == "minimax" ? -loss_g.item() : loss_g.item();
  return st;
}

void init_gan(Generator& g, Discriminator& d, uint64_t seed) { g.init_weights(seed), d.init_weights(seed + 1); }

Rng gan_noise_rng(uint64_t seed) { return Rng(seed ^ 0x6a09e667f3bcc909ULL); }

GanTrainResult train_dcgan(const GanTrainOptions& opt) {
  auto log = [&](const std::string& s) {
    if (!opt.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };
  AIGC_CHECK(opt.loss == "nonsaturating" || opt.loss == "minimax", "--gan-loss must be nonsaturating or minimax");
  const ImageSet data = load_image_dataset(opt.data, "train");
  AIGC_CHECK((data.height == 28 || data.height == 32) && data.width == data.height,
             "DCGAN needs 28x28 or 32x32 images; '" + opt.data + "' has " + std::to_string(data.height) + "x" +
                 std::to_string(data.width));
  AIGC_CHECK(!opt.conditional || !data.labels.empty(), "--conditional needs a labeled dataset");
  DCGANConfig cfg = opt.model;
  cfg.image_size = data.height, cfg.channels = data.channels;
  cfg.n_classes = opt.conditional ? int64_t(std::max<size_t>(data.class_names.size(), 1)) : 0;
  const std::string ckpt = (fs::path(opt.out_dir) / "ckpt.safetensors").string();
  nlohmann::json state = {{"step", 0}, {"position", 0}, {"rng", ""}};
  if (opt.resume) {
    AIGC_CHECK(fs::exists(ckpt), "--resume: no checkpoint at '" + ckpt + "'");
    cfg = config_of(SafeTensorsReader(ckpt));
  }
  Generator g(cfg);
  Discriminator d(cfg);
  init_gan(g, d, opt.seed);
  OptimConfig oc;
  oc.name = "adam", oc.lr = opt.lr, oc.beta1 = opt.beta1, oc.beta2 = opt.beta2, oc.weight_decay = 0.0f;
  Optimizer og(g.params(), oc), od(d.params(), oc);
  ImageLoader loader(data, opt.batch_size, opt.seed, opt.hflip);
  Rng rng = gan_noise_rng(opt.seed);
  if (opt.resume) {
    SafeTensorsReader st(ckpt);
    read_net(st, "G.", g, &og);
    read_net(st, "D.", d, &od);
    auto it = st.metadata().find("aigc.train_state");
    AIGC_CHECK(it != st.metadata().end(), "'" + ckpt + "' holds no training state to resume from");
    state = nlohmann::json::parse(it->second);
    og.set_steps(state["step"].get<int64_t>()), od.set_steps(state["step"].get<int64_t>());
    loader.set_position(state["position"].get<int64_t>());
    rng.set_state(state["rng"].get<std::string>());
  }
  int64_t step = state["step"].get<int64_t>();
  const int64_t last = opt.stop_after > 0 ? std::min(opt.stop_after, opt.steps) : opt.steps;
  const int64_t B = opt.batch_size;
  fs::create_directories(fs::path(opt.out_dir) / "samples");
  std::ofstream metrics(fs::path(opt.out_dir) / "metrics.jsonl", opt.resume ? std::ios::app : std::ios::trunc);
  log("dcgan: G " + std::to_string(g.params().numel()) + " + D " + std::to_string(d.params().numel()) +
      " parameters; " + std::to_string(data.n) + " training images " + std::to_string(data.channels) + "x" +
      std::to_string(data.height) + "x" + std::to_string(data.width) + (cfg.n_classes ? ", class-conditional" : "") +
      "; batch " + std::to_string(B) + ", " + opt.loss + " G loss");

  // A fixed noise batch (and fixed labels) shows progress on the same latent points in every sample grid.
  Rng fixed_rng(opt.seed + 99);
  Tensor fixed_z = randn({64, cfg.nz}, fixed_rng);
  std::vector<int32_t> fixed_lab(64);
  for (int i = 0; i < 64; i++) fixed_lab[size_t(i)] = cfg.n_classes ? int32_t(i % cfg.n_classes) : 0;
  Tensor fixed_labels = Tensor::from_ints(fixed_lab, {64});

  auto save = [&](int64_t s) {
    nlohmann::json st = {{"step", s}, {"position", loader.position()}, {"rng", rng.state()}};
    std::vector<StTensorOut> ts;
    add_net(ts, "G.", g, &og);
    add_net(ts, "D.", d, &od);
    write_safetensors(
        ckpt, ts,
        {{"format", "aigc-dcgan-1"},
         {"aigc.config", cfg.to_json()},
         {"aigc.train_state", st.dump()},
         {"aigc.classes", nlohmann::json(cfg.n_classes ? data.class_names : std::vector<std::string>{}).dump()}});
  };
  auto sample_grid = [&](int64_t s) {
    NoGradGuard ng;
    std::string path = (fs::path(opt.out_dir) / "samples" / ("step_" + std::to_string(s) + ".png")).string();
    save_image_grid(path, g.forward(fixed_z, fixed_labels, false), 8);
    return path;
  };

  SigintGuard interrupt;
  GanTrainResult res;
  auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step;
  while (step < last && !interrupt.requested()) {
    Tensor real;
    std::vector<int32_t> lab;
    loader.next(real, lab);
    Tensor labels = Tensor::from_ints(lab, {B});
    Tensor z_d = randn({B, cfg.nz}, rng), z_g = randn({B, cfg.nz}, rng);
    GanStep st = gan_step(g, d, og, od, real, labels, z_d, z_g, opt.loss, opt.lr);
    step++;

    res.last_d_loss = st.loss_d, res.last_g_loss = st.loss_g;
    AIGC_CHECK(std::isfinite(res.last_d_loss) && std::isfinite(res.last_g_loss),
               "training diverged at step " + std::to_string(step) + " (a loss is not finite); try a lower --lr");
    auto mean_sigmoid = [](const Tensor& t) {
      double s = 0;
      for (float v : t.to_vector()) s += 1.0 / (1.0 + std::exp(-double(v)));
      return s / double(t.numel());
    };
    const double dx = mean_sigmoid(st.d_real), dgz = mean_sigmoid(st.d_fake);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ips = double((step - first) * B) / secs;
    metrics << nlohmann::json{{"step", step}, {"loss_d", res.last_d_loss}, {"loss_g", res.last_g_loss}, {"d_x", dx},
                              {"d_g_z", dgz}, {"images_per_s", ips}}
                   .dump()
            << "\n";
    if (step % opt.log_interval == 0 || step == last || step == first + 1) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %6lld/%lld | D %.4f | G %.4f | D(x) %.3f | D(G(z)) %.3f | %.0f img/s | ETA %.0fs",
                    (long long)step, (long long)last, res.last_d_loss, res.last_g_loss, dx, dgz, ips,
                    double(last - step) * B / std::max(ips, 1e-9));
      log(line);
    }
    if (step % opt.sample_interval == 0) log("samples: " + sample_grid(step));
    if (step % opt.ckpt_interval == 0 && step != last) save(step);
  }
  metrics.flush();
  save(step);
  if (step % opt.sample_interval != 0) log("samples: " + sample_grid(step));
  log(std::string(interrupt.requested() ? "interrupted; " : "") + "saved " + ckpt);
  res.steps_done = step, res.checkpoint = ckpt;
  return res;
}

}  // namespace aigc

// `aigc sample`: images from a DCGAN or diffusion checkpoint into a PNG grid, with progress and, for diffusion,
// the denoising trajectory.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>

#include "aigc/error.h"
#include "aigc/image_io.h"
#include "aigc/image_model.h"
#include "aigc/ops.h"
#include "command.h"

namespace aigc::cli {

namespace fs = std::filesystem;

namespace {

struct SampleArgs {
  std::string ckpt, out = "samples.png", class_name;
  int64_t n = 64, seed = -1;
  bool interpolate = false;  // DCGAN: a latent walk strip
  std::string trajectory;    // diffusion: directory for one PNG per denoising step
  SamplerOptions sampler;    // diffusion only
};

int64_t grid_cols(int64_t n) { return int64_t(std::ceil(std::sqrt(double(n)))); }

// Progress with ETA, and with --save-trajectory one grid per denoising step (at most ~100: every k-th step and
// the last) plus a strip of 10 moments of the first image.
struct DiffusionProgress {
  DiffusionProgress(const SampleArgs& args, int64_t steps) : a(args), total(steps) {}
  const SampleArgs& a;
  int64_t total;  // steps the sampler will take
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::vector<Tensor> strip;

  void operator()(int64_t k, int64_t t, const Tensor& x) {
    const bool last = k + 1 == total;
    if (!a.trajectory.empty() && (k % std::max<int64_t>(1, (total + 99) / 100) == 0 || last)) {
      char name[64];
      std::snprintf(name, sizeof name, "step_%04lld_t%04lld.png", (long long)k, (long long)t);
      save_image_grid((fs::path(a.trajectory) / name).string(), ops::clamp(x, -1.0f, 1.0f), grid_cols(a.n));
    }
    if (!a.trajectory.empty() && (k % std::max<int64_t>(1, total / 9) == 0 || last) && strip.size() < 10)
      strip.push_back(x.narrow0(0, 1));
    if ((k + 1) % std::max<int64_t>(1, total / 10) == 0 || last) {
      const double s = seconds();
      std::fprintf(stderr, "\rstep %lld/%lld, %.1fs, ETA %.0fs   ", (long long)(k + 1), (long long)total, s,
                   s / double(k + 1) * double(total - k - 1));
    }
  }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  void save_strip(int64_t channels, int64_t size) const {
    if (strip.empty()) return;
    std::vector<float> all;
    for (const Tensor& f : strip)
      for (float v : f.to_vector()) all.push_back(std::clamp(v, -1.0f, 1.0f));
    const std::string path = (fs::path(a.trajectory) / "strip.png").string();
    save_image_grid(path, Tensor::from_vector(all, {int64_t(strip.size()), channels, size, size}),
                    int64_t(strip.size()));
    std::fprintf(stderr, "trajectory: %s (and one grid per step beside it)\n", path.c_str());
  }
};

void sample_images(const SampleArgs& a) {
  AIGC_CHECK(a.n >= 1 && a.n <= 4096, "--n must be between 1 and 4096");
  auto model = ImageModel::load(a.ckpt);
  const bool diffusion = model->kind == "ddpm";
  AIGC_CHECK(!a.interpolate || !diffusion, "--interpolate is for DCGAN checkpoints");
  AIGC_CHECK(a.trajectory.empty() || diffusion, "--save-trajectory is for diffusion checkpoints");
  ImageModel::Options opt;
  opt.cls = a.class_name.empty() ? -1 : class_index(a.class_name, model->class_names, model->n_classes);
  opt.sampler = a.sampler;
  opt.interpolate = a.interpolate;
  DiffusionProgress progress(a, a.sampler.sampler == "ddpm" ? model->diffusion_steps() : a.sampler.steps);
  if (diffusion) {
    if (!a.trajectory.empty()) fs::create_directories(a.trajectory);
    opt.on_step = std::ref(progress);
  }
  Tensor x = model->generate(a.n, a.seed >= 0 ? uint64_t(a.seed) : std::random_device{}(), opt);
  if (diffusion)
    std::fprintf(stderr, "\nsampled %lld images in %.2f s (%.2f images/s)\n", (long long)a.n, progress.seconds(),
                 double(a.n) / progress.seconds());
  save_image_grid(a.out, x, a.interpolate ? a.n : grid_cols(a.n));
  progress.save_strip(model->channels, model->image_size);
  std::fprintf(stderr, "wrote %lld images to %s\n", (long long)a.n, a.out.c_str());
}

}  // namespace

Command sample_command(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  CLI::App* cmd =
      app.add_subcommand("sample", "Generate images with a trained DCGAN or diffusion model into a PNG grid");
  cmd->add_option("--ckpt", a->ckpt, "DCGAN or diffusion checkpoint (runs/.../ckpt.safetensors)")->required();
  cmd->add_option("--n", a->n, "Number of images")->capture_default_str();
  cmd->add_option("--out", a->out, "Output PNG")->capture_default_str();
  cmd->add_option("--class", a->class_name, "Class name (or index) for a conditional model, e.g. sneaker");
  cmd->add_option("--seed,-s", a->seed, "Noise seed (-1: random); the same seed gives the same images")
      ->capture_default_str();
  cmd->add_flag("--interpolate", a->interpolate, "DCGAN: a strip walking the latent space between two points");
  add_sampler(cmd, a->sampler);
  cmd->add_option("--save-trajectory", a->trajectory,
                  "Diffusion: a directory for the denoising steps (one grid per step, up to 100, and strip.png: "
                  "the first image from noise to the end)");
  add_threads(cmd);
  cmd->footer(
      "Examples:\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --sampler ddim --steps 50 --n 64 --seed 1 --out grid.png\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --sampler ddpm --n 16 --save-trajectory traj/\n"
      "  aigc sample --ckpt runs/ddpm-cond/ckpt.safetensors --class bag --guidance 2 --out bags.png\n"
      "  aigc sample --ckpt runs/dcgan/ckpt.safetensors --interpolate --out walk.png");
  return {cmd, [a] { sample_images(*a); }};
}

}  // namespace aigc::cli

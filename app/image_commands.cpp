#include "image_commands.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>

#include "aigc/autograd.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/error.h"
#include "aigc/fid.h"
#include "aigc/gan_trainer.h"
#include "aigc/image_io.h"
#include "aigc/image_model.h"
#include "aigc/ops.h"
#include "aigc/rng.h"

namespace aigc::cli {

namespace fs = std::filesystem;

namespace {

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

}  // namespace

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

void fid(const FidArgs& a) {
  auto cls = load_classifier(a.classifier);
  // Scores from different feature networks do not compare, so say which one this is.
  const std::string which = a.classifier == kBuiltinClassifier
                                ? "the builtin (pinned) FID-FMNIST classifier"
                                : "the classifier " + a.classifier + ", not the builtin one";
  std::fprintf(stderr, "features: %s\n", which.c_str());
  ImageSet real = load_image_dataset(a.real, "test"), floor_set = load_image_dataset(a.real, "train");
  std::vector<double> fr = image_features(*cls, real, a.n), ff;
  if (fs::is_directory(a.fake) || a.fake == "fashion-mnist") {
    ff = image_features(*cls, load_image_dataset(a.fake, "test"), a.n);
  } else if (checkpoint_kind(a.fake) == "ddpm") {
    LoadedDiffusion ld = load_diffusion(a.fake);
    const int64_t n_classes = ld.net->config().n_classes;
    Rng rng(12345);
    auto t0 = std::chrono::steady_clock::now();
    ff = features_of(*cls, a.n, 250, [&](int64_t first, int64_t count) {
      std::vector<int32_t> l(static_cast<size_t>(count));
      for (int64_t b = 0; b < count; b++) l[size_t(b)] = n_classes ? int32_t((first + b) % n_classes) : 0;
      Tensor x = diffusion_sample(*ld.net, ld.schedule, count, n_classes ? Tensor::from_ints(l, {count}) : Tensor(),
                                  a.sampler, rng);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\rsampled %lld/%lld images, %.0fs, ETA %.0fs   ", (long long)(first + count),
                   (long long)a.n, s, s / double(first + count) * double(a.n - first - count));
      return x;
    });
    std::fprintf(stderr, "\n");
  } else {
    LoadedGenerator lg = load_generator(a.fake);
    ff = generated_features(*cls, *lg.g, a.n, 12345);
  }
  const int64_t n_real = int64_t(fr.size()) / cls->n_features, n_fake = int64_t(ff.size()) / cls->n_features;
  const double value = frechet_distance(fr, ff, cls->n_features);
  const double floor = frechet_distance(fr, image_features(*cls, floor_set, n_real), cls->n_features);
  std::printf("FID-FMNIST %.3f (%lld real vs %lld generated; floor, real test vs real train: %.3f)\n", value,
              (long long)n_real, (long long)n_fake, floor);
}

}  // namespace aigc::cli

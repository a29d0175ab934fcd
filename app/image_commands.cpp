#include "image_commands.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
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

// n latent points on the straight line between two random points.
Tensor latent_walk(int64_t n, int64_t nz, Rng& rng) {
  std::vector<float> e = randn({2, nz}, rng).to_vector(), out(size_t(n * nz));
  for (int64_t i = 0; i < n; i++) {
    const float t = n > 1 ? float(i) / float(n - 1) : 0.0f;
    for (int64_t k = 0; k < nz; k++) out[size_t(i * nz + k)] = (1 - t) * e[size_t(k)] + t * e[size_t(nz + k)];
  }
  return Tensor::from_vector(out, {n, nz});
}

int64_t grid_cols(int64_t n) { return int64_t(std::ceil(std::sqrt(double(n)))); }

void sample_dcgan(const SampleArgs& a, Rng& rng) {
  LoadedGenerator lg = load_generator(a.ckpt);
  const DCGANConfig& c = lg.g->config();
  const bool fixed = !a.class_name.empty();
  const int32_t cls = fixed ? class_index(a.class_name, lg.class_names, c.n_classes) : 0;
  Tensor z = a.interpolate ? latent_walk(a.n, c.nz, rng) : randn({a.n, c.nz}, rng);
  NoGradGuard ng;
  Tensor images = lg.g->forward(z, labels_for(a.n, c.n_classes, cls, fixed || a.interpolate), false);
  save_image_grid(a.out, images, a.interpolate ? a.n : grid_cols(a.n));
}

void sample_diffusion(const SampleArgs& a, Rng& rng) {
  AIGC_CHECK(!a.interpolate, "--interpolate is for DCGAN checkpoints");
  LoadedDiffusion ld = load_diffusion(a.ckpt);
  const UNetConfig& c = ld.net->config();
  const bool fixed = !a.class_name.empty();
  const int32_t cls = fixed ? class_index(a.class_name, ld.class_names, c.n_classes) : 0;
  AIGC_CHECK(a.sampler.guidance == 0.0 || c.n_classes > 0, "--guidance needs a class-conditional model");
  const int64_t total = a.sampler.sampler == "ddpm" ? ld.schedule.T() : a.sampler.steps;
  // A trajectory keeps at most ~100 frames (every k-th step, and the last) and a strip of 10 for the first image.
  const int64_t every = std::max<int64_t>(1, (total + 99) / 100);
  std::vector<Tensor> strip;
  if (!a.trajectory.empty()) fs::create_directories(a.trajectory);
  auto t0 = std::chrono::steady_clock::now();
  auto on_step = [&](int64_t k, int64_t t, const Tensor& x) {
    const bool last = k + 1 == total;
    if (!a.trajectory.empty() && (k % every == 0 || last)) {
      char name[64];
      std::snprintf(name, sizeof name, "step_%04lld_t%04lld.png", (long long)k, (long long)t);
      save_image_grid((fs::path(a.trajectory) / name).string(), ops::clamp(x, -1.0f, 1.0f), grid_cols(a.n));
    }
    if (!a.trajectory.empty() && (k % std::max<int64_t>(1, total / 9) == 0 || last) && strip.size() < 10)
      strip.push_back(x.narrow0(0, 1));
    if ((k + 1) % std::max<int64_t>(1, total / 10) == 0 || last) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\rstep %lld/%lld, %.1fs, ETA %.0fs   ", (long long)(k + 1), (long long)total, s,
                   s / double(k + 1) * double(total - k - 1));
    }
  };
  Tensor x =
      diffusion_sample(*ld.net, ld.schedule, a.n, c.n_classes ? labels_for(a.n, c.n_classes, cls, fixed) : Tensor(),
                       a.sampler, rng, on_step);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "\nsampled %lld images in %.2f s (%.2f images/s)\n", (long long)a.n, secs, double(a.n) / secs);
  save_image_grid(a.out, x, grid_cols(a.n));
  if (!strip.empty()) {
    std::vector<float> all;
    for (const Tensor& f : strip)
      for (float v : f.to_vector()) all.push_back(std::clamp(v, -1.0f, 1.0f));
    const std::string path = (fs::path(a.trajectory) / "strip.png").string();
    save_image_grid(path, Tensor::from_vector(all, {int64_t(strip.size()), c.channels, c.image_size, c.image_size}),
                    int64_t(strip.size()));
    std::fprintf(stderr, "trajectory: %s (and one grid per step beside it)\n", path.c_str());
  }
}

}  // namespace

void sample_images(const SampleArgs& a) {
  AIGC_CHECK(a.n >= 1 && a.n <= 4096, "--n must be between 1 and 4096");
  Rng rng(a.seed >= 0 ? uint64_t(a.seed) : std::random_device{}());
  const std::string kind = checkpoint_kind(a.ckpt);
  if (kind == "dcgan")
    sample_dcgan(a, rng);
  else if (kind == "ddpm")
    sample_diffusion(a, rng);
  else
    fail("'" + a.ckpt + "' is neither a DCGAN nor a diffusion checkpoint");
  std::fprintf(stderr, "wrote %lld images to %s\n", (long long)a.n, a.out.c_str());
}

void fid(const FidArgs& a) {
  auto cls = load_classifier(a.classifier);
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

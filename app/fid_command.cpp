// `aigc fid`: FID-FMNIST, the Frechet distance between classifier features of real and generated images.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "aigc/checkpoint_kind.h"
#include "aigc/fid.h"
#include "aigc/image_data.h"
#include "aigc/models/dcgan.h"
#include "aigc/models/ddpm.h"
#include "aigc/rng.h"
#include "command.h"

namespace aigc::cli {

namespace fs = std::filesystem;

namespace {

struct FidArgs {
  std::string real = "fashion-mnist", fake, classifier = kBuiltinClassifier;
  int64_t n = 10000;
  SamplerOptions sampler;  // when fake is a diffusion checkpoint
};

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

}  // namespace

Command fid_command(CLI::App& app) {
  auto a = std::make_shared<FidArgs>();
  CLI::App* cmd = app.add_subcommand("fid", "FID-FMNIST: Frechet distance of classifier features, real vs generated");
  cmd->add_option("--real", a->real, "Dataset of real images (its test split)")->capture_default_str();
  cmd->add_option("--fake", a->fake,
                  "A DCGAN or diffusion checkpoint to sample from, or a dataset directory (its test split)")
      ->required();
  cmd->add_option("--classifier", a->classifier,
                  "Feature network: builtin (the pinned one FID-FMNIST is defined with, compiled in; scores from "
                  "any build compare) or a checkpoint of your own from aigc train classifier")
      ->capture_default_str();
  cmd->add_option("--n", a->n, "Images per set")->capture_default_str();
  add_sampler(cmd, a->sampler);
  add_threads(cmd);
  cmd->footer(
      "Examples:\n"
      "  aigc fid --fake runs/ddpm/ckpt.safetensors --sampler ddim --steps 50 --n 1000\n"
      "  aigc fid --fake runs/dcgan/ckpt.safetensors");
  return {cmd, [a] { fid(*a); }};
}

}  // namespace aigc::cli

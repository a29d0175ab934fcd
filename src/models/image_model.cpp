#include "aigc/image_model.h"

#include <algorithm>
#include <cctype>

#include "aigc/autograd.h"
#include "aigc/checkpoint_kind.h"
#include "aigc/error.h"
#include "aigc/models/dcgan.h"
#include "aigc/models/ddpm.h"
#include "aigc/models/unet.h"
#include "aigc/rng.h"

namespace aigc {

int32_t class_index(const std::string& name, const std::vector<std::string>& names, int64_t n_classes) {
  AIGC_CHECK(n_classes > 0, "class '" + name + "': this model is not class-conditional");
  auto it = std::find(names.begin(), names.end(), name);
  const bool digits =
      !name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(uint8_t(c)); });
  const long cls = it != names.end() ? long(it - names.begin()) : digits && name.size() < 9 ? std::stol(name) : -1;
  if (cls < 0 || cls >= n_classes) {
    std::string all;
    for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
    fail("class '" + name + "' is not one of this model's classes (" +
         (all.empty() ? "0 to " + std::to_string(n_classes - 1) : all) + ")");
  }
  return int32_t(cls);
}

Tensor labels_for(int64_t n, int64_t n_classes, int32_t cls, bool fixed) {
  std::vector<int32_t> l(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) l[size_t(i)] = fixed ? cls : (n_classes > 0 ? int32_t(i % n_classes) : 0);
  return Tensor::from_ints(l, {n});
}

ImageModel::~ImageModel() = default;

std::unique_ptr<ImageModel> ImageModel::load(const std::string& path) {
  std::unique_ptr<ImageModel> m(new ImageModel());
  m->kind = checkpoint_kind(path);
  if (m->kind == "dcgan") {
    LoadedGenerator lg = load_generator(path);
    const DCGANConfig& c = lg.g->config();
    m->image_size = c.image_size, m->channels = c.channels, m->n_classes = c.n_classes;
    m->class_names = std::move(lg.class_names);
    m->gan_ = std::move(lg.g);
  } else if (m->kind == "ddpm") {
    LoadedDiffusion ld = load_diffusion(path);
    const UNetConfig& c = ld.net->config();
    m->image_size = c.image_size, m->channels = c.channels, m->n_classes = c.n_classes;
    m->class_names = std::move(ld.class_names);
    m->unet_ = std::move(ld.net);
    m->schedule_ = std::move(ld.schedule);
  } else {
    fail("'" + path + "' is neither a DCGAN nor a diffusion checkpoint");
  }
  return m;
}

// n latent points on the straight line between two random points.
static Tensor latent_walk(int64_t n, int64_t nz, Rng& rng) {
  std::vector<float> e = randn({2, nz}, rng).to_vector(), out(size_t(n * nz));
  for (int64_t i = 0; i < n; i++) {
    const float t = n > 1 ? float(i) / float(n - 1) : 0.0f;
    for (int64_t k = 0; k < nz; k++) out[size_t(i * nz + k)] = (1 - t) * e[size_t(k)] + t * e[size_t(nz + k)];
  }
  return Tensor::from_vector(out, {n, nz});
}

Tensor ImageModel::generate(int64_t n, uint64_t seed, const Options& opt) {
  AIGC_CHECK(n >= 1, "generate: n must be at least 1");
  AIGC_CHECK(!opt.interpolate || gan_, "interpolation is for DCGAN checkpoints");
  Rng rng(seed);
  const bool fixed = opt.cls >= 0 || opt.interpolate;
  Tensor labels = labels_for(n, n_classes, std::max(opt.cls, 0), fixed);
  if (gan_) {
    const int64_t nz = gan_->config().nz;
    Tensor z = opt.interpolate ? latent_walk(n, nz, rng) : randn({n, nz}, rng);
    NoGradGuard ng;
    return gan_->forward(z, labels, false);
  }
  if (!n_classes) labels = Tensor();
  AIGC_CHECK(opt.sampler.guidance == 0.0 || n_classes > 0, "guidance needs a class-conditional model");
  return diffusion_sample(*unet_, schedule_, n, labels, opt.sampler, rng, opt.on_step);
}

}  // namespace aigc

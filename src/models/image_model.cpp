#include "aigc/image_model.h"

#include <algorithm>
#include <cctype>

#include "aigc/autograd.h"
#include "aigc/diffusion_trainer.h"
#include "aigc/error.h"
#include "aigc/gan_trainer.h"
#include "aigc/models/dcgan.h"
#include "aigc/models/unet.h"
#include "aigc/rng.h"

namespace aigc {

int32_t class_index(const std::string& name, const std::vector<std::string>& names, int64_t n_classes) {
  AIGC_CHECK(n_classes > 0, "class '" + name + "': this model is not class-conditional");
  auto it = std::find(names.begin(), names.end(), name);
  const bool digits = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(uint8_t(c)); });
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

Tensor ImageModel::generate(int64_t n, int32_t cls, uint64_t seed, const SamplerOptions& sampler) {
  AIGC_CHECK(n >= 1, "generate: n must be at least 1");
  Rng rng(seed);
  Tensor labels = labels_for(n, n_classes, std::max(cls, 0), cls >= 0);
  if (gan_) {
    NoGradGuard ng;
    return gan_->forward(randn({n, gan_->config().nz}, rng), labels, false);
  }
  if (!n_classes) labels = Tensor();
  AIGC_CHECK(sampler.guidance == 0.0 || n_classes > 0, "guidance needs a class-conditional model");
  return diffusion_sample(*unet_, schedule_, n, labels, sampler, rng);
}

}  // namespace aigc

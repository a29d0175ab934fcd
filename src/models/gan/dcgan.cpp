// DCGAN generator and discriminator, composed from ops only.
#include "aigc/models/dcgan.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/rng.h"

namespace aigc {

void DCGANConfig::validate() const {
  AIGC_CHECK(image_size == 28 || image_size == 32,
             "dcgan: image_size must be 28 or 32, not " + std::to_string(image_size));
  AIGC_CHECK(channels == 1 || channels == 3, "dcgan: channels must be 1 or 3");
  AIGC_CHECK(nz >= 1 && nz <= 4096 && ngf >= 1 && ngf <= 1024 && ndf >= 1 && ndf <= 1024,
             "dcgan: nz, ngf, ndf out of range");
  AIGC_CHECK(n_classes >= 0 && n_classes <= 1000, "dcgan: n_classes out of range");
  AIGC_CHECK(d_norm == "batch" || d_norm == "none", "dcgan: d_norm must be batch or none, not '" + d_norm + "'");
}

std::string DCGANConfig::to_json() const {
  return nlohmann::json{{"image_size", image_size},
                        {"channels", channels},
                        {"nz", nz},
                        {"ngf", ngf},
                        {"ndf", ndf},
                        {"n_classes", n_classes},
                        {"d_norm", d_norm},
                        {"spectral_norm", spectral_norm}}
      .dump();
}

DCGANConfig DCGANConfig::from_json(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  AIGC_CHECK(j.is_object(), "dcgan config: not a JSON object");
  DCGANConfig c;
  for (auto [key, field] : {std::pair{"image_size", &c.image_size},
                            {"channels", &c.channels},
                            {"nz", &c.nz},
                            {"ngf", &c.ngf},
                            {"ndf", &c.ndf},
                            {"n_classes", &c.n_classes}}) {
    AIGC_CHECK(j.contains(key) && j[key].is_number_integer(),
               std::string("dcgan config: '") + key + "' must be an integer");
    *field = j[key].get<int64_t>();
  }
  // Optional: checkpoints from before these existed have BatchNorm and no spectral normalization.
  if (j.contains("d_norm")) {
    AIGC_CHECK(j["d_norm"].is_string(), "dcgan config: 'd_norm' must be a string");
    c.d_norm = j["d_norm"].get<std::string>();
  }
  if (j.contains("spectral_norm")) {
    AIGC_CHECK(j["spectral_norm"].is_boolean(), "dcgan config: 'spectral_norm' must be true or false");
    c.spectral_norm = j["spectral_norm"].get<bool>();
  }
  c.validate();
  return c;
}

ConvNet::Layer ConvNet::add_layer(const std::string& name, const Shape& w_shape, bool bias, bool batchnorm,
                                  int64_t stride, int64_t padding, int64_t bn_channels) {
  Layer l;
  l.w = params_.add(name + ".weight", w_shape, true);
  if (bias) l.b = params_.add(name + ".bias", {bn_channels}, false);
  if (batchnorm) {
    l.bn_w = params_.add(name + ".bn.weight", {bn_channels}, false);
    l.bn_b = params_.add(name + ".bn.bias", {bn_channels}, false);
    l.bn_mean = Tensor::zeros({bn_channels});
    l.bn_var = Tensor::zeros({bn_channels});
    init::constant(l.bn_var, 1.0f);
    buffers_.push_back({name + ".bn.running_mean", l.bn_mean});
    buffers_.push_back({name + ".bn.running_var", l.bn_var});
    bn_layers_++;
  }
  l.stride = stride, l.padding = padding;
  return l;
}

void ConvNet::init_weights(uint64_t seed) {
  Rng rng(seed);
  NoGradGuard ng;
  for (const Param& p : params_.params()) {
    if (p.name.ends_with(".bn.weight"))
      init::normal(p.value, 1.0f, 0.02f, rng);
    else if (p.name.ends_with(".bias"))
      init::constant(p.value, 0.0f);
    else
      init::normal(p.value, 0.0f, 0.02f, rng);
  }
  // Spectral norm's vectors start as random unit vectors (as PyTorch's spectral_norm); the rest as
  // fresh statistics.
  for (auto& [name, t] : buffers_) {
    if (is_running_stat(name)) {
      init::constant(t, name.ends_with("running_var") ? 1.0f : 0.0f);
      continue;
    }
    std::vector<float> v = randn({t.numel()}, rng).to_vector();
    double n = 0;
    for (float x : v) n += double(x) * x;
    for (float& x : v) x = float(x / std::max(std::sqrt(n), 1e-12));
    backend_for(t.device()).from_host(t.f32(), v.data(), v.size() * 4);
  }
}

bool ConvNet::is_running_stat(const std::string& name) {
  return name.ends_with(".running_mean") || name.ends_with(".running_var");
}

Tensor ConvNet::batchnorm(Layer& l, const Tensor& x, bool training) {
  if (training) bn_calls_++;
  return ops::batch_norm2d(x, l.bn_w, l.bn_b, l.bn_mean, l.bn_var, training, kBnMomentum);
}

Generator::Generator(const DCGANConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t base = cfg_.image_size == 28 ? 7 : 4, n_up = cfg_.image_size == 28 ? 2 : 3;
  const int64_t nz_in = cfg_.n_classes > 0 ? 2 * cfg_.nz : cfg_.nz;
  if (cfg_.n_classes > 0) label_emb_ = params_.add("label_emb", {cfg_.n_classes, cfg_.nz}, false);
  // Channels shrink by half at each upsampling: ngf * 2^(n_up - 1) at the base resolution, ngf before the last.
  int64_t ch = cfg_.ngf << (n_up - 1);
  layers_.push_back(add_layer("g.0", {nz_in, ch, base, base}, false, true, 1, 0, ch));
  for (int64_t i = 1; i <= n_up; i++) {
    const bool last = i == n_up;
    const int64_t out = last ? cfg_.channels : ch / 2;
    layers_.push_back(add_layer("g." + std::to_string(i), {ch, out, 4, 4}, last, !last, 2, 1, out));
    ch = out;
  }
  params_.finalize();
  init_weights(0);
}

Tensor Generator::forward(const Tensor& z, const Tensor& labels, bool training) {
  AIGC_CHECK(z.dim() == 2 && z.size(1) == cfg_.nz, "generator: z must be (B, " + std::to_string(cfg_.nz) + ")");
  const int64_t B = z.size(0);
  Tensor h = z.view({B, cfg_.nz, 1, 1});
  if (cfg_.n_classes > 0) {
    AIGC_CHECK(labels.defined() && labels.numel() == B, "generator: a conditional model needs one label per sample");
    Tensor e = ops::embedding(labels.view({B, 1}), label_emb_, Tensor());  // (B, 1, nz)
    h = ops::concat_channels(h, e.view({B, cfg_.nz, 1, 1}));
  }
  for (size_t i = 0; i < layers_.size(); i++) {
    Layer& l = layers_[i];
    h = ops::conv_transpose2d(h, l.w, l.b, {l.stride, l.padding});
    h = i + 1 < layers_.size() ? ops::relu(batchnorm(l, h, training)) : ops::tanh(h);
  }
  return h;
}

Discriminator::Discriminator(const DCGANConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t S = cfg_.image_size, n_down = S == 28 ? 2 : 3, final_k = S == 28 ? 7 : 4;
  if (cfg_.n_classes > 0) label_emb_ = params_.add("label_emb", {cfg_.n_classes, S * S}, false);
  int64_t in = cfg_.channels + (cfg_.n_classes > 0 ? 1 : 0), ch = cfg_.ndf;
  const bool bn = cfg_.d_norm == "batch";
  for (int64_t i = 0; i < n_down; i++) {  // the first layer has no BatchNorm (as in the paper)
    const bool norm = bn && i > 0;        // a bias only where no BatchNorm follows
    layers_.push_back(add_layer("d." + std::to_string(i), {ch, in, 4, 4}, !norm, norm, 2, 1, ch));
    in = ch, ch *= 2;
  }
  layers_.push_back(add_layer("d." + std::to_string(n_down), {1, in, final_k, final_k}, true, false, 1, 0, 1));
  if (cfg_.spectral_norm)
    for (size_t i = 0; i < layers_.size(); i++) {
      Layer& l = layers_[i];
      const std::string name = "d." + std::to_string(i) + ".sn";
      l.sn_u = Tensor::zeros({l.w.size(0)}), l.sn_v = Tensor::zeros({l.w.numel() / l.w.size(0)});
      buffers_.push_back({name + ".u", l.sn_u});
      buffers_.push_back({name + ".v", l.sn_v});
    }
  params_.finalize();
  init_weights(0);
}

Tensor Discriminator::forward(const Tensor& x, const Tensor& labels, bool training) {
  const int64_t S = cfg_.image_size;
  AIGC_CHECK(x.dim() == 4 && x.size(1) == cfg_.channels && x.size(2) == S && x.size(3) == S,
             "discriminator: images must be (B, " + std::to_string(cfg_.channels) + ", " + std::to_string(S) + ", " +
                 std::to_string(S) + "), got " + shape_str(x.shape()));
  const int64_t B = x.size(0);
  Tensor h = x;
  if (cfg_.n_classes > 0) {
    AIGC_CHECK(labels.defined() && labels.numel() == B,
               "discriminator: a conditional model needs one label per "
               "sample");
    Tensor plane = ops::embedding(labels.view({B, 1}), label_emb_, Tensor());  // (B, 1, S*S)
    h = ops::concat_channels(h, plane.view({B, 1, S, S}));
  }
  for (size_t i = 0; i < layers_.size(); i++) {
    Layer& l = layers_[i];
    const Tensor w = l.sn_u.defined() ? ops::spectral_normalize(l.w, l.sn_u, l.sn_v) : l.w;
    h = ops::conv2d(h, w, l.b, {l.stride, l.padding});
    if (i + 1 < layers_.size()) h = ops::leaky_relu(l.bn_w.defined() ? batchnorm(l, h, training) : h, 0.2f);
  }
  return h.view({B});
}

void Discriminator::power_iteration() {
  NoGradGuard ng;
  for (Layer& l : layers_) {
    if (!l.sn_u.defined()) continue;
    const int64_t R = l.sn_u.numel(), K = l.sn_v.numel();
    const std::vector<float> w = l.w.to_vector();
    std::vector<float> u = l.sn_u.to_vector(), v(size_t(K), 0.0f);
    // Small matrices (at most a few hundred thousand weights): on the host, in double.
    auto normalize = [](std::vector<float>& x, const std::vector<double>& y) {
      double n = 0;
      for (double e : y) n += e * e;
      n = std::max(std::sqrt(n), 1e-12);  // PyTorch's normalize eps
      for (size_t i = 0; i < x.size(); i++) x[i] = float(y[i] / n);
    };
    std::vector<double> wtu(size_t(K), 0.0), wv(size_t(R), 0.0);
    for (int64_t r = 0; r < R; r++)
      for (int64_t k = 0; k < K; k++) wtu[size_t(k)] += double(w[size_t(r * K + k)]) * u[size_t(r)];
    normalize(v, wtu);
    for (int64_t r = 0; r < R; r++)
      for (int64_t k = 0; k < K; k++) wv[size_t(r)] += double(w[size_t(r * K + k)]) * v[size_t(k)];
    normalize(u, wv);
    backend_for(l.sn_u.device()).from_host(l.sn_u.f32(), u.data(), u.size() * 4);
    backend_for(l.sn_v.device()).from_host(l.sn_v.f32(), v.data(), v.size() * 4);
  }
}

}  // namespace aigc

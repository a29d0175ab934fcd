#include "aigc/fid.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"

namespace aigc {

Classifier::Classifier(int64_t channels_, int64_t image_size_, int64_t n_classes_, int64_t n_features_)
    : channels(channels_), image_size(image_size_), n_classes(n_classes_), n_features(n_features_) {
  AIGC_CHECK(image_size == 28 || image_size == 32, "classifier: images must be 28x28 or 32x32");
  const int64_t s = image_size / 4;  // after two stride-2 convolutions
  convs_.push_back(add_layer("c.0", {32, channels, 4, 4}, true, false, 2, 1, 32));
  convs_.push_back(add_layer("c.1", {64, 32, 4, 4}, false, true, 2, 1, 64));
  convs_.push_back(add_layer("c.2", {n_features, 64, s, s}, true, false, 1, 0, n_features));  // dense
  head_w_ = params_.add("head.weight", {n_classes, n_features}, true);
  head_b_ = params_.add("head.bias", {n_classes}, false);
  params_.finalize();
  init_weights(0);
}

Tensor Classifier::features(const Tensor& x, bool training) {
  Tensor h = ops::leaky_relu(ops::conv2d(x, convs_[0].w, convs_[0].b, {2, 1}), 0.2f);
  h = ops::leaky_relu(batchnorm(convs_[1], ops::conv2d(h, convs_[1].w, Tensor(), {2, 1}), training), 0.2f);
  h = ops::relu(ops::conv2d(h, convs_[2].w, convs_[2].b));
  return h.view({x.size(0), n_features});
}

Tensor Classifier::forward(const Tensor& x, bool training) {
  return ops::linear(features(x, training), head_w_, head_b_);
}

namespace {

// Images [first, first + B) of a set as a (B, C, H, W) tensor in [-1, 1].
Tensor batch_of(const ImageSet& d, int64_t first, int64_t B) {
  Tensor t = Tensor::empty({B, d.channels, d.height, d.width});
  const uint8_t* src = d.pixels.data() + first * d.image_size();
  float* dst = t.f32();
  for (int64_t i = 0; i < B * d.image_size(); i++) dst[i] = float(src[i]) / 127.5f - 1.0f;
  return t;
}

}  // namespace

double classifier_accuracy(Classifier& c, const ImageSet& data) {
  NoGradGuard ng;
  int64_t right = 0;
  for (int64_t i = 0; i < data.n; i += 500) {
    const int64_t B = std::min<int64_t>(500, data.n - i);
    std::vector<float> logits = c.forward(batch_of(data, i, B), false).to_vector();
    for (int64_t b = 0; b < B; b++) {
      const float* row = logits.data() + b * c.n_classes;
      right += int64_t(std::max_element(row, row + c.n_classes) - row) == data.labels[size_t(i + b)];
    }
  }
  return double(right) / double(data.n);
}

double train_classifier(const ClassifierTrainOptions& opt) {
  const ImageSet train = load_image_dataset(opt.data, "train"), test = load_image_dataset(opt.data, "test");
  AIGC_CHECK(!train.labels.empty(), "the classifier needs a labeled dataset");
  const int64_t n_classes = int64_t(std::max<size_t>(train.class_names.size(), 10));
  Classifier c(train.channels, train.height, n_classes);
  c.init_weights(opt.seed);
  OptimConfig oc;
  oc.name = "adam", oc.lr = opt.lr, oc.beta1 = 0.9f, oc.beta2 = 0.999f, oc.weight_decay = 0.0f;
  Optimizer o(c.params(), oc);
  ImageLoader loader(train, opt.batch_size, opt.seed, false);
  const int64_t steps = opt.epochs * loader.batches_per_epoch();
  for (int64_t step = 1; step <= steps; step++) {
    Tensor x;
    std::vector<int32_t> y;
    loader.next(x, y);
    c.params().zero_grad();
    Tensor loss = ops::cross_entropy(c.forward(x, true), Tensor::from_ints(y, {opt.batch_size}));
    backward(loss);
    o.step(opt.lr);
    if (!opt.quiet && (step % 200 == 0 || step == steps))
      std::fprintf(stderr, "classifier step %lld/%lld | loss %.4f\n", (long long)step, (long long)steps, loss.item());
  }
  const double acc = classifier_accuracy(c, test);
  std::vector<StTensorOut> ts;
  for (const Param& p : c.params().params())
    ts.push_back({p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  for (auto& [name, t] : c.buffers()) ts.push_back({name, StDType::F32, t.shape(), t.f32(), size_t(t.numel()) * 4});
  nlohmann::json cfg = {{"channels", c.channels},
                        {"image_size", c.image_size},
                        {"n_classes", c.n_classes},
                        {"n_features", c.n_features},
                        {"test_accuracy", acc}};
  write_safetensors(opt.out, ts, {{"format", "aigc-classifier-1"}, {"aigc.config", cfg.dump()}});
  return acc;
}

std::unique_ptr<Classifier> load_classifier(const std::string& path) {
  const SafeTensorsReader st =
      path == kBuiltinClassifier
          ? SafeTensorsReader::from_bytes("<builtin FID-FMNIST classifier>", std::string(builtin_classifier_bytes()))
          : SafeTensorsReader(path);
  auto fmt = st.metadata().find("format");
  AIGC_CHECK(fmt != st.metadata().end() && fmt->second == "aigc-classifier-1",
             "'" + path + "' is not an aigc classifier checkpoint (train one: aigc train --model classifier)");
  nlohmann::json cfg = nlohmann::json::parse(st.metadata().at("aigc.config"));
  auto c = std::make_unique<Classifier>(cfg.at("channels").get<int64_t>(), cfg.at("image_size").get<int64_t>(),
                                        cfg.at("n_classes").get<int64_t>(), cfg.at("n_features").get<int64_t>());
  for (const Param& p : c->params().params()) st.read_f32_into(p.name, p.value.f32(), p.value.shape());
  for (auto& [name, t] : c->buffers()) st.read_f32_into(name, t.f32(), t.shape());
  return c;
}

namespace {
// Generated images as an 8-bit file would hold them (clamped to [-1, 1], 256 levels), like the real images and
// like any generator's saved samples: the metric compares pictures, not the extra precision of one producer.
Tensor as_8bit(const Tensor& images) {
  std::vector<float> v = images.to_vector();
  for (float& x : v) x = std::nearbyint((std::clamp(x, -1.0f, 1.0f) + 1.0f) * 127.5f) / 127.5f - 1.0f;
  return Tensor::from_vector(v, images.shape());
}
}  // namespace

std::vector<double> features_of(Classifier& c, int64_t n, int64_t batch,
                                const std::function<Tensor(int64_t first, int64_t count)>& make_images) {
  NoGradGuard ng;
  std::vector<double> out;
  for (int64_t i = 0; i < n; i += batch) {
    Tensor images = as_8bit(make_images(i, std::min(batch, n - i)));
    AIGC_CHECK(images.dim() == 4 && images.size(1) == c.channels && images.size(2) == c.image_size &&
                   images.size(3) == c.image_size,
               "FID: images of shape " + shape_str(images.shape()) + " do not match the classifier's input (" +
                   std::to_string(c.channels) + " x " + std::to_string(c.image_size) + " x " +
                   std::to_string(c.image_size) + ")");
    for (float v : c.features(images, false).to_vector()) out.push_back(v);
  }
  return out;
}

std::vector<double> image_features(Classifier& c, const ImageSet& data, int64_t limit) {
  return features_of(c, std::min(limit, data.n), 500, [&](int64_t i, int64_t B) { return batch_of(data, i, B); });
}

std::vector<double> generated_features(Classifier& c, Generator& g, int64_t n, uint64_t seed) {
  Rng rng(seed);
  const DCGANConfig& cfg = g.config();
  return features_of(c, n, 500, [&](int64_t i, int64_t B) {
    std::vector<int32_t> labels(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; b++) labels[size_t(b)] = cfg.n_classes ? int32_t((i + b) % cfg.n_classes) : 0;
    return g.forward(randn({B, cfg.nz}, rng), Tensor::from_ints(labels, {B}), false);
  });
}

namespace {

// Eigenvalues (and vectors, as columns of V) of a symmetric matrix by cyclic Jacobi rotations.
void jacobi_eigen(std::vector<double> A, int64_t n, std::vector<double>& w, std::vector<double>& V) {
  V.assign(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; i++) V[size_t(i * n + i)] = 1.0;
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0;
    for (int64_t p = 0; p < n; p++)
      for (int64_t q = p + 1; q < n; q++) off += A[size_t(p * n + q)] * A[size_t(p * n + q)];
    if (off < 1e-22) break;
    for (int64_t p = 0; p < n; p++)
      for (int64_t q = p + 1; q < n; q++) {
        const double apq = A[size_t(p * n + q)];
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (A[size_t(q * n + q)] - A[size_t(p * n + p)]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int64_t k = 0; k < n; k++) {  // A <- J^T A J
          const double akp = A[size_t(k * n + p)], akq = A[size_t(k * n + q)];
          A[size_t(k * n + p)] = c * akp - s * akq, A[size_t(k * n + q)] = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; k++) {
          const double apk = A[size_t(p * n + k)], aqk = A[size_t(q * n + k)];
          A[size_t(p * n + k)] = c * apk - s * aqk, A[size_t(q * n + k)] = s * apk + c * aqk;
        }
        for (int64_t k = 0; k < n; k++) {
          const double vkp = V[size_t(k * n + p)], vkq = V[size_t(k * n + q)];
          V[size_t(k * n + p)] = c * vkp - s * vkq, V[size_t(k * n + q)] = s * vkp + c * vkq;
        }
      }
  }
  w.resize(size_t(n));
  for (int64_t i = 0; i < n; i++) w[size_t(i)] = A[size_t(i * n + i)];
}

void mean_cov(const std::vector<double>& x, int64_t dim, std::vector<double>& mu, std::vector<double>& cov) {
  const int64_t n = int64_t(x.size()) / dim;
  AIGC_CHECK(n >= 2, "FID needs at least two samples per set");
  mu.assign(size_t(dim), 0.0), cov.assign(size_t(dim * dim), 0.0);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < dim; j++) mu[size_t(j)] += x[size_t(i * dim + j)] / double(n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t a = 0; a < dim; a++) {
      const double da = x[size_t(i * dim + a)] - mu[size_t(a)];
      for (int64_t b = a; b < dim; b++) cov[size_t(a * dim + b)] += da * (x[size_t(i * dim + b)] - mu[size_t(b)]);
    }
  for (int64_t a = 0; a < dim; a++)
    for (int64_t b = a; b < dim; b++) cov[size_t(b * dim + a)] = cov[size_t(a * dim + b)] /= double(n - 1);
}

}  // namespace

double frechet_distance(const std::vector<double>& a, const std::vector<double>& b, int64_t dim) {
  std::vector<double> mu1, s1, mu2, s2, w, V;
  mean_cov(a, dim, mu1, s1);
  mean_cov(b, dim, mu2, s2);
  // S1^1/2 from S1's eigen-decomposition, then tr((S1^1/2 S2 S1^1/2)^1/2) from the eigenvalues of that
  // symmetric positive semi-definite product.
  jacobi_eigen(s1, dim, w, V);
  std::vector<double> r(size_t(dim * dim), 0.0), tmp(size_t(dim * dim), 0.0), m(size_t(dim * dim), 0.0);
  for (int64_t i = 0; i < dim; i++)
    for (int64_t j = 0; j < dim; j++) {
      double s = 0;
      for (int64_t k = 0; k < dim; k++)
        s += V[size_t(i * dim + k)] * std::sqrt(std::max(w[size_t(k)], 0.0)) * V[size_t(j * dim + k)];
      r[size_t(i * dim + j)] = s;
    }
  for (int64_t i = 0; i < dim; i++)
    for (int64_t k = 0; k < dim; k++)
      for (int64_t j = 0; j < dim; j++) tmp[size_t(i * dim + j)] += r[size_t(i * dim + k)] * s2[size_t(k * dim + j)];
  for (int64_t i = 0; i < dim; i++)
    for (int64_t k = 0; k < dim; k++)
      for (int64_t j = 0; j < dim; j++) m[size_t(i * dim + j)] += tmp[size_t(i * dim + k)] * r[size_t(k * dim + j)];
  for (int64_t i = 0; i < dim; i++)  // symmetrize rounding noise away
    for (int64_t j = i + 1; j < dim; j++)
      m[size_t(i * dim + j)] = m[size_t(j * dim + i)] = 0.5 * (m[size_t(i * dim + j)] + m[size_t(j * dim + i)]);
  jacobi_eigen(m, dim, w, V);
  double tr_sqrt = 0, tr1 = 0, tr2 = 0, dmu = 0;
  for (double e : w) tr_sqrt += std::sqrt(std::max(e, 0.0));
  for (int64_t i = 0; i < dim; i++) {
    tr1 += s1[size_t(i * dim + i)], tr2 += s2[size_t(i * dim + i)];
    dmu += (mu1[size_t(i)] - mu2[size_t(i)]) * (mu1[size_t(i)] - mu2[size_t(i)]);
  }
  return dmu + tr1 + tr2 - 2.0 * tr_sqrt;
}

}  // namespace aigc

// FID-FMNIST: a Fréchet distance between the feature statistics of two image sets, where the features are the
// penultimate layer of a Fashion-MNIST classifier that aigc trains itself (Inception weights are not
// available offline, so this is not the Inception FID and its values are not comparable with published ones).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aigc/image_data.h"
#include "aigc/models/dcgan.h"

namespace aigc {

// A small conv net for 28x28 (or 32x32) images: two strided convolutions, a dense layer of n_features (the
// features FID uses), and a linear classifier over them.
class Classifier : public ConvNet {
 public:
  Classifier(int64_t channels, int64_t image_size, int64_t n_classes, int64_t n_features = 128);
  Tensor features(const Tensor& x, bool training);  // (B, n_features)
  Tensor forward(const Tensor& x, bool training);   // logits (B, n_classes)
  int64_t channels, image_size, n_classes, n_features;

 private:
  std::vector<Layer> convs_;
  Tensor head_w_, head_b_;
};

struct ClassifierTrainOptions {
  std::string data = "fashion-mnist";
  int64_t epochs = 5, batch_size = 64;
  float lr = 1e-3f;
  uint64_t seed = 1;
  std::string out = "runs/classifier/ckpt.safetensors";
  bool quiet = false;
};
// Trains on the train split, reports test accuracy, saves the checkpoint; returns the test accuracy.
double train_classifier(const ClassifierTrainOptions& opt);
// The feature network FID-FMNIST is defined with: a classifier trained once by `aigc train --model classifier`
// and compiled in (assets/fid_fmnist_classifier.safetensors), so that scores from any build are comparable.
inline constexpr const char* kBuiltinClassifier = "builtin";
std::string_view builtin_classifier_bytes();  // that checkpoint file's bytes
// `path` is a classifier checkpoint, or kBuiltinClassifier.
std::unique_ptr<Classifier> load_classifier(const std::string& path);
double classifier_accuracy(Classifier& c, const ImageSet& data);

// Features of n images produced `batch` at a time: make_images(first, count) returns images first ..
// first + count - 1 as (count, C, H, W) in [-1, 1]; they are rounded to 8-bit levels first, as saved images are.
std::vector<double> features_of(Classifier& c, int64_t n, int64_t batch,
                                const std::function<Tensor(int64_t first, int64_t count)>& make_images);
// Features of up to `limit` images of a set (first images in order), as rows of a (n, n_features) matrix.
std::vector<double> image_features(Classifier& c, const ImageSet& data, int64_t limit);
// Features of n images drawn from a generator (labels cycle over its classes when it is conditional).
std::vector<double> generated_features(Classifier& c, Generator& g, int64_t n, uint64_t seed);
// ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) of two feature matrices (rows = samples).
double frechet_distance(const std::vector<double>& a, const std::vector<double>& b, int64_t dim);

}  // namespace aigc

// DCGAN (Radford et al. 2016) for 28x28 or 32x32 images with 1 or 3 channels.
//  - Generator: z (B, nz) -> transposed convolutions doubling the resolution, BatchNorm + ReLU between them,
//    tanh out: images in [-1, 1].
//  - Discriminator: strided convolutions halving the resolution, LeakyReLU(0.2) (BatchNorm from the second
//    layer on, unless d_norm is "none"), one logit per image. With spectral_norm every convolution's weight is
//    divided by its largest singular value (Miyato et al.), estimated by one power iteration per update.
// Class-conditional when n_classes > 0: G concatenates a learned label embedding to z; D concatenates a learned
// label plane (one H x W channel per class) to the image.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aigc/params.h"
#include "aigc/tensor.h"

namespace aigc {

struct DCGANConfig {
  int64_t image_size = 28;  // 28 (two upsamplings from 7x7) or 32 (three from 4x4)
  int64_t channels = 1;
  int64_t nz = 64;  // latent size
  int64_t ngf = 64, ndf = 64;
  int64_t n_classes = 0;  // 0: unconditional
  // D's normalization between convolutions: "batch" (DCGAN) or "none" (what gradient penalties need: BatchNorm
  // mixes the samples, so one image's gradient would depend on the others).
  std::string d_norm = "batch";
  bool spectral_norm = false;
  std::string to_json() const;
  static DCGANConfig from_json(const std::string& json);  // validates every field
  void validate() const;
};

// A stack of conv layers with BatchNorm running statistics kept as non-trained buffers (shared by the GAN
// networks and the FID classifier).
class ConvNet {
 public:
  ParamStore& params() { return params_; }
  // Running statistics and spectral norm's singular vectors (name -> tensor), saved with the weights.
  std::vector<std::pair<std::string, Tensor>>& buffers() { return buffers_; }
  static bool is_running_stat(const std::string& buffer_name);  // a BatchNorm statistic (not u, v)
  // N(0, 0.02) conv weights; BatchNorm gains N(1, 0.02), biases 0 (the DCGAN paper's init).
  void init_weights(uint64_t seed);
  // Training forwards so far: each moved every running statistic one EMA step at kBnMomentum.
  int64_t running_stat_steps() const { return bn_layers_ ? bn_calls_ / bn_layers_ : 0; }
  static constexpr float kBnMomentum = 0.1f;

 protected:
  struct Layer {
    Tensor w, b, bn_w, bn_b, bn_mean, bn_var;  // bn_* undefined when the layer has no BatchNorm
    Tensor sn_u, sn_v;                         // spectral normalization's singular vectors, or undefined
    int64_t stride = 1, padding = 0;
  };
  Layer add_layer(const std::string& name, const Shape& w_shape, bool bias, bool batchnorm, int64_t stride,
                  int64_t padding, int64_t bn_channels);
  Tensor batchnorm(Layer& l, const Tensor& x, bool training);
  ParamStore params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  int64_t bn_calls_ = 0;  // BatchNorm layers run in training mode
  int64_t bn_layers_ = 0;
};

class Generator : public ConvNet {
 public:
  explicit Generator(const DCGANConfig& cfg);
  // z (B, nz) and labels (B) when conditional -> images (B, C, S, S) in [-1, 1].
  Tensor forward(const Tensor& z, const Tensor& labels, bool training);
  const DCGANConfig& config() const { return cfg_; }

 private:
  DCGANConfig cfg_;
  Tensor label_emb_;  // (n_classes, nz)
  std::vector<Layer> layers_;
};

class Discriminator : public ConvNet {
 public:
  explicit Discriminator(const DCGANConfig& cfg);
  // images (B, C, S, S) and labels (B) when conditional -> logits (B).
  Tensor forward(const Tensor& x, const Tensor& labels, bool training);
  // One power iteration for every spectrally normalized weight (once per update, as Miyato et al.'s Algorithm 1):
  // v = W^T u / |W^T u|, u = W v / |W v|. No-op without spectral_norm.
  void power_iteration();

 private:
  DCGANConfig cfg_;
  Tensor label_emb_;  // (n_classes, S * S): one learned plane per class
  std::vector<Layer> layers_;
};

// ---- Checkpoints (format aigc-dcgan-1) ----

class Optimizer;

// The generator of a DCGAN checkpoint, with the class names it was trained on (empty if unconditional).
struct LoadedGenerator {
  std::unique_ptr<Generator> g;
  std::vector<std::string> class_names;
};
LoadedGenerator load_generator(const std::string& path);
DCGANConfig dcgan_config_of(const std::string& path);  // validates the format
// Both networks, and their optimizers when given (training); written atomically.
void save_dcgan(const std::string& path, Generator& g, Discriminator& d, Optimizer* og, Optimizer* od,
                const std::vector<std::string>& class_names, const std::string& train_state_json);
// Restores both networks and optimizers' moments; returns the training state (JSON).
std::string load_dcgan(const std::string& path, Generator& g, Discriminator& d, Optimizer& og, Optimizer& od);

}  // namespace aigc

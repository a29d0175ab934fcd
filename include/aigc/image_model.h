// A trained image generator, DCGAN or diffusion, behind one interface: what `aigc sample` and the server's
// /v1/images/generations call.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aigc/diffusion.h"
#include "aigc/tensor.h"

namespace aigc {

class Generator;
class UNet;

// A class given by name or index -> its label; aigc::Error listing the model's classes otherwise.
int32_t class_index(const std::string& name, const std::vector<std::string>& names, int64_t n_classes);
// Labels (n) i32: all `cls` when fixed, else classes cycling 0, 1, ... (all 0 for unconditional models).
Tensor labels_for(int64_t n, int64_t n_classes, int32_t cls, bool fixed);

class ImageModel {
 public:
  static std::unique_ptr<ImageModel> load(const std::string& path);  // a DCGAN or a diffusion checkpoint
  ~ImageModel();

  std::string kind;  // "dcgan" or "ddpm"
  int64_t image_size = 0, channels = 0, n_classes = 0;
  std::vector<std::string> class_names;
  int64_t diffusion_steps() const { return schedule_.T(); }  // T of a diffusion model's schedule; 0 for a DCGAN

  struct Options {
    int32_t cls = -1;          // a class index, or < 0: cycle through the classes
    SamplerOptions sampler;    // diffusion models
    SampleStepFn on_step;      // diffusion models: sees each denoising step
    bool interpolate = false;  // DCGAN: latents on the line between two random points, one class (cls or 0)
  };
  // n images (n, C, H, W) in [-1, 1], from `seed`.
  Tensor generate(int64_t n, uint64_t seed, const Options& opt);

 private:
  ImageModel() = default;
  std::unique_ptr<Generator> gan_;
  std::unique_ptr<UNet> unet_;
  NoiseSchedule schedule_;
};

}  // namespace aigc

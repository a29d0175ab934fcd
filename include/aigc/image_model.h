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

  // n images (n, C, H, W) in [-1, 1] of class `cls` (or cycling through the classes when cls < 0), from `seed`.
  // sampler applies to diffusion models.
  Tensor generate(int64_t n, int32_t cls, uint64_t seed, const SamplerOptions& sampler = {});

 private:
  ImageModel() = default;
  std::unique_ptr<Generator> gan_;
  std::unique_ptr<UNet> unet_;
  NoiseSchedule schedule_;
};

}  // namespace aigc

// The image commands of the CLI: `aigc sample` (DCGAN or diffusion checkpoints) and `aigc fid`.
#pragma once
#include <cstdint>
#include <string>

#include "aigc/diffusion.h"
#include "aigc/fid.h"

namespace aigc::cli {

struct SampleArgs {
  std::string ckpt, out = "samples.png", class_name;
  int64_t n = 64, seed = -1;
  bool interpolate = false;  // DCGAN: a latent walk strip
  std::string trajectory;    // diffusion: directory for one PNG per denoising step
  SamplerOptions sampler;    // diffusion only
};
void sample_images(const SampleArgs& a);

struct FidArgs {
  std::string real = "fashion-mnist", fake, classifier = kBuiltinClassifier;
  int64_t n = 10000;
  SamplerOptions sampler;  // when fake is a diffusion checkpoint
};
void fid(const FidArgs& a);

}  // namespace aigc::cli

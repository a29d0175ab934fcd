// Diffusion model checkpoints (format aigc-ddpm-1): the U-Net's flat weights ("model"), their moving average
// ("ema", what sampling uses), Adam's moments, and in the metadata the U-Net config, the noise schedule, the
// class names and the training state.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "aigc/diffusion.h"
#include "aigc/models/unet.h"

namespace aigc {

class Optimizer;

// A trained model: the U-Net with its EMA weights (or the raw ones with ema = false), its schedule, and the
// class names it was trained on (empty if unconditional).
struct LoadedDiffusion {
  std::unique_ptr<UNet> net;
  NoiseSchedule schedule;
  std::vector<std::string> class_names;
};
LoadedDiffusion load_diffusion(const std::string& path, bool ema = true);

// The config and schedule of a checkpoint (validates the format).
UNetConfig ddpm_config_of(const std::string& path);
NoiseSchedule ddpm_schedule_of(const std::string& path);

// Written atomically. ema has the parameters' size; adam may be null (weights only).
void save_ddpm(const std::string& path, UNet& net, const Tensor& ema, Optimizer* adam, const NoiseSchedule& schedule,
               const std::vector<std::string>& class_names, const std::string& train_state_json);
// Restores the weights, their EMA and Adam's moments; returns the training state (JSON).
std::string load_ddpm(const std::string& path, UNet& net, Tensor& ema, Optimizer& adam);

}  // namespace aigc

// DDPM training on an image dataset (L_simple, see diffusion.h) with an EMA of the weights for sampling, run by
// the shared training loop (progress, sample grids, checkpoints, exact resume). Loading a trained model is the
// model's (models/ddpm.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aigc/checkpoint_kind.h"
#include "aigc/diffusion.h"
#include "aigc/models/ddpm.h"
#include "aigc/models/unet.h"
#include "aigc/rng.h"
#include "aigc/train_loop.h"

namespace aigc {

struct DiffusionTrainOptions {
  std::string data = "fashion-mnist";  // dataset directory or "fashion-mnist"
  UNetConfig model;                    // image_size and channels are taken from the data
  bool conditional = false;            // class labels into the U-Net (classifier-free guidance at sampling)
  float p_uncond = 0.1f;               // conditional: share of labels dropped to "no class" while training
  std::string schedule = "linear";     // linear | cosine
  int64_t timesteps = 1000;            // T
  int64_t batch_size = 64;
  int64_t steps = 4000;
  int64_t stop_after = 0;  // stop (and save) after this step; 0 = run to `steps`
  double max_minutes = 0;  // stop (and save) once this invocation has trained this long; 0 = no limit
  int64_t grad_accum = 1;  // micro-batches per update
  int max_bad_steps = 5;   // consecutive non-finite updates before the run stops
  float lr = 2e-4f;
  int64_t warmup = 200;      // linear learning-rate warmup steps
  float grad_clip = 1.0f;    // max global gradient norm (0 = off)
  float ema_decay = 0.999f;  // effective decay min(ema_decay, (1 + step) / (10 + step)): early steps track fast
  bool hflip = false;
  int64_t log_interval = 20, sample_interval = 1000, ckpt_interval = 500;
  int64_t sample_steps = 50;          // DDIM steps for the progress grids
  std::string out_dir = "runs/ddpm";  // ckpt.safetensors, metrics.jsonl, samples/step_N.png
  uint64_t seed = 1337;
  bool resume = false;
  bool quiet = false;
  int rank = 0, world = 1;  // data-parallel shard of the batches this process trains on

  LoopOptions loop() const;
};

struct DiffusionTrainResult {
  int64_t steps_done = 0;
  float first_loss = 0, last_loss = 0;  // the first step's loss and the mean of the last log interval
  std::string checkpoint;
};

DiffusionTrainResult train_diffusion(const DiffusionTrainOptions& opt, GradSync* sync = nullptr);

// The generator train_diffusion draws timesteps, noise and dropped labels from (see draw_training_noise), given
// its --seed; the U-Net's initial weights come from UNet(config, seed) and the batches from ImageLoader(data,
// batch, seed, hflip). bench/diffusion_streams.cpp writes these streams out for PyTorch's twin.
Rng diffusion_noise_rng(uint64_t seed, int64_t batch);

}  // namespace aigc

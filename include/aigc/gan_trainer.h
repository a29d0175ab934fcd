// DCGAN training: the alternating min-max game on an image dataset, with progress, sample grids, checkpoints
// and exact resume; and loading a trained generator for sampling.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aigc/models/dcgan.h"
#include "aigc/rng.h"

namespace aigc {

struct GanTrainOptions {
  std::string data = "fashion-mnist";  // dataset directory (IDX or CIFAR-10) or "fashion-mnist"
  DCGANConfig model;                   // image_size and channels are taken from the data
  bool conditional = false;            // class-conditional G and D (labels from the data)
  int64_t batch_size = 64;
  int64_t steps = 2000;    // one step = one D update + one G update
  int64_t stop_after = 0;  // stop (and save) after this step; 0 = run to `steps`
  float lr = 2e-4f, beta1 = 0.5f, beta2 = 0.999f;
  // "nonsaturating": G minimizes -log D(G(z)) (strong gradients while D still wins easily);
  // "minimax": G minimizes log(1 - D(G(z))), the game exactly as written.
  std::string loss = "nonsaturating";
  bool hflip = false;
  int64_t log_interval = 20, sample_interval = 200, ckpt_interval = 500;
  std::string out_dir = "runs/dcgan";  // ckpt.safetensors, metrics.jsonl, samples/step_N.png
  uint64_t seed = 1337;
  bool resume = false;
  bool quiet = false;
};

struct GanTrainResult {
  int64_t steps_done = 0;
  float last_d_loss = 0, last_g_loss = 0;
  std::string checkpoint;
};

GanTrainResult train_dcgan(const GanTrainOptions& opt);

// The random streams a training run from `seed` draws, besides the batch order (ImageLoader(data, B, seed)):
// the initial weights, and the noise generator that yields z_d then z_g for every step. Shared with
// bench/gan_streams.cpp, which hands the same streams to PyTorch's twin.
void init_gan(Generator& g, Discriminator& d, uint64_t seed);
Rng gan_noise_rng(uint64_t seed);

// One step of the game, as train_dcgan runs it: D learns on `real` and on G(z_d) (both with `labels`), then G
// learns through D on G(z_g). loss is "nonsaturating" or "minimax". Returns both losses (minimax: the value of
// log(1 - D(G(z))) G minimizes) and D's logits on the real and generated batches.
struct GanStep {
  float loss_d = 0, loss_g = 0;
  Tensor d_real, d_fake;
};
class Optimizer;
GanStep gan_step(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const Tensor& real, const Tensor& labels,
                 const Tensor& z_d, const Tensor& z_g, const std::string& loss, float lr);

// The generator of a DCGAN checkpoint, with the class names it was trained on (empty if unconditional).
struct LoadedGenerator {
  std::unique_ptr<Generator> g;
  std::vector<std::string> class_names;
};
LoadedGenerator load_generator(const std::string& path);

}  // namespace aigc

// DCGAN training: the alternating min-max game on an image dataset, run by the shared training loop (progress,
// sample grids, checkpoints, exact resume). Loading a trained generator is the model's (models/dcgan.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aigc/models/dcgan.h"
#include "aigc/rng.h"
#include "aigc/train_loop.h"

namespace aigc {

// The game's objective. D's gradient penalties need a D without BatchNorm (DCGANConfig::d_norm "none").
struct GanObjective {
  // "nonsaturating": G minimizes -log D(G(z)) (strong gradients while D still wins easily);
  // "hinge": D minimizes mean relu(1 - D(x)) + mean relu(1 + D(G(z))), G minimizes -mean D(G(z)) (SAGAN, BigGAN);
  // "lsgan": least squares, D to 1 on real and 0 on generated, G toward 1 (Mao et al.);
  // "minimax": G minimizes log(1 - D(G(z))), the game exactly as written;
  // "wgan-gp": a Wasserstein critic, D minimizes mean D(G(z)) - mean D(x) + gp_lambda mean (|grad D(x~)| - 1)^2
  //     on random interpolates x~ of real and generated images, G minimizes -mean D(G(z)) (Gulrajani et al.).
  std::string loss = "nonsaturating";
  float gp_lambda = 10.0f;
  float r1_gamma = 0.0f;  // > 0: D also minimizes (r1_gamma / 2) mean |grad D(x)|^2 on real images (Mescheder et al.)
  int64_t n_critic = 1;   // D updates per G update, each on its own batches
  bool penalized() const { return loss == "wgan-gp" || r1_gamma > 0; }
};

struct GanTrainOptions {
  std::string data = "fashion-mnist";  // dataset directory (IDX or CIFAR-10) or "fashion-mnist"
  DCGANConfig model;                   // image_size and channels are taken from the data
  bool conditional = false;            // class-conditional G and D (labels from the data)
  int64_t batch_size = 64;
  int64_t steps = 2000;    // one step = one D update + one G update
  int64_t stop_after = 0;  // stop (and save) after this step; 0 = run to `steps`
  double max_minutes = 0;  // stop (and save) once this invocation has trained this long; 0 = no limit
  int64_t grad_accum = 1;  // micro-batches per update (each network's gradients summed over them)
  float grad_clip = 0;     // max global gradient norm per network (0 = off, as in the DCGAN paper)
  int max_bad_steps = 5;   // consecutive non-finite updates before the run stops
  float lr = 2e-4f, beta1 = 0.5f, beta2 = 0.999f;
  GanObjective objective = {.n_critic = 0};  // n_critic 0: 5 for wgan-gp (as Gulrajani et al.), else 1
  // D's normalization: "auto" is BatchNorm, or none with a gradient penalty or spectral normalization.
  std::string d_norm = "auto";
  bool hflip = false;
  int64_t log_interval = 20, sample_interval = 200, ckpt_interval = 500;
  std::string out_dir = "runs/dcgan";  // ckpt.safetensors, metrics.jsonl, samples/step_N.png
  uint64_t seed = 1337;
  bool resume = false;
  bool quiet = false;
  int rank = 0, world = 1;  // data-parallel shard of the batches this process trains on

  LoopOptions loop() const;
};

struct GanTrainResult {
  int64_t steps_done = 0;
  float last_d_loss = 0, last_g_loss = 0;
  std::string checkpoint;
};

GanTrainResult train_dcgan(const GanTrainOptions& opt, GradSync* sync = nullptr);

// The random streams a training run from `seed` draws, besides the batch order (ImageLoader(data, B, seed)):
// the initial weights, and for the global batch `batch` (ImageLoader::last_index) the noise generator that
// yields its z_d, z_g, then (wgan-gp) eps. Shared with bench/gan_streams.cpp, which hands the same streams to PyTorch's
// twin.
void init_gan(Generator& g, Discriminator& d, uint64_t seed);
bool is_gan_loss(const std::string& loss);  // nonsaturating, minimax, hinge, lsgan, wgan-gp
Rng gan_noise_rng(uint64_t seed, int64_t batch);

// One update of the game, as train_dcgan runs it: obj.n_critic times, D learns on ctx.micro_batches batches of
// `micro` in turn (each micro-batch's `real` and G(z_d) with its `labels`; for wgan-gp also the interpolates with
// weights eps), gradients summed over the micro-batches; then G learns through D on the last D update's batches'
// G(z_g). With spectral normalization, each D update starts with one power iteration. ctx backpropagates and
// applies each network's update (the loop's policy; with data-parallel ranks it also brings the BatchNorm
// statistics to what one process would hold). Returns the mean losses (minimax: the value of log(1 - D(G(z))) G
// minimizes), the mean penalty (weighted, as in D's loss), D's mean sigmoid outputs on real (d_x) and generated
// (d_g_z) images, and D's logits on the last micro-batch's real and generated images.
struct GanBatch {
  Tensor real, labels, z_d, z_g, eps;  // eps (B): wgan-gp only
};
struct GanStep {
  float loss_d = 0, loss_g = 0, penalty = 0;
  double d_x = 0, d_g_z = 0;
  Tensor d_real, d_fake;
};
class Optimizer;
GanStep gan_update(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const std::vector<GanBatch>& micro,
                   const GanObjective& obj, StepContext& ctx);
// One update on obj.n_critic batches, each optimizer stepped at `lr` unconditionally (what the parity tests compare
// with PyTorch).
GanStep gan_step(Generator& g, Discriminator& d, Optimizer& og, Optimizer& od, const std::vector<GanBatch>& batches,
                 const GanObjective& obj, float lr);

}  // namespace aigc

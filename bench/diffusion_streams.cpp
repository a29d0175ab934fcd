// The random streams of one aigc DDPM training run, written out for PyTorch's twin (bench/diffusion_run
// --same-streams): the U-Net's initial weights (flat, in aigc's parameter order), every step's batch (8-bit
// pixels), timestep indices, noise eps and, for a class-conditional model, the labels the network sees (some
// dropped to "no class"). `aigc train --model ddpm --seed SEED` with the model of CONFIG_CKPT draws exactly these
// (the same UNet(config, seed), ImageLoader and draw_training_noise on diffusion_noise_rng). Dropout masks are not
// written: they are a hash of (step, block, element) that the PyTorch script recomputes (see dropout_forward);
// "dropout_probe", aigc's dropout of a tensor of ones as the second block of step 12345 would draw it, lets the
// script check its copy of the hash before it trains.
//
//   aigc_diffusion_streams CONFIG_CKPT SEED STEPS OUT.safetensors [BATCH]
//
// CONFIG_CKPT: any checkpoint of that run (only its U-Net config and schedule are read).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aigc/diffusion_trainer.h"
#include "aigc/image_data.h"
#include "aigc/ops.h"
#include "aigc/safetensors.h"
#include "streams_tool.h"

using namespace aigc;

int main(int argc, char** argv) {
  return streams::run_tool(argc, argv, {"CONFIG_CKPT"}, [](const streams::Args& a) {
    const int64_t steps = a.steps, B = a.batch;
    const LoadedDiffusion ref = load_diffusion(a.lead[0]);
    const UNetConfig cfg = ref.net->config();
    const DiffusionTrainOptions opt;  // the trainer's defaults: data, p_uncond, hflip
    const ImageSet data = load_image_dataset(opt.data, "train");
    AIGC_CHECK(data.height == cfg.image_size && data.channels == cfg.channels,
               "'" + a.lead[0] + "' was not trained on " + opt.data);
    UNet net(cfg, a.seed);
    ImageLoader loader(data, B, a.seed, opt.hflip);

    const int64_t px = cfg.channels * cfg.image_size * cfg.image_size;
    std::vector<uint8_t> pixels;
    std::vector<int32_t> t_all, labels;
    std::vector<float> eps;
    pixels.reserve(size_t(steps * B * px));
    eps.reserve(size_t(steps * B * px));
    for (int64_t s = 0; s < steps; s++) {
      Tensor x0;
      std::vector<int32_t> lab;
      loader.next(x0, lab);
      Rng rng = diffusion_noise_rng(a.seed, loader.last_index());
      const TrainingDraws d =
          draw_training_noise(ref.schedule, x0, cfg.n_classes ? Tensor::from_ints(lab, {B}) : Tensor(), rng,
                              cfg.n_classes ? opt.p_uncond : 0.0f, cfg.n_classes);
      streams::append_pixels(x0, pixels);
      for (int64_t ti : d.t) t_all.push_back(int32_t(ti));
      for (float v : d.eps.to_vector()) eps.push_back(v);
      if (cfg.n_classes)
        for (int64_t i = 0; i < B; i++) labels.push_back(d.labels.i32()[i]);
    }
    const std::vector<float> init(net.params().data(), net.params().data() + net.params().numel());
    const std::vector<int64_t> shape{steps, B, cfg.channels, cfg.image_size, cfg.image_size};
    std::vector<StTensorOut> ts = {{"init", StDType::F32, {int64_t(init.size())}, init.data(), init.size() * 4},
                                   {"real", StDType::U8, shape, pixels.data(), pixels.size()},
                                   {"t", StDType::I32, {steps, B}, t_all.data(), t_all.size() * 4},
                                   {"eps", StDType::F32, shape, eps.data(), eps.size() * 4}};
    if (cfg.n_classes) ts.push_back({"labels", StDType::I32, {steps, B}, labels.data(), labels.size() * 4});
    // The second block's mask at step 12345 (UNet::block_dropout_seed: s * 1000003 + k).
    const Tensor ones = Tensor::from_vector(std::vector<float>(3 * 5 * 7 * 11, 1.0f), {3, 5, 7, 11});
    const std::vector<float> probe = ops::dropout(ones, cfg.dropout, UNet::block_dropout_seed(12345, 2)).to_vector();
    ts.push_back({"dropout_probe", StDType::F32, {3, 5, 7, 11}, probe.data(), probe.size() * 4});
    write_safetensors(a.out, ts,
                      {{"aigc.config", cfg.to_json()},
                       {"aigc.schedule", nlohmann::json{{"kind", ref.schedule.kind}, {"T", ref.schedule.T()}}.dump()},
                       {"seed", std::to_string(a.seed)}});
  });
}

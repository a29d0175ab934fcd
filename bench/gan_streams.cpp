// The random streams of one aigc DCGAN training run, written out for PyTorch's twin (bench/gan_run --same-streams):
// the initial weights of G and D, every step's real batch (8-bit pixels) and labels, and the noise z_d and z_g.
// `aigc train --model dcgan --conditional --seed SEED` draws exactly these (the same init_gan, ImageLoader and
// gan_noise_rng of each batch), so both implementations start from the same weights and see the same data and noise;
// only the arithmetic differs. bench/gan_run checks that the first step's losses agree before trusting a comparison.
//
//   aigc_gan_streams SEED STEPS OUT.safetensors [BATCH]
#include <deque>
#include <string>
#include <vector>

#include "aigc/gan_trainer.h"
#include "aigc/image_data.h"
#include "aigc/safetensors.h"
#include "streams_tool.h"

using namespace aigc;

int main(int argc, char** argv) {
  return streams::run_tool(argc, argv, {}, [](const streams::Args& a) {
    const int64_t steps = a.steps, B = a.batch;
    const ImageSet data = load_image_dataset("fashion-mnist", "train");
    DCGANConfig cfg;  // the trainer's defaults, sized from the data as train_dcgan does
    cfg.image_size = data.height, cfg.channels = data.channels, cfg.n_classes = int64_t(data.class_names.size());
    Generator g(cfg);
    Discriminator d(cfg);
    init_gan(g, d, a.seed);
    ImageLoader loader(data, B, a.seed);

    const int64_t px = cfg.channels * cfg.image_size * cfg.image_size;
    std::vector<uint8_t> pixels;
    std::vector<int32_t> labels;
    std::vector<float> z_d, z_g;
    pixels.reserve(size_t(steps * B * px));
    for (int64_t s = 0; s < steps; s++) {
      Tensor real;
      std::vector<int32_t> lab;
      loader.next(real, lab);
      streams::append_pixels(real, pixels);
      labels.insert(labels.end(), lab.begin(), lab.end());
      Rng rng = gan_noise_rng(a.seed, loader.last_index());
      for (std::vector<float>* z : {&z_d, &z_g})
        for (float v : randn({B, cfg.nz}, rng).to_vector()) z->push_back(v);
    }
    std::vector<StTensorOut> ts;
    std::deque<std::vector<float>> keep;  // stable addresses for ts
    for (auto [net, prefix] : {std::pair<ConvNet*, std::string>{&g, "G."}, {&d, "D."}}) {
      for (const Param& p : net->params().params()) {
        keep.push_back(p.value.to_vector());
        ts.push_back({prefix + p.name, StDType::F32, p.value.shape(), keep.back().data(), keep.back().size() * 4});
      }
      for (auto& [name, t] : net->buffers()) {
        keep.push_back(t.to_vector());
        ts.push_back({prefix + name, StDType::F32, t.shape(), keep.back().data(), keep.back().size() * 4});
      }
    }
    ts.push_back(
        {"real", StDType::U8, {steps, B, cfg.channels, cfg.image_size, cfg.image_size}, pixels.data(), pixels.size()});
    ts.push_back({"labels", StDType::I32, {steps, B}, labels.data(), labels.size() * 4});
    ts.push_back({"z_d", StDType::F32, {steps, B, cfg.nz}, z_d.data(), z_d.size() * 4});
    ts.push_back({"z_g", StDType::F32, {steps, B, cfg.nz}, z_g.data(), z_g.size() * 4});
    write_safetensors(a.out, ts,
                      {{"nz", std::to_string(cfg.nz)},
                       {"ngf", std::to_string(cfg.ngf)},
                       {"ndf", std::to_string(cfg.ndf)},
                       {"seed", std::to_string(a.seed)}});
  });
}

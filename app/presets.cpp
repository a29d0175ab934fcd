#include "presets.h"

#include <cstdio>

#include "aigc/error.h"

namespace aigc::cli {

const std::vector<GptPreset>& gpt_presets() {
  static const std::vector<GptPreset> presets = {
      {"tiny", "2 layers, 64 wide, context 64: seconds to train, for trying things", "gpt2", 2, 2, 64, 64},
      {"small", "4 layers, 128 wide, context 64 (the default)", "gpt2", 4, 4, 128, 64},
      {"shakespeare-char", "nanoGPT's character model: 6 layers, 384 wide, context 256", "gpt2", 6, 6, 384, 256},
      {"gpt2-124m", "GPT-2 small: 12 layers, 768 wide, context 1024", "gpt2", 12, 12, 768, 1024},
      {"transformer", "the original Transformer's decoder: post-LN, ReLU, 4 layers, 128 wide, context 512",
       "transformer", 4, 4, 128, 512},
      {"llama-tiny", "Llama blocks: 2 layers, 64 wide, 4 query / 2 kv heads, context 64", "llama", 2, 4, 64, 64, 2},
      {"llama-small",
       "Llama blocks: 4 layers, 128 wide, 4 query / 2 kv heads, context 128 (aigc train llama's default)", "llama", 4,
       4, 128, 128, 2},
      {"smollm-135m", "SmolLM-135M's shape: 30 layers, 576 wide, 9 query / 3 kv heads, SwiGLU 1536, tied, context 2048",
       "llama", 30, 9, 576, 2048, 3, 1536, true},
      {"smollm-360m",
       "SmolLM-360M's shape: 32 layers, 960 wide, 15 query / 5 kv heads, SwiGLU 2560, tied, context 2048", "llama", 32,
       15, 960, 2048, 5, 2560, true},
      {"llama-1024",
       "Llama blocks in whole k-quant super-blocks: 24 layers, 1024 wide, 16 query / 4 kv heads, SwiGLU 2816, tied, "
       "context 2048",
       "llama", 24, 16, 1024, 2048, 4, 2816, true},
      {"tinyllama-1.1b",
       "TinyLlama-1.1B's shape: 22 layers, 2048 wide, 32 query / 4 kv heads, SwiGLU 5632, untied, context 2048",
       "llama", 22, 32, 2048, 2048, 4, 5632, false},
  };
  return presets;
}

GPTConfig preset_config(const std::string& name) {
  for (const GptPreset& p : gpt_presets()) {
    if (p.name != name) continue;
    GPTConfig c = p.arch == "transformer" ? GPTConfig::transformer_style()
                  : p.arch == "llama"     ? GPTConfig::llama_style()
                                          : GPTConfig::gpt2_style();
    c.n_layer = p.n_layer, c.n_head = p.n_head, c.n_embd = p.n_embd, c.block_size = p.block_size;
    if (p.arch == "llama") c.n_kv_head = p.n_kv_head, c.n_hidden = p.n_hidden, c.tie_embeddings = p.tied;
    return c;
  }
  std::string names;
  for (const GptPreset& p : gpt_presets()) names += (names.empty() ? "" : ", ") + p.name;
  fail("unknown --preset \"" + name + "\" (" + names + ")");
}

const std::vector<GanPreset>& gan_presets() {
  // fmnist-10min: the lowest FID-FMNIST after 10 minutes of training on a 2-core CPU among the recipes measured
  // (docs/gan.md, "Quality per hour"): the conditional DCGAN, non-saturating loss, as many updates as the time allows.
  static const std::vector<GanPreset> presets = {
      {"fmnist-10min",
       "conditional DCGAN, non-saturating, batch 64, Adam 2e-4, stops after 10 minutes: the best FID-FMNIST "
       "measured for 10 minutes on 2 cores",
       true, 64, 1000000, 2e-4f, 10},
  };
  return presets;
}

void apply_gan_preset(const std::string& name, GanTrainOptions& o) {
  std::string names;
  for (const GanPreset& p : gan_presets()) {
    names += (names.empty() ? "" : ", ") + p.name;
    if (p.name != name) continue;
    o.conditional = p.conditional, o.batch_size = p.batch_size, o.steps = p.steps, o.lr = p.lr;
    o.max_minutes = p.max_minutes;
    return;
  }
  fail("unknown DCGAN --preset \"" + name + "\" (" + names + ")");
}

std::string gan_presets_help() {
  std::string out;
  for (const GanPreset& p : gan_presets()) out += "  " + p.name + "\n      " + p.about + "\n";
  return out;
}

std::string presets_help() {
  std::string out;
  for (const GptPreset& p : gpt_presets()) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-18s %s\n", p.name.c_str(), p.about.c_str());
    out += line;
  }
  return out;
}

}  // namespace aigc::cli

// Named GPT and Llama shapes for `aigc train gpt|llama --preset NAME`, and named DCGAN recipes for `aigc train dcgan
// --preset NAME`, as data: `aigc train --help` lists them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/gan_trainer.h"
#include "aigc/models/gpt.h"

namespace aigc::cli {

struct GptPreset {
  std::string name, about;
  // "gpt2" (pre-LN, GELU, tied head), "transformer" (post-LN, ReLU, untied head with bias) or "llama"
  std::string arch;
  int64_t n_layer, n_head, n_embd, block_size;
  int64_t n_kv_head = 0, n_hidden = 0;  // llama: grouped-query heads, the SwiGLU width (0: the defaults)
  bool tied = false;                    // llama: tie the head to the embedding
};

const std::vector<GptPreset>& gpt_presets();
GPTConfig preset_config(const std::string& name);  // aigc::Error listing the presets when unknown
std::string presets_help();                        // one line per preset

// A whole DCGAN training recipe; the flags given on the command line still override its values.
struct GanPreset {
  std::string name, about;
  bool conditional;
  int64_t batch_size, steps;
  float lr;
  double max_minutes;  // 0: no time limit
};

const std::vector<GanPreset>& gan_presets();
void apply_gan_preset(const std::string& name, GanTrainOptions& o);  // aigc::Error listing them when unknown
std::string gan_presets_help();

}  // namespace aigc::cli

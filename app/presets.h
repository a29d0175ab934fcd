// Named GPT shapes for `aigc train gpt --preset NAME`, as data: `aigc train --help` lists them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/models/gpt.h"

namespace aigc::cli {

struct GptPreset {
  std::string name, about;
  std::string arch;  // "gpt2" (pre-LN, GELU, tied head) or "transformer" (post-LN, ReLU, untied head with bias)
  int64_t n_layer, n_head, n_embd, block_size;
};

const std::vector<GptPreset>& gpt_presets();
GPTConfig preset_config(const std::string& name);  // aigc::Error listing the presets when unknown
std::string presets_help();                        // one line per preset

}  // namespace aigc::cli

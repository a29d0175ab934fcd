// Which model family a checkpoint file holds, from its metadata alone.
#pragma once
#include <string>

namespace aigc {

// "dcgan", "ddpm", "gpt", or "" when the file is not an aigc checkpoint of a known format.
std::string checkpoint_kind(const std::string& path);

}  // namespace aigc

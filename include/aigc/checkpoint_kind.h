// Which model family a checkpoint file holds, from its metadata alone; and the metadata the image families write
// the same way.
#pragma once
#include <string>
#include <vector>

namespace aigc {

class SafeTensorsReader;

// The class names in a checkpoint's "aigc.classes" (a JSON list; empty when absent: an unconditional model).
std::vector<std::string> checkpoint_class_names(const SafeTensorsReader& st);

// "dcgan", "ddpm", "gpt", or "" when the file is not an aigc checkpoint of a known format.
std::string checkpoint_kind(const std::string& path);

}  // namespace aigc

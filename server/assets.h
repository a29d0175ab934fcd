// The playground's files (web/ and the bundled uPlot), compiled into the binary so `aigc serve` needs no files
// beside it and nothing from the network. The table is generated at build time by cmake/embed_assets.cmake.
#pragma once
#include <cstddef>
#include <string>

namespace aigc::serve {

struct Asset {
  const char* data;
  size_t size;
  const char* mime;
};

// "/" -> index.html; "/NAME" -> the embedded file NAME; null when there is none.
const Asset* find_asset(const std::string& path);

}  // namespace aigc::serve

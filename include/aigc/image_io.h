// Writing images: a batch of generated images tiled into one PNG grid.
#pragma once
#include <string>

#include "aigc/tensor.h"

namespace aigc {

// images (B, C, H, W) in [-1, 1] (C = 1 or 3) tiled row-major, `cols` per row, 2-pixel gaps, written
// atomically as PNG.
void save_image_grid(const std::string& path, const Tensor& images, int64_t cols);
// The same grid as PNG file bytes (in memory); gap: black pixels around and between images.
std::string encode_png_grid(const Tensor& images, int64_t cols, int64_t gap = 2);

}  // namespace aigc

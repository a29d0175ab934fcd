#include "aigc/image_io.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "aigc/error.h"
#include "aigc/file_util.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>

namespace aigc {

std::string encode_png_grid(const Tensor& images, int64_t cols, int64_t gap) {
  AIGC_CHECK(images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3) && images.dtype() == DType::F32,
             "image grid: images must be f32 (B, 1 or 3, H, W), got " + shape_str(images.shape()));
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  cols = std::max<int64_t>(1, std::min(cols, B));
  const int64_t rows = (B + cols - 1) / cols, GW = cols * (W + gap) + gap, GH = rows * (H + gap) + gap;
  std::vector<uint8_t> grid(size_t(GW * GH * C), 0);
  std::vector<float> px = images.to_vector();
  for (int64_t b = 0; b < B; b++) {
    const int64_t oy = gap + (b / cols) * (H + gap), ox = gap + (b % cols) * (W + gap);
    for (int64_t c = 0; c < C; c++)
      for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
          float v = px[size_t(((b * C + c) * H + y) * W + x)];
          v = std::isfinite(v) ? std::clamp((v + 1.0f) * 127.5f, 0.0f, 255.0f) : 0.0f;
          grid[size_t(((oy + y) * GW + ox + x) * C + c)] = uint8_t(std::lround(v));
        }
  }
  std::string png;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size));
  };
  AIGC_CHECK(stbi_write_png_to_func(sink, &png, int(GW), int(GH), int(C), grid.data(), int(GW * C)) != 0,
             "could not encode a PNG image");
  return png;
}

void save_image_grid(const std::string& path, const Tensor& images, int64_t cols) {
  write_file_atomic(path, encode_png_grid(images, cols));
}

}  // namespace aigc

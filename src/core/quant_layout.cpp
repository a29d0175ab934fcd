// The Rows16 layout of quantized matrices (aigc/quant.h): a pure reordering of the blocks' bytes, in both
// directions, so that packing is checked by unpacking.
#include <cstring>

#include "aigc/error.h"
#include "aigc/quant.h"

namespace aigc {

namespace {

template <typename Block>
constexpr int64_t kQuads = sizeof(Block::qs) / 4;  // 4-byte quads per block: Q8_0 8, Q4_0 4

// Calls f(plain block, tile scale, tile quad bytes) for every block of the whole groups, with the tile's
// address of that block's scale and of its first quad; the quads sit 64 bytes apart.
template <typename Block, typename F>
void for_each_tile_block(int64_t rows, int64_t cols, F f) {
  const int64_t nb = cols / kQuantBlock;
  const int64_t tile = kRowGroup * int64_t(sizeof(Block));
  for (int64_t g = 0; g < rows / kRowGroup; g++)
    for (int64_t b = 0; b < nb; b++) {
      const int64_t t0 = (g * nb + b) * tile;
      for (int64_t r = 0; r < kRowGroup; r++) f((g * kRowGroup + r) * nb + b, t0 + 2 * r, t0 + 2 * kRowGroup + 4 * r);
    }
}

template <typename Block>
void convert(const void* src, void* dst, int64_t rows, int64_t cols, bool to_rows16) {
  const int64_t nb = cols / kQuantBlock;
  auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  for_each_tile_block<Block>(rows, cols, [&](int64_t block, int64_t d_at, int64_t q_at) {
    const int64_t p = block * int64_t(sizeof(Block));  // byte offset of the plain block
    for (int64_t j = 0; j < kQuads<Block>; j++) {
      const int64_t qp = p + 2 + 4 * j, qt = q_at + 64 * j;
      std::memcpy(out + (to_rows16 ? qt : qp), in + (to_rows16 ? qp : qt), 4);
    }
    std::memcpy(out + (to_rows16 ? d_at : p), in + (to_rows16 ? p : d_at), 2);
  });
  // The rows past the last whole group stay in the plain layout, at the same place in both.
  const int64_t done = rows / kRowGroup * kRowGroup * nb * int64_t(sizeof(Block));
  std::memcpy(out + done, in + done, size_t((rows % kRowGroup) * nb * int64_t(sizeof(Block))));
}

void check(DType type, int64_t rows, int64_t cols) {
  AIGC_CHECK(is_quantized(type), std::string("Rows16: ") + dtype_name(type) + " is not a quantized type");
  AIGC_CHECK(rows >= 0 && cols >= 0 && cols % kQuantBlock == 0, "Rows16: columns must be whole 32-blocks");
}

}  // namespace

void interleave_rows16(DType type, const void* plain, void* rows16, int64_t rows, int64_t cols) {
  check(type, rows, cols);
  if (type == DType::Q8_0)
    convert<BlockQ8_0>(plain, rows16, rows, cols, true);
  else
    convert<BlockQ4_0>(plain, rows16, rows, cols, true);
}

void deinterleave_rows16(DType type, const void* rows16, void* plain, int64_t rows, int64_t cols) {
  check(type, rows, cols);
  if (type == DType::Q8_0)
    convert<BlockQ8_0>(rows16, plain, rows, cols, false);
  else
    convert<BlockQ4_0>(rows16, plain, rows, cols, false);
}

}  // namespace aigc

// ggml's block formats for quantized weights, shared by the GGUF files and the kernels. A row of n values is
// n / 32 blocks, each a scale d (IEEE half) and 32 quantized values:
//   Q8_0: value = d q, q a signed byte; d = amax / 127, q = round(x / d) (halves away from zero).
//   Q4_0: value = d (q - 8), q a nibble 0..15; d = m / -8 where m is the value of largest magnitude (so it is
//         exactly -8 steps), q = min(15, floor(x / d + 8.5)); element j is the low nibble of byte j, element
//         j + 16 the high nibble.
//   Q4_1: value = d q + m, q a nibble as in Q4_0, with a second half m after d: the block's minimum, and
//         d = (max - min) / 15, q = min(15, floor((x - m) / d + 0.5)). aigc runs Q4_K files' 4-bit matrices in it
//         (a Q4_K sub-block is exactly such a block, its scale and minimum rounded to halves).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "aigc/half.h"
#include "aigc/tensor.h"

namespace aigc {

constexpr int kQuantBlock = 32;

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20, "ggml's block sizes");

inline void quantize_block(const float* x, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d);
  for (int j = 0; j < 32; j++) b.qs[j] = int8_t(std::lround(x[j] * id));
}

// floor(v) clamped to 0..top (a 4- or 5-bit level) before the conversion, so NaN (from NaN or infinite weights) or
// huge values never reach an out-of-range float-to-int conversion (undefined behaviour).
inline int floor_to(float v, int top) { return v >= 0.0f ? int(std::min(v, float(top))) : 0; }

inline void quantize_block(const float* x, BlockQ4_0& b) {
  float amax = 0, m = 0;
  for (int j = 0; j < 32; j++)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), m = x[j];
  const float d = m / -8.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d);
  for (int j = 0; j < 16; j++)
    b.qs[j] = uint8_t(floor_to(x[j] * id + 8.5f, 15) | (floor_to(x[j + 16] * id + 8.5f, 15) << 4));
}

inline void quantize_block(const float* x, BlockQ4_1& b) {
  const float lo = *std::min_element(x, x + 32), hi = *std::max_element(x, x + 32);
  const float d = (hi - lo) / 15.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d), b.m = io::f32_to_f16(lo);
  for (int j = 0; j < 16; j++)
    b.qs[j] = uint8_t(floor_to((x[j] - lo) * id + 0.5f, 15) | (floor_to((x[j + 16] - lo) * id + 0.5f, 15) << 4));
}

// An input row's block, as the kernels quantize activations: Q8_0 with llama.cpp's x86 arithmetic (the inverse
// scale 127 / amax, and halves to even), so that products agree with llama.cpp's, not only with the format.
inline void quantize_activation_block(const float* x, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  if (!std::isfinite(id)) id = 0.0f;  // amax so small that 127 / amax overflows: a zero block (its d is 0 too)
  b.d = io::f32_to_f16(amax / 127.0f);
  for (int j = 0; j < 32; j++) b.qs[j] = int8_t(std::nearbyint(x[j] * id));  // default rounding: halves to even
}

// The 32 integer values of a block and its offset: every format reads as value = d q + offset (Q4_0: q - 8 and
// no offset; Q4_1: the nibbles and m).
inline void block_ints(const BlockQ8_0& b, int* q) {
  for (int j = 0; j < 32; j++) q[j] = b.qs[j];
}
inline void block_ints(const BlockQ4_0& b, int* q) {
  for (int j = 0; j < 16; j++) q[j] = (b.qs[j] & 0xf) - 8, q[j + 16] = (b.qs[j] >> 4) - 8;
}
inline void block_ints(const BlockQ4_1& b, int* q) {
  for (int j = 0; j < 16; j++) q[j] = b.qs[j] & 0xf, q[j + 16] = b.qs[j] >> 4;
}
template <typename Block>
float block_offset(const Block&) {
  return 0.0f;
}
inline float block_offset(const BlockQ4_1& b) { return io::f16_to_f32(b.m); }

template <typename Block>
void dequantize_block(const Block& b, float* x) {
  int q[32];
  block_ints(b, q);
  const float d = io::f16_to_f32(b.d), offset = block_offset(b);
  for (int j = 0; j < 32; j++) x[j] = float(q[j]) * d + offset;
}

// n values from consecutive blocks at src, which need no alignment (a file's bytes, a row of a matrix).
template <typename Block>
void dequantize_blocks(const void* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; b++) {
    Block blk;
    std::memcpy(&blk, static_cast<const char*>(src) + b * int64_t(sizeof(Block)), sizeof(Block));
    dequantize_block(blk, dst + b * kQuantBlock);
  }
}

// The Rows16 layout of a (rows, cols) quantized matrix: the same bytes as its blocks, reordered so that one
// 64-byte load holds 4 consecutive quantized values of 16 rows. Rows come in groups of 16; in a group, block
// column b is a tile: the 16 rows' scales d (16 halves; Q4_1: then their 16 m), then the quantized bytes of the
// 16 rows' block b as "quads" q: byte 64 j + 4 r + t is, for
//   Q8_0: qs[4 j + t] of row r, j = 0..7 (values 4 j .. 4 j + 3);
//   Q4_0, Q4_1: qs[4 j + t] of row r, j = 0..3 (low nibbles: values 4 j + t; high nibbles: 16 + 4 j + t).
// Tiles follow one another by b, then by group. The rows past the last whole group (rows % 16) keep ggml's
// plain row-of-blocks layout after the groups. Sizes are the plain layout's: 16 blocks per tile.
constexpr int kRowGroup = 16;
void interleave_rows16(DType type, const void* plain, void* rows16, int64_t rows, int64_t cols);
void deinterleave_rows16(DType type, const void* rows16, void* plain, int64_t rows, int64_t cols);
// Row `row` of a Rows16 matrix alone, as its cols / 32 plain blocks.
void rows16_row(DType type, const void* rows16, void* plain_row, int64_t rows, int64_t cols, int64_t row);

}  // namespace aigc

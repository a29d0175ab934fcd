// ggml's block formats for quantized weights, shared by the GGUF files and the kernels. A row of n values is
// n / 32 blocks, each a scale d (IEEE half) and 32 quantized values:
//   Q8_0: value = d q, q a signed byte; d = amax / 127, q = round(x / d) (halves away from zero).
//   Q4_0: value = d (q - 8), q a nibble 0..15; d = m / -8 where m is the value of largest magnitude (so it is
//         exactly -8 steps), q = min(15, floor(x / d + 8.5)); element j is the low nibble of byte j, element
//         j + 16 the high nibble.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "aigc/half.h"

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
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "ggml's block sizes");

inline void quantize_block(const float* x, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d);
  for (int j = 0; j < 32; j++) b.qs[j] = int8_t(std::lround(x[j] * id));
}

inline void quantize_block(const float* x, BlockQ4_0& b) {
  float amax = 0, m = 0;
  for (int j = 0; j < 32; j++)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), m = x[j];
  const float d = m / -8.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d);
  for (int j = 0; j < 16; j++) {
    const int lo = std::min(15, int(x[j] * id + 8.5f)), hi = std::min(15, int(x[j + 16] * id + 8.5f));
    b.qs[j] = uint8_t(lo | (hi << 4));
  }
}

// An input row's block, as the kernels quantize activations: Q8_0 with llama.cpp's x86 arithmetic (the inverse
// scale 127 / amax, and halves to even), so that products agree with llama.cpp's, not only with the format.
inline void quantize_activation_block(const float* x, BlockQ8_0& b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  b.d = io::f32_to_f16(amax / 127.0f);
  for (int j = 0; j < 32; j++) b.qs[j] = int8_t(std::nearbyint(x[j] * id));  // default rounding: halves to even
}

// The 32 integer values of a block (Q4_0: q - 8, so both formats read as value = d q).
inline void block_ints(const BlockQ8_0& b, int* q) {
  for (int j = 0; j < 32; j++) q[j] = b.qs[j];
}
inline void block_ints(const BlockQ4_0& b, int* q) {
  for (int j = 0; j < 16; j++) q[j] = (b.qs[j] & 0xf) - 8, q[j + 16] = (b.qs[j] >> 4) - 8;
}

template <typename Block>
void dequantize_block(const Block& b, float* x) {
  int q[32];
  block_ints(b, q);
  const float d = io::f16_to_f32(b.d);
  for (int j = 0; j < 32; j++) x[j] = float(q[j]) * d;
}

}  // namespace aigc

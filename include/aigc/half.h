// IEEE half (fp16) and bfloat16 conversions for the file formats (safetensors, GGUF). The kernels keep their own
// inlined bf16 rounding; these are for reading and writing files.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace aigc::io {

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
    float f = std::ldexp(float(man), -24);
    return sign ? -f : f;
  }
  // Normal numbers rebias the exponent (15 -> 127); inf/NaN keep an all-ones exponent and their payload.
  uint32_t u = sign | (exp == 31 ? 0x7f800000u : (exp + 112u) << 23) | man << 13;
  return std::bit_cast<float>(u);
}

// Round to nearest, ties to even; beyond the largest half (65504) by half an ulp or more: infinity. NaNs stay
// NaNs (quiet).
inline uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f), ax = x & 0x7fffffffu;
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {                                  // below 2^-14: a subnormal half (or zero)
    // f * 2^24 is exact; nearbyint rounds half to even under the default rounding mode.
    return uint16_t(sign | uint16_t(std::nearbyint(std::bit_cast<float>(ax) * 16777216.0f)));
  }
  uint32_t m = ax - 0x38000000u;  // exponent 127 -> 15 bias
  m += 0xfffu + ((m >> 13) & 1u);
  return uint16_t(sign | (m >> 13));
}

// The same, saturating: values beyond the largest half become +-65504, not infinity (a KV cache's keys: an infinite
// one would make a whole row of attention NaN). NaNs stay NaNs.
inline uint16_t f32_to_f16_saturated(float f) {
  return f32_to_f16(f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f);
}

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace aigc::io

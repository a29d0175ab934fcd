// The reference backend: every kernel of Backend as plain scalar loops over the formula in backend.h, sums in
// double, no threads, no vectors, no libraries. Slow and obviously right: the fast backends are tested against it
// (tests/test_backend_ops.cpp). Where a kernel's convention is a choice (random masks, bf16 rounding, NaN
// handling) it copies the CPU backend's rule exactly, so the two agree to rounding.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#include "aigc/backend.h"

namespace aigc::ref {

class ReferenceBackend final : public Backend {
 public:
  const char* name() const override { return "reference"; }
#include "../kernel_overrides.inc"  // every function of Backend
};

// bfloat16 is the top 16 bits of a float. Rounding to nearest, ties to even: add 0x7fff plus the lowest kept bit,
// then truncate. A NaN keeps its sign and payload's top bits and gets the quiet bit (0x40) set, so it stays a NaN
// (the CPU backend's rule, bit for bit).
inline uint16_t bf16_round(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  const uint32_t lowest_kept = (u >> 16) & 1u;
  return uint16_t((u + 0x7fffu + lowest_kept) >> 16);
}
inline float bf16_to_float(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }
// x rounded to the nearest bf16 value, as a float.
inline float round_to_bf16(float x) { return bf16_to_float(bf16_round(x)); }

// The logistic function 1 / (1 + e^-x) in double, written so that e^(...) never overflows.
inline double sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// Index of element (n, c, p) of an (N, C, P) tensor (P = H W pixels) in the Blocked16 layout (N, C/16, P, 16).
inline int64_t blocked16_index(int64_t n, int64_t c, int64_t p, int64_t C, int64_t P) {
  return ((n * (C / 16) + c / 16) * P + p) * 16 + c % 16;
}

}  // namespace aigc::ref

// 16 float lanes through GCC's vector extensions: one AVX-512 register where the CPU has it, pairs or quads of
// narrower ones elsewhere, with no intrinsics. For the kernels whose compiler-vectorized loops fall short (the
// few-row matrix products, decode attention).
#pragma once
#include <cstdint>
#include <cstring>

// The helpers are internal (inlined, never exported), so GCC's note that passing 64-byte vectors without AVX-512
// changes the calling convention does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace aigc::cpu {

typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v16f load16(const uint16_t* p) {  // bf16 -> fp32: the 16 bits become the high half
  v16h h;
  std::memcpy(&h, p, sizeof h);
  const v16u u = __builtin_convertvector(h, v16u) << 16;
  v16f v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}
inline void store16(float* p, v16f v) { std::memcpy(p, &v, sizeof v); }

inline float hsum(v16f v) {  // a tree of shuffles: the lanes never go through memory
  const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// The 16 sums of a[0..16) at once, lane i holding a[i]'s: each level adds the two halves of every vector's
// remaining lanes, packing two vectors into one, so 15 adds do the work of 16 hsum calls' 64.
inline v16f hsum16(const v16f* a) {
  v16f b[8], c[4], d[2];
  for (int i = 0; i < 8; i++)
    b[i] =
        __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
        __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  for (int i = 0; i < 4; i++)
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  for (int i = 0; i < 2; i++)
    d[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(d[0], d[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(d[0], d[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// Keeps v in a register: otherwise GCC folds the load into every multiply-add that uses it, and reloading one
// vector R times costs more than the multiply-adds on CPUs with fewer load ports than FMA units.
inline void in_register(v16f& v) {
#if defined(__AVX512F__)  // only then is a 16-float vector one register
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

}  // namespace aigc::cpu

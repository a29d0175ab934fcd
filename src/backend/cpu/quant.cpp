// Linear layers with Q8_0 / Q4_0 / Q4_1 weights (backend.h: linear_forward_quant). Decoding reads every weight once per
// token, so the bytes are the cost: the weights stay in their blocks and are multiplied as integers. Each input
// row is quantized to Q8_0 once (the same scalar code as the reference, so the integers agree exactly), then every
// output is a sum over blocks of d_w d_x dot(q_w, q_x), with the 32-element integer dots in SIMD.
//
// Weights in the Rows16 layout (quant.h; what models run) give 16 outputs per instruction: a 64-byte load holds
// 4 values of 16 rows, and one int8 dot product against the input's 4 values, broadcast, advances all 16 sums.
// No horizontal sums, and the weights unpacked once serve up to kTokens input rows (prefill):
//  - AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes and sums groups of four into int32 lanes. Q4_0's
//    nibbles are unsigned already (q - 8: subtract 8 sum(q_x) after; Q4_1 adds m d_x sum(q_x) instead); Q8_0's
//    bytes get 128 added by a xor (subtract 128 sum(q_x));
//  - AVX2: vpmaddubsw (pairs into int16) and vpmaddwd, 8 rows per register; Q8_0 moves the weights' signs onto
//    the input instead, as |q| <= 127 keeps the pairs from saturating.
// Weights in ggml's plain layout, and the rows past the last group of 16, take one row at a time: the same
// instructions on a block's 32 values, then a horizontal sum (Q4_1's: the scalar code, as they are few).
// The path is chosen once from the CPU; AIGC_QUANT_ISA=avx2|scalar forces a narrower one (tests run all three).
#include <immintrin.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "aigc/error.h"
#include "aigc/quant.h"
#include "cpu_backend.h"

namespace aigc::cpu {

namespace {

enum class Isa { Scalar, Avx2, Vnni };

Isa detect_isa() {
  Isa best = Isa::Scalar;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    best = Isa::Avx2;
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    best = Isa::Vnni;
#endif
  const char* env = std::getenv("AIGC_QUANT_ISA");
  if (env && std::string(env) == "scalar") return Isa::Scalar;
  if (env && std::string(env) == "avx2" && best == Isa::Vnni) return Isa::Avx2;
  return best;
}

Isa isa() {
  static const Isa i = detect_isa();
  return i;
}

// The 32 signed values of a weight block as bytes (Q4_0: nibbles minus 8).
inline const int8_t* weight_bytes(const BlockQ8_0& b, int8_t*) { return b.qs; }
inline const int8_t* weight_bytes(const BlockQ4_0& b, int8_t* tmp) {
  for (int j = 0; j < 16; j++) tmp[j] = int8_t((b.qs[j] & 0xf) - 8), tmp[j + 16] = int8_t((b.qs[j] >> 4) - 8);
  return tmp;
}
inline const int8_t* weight_bytes(const BlockQ4_1& b, int8_t* tmp) {
  for (int j = 0; j < 16; j++) tmp[j] = int8_t(b.qs[j] & 0xf), tmp[j + 16] = int8_t(b.qs[j] >> 4);
  return tmp;
}

template <typename Block>
float dot_scalar(const Block* w, const BlockQ8_0* x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; b++) {
    int8_t tmp[32];
    const int8_t* q = weight_bytes(w[b], tmp);
    int dot = 0, xsum = 0;
    for (int j = 0; j < 32; j++) dot += int(q[j]) * int(x[b].qs[j]), xsum += x[b].qs[j];
    const float dx = io::f16_to_f32(x[b].d);
    sum += io::f16_to_f32(w[b].d) * dx * float(dot) + block_offset(w[b]) * dx * float(xsum);
  }
  return sum;
}

#if defined(__x86_64__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps as the unused merge source).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define AIGC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define AIGC_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

AIGC_AVX2 inline __m256i load_weights(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}
AIGC_AVX2 inline __m256i load_weights(const BlockQ4_0& b) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0f));
  return _mm256_sub_epi8(nib, _mm256_set1_epi8(8));  // elements 0-15 low lane, 16-31 high lane
}

AIGC_AVX2 inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

AIGC_AVX2 inline float scale(uint16_t dw, uint16_t dx) { return _cvtsh_ss(dw) * _cvtsh_ss(dx); }

template <typename Block>
AIGC_AVX2 float dot_avx2(const Block* w, const BlockQ8_0* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; b++) {
    const __m256i qw = load_weights(w[b]);
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
    acc = _mm256_fmadd_ps(p, _mm256_set1_ps(scale(w[b].d, x[b].d)), acc);
  }
  return hsum(acc);
}

template <typename Block>
AIGC_VNNI float dot_vnni(const Block* w, const BlockQ8_0* x, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const __m256i qw = load_weights(w[b]);
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale(w[b].d, x[b].d)), acc);
  }
  return hsum(acc);
}
#endif

template <typename Block>
float dot(const Block* w, const BlockQ8_0* x, int64_t nb, Isa i) {
#if defined(__x86_64__)
  if constexpr (!std::is_same_v<Block, BlockQ4_1>) {
    if (i == Isa::Vnni) return dot_vnni(w, x, nb);
    if (i == Isa::Avx2) return dot_avx2(w, x, nb);
  }
#endif
  (void)i;
  return dot_scalar(w, x, nb);
}

// An input block as quantize_activation_block gives it, with its scale as a float and the sum of its values. The
// SIMD form makes the same integers: the same float products, and conversion rounds halves to even as
// nearbyint does (the default rounding mode).
inline void quantize_input_scalar(const float* x, BlockQ8_0& q, float& d, int32_t& sum) {
  quantize_activation_block(x, q);
  d = io::f16_to_f32(q.d);
  sum = 0;
  for (int j = 0; j < 32; j++) sum += q.qs[j];
}

#if defined(__x86_64__)
AIGC_AVX2 void quantize_input_avx2(const float* x, BlockQ8_0& q, float& d, int32_t& sum) {
  __m256 v[4];
  __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int k = 0; k < 4; k++) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    m = _mm256_max_ps(m, _mm256_and_ps(v[k], abs_mask));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  const float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
  // Zeros, inf, NaN, and amax so small that 127 / amax overflows: as the reference does them.
  if (!(amax > 0.0f) || !std::isfinite(amax) || !std::isfinite(127.0f / amax) || _mm256_movemask_ps(nan))
    return quantize_input_scalar(x, q, d, sum);
  const __m256 id = _mm256_set1_ps(127.0f / amax);
  q.d = io::f32_to_f16(amax / 127.0f);
  d = io::f16_to_f32(q.d);
  __m256i i[4];
  for (int k = 0; k < 4; k++) i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
  // Packing interleaves 128-bit lanes: the permutation puts the 32 bytes back in order.
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q.qs),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
  sum = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
}
#endif

inline void quantize_input(const float* x, BlockQ8_0& q, float& d, int32_t& sum, Isa path) {
#if defined(__x86_64__)
  if (path != Isa::Scalar) return quantize_input_avx2(x, q, d, sum);
#endif
  (void)path;
  quantize_input_scalar(x, q, d, sum);
}

// ---- Rows16 ----

// The input rows as the Rows16 kernels read them: Q8_0 blocks, each block's scale as a float and the sum of its
// values (the correction for the offset weights).
struct Input {
  const BlockQ8_0* q;
  const float* d;
  const int32_t* sum;
  int64_t nb;
};

constexpr int kTokens = 4;  // input rows per pass over a group's weights

inline int32_t quad(const BlockQ8_0& b, int j) {
  int32_t v;
  std::memcpy(&v, b.qs + 4 * j, 4);
  return v;
}

// One group of 16 output rows for TN input rows from n: out[(n + i) * ldo + r] for r < 16.
// What a Rows16 tile of Block holds: whether its values are nibbles, what they carry over q (vpdpbusd takes them
// unsigned), and where the quads start (after the 16 rows' d, and Q4_1's m).
template <typename Block>
struct Tile {
  static constexpr bool q41 = std::is_same_v<Block, BlockQ4_1>;
  static constexpr bool nibbles = q41 || std::is_same_v<Block, BlockQ4_0>;
  static constexpr int32_t offset = q41 ? 0 : nibbles ? 8 : 128;
  static constexpr int64_t quads = 2 * kRowGroup * (q41 ? 2 : 1);
  static constexpr int64_t bytes = kRowGroup * int64_t(sizeof(Block));
};

template <typename Block>
void group_scalar(float* out, int64_t ldo, const uint8_t* tiles, const Input& x, int64_t n, int TN) {
  using T = Tile<Block>;
  for (int i = 0; i < TN; i++)
    for (int r = 0; r < kRowGroup; r++) {
      float sum = 0;
      for (int64_t b = 0; b < x.nb; b++) {
        const uint8_t* t = tiles + b * T::bytes;
        uint16_t dw, mw = 0;
        std::memcpy(&dw, t + 2 * r, 2);
        if (T::q41) std::memcpy(&mw, t + 2 * kRowGroup + 2 * r, 2);
        const int64_t xi = (n + i) * x.nb + b;
        const BlockQ8_0& xb = x.q[xi];
        int dot = 0;
        for (int j = 0; j < 32; j++) {
          const uint8_t byte = t[T::quads + 64 * (j % (T::nibbles ? 16 : 32) / 4) + 4 * r + j % 4];
          const int qw = T::nibbles ? (j < 16 ? byte & 0xf : byte >> 4) - (T::q41 ? 0 : 8) : int(int8_t(byte));
          dot += qw * int(xb.qs[j]);
        }
        sum += io::f16_to_f32(dw) * x.d[xi] * float(dot);
        if (T::q41) sum += io::f16_to_f32(mw) * x.d[xi] * float(x.sum[xi]);
      }
      out[i * ldo + r] = sum;
    }
}

#if defined(__x86_64__)
template <typename Block, int TN, bool Ahead>
AIGC_VNNI void group_vnni(float* out, int64_t ldo, const uint8_t* tiles, const Input& x, int64_t n) {
  using T = Tile<Block>;
  __m512 acc[TN];
  for (int i = 0; i < TN; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < x.nb; b++) {
    const uint8_t* t = tiles + b * T::bytes;
    if constexpr (Ahead)
      for (int64_t k = 0; k < T::bytes; k += 64) prefetch_ahead(t + k);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t)));
    __m512 mw = _mm512_setzero_ps();
    if constexpr (T::q41) mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 32)));
    const uint8_t* q = t + T::quads;
    __m512i w[8];  // w[j]: values 4 j .. 4 j + 3 of the 16 rows, as unsigned bytes
    if constexpr (T::nibbles) {
      // The high nibbles stay in place, 16 times their value: their chain's sum is shifted down once at the end
      // instead of each vector before it (one shift a block and input row instead of four: 35.3 -> 39.7 GB/s from
      // the L2 on one thread of a Xeon).
      const __m512i lo = _mm512_set1_epi8(0x0f), hi = _mm512_set1_epi8(char(0xf0));
      for (int j = 0; j < 4; j++) {
        const __m512i v = _mm512_loadu_si512(q + 64 * j);
        w[j] = _mm512_and_si512(v, lo);
        w[j + 4] = _mm512_and_si512(v, hi);
      }
    } else {
      for (int j = 0; j < 8; j++) w[j] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * j), _mm512_set1_epi8(char(0x80)));
    }
    for (int i = 0; i < TN; i++) {
      const int64_t xi = (n + i) * x.nb + b;
      const BlockQ8_0& xb = x.q[xi];
      // Two chains: the low nibbles (or the first 16 bytes) with the offset's correction, and the high ones.
      __m512i s0 = _mm512_set1_epi32(-T::offset * x.sum[xi]), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 4; j++) {
        s0 = _mm512_dpbusd_epi32(s0, w[j], _mm512_set1_epi32(quad(xb, j)));
        s1 = _mm512_dpbusd_epi32(s1, w[j + 4], _mm512_set1_epi32(quad(xb, j + 4)));
      }
      if constexpr (T::nibbles) s1 = _mm512_srai_epi32(s1, 4);
      const __m512 p = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
      acc[i] = _mm512_fmadd_ps(p, _mm512_mul_ps(dw, _mm512_set1_ps(x.d[xi])), acc[i]);
      if constexpr (T::q41) acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.d[xi] * float(x.sum[xi])), acc[i]);
    }
  }
  for (int i = 0; i < TN; i++) _mm512_storeu_ps(out + i * ldo, acc[i]);
}

template <typename Block, int TN, bool Ahead>
AIGC_AVX2 void group_avx2(float* out, int64_t ldo, const uint8_t* tiles, const Input& x, int64_t n) {
  using T = Tile<Block>;
  const __m256i ones = _mm256_set1_epi16(1), lo = _mm256_set1_epi8(0x0f);
  for (int h = 0; h < 2; h++) {  // rows 8 h .. 8 h + 7
    __m256 acc[TN];
    for (int i = 0; i < TN; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < x.nb; b++) {
      const uint8_t* t = tiles + b * T::bytes;
      if constexpr (Ahead)  // in the first half's pass; the second reads the tiles from the cache
        if (h == 0)
          for (int64_t k = 0; k < T::bytes; k += 64) prefetch_ahead(t + k);
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 16 * h)));
      __m256 mw = _mm256_setzero_ps();
      if constexpr (T::q41) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 32 + 16 * h)));
      const uint8_t* q = t + T::quads + 32 * h;
      __m256i w[8];
      if constexpr (T::nibbles) {
        for (int j = 0; j < 4; j++) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * j));
          w[j] = _mm256_and_si256(v, lo);
          w[j + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo);
        }
      } else {
        for (int j = 0; j < 8; j++) w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * j));
      }
      for (int i = 0; i < TN; i++) {
        const int64_t xi = (n + i) * x.nb + b;
        const BlockQ8_0& xb = x.q[xi];
        __m256i p;
        if constexpr (T::nibbles) {  // 8 pairs of nibble x byte stay within int16: 8 * 2 * 15 * 127 < 32768
          __m256i p16 = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(quad(xb, 0)));
          for (int j = 1; j < 8; j++)
            p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(w[j], _mm256_set1_epi32(quad(xb, j))));
          p = _mm256_sub_epi32(_mm256_madd_epi16(p16, ones), _mm256_set1_epi32(T::offset * x.sum[xi]));
        } else {
          p = _mm256_setzero_si256();
          for (int j = 0; j < 8; j++) {
            const __m256i xj = _mm256_sign_epi8(_mm256_set1_epi32(quad(xb, j)), w[j]);
            p = _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w[j], w[j]), xj), ones));
          }
        }
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, _mm256_set1_ps(x.d[xi])), acc[i]);
        if constexpr (T::q41) acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.d[xi] * float(x.sum[xi])), acc[i]);
      }
    }
    for (int i = 0; i < TN; i++) _mm256_storeu_ps(out + i * ldo + 8 * h, acc[i]);
  }
}
#endif

template <typename Block, int TN>
void group(float* out, int64_t ldo, const uint8_t* tiles, const Input& x, int64_t n, Isa path, bool ahead) {
#if defined(__x86_64__)
  if (path == Isa::Vnni)
    return ahead ? group_vnni<Block, TN, true>(out, ldo, tiles, x, n)
                 : group_vnni<Block, TN, false>(out, ldo, tiles, x, n);
  if (path == Isa::Avx2)
    return ahead ? group_avx2<Block, TN, true>(out, ldo, tiles, x, n)
                 : group_avx2<Block, TN, false>(out, ldo, tiles, x, n);
#endif
  (void)path, (void)ahead;
  group_scalar<Block>(out, ldo, tiles, x, n, TN);
}

// The input rows as Rows16 and row kernels read them: Q8_0 blocks with their scales and sums, in buffers of the
// thread that made them (x points into them).
struct InputBuffers {
  std::vector<BlockQ8_0> q;
  std::vector<float> d;
  std::vector<int32_t> sum;
  Input x{};
  void resize(int64_t n, int64_t nb) {
    q.resize(size_t(n)), d.resize(size_t(n)), sum.resize(size_t(n));
    x = Input{q.data(), d.data(), sum.data(), nb};
  }
};

template <typename Block>
void linear_quant(float* out, const float* inp, const Block* w, bool rows16, const float* bias, int64_t N, int64_t C_in,
                  int64_t C_out) {
  const int64_t nb = C_in / kQuantBlock;
  const Isa path = isa();
  auto quantize_rows = [&](InputBuffers& in, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) quantize_input(inp + i * kQuantBlock, in.q[i], in.d[i], in.sum[i], path);
  };
  // A few rows (decoding): each thread quantizes the input itself, into buffers of its own, at the start of its
  // share. Quantized once by the calling thread instead, the blocks were written by one core and read by the other
  // at every product, and that thread's serial stretch between products held the quantization too. Many rows
  // (prefill): quantized once, the threads splitting the blocks, into the caller's buffers.
  static thread_local InputBuffers mine;
  InputBuffers* shared = nullptr;
  if (N > kTokens) {
    static thread_local InputBuffers caller;  // the threads below see them through `shared`
    caller.resize(N * nb, nb);
    shared = &caller;
    // Through the pointer: inside the lambda, `caller` would name each thread's own (empty) buffers.
    parallel_range(N * nb, kQuantBlock, [&](int64_t i0, int64_t i1) { quantize_rows(*shared, i0, i1); });
  }
  auto start = [&] {
    if (shared) return;
    mine.resize(N * nb, nb);
    quantize_rows(mine, 0, N * nb);
  };
  // Threads split the output features (groups of 16, then single rows), so each weight row is read from memory
  // once, by one thread, and stays in its cache for all N input rows.
  const int64_t groups = rows16 ? C_out / kRowGroup : 0, first_row = groups * kRowGroup;
  const int64_t tile = kRowGroup * int64_t(sizeof(Block));
  const auto* tiles = reinterpret_cast<const uint8_t*>(w);
  split_stream(
      groups + (C_out - first_row), shared ? 0 : size_t(C_out * nb) * sizeof(Block),  // prefill: compute-bound
      [&](int64_t u, bool ahead) {
        const Input& x = shared ? shared->x : mine.x;
        if (u < groups) {
          const uint8_t* gt = tiles + u * nb * tile;
          float* o = out + u * kRowGroup;
          int64_t n = 0;
          // `ahead` comes only with up to kTokens rows: one pass over the group's tiles.
          for (; n + kTokens <= N; n += kTokens) group<Block, kTokens>(o + n * C_out, C_out, gt, x, n, path, ahead);
          switch (N - n) {
            case 3:
              group<Block, 3>(o + n * C_out, C_out, gt, x, n, path, ahead);
              break;
            case 2:
              group<Block, 2>(o + n * C_out, C_out, gt, x, n, path, ahead);
              break;
            case 1:
              group<Block, 1>(o + n * C_out, C_out, gt, x, n, path, ahead);
              break;
          }
          if (bias)
            for (int64_t i = 0; i < N; i++)
              for (int r = 0; r < kRowGroup; r++) o[i * C_out + r] += bias[u * kRowGroup + r];
        } else {
          const int64_t row = first_row + (u - groups);
          const Block* wr = w + row * nb;
          const float bo = bias ? bias[row] : 0.0f;
          for (int64_t i = 0; i < N; i++) out[i * C_out + row] = dot(wr, x.q + i * nb, nb, path) + bo;
        }
      },
      start);
}

}  // namespace

void CpuBackend::linear_forward_quant(float* out, const float* inp, const void* w, DType wtype, Layout wlayout,
                                      const float* bias, int64_t N, int64_t C_in, int64_t C_out) {
  AIGC_CHECK(C_in % kQuantBlock == 0, "linear_forward_quant: C_in must be a multiple of 32");
  AIGC_CHECK(wlayout == Layout::Plain || wlayout == Layout::Rows16,
             "linear_forward_quant: weights must be plain or Rows16");
  const bool rows16 = wlayout == Layout::Rows16;
  if (wtype == DType::Q8_0)
    linear_quant(out, inp, static_cast<const BlockQ8_0*>(w), rows16, bias, N, C_in, C_out);
  else if (wtype == DType::Q4_0)
    linear_quant(out, inp, static_cast<const BlockQ4_0*>(w), rows16, bias, N, C_in, C_out);
  else if (wtype == DType::Q4_1)
    linear_quant(out, inp, static_cast<const BlockQ4_1*>(w), rows16, bias, N, C_in, C_out);
  else
    fail(std::string("linear_forward_quant: weights of type ") + dtype_name(wtype) + " are not quantized");
}

}  // namespace aigc::cpu

namespace aigc {

const char* quant_kernel_isa() {
  switch (cpu::isa()) {
    case cpu::Isa::Vnni:
      return "avx512-vnni";
    case cpu::Isa::Avx2:
      return "avx2";
    default:
      return "scalar";
  }
}

}  // namespace aigc

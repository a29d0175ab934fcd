// Linear layers with Q8_0 / Q4_0 weights (backend.h: linear_forward_quant). Decoding reads every weight once per
// token, so the bytes are the cost: the weights stay in their blocks and are multiplied as integers. Each input
// row is quantized to Q8_0 once (the same scalar code as the reference, so the integers agree exactly), then every
// output is a sum over blocks of d_w d_x dot(q_w, q_x), with the 32-element integer dot in SIMD:
//  - AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes and sums groups of four into int32 lanes; the
//    signs move onto the input (|w| * sign(w) x), as the instruction wants one operand unsigned;
//  - AVX2: the same with vpmaddubsw (pairs into int16; |q| <= 127 keeps them from saturating) and vpmaddwd;
//  - scalar elsewhere.
// The path is chosen once from the CPU; AIGC_QUANT_ISA=avx2|scalar forces a narrower one (tests run all three).
#include <immintrin.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <string>
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
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) best = Isa::Vnni;
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

template <typename Block>
float dot_scalar(const Block* w, const BlockQ8_0* x, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; b++) {
    int8_t tmp[32];
    const int8_t* q = weight_bytes(w[b], tmp);
    int dot = 0;
    for (int j = 0; j < 32; j++) dot += int(q[j]) * int(x[b].qs[j]);
    sum += io::f16_to_f32(w[b].d) * io::f16_to_f32(x[b].d) * float(dot);
  }
  return sum;
}

#if defined(__x86_64__)
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
  if (i == Isa::Vnni) return dot_vnni(w, x, nb);
  if (i == Isa::Avx2) return dot_avx2(w, x, nb);
#endif
  (void)i;
  return dot_scalar(w, x, nb);
}

template <typename Block>
void linear_quant(float* out, const float* inp, const Block* w, const float* bias, int64_t N, int64_t C_in,
                  int64_t C_out) {
  const int64_t nb = C_in / kQuantBlock;
  static thread_local std::vector<BlockQ8_0> xq;  // the caller's; the threads below see it through x
  xq.resize(size_t(N * nb));
  BlockQ8_0* x = xq.data();
#pragma omp parallel for schedule(static) if (N * nb > 4096)
  for (int64_t i = 0; i < N * nb; i++) quantize_activation_block(inp + i * kQuantBlock, x[i]);
  const Isa path = isa();
  // Threads split the output features, so each weight row is read from memory once, by one thread, and stays in
  // its cache for all N input rows.
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < C_out; o++) {
    const Block* wr = w + o * nb;
    const float bo = bias ? bias[o] : 0.0f;
    for (int64_t n = 0; n < N; n++) out[n * C_out + o] = dot(wr, x + n * nb, nb, path) + bo;
  }
}

}  // namespace

void CpuBackend::linear_forward_quant(float* out, const float* inp, const void* w, DType wtype, const float* bias,
                                      int64_t N, int64_t C_in, int64_t C_out) {
  AIGC_CHECK(C_in % kQuantBlock == 0, "linear_forward_quant: C_in must be a multiple of 32");
  if (wtype == DType::Q8_0)
    linear_quant(out, inp, static_cast<const BlockQ8_0*>(w), bias, N, C_in, C_out);
  else if (wtype == DType::Q4_0)
    linear_quant(out, inp, static_cast<const BlockQ4_0*>(w), bias, N, C_in, C_out);
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

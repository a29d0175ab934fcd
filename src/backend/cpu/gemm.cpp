// Matrix products: oneDNN's sgemm (row-major), and the linear layer built on it, in fp32 or with bf16 operands.
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "aigc/error.h"
#include "cpu_backend.h"

namespace aigc::cpu {

void CpuBackend::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                      int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // sgemm implementations disagree on K == 0; the math says C = beta * C
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  AIGC_CHECK(st == dnnl_success, "oneDNN sgemm failed with status " + std::to_string(int(st)));
}

namespace {

MatmulPrecision g_precision = MatmulPrecision::F32;

// Reusable bf16 copies of matmul operands (linear layers run on the calling thread, one at a time).
struct Bf16Scratch {
  std::vector<uint16_t> a, b;
  const uint16_t* convert(std::vector<uint16_t>& buf, const float* src, int64_t n) {
    if (buf.size() < size_t(n)) buf.resize(size_t(n));
    f32_to_bf16(buf.data(), src, n);
    return buf.data();
  }
};
Bf16Scratch& scratch() {
  static thread_local Bf16Scratch s;
  return s;
}

// Starts out (N, C_out) from the bias rows so the product can accumulate onto them; returns the gemm's beta.
float fill_bias(float* out, const float* bias, int64_t N, int64_t C_out) {
  if (!bias) return 0.0f;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) std::memcpy(out + n * C_out, bias, size_t(C_out) * sizeof(float));
  return 1.0f;
}

inline float widen(float w) { return w; }
inline float widen(uint16_t w) { return f32_from_bf16(w); }

// The vector helpers below are internal (inlined, never exported), so GCC's note that passing 64-byte vectors
// without AVX-512 changes the calling convention does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// 16 lanes through GCC's vector extensions: AVX-512 registers where the CPU has them, pairs or quads of narrower
// ones elsewhere, with no intrinsics.
typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
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

typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
inline float hsum(v16f v) {  // a tree of shuffles: the lanes never go through memory
  const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
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

// out rows [0, R) x outputs [o, o + O) of x W^T + bias: R x O dot products over C_in at once, so each 16-wide
// load of a weight row feeds R multiply-adds and each load of an input row feeds O.
template <int R, int O, typename W>
void dot_block(float* out, const float* inp, const W* w, const float* bias, int64_t o, int64_t C_in, int64_t C_out) {
  v16f acc[R][O];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < O; j++) acc[r][j] = v16f{};
  const int64_t K16 = C_in / 16 * 16;
  for (int64_t i = 0; i < K16; i += 16) {
    v16f xv[R];
    for (int r = 0; r < R; r++) xv[r] = load16(inp + r * C_in + i), in_register(xv[r]);
    for (int j = 0; j < O; j++) {
      // Rows o.. are contiguous: ask for the same place O rows on (the next block) while this one computes.
      __builtin_prefetch(w + (o + 2 * O + j) * C_in + i);
      v16f wv = load16(w + (o + j) * C_in + i);
      in_register(wv);
      for (int r = 0; r < R; r++) acc[r][j] += xv[r] * wv;
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < O; j++) {
      float s = hsum(acc[r][j]);
      for (int64_t i = K16; i < C_in; i++) s += inp[r * C_in + i] * widen(w[(o + j) * C_in + i]);
      out[r * C_out + o + j] = s + (bias ? bias[o + j] : 0.0f);
    }
}

template <int O, typename W>
void dot_rows(float* out, const float* inp, const W* w, const float* bias, int64_t N, int64_t o, int64_t C_in,
              int64_t C_out) {
  for (int64_t r = 0; r < N; r += 4) {
    const int64_t R = std::min<int64_t>(4, N - r);
    float* y = out + r * C_out;
    const float* x = inp + r * C_in;
    if (R == 4) dot_block<4, O>(y, x, w, bias, o, C_in, C_out);
    if (R == 3) dot_block<3, O>(y, x, w, bias, o, C_in, C_out);
    if (R == 2) dot_block<2, O>(y, x, w, bias, o, C_in, C_out);
    if (R == 1) dot_block<1, O>(y, x, w, bias, o, C_in, C_out);
  }
}

// out (N, C_out) = inp (N, C_in) W^T + bias for a few rows (generation, batched decoding): the weights' bytes are
// the cost, so each weight row is read from memory once, by one thread (threads split the output features), and
// widened to fp32 in registers; the rows share each load (dot_block).
template <typename W>
void linear_few_rows(float* out, const float* inp, const W* w, const float* bias, int64_t N, int64_t C_in,
                     int64_t C_out) {
  const int64_t blocks = C_out / 4;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; b++) dot_rows<4>(out, inp, w, bias, N, 4 * b, C_in, C_out);
  for (int64_t o = 4 * blocks; o < C_out; o++) dot_rows<1>(out, inp, w, bias, N, o, C_in, C_out);
}

constexpr int64_t kFewRows = 16;

}  // namespace

void CpuBackend::linear_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                                int64_t C_in, int64_t C_out) {
  if (N <= kFewRows && g_precision == MatmulPrecision::F32) {
    linear_few_rows(out, inp, w, bias, N, C_in, C_out);
    return;
  }
  float beta = fill_bias(out, bias, N, C_out);
  if (g_precision == MatmulPrecision::BF16) {
    Bf16Scratch& s = scratch();
    const uint16_t* x16 = s.convert(s.a, inp, N * C_in);
    const uint16_t* w16 = s.convert(s.b, w, C_out * C_in);
    gemm_bf16(false, true, N, C_out, C_in, 1.0f, x16, C_in, w16, C_in, beta, out, C_out);
    return;
  }
  // Measured on AVX-512: the matmul primitive is faster than sgemm for x W^T up to ~1024 rows, slower beyond.
  // The choice depends on the shape only, so runs stay deterministic.
  if (N <= 1024 && gemm_f32_matmul(N, C_out, C_in, inp, C_in, w, C_in, beta, out, C_out)) return;
  gemm(false, true, N, C_out, C_in, 1.0f, inp, C_in, w, C_in, beta, out, C_out);
}

void CpuBackend::linear_forward_bf16w(float* out, const float* inp, const uint16_t* w, const float* bias, int64_t N,
                                      int64_t C_in, int64_t C_out) {
  if (N <= kFewRows) {
    linear_few_rows(out, inp, w, bias, N, C_in, C_out);
    return;
  }
  float beta = fill_bias(out, bias, N, C_out);
  Bf16Scratch& s = scratch();
  gemm_bf16(false, true, N, C_out, C_in, 1.0f, s.convert(s.a, inp, N * C_in), C_in, w, C_in, beta, out, C_out);
}

// dbias (C) += sum over rows of dout (N,C). Threads own column blocks, so the sum order is fixed.
static void column_sum_add(float* dbias, const float* dout, int64_t N, int64_t C) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t c0 = C * id / nt, c1 = C * (id + 1) / nt;
    for (int64_t n = 0; n < N; n++) {
      const float* row = dout + n * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; c++) dbias[c] += row[c];
    }
  }
}

void CpuBackend::linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                                 const float* w, int64_t N, int64_t C_in, int64_t C_out) {
  if (dbias) column_sum_add(dbias, dout, N, C_out);
  if (g_precision == MatmulPrecision::BF16) {
    Bf16Scratch& s = scratch();
    const uint16_t* d16 = s.convert(s.a, dout, N * C_out);
    if (dinp)
      gemm_bf16(false, false, N, C_in, C_out, 1.0f, d16, C_out, s.convert(s.b, w, C_out * C_in), C_in, 1.0f, dinp,
                C_in);
    if (dw)
      gemm_bf16(true, false, C_out, C_in, N, 1.0f, d16, C_out, s.convert(s.b, inp, N * C_in), C_in, 1.0f, dw, C_in);
    return;
  }
  if (dinp) gemm(false, false, N, C_in, C_out, 1.0f, dout, C_out, w, C_in, 1.0f, dinp, C_in);
  if (dw) gemm(true, false, C_out, C_in, N, 1.0f, dout, C_out, inp, C_in, 1.0f, dw, C_in);
}

}  // namespace aigc::cpu

namespace aigc {

void set_matmul_precision(MatmulPrecision p) { cpu::g_precision = p; }
MatmulPrecision matmul_precision() { return cpu::g_precision; }
bool bf16_is_native() { return cpu::bf16_matmul_is_native(); }

}  // namespace aigc

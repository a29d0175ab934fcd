// Matrix products: oneDNN's sgemm (row-major), and the linear layer built on it, in fp32 or with bf16 operands.
#include <dnnl.h>
#include <omp.h>

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

// out (N, C_out) = inp (N, C_in) W^T + bias for a few rows (generation): the weights' bytes are the cost, so each
// weight row is read once, by one thread (threads split the output features), and widened to fp32 in registers.
template <typename W>
void linear_few_rows(float* out, const float* inp, const W* w, const float* bias, int64_t N, int64_t C_in,
                     int64_t C_out) {
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < C_out; o++) {
    const W* wr = w + o * C_in;
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C_in;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < C_in; i++) s += widen(wr[i]) * x[i];
      out[n * C_out + o] = s + (bias ? bias[o] : 0.0f);
    }
  }
}

constexpr int64_t kFewRows = 4;

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
    if (dinp) gemm_bf16(false, false, N, C_in, C_out, 1.0f, d16, C_out, s.convert(s.b, w, C_out * C_in), C_in, 1.0f,
                        dinp, C_in);
    if (dw) gemm_bf16(true, false, C_out, C_in, N, 1.0f, d16, C_out, s.convert(s.b, inp, N * C_in), C_in, 1.0f, dw,
                      C_in);
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

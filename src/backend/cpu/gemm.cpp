// Matrix products: oneDNN's sgemm (row-major), and the linear layer built on it.
#include <dnnl.h>
#include <omp.h>

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

void CpuBackend::linear_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                                int64_t C_in, int64_t C_out) {
  float beta = 0.0f;
  if (bias) {  // start from the bias rows so the product can accumulate onto them
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < C_out; o++) out[n * C_out + o] = bias[o];
    beta = 1.0f;
  }
  gemm(false, true, N, C_out, C_in, 1.0f, inp, C_in, w, C_in, beta, out, C_out);
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
  if (dinp) gemm(false, false, N, C_in, C_out, 1.0f, dout, C_out, w, C_in, 1.0f, dinp, C_in);
  if (dw) gemm(true, false, C_out, C_in, N, 1.0f, dout, C_out, inp, C_in, 1.0f, dw, C_in);
  if (dbias) column_sum_add(dbias, dout, N, C_out);
}

}  // namespace aigc::cpu

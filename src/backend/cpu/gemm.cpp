// Matrix products: oneDNN's sgemm (row-major), and the linear layer built on it, in fp32 or with bf16 operands.
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "aigc/error.h"
#include "cpu_backend.h"
#include "vec16.h"

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

// Output o of input rows [0, R): R dot products of weight row o, read once, with each 16-wide load feeding R
// multiply-adds. bf16 weights keep two sums per input row (even and odd weights), fp32 ones one: a chain of
// dependent multiply-adds still takes 64 bytes per 4 cycles, more than a core's share of the bandwidth, and fp32
// rows also serve training (dense layers of batches up to 16), whose sums stay in the order the parity tests pin.
template <int R, bool Ahead, typename W>
void dot_row(float* out, const float* inp, const W* w, const float* bias, int64_t o, int64_t C_in, int64_t C_out) {
  v16f acc[R][2];
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = v16f{};
  const W* wr = w + o * C_in;
  int64_t i = 0;
  for (; i + 32 <= C_in; i += 32) {
    if constexpr (Ahead) {  // a line a prefetch: 32 bf16 weights, or 16 fp32
      prefetch_ahead(wr + i);
      if constexpr (!std::is_same_v<W, uint16_t>) prefetch_ahead(wr + i + 16);
    }
    v16f w0, w1;
    if constexpr (std::is_same_v<W, uint16_t>) {
      // 32 bf16 weights in one 64-byte load. Each 32-bit lane holds an (even, odd) pair, and a bf16 is the high half
      // of an fp32: the even weights are the lanes shifted up 16 bits, the odd ones the lanes with the low half
      // cleared (2 instructions for 32 weights; widening 16 at a time takes 3 for 16). The inputs are split into
      // even and odd lanes to match.
      v16u u;
      std::memcpy(&u, wr + i, sizeof u);
      const v16u ue = u << 16, uo = u & 0xffff0000u;
      std::memcpy(&w0, &ue, sizeof w0), std::memcpy(&w1, &uo, sizeof w1);
    } else {
      w0 = load16(wr + i), w1 = load16(wr + i + 16);
    }
    in_register(w0), in_register(w1);
    for (int r = 0; r < R; r++) {
      const v16f a = load16(inp + r * C_in + i), b = load16(inp + r * C_in + i + 16);
      if constexpr (std::is_same_v<W, uint16_t>) {
        acc[r][0] += __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) * w0;
        acc[r][1] += __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31) * w1;
      } else {
        acc[r][0] += a * w0, acc[r][0] += b * w1;
      }
    }
  }
  for (; i + 16 <= C_in; i += 16) {
    const v16f wv = load16(wr + i);
    for (int r = 0; r < R; r++) acc[r][0] += load16(inp + r * C_in + i) * wv;
  }
  for (int r = 0; r < R; r++) {
    float s = hsum(acc[r][0] + acc[r][1]);
    for (int64_t k = i; k < C_in; k++) s += inp[r * C_in + k] * widen(wr[k]);
    out[r * C_out + o] = s + (bias ? bias[o] : 0.0f);
  }
}

// out (N, C_out) = inp (N, C_in) W^T + bias for a few rows (generation, batched decoding): the weights' bytes are
// the cost, so each weight row is read from memory once, by one thread, and widened to fp32 in registers; up to 4
// input rows share each load (dot_row). Threads split the output features into consecutive ranges (split_stream),
// and each walks its range one row after the next: a single forward stream, which the hardware prefetchers follow
// at full speed. Reading 4 rows side by side (4 streams a thread) was measured 1.4x slower for bf16 weights.
template <typename W>
void linear_few_rows(float* out, const float* inp, const W* w, const float* bias, int64_t N, int64_t C_in,
                     int64_t C_out) {
  // Up to 4 rows (decoding) the weights' bytes are the cost; more share each load (compute-bound).
  split_stream(C_out, N <= 4 ? size_t(C_out * C_in) * sizeof(W) : 0, [&](int64_t o, bool ahead) {
    for (int64_t r = 0; r < N; r += 4) {
      const int64_t R = std::min<int64_t>(4, N - r);
      float* y = out + r * C_out;
      const float* x = inp + r * C_in;
      // `ahead` comes only with up to 4 rows: one pass over the weights.
      auto pass = [&](auto prefetch) {
        constexpr bool A = decltype(prefetch)::value;
        if (R == 4) dot_row<4, A>(y, x, w, bias, o, C_in, C_out);
        if (R == 3) dot_row<3, A>(y, x, w, bias, o, C_in, C_out);
        if (R == 2) dot_row<2, A>(y, x, w, bias, o, C_in, C_out);
        if (R == 1) dot_row<1, A>(y, x, w, bias, o, C_in, C_out);
      };
      ahead ? pass(std::true_type{}) : pass(std::false_type{});
    }
  });
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

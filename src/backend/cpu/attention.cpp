// Causal multi-head self-attention. Per (batch, head): S = q k^T / sqrt(HS), causal mask, softmax -> P, out = P v.
// q, k, v are read straight out of the fused qkv rows (leading dimension 3C) and the output is written straight
// into its (B,T,C) slot, so no head split/merge copies exist. Each (b,h) pair runs single-threaded gemms;
// threads split the B*NH pairs, which write disjoint columns: no races.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu_backend.h"

namespace aigc::cpu {

// Softmax of row s[0..len) in place, zeroing s[len..width).
static inline void masked_softmax_row(float* s, int64_t len, int64_t width) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < len; j++) mx = s[j] > mx ? s[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < len; j++) {
    s[j] = exp_vec(s[j] - mx);
    sum += s[j];
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < len; j++) s[j] *= inv;
  for (int64_t j = len; j < width; j++) s[j] = 0.0f;
}

void CpuBackend::attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t C,
                                   int64_t NH) {
  const int64_t HS = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
#pragma omp parallel
  {
    std::vector<float> scratch(att ? 0 : size_t(T * T));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      int64_t b = bh / NH, h = bh % NH;
      const float* q = qkv + b * T * C3 + h * HS;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* P = att ? att + bh * T * T : scratch.data();
      gemm(false, true, T, T, HS, scale, q, C3, k, C3, 0.0f, P, T);
      for (int64_t i = 0; i < T; i++) masked_softmax_row(P + i * T, i + 1, T);
      gemm(false, false, T, HS, T, 1.0f, P, T, v, C3, 0.0f, out + b * T * C + h * HS, C);
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int64_t B,
                                    int64_t T, int64_t C, int64_t NH) {
  const int64_t HS = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
#pragma omp parallel
  {
    std::vector<float> dS(size_t(T * T));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      int64_t b = bh / NH, h = bh % NH;
      const float* q = qkv + b * T * C3 + h * HS;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + b * T * C3 + h * HS;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* P = att + bh * T * T;
      const float* dO = dout + b * T * C + h * HS;
      gemm(false, true, T, T, HS, 1.0f, dO, C, v, C3, 0.0f, dS.data(), T);  // dP = dO v^T
      gemm(true, false, T, HS, T, 1.0f, P, T, dO, C, 1.0f, dv, C3);          // dv += P^T dO
      for (int64_t i = 0; i < T; i++) {  // softmax backward: dS = P * (dP - sum_j P dP)
        float* d = dS.data() + i * T;
        const float* p = P + i * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j <= i; j++) dot += p[j] * d[j];
#pragma omp simd
        for (int64_t j = 0; j <= i; j++) d[j] = p[j] * (d[j] - dot);
        for (int64_t j = i + 1; j < T; j++) d[j] = 0.0f;
      }
      gemm(false, false, T, HS, T, scale, dS.data(), T, k, C3, 1.0f, dq, C3);  // dq += dS k / sqrt(HS)
      gemm(true, false, T, HS, T, scale, dS.data(), T, q, C3, 1.0f, dk, C3);   // dk += dS^T q / sqrt(HS)
    }
  }
}

void CpuBackend::attention_cached(float* out, const float* qkv, float* kcache, float* vcache, int64_t B, int64_t T,
                                  int64_t C, int64_t NH, int64_t pos0, int64_t T_cap) {
  const int64_t HS = C / NH, C3 = 3 * C, L = pos0 + T;
  const float scale = 1.0f / std::sqrt(float(HS));
  // Append the new keys and values: cache layout (B, NH, T_cap, HS).
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * T; bt++) {
    int64_t b = bt / T, t = bt % T;
    const float* row = qkv + bt * C3;
    for (int64_t h = 0; h < NH; h++) {
      float* kc = kcache + ((b * NH + h) * T_cap + pos0 + t) * HS;
      float* vc = vcache + ((b * NH + h) * T_cap + pos0 + t) * HS;
      for (int64_t d = 0; d < HS; d++) {
        kc[d] = row[C + h * HS + d];
        vc[d] = row[2 * C + h * HS + d];
      }
    }
  }
#pragma omp parallel
  {
    std::vector<float> S(size_t(T * L));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      int64_t b = bh / NH, h = bh % NH;
      const float* q = qkv + b * T * C3 + h * HS;
      const float* kc = kcache + bh * T_cap * HS;
      const float* vc = vcache + bh * T_cap * HS;
      gemm(false, true, T, L, HS, scale, q, C3, kc, HS, 0.0f, S.data(), L);
      for (int64_t i = 0; i < T; i++) masked_softmax_row(S.data() + i * L, pos0 + i + 1, L);
      gemm(false, false, T, HS, L, 1.0f, S.data(), L, vc, HS, 0.0f, out + b * T * C + h * HS, C);
    }
  }
}

}  // namespace aigc::cpu

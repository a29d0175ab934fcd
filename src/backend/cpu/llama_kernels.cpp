// Kernels the Llama family adds: RMS normalization, the SwiGLU gate, and the rotary embedding that also packs
// grouped-query heads for the attention kernels. Plain loops, OpenMP over rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_backend.h"

namespace aigc::cpu {

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int64_t C,
                                 float eps) {
  parallel_range(N, C, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* x = inp + n * C;
      float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
      for (int64_t c = 0; c < C; c++) sq += x[c] * x[c];
      const float r = float(1.0 / std::sqrt(double(sq) / double(C) + double(eps)));
      float* o = out + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] = x[c] * r * w[c];
      if (rstd) rstd[n] = r;
    }
  });
}

void CpuBackend::rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                                  const float* rstd, int64_t N, int64_t C) {
  const int nt = omp_get_max_threads();
  // Per-thread partial sums for dw, reduced in thread order afterwards (deterministic for a thread count).
  std::vector<float> part(dw ? size_t(nt) * size_t(C) : 0, 0.0f);
#pragma omp parallel num_threads(nt)
  {
    float* pdw = dw ? part.data() + size_t(omp_get_thread_num()) * C : nullptr;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float *x = inp + n * C, *d = dout + n * C;
      const float r = rstd[n];
      if (dinp) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; c++) s += d[c] * w[c] * x[c];
        const float m = s * r / float(C);  // mean of dn xhat
        float* dx = dinp + n * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) dx[c] += (d[c] * w[c] - x[c] * r * m) * r;
      }
      if (pdw) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) pdw[c] += d[c] * x[c] * r;
      }
    }
  }
  if (dw)
    for (int t = 0; t < nt; t++)
      for (int64_t c = 0; c < C; c++) dw[c] += part[size_t(t) * C + c];
}

void CpuBackend::swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  parallel_range(n, 1, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
  });
}

void CpuBackend::swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                 int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float g = gate[i], s = sigmoid(g), d = dout[i];
    if (dgate) dgate[i] += d * up[i] * s * (1.0f + g * (1.0f - s));
    if (dup) dup[i] += d * g * s;
  }
}

namespace {
// cos and sin of each pair's angle at position p: the angle rounded to fp32 as Hugging Face's Llama computes it,
// then taken in double (the reference's values exactly).
void rope_table(float* cs, float* sn, int32_t p, const float* inv_freq, int64_t half) {
  for (int64_t i = 0; i < half; i++) {
    const double a = double(float(p) * inv_freq[i]);
    cs[i] = float(std::cos(a));
    sn[i] = float(std::sin(a));
  }
}
}  // namespace

void CpuBackend::rope_qkv_forward(float* qkv, const float* q, const float* k, const float* v, const int32_t* pos,
                                  const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) {
  const int64_t C = NH * HS, Ckv = NKV * HS, half = HS / 2, rep = NH / NKV;
  parallel_range(N, 3 * C, [&](int64_t n0, int64_t n1) {
    // The last position's table, kept: a decoding step rotates every layer at the same position, and the table
    // (half sines and cosines in double) costs more than the rotation.
    // Keyed by the frequencies' values, not their address (another model's may come to live there).
    static thread_local std::vector<float> tab, tab_freq;
    static thread_local int32_t tab_pos = 0;
    if (tab.size() != size_t(2 * half)) tab.assign(size_t(2 * half), 0.0f), tab_freq.clear();
    float *cs = tab.data(), *sn = cs + half;
    for (int64_t n = n0; n < n1; n++) {
      if (tab_pos != pos[n] || tab_freq.size() != size_t(half) ||
          !std::equal(inv_freq, inv_freq + half, tab_freq.begin())) {
        tab_freq.assign(inv_freq, inv_freq + half), tab_pos = pos[n];
        rope_table(cs, sn, pos[n], inv_freq, half);
      }
      float* out = qkv + n * 3 * C;
      auto rotate = [&](float* o, const float* x) {
#pragma omp simd
        for (int64_t i = 0; i < half; i++) {
          o[i] = x[i] * cs[i] - x[i + half] * sn[i];
          o[i + half] = x[i + half] * cs[i] + x[i] * sn[i];
        }
      };
      for (int64_t h = 0; h < NH; h++) rotate(out + h * HS, q + n * C + h * HS);
      for (int64_t j = 0; j < NKV; j++) {
        rotate(out + C + j * rep * HS, k + n * Ckv + j * HS);  // the first repeat, then copies
        for (int64_t r = 1; r < rep; r++) std::copy_n(out + C + j * rep * HS, HS, out + C + (j * rep + r) * HS);
        for (int64_t r = 0; r < rep; r++) std::copy_n(v + n * Ckv + j * HS, HS, out + 2 * C + (j * rep + r) * HS);
      }
    }
  });
}

void CpuBackend::rope_qkv_backward(float* dq, float* dk, float* dv, const float* dqkv, const int32_t* pos,
                                   const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) {
  const int64_t C = NH * HS, Ckv = NKV * HS, half = HS / 2, rep = NH / NKV;
#pragma omp parallel
  {
    std::vector<float> tab(size_t(2 * half) + size_t(HS));
    float *cs = tab.data(), *sn = cs + half, *sum = sn + half;
    // dx += R^T g: the rotation by -angle.
    auto unrotate = [&](float* dx, const float* g) {
#pragma omp simd
      for (int64_t i = 0; i < half; i++) {
        dx[i] += g[i] * cs[i] + g[i + half] * sn[i];
        dx[i + half] += g[i + half] * cs[i] - g[i] * sn[i];
      }
    };
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      rope_table(cs, sn, pos[n], inv_freq, half);
      const float* g = dqkv + n * 3 * C;
      if (dq)
        for (int64_t h = 0; h < NH; h++) unrotate(dq + n * C + h * HS, g + h * HS);
      for (int64_t j = 0; j < NKV; j++) {
        if (dk) {  // the repeats' gradients summed first (rotation is linear), then turned back once
          std::fill_n(sum, HS, 0.0f);
          for (int64_t r = 0; r < rep; r++)
            for (int64_t i = 0; i < HS; i++) sum[i] += g[C + (j * rep + r) * HS + i];
          unrotate(dk + n * Ckv + j * HS, sum);
        }
        if (dv)
          for (int64_t r = 0; r < rep; r++) {
            const float* gv = g + 2 * C + (j * rep + r) * HS;
            float* d = dv + n * Ckv + j * HS;
#pragma omp simd
            for (int64_t i = 0; i < HS; i++) d[i] += gv[i];
          }
      }
    }
  }
}

}  // namespace aigc::cpu

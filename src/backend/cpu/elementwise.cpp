// Row-wise and element-wise kernels: embeddings, residual adds, layernorm, activations, dropout.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu_backend.h"

namespace aigc::cpu {

void CpuBackend::embedding_forward(float* out, const int32_t* idx, const float* wte, const float* wpe, int64_t B,
                                   int64_t T, int64_t C, int64_t pos0) {
  parallel_range(B * T, C, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* te = wte + int64_t(idx[n]) * C;
      const float* pe = wpe ? wpe + (pos0 + n % T) * C : nullptr;
      float* o = out + n * C;
      if (pe) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[c] = te[c] + pe[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[c] = te[c];
      }
    }
  });
}

// Several rows may hit the same token, so threads split the channels, not the rows: no races, fixed order.
void CpuBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* idx, int64_t B,
                                    int64_t T, int64_t C, int64_t pos0) {
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t c0 = C * id / nt, c1 = C * (id + 1) / nt;
    for (int64_t n = 0; n < B * T; n++) {
      const float* d = dout + n * C;
      float* te = dwte ? dwte + int64_t(idx[n]) * C : nullptr;
      float* pe = dwpe ? dwpe + (pos0 + n % T) * C : nullptr;
      if (te) {
#pragma omp simd
        for (int64_t c = c0; c < c1; c++) te[c] += d[c];
      }
      if (pe) {
#pragma omp simd
        for (int64_t c = c0; c < c1; c++) pe[c] += d[c];
      }
    }
  }
}

void CpuBackend::add_forward(float* out, const float* a, const float* b, int64_t n) {
  parallel_range(n, 1, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
  });
}

void CpuBackend::accumulate(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

void CpuBackend::copy(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                   const float* b, int64_t N, int64_t C, float eps) {
  parallel_range(N, C, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* x = inp + n * C;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; c++) s += x[c];
      float m = s / float(C);
      float v = 0.0f;  // two passes: the variance does not suffer from cancellation
#pragma omp simd reduction(+ : v)
      for (int64_t c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
      float r = 1.0f / std::sqrt(v / float(C) + eps);
      float* o = out + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] = (x[c] - m) * r * w[c] + b[c];
      if (mean) mean[n] = m;
      if (rstd) rstd[n] = r;
    }
  });
}

void CpuBackend::layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                    const float* w, const float* mean, const float* rstd, int64_t N, int64_t C) {
  int nt = omp_get_max_threads();
  // Per-thread partial sums for dw/db, reduced in thread order afterwards (deterministic for a thread count).
  std::vector<float> part(size_t(nt) * 2 * size_t(C), 0.0f);
#pragma omp parallel num_threads(nt)
  {
    int id = omp_get_thread_num();
    float* pdw = part.data() + size_t(id) * 2 * C;
    float* pdb = pdw + C;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* d = dout + n * C;
      float m = mean[n], r = rstd[n];
      float sum_dn = 0.0f, sum_dn_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_dn, sum_dn_xhat)
      for (int64_t c = 0; c < C; c++) {
        float xhat = (x[c] - m) * r;
        float dn = d[c] * w[c];
        sum_dn += dn;
        sum_dn_xhat += dn * xhat;
      }
      sum_dn /= float(C);
      sum_dn_xhat /= float(C);
      float* dx = dinp + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        float xhat = (x[c] - m) * r;
        pdw[c] += d[c] * xhat;
        pdb[c] += d[c];
        dx[c] += (d[c] * w[c] - sum_dn - xhat * sum_dn_xhat) * r;
      }
    }
  }
  for (int t = 0; t < nt; t++) {
    const float* pdw = part.data() + size_t(t) * 2 * C;
    for (int64_t c = 0; c < C; c++) {
      if (dw) dw[c] += pdw[c];
      if (db) db[c] += pdw[C + c];
    }
  }
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), with tanh(u) = 1 - 2 / (1 + e^{2u}).
static constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
static constexpr float kGeluA = 0.044715f;

void CpuBackend::gelu_forward(float* out, const float* inp, int64_t n) {
  parallel_range(n, 1, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
      float x = inp[i];
      float u = kGeluS * (x + kGeluA * x * x * x);
      float th = 1.0f - 2.0f / (1.0f + exp_vec(2.0f * u));
      out[i] = 0.5f * x * (1.0f + th);
    }
  });
}

void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = kGeluS * (x + kGeluA * x * x * x);
    float th = 1.0f - 2.0f / (1.0f + exp_vec(2.0f * u));
    float du = kGeluS * (1.0f + 3.0f * kGeluA * x * x);
    float g = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
    dinp[i] += g * dout[i];
  }
}

void CpuBackend::relu_forward(float* out, const float* inp, int64_t n) {
  parallel_range(n, 1, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
  });
}

void CpuBackend::relu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
}

// splitmix64 of (seed, index): a counter-based generator, so the mask does not depend on the thread count.
static inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void CpuBackend::dropout_forward(float* out, float* mask, const float* inp, int64_t n, float p, uint64_t seed) {
  float keep_scale = 1.0f / (1.0f - p);
  uint64_t base = mix64(seed);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    double u = double(mix64(base ^ uint64_t(i)) >> 11) * (1.0 / 9007199254740992.0);
    mask[i] = u < double(p) ? 0.0f : keep_scale;
    out[i] = inp[i] * mask[i];
  }
}

void CpuBackend::mul_backward(float* dinp, const float* dout, const float* mask, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}

}  // namespace aigc::cpu

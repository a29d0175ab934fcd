// Kernels of the image models (GAN, diffusion): LeakyReLU, tanh, sigmoid, batch normalization and the binary
// cross-entropy on logits. Plain loops; OpenMP over elements or channels.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu_backend.h"

namespace aigc::cpu {

namespace {
inline float tanh_of(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }
}  // namespace

void CpuBackend::leaky_relu_forward(float* out, const float* inp, int64_t n, float slope) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}

void CpuBackend::leaky_relu_backward(float* dinp, const float* inp, const float* dout, int64_t n, float slope) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : slope * dout[i];
}

void CpuBackend::tanh_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = tanh_of(inp[i]);
}

void CpuBackend::tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float t = tanh_of(inp[i]);
    dinp[i] += (1.0f - t * t) * dout[i];
  }
}

void CpuBackend::sigmoid_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) out[i] = sigmoid(inp[i]);
}

void CpuBackend::sigmoid_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float s = sigmoid(inp[i]);
    dinp[i] += s * (1.0f - s) * dout[i];
  }
}

// Per-channel statistics in double (N*HW can be large) with a fixed order per channel: deterministic.
void CpuBackend::batchnorm_forward(float* out, float* mean, float* var, const float* inp, const float* w,
                                   const float* b, int64_t N, int64_t C, int64_t HW, float eps, bool training) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; c++) {
    float m, v;
    if (training) {
      double s = 0, ss = 0;
      for (int64_t n = 0; n < N; n++) {
        const float* x = inp + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) s += x[i];
      }
      const double mu = s / double(N * HW);
      for (int64_t n = 0; n < N; n++) {
        const float* x = inp + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; i++) ss += (x[i] - mu) * (x[i] - mu);
      }
      m = float(mu), v = float(ss / double(N * HW));
      mean[c] = m, var[c] = v;
    } else {
      m = mean[c], v = var[c];
    }
    const float scale = (w ? w[c] : 1.0f) / std::sqrt(v + eps), shift = (b ? b[c] : 0.0f) - m * scale;
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + (n * C + c) * HW;
      float* o = out + (n * C + c) * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; i++) o[i] = x[i] * scale + shift;
    }
  }
}

void CpuBackend::batchnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                    const float* w, const float* mean, const float* var, int64_t N, int64_t C,
                                    int64_t HW, float eps, bool training) {
  const double M = double(N * HW);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; c++) {
    const float m = mean[c], rstd = 1.0f / std::sqrt(var[c] + eps);
    double sum_d = 0, sum_dx = 0;  // sum(dout), sum(dout * xhat)
    for (int64_t n = 0; n < N; n++) {
      const float *x = inp + (n * C + c) * HW, *d = dout + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; i++) sum_d += d[i], sum_dx += double(d[i]) * (x[i] - m) * rstd;
    }
    if (dw) dw[c] += float(sum_dx);
    if (db) db[c] += float(sum_d);
    if (!dinp) continue;
    // Training: dx = w rstd (dout - mean(dout) - xhat mean(dout xhat)); the batch statistics depend on x.
    // Evaluation: the statistics are constants, dx = w rstd dout.
    const float k = (w ? w[c] : 1.0f) * rstd;
    const float md = training ? float(sum_d / M) : 0.0f, mdx = training ? float(sum_dx / M) : 0.0f;
    for (int64_t n = 0; n < N; n++) {
      const float *x = inp + (n * C + c) * HW, *d = dout + (n * C + c) * HW;
      float* g = dinp + (n * C + c) * HW;
#pragma omp simd
      for (int64_t i = 0; i < HW; i++) g[i] += k * (d[i] - md - (x[i] - m) * rstd * mdx);
    }
  }
}

void CpuBackend::batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var,
                                          int64_t C, int64_t count, float momentum) {
  const float unbias = count > 1 ? float(count) / float(count - 1) : 1.0f;
  for (int64_t c = 0; c < C; c++) {
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * var[c] * unbias;
  }
}

void CpuBackend::concat_channels_forward(float* out, const float* a, const float* b, int64_t N, int64_t Ca, int64_t Cb,
                                         int64_t S) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    float* o = out + n * (Ca + Cb) * S;
    std::copy(a + n * Ca * S, a + (n + 1) * Ca * S, o);
    std::copy(b + n * Cb * S, b + (n + 1) * Cb * S, o + Ca * S);
  }
}

void CpuBackend::concat_channels_backward(float* da, float* db, const float* dout, int64_t N, int64_t Ca, int64_t Cb,
                                          int64_t S, bool a_acc, bool b_acc) {
  auto slice = [](float* dst, const float* src, int64_t n, bool acc) {
    if (acc) {
#pragma omp simd
      for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    } else {
      std::memcpy(dst, src, size_t(n) * sizeof(float));
    }
  };
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* d = dout + n * (Ca + Cb) * S;
    if (da) slice(da + n * Ca * S, d, Ca * S, a_acc);
    if (db) slice(db + n * Cb * S, d + Ca * S, Cb * S, b_acc);
  }
}

double CpuBackend::bce_with_logits_forward(const float* logits, const float* targets, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; i++) {  // sequential: a fixed summation order
    const float x = logits[i];
    total += double((x > 0.0f ? x : 0.0f) - x * targets[i] + std::log1p(std::exp(-std::fabs(x))));
  }
  return total;
}

void CpuBackend::bce_with_logits_backward(float* dlogits, const float* logits, const float* targets, float scale,
                                          int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) dlogits[i] += scale * (sigmoid(logits[i]) - targets[i]);
}

}  // namespace aigc::cpu

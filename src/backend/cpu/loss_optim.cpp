// Softmax cross-entropy over the vocabulary, gradient utilities and optimizer updates over flat buffers.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "aigc/error.h"
#include "cpu_backend.h"

namespace aigc::cpu {

void CpuBackend::cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                       int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    float mx = -INFINITY;
    bool finite = true;
    for (int64_t j = 0; j < V; j++) {
      finite &= std::isfinite(x[j]);
      mx = x[j] > mx ? x[j] : mx;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < V; j++) sum += exp_vec(x[j] - mx);
    float l = finite ? mx + std::log(sum) : NAN;  // a non-finite logit must surface as a NaN loss
    lse[n] = l;
    losses[n] = targets[n] < 0 ? 0.0f : l - x[targets[n]];
  }
}

void CpuBackend::cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                        float scale, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    const float* x = logits + n * V;
    float* d = dlogits + n * V;
    float l = lse[n];
#pragma omp simd
    for (int64_t j = 0; j < V; j++) d[j] += scale * exp_vec(x[j] - l);
    d[targets[n]] -= scale;
  }
}

double CpuBackend::sum_squares(const float* x, int64_t n) {
  // Fixed-size chunks summed in order: the result does not depend on the thread count.
  const int64_t chunk = 1 << 16;
  int64_t nchunks = (n + chunk - 1) / chunk;
  std::vector<double> part(size_t(nchunks), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t e = std::min(n, (c + 1) * chunk);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = c * chunk; i < e; i++) s += x[i] * x[i];
    part[size_t(c)] = s;
  }
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}

void CpuBackend::scale(float* x, float s, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

bool CpuBackend::all_finite(const float* x, int64_t n) {
  int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
  for (int64_t i = 0; i < n; i++) bad |= !std::isfinite(x[i]);
  return !bad;
}

void CpuBackend::adam_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, bool decoupled, int64_t t) {
  // PyTorch's formulation: p -= lr * m_hat / (sqrt(v_hat) + eps), with the bias corrections folded as below.
  const float bc1 = float(1.0 - std::pow(double(beta1), double(t)));
  const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(double(beta2), double(t))));
  const float step = lr / bc1;
  const float decay = decoupled ? 1.0f - lr * weight_decay : 1.0f;
  const float l2 = decoupled ? 0.0f : weight_decay;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] + l2 * p[i];
    float pi = p[i] * decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    p[i] = pi - step * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

void CpuBackend::sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
                            float weight_decay, bool first_step) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] + weight_decay * p[i];
    if (momentum != 0.0f) {
      buf[i] = first_step ? gi : momentum * buf[i] + gi;  // PyTorch: the first step copies the gradient
      gi = buf[i];
    }
    p[i] -= lr * gi;
  }
}

}  // namespace aigc::cpu

namespace aigc {

Backend& cpu_backend() {
  static cpu::CpuBackend& b = *new cpu::CpuBackend;  // never destroyed: static tensors release into it at exit
  return b;
}

Backend& backend_for(Device d) {
  AIGC_CHECK(d == Device::CPU, "this build of aigc has no CUDA backend");
  return cpu_backend();
}

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}
int get_num_threads() { return omp_get_max_threads(); }

}  // namespace aigc

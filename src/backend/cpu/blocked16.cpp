// Inference kernels on the Blocked16 layout, (N, C/16, HW, 16): each pixel holds 16 consecutive channels, so
// every loop below runs over a pixel's 16 lanes at once (one AVX-512 vector). Same results as the plain kernels
// up to the order of floating-point sums (group normalization's statistics).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_backend.h"

namespace aigc::cpu {

namespace {
constexpr int64_t kB = 16;  // channels per block
}

// Two passes over the input. First, per (sample, channel): the sum of (x - k) and of (x - k)^2 with k the
// channel's first value (as the plain kernel shifts by a value of the group, for accuracy), in float lanes over
// up to 256 pixels at a time, the totals in double. The group's mean and variance then come from its channels'
// in double: the variance of a group is the mean over its channels of (channel variance + (channel mean - group
// mean)^2). Second, the affine normalization (and SiLU) of every element.
void CpuBackend::groupnorm_forward_blocked16(float* out, const float* inp, const float* w, const float* b, int64_t N,
                                             int64_t C, int64_t HW, int64_t G, float eps, bool silu) {
  const int64_t CB = C / kB, cpg = C / G;
  std::vector<double> mean_c(size_t(N * C)), var_c(size_t(N * C));
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < N * CB; nb++) {
    const float* x = inp + nb * HW * kB;
    float k[kB];
    double s[kB] = {}, ss[kB] = {};
    for (int64_t j = 0; j < kB; j++) k[j] = x[j];
    for (int64_t i0 = 0; i0 < HW; i0 += 256) {
      float a[kB] = {}, b2[kB] = {};
      for (int64_t i = i0; i < std::min(i0 + 256, HW); i++) {
#pragma omp simd
        for (int64_t j = 0; j < kB; j++) {
          const float d = x[i * kB + j] - k[j];
          a[j] += d, b2[j] += d * d;
        }
      }
      for (int64_t j = 0; j < kB; j++) s[j] += a[j], ss[j] += b2[j];
    }
    for (int64_t j = 0; j < kB; j++) {
      const double m = s[j] / double(HW);
      mean_c[size_t(nb * kB + j)] = double(k[j]) + m;
      var_c[size_t(nb * kB + j)] = std::max(0.0, ss[j] / double(HW) - m * m);
    }
  }
  // Per (sample, channel): out = x * scale + shift.
  std::vector<float> scale(size_t(N * C)), shift(size_t(N * C));
  for (int64_t ng = 0; ng < N * G; ng++) {
    const int64_t c0 = (ng / G) * C + (ng % G) * cpg;  // the group's first channel in mean_c
    double m = 0, v = 0;
    for (int64_t c = c0; c < c0 + cpg; c++) m += mean_c[size_t(c)];
    m /= double(cpg);
    for (int64_t c = c0; c < c0 + cpg; c++) {
      const double d = mean_c[size_t(c)] - m;
      v += var_c[size_t(c)] + d * d;
    }
    const float r = float(1.0 / std::sqrt(v / double(cpg) + double(eps))), mf = float(m);
    for (int64_t c = c0; c < c0 + cpg; c++) {
      const int64_t ch = c % C;
      scale[size_t(c)] = (w ? w[ch] : 1.0f) * r;
      shift[size_t(c)] = (b ? b[ch] : 0.0f) - mf * scale[size_t(c)];
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < N * CB; nb++) {
    const float *x = inp + nb * HW * kB, *sc = scale.data() + nb * kB, *sh = shift.data() + nb * kB;
    float* o = out + nb * HW * kB;
    for (int64_t i = 0; i < HW; i++) {
      if (silu) {
#pragma omp simd
        for (int64_t j = 0; j < kB; j++) {
          const float y = x[i * kB + j] * sc[j] + sh[j];
          o[i * kB + j] = y * sigmoid(y);
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < kB; j++) o[i * kB + j] = x[i * kB + j] * sc[j] + sh[j];
      }
    }
  }
}

// A (H, W) image of 16-channel pixels per (sample, block): the plain kernel's loop with 16-float pixels.
void CpuBackend::upsample_nearest_blocked16(float* out, const float* inp, int64_t N, int64_t C, int64_t H, int64_t W,
                                            int64_t f) {
  upsample_nearest_rows<kB>(out, inp, N * (C / kB) * H, W, f);
}

void CpuBackend::add_channelwise_blocked16(float* out, const float* x, const float* v, int64_t N, int64_t C,
                                           int64_t HW) {
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < N * (C / kB); nb++) {
    const float* vb = v + nb * kB;  // v (N, C): block nb's 16 channels are consecutive
    const float* xb = x + nb * HW * kB;
    float* ob = out + nb * HW * kB;
    for (int64_t i = 0; i < HW; i++) {
#pragma omp simd
      for (int64_t j = 0; j < kB; j++) ob[i * kB + j] = xb[i * kB + j] + vb[j];
    }
  }
}

}  // namespace aigc::cpu

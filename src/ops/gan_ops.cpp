// Front doors of the ops the GAN objectives need beyond the layers: gradient penalties (with leaky_relu_grad and
// slice_channels, the backward forms that grad_graph records) and spectral normalization.
#include <cmath>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::grad_of;

Tensor leaky_relu_grad(const Tensor& x, const Tensor& g, float slope) {
  check_f32(x, "leaky_relu_grad", "x");
  check_f32(g, "leaky_relu_grad", "gradient");
  AIGC_CHECK(x.numel() == g.numel(), "leaky_relu_grad: x " + shape_str(x.shape()) + " and gradient " +
                                         shape_str(g.shape()) + " differ in size");
  Tensor out = Tensor::zeros(g.shape());
  be(x).leaky_relu_backward(out.f32(), x.f32(), g.f32(), g.numel(), slope);
  // Linear in g; the slope is piecewise constant in x, so x gets no gradient (zero almost everywhere).
  if (needs_grad({&g}))
    record(
        out, {&g},
        [out, x, g, slope] { be(x).leaky_relu_backward(grad_of(g), x.f32(), out.grad().f32(), g.numel(), slope); },
        "leaky_relu_grad",
        [x, slope](const Tensor& gout, const std::vector<bool>&) {
          return std::vector<Tensor>{leaky_relu_grad(x, gout, slope)};
        });
  return out;
}

Tensor slice_channels(const Tensor& x, int64_t start, int64_t len) {
  check_f32(x, "slice_channels", "input");
  AIGC_CHECK(x.dim() >= 2, "slice_channels: input must be (N, C, ...), got " + shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(N * C, 1);
  AIGC_CHECK(len >= 1 && start >= 0 && start + len <= C && (start == 0 || start + len == C),
             "slice_channels: channels [" + std::to_string(start) + ", " + std::to_string(start + len) +
                 ") must be a leading or trailing block of " + std::to_string(C));
  Shape shape = x.shape();
  shape[1] = len;
  Tensor out = Tensor::empty(shape);
  const bool head = start == 0;
  const int64_t Ca = head ? len : start, Cb = C - Ca;
  be(x).concat_channels_backward(head ? out.f32() : nullptr, head ? nullptr : out.f32(), x.f32(), N, Ca, Cb, S, false,
                                 false);
  // The gradient is the slice's gradient with zeros for the other channels: concat_channels with a zero block.
  auto pad = [Ca, Cb, head](const Tensor& g) {
    Shape zs = g.shape();
    zs[1] = head ? Cb : Ca;
    return head ? concat_channels(g, Tensor::zeros(zs)) : concat_channels(Tensor::zeros(zs), g);
  };
  if (needs_grad({&x}))
    record(
        out, {&x},
        [out, x, pad] {
          NoGradGuard ng;
          Tensor full = pad(out.grad());
          be(x).accumulate(grad_of(x), full.f32(), x.numel());
        },
        "slice_channels", [pad](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{pad(g)}; });
  return out;
}

Tensor gradient_penalty(const Tensor& g, float center) {
  check_f32(g, "gradient_penalty", "gradient");
  AIGC_CHECK(g.dim() >= 1 && g.numel() > 0, "gradient_penalty: gradient must be a non-empty (N, ...)");
  AIGC_CHECK(center >= 0, "gradient_penalty: center must be >= 0");
  const int64_t N = g.size(0), D = g.numel() / N;
  // Each row's squared norm as its squared distance to zero (the MSE kernel's sum).
  const std::vector<float> zeros(size_t(D), 0.0f);
  std::vector<double> norm(static_cast<size_t>(N));
  double sum = 0;
  for (int64_t n = 0; n < N; n++) {
    norm[size_t(n)] = std::sqrt(be(g).mse_forward(g.f32() + n * D, zeros.data(), D));
    sum += (norm[size_t(n)] - center) * (norm[size_t(n)] - center);
  }
  Tensor out = Tensor::from_vector({float(sum / double(N))}, {1});
  if (needs_grad({&g}))
    record(
        out, {&g},
        [out, g, norm, center, N, D] {  // d/dg[n] = 2 (|g[n]| - c) g[n] / |g[n]| / N
          const double d = out.grad().item();
          std::vector<float> a(static_cast<size_t>(N));
          for (size_t n = 0; n < a.size(); n++) {
            const double r = norm[n] > 0 ? (norm[n] - center) / norm[n] : (center == 0 ? 1.0 : 0.0);
            a[n] = float(2.0 * d * r / double(N));
          }
          be(g).combine_rows(grad_of(g), a.data(), g.f32(), nullptr, nullptr, N, D, true);
        },
        "gradient_penalty");
  return out;
}

Tensor spectral_normalize(const Tensor& w, const Tensor& u, const Tensor& v, float* sigma_out) {
  check_f32(w, "spectral_normalize", "weight");
  check_f32(u, "spectral_normalize", "u");
  check_f32(v, "spectral_normalize", "v");
  AIGC_CHECK(w.dim() >= 2 && u.numel() == w.size(0) && v.numel() * w.size(0) == w.numel(),
             "spectral_normalize: weight " + shape_str(w.shape()) + " needs u of " + std::to_string(w.size(0)) +
                 " and v of " + std::to_string(w.numel() / std::max<int64_t>(w.size(0), 1)) + " elements");
  AIGC_CHECK(!u.requires_grad() && !v.requires_grad(), "spectral_normalize: u and v are constants (no gradient)");
  const int64_t R = w.size(0), K = w.numel() / R, n = w.numel();
  // sigma = u . (W v): W v as a (R x K) (K x 1) product, then its dot with u as (1 x R) (R x 1).
  Tensor wv = Tensor::empty({R}), s = Tensor::empty({1});
  be(w).gemm(false, false, R, 1, K, 1.0f, w.f32(), K, v.f32(), 1, 0.0f, wv.f32(), 1);
  be(w).gemm(false, false, 1, 1, R, 1.0f, u.f32(), R, wv.f32(), 1, 0.0f, s.f32(), 1);
  const float sigma = s.item();
  AIGC_CHECK(std::isfinite(sigma) && sigma != 0,
             "spectral_normalize: sigma is " + std::to_string(sigma) + " (a zero or non-finite weight?)");
  if (sigma_out) *sigma_out = sigma;
  Tensor out = Tensor::empty(w.shape());
  const float inv = 1.0f / sigma;
  be(w).combine_rows(out.f32(), &inv, w.f32(), nullptr, nullptr, 1, n, false);
  if (needs_grad({&w}))
    record(
        out, {&w},
        [out, w, u, v, sigma, inv, R, K, n] {  // dW += dout / sigma - (dout . W) / sigma^2 u v^T
          const float* d = out.grad().f32();
          float* dw = grad_of(w);
          Tensor dot = Tensor::empty({1});
          be(w).gemm(false, false, 1, 1, n, 1.0f, d, n, w.f32(), 1, 0.0f, dot.f32(), 1);
          be(w).combine_rows(dw, &inv, d, nullptr, nullptr, 1, n, true);
          be(w).gemm(false, false, R, K, 1, -dot.item() / (sigma * sigma), u.f32(), 1, v.f32(), K, 1.0f, dw, K);
        },
        "spectral_normalize");
  return out;
}

}  // namespace aigc::ops

// Front doors of the diffusion U-Net's layers: SiLU, group normalization, nearest upsampling, transposes for
// attention over image positions, the per-sample channel add of the time embedding, the timestep embedding,
// per-sample linear combinations and the MSE loss.
#include <algorithm>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::grad_of;
using detail::grad_to_write;

Tensor silu(const Tensor& x) { return detail::activation(x, &Backend::silu_forward, &Backend::silu_backward, "silu"); }

Tensor group_norm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t groups, float eps, bool silu) {
  detail::check_f32_any_layout(x, "group_norm", "input");
  AIGC_CHECK(x.dim() >= 2, "group_norm: input must be (N, C, ...), got " + shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(N * C, 1);
  AIGC_CHECK(groups >= 1 && C % groups == 0,
             "group_norm: " + std::to_string(C) + " channels do not split into " + std::to_string(groups) + " groups");
  for (const Tensor* t : {&w, &b})
    if (t->defined()) {
      check_f32(*t, "group_norm", "affine parameter");
      AIGC_CHECK(t->numel() == C, "group_norm: per-channel tensors must have C elements");
    }
  if (x.layout() == Layout::Blocked16) {
    detail::check_blocked_inference(x, "group_norm", {&x, &w, &b});
    Tensor out = detail::empty_in(x.shape(), Layout::Blocked16);
    be(x).groupnorm_forward_blocked16(out.f32(), x.f32(), w.defined() ? w.f32() : nullptr,
                                      b.defined() ? b.f32() : nullptr, N, C, HW, groups, eps, silu);
    return out;
  }
  Tensor out = Tensor::empty(x.shape()), mean = Tensor::empty({N * groups}), rstd = Tensor::empty({N * groups});
  be(x).groupnorm_forward(out.f32(), mean.f32(), rstd.f32(), x.f32(), w.defined() ? w.f32() : nullptr,
                          b.defined() ? b.f32() : nullptr, N, C, HW, groups, eps, silu);
  if (needs_grad({&x, &w, &b}))
    record(
        out, {&x, &w, &b},
        [out, x, w, b, mean, rstd, N, C, HW, groups, silu] {
          bool acc;
          float* gx = grad_to_write(x, &acc);
          be(x).groupnorm_backward(gx, grad_of(w), grad_of(b), out.grad().f32(), x.f32(),
                                   w.defined() ? w.f32() : nullptr, b.defined() ? b.f32() : nullptr, mean.f32(),
                                   rstd.f32(), N, C, HW, groups, silu, acc);
        },
        "group_norm");
  return out;
}

Tensor upsample_nearest(const Tensor& x, int64_t f) {
  detail::check_f32_any_layout(x, "upsample_nearest", "input");
  AIGC_CHECK(x.dim() == 4, "upsample_nearest: input must be (N, C, H, W), got " + shape_str(x.shape()));
  AIGC_CHECK(f >= 1 && f <= 16, "upsample_nearest: factor must be in [1, 16]");
  const int64_t NC = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  if (x.layout() == Layout::Blocked16) {
    detail::check_blocked_inference(x, "upsample_nearest", {&x});
    Tensor out = detail::empty_in({x.size(0), x.size(1), H * f, W * f}, Layout::Blocked16);
    be(x).upsample_nearest_blocked16(out.f32(), x.f32(), x.size(0), x.size(1), H, W, f);
    return out;
  }
  Tensor out = Tensor::empty({x.size(0), x.size(1), H * f, W * f});
  be(x).upsample_nearest_forward(out.f32(), x.f32(), NC, H, W, f);
  if (needs_grad({&x}))
    record(
        out, {&x},
        [out, x, NC, H, W, f] { be(x).upsample_nearest_backward(grad_of(x), out.grad().f32(), NC, H, W, f); },
        "upsample_nearest");
  return out;
}

Tensor transpose_last2(const Tensor& x) {
  check_f32(x, "transpose_last2", "input");
  AIGC_CHECK(x.dim() == 3, "transpose_last2: input must be (B, N, M), got " + shape_str(x.shape()));
  const int64_t B = x.size(0), N = x.size(1), M = x.size(2);
  Tensor out = Tensor::empty({B, M, N});
  be(x).transpose_last2(out.f32(), x.f32(), B, N, M, false);
  if (needs_grad({&x}))
    record(
        out, {&x}, [out, x, B, N, M] { be(x).transpose_last2(grad_of(x), out.grad().f32(), B, M, N, true); },
        "transpose_last2");
  return out;
}

Tensor add_channelwise(const Tensor& x, const Tensor& v) {
  detail::check_f32_any_layout(x, "add_channelwise", "x");
  check_f32(v, "add_channelwise", "v");
  AIGC_CHECK(
      x.dim() >= 2 && v.dim() == 2 && v.size(0) == x.size(0) && v.size(1) == x.size(1),
      "add_channelwise: need x (B, C, ...) and v (B, C), got " + shape_str(x.shape()) + " and " + shape_str(v.shape()));
  // Every (sample, channel) plane gets its own value: the channel-bias kernel with B*C "channels".
  const int64_t BC = x.size(0) * x.size(1), S = x.numel() / std::max<int64_t>(BC, 1);
  if (x.layout() == Layout::Blocked16) {
    detail::check_blocked_inference(x, "add_channelwise", {&x, &v});
    Tensor out = detail::empty_in(x.shape(), Layout::Blocked16);
    be(x).add_channelwise_blocked16(out.f32(), x.f32(), v.f32(), x.size(0), x.size(1), S);
    return out;
  }
  Tensor out = Tensor::empty(x.shape());
  be(x).channel_bias_add(out.f32(), x.f32(), v.f32(), 1, BC, S);
  if (needs_grad({&x, &v}))
    record(
        out, {&x, &v},
        [out, x, v, BC, S] {
          if (float* dx = grad_of(x)) be(x).accumulate(dx, out.grad().f32(), x.numel());
          if (float* dv = grad_of(v)) be(x).channel_bias_backward(dv, out.grad().f32(), 1, BC, S);
        },
        "add_channelwise");
  return out;
}

Tensor timestep_embedding(const Tensor& t, int64_t dim, float max_period) {
  check_f32(t, "timestep_embedding", "timesteps");
  AIGC_CHECK(t.dim() == 1, "timestep_embedding: timesteps must be (B)");
  AIGC_CHECK(dim >= 4 && dim % 2 == 0, "timestep_embedding: dim must be even and at least 4");
  Tensor out = Tensor::empty({t.size(0), dim});
  be(t).timestep_embedding(out.f32(), t.f32(), t.size(0), dim, max_period);
  return out;
}

Tensor combine_rows(const std::vector<float>& a, const Tensor& x, const std::vector<float>& b, const Tensor& y) {
  check_f32(x, "combine_rows", "x");
  const int64_t N = x.size(0), S = x.numel() / std::max<int64_t>(N, 1);
  AIGC_CHECK(int64_t(a.size()) == N, "combine_rows: need one coefficient a per sample");
  AIGC_CHECK(b.empty() == !y.defined(), "combine_rows: y and b go together");
  if (y.defined()) {
    check_f32(y, "combine_rows", "y");
    AIGC_CHECK(y.shape() == x.shape() && int64_t(b.size()) == N,
               "combine_rows: x and y must have the same shape, "
               "and b one coefficient per sample");
  }
  Tensor out = Tensor::empty(x.shape());
  be(x).combine_rows(out.f32(), a.data(), x.f32(), b.empty() ? nullptr : b.data(), y.defined() ? y.f32() : nullptr, N,
                     S, false);
  if (needs_grad({&x, &y}))
    record(
        out, {&x, &y},
        [out, x, y, a, b, N, S] {  // d x += a dout, d y += b dout
          if (float* dx = grad_of(x)) be(x).combine_rows(dx, a.data(), out.grad().f32(), nullptr, nullptr, N, S, true);
          if (float* dy = grad_of(y)) be(x).combine_rows(dy, b.data(), out.grad().f32(), nullptr, nullptr, N, S, true);
        },
        "combine_rows",
        [a, b, x](const Tensor& g, const std::vector<bool>& need) {
          return std::vector<Tensor>{need[0] ? combine_rows(a, g.view(x.shape()), {}, Tensor()) : Tensor(),
                                     need[1] ? combine_rows(b, g.view(x.shape()), {}, Tensor()) : Tensor()};
        });
  return out;
}

Tensor clamp(const Tensor& x, float lo, float hi) {
  check_f32(x, "clamp", "input");
  AIGC_CHECK(!needs_grad({&x}), "clamp: has no gradient; call it under NoGradGuard");
  Tensor out = Tensor::empty(x.shape());
  be(x).clamp(out.f32(), x.f32(), x.numel(), lo, hi);
  return out;
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_f32(pred, "mse_loss", "prediction");
  check_f32(target, "mse_loss", "target");
  AIGC_CHECK(pred.shape() == target.shape() && pred.numel() > 0, "mse_loss: prediction " + shape_str(pred.shape()) +
                                                                     " and target " + shape_str(target.shape()) +
                                                                     " must have the same non-empty shape");
  const int64_t n = pred.numel();
  Tensor out = Tensor::from_vector({float(be(pred).mse_forward(pred.f32(), target.f32(), n) / double(n))}, {1});
  if (needs_grad({&pred, &target}))
    record(
        out, {&pred, &target},
        [out, pred, target, n] {
          be(pred).mse_backward(grad_of(pred), grad_of(target), pred.f32(), target.f32(), out.grad().item() / float(n),
                                n);
        },
        "mse_loss");
  return out;
}

}  // namespace aigc::ops

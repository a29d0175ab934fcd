// Front doors of the image-model layers: LeakyReLU, tanh, sigmoid, batch normalization and the binary
// cross-entropy on logits.
#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::grad_of;
using detail::grad_to_write;

Tensor leaky_relu(const Tensor& x, float slope) {
  check_f32(x, "leaky_relu", "input");
  Tensor out = Tensor::empty(x.shape());
  be(x).leaky_relu_forward(out.f32(), x.f32(), x.numel(), slope);
  if (needs_grad({&x}))
    record(
        out, {&x},
        [out, x, slope] { be(x).leaky_relu_backward(grad_of(x), x.f32(), out.grad().f32(), x.numel(), slope); },
        "leaky_relu",
        [x, slope](const Tensor& g, const std::vector<bool>&) {
          return std::vector<Tensor>{leaky_relu_grad(x, g, slope)};
        });
  return out;
}

using detail::activation;

Tensor tanh(const Tensor& x) { return activation(x, &Backend::tanh_forward, &Backend::tanh_backward, "tanh"); }
Tensor sigmoid(const Tensor& x) {
  return activation(x, &Backend::sigmoid_forward, &Backend::sigmoid_backward, "sigmoid");
}

Tensor batch_norm2d(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean, Tensor& running_var,
                    bool training, float momentum, float eps) {
  check_f32(x, "batch_norm2d", "input");
  AIGC_CHECK(x.dim() == 4 || x.dim() == 2,
             "batch_norm2d: input must be (N, C, H, W) or (N, C), got " + shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(N * C, 1);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&w, &b, &running_mean, &running_var})
    if (t->defined()) AIGC_CHECK(t->numel() == C, "batch_norm2d: per-channel tensors must have C elements");
  AIGC_CHECK(running_mean.defined() && running_var.defined(), "batch_norm2d: running statistics are required");
  AIGC_CHECK(!training || N * HW > 1, "batch_norm2d: training needs more than one value per channel");
  Tensor out = Tensor::empty(x.shape());
  const float* wp = w.defined() ? w.f32() : nullptr;
  const float* bp = b.defined() ? b.f32() : nullptr;
  if (!training) {
    be(x).batchnorm_forward(out.f32(), running_mean.f32(), running_var.f32(), x.f32(), wp, bp, N, C, HW, eps, false);
    if (needs_grad({&x, &w, &b})) {
      Tensor m = running_mean, v = running_var;  // the statistics in use now, shared (not copied)
      record(
          out, {&x, &w, &b},
          [out, x, w, b, m, v, N, C, HW, eps] {
            be(x).batchnorm_backward(grad_of(x), grad_of(w), grad_of(b), out.grad().f32(), x.f32(),
                                     w.defined() ? w.f32() : nullptr, m.f32(), v.f32(), N, C, HW, eps, false);
          },
          "batch_norm2d");
    }
    return out;
  }
  Tensor mean = Tensor::empty({C}), var = Tensor::empty({C});
  be(x).batchnorm_forward(out.f32(), mean.f32(), var.f32(), x.f32(), wp, bp, N, C, HW, eps, true);
  be(x).batchnorm_update_running(running_mean.f32(), running_var.f32(), mean.f32(), var.f32(), C, N * HW, momentum);
  if (needs_grad({&x, &w, &b}))
    record(
        out, {&x, &w, &b},
        [out, x, w, b, mean, var, N, C, HW, eps] {
          be(x).batchnorm_backward(grad_of(x), grad_of(w), grad_of(b), out.grad().f32(), x.f32(),
                                   w.defined() ? w.f32() : nullptr, mean.f32(), var.f32(), N, C, HW, eps, true);
        },
        "batch_norm2d");
  return out;
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  detail::check_f32_any_layout(a, "concat_channels", "a");
  detail::check_f32_any_layout(b, "concat_channels", "b");
  AIGC_CHECK(a.layout() == b.layout(),
             "concat_channels: one input is blocked, the other plain (ops::to_blocked, ops::to_plain)");
  detail::check_blocked_inference(a, "concat_channels", {&a, &b});
  detail::check_blocked_inference(b, "concat_channels", {&a, &b});
  AIGC_CHECK(a.dim() >= 2 && a.dim() == b.dim() && a.size(0) == b.size(0),
             "concat_channels: inputs must agree in rank and batch, got " + shape_str(a.shape()) + " and " +
                 shape_str(b.shape()));
  for (int64_t d = 2; d < a.dim(); d++)
    AIGC_CHECK(a.size(d) == b.size(d),
               "concat_channels: inputs differ beyond dim 1: " + shape_str(a.shape()) + " and " + shape_str(b.shape()));
  const int64_t N = a.size(0), Ca = a.size(1), Cb = b.size(1), S = a.numel() / std::max<int64_t>(N * Ca, 1);
  Shape shape = a.shape();
  shape[1] = Ca + Cb;
  // Per sample, a's channels then b's: in the blocked layout too, as both hold whole blocks of 16.
  Tensor out = detail::empty_in(shape, a.layout());
  be(a).concat_channels_forward(out.f32(), a.f32(), b.f32(), N, Ca, Cb, S);
  if (needs_grad({&a, &b}))
    record(
        out, {&a, &b},
        [out, a, b, N, Ca, Cb, S] {
          bool a_acc, b_acc;
          float* ga = grad_to_write(a, &a_acc);
          float* gb = grad_to_write(b, &b_acc);
          be(a).concat_channels_backward(ga, gb, out.grad().f32(), N, Ca, Cb, S, a_acc, b_acc);
        },
        "concat_channels",
        [Ca, Cb](const Tensor& g, const std::vector<bool>& need) {
          return std::vector<Tensor>{need[0] ? slice_channels(g, 0, Ca) : Tensor(),
                                     need[1] ? slice_channels(g, Ca, Cb) : Tensor()};
        });
  return out;
}

std::vector<Tensor> split_last(const Tensor& x, const std::vector<int64_t>& sizes) {
  check_f32(x, "split_last", "input");
  AIGC_CHECK(!needs_grad({&x}), "split_last: for inference; run it under NoGradGuard");
  int64_t total = 0;
  for (int64_t s : sizes) {
    AIGC_CHECK(s > 0, "split_last: sizes must be positive");
    total += s;
  }
  AIGC_CHECK(x.dim() >= 1 && x.size(-1) == total,
             "split_last: sizes add up to " + std::to_string(total) + ", the last dim of " + shape_str(x.shape()));
  const int64_t N = x.numel() / total;
  std::vector<Tensor> out;
  Tensor rest = x;  // what is left of each row
  int64_t left = total, at = 0;
  for (size_t i = 0; i < sizes.size(); i++) {
    Shape shape = x.shape();
    shape.back() = sizes[i];
    if (N == 1) {  // one row (contiguous: check_f32): each piece a part of it, made at once (decoding splits)
      auto piece = std::make_shared<TensorImpl>();
      piece->storage = x.impl()->storage;
      piece->offset = x.impl()->offset + at;
      piece->shape = shape;
      piece->strides = contiguous_strides(shape);
      out.push_back(Tensor(std::move(piece)));
    } else if (i + 1 == sizes.size()) {
      out.push_back(rest);
    } else {  // the piece, and the rest of each row (a split in two, as concat_channels' gradient is)
      Shape rest_shape = x.shape();
      rest_shape.back() = left - sizes[i];
      Tensor piece = Tensor::empty(shape), next = Tensor::empty(rest_shape);
      be(x).concat_channels_backward(piece.f32(), next.f32(), rest.f32(), N, sizes[i], left - sizes[i], 1, false,
                                     false);
      out.push_back(piece);
      rest = next;
    }
    at += sizes[i], left -= sizes[i];
  }
  return out;
}

Tensor bce_with_logits(const Tensor& logits, const Tensor& targets) {
  check_f32(logits, "bce_with_logits", "logits");
  check_f32(targets, "bce_with_logits", "targets");
  AIGC_CHECK(logits.numel() == targets.numel() && logits.numel() > 0,
             "bce_with_logits: logits and targets must have the same, non-zero number of elements");
  const int64_t n = logits.numel();
  double total = be(logits).bce_with_logits_forward(logits.f32(), targets.f32(), n);
  Tensor out = Tensor::from_vector({float(total / double(n))}, {1});
  if (needs_grad({&logits}))
    record(
        out, {&logits},
        [out, logits, targets, n] {
          float scale = out.grad().item() / float(n);
          be(logits).bce_with_logits_backward(grad_of(logits), logits.f32(), targets.f32(), scale, n);
        },
        "bce_with_logits");
  return out;
}

}  // namespace aigc::ops

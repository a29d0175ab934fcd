// Convolution front doors. A transposed convolution (the generator's upsampling layer) is the adjoint of a
// convolution: its forward pass is a convolution's backward-data pass, its input gradient is a convolution's
// forward pass, and its weight gradient is a convolution's weight gradient with input and output swapped. So
// both layers run on the same three backend kernels.
#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::check_f32_any_layout;
using detail::grad_of;
using detail::grad_to_write;

namespace {

void check_conv_args(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  check_f32_any_layout(x, op, "input");
  check_f32(w, op, "weight");
  AIGC_CHECK(x.dim() == 4, std::string(op) + ": input must be (N, C, H, W), got " + shape_str(x.shape()));
  AIGC_CHECK(w.dim() == 4, std::string(op) + ": weight must be 4-D, got " + shape_str(w.shape()));
  AIGC_CHECK(o.stride >= 1 && o.dilation >= 1 && o.padding >= 0 && o.groups >= 1,
             std::string(op) + ": stride and dilation must be >= 1, padding >= 0, groups >= 1");
  if (b.defined()) check_f32(b, op, "bias");
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  check_conv_args("conv2d", x, w, b, o);
  const int64_t G = o.groups, C_in = x.size(1), C_out = w.size(0);
  AIGC_CHECK(C_in % G == 0 && C_out % G == 0, "conv2d: channels (" + std::to_string(C_in) + " in, " +
                                                  std::to_string(C_out) + " out) must divide by groups " +
                                                  std::to_string(G));
  AIGC_CHECK(w.size(1) == C_in / G, "conv2d: weight " + shape_str(w.shape()) + " expects " +
                                        std::to_string(w.size(1) * G) + " input channels, input has " +
                                        std::to_string(C_in));
  if (b.defined()) AIGC_CHECK(b.numel() == C_out, "conv2d: bias must have C_out elements");
  ConvShape s{x.size(0), C_in, x.size(2), x.size(3), C_out, w.size(2), w.size(3)};
  s.stride_h = s.stride_w = o.stride, s.pad_h = s.pad_w = o.padding, s.dil_h = s.dil_w = o.dilation, s.groups = G;
  AIGC_CHECK(s.out_h() >= 1 && s.out_w() >= 1, "conv2d: the kernel does not fit the padded " + std::to_string(s.H) +
                                                   "x" + std::to_string(s.W) + " input");
  // A blocked input gives a blocked output, unless C_out does not fill whole blocks (an image's few channels).
  detail::check_blocked_inference(x, "conv2d", {&x, &w, &b});
  s.src_blocked = x.layout() == Layout::Blocked16;
  s.dst_blocked = (s.src_blocked || o.blocked_output) && C_out % 16 == 0;
  AIGC_CHECK((!s.src_blocked && !s.dst_blocked) || G == 1, "conv2d: grouped convolutions take plain tensors only");
  Tensor out = detail::empty_in({s.N, C_out, s.out_h(), s.out_w()}, s.dst_blocked ? Layout::Blocked16 : Layout::Plain);
  if (o.blocked_output) detail::check_blockable(out, "conv2d", {&x, &w, &b});  // asked for: whole blocks, no gradient
  be(x).conv2d_forward(out.f32(), x.f32(), w.f32(), b.defined() ? b.f32() : nullptr, s, false);
  if (needs_grad({&x, &w, &b})) {
    record(
        out, {&x, &w, &b},
        [out, x, w, b, s] {
          bool acc;
          float* gx = grad_to_write(x, &acc);
          be(x).conv2d_backward(gx, grad_of(w), grad_of(b), out.grad().f32(), x.f32(), w.f32(), s, acc);
        },
        "conv2d",
        [x, w, o, s](const Tensor& g, const std::vector<bool>& need) {
          detail::refuse_param_grad("conv2d", need);
          // d/dx is the adjoint convolution of g; output_padding restores the rows the stride dropped.
          Conv2dOptions t = o;
          t.output_padding = s.H - ((s.out_h() - 1) * s.stride_h - 2 * s.pad_h + s.dil_h * (s.KH - 1) + 1);
          const int64_t pad_w = s.W - ((s.out_w() - 1) * s.stride_w - 2 * s.pad_w + s.dil_w * (s.KW - 1) + 1);
          AIGC_CHECK(pad_w == t.output_padding, "grad_graph: conv2d drops different rows and columns; not supported");
          return std::vector<Tensor>{conv_transpose2d(g, w, Tensor(), t), Tensor(), Tensor()};
        });
  }
  return out;
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  check_conv_args("conv_transpose2d", x, w, b, o);
  check_f32(x, "conv_transpose2d", "input");  // plain only
  const int64_t G = o.groups, C_in = x.size(1), C_out = w.size(1) * G;
  AIGC_CHECK(w.size(0) == C_in && C_in % G == 0, "conv_transpose2d: weight " + shape_str(w.shape()) +
                                                     " must be (C_in = " + std::to_string(C_in) +
                                                     ", C_out / groups, KH, KW)");
  AIGC_CHECK(o.output_padding >= 0 && (o.output_padding < o.stride || o.output_padding < o.dilation),
             "conv_transpose2d: output_padding must be smaller than stride or dilation");
  if (b.defined()) AIGC_CHECK(b.numel() == C_out, "conv_transpose2d: bias must have C_out elements");
  const int64_t KH = w.size(2), KW = w.size(3), H = x.size(2), W = x.size(3);
  const int64_t OH = (H - 1) * o.stride - 2 * o.padding + o.dilation * (KH - 1) + o.output_padding + 1;
  const int64_t OW = (W - 1) * o.stride - 2 * o.padding + o.dilation * (KW - 1) + o.output_padding + 1;
  AIGC_CHECK(OH >= 1 && OW >= 1, "conv_transpose2d: the output would be empty");
  // The adjoint convolution maps our output (N, C_out, OH, OW) to our input (N, C_in, H, W).
  ConvShape s{x.size(0), C_out, OH, OW, C_in, KH, KW};
  s.stride_h = s.stride_w = o.stride, s.pad_h = s.pad_w = o.padding, s.dil_h = s.dil_w = o.dilation, s.groups = G;
  Tensor out = Tensor::empty({s.N, C_out, OH, OW});
  be(x).conv2d_backward_data(out.f32(), x.f32(), w.f32(), s, false);
  if (b.defined()) be(x).channel_bias_add(out.f32(), out.f32(), b.f32(), s.N, C_out, OH * OW);
  if (needs_grad({&x, &w, &b})) {
    record(
        out, {&x, &w, &b},
        [out, x, w, b, s] {
          const float* dout = out.grad().f32();
          bool acc;
          if (float* gx = grad_to_write(x, &acc)) be(x).conv2d_forward(gx, dout, w.f32(), nullptr, s, acc);
          if (float* gw = grad_of(w)) be(x).conv2d_backward_weights(gw, nullptr, x.f32(), dout, s);
          if (float* gb = grad_of(b)) be(x).channel_bias_backward(gb, dout, s.N, s.C_in, s.H * s.W);
        },
        "conv_transpose2d",
        [w, o](const Tensor& g, const std::vector<bool>& need) {
          detail::refuse_param_grad("conv_transpose2d", need);
          Conv2dOptions t = o;
          t.output_padding = 0;
          return std::vector<Tensor>{conv2d(g, w, Tensor(), t), Tensor(), Tensor()};
        });
  }
  return out;
}

// Between the layouts: per (sample, block of 16 channels), a (16, HW) plane is transposed to (HW, 16) and back.
Tensor to_blocked(const Tensor& x) {
  check_f32_any_layout(x, "to_blocked", "input");
  if (x.layout() == Layout::Blocked16) return x;
  detail::check_blockable(x, "to_blocked", {&x});
  Tensor out = detail::empty_in(x.shape(), Layout::Blocked16);
  be(x).transpose_last2(out.f32(), x.f32(), x.size(0) * x.size(1) / 16, 16, x.size(2) * x.size(3), false);
  return out;
}

Tensor to_plain(const Tensor& x) {
  check_f32_any_layout(x, "to_plain", "input");
  if (x.layout() == Layout::Plain) return x;
  Tensor out = Tensor::empty(x.shape());
  be(x).transpose_last2(out.f32(), x.f32(), x.size(0) * x.size(1) / 16, x.size(2) * x.size(3), 16, false);
  return out;
}

}  // namespace aigc::ops

// Helpers shared by the op front doors (ops.cpp, conv_ops.cpp).
#pragma once
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/tensor.h"

namespace aigc::ops::detail {

// An f32 input of an op that also takes the Blocked16 layout (conv2d, group_norm, add, add_channelwise,
// concat_channels, upsample_nearest); every other op checks with check_f32, which refuses it.
inline void check_f32_any_layout(const Tensor& t, const char* op, const char* what) {
  AIGC_CHECK(t.defined(), std::string(op) + ": " + what + " is undefined");
  AIGC_CHECK(t.dtype() == DType::F32, std::string(op) + ": " + what + " must be f32");
  AIGC_CHECK(t.is_contiguous(), std::string(op) + ": " + what + " must be contiguous");
}

inline void check_f32(const Tensor& t, const char* op, const char* what) {
  check_f32_any_layout(t, op, what);
  AIGC_CHECK(t.layout() == Layout::Plain,
             std::string(op) + ": " + what + " is in the blocked layout, which this op does not take (ops::to_plain)");
}

// Blocked16 tensors are for inference: the op must not be recorded, and x's channels come in whole blocks.
inline void check_blockable(const Tensor& x, const char* op, std::initializer_list<const Tensor*> inputs) {
  AIGC_CHECK(!needs_grad(inputs), std::string(op) + ": blocked-layout tensors are for inference (NoGradGuard)");
  AIGC_CHECK(x.dim() == 4 && x.size(1) % 16 == 0, std::string(op) + ": a blocked tensor must be (N, C, H, W) with C " +
                                                      "a multiple of 16, got " + shape_str(x.shape()));
}
inline void check_blocked_inference(const Tensor& x, const char* op, std::initializer_list<const Tensor*> inputs) {
  if (x.layout() == Layout::Blocked16) check_blockable(x, op, inputs);
}

// A new tensor in the given layout.
inline Tensor empty_in(const Shape& shape, Layout layout) {
  Tensor t = Tensor::empty(shape);
  t.impl()->layout = layout;
  return t;
}

// Gradient buffer of an input, or null when that input does not take gradients.
inline float* grad_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  Tensor tt = t;
  return tt.ensure_grad().f32();
}

// For kernels that write every element of an input's gradient: the first gradient to reach t gets a new,
// uninitialized buffer that the kernel assigns (*accumulate = false: no zero fill, and no read of zeros); later
// ones add into it. Null when t takes no gradient.
inline float* grad_to_write(const Tensor& t, bool* accumulate) {
  *accumulate = true;
  if (!t.defined() || !t.requires_grad()) return nullptr;
  Tensor tt = t;
  if (!tt.grad().defined()) {
    tt.set_grad(Tensor::empty(tt.shape(), DType::F32, tt.device()));
    *accumulate = false;
  }
  return tt.grad().f32();
}

// For grad_graph: the ops that have a differentiable backward give it for their input only; their parameters
// (inputs 1.. : weight, bias) are constants there.
inline void refuse_param_grad(const char* op, const std::vector<bool>& need) {
  for (size_t i = 1; i < need.size(); i++)
    AIGC_CHECK(!need[i], std::string("grad_graph: ") + op + "'s weight and bias gradients are not differentiable; " +
                             "ask for the gradients of its input");
}

inline Backend& be(const Tensor& t) { return backend_for(t.device()); }

// An element-wise op whose backward kernel reads the input: out = fwd(x), dx += bwd(x, dout).
using ActFwd = void (Backend::*)(float*, const float*, int64_t);
using ActBwd = void (Backend::*)(float*, const float*, const float*, int64_t);
inline Tensor activation(const Tensor& x, ActFwd fwd, ActBwd bwd, const char* name) {
  check_f32(x, name, "input");
  Tensor out = Tensor::empty(x.shape());
  (be(x).*fwd)(out.f32(), x.f32(), x.numel());
  if (needs_grad({&x}))
    record(
        out, {&x}, [out, x, bwd] { (be(x).*bwd)(grad_of(x), x.f32(), out.grad().f32(), x.numel()); }, name);
  return out;
}

}  // namespace aigc::ops::detail

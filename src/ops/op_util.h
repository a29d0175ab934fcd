// Helpers shared by the op front doors (ops.cpp, conv_ops.cpp).
#pragma once
#include <string>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/tensor.h"

namespace aigc::ops::detail {

inline void check_f32(const Tensor& t, const char* op, const char* what) {
  AIGC_CHECK(t.defined(), std::string(op) + ": " + what + " is undefined");
  AIGC_CHECK(t.dtype() == DType::F32, std::string(op) + ": " + what + " must be f32");
  AIGC_CHECK(t.is_contiguous(), std::string(op) + ": " + what + " must be contiguous");
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

inline Backend& be(const Tensor& t) { return backend_for(t.device()); }

// An element-wise op whose backward kernel reads the input: out = fwd(x), dx += bwd(x, dout).
using ActFwd = void (Backend::*)(float*, const float*, int64_t);
using ActBwd = void (Backend::*)(float*, const float*, const float*, int64_t);
inline Tensor activation(const Tensor& x, ActFwd fwd, ActBwd bwd, const char* name) {
  check_f32(x, name, "input");
  Tensor out = Tensor::empty(x.shape());
  (be(x).*fwd)(out.f32(), x.f32(), x.numel());
  if (needs_grad({&x}))
    record(out, [out, x, bwd] { (be(x).*bwd)(grad_of(x), x.f32(), out.grad().f32(), x.numel()); });
  return out;
}

}  // namespace aigc::ops::detail

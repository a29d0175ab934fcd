// Helpers shared by the op front doors (ops.cpp, conv_ops.cpp).
#pragma once
#include <string>

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

inline Backend& be(const Tensor& t) { return backend_for(t.device()); }

}  // namespace aigc::ops::detail

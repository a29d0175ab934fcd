// Finite-difference gradient checks for ops: the analytic gradient of sum(f() * dout) against central differences.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/tensor.h"
#include "test_util.h"

namespace aigc::testing {

inline Tensor copy(const Tensor& t) { return Tensor::from_vector(t.to_vector(), t.shape()); }

// Runs f with sum(out * dout) flowing back into the inputs that take gradients; returns out.
inline Tensor run_backward(const std::function<Tensor()>& f, const Tensor& dout) {
  Tensor out = f();
  aigc::testing::backward_from(out, dout.to_vector());
  return out;
}

// (loss(p + h) - loss(p - h)) / 2h for one element p of an input; p is restored.
inline double central_difference(float& p, float h, const std::function<double()>& loss) {
  const float orig = p;
  p = orig + h;
  const double lp = loss();
  p = orig - h;
  const double lm = loss();
  p = orig;
  return (lp - lm) / (2.0 * h);
}

// Central differences of sum(f() * dout) against each input's analytic gradient.
inline void grad_check(const std::function<Tensor()>& f, std::vector<Tensor> inputs, const Tensor& dout,
                       double tol = 2e-2, float h = 1e-2f) {
  for (Tensor& t : inputs) t.set_requires_grad(true), t.set_grad(Tensor());  // fresh gradients per check
  run_backward(f, dout);
  std::vector<float> R = dout.to_vector();
  auto loss = [&] {
    NoGradGuard ng;
    std::vector<float> o = f().to_vector();
    double s = 0;
    for (size_t i = 0; i < o.size(); i++) s += double(o[i]) * R[i];
    return s;
  };
  for (size_t k = 0; k < inputs.size(); k++) {
    std::vector<float> g = inputs[k].grad().to_vector();
    float* p = inputs[k].f32();
    for (int64_t i = 0; i < inputs[k].numel(); i++) {
      const double num = central_difference(p[i], h, loss);
      ASSERT_NEAR(g[size_t(i)], num, tol * std::max(1.0, std::abs(num))) << "input " << k << " element " << i;
    }
  }
}

}  // namespace aigc::testing

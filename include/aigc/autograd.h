// Reverse-mode autograd over a tape: each differentiable op, when it runs with grad mode on and some input
// requires grad, appends a closure that adds its inputs' gradients (reading its output's gradient).
// backward() runs the closures newest-first, then clears the tape (freeing the saved activations).
#pragma once
#include <functional>

#include "aigc/tensor.h"

namespace aigc {

bool grad_enabled();

// Turns recording off for a scope (inference, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when an op on these inputs must be recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Marks `out` as requiring grad and records `fn` as its backward step.
void record(Tensor& out, std::function<void()> fn);

// Seeds d(loss)/d(loss) = scale and runs the tape. loss must be a one-element tensor.
void backward(const Tensor& loss, float scale = 1.0f);

// Drops recorded steps without running them (e.g. after an evaluation forward with grad on).
void clear_tape();
size_t tape_size();

}  // namespace aigc

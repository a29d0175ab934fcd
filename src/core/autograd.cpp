#include "aigc/autograd.h"

#include <vector>

#include "aigc/error.h"

namespace aigc {

namespace {
thread_local bool g_grad_enabled = true;
thread_local std::vector<std::function<void()>> g_tape;
}  // namespace

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

void record(Tensor& out, std::function<void()> fn) {
  out.set_requires_grad(true);
  // An output that never reached the loss has no gradient: its step has nothing to propagate.
  g_tape.push_back([o = out, fn = std::move(fn)] {
    if (o.grad().defined()) fn();
  });
}

void backward(const Tensor& loss, float scale) {
  AIGC_CHECK(loss.numel() == 1, "backward() needs a scalar loss, got shape " + shape_str(loss.shape()));
  AIGC_CHECK(loss.requires_grad(), "backward(): the loss does not depend on any parameter that requires grad");
  Tensor l = loss;
  l.ensure_grad().f32()[0] += scale;
  // Steps may not record new steps; take the tape so a throwing step still leaves it empty.
  std::vector<std::function<void()>> tape;
  tape.swap(g_tape);
  NoGradGuard ng;
  for (size_t i = tape.size(); i-- > 0;) {
    tape[i]();
    tape[i] = nullptr;  // free saved activations as soon as possible
  }
}

void clear_tape() { g_tape.clear(); }
size_t tape_size() { return g_tape.size(); }

}  // namespace aigc

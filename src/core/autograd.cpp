#include "aigc/autograd.h"

#include <algorithm>
#include <array>
#include <vector>

#include "aigc/error.h"

namespace aigc {

namespace {

// Where one recorded step adds gradients: the element spans of its inputs' gradient buffers that existed when
// it was recorded (parameters' gradients always do: they are views of the flat buffer).
struct Span {
  const float* lo = nullptr;
  const float* hi = nullptr;
};
struct Step {
  std::function<void()> fn;
  std::array<Span, 4> spans;
  uint8_t n_spans = 0;
};

thread_local bool g_grad_enabled = true;
thread_local std::vector<Step> g_tape;
thread_local const GradWatch* g_watch = nullptr;

// Views are contiguous (view, narrow0), so a gradient spans numel elements from its start.
Span span_of(const Tensor& g) { return {g.f32(), g.f32() + g.numel()}; }

// For each bucket, the index of the oldest step that adds into it (SIZE_MAX: none does).
std::vector<size_t> oldest_writer(const GradWatch& w, const std::vector<Step>& tape) {
  const size_t n_buckets = w.bounds.size() - 1;
  std::vector<size_t> first(n_buckets, SIZE_MAX);
  const float* end = w.base + w.bounds.back();
  for (size_t i = tape.size(); i-- > 0;)
    for (uint8_t k = 0; k < tape[i].n_spans; k++) {
      const Span& s = tape[i].spans[k];
      if (s.hi <= w.base || s.lo >= end) continue;
      const int64_t lo = std::max<int64_t>(0, s.lo - w.base), hi = std::min<int64_t>(w.bounds.back(), s.hi - w.base);
      // Buckets overlapping [lo, hi): bounds is ascending.
      size_t b = size_t(std::upper_bound(w.bounds.begin(), w.bounds.end(), lo) - w.bounds.begin()) - 1;
      for (; b < n_buckets && w.bounds[b] < hi; b++) first[b] = i;
    }
  return first;
}

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

void record(Tensor& out, std::initializer_list<const Tensor*> inputs, std::function<void()> fn) {
  out.set_requires_grad(true);
  Step step;
  // An output that never reached the loss has no gradient: its step has nothing to propagate.
  step.fn = [o = out, fn = std::move(fn)] {
    if (o.grad().defined()) fn();
  };
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad() && t->grad().defined() && step.n_spans < step.spans.size())
      step.spans[step.n_spans++] = span_of(t->grad());
  g_tape.push_back(std::move(step));
}

void set_grad_watch(const GradWatch* watch) { g_watch = watch; }

void backward(const Tensor& loss, float scale) {
  AIGC_CHECK(loss.numel() == 1, "backward() needs a scalar loss, got shape " + shape_str(loss.shape()));
  AIGC_CHECK(loss.requires_grad(), "backward(): the loss does not depend on any parameter that requires grad");
  Tensor l = loss;
  l.ensure_grad().f32()[0] += scale;
  // Steps may not record new steps; take the tape so a throwing step still leaves it empty.
  std::vector<Step> tape;
  tape.swap(g_tape);
  NoGradGuard ng;
  const GradWatch* w = g_watch;
  // final_after[i]: the buckets that step i is the last to write.
  std::vector<std::vector<size_t>> final_after;
  if (w && w->bounds.size() >= 2) {
    final_after.resize(tape.size());
    const std::vector<size_t> first = oldest_writer(*w, tape);
    for (size_t b = 0; b < first.size(); b++)
      if (first[b] == SIZE_MAX) w->on_final(b);
    for (size_t b = 0; b < first.size(); b++)
      if (first[b] != SIZE_MAX) final_after[first[b]].push_back(b);
  }
  for (size_t i = tape.size(); i-- > 0;) {
    tape[i].fn();
    tape[i].fn = nullptr;  // free saved activations as soon as possible
    if (!final_after.empty())
      for (size_t b : final_after[i]) w->on_final(b);
  }
}

void clear_tape() { g_tape.clear(); }
size_t tape_size() { return g_tape.size(); }

}  // namespace aigc

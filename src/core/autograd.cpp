#include "aigc/autograd.h"

#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <vector>

#include "aigc/error.h"
#include "aigc/ops.h"

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
  // For grad_graph: the op's name, output, inputs and differentiable backward (may be empty).
  const char* op = "";
  Tensor out;
  std::vector<Tensor> inputs;
  GraphBackward graph;
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

void record(Tensor& out, std::initializer_list<const Tensor*> inputs, std::function<void()> fn, const char* op,
            GraphBackward graph) {
  out.set_requires_grad(true);
  Step step;
  step.op = op, step.out = out, step.graph = std::move(graph);
  for (const Tensor* t : inputs) step.inputs.push_back(t ? *t : Tensor());
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
    tape[i] = Step();  // free saved activations as soon as possible
    if (!final_after.empty())
      for (size_t b : final_after[i]) w->on_final(b);
  }
}

namespace {

// A tensor's identity for grad_graph: its first element and size. A view (reshape) of a tensor is the same
// tensor; a view of part of one is not, and is refused where it would carry a gradient.
struct Key {
  const float* lo = nullptr;
  int64_t n = 0;
  bool operator<(const Key& o) const { return lo != o.lo ? lo < o.lo : n < o.n; }
  bool operator==(const Key& o) const { return lo == o.lo && n == o.n; }
};
Key key_of(const Tensor& t) { return {t.f32(), t.numel()}; }

}  // namespace

std::vector<Tensor> grad_graph(const Tensor& out, const Tensor& seed, const std::vector<Tensor>& inputs) {
  AIGC_CHECK(g_grad_enabled, "grad_graph: grad mode is off (NoGradGuard); the gradients must be recorded");
  AIGC_CHECK(out.defined() && out.requires_grad(), "grad_graph: out does not require grad");
  AIGC_CHECK(seed.defined() && seed.numel() == out.numel(),
             "grad_graph: seed must have out's " + std::to_string(out.numel()) + " elements");
  // Forward over the tape: the tensors that depend on the inputs, and the steps on a path from them.
  std::vector<Key> dep;
  auto depends = [&](const Tensor& t) {
    if (!t.defined() || !t.requires_grad() || t.dtype() != DType::F32) return false;
    const Key k = key_of(t);
    for (const Key& d : dep) {
      if (d == k) return true;
      AIGC_CHECK(k.lo + k.n <= d.lo || d.lo + d.n <= k.lo,
                 "grad_graph: a partial view of a tensor on the path to the inputs is not supported");
    }
    return false;
  };
  for (const Tensor& t : inputs) {
    AIGC_CHECK(t.defined() && t.requires_grad() && t.dtype() == DType::F32,
               "grad_graph: every input must be an f32 tensor that requires grad");
    if (!depends(t)) dep.push_back(key_of(t));
  }
  const size_t n_steps = g_tape.size();
  std::vector<bool> on_path(n_steps, false);
  for (size_t i = 0; i < n_steps; i++)
    for (const Tensor& t : g_tape[i].inputs)
      if (depends(t)) {
        on_path[i] = true;
        if (!depends(g_tape[i].out)) dep.push_back(key_of(g_tape[i].out));
        break;
      }
  // Backward over those steps, newest first, with ops: the gradient steps are appended to the tape.
  std::map<Key, Tensor> grads;
  auto add_grad = [&](const Tensor& t, const Tensor& g) {
    Tensor& slot = grads[key_of(t)];
    Tensor gv = g.view(t.shape());
    slot = slot.defined() ? ops::add(slot.view(t.shape()), gv) : gv;
  };
  if (depends(out)) add_grad(out, seed);
  for (size_t i = n_steps; i-- > 0;) {
    if (!on_path[i]) continue;
    // Copies: the ops below append to the tape, which may move its steps.
    const Tensor step_out = g_tape[i].out;
    const std::vector<Tensor> step_in = g_tape[i].inputs;
    const GraphBackward graph = g_tape[i].graph;
    const std::string op = g_tape[i].op;
    auto it = grads.find(key_of(step_out));
    if (it == grads.end()) continue;  // on a path from the inputs, but not to `out`
    AIGC_CHECK(graph, "grad_graph: " + op + " has no differentiable backward (create_graph)");
    std::vector<bool> need;
    for (const Tensor& t : step_in) need.push_back(depends(t));
    const std::vector<Tensor> gin = graph(it->second.view(step_out.shape()), need);
    for (size_t k = 0; k < step_in.size(); k++)
      if (need[k] && k < gin.size() && gin[k].defined()) add_grad(step_in[k], gin[k]);
  }
  std::vector<Tensor> result;
  for (const Tensor& t : inputs) {
    auto it = grads.find(key_of(t));
    result.push_back(it != grads.end() ? it->second.view(t.shape()) : Tensor::zeros(t.shape()));
  }
  return result;
}

void clear_tape() { g_tape.clear(); }
size_t tape_size() { return g_tape.size(); }

}  // namespace aigc

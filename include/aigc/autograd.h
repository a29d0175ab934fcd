// Reverse-mode autograd over a tape: each differentiable op, when it runs with grad mode on and some input
// requires grad, appends a closure that adds its inputs' gradients (reading its output's gradient).
// backward() runs the closures newest-first, then clears the tape (freeing the saved activations).
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

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

// A step's backward written with ops, so that it is itself recorded (PyTorch's create_graph): given d/d(out),
// a tensor that may require grad, it returns d/d(inputs[i]) for each i with need[i] (undefined for the rest).
using GraphBackward = std::function<std::vector<Tensor>(const Tensor& gout, const std::vector<bool>& need)>;

// Marks `out` as requiring grad and records `fn` as its backward step, which adds into the gradients of
// `inputs` (the tape notes where those live, for GradWatch). `op` names the op in errors; `graph` is its
// differentiable backward, for the ops that have one (see grad_graph).
void record(Tensor& out, std::initializer_list<const Tensor*> inputs, std::function<void()> fn,
            const char* op = "an op", GraphBackward graph = nullptr);

// Seeds d(loss)/d(loss) = scale and runs the tape. loss must be a one-element tensor.
void backward(const Tensor& loss, float scale = 1.0f);

// Gradients of sum(out * seed) with respect to `inputs`, as tensors that are themselves recorded on the tape
// (torch.autograd.grad(out, inputs, seed, create_graph=True)): a loss built from them backpropagates through the
// backward pass too, as gradient penalties need. The steps that made `out` stay on the tape for the next
// backward(). Every op between the inputs and `out` must have a differentiable backward (conv2d,
// conv_transpose2d, linear, leaky_relu, add, concat_channels, slice_channels, combine_rows and views; the
// others are refused by name). Parameters reached from `out` are constants here: asking for a layer's weight
// gradient is refused. An input that `out` does not depend on gets zeros.
std::vector<Tensor> grad_graph(const Tensor& out, const Tensor& seed, const std::vector<Tensor>& inputs);

// Lets data-parallel training start reducing gradients while backward still runs (as PyTorch DDP's buckets
// do). A watch names a flat gradient buffer (ParamStore::grad()) cut into buckets; backward() calls
// on_final(b) as soon as no step left on the tape can add into bucket b (at once for a bucket no step
// touches). Steps run newest-first, so a bucket is final after the oldest step that adds into it.
struct GradWatch {
  const float* base = nullptr;
  std::vector<int64_t> bounds;  // bucket b is elements [bounds[b], bounds[b + 1]) of base
  std::function<void(size_t bucket)> on_final;
};
// Watches the next backward() calls on this thread; nullptr stops.
void set_grad_watch(const GradWatch* watch);

// Drops recorded steps without running them (e.g. after an evaluation forward with grad on).
void clear_tape();
size_t tape_size();

}  // namespace aigc

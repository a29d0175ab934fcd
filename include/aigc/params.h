// ParamStore: every parameter of a model lives in one flat buffer, and every gradient in another, so the
// optimizer, gradient clipping, checkpointing and (later) all-reduce each touch one contiguous array.
// Parameters are declared first (name, shape), then finalize() allocates the buffers and binds the views.
// The gradient buffer is allocated on first use (ensure_grads), so inference never pays for it.
#pragma once
#include <string>
#include <vector>

#include "aigc/tensor.h"

namespace aigc {

struct Param {
  std::string name;
  Tensor value;    // a view into data(); its grad is a view into grad()
  int64_t offset;  // in elements, within the flat buffers
  bool decay;      // weight decay applies (matrices and embeddings; not biases or norm gains)
};

class ParamStore {
 public:
  // Declares a parameter; the returned tensor becomes usable after finalize().
  Tensor add(const std::string& name, const Shape& shape, bool decay);
  // zero: fill the values with zeros; else leave them unset (untouched memory costs nothing until written).
  void finalize(bool zero = true);

  const std::vector<Param>& params() const { return params_; }
  const Param* find(const std::string& name) const;
  int64_t numel() const { return total_; }
  float* data() const { return data_.f32(); }
  Device device() const { return data_.defined() ? data_.device() : Device::CPU; }  // where both buffers live
  float* grad() const;  // allocates (zeroed) gradients on first use
  void ensure_grads() const;
  bool has_grads() const { return grad_.defined(); }
  void zero_grad();

 private:
  std::vector<Param> params_;
  int64_t total_ = 0;
  Tensor data_;
  mutable Tensor grad_;
};

}  // namespace aigc

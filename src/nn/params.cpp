#include "aigc/params.h"

#include <cstring>

#include "aigc/backend.h"
#include "aigc/error.h"

namespace aigc {

Tensor ParamStore::add(const std::string& name, const Shape& shape, bool decay) {
  AIGC_CHECK(!data_.defined(), "ParamStore: cannot add '" + name + "' after finalize()");
  AIGC_CHECK(find(name) == nullptr, "ParamStore: duplicate parameter name '" + name + "'");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->requires_grad = true;
  // Keep offsets 16-element aligned so each parameter starts on a 64-byte boundary.
  int64_t offset = (total_ + 15) / 16 * 16;
  params_.push_back({name, Tensor(impl), offset, decay});
  total_ = offset + numel_of(shape);
  return params_.back().value;
}

void ParamStore::finalize(bool zero) {
  AIGC_CHECK(!data_.defined(), "ParamStore: finalize() called twice");
  data_ = zero ? Tensor::zeros({total_}) : Tensor::empty({total_});
  for (Param& p : params_) {
    TensorImpl* impl = p.value.impl();
    impl->storage = data_.impl()->storage;
    impl->offset = p.offset;
  }
}

void ParamStore::ensure_grads() const {
  AIGC_CHECK(data_.defined(), "ParamStore: gradients requested before finalize()");
  if (grad_.defined()) return;
  grad_ = Tensor::zeros({total_});
  for (const Param& p : params_) {
    TensorImpl* impl = p.value.impl();
    AIGC_CHECK(!impl->grad.defined(), "ParamStore: '" + p.name + "' got a gradient outside the flat buffer");
    auto g = std::make_shared<TensorImpl>(*impl);
    g->storage = grad_.impl()->storage;
    g->requires_grad = false;
    impl->grad = Tensor(g);
  }
}

float* ParamStore::grad() const {
  ensure_grads();
  return grad_.f32();
}

const Param* ParamStore::find(const std::string& name) const {
  for (const Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

void ParamStore::zero_grad() {
  if (grad_.defined())
    backend_for(grad_.device()).fill_zero(grad_.f32(), size_t(total_) * 4);
  else
    ensure_grads();
}

}  // namespace aigc

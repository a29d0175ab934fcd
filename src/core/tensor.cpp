#include "aigc/tensor.h"

#include <algorithm>
#include <cstring>

#include "aigc/backend.h"
#include "aigc/error.h"

namespace aigc {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32:
      return 4;
    case DType::I32:
      return 4;
    case DType::BF16:
      return 2;
    case DType::F16:
      return 2;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
      return 0;
  }
  return 0;
}

bool is_quantized(DType dt) { return dt == DType::Q8_0 || dt == DType::Q4_0 || dt == DType::Q4_1; }

size_t dtype_bytes(DType dt, int64_t numel) {
  if (dt == DType::Q8_0) return size_t(numel / 32) * 34;
  if (dt == DType::Q4_0) return size_t(numel / 32) * 18;
  if (dt == DType::Q4_1) return size_t(numel / 32) * 20;
  return size_t(numel) * dtype_size(dt);
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32:
      return "f32";
    case DType::I32:
      return "i32";
    case DType::BF16:
      return "bf16";
    case DType::F16:
      return "f16";
    case DType::Q8_0:
      return "q8_0";
    case DType::Q4_0:
      return "q4_0";
    case DType::Q4_1:
      return "q4_1";
  }
  return "?";
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) {
    if (i) r += ',';  // appended apart: GCC 12 warns (falsely, -Wrestrict) on "," + std::to_string(...)
    r += std::to_string(s[i]);
  }
  return r + "]";
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

// Memory belongs to the device's backend (its allocator, its cache): Storage only asks and gives back.
Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  if (n == 0) return;
  data = backend_for(dev).alloc(n);
  AIGC_CHECK(data,
             "out of memory allocating " + std::to_string(n) + " bytes on the " + backend_for(dev).name() + " backend");
}

Storage::Storage(std::shared_ptr<Storage> w, size_t offset, size_t n)
    : data(static_cast<char*>(w->data) + offset), nbytes(n), device(w->device), whole(std::move(w)) {
  AIGC_CHECK(offset + n <= whole->nbytes, "a part of a storage must lie inside it");
}

Storage::~Storage() {
  if (data && !whole) backend_for(device).release(data, nbytes);
}

std::vector<Tensor> Tensor::packed(const std::vector<Tensor>& ts) {
  size_t total = 0;
  for (const Tensor& t : ts) total += (dtype_bytes(t.dtype(), t.numel()) + 63) / 64 * 64;
  TensorPack pack(ts.empty() ? Device::CPU : ts[0].device(), total);  // one block for all
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(pack.add(t));
  return out;
}

std::shared_ptr<Storage> TensorPack::part(size_t bytes) {
  const size_t span = (bytes + 63) / 64 * 64;
  if (!block_ || used_ + span > block_->nbytes) {
    block_ = std::make_shared<Storage>(std::max(block_bytes_, span), device_);
    blocks_.push_back(block_);
    used_ = 0;
  }
  auto p = std::make_shared<Storage>(block_, used_, bytes);
  used_ += span;
  return p;
}

// What a new tensor's shape must be: no negative dimension, and whole 32-blocks along the last for a quantized type.
static void check_new_shape(const Shape& shape, DType dtype) {
  for (int64_t d : shape) AIGC_CHECK(d >= 0, "negative dimension in shape " + shape_str(shape));
  if (is_quantized(dtype))
    AIGC_CHECK(
        !shape.empty() && shape.back() % 32 == 0,
        std::string(dtype_name(dtype)) + " tensors need a last dimension of whole 32-blocks, got " + shape_str(shape));
}

Tensor TensorPack::reserve(const Shape& shape, DType dtype, Layout layout) {
  check_new_shape(shape, dtype);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = part(dtype_bytes(dtype, numel_of(shape)));
  impl->shape = shape, impl->strides = contiguous_strides(shape);
  impl->dtype = dtype, impl->layout = layout;
  return Tensor(impl);
}

Tensor TensorPack::add(const Tensor& t) {
  AIGC_CHECK(t.is_contiguous() && t.device() == device_, "packed: tensors must be contiguous and on one device");
  const size_t bytes = dtype_bytes(t.dtype(), t.numel());
  const Storage* s = t.impl()->storage.get();
  // Already here (reserve): the whole of one part of a block, not a view of part of it.
  if (s && s->whole && std::find(blocks_.begin(), blocks_.end(), s->whole) != blocks_.end() && t.impl()->offset == 0 &&
      s->nbytes == bytes && !t.impl()->requires_grad)
    return t;
  auto impl = std::make_shared<TensorImpl>(*t.impl());
  impl->storage = part(bytes);
  impl->offset = 0;
  impl->requires_grad = false;
  impl->grad = Tensor();
  if (bytes && device_ == Device::CPU) {
    std::memcpy(impl->storage->data, t.raw(), bytes);
  } else if (bytes) {  // through the host: any backend's memory
    Backend& be = backend_for(device_);
    std::vector<char> host(bytes);
    be.to_host(host.data(), t.raw(), bytes), be.from_host(impl->storage->data, host.data(), bytes);
  }
  return Tensor(impl);
}

static Tensor make(const Shape& shape, DType dtype, Device device, bool zero) {
  check_new_shape(shape, dtype);
  auto impl = std::make_shared<TensorImpl>();
  size_t nbytes = dtype_bytes(dtype, numel_of(shape));
  impl->storage = std::make_shared<Storage>(nbytes, device);
  if (zero && nbytes) backend_for(device).fill_zero(impl->storage->data, nbytes);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return make(shape, dtype, device, false); }
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return make(shape, dtype, device, true); }

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  AIGC_CHECK(int64_t(v.size()) == numel_of(shape), "from_vector: size does not match shape " + shape_str(shape));
  Tensor t = empty(shape);
  backend_for(t.device()).from_host(t.f32(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& v, const Shape& shape) {
  AIGC_CHECK(int64_t(v.size()) == numel_of(shape), "from_ints: size does not match shape " + shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  backend_for(t.device()).from_host(t.i32(), v.data(), v.size() * 4);
  return t;
}

const Shape& Tensor::shape() const { return impl_->shape; }
int64_t Tensor::dim() const { return int64_t(impl_->shape.size()); }
int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  AIGC_CHECK(d >= 0 && d < dim(), "dimension " + std::to_string(d) + " out of range for shape " + shape_str(shape()));
  return impl_->shape[size_t(d)];
}
int64_t Tensor::numel() const { return numel_of(impl_->shape); }
DType Tensor::dtype() const { return impl_->dtype; }
Device Tensor::device() const { return impl_->storage->device; }
bool Tensor::is_contiguous() const { return impl_->strides == contiguous_strides(impl_->shape); }
Layout Tensor::layout() const { return impl_->layout; }

void* Tensor::raw() const {
  AIGC_CHECK(!is_quantized(impl_->dtype) || impl_->offset == 0, "a view into quantized blocks cannot start mid-tensor");
  return static_cast<char*>(impl_->storage->data) + impl_->offset * int64_t(dtype_size(impl_->dtype));
}
float* Tensor::f32() const {
  AIGC_CHECK(impl_->dtype == DType::F32, std::string("expected an f32 tensor, got ") + dtype_name(impl_->dtype));
  return static_cast<float*>(raw());
}
int32_t* Tensor::i32() const {
  AIGC_CHECK(impl_->dtype == DType::I32, std::string("expected an i32 tensor, got ") + dtype_name(impl_->dtype));
  return static_cast<int32_t*>(raw());
}

Tensor Tensor::view(const Shape& shape_in) const {
  AIGC_CHECK(is_contiguous(), "view() needs a contiguous tensor");
  AIGC_CHECK(layout() == Layout::Plain, "view() needs a plain tensor, not a blocked one (ops::to_plain)");
  Shape s = shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == -1) {
      AIGC_CHECK(infer < 0, "view(): only one dimension may be -1");
      infer = int64_t(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[size_t(infer)] = known ? numel() / known : 0;
  AIGC_CHECK(numel_of(s) == numel(), "view(): cannot view " + shape_str(shape()) + " as " + shape_str(shape_in));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  // A view's gradient is a view of the base's gradient, so backward needs no copy for reshapes.
  if (impl_->requires_grad) {
    Tensor base(impl_);
    impl->grad = base.ensure_grad().view(s);
  }
  return Tensor(impl);
}

Tensor Tensor::narrow0(int64_t start, int64_t length) const {
  AIGC_CHECK(dim() >= 1 && start >= 0 && length >= 0 && start + length <= size(0),
             "narrow0: rows [" + std::to_string(start) + "," + std::to_string(start + length) + ") out of range for " +
                 shape_str(shape()));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->shape[0] = length;
  impl->offset += start * impl_->strides[0];
  if (impl_->requires_grad) {
    Tensor base(impl_);
    impl->grad = base.ensure_grad().narrow0(start, length);
  }
  return Tensor(impl);
}

std::vector<float> Tensor::to_vector() const {
  AIGC_CHECK(is_contiguous(), "to_vector() needs a contiguous tensor");
  AIGC_CHECK(layout() == Layout::Plain, "to_vector() needs a plain tensor, not a blocked one (ops::to_plain)");
  std::vector<float> v(static_cast<size_t>(numel()));
  backend_for(device()).to_host(v.data(), f32(), v.size() * 4);
  return v;
}

std::vector<int32_t> Tensor::to_ints() const {
  AIGC_CHECK(dtype() == DType::I32, "to_ints() needs an i32 tensor");
  AIGC_CHECK(is_contiguous(), "to_ints() needs a contiguous tensor");
  std::vector<int32_t> v(static_cast<size_t>(numel()));
  backend_for(device()).to_host(v.data(), i32(), v.size() * 4);
  return v;
}

float Tensor::item() const {
  AIGC_CHECK(numel() == 1, "item() needs a one-element tensor, got shape " + shape_str(shape()));
  float v = 0;
  backend_for(device()).to_host(&v, f32(), sizeof v);
  return v;
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
void Tensor::set_requires_grad(bool r) { impl_->requires_grad = r; }
Tensor Tensor::grad() const { return impl_->grad; }
void Tensor::set_grad(const Tensor& g) { impl_->grad = g; }

Tensor& Tensor::ensure_grad() {
  if (!impl_->grad.defined()) impl_->grad = Tensor::zeros(shape(), DType::F32, device());
  return impl_->grad;
}

}  // namespace aigc

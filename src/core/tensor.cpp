#include "aigc/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

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
  }
  return 0;
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

// Activations are freed and reallocated every step with the same sizes. Fresh memory from the kernel arrives as
// zeroed pages, a cost of ~10% of a training step; so freed blocks are kept in a cache keyed by exact size and
// handed out again. The cache holds at most kCacheLimit bytes.
namespace {
constexpr size_t kCacheLimit = size_t(4) << 30;
// Never destroyed: tensors in static storage may be freed after other statics are gone.
std::mutex& g_cache_mu = *new std::mutex;
std::unordered_multimap<size_t, void*>& g_cache = *new std::unordered_multimap<size_t, void*>;
size_t g_cached_bytes = 0;

void* cached_alloc(size_t rounded) {
  {
    std::lock_guard<std::mutex> lk(g_cache_mu);
    auto it = g_cache.find(rounded);
    if (it != g_cache.end()) {
      void* p = it->second;
      g_cache.erase(it);
      g_cached_bytes -= rounded;
      return p;
    }
  }
  return std::aligned_alloc(64, rounded);
}

void cached_free(void* p, size_t rounded) {
  if (!p) return;
  std::lock_guard<std::mutex> lk(g_cache_mu);
  if (g_cached_bytes + rounded > kCacheLimit) {
    std::free(p);
    return;
  }
  g_cache.emplace(rounded, p);
  g_cached_bytes += rounded;
}

size_t round_up(size_t n) { return ((n + 63) / 64) * 64; }  // 64-byte multiples, as aligned_alloc requires
}  // namespace

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  AIGC_CHECK(dev == Device::CPU, "only the CPU device is available in this build");
  data = n ? cached_alloc(round_up(n)) : nullptr;
  AIGC_CHECK(n == 0 || data, "out of memory allocating " + std::to_string(n) + " bytes");
}

Storage::~Storage() { cached_free(data, round_up(nbytes)); }

static Tensor make(const Shape& shape, DType dtype, Device device, bool zero) {
  for (int64_t d : shape) AIGC_CHECK(d >= 0, "negative dimension in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  size_t nbytes = size_t(numel_of(shape)) * dtype_size(dtype);
  impl->storage = std::make_shared<Storage>(nbytes, device);
  if (zero && nbytes) {
    // Gradient buffers of large activations are zeroed many times a step: above a few MiB, split the work
    // over the threads (one thread alone leaves the others idle for milliseconds).
    char* p = static_cast<char*>(impl->storage->data);
    constexpr size_t kChunk = size_t(1) << 20;
    const int64_t parts = int64_t((nbytes + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (parts >= 4)
    for (int64_t i = 0; i < parts; i++)
      std::memset(p + size_t(i) * kChunk, 0, std::min(kChunk, nbytes - size_t(i) * kChunk));
  }
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
  if (!v.empty()) std::memcpy(t.f32(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& v, const Shape& shape) {
  AIGC_CHECK(int64_t(v.size()) == numel_of(shape), "from_ints: size does not match shape " + shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  if (!v.empty()) std::memcpy(t.i32(), v.data(), v.size() * 4);
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
  if (!v.empty()) std::memcpy(v.data(), f32(), v.size() * 4);
  return v;
}

float Tensor::item() const {
  AIGC_CHECK(numel() == 1, "item() needs a one-element tensor, got shape " + shape_str(shape()));
  return f32()[0];
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

// Tensor: a strided view of a reference-counted storage buffer, plus the autograd fields.
// fp32 is the compute type today; DType leaves room for bf16/fp16 storage.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace aigc {

// Q8_0, Q4_0 and Q4_1: weights in ggml's blocks of 32 along the last dimension (aigc/quant.h), for inference only.
enum class DType : uint8_t { F32, BF16, F16, I32, Q8_0, Q4_0, Q4_1 };
enum class Device : uint8_t { CPU, CUDA };
// How a 4-D (N, C, H, W) tensor's elements lie in memory. Plain: row-major, as its strides say (every tensor
// unless stated otherwise). Blocked16: (N, C/16, H, W, 16), channels in blocks of 16 innermost (oneDNN's
// nChw16c): its convolutions read and write that directly, so inference keeps activations so between them
// (see ops::to_blocked). Only a few ops take it; the rest refuse it. Rows16: a quantized matrix with its rows
// interleaved in groups of 16 (aigc/quant.h), the layout the integer dot products read 16 outputs at a time
// from; only linear takes it (ops::to_rows16).
enum class Layout : uint8_t { Plain, Blocked16, Rows16 };

size_t dtype_size(DType dt);  // bytes per element; 0 for the block types
const char* dtype_name(DType dt);
bool is_quantized(DType dt);                  // Q8_0, Q4_0, Q4_1
size_t dtype_bytes(DType dt, int64_t numel);  // a tensor's bytes (block types: numel / 32 blocks)

using Shape = std::vector<int64_t>;
int64_t numel_of(const Shape& s);
std::string shape_str(const Shape& s);

// A block of device memory. Owned by the backend's allocator.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  Storage(size_t nbytes, Device device);
  // nbytes of `whole` from byte `offset`: a part that keeps the whole alive and frees nothing itself.
  Storage(std::shared_ptr<Storage> whole, size_t offset, size_t nbytes);
  ~Storage();
  std::shared_ptr<Storage> whole;  // set in a part
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. New memory is zero-filled by zeros(); empty() leaves it uninitialized.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_ints(const std::vector<int32_t>& v, const Shape& shape);
  // Copies of contiguous tensors (any dtype and layout), one after the other in a single block of memory, each
  // from a 64-byte boundary: a reader that goes from one to the next streams one allocation (on the CPU, one of
  // huge pages when it is large enough). The originals stay as they were: until the caller drops them, both are
  // held.
  static std::vector<Tensor> packed(const std::vector<Tensor>& ts);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const;
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;
  Layout layout() const;

  // Raw element pointers (with the view's offset applied).
  float* f32() const;
  int32_t* i32() const;
  void* raw() const;

  // Views sharing storage (and, for parameters, sharing the gradient buffer too).
  Tensor view(const Shape& shape) const;                // contiguous only; one dim may be -1
  Tensor narrow0(int64_t start, int64_t length) const;  // rows [start, start+length) of dim 0

  // Values on the host, copied through the device's backend (the only way tensor bytes reach the host).
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_ints() const;  // i32 tensors
  float item() const;

  // Autograd.
  bool requires_grad() const;
  void set_requires_grad(bool r);
  Tensor grad() const;    // undefined until backward touched it (or for parameters: a view of the flat grad)
  Tensor& ensure_grad();  // allocate a zero gradient if missing; returns it
  void set_grad(const Tensor& g);

  TensorImpl* impl() const { return impl_.get(); }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// packed()'s layout for tensors made one at a time: each add() copies a contiguous tensor after the previous one
// (from a 64-byte boundary) into the current block, opening a new block of block_bytes (or of the tensor's size,
// if larger) when it is full. The caller may drop each original once added, so a pack of a model's weights holds
// one of them twice at most, never all: the blocks' pages past what is added are never touched.
class TensorPack {
 public:
  TensorPack(Device device, size_t block_bytes) : device_(device), block_bytes_(block_bytes) {}
  Tensor add(const Tensor& t);  // t's copy in the pack, or t itself if it is in the pack already (reserve)
  // A new contiguous tensor in the pack, its values unset: to be made in place instead of made, then copied.
  Tensor reserve(const Shape& shape, DType dtype, Layout layout = Layout::Plain);
  Device device() const { return device_; }

 private:
  std::shared_ptr<Storage> part(size_t bytes);  // the next bytes of the pack, in a new block if they do not fit
  Device device_;
  size_t block_bytes_;
  std::shared_ptr<Storage> block_;
  std::vector<std::shared_ptr<Storage>> blocks_;  // every block made, to know a tensor already in the pack
  size_t used_ = 0;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Shape strides;
  DType dtype = DType::F32;
  Layout layout = Layout::Plain;
  bool requires_grad = false;
  Tensor grad;
};

Shape contiguous_strides(const Shape& shape);

}  // namespace aigc

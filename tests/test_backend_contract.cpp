// The backend contract beyond the kernels: each backend owns its memory (tensors get their bytes from it and
// reach the host only through it), and says which kernels and dtypes it runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>

#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/quant.h"

using namespace aigc;

TEST(BackendContract, MemoryIsTheBackendsAndCrossesToTheHostThroughIt) {
  for (Backend* be : {&cpu_backend(), &reference_backend()}) {
    SCOPED_TRACE(be->name());
    for (size_t n : {size_t(1), size_t(63), size_t(64), size_t(1000), size_t(5) << 20}) {
      void* p = be->alloc(n);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
      std::string host(n, 'x'), back(n, '\0');
      be->from_host(p, host.data(), n);
      be->to_host(back.data(), p, n);
      EXPECT_EQ(back, host);
      be->fill_zero(p, n);
      be->to_host(back.data(), p, n);
      EXPECT_EQ(back, std::string(n, '\0'));
      be->release(p, n);
    }
  }
  // Tensors: zeros are zero, and values go in and out through the device's backend.
  Tensor z = Tensor::zeros({3, 1000});
  for (float v : z.to_vector()) ASSERT_EQ(v, 0.0f);
  Tensor t = Tensor::from_vector({1.5f, -2.0f}, {2});
  EXPECT_EQ(t.to_vector(), std::vector<float>({1.5f, -2.0f}));
  EXPECT_EQ(Tensor::from_vector({7.25f}, {1}).item(), 7.25f);
  EXPECT_EQ(Tensor::from_ints({3, -1, 7}, {3}).to_ints(), std::vector<int32_t>({3, -1, 7}));
  EXPECT_EQ(&backend_for(t.device()), &cpu_backend());
}

// Blocks of 2 MiB and more start on a 2 MiB boundary on the CPU (where huge pages can back them).
TEST(BackendContract, LargeCpuBlocksStartOnHugePageBoundaries) {
  Backend& be = cpu_backend();
  for (size_t n : {size_t(2) << 20, (size_t(5) << 20) + 3}) {
    void* p = be.alloc(n);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t(2) << 20), 0u);
    be.fill_zero(p, n);  // every byte asked for is there
    be.release(p, n);
  }
}

std::string bytes_of(const Tensor& t) {
  std::string b(dtype_bytes(t.dtype(), t.numel()), '\0');
  backend_for(t.device()).to_host(b.data(), t.raw(), b.size());
  return b;
}

// Tensor::packed: copies of any dtype and layout, one after the other in one block, each on a 64-byte boundary,
// that outlive the originals and share nothing with them.
TEST(BackendContract, PackedTensorsAreCopiesInOneBlock) {
  std::vector<float> v(64 * 32);
  for (size_t i = 0; i < v.size(); i++) v[i] = float(i % 29) - 14.0f;
  const Tensor rows = Tensor::from_vector(v, {64, 32});
  std::vector<Tensor> in = {Tensor::from_vector({1.0f, 2.0f, 3.0f}, {3}), rows.narrow0(5, 2),
                            Tensor::from_ints({4, -5}, {2}), ops::to_rows16(ops::quantize(rows, DType::Q4_0))};
  const std::string q_before = bytes_of(in[3]);
  const std::vector<Tensor> out = Tensor::packed(in);
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); i++) {
    SCOPED_TRACE(i);
    EXPECT_EQ(out[i].shape(), in[i].shape());
    EXPECT_EQ(out[i].dtype(), in[i].dtype());
    EXPECT_EQ(out[i].layout(), in[i].layout());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(out[i].raw()) % 64, 0u);
    if (i > 0) EXPECT_GT(out[i].raw(), out[i - 1].raw());
  }
  EXPECT_EQ(static_cast<char*>(out[3].raw()) - static_cast<char*>(out[0].raw()), 64 + 256 + 64);  // 12, 256, 8 bytes
  in.clear();  // the copies keep their block
  EXPECT_EQ(out[0].to_vector(), std::vector<float>({1.0f, 2.0f, 3.0f}));
  EXPECT_EQ(out[1].to_vector(), std::vector<float>(v.begin() + 5 * 32, v.begin() + 7 * 32));
  EXPECT_EQ(out[2].to_ints(), std::vector<int32_t>({4, -5}));
  EXPECT_EQ(bytes_of(out[3]), q_before);
  out[1].f32()[0] = 99.0f;
  EXPECT_EQ(rows.to_vector()[5 * 32], v[5 * 32]);
}

// TensorPack: the same copies added one at a time, a new block opened when the current one is full (a tensor
// larger than a block gets its own); each original may be dropped once added.
TEST(BackendContract, TensorPackCopiesIntoBlocksAsTheyCome) {
  TensorPack pack(Device::CPU, 256);
  std::vector<Tensor> out;
  std::vector<std::vector<float>> want;
  for (int64_t n : {10, 24, 3, 100, 20}) {  // spans 64, 128, 64 bytes: one block; 448: its own; 128: a new one
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); i++) v[i] = float(n) + float(i) / 8;
    out.push_back(pack.add(Tensor::from_vector(v, {n})));  // the original is gone after this line
    want.push_back(v);
  }
  for (size_t i = 0; i < out.size(); i++) {
    EXPECT_EQ(out[i].to_vector(), want[i]) << i;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(out[i].raw()) % 64, 0u);
  }
  auto gap = [&](size_t i) { return static_cast<char*>(out[i + 1].raw()) - static_cast<char*>(out[i].raw()); };
  EXPECT_EQ(gap(0), 64);
  EXPECT_EQ(gap(1), 128);
  EXPECT_EQ(out[2].impl()->storage->whole, out[0].impl()->storage->whole);
  EXPECT_EQ(out[3].impl()->storage->whole->nbytes, 448u);  // its own block
  EXPECT_NE(out[4].impl()->storage->whole, out[3].impl()->storage->whole);
  EXPECT_NE(out[4].impl()->storage->whole, out[0].impl()->storage->whole);
}

// TensorPack::reserve: a tensor made in place, between copies, on the same 64-byte steps; adding it gives it back
// as it is (no second copy), while a view of part of it (at its start or further in), or another pack's tensor,
// is copied.
TEST(BackendContract, TensorPackReservesTensorsMadeInPlace) {
  TensorPack pack(Device::CPU, 512);
  const Tensor a = pack.add(Tensor::from_vector({1.0f, 2.0f}, {2}));
  Tensor r = pack.reserve({4, 32}, DType::Q8_0, Layout::Rows16);
  EXPECT_EQ(r.shape(), Shape({4, 32}));
  EXPECT_EQ(r.dtype(), DType::Q8_0);
  EXPECT_EQ(r.layout(), Layout::Rows16);
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_EQ(static_cast<char*>(r.raw()) - static_cast<char*>(a.raw()), 64);
  std::memset(r.raw(), 7, 4 * 34);
  const Tensor same = pack.add(r);
  EXPECT_EQ(same.impl(), r.impl());
  const Tensor next = pack.add(Tensor::from_vector({3.0f}, {1}));
  EXPECT_EQ(static_cast<char*>(next.raw()) - static_cast<char*>(r.raw()), 192);  // 136 bytes, then 64
  Tensor f = pack.reserve({8}, DType::F32);
  for (int i = 0; i < 8; i++) f.f32()[i] = float(i);
  const Tensor copy = pack.add(f.narrow0(2, 3));  // a view at an offset: a copy
  EXPECT_NE(copy.raw(), f.raw());
  EXPECT_EQ(copy.to_vector(), std::vector<float>({2.0f, 3.0f, 4.0f}));
  const Tensor head = pack.add(f.narrow0(0, 3));  // a view of its first rows: a copy too
  EXPECT_NE(head.raw(), f.raw());
  EXPECT_EQ(head.to_vector(), std::vector<float>({0.0f, 1.0f, 2.0f}));
  TensorPack other(Device::CPU, 512);
  EXPECT_NE(other.add(f).raw(), f.raw());  // another pack's tensor is copied
  EXPECT_EQ(std::string(static_cast<char*>(same.raw()), 4 * 34), std::string(4 * 34, '\7'));
  EXPECT_THROW(pack.reserve({-1, 2}, DType::F32), aigc::Error);
}

// discard gives back only whole pages inside the range: the bytes around them, in partial pages, keep their values
// (they may be another tensor's: a norm between two discarded matrices). trim then empties the reuse cache.
TEST(BackendContract, DiscardKeepsEveryByteOutsideTheWholePagesItFrees) {
  for (Backend* be : {&cpu_backend(), &reference_backend()}) {
    SCOPED_TRACE(be->name());
    const size_t n = size_t(5) << 20;  // huge-page sized on the CPU backend
    auto* p = static_cast<unsigned char*>(be->alloc(n));
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < n; i++) p[i] = static_cast<unsigned char>(i % 251 + 1);
    const size_t lo = 1000, hi = (size_t(3) << 20) + 77;  // neither on a page boundary
    be->discard(p + lo, hi - lo);
    const size_t page = 4096;
    for (size_t i = 0; i < n; i++) {
      const bool inside_whole_page = i >= (lo + page - 1) / page * page && i < hi / page * page;
      if (!inside_whole_page) ASSERT_EQ(p[i], static_cast<unsigned char>(i % 251 + 1)) << i;
    }
    p[2 * page] = 7;  // discarded memory (a whole page inside the range) is still ours to write
    EXPECT_EQ(p[2 * page], 7);
    be->release(p, n);
    be->trim();
  }
}

TEST(BackendContract, BackendsSayWhatTheyRun) {
  const std::vector<const char*>& kernels = backend_kernels();
  EXPECT_EQ(std::set<std::string>(kernels.begin(), kernels.end()).size(), kernels.size()) << "duplicate names";
  EXPECT_GE(kernels.size(), 64u);
  for (Backend* be : {&cpu_backend(), &reference_backend()}) {
    SCOPED_TRACE(be->name());
    for (const char* k : kernels) EXPECT_TRUE(be->supports(k, DType::F32)) << k;
    EXPECT_TRUE(be->supports("linear_forward_bf16w", DType::BF16));
    EXPECT_TRUE(be->supports("embedding_forward", DType::I32));
    EXPECT_FALSE(be->supports("gemm", DType::F16));
    EXPECT_FALSE(be->supports("gemm", DType::BF16));
    EXPECT_FALSE(be->supports("no_such_kernel", DType::F32));
  }
}

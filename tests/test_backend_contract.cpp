// The backend contract beyond the kernels: each backend owns its memory (tensors get their bytes from it and
// reach the host only through it), and says which kernels and dtypes it runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>

#include "aigc/backend.h"

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

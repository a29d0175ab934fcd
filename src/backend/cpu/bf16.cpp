// oneDNN's matmul primitive: bf16 x bf16 -> fp32 products, and the fp32 x fp32^T product of the linear layers'
// forward pass at up to 1024 rows (prefill, moderate batches), where it beats sgemm; plus bf16 conversions.
//
// The matrix product goes through oneDNN's matmul primitive, which uses AVX512_BF16 (or AMX) dot-product
// instructions where the CPU has them. Where it has not, or oneDNN offers only its slow reference kernel, we
// round the operands to bf16 values held in fp32 and call sgemm: every product of two bf16 values is exact in
// fp32, so the numbers match the bf16 kernel up to the order of the fp32 accumulation.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "aigc/error.h"
#include "cpu_backend.h"

namespace aigc::cpu {

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) dst[i] = bf16_from_f32(src[i]);
}

void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) dst[i] = f32_from_bf16(src[i]);
}

namespace {

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, bool>;

struct Matmul {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c;
  bool fast = false;  // false: oneDNN would run its reference kernel; use the fallback instead
};

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, Matmul> cache;  // shapes repeat every step: build each primitive once
  std::mutex mu;
};

Dnnl& dnnl_state() {
  static Dnnl d;
  return d;
}

dnnl::memory::desc matrix_desc(int64_t rows, int64_t cols, int64_t ld, bool trans, dnnl::memory::data_type dt) {
  // A row-major (rows, cols) operand, stored transposed when `trans` (then ld is the stride between columns).
  dnnl::memory::dims strides = trans ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, dt, strides);
}

const Matmul& get_matmul(const Key& key) {
  Dnnl& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = d.cache.find(key);
  if (it != d.cache.end()) return it->second;
  auto [ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, f32] = key;
  using dt = dnnl::memory::data_type;
  Matmul m;
  dt in = f32 ? dt::f32 : dt::bf16;
  m.a = matrix_desc(M, K, lda, ta, in);
  m.b = matrix_desc(K, N, ldb, tb, in);
  m.c = matrix_desc(M, N, ldc, false, dt::f32);
  try {
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(m.a, m.b, m.c), attr, d.engine);
    std::string impl = pd.impl_info_str();
    // AIGC_BF16_EMULATE=1 forces the fallback, so the tests cover it on CPUs that have bf16 instructions.
    m.fast = impl.find("ref") == std::string::npos && !std::getenv("AIGC_BF16_EMULATE");
    m.prim = dnnl::matmul(pd);
  } catch (const dnnl::error&) {
    m.fast = false;  // no bf16 matmul on this CPU
  }
  return d.cache.emplace(key, std::move(m)).first->second;
}

void run(const Matmul& m, const void* A, const void* B, float* C) {
  Dnnl& d = dnnl_state();
  dnnl::memory a(m.a, d.engine, const_cast<void*>(A));
  dnnl::memory b(m.b, d.engine, const_cast<void*>(B));
  dnnl::memory c(m.c, d.engine, C);
  m.prim.execute(d.stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  d.stream.wait();
}

}  // namespace

bool bf16_matmul_is_native() {
  static const bool native = get_matmul(Key{false, true, 64, 64, 64, 64, 64, 64, 1.0f, 0.0f, false}).fast;
  return native;
}

bool gemm_f32_matmul(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                     float beta, float* C, int64_t ldc) {
  const Matmul& m = get_matmul(Key{false, true, M, N, K, lda, ldb, ldc, 1.0f, beta, true});
  if (!m.fast) return false;
  run(m, A, B, C);
  return true;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const Matmul& m = get_matmul(Key{trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta, false});
  if (m.fast && K > 0) {
    run(m, A, B, C);
    return;
  }
  // Fallback: the same bf16 values, widened to fp32, through sgemm.
  int64_t a_elems = trans_a ? (K - 1) * lda + M : (M - 1) * lda + K;
  int64_t b_elems = trans_b ? (N - 1) * ldb + K : (K - 1) * ldb + N;
  std::vector<float> a32(size_t(std::max<int64_t>(a_elems, 0))), b32(size_t(std::max<int64_t>(b_elems, 0)));
  bf16_to_f32(a32.data(), A, int64_t(a32.size()));
  bf16_to_f32(b32.data(), B, int64_t(b32.size()));
  cpu_backend().gemm(trans_a, trans_b, M, N, K, alpha, a32.data(), lda, b32.data(), ldb, beta, C, ldc);
}

void CpuBackend::convert_f32_to_bf16(uint16_t* out, const float* inp, int64_t n) { f32_to_bf16(out, inp, n); }
}  // namespace aigc::cpu

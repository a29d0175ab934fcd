// The CPU backend: oneDNN's sgemm for every matrix product, OpenMP + compiler-vectorized loops for the rest.
// Each kernel has a plain loop body that reads like its formula; speed comes from fusion and threading,
// not from intrinsics, so the reference and the fast version are the same code.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "aigc/backend.h"

namespace aigc::cpu {

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
#include "../kernel_overrides.inc"                      // every function of Backend
  void run_held(void (*f)(void*), void* ctx) override;  // team.cpp
  void discard(void* p, size_t nbytes) override;        // memory.cpp
  void trim() override;
};

// fn(ctx, id, nt) on each of nt threads, returning when all are done: on the team a run_held step holds, when the
// calling thread runs one (a job handed to threads already spinning), else in a new OpenMP region (team.cpp).
void run_job(void (*fn)(void*, int, int), void* ctx);
template <typename F>
void on_threads(F&& f) {
  run_job([](void* c, int id, int nt) { (*static_cast<std::remove_reference_t<F>*>(c))(id, nt); }, &f);
}

// exp(x) for float, written so the compiler can vectorize it (std::exp does not vectorize without fast-math).
// x = n ln2 + r with |r| <= ln2/2; e^r by its Taylor series to degree 7 (relative error < 1e-8 before rounding).
inline float exp_vec(float x) {
  float xc = x < -87.0f ? -87.0f : x;  // a NaN passes through both clamps
  xc = xc > 88.0f ? 88.0f : xc;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (floorf would not vectorize without -ffast-math).
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693145751953125f;  // ln2 split in two parts keeps r exact
  r = r - n * 1.4286068203094172e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((int32_t(n) + 127) << 23);
}

// The logistic 1 / (1 + e^-x) without overflow for large |x|: e^-|x| never exceeds 1. One division for both
// signs (a vector division costs as much as the whole exponential).
inline float sigmoid(float x) {
  const float e = exp_vec(-(x < 0.0f ? -x : x));
  const float r = 1.0f / (1.0f + e);
  return x >= 0.0f ? r : e * r;
}

// Nearest upsampling by f of `rows` input rows of W pixels, each pixel V consecutive floats (1 for plain
// planes, 16 for the blocked layout): each input row gives f output rows of W f pixels.
template <int64_t V>
void upsample_nearest_rows(float* out, const float* inp, int64_t rows, int64_t W, int64_t f) {
  const int64_t OW = W * f;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < rows; p++) {
    const float* src = inp + p * W * V;
    float* dst = out + p * f * OW * V;
    for (int64_t x = 0; x < OW; x++)
      for (int64_t j = 0; j < V; j++) dst[x * V + j] = src[(x / f) * V + j];
    for (int64_t r = 1; r < f; r++) std::copy(dst, dst + OW * V, dst + r * OW * V);
  }
}

// bfloat16: the top half of a float. Rounding is to nearest, ties to even; NaNs stay NaNs.
inline uint16_t bf16_from_f32(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f32_from_bf16(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n);
// C (M,N) = alpha op(A) op(B) + beta C with bf16 A, B and fp32 C, row-major as in Backend::gemm.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
bool bf16_matmul_is_native();
// C (M,N) = A (M,K) B^T + beta C in fp32 through the matmul primitive; false if it has no fast kernel here.
bool gemm_f32_matmul(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                     float beta, float* C, int64_t ldc);  // oneDNN has a fast bf16 kernel for this CPU

// f(lo, hi) over [0, n), split evenly among the threads, or all on the calling thread when the loop is small
// (n items of `cost` elements each, below kSmallWork elements in all). Entering an OpenMP region costs about 1 us
// here, serial or not: libgomp's barrier ends every region with a futex wake-up system call, even when no thread
// sleeps and even for a team of one, and a decoding step's element-wise ops (one row of a few hundred values) take
// less than that. Code outside any OpenMP construct makes no such call.
constexpr int64_t kSmallWork = 1 << 15;
template <typename F>
void parallel_range(int64_t n, int64_t cost, F&& f) {
  if (n <= 0) return;
  if (n == 1 || n * cost <= kSmallWork || omp_get_max_threads() == 1) return f(int64_t(0), n);
  on_threads([&](int id, int nt) { f(n * id / nt, n * (id + 1) / nt); });
}

// Whether a weight stream prefetches ahead of its loads, kPrefetchAhead bytes into the L2 (prefetch_ahead). It
// depends on the machine: on one (an Intel Xeon VM, whose cores keep few misses in flight) the hardware prefetchers
// alone left the kernels waiting and the prefetch made decoding 1.2-1.4x faster; on another (AMD Zen 4) a prefetch
// in the kernel was slower. So each kernel's first streams try both ways, picked at random (products of different
// sizes alternate in a model's step), and the faster one, in bytes a second over all its tries, is kept (the
// prefetch by a margin). The choice is made once, from the first 512 streams of a kernel in a process. Either way
// each stream computes the same values. AIGC_STREAM_PREFETCH=on|off forces the choice (team.cpp).
constexpr int64_t kPrefetchAhead = 4096;
int forced_stream_prefetch();  // 1 on, 0 off, -1 unset
class PrefetchChoice {
 public:
  PrefetchChoice() : decided_(forced_stream_prefetch()) {}
  bool pick() {  // whether the next stream prefetches
    const int d = decided_.load(std::memory_order_relaxed);
    if (d >= 0) return d == 1;
    std::lock_guard<std::mutex> lock(mu_);
    seed_ = seed_ * 6364136223846793005ull + 1442695040888963407ull;
    return (seed_ >> 63) != 0;
  }
  void record(bool ahead, double bytes, double seconds) {
    if (decided_.load(std::memory_order_relaxed) >= 0 || !(seconds > 0)) return;
    std::lock_guard<std::mutex> lock(mu_);
    Arm& a = arm_[ahead];
    a.bytes += bytes, a.seconds += seconds, a.tries++;
    // The prefetch must win by 2%: the instructions are not free, and a noisy start should not keep them.
    if (arm_[0].tries >= kTries && arm_[1].tries >= kTries)
      decided_.store(arm_[1].bytes / arm_[1].seconds > 1.02 * arm_[0].bytes / arm_[0].seconds ? 1 : 0);
  }

 private:
  static constexpr int kTries = 256;
  struct Arm {
    double bytes = 0, seconds = 0;
    int tries = 0;
  };
  std::atomic<int> decided_;
  std::mutex mu_;
  uint64_t seed_ = 0x9e3779b97f4a7c15ull;
  Arm arm_[2];
};
inline void prefetch_ahead(const void* p) { __builtin_prefetch(static_cast<const char*>(p) + kPrefetchAhead, 0, 1); }

// Runs f(u, ahead) for u in [0, n) on the calling team, for memory-bound loops where each u reads its own weights
// (`bytes` in all) and prefetches them ahead if `ahead` is set (PrefetchChoice; bytes 0: the loop is compute-bound,
// many input rows sharing each weight, and neither prefetches nor counts in the choice; a kernel's paths without
// a prefetch, as its scalar one, ignore `ahead`): each
// thread takes one range of consecutive u, a single forward stream the hardware prefetchers follow (chunks handed
// out dynamically, or taken from both ends, were measured slower). The ranges are equal for more than two threads.
// Two threads split where their last speeds meet: on a shared machine one core is often slower for a while (here
// the one that waits between parallel regions, by 10-20%), and an even split leaves the other waiting at the end.
// Which thread runs u never changes what f(u) computes.
struct NoStart {
  void operator()() const {}
};

// start() runs on every thread before its range (each thread's own preparation, as its copy of the input).
template <typename F, typename Start = NoStart>
void split_stream(int64_t n, size_t bytes, F&& f, Start&& start = {}) {
  static std::atomic<float> share0{0.5f};  // thread 0's part of the work, learned from the calls so far
  static PrefetchChoice choice;
  const bool ahead = bytes > 0 && choice.pick();
  const auto t0 = std::chrono::steady_clock::now();
  float took[2] = {0, 0};
  const float s = share0.load(std::memory_order_relaxed);
  const int64_t cut = std::clamp<int64_t>(int64_t(std::lround(double(s) * double(n))), 0, n);
  on_threads([&](int id, int nt) {
    const int64_t lo = nt == 2 ? (id == 0 ? 0 : cut) : n * id / nt,
                  hi = nt == 2 ? (id == 0 ? cut : n) : n * (id + 1) / nt;
    start();
    for (int64_t u = lo; u < hi; u++) f(u, ahead);
    if (nt == 2) took[id] = std::chrono::duration<float>(std::chrono::steady_clock::now() - t0).count();
  });
  if (bytes > 0)
    choice.record(ahead, double(bytes), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  // Each thread's speed (units per second since the region began) sets the share that would have balanced this
  // call; the share moves a tenth of the way there, so one noisy call changes little.
  if (took[0] > 0 && took[1] > 0 && cut > 0 && cut < n) {
    const float v0 = float(cut) / took[0], v1 = float(n - cut) / took[1];
    share0.store(std::clamp(0.9f * s + 0.1f * v0 / (v0 + v1), 0.25f, 0.75f), std::memory_order_relaxed);
  }
}

}  // namespace aigc::cpu

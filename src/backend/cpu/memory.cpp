// The CPU backend's memory. Activations are freed and reallocated every step with the same sizes, and fresh
// memory from the kernel arrives as zeroed pages (page faults plus zeroing, ~10% of a training step); so freed
// blocks are kept in a cache keyed by exact size and handed out again, up to kCacheLimit bytes.
//
// Blocks of 2 MiB and more (weights, KV caches, large activations) sit on 2 MiB boundaries and ask the kernel for
// transparent huge pages (Linux: madvise, which most distributions' kernels honour only when asked). Decoding
// reads every weight once per token: with 4 KiB pages each page is a TLB miss (a two-level walk under a VM) and
// a restart of the hardware prefetchers, which stop at page boundaries. A decoding step of SmolLM-135M's shape
// in Q4_0 read its weights 15-20% faster on huge pages here (docs/llama.md).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "cpu_backend.h"

namespace aigc::cpu {

namespace {
constexpr size_t kCacheLimit = size_t(4) << 30;
// Never destroyed: tensors in static storage may be freed after other statics are gone.
std::mutex& g_cache_mu = *new std::mutex;
std::unordered_multimap<size_t, void*>& g_cache = *new std::unordered_multimap<size_t, void*>;
size_t g_cached_bytes = 0;

constexpr size_t kHuge = size_t(2) << 20;
// Multiples of the alignment, as aligned_alloc requires: 64 bytes, or 2 MiB for huge blocks.
size_t round_up(size_t n) {
  const size_t a = n >= kHuge ? kHuge : 64;
  return ((n + a - 1) / a) * a;
}

void* fresh(size_t rounded) {
  if (rounded < kHuge) return std::aligned_alloc(64, rounded);
  void* p = std::aligned_alloc(kHuge, rounded);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: where the kernel declines, 4 KiB pages serve
#endif
  return p;
}
}  // namespace

void* CpuBackend::alloc(size_t nbytes) {
  const size_t rounded = round_up(nbytes);
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
  return fresh(rounded);
}

void CpuBackend::release(void* p, size_t nbytes) {
  if (!p) return;
  const size_t rounded = round_up(nbytes);
  std::lock_guard<std::mutex> lk(g_cache_mu);
  if (g_cached_bytes + rounded > kCacheLimit) {
    std::free(p);
    return;
  }
  g_cache.emplace(rounded, p);
  g_cached_bytes += rounded;
}

void CpuBackend::discard(void* p, size_t nbytes) {
  // The whole pages inside [p, p + nbytes): the kernel frees them, and they read as zeros when next touched, from
  // then on in small pages: a few values written there later (a model's norms between discarded matrices) must not
  // each bring in a zeroed 2 MiB page.
  static const uintptr_t kPage = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1),
                  hi = (reinterpret_cast<uintptr_t>(p) + nbytes) & ~(kPage - 1);
  if (hi <= lo) return;
#ifdef MADV_NOHUGEPAGE
  madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_NOHUGEPAGE);
#endif
  madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void CpuBackend::trim() {
  std::lock_guard<std::mutex> lk(g_cache_mu);
  for (auto& [size, p] : g_cache) std::free(p);
  g_cache.clear();
  g_cached_bytes = 0;
}

void CpuBackend::fill_zero(void* p, size_t nbytes) {
  // Gradient buffers of large activations are zeroed many times a step: above a few MiB, split the work over
  // the threads (one thread alone leaves the others idle for milliseconds).
  char* c = static_cast<char*>(p);
  constexpr size_t kChunk = size_t(1) << 20;
  const int64_t parts = int64_t((nbytes + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (parts >= 4)
  for (int64_t i = 0; i < parts; i++)
    std::memset(c + size_t(i) * kChunk, 0, std::min(kChunk, nbytes - size_t(i) * kChunk));
}

void CpuBackend::to_host(void* host_dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(host_dst, src, nbytes);
}
void CpuBackend::from_host(void* dst, const void* host_src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, host_src, nbytes);
}

bool CpuBackend::supports(const char* kernel, DType dtype) const { return host_backend_supports(kernel, dtype); }

}  // namespace aigc::cpu

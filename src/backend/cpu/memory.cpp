// The CPU backend's memory. Activations are freed and reallocated every step with the same sizes, and fresh
// memory from the kernel arrives as zeroed pages (page faults plus zeroing, ~10% of a training step); so freed
// blocks are kept in a cache keyed by exact size and handed out again, up to kCacheLimit bytes.
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

size_t round_up(size_t n) { return ((n + 63) / 64) * 64; }  // 64-byte multiples, as aligned_alloc requires
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
  return std::aligned_alloc(64, rounded);
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

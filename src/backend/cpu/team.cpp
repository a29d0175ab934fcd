// A decoding step holds its threads (Backend::run_held): one OpenMP region for the whole step, in which thread 0
// runs the step's code and hands each parallel kernel to the others as a job while they spin on a counter. A step
// of a small model makes hundreds of parallel kernels of a few microseconds each, and an OpenMP region costs about
// 1 us more than a job: libgomp starts and ends every region with futex system calls.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "aigc/error.h"
#include "cpu_backend.h"

namespace aigc::cpu {

struct Team {
  int nt = 1;
  alignas(64) std::atomic<uint64_t> posted{0};  // jobs posted so far (the last, with exit set, ends the step)
  alignas(64) std::atomic<int> finished{0};     // threads other than 0 done with the current job
  void (*fn)(void*, int, int) = nullptr;
  void* ctx = nullptr;
  bool exit = false;
};

namespace {

// The team this thread leads, while it runs the step's own code; not while it runs its share of a job, so a
// kernel called inside a job posts no job of its own (it opens a nested OpenMP region, which runs on one thread).
thread_local Team* t_team = nullptr;

// One wait of a spin loop: a pause, and after the first few thousand a yield of the core, so that a thread that
// was descheduled (more threads than free cores: parallel tests, a CPU quota) gets to run.
inline void relax(int& spins) {
  if (++spins < 4096) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

}  // namespace

int forced_stream_prefetch() {
  static const int forced = [] {
    const char* env = std::getenv("AIGC_STREAM_PREFETCH");
    if (!env || !*env) return -1;
    const std::string v = env;
    if (v == "on") return 1;
    if (v == "off") return 0;
    fail("AIGC_STREAM_PREFETCH must be on or off, got '" + v + "'");
  }();
  return forced;
}

void run_job(void (*fn)(void*, int, int), void* ctx) {
  Team* t = t_team;
  if (!t) {
#pragma omp parallel
    fn(ctx, omp_get_thread_num(), omp_get_num_threads());
    return;
  }
  // The others finished the last job before this one is posted, so resetting the count loses no arrival.
  t->fn = fn, t->ctx = ctx;
  t->finished.store(0, std::memory_order_relaxed);
  t->posted.fetch_add(1, std::memory_order_release);  // publishes fn, ctx and the count
  t_team = nullptr;
  std::exception_ptr error;
  try {
    fn(ctx, 0, t->nt);
  } catch (...) {  // the others still run their shares, on ctx in the caller's frame: wait for them first
    error = std::current_exception();
  }
  t_team = t;
  for (int spins = 0; t->finished.load(std::memory_order_acquire) < t->nt - 1;) relax(spins);
  if (error) std::rethrow_exception(error);
}

void CpuBackend::run_held(void (*f)(void*), void* ctx) {
  // Under bf16 matmul precision every f32-weight product is oneDNN's, which runs on one thread inside a held step.
  if (t_team || omp_in_parallel() || omp_get_max_threads() == 1 || matmul_precision() != MatmulPrecision::F32)
    return f(ctx);
  Team team;
  std::exception_ptr error;
#pragma omp parallel
  {
    const int id = omp_get_thread_num(), nt = omp_get_num_threads();
    if (id == 0) {
      team.nt = nt;
      t_team = &team;
      try {
        f(ctx);
      } catch (...) {  // an exception cannot leave an OpenMP region: it is thrown again after the step
        error = std::current_exception();
      }
      t_team = nullptr;
      team.exit = true;
      team.posted.fetch_add(1, std::memory_order_release);
    } else {
      for (uint64_t seen = 0;;) {
        uint64_t now;
        for (int spins = 0; (now = team.posted.load(std::memory_order_acquire)) == seen;) relax(spins);
        seen = now;
        if (team.exit) break;
        team.fn(team.ctx, id, nt);
        team.finished.fetch_add(1, std::memory_order_release);
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace aigc::cpu

// aigc side of bench/run. Each mode runs in its own process (so peak resident memory is per mode) and prints
// one JSON line. Timings are medians of several repetitions after warm-up.
//   aigc_bench peak                                  fp32 FMA throughput of all threads (GFLOP/s)
//   aigc_bench bandwidth                             memory read bandwidth of all threads (GB/s)
//   aigc_bench train   L H C V B T STEPS WARMUP      forward + backward + clip + AdamW
//   aigc_bench prefill L H C V T REPS                batch-1 prompt of T tokens into an empty KV cache
//   aigc_bench decode  L H C V N                     batch-1 generation of N tokens with the KV cache
//   aigc_bench eval    L H C V T REPS                forward + loss over one T-token window, all logits
//   aigc_bench stream  TYPE L C HIDDEN KV_WIDTH V REPS   one decoded token's products vs a read of their bytes
//   aigc_bench paired  FILE BYTES N                  N greedy decoding steps of a GGUF file, each after a read of
//                                                    BYTES (the bytes of weights a token reads)
// A leading --bf16 runs the model modes in bf16: mixed-precision training (bf16 matrix products, fp32 master
// weights) and bf16 inference weights.
// FLOP counts are the model's useful work (causal attention counts only the lower triangle).
#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/checkpoint.h"
#include "aigc/models/gpt.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"

using namespace aigc;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double max_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// ---- machine limits ------------------------------------------------------------------------------------------

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vset(float x) { return _mm512_set1_ps(x); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline float vsum(Vec a) {
  alignas(64) float t[16];
  _mm512_store_ps(t, a);
  float s = 0;
  for (float x : t) s += x;
  return s;
}
#elif defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vset(float x) { return _mm256_set1_ps(x); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline float vsum(Vec a) {
  alignas(32) float t[8];
  _mm256_store_ps(t, a);
  float s = 0;
  for (float x : t) s += x;
  return s;
}
#else  // a build without -march=native: SSE multiply + add
using Vec = __m128;
constexpr int kLanes = 4;
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline Vec vset(float x) { return _mm_set1_ps(x); }
inline Vec vadd(Vec a, Vec b) { return _mm_add_ps(a, b); }
inline Vec vload(const float* p) { return _mm_loadu_ps(p); }
inline float vsum(Vec a) {
  alignas(16) float t[4];
  _mm_store_ps(t, a);
  return t[0] + t[1] + t[2] + t[3];
}
#endif

// Twelve independent FMA chains per thread hide the FMA latency (4-5 cycles) on two FMA ports.
float fma_chains(int64_t iters) {
  Vec a[12];
  for (int i = 0; i < 12; i++) a[i] = vset(1.0f + 1e-3f * float(i));
  const Vec m = vset(0.999999f), c = vset(1e-7f);
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < 12; i++) a[i] = vfma(a[i], m, c);
  float s = 0;
  for (int i = 0; i < 12; i++) s += vsum(a[i]);
  return s;
}

void mode_peak() {
  const int64_t iters = 50'000'000;
  fma_chains(iters / 20);  // warm up clocks
  std::vector<double> rates;
  float sink = 0;
  for (int rep = 0; rep < 5; rep++) {
    int nt = 1;
    auto t0 = Clock::now();
#pragma omp parallel reduction(+ : sink)
    {
#pragma omp single
      nt = omp_get_num_threads();
      sink += fma_chains(iters);
    }
    double dt = seconds_since(t0);
    rates.push_back(double(nt) * double(iters) * 12 * kLanes * 2 / dt / 1e9);
  }
  std::printf("{\"gflops\": %.2f, \"lanes\": %d, \"threads\": %d, \"sink\": %g}\n",
              *std::max_element(rates.begin(), rates.end()), kLanes, omp_get_max_threads(), double(sink));
}

// Sums a range with four independent vector accumulators, so the loads, not the adds, set the pace.
float sum_range(const float* p, int64_t n) {
  Vec a0 = vset(0), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    a0 = vadd(a0, vload(p + i));
    a1 = vadd(a1, vload(p + i + kLanes));
    a2 = vadd(a2, vload(p + i + 2 * kLanes));
    a3 = vadd(a3, vload(p + i + 3 * kLanes));
  }
  float s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  for (; i < n; i++) s += p[i];
  return s;
}

// n floats, filled, in memory as the backend gives its large blocks (weights, KV caches: huge pages where the
// kernel grants them): 4 KiB pages read about 10% slower here, and a bound measured on them would flatter the
// decoders it bounds.
using Floats = std::unique_ptr<float, std::function<void(float*)>>;
Floats backend_floats(int64_t n) {
  Backend& be = cpu_backend();
  const size_t bytes = size_t(n) * sizeof(float);
  Floats buf(static_cast<float*>(be.alloc(bytes)), [&be, bytes](float* p) { be.release(p, bytes); });
  if (!buf) std::abort();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) buf.get()[i] = float(i & 7);
  return buf;
}

// One read of n floats by all threads, each its own consecutive part; returns their sum (a sink).
double read_all(const float* p, int64_t n) {
  double sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t lo = n * id / nt, hi = n * (id + 1) / nt;
    sink += sum_range(p + lo, hi - lo);
  }
  return sink;
}

void mode_bandwidth() {
  const int64_t n = int64_t(1) << 28;  // 1 GiB of floats: far past every cache
  const Floats buf = backend_floats(n);
  std::vector<double> rates;
  double sink = 0;
  for (int rep = 0; rep < 21; rep++) {  // best of 20: other tenants of the memory bus only ever slow it down
    auto t0 = Clock::now();
    sink += read_all(buf.get(), n);
    double dt = seconds_since(t0);
    if (rep > 0) rates.push_back(double(n) * 4 / dt / 1e9);
  }
  std::printf("{\"gbps\": %.2f, \"sink\": %g}\n", *std::max_element(rates.begin(), rates.end()), sink);
}

// The matrix products of one decoded token of a Llama shape (per layer: q|k|v, o, gate|up, down; then the head),
// one input row, with weights of one type packed in one block as a model keeps them; each rep reads as many bytes
// with the loop above (all threads), then runs the products, so both meet the same bandwidth regime. It separates
// how fast the products stream from the rest of a decoding step (attention, element-wise ops, sampling).
void mode_stream(const std::string& type, int64_t L, int64_t C, int64_t H, int64_t KV, int64_t V, int64_t reps) {
  if (type != "f32" && type != "bf16" && type != "q8_0" && type != "q4_0") {
    std::fprintf(stderr, "error: TYPE must be f32, bf16, q8_0 or q4_0, got %s\n", type.c_str());
    std::exit(2);
  }
  NoGradGuard ng;
  Rng rng(1);
  std::vector<Tensor> ws;
  auto add = [&](int64_t rows, int64_t cols) {
    Tensor w = Tensor::empty({rows, cols});
    init::uniform(w, -0.05f, 0.05f, rng);
    if (type == "bf16") w = ops::to_bf16(w);
    if (type == "q8_0" || type == "q4_0")
      w = ops::to_rows16(ops::quantize(w, type == "q8_0" ? DType::Q8_0 : DType::Q4_0));
    ws.push_back(w);
  };
  for (int64_t l = 0; l < L; l++) add(C + 2 * KV, C), add(C, C), add(2 * H, C), add(C, H);
  if (V > 0) add(V, C);
  ws = Tensor::packed(ws);
  double bytes = 0;
  for (const Tensor& w : ws) bytes += double(dtype_bytes(w.dtype(), w.numel()));
  const int64_t n = int64_t(bytes) / 4;
  const Floats buf = backend_floats(n);
  const Tensor xc = Tensor::from_vector(std::vector<float>(size_t(C), 0.5f), {1, C});
  const Tensor xh = Tensor::from_vector(std::vector<float>(size_t(H), 0.5f), {1, H});
  std::vector<double> read, products;
  double sink = 0;
  for (int64_t rep = 0; rep <= reps; rep++) {  // the first of each is a warm-up
    auto t0 = Clock::now();
    sink += read_all(buf.get(), n);
    const double t_read = seconds_since(t0);
    t0 = Clock::now();
    run_held(cpu_backend(), [&] {
      for (const Tensor& w : ws) sink += double(ops::linear(w.size(1) == C ? xc : xh, w, Tensor()).raw() != nullptr);
    });
    if (rep > 0) read.push_back(double(n) * 4 / t_read / 1e9), products.push_back(bytes / seconds_since(t0) / 1e9);
  }
  std::sort(read.begin(), read.end()), std::sort(products.begin(), products.end());
  std::printf(
      "{\"type\": \"%s\", \"mb\": %.1f, \"read_gbps\": %.2f, \"read_median\": %.2f, \"products_gbps\": %.2f, "
      "\"products_median\": %.2f, \"sink\": %g}\n",
      type.c_str(), bytes / 1e6, read.back(), read[read.size() / 2], products.back(), products[products.size() / 2],
      sink);
}

// Decoding a GGUF file at batch 1 (greedy, f16 KV cache, as `aigc generate`), each step right after a read of as
// many bytes as a token's weights: the step's speed as a share of that read's. A bound from the best of separate
// reads flatters the memory on a shared machine whose bandwidth moves by 2x within seconds (and lets a lucky
// read set the bound of a whole run); a read and the step after it meet the same moment. A step includes its
// greedy pick (as `aigc generate`'s does its sampling). Each side starts cold:
// the read evicts the weights from the caches and the step evicts the read's buffer. Prints the median of the
// per-step shares, and the median step and read speeds.
void mode_paired(const std::string& path, int64_t bytes, int64_t steps) {
  LoadedModel lm = load_model(path, true);
  GPT& m = *lm.model;
  if (steps < 1 || bytes < 4 || m.config().block_size < 2) {
    std::fprintf(stderr, "error: paired needs N >= 1, BYTES >= 4 and a model with a context of 2 or more\n");
    std::exit(2);
  }
  const int64_t n = bytes / 4;
  const Floats buf = backend_floats(n);
  KVCache cache = m.make_cache(1, std::min<int64_t>(m.config().block_size, steps + 1), DType::F16);
  std::vector<double> share, tok_s, read_gbps;
  double sink = 0;
  int32_t token = int32_t(464 % m.config().vocab_size);  // any token; the argmax of each step's logits is the next
  for (int64_t p = 0; p <= steps && p < cache.capacity; p++) {
    auto t0 = Clock::now();
    sink += read_all(buf.get(), n);
    const double t_read = seconds_since(t0);
    t0 = Clock::now();
    const std::vector<float> logits = m.forward_decode({token}, {0}, {int32_t(p)}, cache).to_vector();
    token = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const double t_step = seconds_since(t0);
    if (p == 0) continue;  // warm-up
    share.push_back(t_read / t_step), tok_s.push_back(1.0 / t_step), read_gbps.push_back(double(n) * 4 / t_read / 1e9);
  }
  std::printf("{\"steps\": %zu, \"share\": %.3f, \"tok_s\": %.1f, \"read_gbps\": %.2f, \"sink\": %g}\n", share.size(),
              median(share), median(tok_s), median(read_gbps), sink);
}

// ---- models ----------------------------------------------------------------------------------------------------

struct Shape {
  int64_t L, H, C, V;
};

bool g_bf16 = false;

Shape parse_shape(char** argv) {
  return {std::atoll(argv[0]), std::atoll(argv[1]), std::atoll(argv[2]), std::atoll(argv[3])};
}

std::unique_ptr<GPT> make_model(const Shape& s, int64_t block_size) {
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = s.L, c.n_head = s.H, c.n_embd = s.C, c.vocab_size = s.V, c.block_size = block_size;
  auto m = std::make_unique<GPT>(c);
  m->init_weights(0);
  if (g_bf16) m->set_inference_dtype(DType::BF16);
  return m;
}

// Forward FLOPs of T tokens: the block matmuls (24 L C^2 per token), causal attention (QK^T and PV over the
// t+1 visible positions of token t) and the head for `head_rows` positions.
double forward_flops(const Shape& s, int64_t T, int64_t pos0, int64_t head_rows) {
  double linear = 24.0 * double(s.L) * double(s.C) * double(s.C) * double(T);
  double visible = 0;
  for (int64_t t = 0; t < T; t++) visible += double(pos0 + t + 1);
  double attn = 4.0 * double(s.L) * double(s.C) * visible;
  return linear + attn + 2.0 * double(s.C) * double(s.V) * double(head_rows);
}

std::vector<int32_t> random_tokens(Rng& rng, int64_t n, int64_t V) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(rng.next_u64() % uint64_t(V));
  return v;
}

void report(const char* mode, double seconds, double tokens, double flops, double bytes) {
  std::printf(
      "{\"mode\": \"%s\", \"bf16\": %s, \"seconds\": %.6f, \"tokens_per_s\": %.2f, \"gflops\": %.2f, \"gbps\": %.2f, "
      "\"max_rss_mb\": %.1f}\n",
      mode, g_bf16 ? "true" : "false", seconds, tokens / seconds, flops / seconds / 1e9, bytes / seconds / 1e9,
      max_rss_mb());
}

void mode_train(const Shape& s, int64_t B, int64_t T, int64_t steps, int64_t warmup) {
  auto model = make_model(s, T);
  OptimConfig oc;
  oc.lr = 1e-4f;
  Optimizer opt(model->params(), oc);
  Rng rng(1);
  std::vector<double> times;
  for (int64_t i = 0; i < warmup + steps; i++) {
    Tensor x = Tensor::from_ints(random_tokens(rng, B * T, s.V), {B, T});
    Tensor y = Tensor::from_ints(random_tokens(rng, B * T, s.V), {B, T});
    auto t0 = Clock::now();
    model->params().zero_grad();
    backward(model->loss(x, y, true, uint64_t(i)));
    clip_grad_norm(model->params(), 1.0);
    opt.step(oc.lr);
    if (i >= warmup) times.push_back(seconds_since(t0));
  }
  report("train", median(times), double(B * T), 3.0 * double(B) * forward_flops(s, T, 0, T), 0);
}

void mode_prefill(const Shape& s, int64_t T, int64_t reps) {
  auto model = make_model(s, std::max<int64_t>(T, 1024));
  Rng rng(1);
  std::vector<double> times;
  for (int64_t i = 0; i < reps + 1; i++) {
    KVCache cache = model->make_cache(1, T);
    Tensor x = Tensor::from_ints(random_tokens(rng, T, s.V), {1, T});
    auto t0 = Clock::now();
    model->forward_cached(x, cache);
    if (i > 0) times.push_back(seconds_since(t0));
  }
  report("prefill", median(times), double(T), forward_flops(s, T, 0, 1), 0);
}

void mode_decode(const Shape& s, int64_t n) {
  const int64_t prompt = 16, cap = prompt + n;
  auto model = make_model(s, std::max<int64_t>(cap, 1024));
  Rng rng(1);
  KVCache cache = model->make_cache(1, cap);
  model->forward_cached(Tensor::from_ints(random_tokens(rng, prompt, s.V), {1, prompt}), cache);
  std::vector<double> times;
  for (int64_t i = 0; i < n; i++) {
    Tensor x = Tensor::from_ints(random_tokens(rng, 1, s.V), {1, 1});
    auto t0 = Clock::now();
    model->forward_cached(x, cache);
    times.push_back(seconds_since(t0));
  }
  // Bytes a token must read: every weight once (the position table: one row) plus the KV cache so far.
  double weights = 4.0 * double(model->num_params() - (model->config().block_size - 1) * s.C);
  if (g_bf16) weights -= 2.0 * double(s.L * 12 * s.C * s.C + s.V * s.C);  // the matrices are read as bf16
  double kv = 4.0 * 2.0 * double(s.L) * double(s.C) * double(prompt + n / 2);
  report("decode", median(times), 1.0, forward_flops(s, 1, prompt + n / 2, 1), weights + kv);
}

void mode_eval(const Shape& s, int64_t T, int64_t reps) {
  auto model = make_model(s, T);
  Rng rng(1);
  std::vector<double> times;
  for (int64_t i = 0; i < reps + 1; i++) {
    Tensor x = Tensor::from_ints(random_tokens(rng, T, s.V), {1, T});
    Tensor y = Tensor::from_ints(random_tokens(rng, T, s.V), {1, T});
    auto t0 = Clock::now();
    {
      NoGradGuard ng;
      model->loss(x, y).item();
    }
    if (i > 0) times.push_back(seconds_since(t0));
  }
  report("eval", median(times), double(T), forward_flops(s, T, 0, T), 0);
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s peak | bandwidth | train L H C V B T STEPS WARMUP | prefill L H C V T REPS |\n"
               "       decode L H C V N | eval L H C V T REPS | stream TYPE L C HIDDEN KV_WIDTH V REPS |\n"
               "       paired FILE BYTES N\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--bf16") {
    g_bf16 = true;
    set_matmul_precision(MatmulPrecision::BF16);
    argv++, argc--;
  }
  if (argc < 2) return usage(argv[0]);
  std::string mode = argv[1];
  auto arg = [&](int i) { return std::atoll(argv[i]); };
  if (mode == "peak" && argc == 2) {
    mode_peak();
  } else if (mode == "bandwidth" && argc == 2) {
    mode_bandwidth();
  } else if (mode == "train" && argc == 10) {
    mode_train(parse_shape(argv + 2), arg(6), arg(7), arg(8), arg(9));
  } else if (mode == "prefill" && argc == 8) {
    mode_prefill(parse_shape(argv + 2), arg(6), arg(7));
  } else if (mode == "decode" && argc == 7) {
    mode_decode(parse_shape(argv + 2), arg(6));
  } else if (mode == "stream" && argc == 9) {
    mode_stream(argv[2], arg(3), arg(4), arg(5), arg(6), arg(7), arg(8));
  } else if (mode == "paired" && argc == 5) {
    mode_paired(argv[2], arg(3), arg(4));
  } else if (mode == "eval" && argc == 8) {
    mode_eval(parse_shape(argv + 2), arg(6), arg(7));
  } else {
    return usage(argv[0]);
  }
  return 0;
}

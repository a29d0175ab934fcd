// aigc side of bench/run: times GPT training steps (forward, backward, clip, AdamW) on random tokens and prints
// one JSON line with the median step time. Usage: aigc_bench_train L H C V B T STEPS WARMUP
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/models/gpt.h"
#include "aigc/optim.h"
#include "aigc/rng.h"

using namespace aigc;

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s n_layer n_head n_embd vocab batch context steps warmup\n", argv[0]);
    return 2;
  }
  int64_t a[8];
  for (int i = 0; i < 8; i++) a[i] = std::atoll(argv[i + 1]);
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = a[0], c.n_head = a[1], c.n_embd = a[2], c.vocab_size = a[3], c.block_size = a[5];
  const int64_t B = a[4], T = a[5], steps = a[6], warmup = a[7];
  GPT model(c);
  model.init_weights(0);
  OptimConfig oc;
  oc.lr = 1e-4f;
  Optimizer opt(model.params(), oc);
  Rng rng(1);
  std::vector<int32_t> x(size_t(B * T)), y(size_t(B * T));
  std::vector<double> times;
  for (int64_t i = 0; i < warmup + steps; i++) {
    for (size_t j = 0; j < x.size(); j++) {
      x[j] = int32_t(rng.next_u64() % uint64_t(c.vocab_size));
      y[j] = int32_t(rng.next_u64() % uint64_t(c.vocab_size));
    }
    auto t0 = std::chrono::steady_clock::now();
    model.params().zero_grad();
    Tensor loss = model.loss(Tensor::from_ints(x, {B, T}), Tensor::from_ints(y, {B, T}));
    backward(loss);
    clip_grad_norm(model.params(), 1.0);
    opt.step(oc.lr);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) times.push_back(dt);
  }
  std::sort(times.begin(), times.end());
  double med = times[times.size() / 2];
  std::printf("{\"step_s\": %.6f, \"tokens_per_s\": %.2f, \"params\": %lld}\n", med, double(B * T) / med,
              (long long)model.num_params());
  return 0;
}

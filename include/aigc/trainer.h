// GPT training: text in, checkpoint + metrics out. Deterministic for a given seed and thread count, and
// resumable exactly (weights, optimizer state, step and data position all live in the checkpoint).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/models/gpt.h"
#include "aigc/optim.h"
#include "aigc/train_loop.h"

namespace aigc {

struct TrainOptions {
  std::vector<std::string> data_files;  // empty: the built-in corpus
  std::string tokenizer = "char";       // "bytes" | "char" | path to a BPE tokenizer (vocab.json + merges.txt)
  GPTConfig model;                      // vocab_size is taken from the tokenizer
  OptimConfig optim;
  int64_t batch_size = 16;
  int64_t grad_accum = 1;              // micro-batches per update
  int64_t steps = 1000;                // total updates (the LR schedule spans these)
  int64_t stop_after = 0;              // stop (and save) after this step; 0 = run to `steps`
  double max_minutes = 0;              // stop (and save) once this invocation has trained this long; 0 = none
  std::string lr_schedule = "cosine";  // "cosine" (after warmup) or "constant"
  float min_lr_ratio = 0.1f;
  int64_t warmup = 50;
  double grad_clip = 1.0;       // global-norm clipping; 0 disables
  int64_t eval_interval = 100;  // validate (and checkpoint) every N steps, and at the end
  int64_t sample_interval = 0;  // write samples/step_N.txt (200 tokens) every N steps; 0 = never
  int64_t eval_batches = 10;
  int64_t log_interval = 10;
  double val_fraction = 0.1;
  std::string out_dir = "runs/gpt";  // ckpt.safetensors + metrics.jsonl
  uint64_t seed = 1337;
  bool resume = false;    // continue from out_dir/ckpt.safetensors
  int max_bad_steps = 5;  // consecutive non-finite steps before giving up
  bool quiet = false;
  int rank = 0, world = 1;  // data-parallel shard of the batches this process trains on

  LoopOptions loop() const;  // the options the shared training loop takes from these
};

struct TrainResult {
  int64_t steps_done = 0;
  std::vector<float> losses;  // training loss of each step run in this invocation
  float last_val_loss = 0.0f;
  double tokens_per_s = 0.0;
  std::string checkpoint;
};

TrainResult train_gpt(const TrainOptions& opt, GradSync* sync = nullptr);

}  // namespace aigc

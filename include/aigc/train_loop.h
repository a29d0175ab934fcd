// The one training loop every model family runs. The loop owns what all runs share: the step count and
// --stop-after, the learning-rate schedule, gradient accumulation, data parallelism (GradSync), clipping, the
// non-finite policy, progress with ETA, metrics.jsonl, periodic evaluation, samples and checkpoints, exact resume and
// Ctrl-C. A family (GPT, DCGAN, DDPM) supplies a TrainTask: how to make one update from its batches, what its state is,
// how to save it and how to sample.
//
// Non-finite policy (one for all families): an update whose loss or gradient norm is not finite is not applied
// (the optimizer state is untouched, the step still counts and the data moves on); after max_bad_steps such
// updates in a row the run stops with an error naming the last good checkpoint.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace aigc {

class Optimizer;
class ParamStore;
class Tensor;

// Data-parallel training's part in the loop (src/dist implements it over MPI). Every rank runs the same loop on
// its own micro-batches; each model's gradients are averaged over the ranks bucket by bucket while the last
// micro-batch's backward still runs, so all ranks apply the same update; the per-update values are averaged
// too, and only rank 0 writes the run folder. The tests give the loop stand-ins (one process).
class GradSync {
 public:
  virtual ~GradSync() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // The backward between these two calls is the update's last for `params`: reduce its gradient buckets as
  // they become final.
  virtual void begin_last_backward(ParamStore& params) = 0;
  virtual void end_last_backward() = 0;
  // Waits until `params`' gradients are reduced; they are then the mean over the ranks.
  virtual void finish(ParamStore& params) = 0;
  enum class Op { Sum, Min, Max };
  // Element-wise over the ranks, in place, blocking.
  virtual void all_reduce(double* values, int64_t n, Op op) = 0;
  virtual void all_reduce(float* values, int64_t n, Op op) = 0;
  virtual void broadcast(float* values, int64_t n) = 0;  // rank 0's values to every rank
  // Where a fault report sends the user: "the last complete checkpoint is ... (step N)".
  virtual void set_recovery_note(const std::string&) {}
  // Since the last call: seconds spent reducing gradients (on the communication thread) and seconds the
  // training thread waited for them in finish(); the difference is what backward hid.
  struct Times {
    double reduce_s = 0, wait_s = 0;
  };
  virtual Times take_times() { return {}; }
};

struct LoopOptions {
  int64_t steps = 1000;                  // total updates (the LR schedule spans these)
  int64_t stop_after = 0;                // stop (and save) after this update; 0 = run to `steps`
  double max_minutes = 0;                // stop (and save) after the update that ends past this much training
                                         // time in this invocation; 0 = no limit
  int64_t grad_accum = 1;                // micro-batches per update
  float lr = 1e-3f;                      // peak learning rate
  std::string lr_schedule = "constant";  // "constant" or "cosine" (to min_lr_ratio * lr at `steps`)
  float min_lr_ratio = 0.1f;
  int64_t warmup = 0;     // linear warmup updates
  double grad_clip = 0;   // global-norm clipping per model; 0 = off
  int max_bad_steps = 5;  // consecutive non-finite updates before the run stops
  int64_t log_interval = 10;
  int64_t eval_interval = 0;    // evaluate every N updates and at the end; 0 = never
  int64_t ckpt_interval = 500;  // checkpoint every N updates; always at the end and on Ctrl-C
  int64_t sample_interval = 0;  // samples every N updates and at the end; 0 = never
  std::string out_dir = "runs/run";
  bool resume = false;
  bool quiet = false;        // no progress lines (ranks other than 0 are quiet unless --verbose)
  GradSync* sync = nullptr;  // data parallelism; none: one process
};

// The run folder: one layout for every family.
//   ckpt.safetensors   weights, optimizer state and the training state (written atomically)
//   metrics.jsonl      one JSON object per update
//   config.json        the options the run was started (or last resumed) with
//   samples/step_N.*   periodic samples (image grids, text)
class RunDir {
 public:
  explicit RunDir(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  std::string checkpoint() const;
  std::string metrics() const;
  std::string config() const;
  std::string sample(int64_t step, const std::string& ext) const;
  void create() const;
  // Only rank 0 writes a data-parallel run's folder; the others compute the same samples and write nothing.
  bool writer() const { return writer_; }
  void set_writer(bool w) { writer_ = w; }
  void write_config(const nlohmann::json& config) const;
  // Keeps the lines of metrics.jsonl up to `step` (a resumed run redoes the updates after its checkpoint, so
  // their old lines go) or, for a fresh run, none.
  void trim_metrics(int64_t step) const;

 private:
  std::string dir_;
  bool writer_ = true;
};

// Named values of one update (losses first, then anything else the family reports), in display order.
struct StepValues {
  std::vector<std::pair<std::string, double>> items;
  void add(const std::string& name, double v) { items.emplace_back(name, v); }
  double get(const std::string& name) const;  // throws when missing
};

// What an update sees: its schedule, and `apply`, which turns one model's accumulated gradients into an update
// under the loop's policy (hook, clip, finite check, optimizer step).
class StepContext {
 public:
  int64_t step = 0;           // 0-based index of this update
  int64_t micro_batches = 1;  // grad_accum: backward each micro-batch's loss scaled by 1 / micro_batches
  float lr = 0;
  // Backpropagates micro-batch `micro`'s loss into `params`, scaled by sign / micro_batches; the last
  // micro-batch's backward starts the ranks' gradient reduction as buckets become final.
  void backward(const Tensor& loss, ParamStore& params, int64_t micro, float sign = 1.0f);
  GradSync* sync() const { return sync_; }  // null: one process
  // Returns false when the update was skipped (non-finite loss or gradient norm). `model` names the network in
  // metrics and progress when a family updates several (the GAN's "d" and "g").
  bool apply(ParamStore& params, Optimizer& opt, double loss, const std::string& model = "");
  bool skipped() const { return skipped_; }
  // Gradient norms (before clipping) of the models applied so far, in order, with their names (a model applied
  // more than once: its last).
  const std::vector<std::pair<std::string, double>>& grad_norms() const { return norms_; }

 private:
  friend struct LoopRunner;
  const LoopOptions* opt_ = nullptr;
  GradSync* sync_ = nullptr;
  bool skipped_ = false;
  std::vector<std::pair<std::string, double>> norms_;
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;
  virtual int64_t start_step() const = 0;        // 0, or the step of the checkpoint resumed from
  virtual std::string unit() const = 0;          // "tokens" or "images": the throughput unit
  virtual int64_t units_per_update() const = 0;  // on one rank
  virtual int64_t batch_size() const = 0;        // examples per micro-batch
  // The models' parameters: data-parallel ranks start from rank 0's.
  virtual std::vector<ParamStore*> param_stores() = 0;
  // One update: draw micro_batches batches, backward, ctx.apply each optimizer; returns the losses (and other
  // per-update values) for metrics and progress.
  virtual StepValues update(StepContext& ctx) = 0;
  // Evaluation values (e.g. val_loss), at eval_interval.
  virtual StepValues evaluate() { return {}; }
  // Writes a sample to run.sample(step, ext) and returns its path ("" when the family has none).
  virtual std::string sample(const RunDir&, int64_t) { return ""; }
  // Saves the checkpoint (atomically) with the step reached and the task's own state (data position, RNGs).
  virtual void save(const RunDir& run, int64_t step) = 0;
  // The family's options as a JSON object, for the run's config.json.
  virtual std::string config_json() const { return "{}"; }
};

struct LoopResult {
  int64_t first_step = 0, steps_done = 0;  // the step it started from and the step it reached
  std::vector<StepValues> history;         // one entry per update run in this invocation
  StepValues last_eval;
  double units_per_s = 0;  // mean over this invocation, all ranks together
  bool interrupted = false;
  std::string checkpoint;
};

LoopResult run_training(TrainTask& task, const LoopOptions& opt);

// "1m02s": a duration for progress lines.
std::string format_duration(double seconds);

}  // namespace aigc

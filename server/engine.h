// The text engine behind `aigc serve`: a bounded queue in front of the decode loop (decoder.h: N slots in one KV
// cache, one batched forward pass per step). A request joins between steps, when a slot is free, and leaves when
// it stops, hits its limit, is cancelled or times out; the others keep going. One thread runs the model; HTTP
// threads only submit jobs and receive text through callbacks.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aigc/decoder.h"

namespace aigc::serve {

struct JobResult {
  std::string finish_reason;  // "stop" (stop string or end of text), "length", "cancelled", "timeout", "error"
  std::string error;          // for "error"
  int n_prompt = 0, n_generated = 0;
};

// One sequence to generate: the decode job, plus what the server adds. Callbacks run on the engine thread and
// must be quick (queue the text and return).
struct TextJob : DecodeJob {
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::function<void(const JobResult&)> on_done;  // exactly once
  std::atomic<bool> cancelled{false};             // set from any thread (e.g. the client went away)
};

struct EngineStats {
  int slots_total = 0, slots_busy = 0, queued = 0;
  uint64_t jobs_done = 0, jobs_cancelled = 0, prompt_tokens = 0, generated_tokens = 0, decode_steps = 0,
           decode_rows = 0;
  uint64_t jobs_refused = 0;    // submissions turned away because the queue was full
  double job_seconds = 0;       // summed time in a slot of finished jobs (mean = job_seconds / jobs_done)
  double max_queue_wait_s = 0;  // the longest a job has waited for a slot
};

enum class Submit { Accepted, QueueFull, Draining };

class TextEngine {
 public:
  // ctx: positions per slot (prompt + generated), at most the model's context.
  TextEngine(GPT& model, const Tokenizer& tok, int n_slots, int ctx, DType kv = DType::F32);  // kv: the cache's type
  ~TextEngine();  // stops the model thread; jobs still queued or running end as "cancelled"
  TextEngine(const TextEngine&) = delete;
  TextEngine& operator=(const TextEngine&) = delete;

  // Queues all the jobs or none (no callback then): QueueFull when more than `max_queued` would be waiting for a
  // slot, Draining once draining has begun.
  Submit submit(const std::vector<std::shared_ptr<TextJob>>& jobs, size_t max_queued);
  // Stops taking jobs and waits until every queued and running one has finished, at most `limit`.
  // Returns true when all finished.
  bool drain(std::chrono::milliseconds limit);
  bool draining() const { return draining_; }
  EngineStats stats() const;
  // Held by the model thread for each step; other users of the same weights or backend take it too.
  std::mutex& compute_mutex() { return compute_mu_; }
  int context() const { return dec_.context(); }
  // The kernels' thread count of the thread that made the engine (`aigc serve -t N`). OpenMP keeps that setting
  // per thread, so every thread that computes (the model thread, HTTP threads making images) applies it.
  int threads() const { return threads_; }

 private:
  void loop();
  void admit(int s, std::shared_ptr<TextJob> job);
  void end_finished();  // reports the decoder's ended sequences to their jobs and frees their slots
  void end_now(int s, const std::string& reason);  // a reserved slot's job ends before it starts
  void report(int s, const JobResult& r);

  const int threads_;
  Decoder dec_;
  std::vector<std::shared_ptr<TextJob>> jobs_;  // per slot; null when free (set when reserved)
  std::vector<std::chrono::steady_clock::time_point> admitted_;
  mutable std::mutex mu_;  // guards queue_, busy_, stop_, and the counters below
  std::condition_variable cv_;
  std::deque<std::pair<std::shared_ptr<TextJob>, std::chrono::steady_clock::time_point>> queue_;  // (job, queued at)
  int busy_ = 0;
  bool stop_ = false;
  std::atomic<bool> draining_{false};
  EngineStats counters_;
  std::mutex compute_mu_;
  std::thread thread_;
};

}  // namespace aigc::serve

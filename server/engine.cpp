#include "engine.h"

#include <algorithm>

#include "aigc/backend.h"
#include "aigc/error.h"

namespace aigc::serve {

using Clock = std::chrono::steady_clock;

TextEngine::TextEngine(GPT& model, const Tokenizer& tok, int n_slots, int ctx, DType kv)
    : threads_(get_num_threads()),
      dec_(model, tok, n_slots, ctx, kv),
      jobs_(size_t(n_slots)),
      admitted_(size_t(n_slots)) {
  counters_.slots_total = n_slots;
  thread_ = std::thread([this] { loop(); });
}

TextEngine::~TextEngine() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  JobResult r;
  r.finish_reason = "cancelled";
  for (auto& [job, queued] : queue_) job->on_done(r);
  for (int s = 0; s < dec_.slots(); s++) dec_.stop(s, "cancelled");
  end_finished();
}

Submit TextEngine::submit(const std::vector<std::shared_ptr<TextJob>>& jobs, size_t max_queued) {
  for (const auto& job : jobs)
    AIGC_CHECK(!job->prompt.empty() && int(job->prompt.size()) < dec_.context(),
               "submit: the prompt must fit the context");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (draining_ || stop_) return Submit::Draining;
    // Free slots take the first jobs of the queue at the next step: only what is left over waits.
    const size_t free_slots = jobs_.size() - size_t(busy_), total = queue_.size() + jobs.size();
    if (total > free_slots && total - free_slots > max_queued) {
      counters_.jobs_refused++;
      return Submit::QueueFull;
    }
    const auto now = Clock::now();
    for (const auto& job : jobs) queue_.emplace_back(job, now);
  }
  cv_.notify_all();
  return Submit::Accepted;
}

bool TextEngine::drain(std::chrono::milliseconds limit) {
  draining_ = true;
  std::unique_lock<std::mutex> lk(mu_);
  return cv_.wait_for(lk, limit, [&] { return queue_.empty() && busy_ == 0; });
}

EngineStats TextEngine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  EngineStats s = counters_;
  s.slots_busy = busy_, s.queued = int(queue_.size());
  return s;
}

void TextEngine::loop() {
  set_num_threads(threads_);
  for (;;) {
    std::vector<std::shared_ptr<TextJob>> admitted;
    std::vector<int> free_slots;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty() || busy_ > 0; });
      if (stop_) return;
      const auto now = Clock::now();
      for (size_t s = 0; s < jobs_.size() && !queue_.empty(); s++)
        if (!jobs_[s]) {
          admitted.push_back(queue_.front().first);
          counters_.max_queue_wait_s =
              std::max(counters_.max_queue_wait_s, std::chrono::duration<double>(now - queue_.front().second).count());
          queue_.pop_front();
          free_slots.push_back(int(s));
          jobs_[s] = admitted.back();  // reserved: the slot counts as busy from now on
          busy_++;
        }
    }
    std::lock_guard<std::mutex> compute(compute_mu_);
    // Jobs join between steps: each new prompt is prefilled into its slot, then decodes with the others.
    for (size_t i = 0; i < admitted.size(); i++) admit(free_slots[i], admitted[i]);
    const auto now = Clock::now();
    for (int s = 0; s < dec_.slots(); s++) {
      if (!dec_.busy(s)) continue;
      if (jobs_[size_t(s)]->cancelled)
        dec_.stop(s, "cancelled");
      else if (now > jobs_[size_t(s)]->deadline)
        dec_.stop(s, "timeout");
    }
    dec_.step();
    {
      std::lock_guard<std::mutex> lk(mu_);
      const DecodeCounters& d = dec_.counters();
      counters_.prompt_tokens = d.prompt_tokens, counters_.generated_tokens = d.generated_tokens;
      counters_.decode_steps = d.decode_steps, counters_.decode_rows = d.decode_rows;
    }
    end_finished();
  }
}

void TextEngine::admit(int s, std::shared_ptr<TextJob> job) {
  admitted_[size_t(s)] = Clock::now();
  if (job->cancelled) return end_now(s, "cancelled");
  if (Clock::now() > job->deadline) return end_now(s, "timeout");  // timed out while queued
  dec_.start(s, job);
}

void TextEngine::end_now(int s, const std::string& reason) {
  JobResult r;
  r.finish_reason = reason, r.n_prompt = int(jobs_[size_t(s)]->prompt.size());
  report(s, r);
}

void TextEngine::end_finished() {
  for (auto& [s, end] : dec_.take_finished()) {
    JobResult r;
    r.finish_reason = end.reason == "eos" ? "stop" : end.reason;  // OpenAI's reason for the end of text
    r.error = end.error, r.n_prompt = end.n_prompt, r.n_generated = end.n_generated;
    report(s, r);
  }
}

void TextEngine::report(int s, const JobResult& r) {
  std::shared_ptr<TextJob> job = std::move(jobs_[size_t(s)]);
  jobs_[size_t(s)].reset();
  {
    std::lock_guard<std::mutex> lk(mu_);
    busy_--;
    counters_.jobs_done++;
    counters_.job_seconds += std::chrono::duration<double>(Clock::now() - admitted_[size_t(s)]).count();
    counters_.jobs_cancelled += r.finish_reason == "cancelled";
  }
  if (job && job->on_done) job->on_done(r);
  cv_.notify_all();  // drain() may be waiting
}

}  // namespace aigc::serve

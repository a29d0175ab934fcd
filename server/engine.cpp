#include "engine.h"

#include <algorithm>
#include <limits>

#include "aigc/backend.h"
#include "aigc/error.h"

namespace aigc::serve {

using Clock = std::chrono::steady_clock;

TextEngine::TextEngine(GPT& model, const Tokenizer& tok, int n_slots, int ctx)
    : model_(model), tok_(tok), ctx_(ctx), threads_(get_num_threads()), slots_(size_t(n_slots)) {
  AIGC_CHECK(n_slots >= 1 && n_slots <= 256, "--parallel must be between 1 and 256");
  AIGC_CHECK(ctx >= 2 && ctx <= model.config().block_size,
             "--ctx must be between 2 and the model's context (" + std::to_string(model.config().block_size) + ")");
  cache_ = model_.make_cache(n_slots, ctx_);
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
  for (size_t s = 0; s < slots_.size(); s++)
    if (slots_[s].job) finish(int(s), "cancelled");
}

Submit TextEngine::submit(const std::vector<std::shared_ptr<TextJob>>& jobs, size_t max_queued) {
  for (const auto& job : jobs)
    AIGC_CHECK(!job->prompt.empty() && int(job->prompt.size()) < ctx_, "submit: the prompt must fit the context");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (draining_ || stop_) return Submit::Draining;
    // Free slots take the first jobs of the queue at the next step: only what is left over waits.
    const size_t free_slots = slots_.size() - size_t(busy_), total = queue_.size() + jobs.size();
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
      for (size_t s = 0; s < slots_.size() && !queue_.empty(); s++)
        if (!slots_[s].job) {
          admitted.push_back(queue_.front().first);
          counters_.max_queue_wait_s =
              std::max(counters_.max_queue_wait_s, std::chrono::duration<double>(now - queue_.front().second).count());
          queue_.pop_front();
          free_slots.push_back(int(s));
          slots_[s].job = admitted.back();  // reserved: the slot counts as busy from now on
          busy_++;
        }
    }
    std::lock_guard<std::mutex> compute(compute_mu_);
    // Jobs join between steps: each new prompt is prefilled into its slot, then decodes with the others.
    for (size_t i = 0; i < admitted.size(); i++) admit(free_slots[i], admitted[i]);
    std::vector<int> busy;
    const auto now = Clock::now();
    for (size_t s = 0; s < slots_.size(); s++) {
      if (!slots_[s].job) continue;
      if (slots_[s].job->cancelled) {
        finish(int(s), "cancelled");
      } else if (now > slots_[s].job->deadline) {
        finish(int(s), "timeout");
      } else {
        busy.push_back(int(s));
      }
    }
    if (!busy.empty()) decode_step(busy);
  }
}

void TextEngine::admit(int s, std::shared_ptr<TextJob> job) {
  Slot& sl = slots_[size_t(s)];
  sl.stream = std::make_unique<TextStream>(tok_, job->opt.stop);
  sl.tokens = job->prompt;
  sl.rng = Rng(job->opt.sampling.seed);
  sl.n_generated = 0;
  sl.admitted = Clock::now();
  sl.json = job->json_schema ? std::make_unique<JsonConstraint>(job->json_schema) : nullptr;
  if (job->cancelled) return finish(s, "cancelled");
  if (Clock::now() > job->deadline) return finish(s, "timeout");  // timed out while queued
  try {
    KVCache view = cache_.slot(s);
    const std::vector<int32_t> ids(job->prompt.begin(), job->prompt.end());
    Tensor logits = model_.forward_cached(Tensor::from_ints(ids, {1, int64_t(ids.size())}), view);  // (1,V)
    sl.pos = int32_t(ids.size());
    {
      std::lock_guard<std::mutex> lk(mu_);
      counters_.prompt_tokens += ids.size();
    }
    accept(s, logits.f32());
  } catch (const std::exception& e) {
    finish(s, "error", e.what());
  }
}

void TextEngine::decode_step(const std::vector<int>& busy) {
  std::vector<int32_t> tokens, slots, pos;
  for (int s : busy) {
    tokens.push_back(slots_[size_t(s)].next), slots.push_back(s), pos.push_back(slots_[size_t(s)].pos);
  }
  try {
    Tensor logits = model_.forward_decode(tokens, slots, pos, cache_);  // (B,V)
    {
      std::lock_guard<std::mutex> lk(mu_);
      counters_.decode_steps++, counters_.decode_rows += busy.size();
    }
    const int64_t V = logits.size(1);
    for (size_t i = 0; i < busy.size(); i++) {
      slots_[size_t(busy[i])].pos++;
      accept(busy[i], logits.f32() + int64_t(i) * V);
    }
  } catch (const std::exception& e) {
    for (int s : busy)
      if (slots_[size_t(s)].job) finish(s, "error", e.what());
  }
}

void TextEngine::accept(int s, const float* logits) {
  Slot& sl = slots_[size_t(s)];
  TextJob& job = *sl.job;
  // A model vocabulary padded past the tokenizer's can never emit the padding.
  std::vector<float> lv(logits, logits + tok_.vocab_size());
  std::vector<float> pick;  // constrained: the logits with every token that cannot continue the JSON at -inf
  if (sl.json) {
    if (!trie_)
      trie_ = std::make_unique<TokenTrie>(tok_, tok_.eos_id() ? std::vector<int>{*tok_.eos_id()} : std::vector<int>{});
    allowed_.resize(lv.size());
    sl.json->allowed(*trie_, allowed_);
    pick = lv;
    bool any = false;
    for (size_t i = 0; i < pick.size(); i++)
      if (allowed_[i])
        any = true;
      else
        pick[i] = -std::numeric_limits<float>::infinity();
    if (!any) return finish(s, "error", "no token of this vocabulary can continue the JSON");
  }
  const int t = sample_token(sl.json ? pick : lv, sl.tokens, job.opt.sampling, sl.rng);
  if (sl.json && !sl.json->feed(tok_.decode_token(t)))  // cannot happen; if it does, this job alone ends
    return finish(s, "error", "constrained decoding sampled a token it had ruled out");
  if (job.top_logprobs >= 0 && job.on_token)
    job.on_token(token_logprob(lv.data(), int(lv.size()), t, job.top_logprobs));
  sl.n_generated++;
  {
    std::lock_guard<std::mutex> lk(mu_);
    counters_.generated_tokens++;
  }
  if (job.opt.stop_at_eos && tok_.eos_id() && t == *tok_.eos_id()) return finish(s, "stop");
  sl.tokens.push_back(t);
  const std::string text = sl.stream->push(t);
  if (!text.empty() && job.on_text) job.on_text(text);
  if (sl.stream->stopped()) return finish(s, "stop");
  if (sl.json && sl.json->complete()) return finish(s, "stop");  // the value is whole: nothing may follow
  // The next step would feed t at position pos: it must exist in the model's context.
  if (sl.n_generated >= job.opt.max_tokens || sl.pos >= ctx_) return finish(s, "length");
  sl.next = t;
}

void TextEngine::finish(int s, const std::string& reason, const std::string& error) {
  Slot& sl = slots_[size_t(s)];
  std::shared_ptr<TextJob> job = std::move(sl.job);
  sl.job.reset();
  if (sl.stream && (reason == "length" || reason == "stop")) {
    const std::string rest = sl.stream->finish();
    if (!rest.empty() && job->on_text) job->on_text(rest);
  }
  sl.stream.reset();
  JobResult r;
  r.finish_reason = reason, r.error = error;
  r.n_prompt = int(job->prompt.size()), r.n_generated = sl.n_generated;
  {
    std::lock_guard<std::mutex> lk(mu_);
    busy_--;
    counters_.jobs_done++;
    counters_.job_seconds += std::chrono::duration<double>(Clock::now() - sl.admitted).count();
    counters_.jobs_cancelled += reason == "cancelled";
  }
  if (job->on_done) job->on_done(r);
  cv_.notify_all();  // drain() may be waiting
}

}  // namespace aigc::serve

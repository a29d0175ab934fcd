#include "aigc/decoder.h"

#include <chrono>
#include <limits>

#include "aigc/error.h"

namespace aigc {

Decoder::Decoder(GPT& model, const Tokenizer& tok, int n_slots, int ctx, DType kv)
    : model_(model), tok_(tok), ctx_(ctx), slots_(size_t(n_slots)) {
  AIGC_CHECK(n_slots >= 1 && n_slots <= 256, "the number of parallel sequences must be between 1 and 256");
  AIGC_CHECK(ctx >= 2 && ctx <= model.config().block_size,
             "the context must be between 2 and the model's (" + std::to_string(model.config().block_size) + ")");
  cache_ = model_.make_cache(n_slots, ctx_, kv);
}

bool Decoder::any_busy() const {
  for (const Slot& sl : slots_)
    if (sl.job) return true;
  return false;
}

void Decoder::start(int s, std::shared_ptr<DecodeJob> job) {
  AIGC_CHECK(!busy(s), "slot " + std::to_string(s) + " is busy");
  AIGC_CHECK(
      !job->prompt.empty() && int(job->prompt.size()) < ctx_,
      "the prompt has " + std::to_string(job->prompt.size()) + " tokens; the context is " + std::to_string(ctx_));
  Slot& sl = slots_[size_t(s)];
  sl.job = std::move(job);
  const DecodeJob& j = *sl.job;
  sl.stream = std::make_unique<TextStream>(tok_, j.opt.stop);
  sl.tokens = j.prompt;
  sl.rng = Rng(j.opt.sampling.seed);
  sl.n_generated = 0;
  sl.shifts = 0, sl.shift_s = 0;
  sl.json = j.json_schema ? std::make_unique<JsonConstraint>(j.json_schema) : nullptr;
  counters_.prompt_tokens += j.prompt.size();
  try {
    prefill(s, j.prompt);
  } catch (const std::exception& e) {
    finish(s, "error", e.what());
  }
}

void Decoder::prefill(int s, const std::vector<int>& ids, bool shift) {
  const auto t0 = std::chrono::steady_clock::now();
  KVCache view = cache_.slot(s);
  const std::vector<int32_t> ids32(ids.begin(), ids.end());
  Tensor logits = model_.forward_cached(Tensor::from_ints(ids32, {1, int64_t(ids32.size())}), view);  // (1,V)
  Slot& sl = slots_[size_t(s)];
  sl.pos = int32_t(ids32.size());
  // Counted before the token it gives is accepted, which may end the job.
  if (shift) sl.shifts++, sl.shift_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  accept(s, logits.f32());
}

void Decoder::step() {
  std::vector<int32_t> tokens, rows, pos;
  for (size_t s = 0; s < slots_.size(); s++)
    if (slots_[s].job) tokens.push_back(slots_[s].next), rows.push_back(int32_t(s)), pos.push_back(slots_[s].pos);
  if (rows.empty()) return;
  try {
    Tensor logits = model_.forward_decode(tokens, rows, pos, cache_);  // (B,V)
    counters_.decode_steps++, counters_.decode_rows += rows.size();
    const int64_t V = logits.size(1);
    for (size_t i = 0; i < rows.size(); i++) {
      slots_[size_t(rows[i])].pos++;
      accept(rows[i], logits.f32() + int64_t(i) * V);
    }
  } catch (const std::exception& e) {
    for (int32_t s : rows)
      if (slots_[size_t(s)].job) finish(s, "error", e.what());
  }
}

void Decoder::accept(int s, const float* logits) {
  Slot& sl = slots_[size_t(s)];
  const DecodeJob& job = *sl.job;
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
  counters_.generated_tokens++;
  if (job.opt.stop_at_eos && tok_.eos_id() && t == *tok_.eos_id()) return finish(s, "eos");
  sl.tokens.push_back(t);
  const std::string text = sl.stream->push(t);
  if (!text.empty() && job.on_text) job.on_text(text);
  if (sl.stream->stopped()) return finish(s, "stop");
  if (sl.json && sl.json->complete()) return finish(s, "stop");  // the value is whole: nothing may follow
  if (sl.n_generated >= job.opt.max_tokens) return finish(s, "length");
  // The next step would feed t at position pos: it must exist in the context.
  if (sl.pos >= ctx_) {
    if (!job.shift_context) return finish(s, "length");
    // Context full: a fresh cache from the last half of the tokens, and the next token from there.
    const std::vector<int> keep(sl.tokens.end() - ctx_ / 2, sl.tokens.end());
    return prefill(s, keep, true);
  }
  sl.next = t;
}

void Decoder::stop(int s, const std::string& reason) {
  if (busy(s)) finish(s, reason);
}

void Decoder::finish(int s, const std::string& reason, const std::string& error) {
  Slot& sl = slots_[size_t(s)];
  std::shared_ptr<DecodeJob> job = std::move(sl.job);
  sl.job.reset();
  if (sl.stream && (reason == "length" || reason == "stop" || reason == "eos")) {
    const std::string rest = sl.stream->finish();
    if (!rest.empty() && job->on_text) job->on_text(rest);
  }
  sl.stream.reset();
  sl.json.reset();
  DecodeEnd end;
  end.reason = reason, end.error = error;
  end.n_prompt = int(job->prompt.size()), end.n_generated = sl.n_generated;
  end.context_shifts = sl.shifts, end.shift_s = sl.shift_s;
  finished_.emplace_back(s, std::move(end));
}

std::vector<std::pair<int, DecodeEnd>> Decoder::take_finished() {
  std::vector<std::pair<int, DecodeEnd>> out;
  out.swap(finished_);
  return out;
}

}  // namespace aigc

// The one decode loop, shared by `aigc generate` and the server. A Decoder holds N sequences (slots) in one KV
// cache; step() decodes one token for every busy slot in a single batched forward pass (continuous batching).
// A sequence starts in a free slot once its prompt is prefilled, and ends when it stops (end of text, a stop
// string, a complete JSON value), reaches its limit, or is stopped from outside; the others keep going.
// The CLI is a decoder with one slot.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aigc/generate.h"
#include "aigc/json_constraint.h"

namespace aigc {

// One sequence to decode. Callbacks run on the decoding thread and must be quick.
struct DecodeJob {
  std::vector<int> prompt;                        // token ids, non-empty, shorter than the decoder's context
  GenerateOptions opt;                            // sampling, max_tokens, stop strings, stop_at_eos
  std::shared_ptr<const JsonSchema> json_schema;  // set: only tokens that continue a matching JSON value
  int top_logprobs = -1;       // -1: none; 0..20: each token's log-probability with this many alternatives
  bool shift_context = false;  // context full: continue from the last half of the tokens (else end "length")
  std::function<void(const TokenLogprob&)> on_token;  // each sampled token (when top_logprobs >= 0), before its text
  std::function<void(const std::string&)> on_text;    // each piece of final text (whole UTF-8 characters)
};

struct DecodeEnd {
  // "eos" (end-of-text token), "stop" (a stop string, or a complete JSON value), "length", "error", or the
  // reason given to stop().
  std::string reason;
  std::string error;  // for "error"
  int n_prompt = 0, n_generated = 0;
  // Context shifts (jobs with shift_context): each a prefill of the last half of the context, inside the decoding
  // time; their number and seconds, so that a tokens/s figure that includes them can be read.
  int context_shifts = 0;
  double shift_s = 0;
};

struct DecodeCounters {
  uint64_t prompt_tokens = 0, generated_tokens = 0, decode_steps = 0, decode_rows = 0;
};

class Decoder {
 public:
  // ctx: positions per slot (prompt + generated), at most the model's context.
  Decoder(GPT& model, const Tokenizer& tok, int n_slots, int ctx, DType kv = DType::F32);  // kv: the cache's type
  int slots() const { return int(slots_.size()); }
  int context() const { return ctx_; }
  bool busy(int s) const { return slots_[size_t(s)].job != nullptr; }
  bool any_busy() const;
  // Prefills the job's prompt into free slot s and samples its first token (the job may end at once).
  void start(int s, std::shared_ptr<DecodeJob> job);
  // One token for every busy slot.
  void step();
  // Ends slot s now with `reason` (text held back for stop strings is dropped).
  void stop(int s, const std::string& reason);
  // The sequences that ended since the last call, with their slots.
  std::vector<std::pair<int, DecodeEnd>> take_finished();
  const DecodeCounters& counters() const { return counters_; }

 private:
  struct Slot {
    std::shared_ptr<DecodeJob> job;  // null when free
    std::unique_ptr<TextStream> stream;
    std::vector<int> tokens;  // prompt + generated, for the penalties and context shifts
    Rng rng{0};
    int32_t next = 0, pos = 0;  // token to feed next and its position
    int n_generated = 0;
    int shifts = 0;
    double shift_s = 0;
    std::unique_ptr<JsonConstraint> json;  // the JSON so far, when constrained
  };
  // Into an empty slot, then the next token; `shift`: a context shift's, counted in the slot's shifts.
  void prefill(int s, const std::vector<int>& ids, bool shift = false);
  void accept(int s, const float* logits);  // one sampled token of slot s
  void finish(int s, const std::string& reason, const std::string& error = "");

  GPT& model_;
  const Tokenizer& tok_;
  const int ctx_;
  KVCache cache_;
  std::vector<Slot> slots_;
  std::unique_ptr<TokenTrie> trie_;  // the vocabulary for constrained jobs, built at the first one
  std::vector<uint8_t> allowed_;
  std::vector<std::pair<int, DecodeEnd>> finished_;
  DecodeCounters counters_;
};

}  // namespace aigc

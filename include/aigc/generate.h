// Text generation: llama.cpp-style sampling controls over a GPT with a KV cache, streaming decoded text.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aigc/models/gpt.h"
#include "aigc/rng.h"
#include "aigc/tokenizer.h"

namespace aigc {

struct SamplingOptions {
  float temperature = 0.8f;        // 0 = greedy
  int top_k = 40;                  // 0 = off
  float top_p = 0.95f;             // 1 = off
  float min_p = 0.05f;             // 0 = off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;     // 1 = off; divides positive logits / multiplies negative ones of recent tokens
  int repeat_last_n = 64;          // window for the three penalties (0 = off, -1 = whole context)
  float presence_penalty = 0.0f;   // OpenAI's: subtracted from the logit of every token seen in the window
  float frequency_penalty = 0.0f;  // OpenAI's: subtracted once per occurrence in the window
  uint64_t seed = 0;
};

// Picks the next token from logits (V). `recent` holds the tokens generated/prompted so far.
// Order as in llama.cpp: penalties (repetition, presence, frequency), top-k, top-p, min-p, temperature, a draw.
int sample_token(std::vector<float> logits, const std::vector<int>& recent, const SamplingOptions& opt, Rng& rng);

// A sampled token's log-probability under the model (log-softmax of its raw logits: before penalties,
// temperature and truncation), with the most likely alternatives at that position.
struct TokenLogprob {
  int token = 0;
  float logprob = 0;
  std::vector<std::pair<int, float>> top;  // (token, logprob), most likely first
};

// The log-probability of `token` and of the `top` most likely tokens under logits (V).
TokenLogprob token_logprob(const float* logits, int V, int token, int top);

struct GenerateOptions {
  SamplingOptions sampling;
  int max_tokens = 200;
  std::vector<std::string> stop;  // stop when the output ends with any of these (not printed)
  bool stop_at_eos = true;
  DType kv_cache = DType::F32;  // the KV cache's type: F32 or F16
};

struct GenerateResult {
  std::string text;  // generated text (prompt excluded)
  int n_prompt = 0, n_generated = 0;
  double prefill_s = 0, decode_s = 0;
  std::string stop_reason;  // "length" | "stop" | "eos"
  int context_shifts = 0;   // prefills of the context's last half when it filled up, inside decode_s
  double shift_s = 0;
};

// Turns a stream of sampled tokens into text to show: whole UTF-8 characters only, and stop strings cut off and
// never shown (text that could still become a stop string is held back until it cannot).
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stop);
  // Adds a token; returns the text that became safe to show (possibly empty). After a stop string appears,
  // stopped() is true and the text before it has been returned.
  std::string push(int token);
  // At the end of generation (not after a stop): the text still held back.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  const Tokenizer& tok_;
  std::vector<std::string> stop_;
  Utf8StreamDecoder dec_;
  std::string pending_;
  bool stopped_ = false;
};

// Streams complete UTF-8 text through on_text as it is produced. When the context fills up, generation continues
// from the last half of the tokens (re-processed into a fresh KV cache). It runs the server's decode loop
// (decoder.h) with one slot.
GenerateResult generate(GPT& model, const Tokenizer& tok, const std::string& prompt, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text = {});

}  // namespace aigc

// Held-out evaluation: mean next-token cross-entropy and perplexity over a token stream.
#pragma once
#include <cstdint>
#include <vector>

#include "aigc/models/gpt.h"

namespace aigc {

struct EvalResult {
  double loss = 0;        // mean cross-entropy per predicted token (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted tokens
};

// Splits tokens into non-overlapping windows of the model's context length (each window predicts its own
// tokens 1..T from 0..T-1; the last window may be shorter) and averages over every predicted token.
EvalResult evaluate_tokens(GPT& model, const std::vector<int32_t>& tokens, int64_t batch = 4);

}  // namespace aigc

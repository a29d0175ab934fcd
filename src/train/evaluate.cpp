#include "aigc/evaluate.h"

#include <cmath>

#include "aigc/autograd.h"
#include "aigc/error.h"

namespace aigc {

EvalResult evaluate_tokens(GPT& model, const std::vector<int32_t>& tokens, int64_t batch) {
  AIGC_CHECK(tokens.size() >= 2, "evaluation needs at least 2 tokens; got " + std::to_string(tokens.size()));
  NoGradGuard ng;
  const int64_t T = model.config().block_size, n_pred = int64_t(tokens.size()) - 1;
  const int64_t n_full = n_pred / T, tail = n_pred % T;
  EvalResult r;
  double total = 0;
  // Scores windows [w0, w0 + b) of length len: inputs tokens[w*T + t], targets one position further.
  auto run = [&](int64_t w0, int64_t b, int64_t len) {
    std::vector<int32_t> x(size_t(b * len)), y(size_t(b * len));
    for (int64_t i = 0; i < b; i++)
      for (int64_t t = 0; t < len; t++) {
        x[size_t(i * len + t)] = tokens[size_t((w0 + i) * T + t)];
        y[size_t(i * len + t)] = tokens[size_t((w0 + i) * T + t + 1)];
      }
    Tensor loss = model.loss(Tensor::from_ints(x, {b, len}), Tensor::from_ints(y, {b, len}));
    total += double(loss.item()) * double(b * len);
    r.tokens += b * len;
  };
  for (int64_t w0 = 0; w0 < n_full; w0 += batch) run(w0, std::min(batch, n_full - w0), T);
  if (tail > 0) run(n_full, 1, tail);
  r.loss = total / double(r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace aigc

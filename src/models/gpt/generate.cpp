#include "aigc/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "aigc/error.h"

namespace aigc {

int sample_token(std::vector<float> logits, const std::vector<int>& recent, const SamplingOptions& opt, Rng& rng) {
  const int V = int(logits.size());
  AIGC_CHECK(V > 0, "sample_token: empty logits");
  const bool penalize = opt.repeat_penalty != 1.0f || opt.presence_penalty != 0.0f || opt.frequency_penalty != 0.0f;
  if (penalize && opt.repeat_last_n != 0) {
    size_t n = opt.repeat_last_n < 0 ? recent.size() : std::min(recent.size(), size_t(opt.repeat_last_n));
    std::unordered_map<int, int> count;
    for (auto it = recent.end() - long(n); it != recent.end(); ++it) count[*it]++;
    for (auto [t, c] : count) {
      if (t < 0 || t >= V) continue;
      float& l = logits[size_t(t)];
      l = l > 0 ? l / opt.repeat_penalty : l * opt.repeat_penalty;
      l -= opt.presence_penalty + float(c) * opt.frequency_penalty;
    }
  }
  if (opt.temperature <= 0.0f) return int(std::max_element(logits.begin(), logits.end()) - logits.begin());

  // Candidates sorted by logit, best first (ties by id: deterministic).
  std::vector<int> cand(static_cast<size_t>(V));
  std::iota(cand.begin(), cand.end(), 0);
  auto better = [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b); };
  size_t keep = opt.top_k > 0 ? std::min(size_t(opt.top_k), cand.size()) : cand.size();
  std::partial_sort(cand.begin(), cand.begin() + long(keep), cand.end(), better);
  cand.resize(keep);

  // Probabilities of the survivors (untempered), for top-p and min-p.
  auto probs_of = [&](const std::vector<int>& c, float temp) {
    std::vector<double> p(c.size());
    double mx = logits[size_t(c[0])], sum = 0;
    for (size_t i = 0; i < c.size(); i++) sum += p[i] = std::exp((double(logits[size_t(c[i])]) - mx) / temp);
    for (double& x : p) x /= sum;
    return p;
  };
  if (opt.top_p < 1.0f) {
    std::vector<double> p = probs_of(cand, 1.0f);
    double cum = 0;
    size_t n = 0;
    while (n < cand.size()) {
      cum += p[n++];
      if (cum >= opt.top_p) break;
    }
    cand.resize(std::max<size_t>(1, n));
  }
  if (opt.min_p > 0.0f) {
    std::vector<double> p = probs_of(cand, 1.0f);
    size_t n = 0;
    while (n < cand.size() && p[n] >= opt.min_p * p[0]) n++;
    cand.resize(std::max<size_t>(1, n));
  }
  std::vector<double> p = probs_of(cand, opt.temperature);
  double r = rng.uniform(), cum = 0;
  for (size_t i = 0; i < cand.size(); i++) {
    cum += p[i];
    if (r < cum) return cand[i];
  }
  // Rounding left r past the sum: the last candidate that can occur (never one ruled out with a logit of -inf).
  for (size_t i = cand.size(); i-- > 0;)
    if (p[i] > 0) return cand[i];
  return cand[0];
}

TextStream::TextStream(const Tokenizer& tok, std::vector<std::string> stop) : tok_(tok) {
  for (std::string& st : stop)
    if (!st.empty()) stop_.push_back(std::move(st));
}

std::string TextStream::push(int token) {
  if (stopped_) return "";
  pending_ += dec_.push(tok_.decode_token(token));
  size_t cut = std::string::npos;
  for (const std::string& st : stop_) cut = std::min(cut, pending_.find(st));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& st : stop_)
    for (size_t k = std::min(st.size() - 1, pending_.size()); k > hold; k--)
      if (pending_.compare(pending_.size() - k, k, st, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string TextStream::finish() {
  std::string out = stopped_ ? "" : pending_ + dec_.flush();
  pending_.clear();
  return out;
}

GenerateResult generate(GPT& model, const Tokenizer& tok, const std::string& prompt, const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text) {
  const int64_t ctx = model.config().block_size;
  std::vector<int> tokens = tok.encode(prompt);
  if (tokens.empty()) {
    // An empty prompt starts from the end-of-text token when there is one, else from a newline.
    auto eos = tok.eos_id();
    tokens = eos ? std::vector<int>{*eos} : tok.encode("\n");
  }
  AIGC_CHECK(int64_t(tokens.size()) < ctx, "the prompt has " + std::to_string(tokens.size()) +
                                               " tokens; the model's context is " + std::to_string(ctx));
  GenerateResult res;
  res.n_prompt = int(tokens.size());
  Rng rng(opt.sampling.seed);
  KVCache cache = model.make_cache(1, ctx);
  TextStream stream(tok, opt.stop);

  auto t0 = std::chrono::steady_clock::now();
  Tensor logits = model.forward_cached(Tensor::from_ints(std::vector<int32_t>(tokens.begin(), tokens.end()),
                                                         {1, int64_t(tokens.size())}),
                                       cache);
  res.prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto t1 = std::chrono::steady_clock::now();
  res.stop_reason = "length";
  auto emit = [&](const std::string& s) {
    res.text += s;
    if (on_text && !s.empty()) on_text(s);
  };
  while (res.n_generated < opt.max_tokens) {
    std::vector<float> lv = logits.to_vector();
    lv.resize(size_t(tok.vocab_size()));  // a model vocab padded past the tokenizer's can never emit padding
    int next = sample_token(std::move(lv), tokens, opt.sampling, rng);
    res.n_generated++;
    if (opt.stop_at_eos && tok.eos_id() && next == *tok.eos_id()) {
      res.stop_reason = "eos";
      break;
    }
    tokens.push_back(next);
    emit(stream.push(next));
    if (stream.stopped()) {
      res.stop_reason = "stop";
      break;
    }
    if (cache.pos >= ctx) {
      // Context full: start a fresh cache from the last half of the tokens and keep going.
      std::vector<int32_t> keep(tokens.end() - ctx / 2, tokens.end());
      cache = model.make_cache(1, ctx);
      logits = model.forward_cached(Tensor::from_ints(keep, {1, int64_t(keep.size())}), cache);
      continue;
    }
    logits = model.forward_cached(Tensor::from_ints({next}, {1, 1}), cache);
  }
  emit(stream.finish());
  res.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  return res;
}

TokenLogprob token_logprob(const float* logits, int V, int token, int top) {
  float mx = logits[0];
  for (int i = 1; i < V; i++) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < V; i++) sum += std::exp(double(logits[i] - mx));
  const float log_z = mx + float(std::log(sum));
  TokenLogprob r;
  r.token = token, r.logprob = logits[token] - log_z;
  std::vector<int> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int k = std::min(top, V);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int i = 0; i < k; i++) r.top.emplace_back(idx[size_t(i)], logits[idx[size_t(i)]] - log_z);
  return r;
}

}  // namespace aigc

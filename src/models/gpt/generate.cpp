#include "aigc/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "aigc/decoder.h"
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
  auto better = [&](int a, int b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
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
  const int64_t model_ctx = model.config().block_size;
  auto job = std::make_shared<DecodeJob>();
  job->prompt = tok.encode_prompt(prompt);
  AIGC_CHECK(int64_t(job->prompt.size()) < model_ctx, "the prompt has " + std::to_string(job->prompt.size()) +
                                                          " tokens; the model's context is " +
                                                          std::to_string(model_ctx));
  // The KV cache holds what this call can use, not the model's whole context (131,072 positions for Llama 3.2:
  // gigabytes): the prompt and the tokens asked for, within the model's context.
  const int ctx = int(std::clamp<int64_t>(int64_t(job->prompt.size()) + std::max(opt.max_tokens, 1), 2, model_ctx));
  GenerateResult res;
  job->opt = opt;
  job->shift_context = true;
  job->on_text = [&](const std::string& s) {
    res.text += s;
    if (on_text) on_text(s);
  };
  // The same decode loop as the server's, with one slot.
  Decoder dec(model, tok, 1, ctx, opt.kv_cache);
  auto t0 = std::chrono::steady_clock::now();
  dec.start(0, job);  // the prompt, and the first token
  auto t1 = std::chrono::steady_clock::now();
  while (dec.busy(0)) dec.step();
  res.prefill_s = std::chrono::duration<double>(t1 - t0).count();
  res.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const DecodeEnd end = dec.take_finished().at(0).second;
  AIGC_CHECK(end.reason != "error", "generation failed: " + end.error);
  res.n_prompt = end.n_prompt, res.n_generated = end.n_generated, res.stop_reason = end.reason;
  res.context_shifts = end.context_shifts, res.shift_s = end.shift_s;
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
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (int i = 0; i < k; i++) r.top.emplace_back(idx[size_t(i)], logits[idx[size_t(i)]] - log_z);
  return r;
}

}  // namespace aigc

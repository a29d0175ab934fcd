// Training end to end on the built-in corpus: exact resume, learning progress, checkpoints, generation, eval.
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/evaluate.h"
#include "aigc/generate.h"
#include "aigc/trainer.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

// A small corpus written by the test so it does not depend on installed packages.
std::string write_corpus(const fs::path& dir) {
  std::string text;
  const char* lines[] = {"the cat sat on the mat.\n", "a dog ran in the park.\n", "the sun is warm today.\n",
                         "birds sing in the morning.\n", "rain falls on the old roof.\n"};
  for (int i = 0; i < 400; i++) text += lines[(i * 7 + i / 5) % 5];
  fs::path p = dir / "corpus.txt";
  std::ofstream(p) << text;
  return p.string();
}

TrainOptions tiny_run(const fs::path& dir, const std::string& corpus) {
  TrainOptions o;
  o.data_files = {corpus};
  o.tokenizer = "char";
  o.model.n_layer = 2, o.model.n_head = 2, o.model.n_embd = 32, o.model.block_size = 32;
  o.model.dropout = 0.1f;  // exercises the dropout seeds in the resume path too
  o.batch_size = 4;
  o.steps = 20;
  o.warmup = 3;
  o.optim.lr = 3e-3f;
  o.eval_interval = 5;
  o.eval_batches = 2;
  o.out_dir = dir.string();
  o.quiet = true;
  return o;
}

std::vector<float> weights_of(const std::string& ckpt) {
  LoadedModel lm = load_model(ckpt);
  std::vector<float> w(lm.model->params().data(), lm.model->params().data() + lm.model->params().numel());
  return w;
}

}  // namespace

TEST(Training, ResumeIsBitwiseExact) {
  fs::path d = aigc::testing::fresh_temp_dir("resume");
  std::string corpus = write_corpus(d);
  TrainOptions straight = tiny_run(d / "straight", corpus);
  TrainResult a = train_gpt(straight);

  TrainOptions first = tiny_run(d / "split", corpus);
  first.stop_after = 10;
  TrainResult b1 = train_gpt(first);
  TrainOptions second = tiny_run(d / "split", corpus);
  second.resume = true;
  TrainResult b2 = train_gpt(second);

  ASSERT_EQ(a.losses.size(), 20u);
  ASSERT_EQ(b1.losses.size() + b2.losses.size(), 20u);
  std::vector<float> b = b1.losses;
  b.insert(b.end(), b2.losses.begin(), b2.losses.end());
  for (size_t i = 0; i < 20; i++) EXPECT_EQ(a.losses[i], b[i]) << "step " << i + 1;  // bitwise
  EXPECT_EQ(weights_of(a.checkpoint), weights_of(b2.checkpoint));
  fs::remove_all(d);
}

TEST(Training, SmokeValidationLossDrops) {
  // A small model on the repetitive corpus must get its validation loss (nats/char) below 1.0 within 300 steps;
  // a uniform guess over its ~25 characters scores ln(25) = 3.2.
  fs::path d = aigc::testing::fresh_temp_dir("smoke");
  TrainOptions o = tiny_run(d, write_corpus(d));
  o.model.dropout = 0.0f;
  o.steps = 300;
  o.eval_interval = 300;
  TrainResult r = train_gpt(o);
  EXPECT_LT(r.last_val_loss, 1.0f);

  // The checkpoint generates text and evaluates.
  LoadedModel lm = load_model(r.checkpoint);
  GenerateOptions g;
  g.max_tokens = 80;  // more than the context (32): exercises the context shift
  g.sampling.temperature = 0;
  std::string streamed;
  GenerateResult gr = generate(*lm.model, *lm.tokenizer, "the ", g, [&](const std::string& s) { streamed += s; });
  EXPECT_EQ(streamed, gr.text);
  EXPECT_EQ(gr.n_generated, 80);
  std::vector<int> ids = lm.tokenizer->encode("the cat sat on the mat.\nthe sun is warm today.\n");
  EvalResult er = evaluate_tokens(*lm.model, std::vector<int32_t>(ids.begin(), ids.end()));
  EXPECT_LT(er.loss, 1.5);
  EXPECT_NEAR(er.perplexity, std::exp(er.loss), 1e-9);
  fs::remove_all(d);
}

namespace {
GPTConfig tiny_gpt() {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 24, c.vocab_size = 13;
  return c;
}
// Llama with grouped-query heads (4 query heads, 2 kv heads) and a large rope base.
GPTConfig tiny_llama() {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 16, c.block_size = 24, c.vocab_size = 13;
  c.rope_theta = 500000.0f;
  return c;
}

// Greedy decoding with the KV cache must pick the same tokens as re-running the whole sequence each step.
void check_greedy_kv_cache(const GPTConfig& c) {
  GPT m(c);
  m.init_weights(5);
  std::vector<int32_t> seq = {1, 2, 3};
  KVCache cache = m.make_cache(1, c.block_size);
  Tensor logits = m.forward_cached(Tensor::from_ints(seq, {1, 3}), cache);
  for (int step = 0; step < 10; step++) {
    Tensor full = m.forward(Tensor::from_ints(seq, {1, int64_t(seq.size())}));
    std::vector<float> f = full.to_vector();
    std::vector<float> last(f.end() - c.vocab_size, f.end()), cached = logits.to_vector();
    for (int64_t v = 0; v < c.vocab_size; v++) ASSERT_NEAR(cached[size_t(v)], last[size_t(v)], 1e-5);
    int next = int(std::max_element(last.begin(), last.end()) - last.begin());
    seq.push_back(next);
    logits = m.forward_cached(Tensor::from_ints({next}, {1, 1}), cache);
  }
}
}  // namespace

TEST(Training, GreedyKvCacheMatchesFullForward) { check_greedy_kv_cache(tiny_gpt()); }
TEST(Training, LlamaGreedyKvCacheMatchesFullForward) { check_greedy_kv_cache(tiny_llama()); }

TEST(Training, NonFiniteLossStopsTheRunClearly) {
  fs::path d = aigc::testing::fresh_temp_dir("nan");
  TrainOptions o = tiny_run(d, write_corpus(d));
  o.optim.lr = 1e30f;  // explodes within a few steps
  o.grad_clip = 0;
  o.steps = 50;
  o.eval_interval = 1000;
  try {
    train_gpt(o);
    FAIL() << "expected the run to stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

namespace {
// Continuous batching: three sequences of different lengths in slots 2, 0, 3 of a 4-slot cache, decoded in one
// batch per step, give the logits each gets alone with a batch-1 cache.
void check_batched_decode(const GPTConfig& c) {
  GPT m(c);
  m.init_weights(7);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4}, {5, 6, 7, 8, 9}};
  const std::vector<int32_t> slots = {2, 0, 3};
  KVCache batch = m.make_cache(4, c.block_size);
  std::vector<KVCache> alone;
  std::vector<int32_t> next, pos;
  for (size_t i = 0; i < prompts.size(); i++) {
    const Tensor idx = Tensor::from_ints(prompts[i], {1, int64_t(prompts[i].size())});
    KVCache view = batch.slot(slots[i]);
    std::vector<float> a = m.forward_cached(idx, view).to_vector();
    alone.push_back(m.make_cache(1, c.block_size));
    std::vector<float> b = m.forward_cached(idx, alone.back()).to_vector();
    ASSERT_EQ(a, b);
    next.push_back(int32_t(std::max_element(a.begin(), a.end()) - a.begin()));
    pos.push_back(int32_t(prompts[i].size()));
  }
  for (int step = 0; step < 8; step++) {
    std::vector<float> logits = m.forward_decode(next, slots, pos, batch).to_vector();
    for (size_t i = 0; i < prompts.size(); i++) {
      std::vector<float> ref = m.forward_cached(Tensor::from_ints({next[i]}, {1, 1}), alone[i]).to_vector();
      for (int64_t v = 0; v < c.vocab_size; v++)
        ASSERT_NEAR(logits[i * size_t(c.vocab_size) + size_t(v)], ref[size_t(v)], 1e-5) << "row " << i;
      next[i] = int32_t(std::max_element(ref.begin(), ref.end()) - ref.begin());
      pos[i]++;
    }
  }
  EXPECT_THROW(m.forward_decode({1, 2}, {0, 0}, {3, 3}, batch), Error);  // one slot twice
  EXPECT_THROW(m.forward_decode({1}, {4}, {3}, batch), Error);           // no slot 4
  // Those errors left the step the backend's threads were held for (Backend::run_held): the next step runs.
  std::vector<float> again = m.forward_decode(next, slots, pos, batch).to_vector();
  std::vector<float> ref = m.forward_cached(Tensor::from_ints({next[0]}, {1, 1}), alone[0]).to_vector();
  for (int64_t v = 0; v < c.vocab_size; v++) ASSERT_NEAR(again[size_t(v)], ref[size_t(v)], 1e-5);
}
}  // namespace

TEST(Training, BatchedDecodeMatchesOneSequenceAtATime) { check_batched_decode(tiny_gpt()); }
TEST(Training, LlamaBatchedDecodeMatchesOneSequenceAtATime) { check_batched_decode(tiny_llama()); }

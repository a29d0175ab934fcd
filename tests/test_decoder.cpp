// The one decode loop (decoder.h): a batch of one is a batch, sequences sharing a step do not disturb each other,
// slots end and are reused, and the context either shifts (the CLI) or ends the sequence (the server).
#include <gtest/gtest.h>

#include <cmath>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/decoder.h"
#include "aigc/error.h"
#include "aigc/half.h"

using namespace aigc;

namespace {

struct Tiny {
  std::unique_ptr<Tokenizer> tok = load_tokenizer_spec("char", "abcdefghij klmnopqrst.\n");
  std::unique_ptr<GPT> model;
  Tiny() {
    GPTConfig c = GPTConfig::gpt2_style();
    c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 24, c.vocab_size = tok->vocab_size();
    model = std::make_unique<GPT>(c);
    model->init_weights(11);
  }
};

std::shared_ptr<DecodeJob> job(const Tiny& m, const std::string& prompt, uint64_t seed, int max_tokens,
                               std::string* text) {
  auto j = std::make_shared<DecodeJob>();
  j->prompt = m.tok->encode(prompt);
  j->opt.max_tokens = max_tokens;
  j->opt.sampling.seed = seed;
  j->opt.sampling.temperature = 1.0f, j->opt.sampling.top_k = 0, j->opt.sampling.top_p = 1.0f;
  j->opt.sampling.min_p = 0.0f;
  j->on_text = [text](const std::string& s) { *text += s; };
  return j;
}

}  // namespace

// Three sequences decoded together in a 4-slot decoder, one joining late, give the text each gets alone from
// generate() (a one-slot decoder).
TEST(Decoder, SequencesDecodedTogetherMatchEachAlone) {
  Tiny m;
  const std::vector<std::string> prompts = {"abc", "klm n", "."};
  std::vector<std::string> alone(3), together(3);
  for (size_t i = 0; i < 3; i++) {
    GenerateOptions g = job(m, prompts[i], 100 + i, 12, &alone[i])->opt;
    alone[i] = generate(*m.model, *m.tok, prompts[i], g).text;
  }
  Decoder dec(*m.model, *m.tok, 4, 24);
  dec.start(2, job(m, prompts[0], 100, 12, &together[0]));
  dec.start(0, job(m, prompts[1], 101, 12, &together[1]));
  dec.step(), dec.step();
  dec.start(3, job(m, prompts[2], 102, 12, &together[2]));  // joins between steps
  int steps = 0;
  while (dec.any_busy() && steps++ < 100) dec.step();
  EXPECT_EQ(alone, together);
  auto ends = dec.take_finished();
  ASSERT_EQ(ends.size(), 3u);
  for (auto& [slot, end] : ends) {
    EXPECT_EQ(end.reason, "length") << "slot " << slot;
    EXPECT_EQ(end.n_generated, 12);
  }
  EXPECT_GT(dec.counters().decode_rows, dec.counters().decode_steps);  // rows shared steps
}

// A sequence stopped from outside ends with that reason and its slot takes the next sequence.
TEST(Decoder, StoppedSlotsAreReused) {
  Tiny m;
  std::string a, b;
  Decoder dec(*m.model, *m.tok, 1, 24);
  dec.start(0, job(m, "abc", 1, 50, &a));
  dec.step();
  EXPECT_THROW(dec.start(0, job(m, "abc", 1, 5, &b)), Error);  // busy
  dec.stop(0, "cancelled");
  EXPECT_FALSE(dec.busy(0));
  auto ends = dec.take_finished();
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].second.reason, "cancelled");
  EXPECT_EQ(ends[0].second.n_generated, 2);
  dec.start(0, job(m, "abc", 1, 5, &b));
  while (dec.busy(0)) dec.step();
  EXPECT_EQ(dec.take_finished().at(0).second.n_generated, 5);
}

// At the end of the context a sequence ends "length" unless it shifts to the last half of its tokens and goes on
// (each shift counted and timed, for the figures that include it).
TEST(Decoder, ContextEndsOrShifts) {
  Tiny m;
  std::string a, b, c;
  Decoder dec(*m.model, *m.tok, 1, 16);
  auto run = [&](int max_tokens, bool shift, std::string* text) {  // "abcd" to the end
    auto j = job(m, "abcd", 3, max_tokens, text);
    j->shift_context = shift;
    dec.start(0, j);
    while (dec.busy(0)) dec.step();
    return dec.take_finished().at(0).second;
  };
  DecodeEnd end = run(100, false, &a);  // 4 prompt tokens: room for 12 more positions, then a last token
  EXPECT_EQ(end.reason, "length");
  EXPECT_EQ(end.n_generated, 13);
  EXPECT_EQ(end.context_shifts, 0);
  end = run(100, true, &b);
  EXPECT_EQ(end.n_generated, 100);
  // Shifts after tokens 13, 22, ..., 94: each keeps 8 positions, then 1 token from its prefill and 8 steps.
  EXPECT_EQ(end.context_shifts, 10);
  EXPECT_GT(end.shift_s, 0.0);
  end = run(14, true, &c);  // its last token comes from the first shift's prefill, which still counts
  EXPECT_EQ(end.n_generated, 14);
  EXPECT_EQ(end.context_shifts, 1);
  EXPECT_GT(end.shift_s, 0.0);
  EXPECT_EQ(b.substr(0, a.size()), a);                                        // the same sequence until the first shift
  EXPECT_THROW(dec.start(0, job(m, std::string(16, 'a'), 3, 5, &b)), Error);  // the prompt fills the context
}

// An f16 KV cache (llama.cpp's default, the CLI's and the server's) takes half the memory and decodes what an f32 one
// does to within its rounding: each step's logits, prompt and decoded positions, for GPT-2 and llama (grouped-query)
// blocks; the sequences decoded together still match each alone in it.
TEST(Decoder, HalfPrecisionCacheDecodesAsTheF32OneWithinItsRounding) {
  Tiny m;
  GPTConfig lc = GPTConfig::llama_style();
  lc.n_layer = 2, lc.n_head = 4, lc.n_kv_head = 2, lc.n_embd = 64, lc.n_hidden = 96, lc.block_size = 24;
  lc.vocab_size = m.tok->vocab_size();
  GPT llama(lc);
  llama.init_weights(12);
  for (GPT* model : {m.model.get(), &llama}) {
    SCOPED_TRACE(model->config().arch);
    KVCache c32 = model->make_cache(2, 24), c16 = model->make_cache(2, 24, DType::F16);
    EXPECT_EQ(c16.k[0].dtype(), DType::F16);
    EXPECT_EQ(dtype_bytes(c16.k[0].dtype(), c16.k[0].numel()) * 2, dtype_bytes(c32.k[0].dtype(), c32.k[0].numel()));
    NoGradGuard ng;
    auto close = [](const Tensor& a, const Tensor& b) {
      const std::vector<float> x = a.to_vector(), y = b.to_vector();
      float worst = 0, top = 0;
      for (size_t i = 0; i < x.size(); i++)
        worst = std::max(worst, std::fabs(x[i] - y[i])), top = std::max(top, std::fabs(x[i]));
      EXPECT_LT(worst, 2e-3f * top) << "worst " << worst << " of " << top;
      return worst;
    };
    const Tensor prompt = Tensor::from_ints({1, 5, 9, 2, 7}, {1, 5});
    KVCache s32 = c32.slot(1), s16 = c16.slot(1);
    close(model->forward_cached(prompt, s32), model->forward_cached(prompt, s16));
    float moved = 0;
    for (int32_t p = 5; p < 12; p++)
      moved = std::max(moved, close(model->forward_decode({p % 7 + 1}, {1}, {p}, c32),
                                    model->forward_decode({p % 7 + 1}, {1}, {p}, c16)));
    EXPECT_GT(moved, 0.0f);  // the halves are read: not the f32 values
  }
  std::string alone, together, other;
  GenerateOptions g = job(m, "abc", 7, 10, &alone)->opt;
  g.kv_cache = DType::F16;
  alone = generate(*m.model, *m.tok, "abc", g).text;
  Decoder dec(*m.model, *m.tok, 2, 24, DType::F16);
  dec.start(1, job(m, "abc", 7, 10, &together));
  dec.start(0, job(m, "klm", 8, 10, &other));  // a neighbour in the same steps
  for (int i = 0; i < 100 && dec.any_busy(); i++) dec.step();
  EXPECT_EQ(together, alone);
  EXPECT_THROW(m.model->make_cache(1, 8, DType::BF16), Error);
}

// Keys and values beyond the largest half saturate at +-65504 in an f16 cache instead of becoming infinite (an
// infinite key would turn its whole row of attention into NaN); prompts and decoding steps alike, both backends.
TEST(Decoder, HalfPrecisionCacheSaturatesHugeKeysAndValues) {
  const int64_t C = 32, NH = 2;
  std::vector<float> qkv(size_t(3 * 3 * C), 0.5f);
  for (int64_t t = 0; t < 3; t++) qkv[size_t(t * 3 * C + C + 1)] = 1e6f, qkv[size_t(t * 3 * C + 2 * C + 2)] = -1e6f;
  for (Backend* be : {&cpu_backend(), &reference_backend()}) {
    SCOPED_TRACE(be->name());
    std::vector<uint16_t> kc(size_t(NH * 8 * C / NH), 0), vc(kc.size(), 0);
    std::vector<float> out(size_t(3 * C), 0.0f);
    be->attention_cached(out.data(), qkv.data(), kc.data(), vc.data(), DType::F16, 1, 3, C, NH, NH, 0, 8);
    for (float x : out) ASSERT_TRUE(std::isfinite(x)) << x;
    EXPECT_EQ(io::f16_to_f32(kc[1]), 65504.0f);
    EXPECT_EQ(io::f16_to_f32(vc[2]), -65504.0f);
    const int32_t slot = 0, pos = 3;
    be->attention_decode(out.data(), qkv.data(), kc.data(), vc.data(), DType::F16, &slot, &pos, 1, C, NH, NH, 8);
    for (int64_t i = 0; i < C; i++) ASSERT_TRUE(std::isfinite(out[size_t(i)])) << i;
  }
  // Every backend stores the halves io::f32_to_f16_saturated gives: ties to even, subnormals, NaN, both signs.
  std::vector<float> row(size_t(3 * C), 0.0f);
  const float special[] = {1.0f + 1.0f / 2048,
                           1.0f + 3.0f / 2048,
                           3e-6f,
                           -7e-8f,
                           65519.0f,
                           -65520.0f,
                           1e-30f,
                           std::nanf(""),
                           0.1f,
                           -2.5e-5f,
                           1234.567f,
                           -0.0f,
                           6.1035156e-05f,
                           5.9604645e-08f,
                           2.9e-8f};
  for (int64_t i = 0; i < 2 * C; i++) row[size_t(C + i)] = special[i % 15] * (i % 3 == 2 ? -1.0f : 1.0f);
  for (Backend* be : {&cpu_backend(), &reference_backend()}) {
    SCOPED_TRACE(be->name());
    std::vector<uint16_t> kc(size_t(8 * C), 0), vc(kc.size(), 0);
    std::vector<float> out(static_cast<size_t>(C));
    const int32_t slot = 0, pos = 0;
    be->attention_decode(out.data(), row.data(), kc.data(), vc.data(), DType::F16, &slot, &pos, 1, C, NH, NH, 8);
    for (int64_t g = 0; g < NH; g++)
      for (int64_t d = 0; d < C / NH; d++) {
        const int64_t at = g * 8 * (C / NH) + d;
        EXPECT_EQ(kc[size_t(at)], io::f32_to_f16_saturated(row[size_t(C + g * (C / NH) + d)])) << g << " " << d;
        EXPECT_EQ(vc[size_t(at)], io::f32_to_f16_saturated(row[size_t(2 * C + g * (C / NH) + d)])) << g << " " << d;
      }
  }
}

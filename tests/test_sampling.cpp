// Sampling controls: each filter keeps exactly the tokens llama.cpp's semantics say it keeps.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "aigc/generate.h"

using namespace aigc;

namespace {
// Distinct tokens drawn over many seeds.
std::set<int> support(const std::vector<float>& logits, SamplingOptions o, const std::vector<int>& recent = {}) {
  std::set<int> s;
  Rng rng(1);
  for (int i = 0; i < 3000; i++) s.insert(sample_token(logits, recent, o, rng));
  return s;
}
SamplingOptions none() {
  SamplingOptions o;
  o.temperature = 1.0f, o.top_k = 0, o.top_p = 1.0f, o.min_p = 0.0f, o.repeat_penalty = 1.0f;
  return o;
}
// probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625
const std::vector<float> kLogits = {std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.0625f),
                                    std::log(0.0625f)};
}  // namespace

TEST(Sampling, GreedyAtTemperatureZero) {
  SamplingOptions o = none();
  o.temperature = 0;
  EXPECT_EQ(support(kLogits, o), std::set<int>({0}));
}

TEST(Sampling, NoFiltersReachEveryToken) { EXPECT_EQ(support(kLogits, none()).size(), 5u); }

TEST(Sampling, TopK) {
  SamplingOptions o = none();
  o.top_k = 2;
  EXPECT_EQ(support(kLogits, o), std::set<int>({0, 1}));
}

TEST(Sampling, TopPKeepsSmallestSetReachingP) {
  SamplingOptions o = none();
  o.top_p = 0.7f;  // 0.5 < 0.7 <= 0.75
  EXPECT_EQ(support(kLogits, o), std::set<int>({0, 1}));
  o.top_p = 0.8f;
  EXPECT_EQ(support(kLogits, o), std::set<int>({0, 1, 2}));
}

TEST(Sampling, MinPRelativeToTop) {
  SamplingOptions o = none();
  o.min_p = 0.2f;  // keeps p >= 0.1
  EXPECT_EQ(support(kLogits, o), std::set<int>({0, 1, 2}));
}

TEST(Sampling, RepeatPenaltyDemotesRecentTokens) {
  SamplingOptions o = none();
  o.temperature = 0;
  o.repeat_penalty = 10.0f;
  std::vector<float> logits = {2.0f, 1.5f, -1.0f};
  EXPECT_EQ(support(logits, o, {0}), std::set<int>({1}));  // 2.0 / 10 = 0.2 < 1.5
  o.repeat_last_n = 1;
  EXPECT_EQ(support(logits, o, {0, 1}), std::set<int>({0}));  // only token 1 is in the window
}

TEST(Sampling, SeedReproducible) {
  SamplingOptions o = none();
  Rng a(99), b(99);
  for (int i = 0; i < 100; i++) EXPECT_EQ(sample_token(kLogits, {}, o, a), sample_token(kLogits, {}, o, b));
}

TEST(Sampling, PresenceAndFrequencyPenaltiesFollowOpenAI) {
  SamplingOptions o = none();
  o.temperature = 0;
  std::vector<float> logits = {2.0f, 1.5f, 1.0f};
  o.presence_penalty = 0.6f;  // 2.0 - 0.6 = 1.4 < 1.5, whatever the count
  EXPECT_EQ(support(logits, o, {0}), std::set<int>({1}));
  o.presence_penalty = 0.0f, o.frequency_penalty = 0.3f;  // once: 1.7 > 1.5; twice: 1.4 < 1.5
  EXPECT_EQ(support(logits, o, {0}), std::set<int>({0}));
  EXPECT_EQ(support(logits, o, {0, 2, 0}), std::set<int>({1}));
}

namespace {
std::string run_stream(const std::string& bytes, std::vector<std::string> stop, bool* stopped = nullptr) {
  auto tok = make_bytes_tokenizer();  // id = byte: pieces of characters arrive one byte at a time
  TextStream ts(*tok, std::move(stop));
  std::string out;
  for (unsigned char c : bytes) {
    std::string piece = ts.push(c);
    // Never a partial UTF-8 character: no piece ends with a lead byte (the inputs have no 2-byte cut after it).
    if (!piece.empty()) {
      EXPECT_NE(static_cast<unsigned char>(piece.back()) & 0xC0, 0xC0) << piece;
    }
    out += piece;
    if (ts.stopped()) break;
  }
  out += ts.finish();
  if (stopped) *stopped = ts.stopped();
  return out;
}
}  // namespace

TEST(TextStream, CutsAtTheEarliestStopStringAndHidesIt) {
  bool stopped = false;
  EXPECT_EQ(run_stream("Hello\nUser: hi", {"\nUser:", "lo"}, &stopped), "Hel");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(run_stream("Hello\nUse", {"\nUser:"}, &stopped), "Hello\nUse");  // a prefix at the end is shown
  EXPECT_FALSE(stopped);
}

TEST(TextStream, NeverSplitsAUtf8Character) {
  EXPECT_EQ(run_stream("na\xC3\xAFve \xE2\x82\xAC \xF0\x9F\x98\x80", {}), "na\xC3\xAFve \xE2\x82\xAC \xF0\x9F\x98\x80");
}

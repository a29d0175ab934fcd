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

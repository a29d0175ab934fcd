// Finite-difference gradient checks for every differentiable op: the analytic gradient of
// L = sum(op(inputs) * R) (R fixed random) must match central differences of L.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "test_util.h"

using namespace aigc;

namespace {

// Weighted sum of out with fixed weights: a scalar whose gradient w.r.t. out is R.
double weighted_sum(const Tensor& out, const std::vector<float>& R) {
  std::vector<float> o = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < o.size(); i++) s += double(o[i]) * R[i];
  return s;
}

// Checks d/d(inputs) of sum(f(inputs) * R) against central differences, for every input element.
void grad_check(const std::function<Tensor(std::vector<Tensor>&)>& f, std::vector<Tensor> inputs, float h = 1e-2f,
                double tol = 1e-2) {
  Rng rng(123);
  for (Tensor& t : inputs) t.set_requires_grad(true);
  Tensor out = f(inputs);
  std::vector<float> R(size_t(out.numel()));
  for (float& r : R) r = float(rng.normal());
  aigc::testing::backward_from(out, R);  // analytic: the tape run with out.grad = R
  for (size_t k = 0; k < inputs.size(); k++) {
    std::vector<float> analytic = inputs[k].grad().to_vector();
    float* x = inputs[k].f32();
    for (int64_t i = 0; i < inputs[k].numel(); i++) {
      float orig = x[i];
      NoGradGuard ng;
      x[i] = orig + h;
      double lp = weighted_sum(f(inputs), R);
      x[i] = orig - h;
      double lm = weighted_sum(f(inputs), R);
      x[i] = orig;
      double numeric = (lp - lm) / (2.0 * h);
      double denom = std::max({std::abs(numeric), std::abs(double(analytic[size_t(i)])), 1e-1});
      ASSERT_LT(std::abs(numeric - analytic[size_t(i)]) / denom, tol)
          << "input " << k << " element " << i << ": numeric " << numeric << " analytic " << analytic[size_t(i)];
    }
  }
}

}  // namespace

TEST(GradCheck, Linear) {
  Rng rng(1);
  grad_check([](std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
             {randn({2, 3, 5}, rng), randn({4, 5}, rng), randn({4}, rng)});
}

TEST(GradCheck, LinearNoBias) {
  Rng rng(2);
  grad_check([](std::vector<Tensor>& in) { return ops::linear(in[0], in[1], Tensor()); },
             {randn({3, 5}, rng), randn({6, 5}, rng)});
}

TEST(GradCheck, Add) {
  Rng rng(3);
  grad_check([](std::vector<Tensor>& in) { return ops::add(in[0], in[1]); }, {randn({2, 7}, rng), randn({2, 7}, rng)});
}

TEST(GradCheck, LayerNorm) {
  Rng rng(4);
  grad_check([](std::vector<Tensor>& in) { return ops::layernorm(in[0], in[1], in[2]); },
             {randn({3, 8}, rng), randn({8}, rng), randn({8}, rng)});
}

TEST(GradCheck, Gelu) {
  Rng rng(5);
  grad_check([](std::vector<Tensor>& in) { return ops::gelu(in[0]); }, {randn({40}, rng, 2.0f)});
}

TEST(GradCheck, Relu) {
  Rng rng(6);
  // Keep inputs away from the kink at 0, where the derivative does not exist.
  Tensor x = randn({40}, rng);
  for (int64_t i = 0; i < 40; i++) x.f32()[i] += x.f32()[i] > 0 ? 0.1f : -0.1f;
  grad_check([](std::vector<Tensor>& in) { return ops::relu(in[0]); }, {x});
}

TEST(GradCheck, Dropout) {
  Rng rng(7);
  grad_check([](std::vector<Tensor>& in) { return ops::dropout(in[0], 0.3f, 42); }, {randn({50}, rng)});
}

TEST(GradCheck, Embedding) {
  Rng rng(8);
  Tensor idx = Tensor::from_ints({1, 3, 3, 0, 2, 1}, {2, 3});
  grad_check([idx](std::vector<Tensor>& in) { return ops::embedding(idx, in[0], in[1], 1); },
             {randn({4, 5}, rng), randn({6, 5}, rng)});
}

TEST(GradCheck, CausalSelfAttention) {
  Rng rng(9);
  grad_check([](std::vector<Tensor>& in) { return ops::causal_self_attention(in[0], 2); }, {randn({2, 5, 12}, rng)});
}

TEST(GradCheck, RmsNorm) {
  Rng rng(21);
  grad_check([](std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1], 1e-5f); },
             {randn({3, 8}, rng), randn({8}, rng)});
}

TEST(GradCheck, SwiGlu) {
  Rng rng(22);
  grad_check([](std::vector<Tensor>& in) { return ops::swiglu(in[0], in[1]); },
             {randn({30}, rng, 2.0f), randn({30}, rng)});
}

TEST(GradCheck, RopeQkvWithGroupedHeads) {
  Rng rng(23);
  // 4 query heads share 2 kv heads; rows at scattered positions, frequencies from 1 down.
  Tensor pos = Tensor::from_ints({0, 5, 17, 2, 1000, 3}, {6});
  Tensor f = Tensor::from_vector({1.0f, 0.3f, 0.01f}, {3});
  grad_check([pos, f](std::vector<Tensor>& in) { return ops::rope_qkv(in[0], in[1], in[2], pos, f, 4, 2); },
             {randn({2, 3, 24}, rng), randn({2, 3, 12}, rng), randn({2, 3, 12}, rng)});
}

TEST(GradCheck, CrossEntropy) {
  Rng rng(10);
  Tensor tg = Tensor::from_ints({0, 4, 2, -1, 3, 1}, {2, 3});  // one ignored position
  grad_check([tg](std::vector<Tensor>& in) { return ops::cross_entropy(in[0], tg); }, {randn({2, 3, 5}, rng)});
}

TEST(Ops, AttentionIsCausal) {
  // Changing a later token's q/k/v must not change earlier outputs.
  Rng rng(11);
  NoGradGuard ng;
  Tensor a = randn({1, 6, 36}, rng);
  Tensor b = Tensor::from_vector(a.to_vector(), a.shape());
  for (int64_t c = 0; c < 36; c++) b.f32()[4 * 36 + c] += 1.0f;  // perturb position 4
  std::vector<float> oa = ops::causal_self_attention(a, 3).to_vector();
  std::vector<float> ob = ops::causal_self_attention(b, 3).to_vector();
  for (int64_t i = 0; i < 4 * 12; i++) EXPECT_EQ(oa[size_t(i)], ob[size_t(i)]) << i;
  bool changed = false;
  for (int64_t i = 4 * 12; i < 6 * 12; i++) changed |= oa[size_t(i)] != ob[size_t(i)];
  EXPECT_TRUE(changed);
}

TEST(Ops, CachedAttentionMatchesFull) {
  Rng rng(12);
  NoGradGuard ng;
  const int64_t T = 7, C = 12, NH = 3;
  Tensor qkv = randn({1, T, 3 * C}, rng);
  std::vector<float> full = ops::causal_self_attention(qkv, NH).to_vector();
  Tensor kc = Tensor::zeros({1, NH, 16, C / NH}), vc = Tensor::zeros({1, NH, 16, C / NH});
  // Prefill 3 positions, then one at a time.
  std::vector<float> got =
      ops::attention_cached(qkv.view({T, 3 * C}).narrow0(0, 3).view({1, 3, 3 * C}), NH, kc, vc, 0).to_vector();
  for (int64_t t = 3; t < T; t++) {
    std::vector<float> o =
        ops::attention_cached(qkv.view({T, 3 * C}).narrow0(t, 1).view({1, 1, 3 * C}), NH, kc, vc, t).to_vector();
    got.insert(got.end(), o.begin(), o.end());
  }
  ASSERT_EQ(got.size(), full.size());
  for (size_t i = 0; i < full.size(); i++) EXPECT_NEAR(got[i], full[i], 1e-5) << i;
}

// The blocked attention kernel against plain float64 math, at lengths that span several blocks and end in a
// partial one: out = softmax(mask(q k^T / sqrt(HS))) v, and the gradients of sum(out * R).
TEST(Ops, BlockedAttentionMatchesNaiveAcrossBlocks) {
  for (int64_t T : {64, 150, 300}) {  // one partial block, two, three (blocks are 128 wide)
    Rng rng(static_cast<uint64_t>(T));
    const int64_t B = 2, NH = 2, HS = 8, C = NH * HS, C3 = 3 * C;
    Tensor qkv = randn({B, T, C3}, rng);
    qkv.set_requires_grad(true);
    Tensor out = ops::causal_self_attention(qkv, NH);
    std::vector<float> R(size_t(out.numel()));
    for (float& r : R) r = float(rng.normal());
    aigc::testing::backward_from(out, R);
    std::vector<float> X = qkv.to_vector(), O = out.to_vector(), G = qkv.grad().to_vector();
    std::vector<double> ref_dx(X.size(), 0.0);
    const double scale = 1.0 / std::sqrt(double(HS));
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < NH; h++) {
        auto at = [&](int64_t t, int64_t part, int64_t d) {
          return size_t(b * T * C3 + t * C3 + part * C + h * HS + d);
        };
        for (int64_t i = 0; i < T; i++) {
          std::vector<double> p(static_cast<size_t>(i + 1));
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t d = 0; d < HS; d++) s += double(X[at(i, 0, d)]) * X[at(j, 1, d)];
            p[size_t(j)] = s * scale, mx = std::max(mx, p[size_t(j)]);
          }
          for (double& v : p) sum += (v = std::exp(v - mx));
          for (double& v : p) v /= sum;
          std::vector<double> dO(static_cast<size_t>(HS)), dp(static_cast<size_t>(i + 1));
          for (int64_t d = 0; d < HS; d++) {
            double o = 0;
            for (int64_t j = 0; j <= i; j++) o += p[size_t(j)] * X[at(j, 2, d)];
            size_t oi = size_t(b * T * C + i * C + h * HS + d);
            ASSERT_NEAR(O[oi], o, 1e-5) << "T=" << T << " out b" << b << " h" << h << " t" << i << " d" << d;
            dO[size_t(d)] = R[oi];
          }
          double dot = 0;
          for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t d = 0; d < HS; d++) {
              s += dO[size_t(d)] * X[at(j, 2, d)];
              ref_dx[at(j, 2, d)] += p[size_t(j)] * dO[size_t(d)];  // dV
            }
            dp[size_t(j)] = s, dot += p[size_t(j)] * s;
          }
          for (int64_t j = 0; j <= i; j++) {
            double ds = p[size_t(j)] * (dp[size_t(j)] - dot) * scale;
            for (int64_t d = 0; d < HS; d++) {
              ref_dx[at(i, 0, d)] += ds * X[at(j, 1, d)];  // dQ
              ref_dx[at(j, 1, d)] += ds * X[at(i, 0, d)];  // dK
            }
          }
        }
      }
    for (size_t i = 0; i < G.size(); i++)
      ASSERT_NEAR(G[i], ref_dx[i], 1e-4 * std::max(1.0, std::abs(ref_dx[i]))) << "T=" << T << " dqkv[" << i << "]";
  }
}

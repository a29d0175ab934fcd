// Gradients of gradients (grad_graph, PyTorch's create_graph) and the GAN objectives' ops: a penalty on a small
// critic's input gradient, differentiated again, against central differences and PyTorch's
// autograd.grad(..., create_graph=True) in float64; spectral normalization likewise.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "grad_check.h"
#include "layer_oracle.h"

using namespace aigc;

using aigc::testing::grad_check;

namespace {

// Every op with a differentiable backward on the path from x to the score: concat_channels, conv2d, leaky_relu,
// conv_transpose2d (whose adjoint needs output_padding 1 after the 3x3 stride-2 convolution), views, linear,
// combine_rows and add.
struct Critic {
  Tensor plane, w1, b1, w2, w3, lw, lb;
  float slope = 0.2f;
  explicit Critic(Rng& rng)
      : plane(randn({3, 1, 8, 8}, rng)),
        w1(randn({4, 3, 4, 4}, rng, 0.3f)),
        b1(randn({4}, rng, 0.1f)),
        w2(randn({4, 2, 4, 4}, rng, 0.3f)),
        w3(randn({3, 2, 3, 3}, rng, 0.3f)),
        lw(randn({1, 48}, rng, 0.3f)),
        lb(randn({1}, rng)) {
    for (Tensor* t : weights()) t->set_requires_grad(true);
  }
  std::vector<Tensor*> weights() { return {&w1, &b1, &w2, &w3, &lw, &lb}; }
  static std::vector<std::string> names() { return {"w1", "b1", "w2", "w3", "lw", "lb"}; }

  Tensor operator()(const Tensor& x) const {
    Tensor h = ops::leaky_relu(ops::conv2d(ops::concat_channels(x, plane), w1, b1, {2, 1}), slope);
    h = ops::leaky_relu(ops::conv_transpose2d(h, w2, Tensor(), {2, 1}), slope);
    h = ops::leaky_relu(ops::conv2d(h, w3, Tensor(), {2, 1}), slope);
    Tensor o = ops::linear(h.view({h.size(0), -1}), lw, lb);
    return ops::add(o, ops::combine_rows(std::vector<float>(size_t(o.size(0)), 0.5f), o, {}, Tensor()));
  }
};

// The penalty on the critic's input gradient (recorded: a backward() after it reaches the weights).
Tensor penalty(const Critic& c, const Tensor& x, const Tensor& seed, float center) {
  return ops::gradient_penalty(grad_graph(c(x), seed, {x})[0], center);
}

}  // namespace

TEST(GradGraph, FirstGradientMatchesFiniteDifferences) {
  Rng rng(41);
  Critic c(rng);
  Tensor x = randn({3, 2, 8, 8}, rng), seed = randn({3, 1}, rng);
  x.set_requires_grad(true);
  std::vector<float> g = grad_graph(c(x), seed, {x})[0].to_vector();
  clear_tape();
  const std::vector<float> s = seed.to_vector();
  auto loss = [&] {
    NoGradGuard ng;
    std::vector<float> o = c(x).to_vector();
    double sum = 0;
    for (size_t i = 0; i < o.size(); i++) sum += double(o[i]) * s[i];
    return sum;
  };
  const float h = 1e-2f;
  for (int64_t i = 0; i < x.numel(); i++) {
    const double num = aigc::testing::central_difference(x.f32()[i], h, loss);
    ASSERT_NEAR(g[size_t(i)], num, 2e-2 * std::max(1.0, std::abs(num))) << "element " << i;
  }
}

TEST(GradGraph, PenaltyGradientsMatchFiniteDifferences) {
  for (float center : {1.0f, 0.0f}) {  // WGAN-GP, R1
    SCOPED_TRACE(center);
    Rng rng(42);
    Critic c(rng);
    Tensor x = randn({3, 2, 8, 8}, rng), seed = randn({3, 1}, rng);
    x.set_requires_grad(true);
    for (Tensor* t : c.weights()) t->set_grad(Tensor());
    backward(penalty(c, x, seed, center));
    auto loss = [&] {
      const double v = penalty(c, x, seed, center).item();
      clear_tape();
      return v;
    };
    const float h = 5e-4f;  // small: a larger step moves some pre-activation across LeakyReLU's kink
    std::vector<Tensor*> ws = c.weights();
    for (size_t k = 0; k < ws.size(); k++) {
      Tensor& w = *ws[k];
      std::vector<float> g = w.grad().defined() ? w.grad().to_vector() : std::vector<float>(size_t(w.numel()), 0.0f);
      for (int64_t i = 0; i < w.numel(); i++) {
        const double num = aigc::testing::central_difference(w.f32()[i], h, loss);
        ASSERT_NEAR(g[size_t(i)], num, 2e-2 * std::max(1.0, std::abs(num))) << Critic::names()[k] << " element " << i;
      }
    }
  }
}

TEST(Parity, CriticPenaltyMatchesPyTorchCreateGraph) {
  std::vector<aigc::testing::OracleCase> cases;
  std::vector<std::vector<Tensor>> ours;  // g, penalty, then the weights' gradients, per case
  for (float center : {1.0f, 0.0f}) {
    Rng rng(43 + uint64_t(center));
    Critic c(rng);
    Tensor x = randn({3, 2, 8, 8}, rng), seed = randn({3, 1}, rng);
    x.set_requires_grad(true);
    Tensor g = grad_graph(c(x), seed, {x})[0];
    Tensor p = ops::gradient_penalty(g, center);
    backward(p);
    std::vector<Tensor> got{g, p};
    for (Tensor* t : c.weights()) got.push_back(t->grad().defined() ? t->grad() : Tensor::zeros(t->shape()));
    ours.push_back(got);
    aigc::testing::OracleCase oc{"critic_penalty", {{"center", center}, {"slope", c.slope}}, {}};
    oc.inputs = {{"x", x}, {"plane", c.plane}, {"seed", seed}, {"dout", Tensor::from_vector({1.0f}, {1})}};
    for (size_t k = 0; k < c.weights().size(); k++) oc.inputs.push_back({Critic::names()[k], *c.weights()[k]});
    cases.push_back(oc);
  }
  auto ref = aigc::testing::run_layer_oracle(cases, "critic_penalty");
  ASSERT_EQ(ref.size(), cases.size());
  for (size_t k = 0; k < cases.size(); k++) {
    double worst = std::max(aigc::testing::expect_close(*ref[k], "g", ours[k][0], 1e-5),
                            aigc::testing::expect_close(*ref[k], "out", ours[k][1], 1e-5));
    for (size_t j = 0; j < Critic::names().size(); j++)
      worst = std::max(worst, aigc::testing::expect_close(*ref[k], "d" + Critic::names()[j], ours[k][2 + j], 1e-5));
    std::printf("[ parity ] gradient penalty (center %zu) through create_graph: worst %.2e\n", k == 0 ? size_t(1) : 0,
                worst);
  }
}

TEST(GradGraph, RefusesWhatItCannotDifferentiate) {
  Rng rng(44);
  Tensor x = randn({2, 3}, rng), w = randn({1, 3}, rng);
  x.set_requires_grad(true), w.set_requires_grad(true);
  try {  // an op without a differentiable backward on the path
    grad_graph(ops::linear(ops::tanh(x), w, Tensor()), Tensor::from_vector({1, 1}, {2, 1}), {x});
    FAIL() << "tanh has no differentiable backward";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tanh"), std::string::npos) << e.what();
  }
  clear_tape();
  try {  // a layer's weight gradient
    grad_graph(ops::linear(x, w, Tensor()), Tensor::from_vector({1, 1}, {2, 1}), {w});
    FAIL() << "linear's weight gradient is not differentiable here";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
  }
  clear_tape();
  {
    NoGradGuard ng;
    EXPECT_THROW(grad_graph(x, Tensor::zeros({2, 3}), {x}), Error);  // grad mode off
  }
}

TEST(GradCheck, GanObjectiveOps) {
  Rng rng(45);
  Tensor x = randn({3, 5, 4}, rng, 2.0f), g = randn({3, 5, 4}, rng), dout = randn({3, 5, 4}, rng);
  for (int64_t i = 0; i < x.numel(); i++)  // away from the kink, where differences straddle two slopes
    if (std::abs(x.f32()[i]) < 0.05f) x.f32()[i] = 0.1f;
  grad_check([&] { return ops::leaky_relu_grad(x, g, 0.2f); }, {g}, dout);
  grad_check([&] { return ops::slice_channels(x, 0, 2); }, {x}, randn({3, 2, 4}, rng));
  grad_check([&] { return ops::slice_channels(x, 2, 3); }, {x}, randn({3, 3, 4}, rng));
  for (float center : {1.0f, 0.0f})
    grad_check([&] { return ops::gradient_penalty(g, center); }, {g}, Tensor::from_vector({0.7f}, {1}));
  Tensor w = randn({4, 2, 3, 3}, rng), u = randn({4}, rng), v = randn({18}, rng);
  grad_check([&] { return ops::spectral_normalize(w, u, v); }, {w}, randn({4, 2, 3, 3}, rng));
}

TEST(Parity, SpectralNormalizeMatchesPyTorch) {
  Rng rng(46);
  Tensor w = randn({6, 3, 4, 4}, rng), u = randn({6}, rng), v = randn({48}, rng), dout = randn({6, 3, 4, 4}, rng);
  w.set_requires_grad(true);
  Tensor out = ops::spectral_normalize(w, u, v);
  aigc::testing::backward_from(out, dout.to_vector());
  auto ref = aigc::testing::run_layer_oracle(
      {{"spectral_normalize", {}, {{"x", w}, {"u", u}, {"v", v}, {"dout", dout}}}}, "spectral_normalize");
  ASSERT_EQ(ref.size(), 1u);
  aigc::testing::expect_close(*ref[0], "out", out, 1e-5);
  aigc::testing::expect_close(*ref[0], "dx", w.grad(), 1e-5);
}

// LeakyReLU, tanh, sigmoid, batch normalization (training and evaluation, running statistics) and BCE on
// logits: finite-difference gradient checks and parity with PyTorch in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "grad_check.h"
#include "layer_oracle.h"

using namespace aigc;

using aigc::testing::copy;
using aigc::testing::grad_check;
using aigc::testing::run_backward;

TEST(GradCheck, ImageActivations) {
  Rng rng(21);
  Tensor x = randn({3, 4, 5}, rng, 2.0f), dout = randn({3, 4, 5}, rng);
  // Keep inputs away from LeakyReLU's kink, where central differences straddle two slopes.
  for (int64_t i = 0; i < x.numel(); i++)
    if (std::abs(x.f32()[i]) < 0.05f) x.f32()[i] = 0.1f;
  grad_check([&] { return ops::leaky_relu(x, 0.2f); }, {x}, dout);
  grad_check([&] { return ops::tanh(x); }, {x}, dout);
  grad_check([&] { return ops::sigmoid(x); }, {x}, dout);
}

TEST(GradCheck, BatchNormTrainingAndEval) {
  Rng rng(22);
  Tensor x = randn({4, 3, 3, 2}, rng, 1.5f, 0.5f), w = randn({3}, rng, 0.5f, 1.0f), b = randn({3}, rng);
  Tensor dout = randn({4, 3, 3, 2}, rng);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::zeros({3});
  grad_check([&] { return ops::batch_norm2d(x, w, b, rm, rv, true); }, {x, w, b}, dout);
  Tensor em = randn({3}, rng, 0.2f), ev = randn({3}, rng, 0.1f, 1.0f);
  grad_check([&] { return ops::batch_norm2d(x, w, b, em, ev, false); }, {x, w, b}, dout);
}

TEST(GradCheck, BceWithLogits) {
  Rng rng(23);
  Tensor x = randn({5, 3}, rng, 3.0f), y = Tensor::empty({5, 3});
  for (int64_t i = 0; i < y.numel(); i++) y.f32()[i] = float(i % 3) / 2.0f;  // 0, 0.5, 1
  grad_check([&] { return ops::bce_with_logits(x, y); }, {x}, Tensor::from_vector({1.7f}, {1}));
}

TEST(Ops, BceWithLogitsIsFiniteForHugeLogits) {
  Tensor x = Tensor::from_vector({1000.0f, -1000.0f, 1000.0f, -1000.0f}, {4});
  Tensor y = Tensor::from_vector({1.0f, 0.0f, 0.0f, 1.0f}, {4});
  float loss = ops::bce_with_logits(x, y).item();
  EXPECT_NEAR(loss, 500.0f, 1e-3f);  // two right answers (loss 0) and two confident mistakes (1000 each), / 4
}

TEST(Parity, ImageLayersMatchPyTorch) {
  Rng rng(31);
  const Shape s{4, 3, 5, 6};
  Tensor x = randn(s, rng, 2.0f, 0.3f), dout = randn(s, rng);
  Tensor w = randn({3}, rng, 0.5f, 1.0f), b = randn({3}, rng);
  Tensor rm0 = randn({3}, rng, 0.1f), rv0 = randn({3}, rng, 0.1f, 1.0f);
  Tensor logits = randn({6, 7}, rng, 3.0f), targets = Tensor::empty({6, 7});
  for (int64_t i = 0; i < targets.numel(); i++) targets.f32()[i] = float(rng.next_u64() % 5) / 4.0f;
  Tensor dloss = Tensor::from_vector({1.3f}, {1});
  using aigc::testing::OracleCase;
  std::vector<OracleCase> cases = {
      {"leaky_relu", {{"slope", 0.2}}, {{"x", x}, {"dout", dout}}},
      {"tanh", {}, {{"x", x}, {"dout", dout}}},
      {"sigmoid", {}, {{"x", x}, {"dout", dout}}},
      {"batch_norm2d",
       {{"training", true}, {"momentum", 0.1}, {"eps", 1e-5}},
       {{"x", x}, {"w", w}, {"b", b}, {"running_mean", rm0}, {"running_var", rv0}, {"dout", dout}}},
      {"batch_norm2d",
       {{"training", false}, {"momentum", 0.1}, {"eps", 1e-5}},
       {{"x", x}, {"w", w}, {"b", b}, {"running_mean", rm0}, {"running_var", rv0}, {"dout", dout}}},
      {"bce_with_logits", {}, {{"x", logits}, {"y", targets}, {"dout", dloss}}},
  };
  auto refs = aigc::testing::run_layer_oracle(cases, "image_layers");
  ASSERT_EQ(refs.size(), cases.size());
  double worst = 0;
  auto check = [&](size_t k, const char* name, const Tensor& t) {
    worst = std::max(worst, aigc::testing::expect_close(*refs[k], name, t, 1e-5));
  };
  std::vector<std::function<Tensor(const Tensor&)>> pointwise = {
      [](const Tensor& v) { return ops::leaky_relu(v, 0.2f); }, [](const Tensor& v) { return ops::tanh(v); },
      [](const Tensor& v) { return ops::sigmoid(v); }};
  for (size_t k = 0; k < 3; k++) {
    SCOPED_TRACE(cases[k].layer);
    Tensor xi = copy(x);
    xi.set_requires_grad(true);
    check(k, "out", run_backward([&] { return pointwise[k](xi); }, dout));
    check(k, "dx", xi.grad());
  }
  for (size_t k : {size_t(3), size_t(4)}) {
    SCOPED_TRACE(k == 3 ? "batch_norm2d training" : "batch_norm2d eval");
    Tensor xi = copy(x), wi = copy(w), bi = copy(b), rm = copy(rm0), rv = copy(rv0);
    for (Tensor* t : {&xi, &wi, &bi}) t->set_requires_grad(true);
    check(k, "out", run_backward([&] { return ops::batch_norm2d(xi, wi, bi, rm, rv, k == 3); }, dout));
    check(k, "dx", xi.grad());
    check(k, "dw", wi.grad());
    check(k, "db", bi.grad());
    check(k, "running_mean", rm);
    check(k, "running_var", rv);
  }
  {
    SCOPED_TRACE("bce_with_logits");
    Tensor li = copy(logits);
    li.set_requires_grad(true);
    check(5, "out", run_backward([&] { return ops::bce_with_logits(li, targets); }, dloss));
    check(5, "dx", li.grad());
  }
  std::printf("[ parity ] image layers: worst error relative to each tensor's largest value %.2e\n", worst);
}

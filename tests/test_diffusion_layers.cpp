// The diffusion U-Net's layers: SiLU, GroupNorm, nearest upsampling, the transpose and per-sample channel add,
// attention over image positions (non-causal), per-sample combinations, MSE and the timestep embedding:
// finite-difference gradient checks and parity with PyTorch in float64.
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
using aigc::testing::copy;
using aigc::testing::grad_check;
using aigc::testing::run_backward;

TEST(GradCheck, SiluAndGroupNorm) {
  Rng rng(41);
  Tensor x = randn({2, 6, 3, 2}, rng, 1.5f, 0.3f), dout = randn({2, 6, 3, 2}, rng);
  grad_check([&] { return ops::silu(x); }, {x}, dout);
  Tensor w = randn({6}, rng, 0.5f, 1.0f), b = randn({6}, rng);
  grad_check([&] { return ops::group_norm(x, w, b, 3); }, {x, w, b}, dout);
  grad_check([&] { return ops::group_norm(x, Tensor(), Tensor(), 2); }, {x}, dout);
  grad_check([&] { return ops::group_norm(x, w, b, 3, 1e-5f, /*silu=*/true); }, {x, w, b}, dout);
  // The fused pair equals the two ops one after the other.
  EXPECT_LT(
      aigc::testing::max_abs_diff(ops::group_norm(x, w, b, 3, 1e-5f, true), ops::silu(ops::group_norm(x, w, b, 3))),
      1e-6);
}

// The backward of conv2d, conv_transpose2d, group_norm, add and concat_channels assigns the first gradient to reach
// an input (into an uninitialized buffer) and adds later ones. x feeds all of them; each graph makes a different op
// the last consumer of x, so that each op's backward is the one that assigns, and the others add.
TEST(GradCheck, FirstGradientAssignsLaterOnesAdd) {
  Rng rng(44);
  Tensor x = randn({2, 4, 3, 3}, rng), w = randn({4, 4, 3, 3}, rng, 0.3f), b = randn({4}, rng);
  Tensor wt = randn({4, 4, 3, 3}, rng, 0.3f), dout = randn({2, 8, 3, 3}, rng);
  const ops::Conv2dOptions same{1, 1};  // stride 1, padding 1: output shape = input shape
  auto conv = [&] { return ops::conv2d(x, w, b, same); };
  auto tconv = [&] { return ops::conv_transpose2d(x, wt, Tensor(), same); };
  auto gn = [&] { return ops::group_norm(x, Tensor(), Tensor(), 2, 1e-5f, true); };
  struct Graph {
    std::function<Tensor()> f;
    std::vector<Tensor> inputs;
  };
  const std::vector<Graph> graphs = {
      {[&] { return ops::concat_channels(ops::add(gn(), tconv()), conv()); }, {x, w, b, wt}},  // conv assigns
      {[&] { return ops::concat_channels(ops::add(conv(), x), tconv()); }, {x, w, b, wt}},     // conv_transpose2d
      {[&] { return ops::concat_channels(ops::add(conv(), tconv()), gn()); }, {x, w, b, wt}},  // group_norm
      {[&] { return ops::concat_channels(conv(), ops::add(gn(), x)); }, {x, w, b}},            // add
      {[&] { return ops::concat_channels(ops::add(conv(), gn()), x); }, {x, w, b}},            // concat_channels
  };
  for (size_t k = 0; k < graphs.size(); k++) {
    SCOPED_TRACE("graph " + std::to_string(k));
    grad_check(graphs[k].f, graphs[k].inputs, dout);
  }
}

TEST(GradCheck, UpsampleTransposeChannelAdd) {
  Rng rng(42);
  Tensor x = randn({2, 3, 2, 3}, rng), v = randn({2, 3}, rng);
  grad_check([&] { return ops::upsample_nearest(x, 2); }, {x}, randn({2, 3, 4, 6}, rng));
  Tensor m = randn({2, 5, 7}, rng);
  grad_check([&] { return ops::transpose_last2(m); }, {m}, randn({2, 7, 5}, rng));
  grad_check([&] { return ops::add_channelwise(x, v); }, {x, v}, randn({2, 3, 2, 3}, rng));
}

TEST(GradCheck, CombineRowsAndMse) {
  Rng rng(43);
  Tensor x = randn({3, 4}, rng), y = randn({3, 4}, rng);
  grad_check(
      [&] {
        return ops::combine_rows({0.5f, -1.0f, 2.0f}, x, {1.5f, 0.25f, -0.5f}, y);
      },
      {x, y}, randn({3, 4}, rng));
  grad_check([&] { return ops::mse_loss(x, y); }, {x, y}, Tensor::from_vector({0.7f}, {1}));
}

TEST(GradCheck, NonCausalAttention) {
  Rng rng(44);
  Tensor qkv = randn({2, 5, 12}, rng);  // B 2, T 5 positions, C 4, two heads
  grad_check([&] { return ops::self_attention(qkv, 2, false); }, {qkv}, randn({2, 5, 4}, rng));
}

TEST(Ops, TimestepEmbeddingIsSinCos) {
  Tensor t = Tensor::from_vector({0.0f, 999.0f}, {2});
  std::vector<float> e = ops::timestep_embedding(t, 8).to_vector();
  for (int i = 0; i < 4; i++) {
    EXPECT_FLOAT_EQ(e[size_t(i)], 0.0f);      // sin(0)
    EXPECT_FLOAT_EQ(e[size_t(4 + i)], 1.0f);  // cos(0)
  }
  EXPECT_NEAR(e[8], std::sin(999.0), 1e-5);             // frequency 1
  EXPECT_NEAR(e[11], std::sin(999.0 / 10000.0), 1e-6);  // frequency 1 / max_period
}

TEST(Ops, ClampRefusesGradients) {
  Tensor x = Tensor::from_vector({-3.0f, 0.5f, 2.0f}, {3});
  EXPECT_EQ(ops::clamp(x, -1.0f, 1.0f).to_vector(), (std::vector<float>{-1.0f, 0.5f, 1.0f}));
  x.set_requires_grad(true);
  EXPECT_THROW(ops::clamp(x, -1.0f, 1.0f), Error);
}

TEST(Parity, DiffusionLayersMatchPyTorch) {
  Rng rng(45);
  const Shape s{3, 8, 5, 4};
  Tensor x = randn(s, rng, 2.0f, 0.3f), dout = randn(s, rng);
  Tensor w = randn({8}, rng, 0.5f, 1.0f), b = randn({8}, rng), v = randn({3, 8}, rng);
  Tensor dup = randn({3, 8, 10, 8}, rng);
  Tensor qkv = randn({2, 70, 24}, rng), dqkv_out = randn({2, 70, 8}, rng);  // 70 positions: a partial block
  Tensor t = Tensor::from_vector({0.0f, 17.0f, 999.0f}, {3});
  Tensor pred = randn({4, 6}, rng), target = randn({4, 6}, rng), dloss = Tensor::from_vector({1.3f}, {1});
  using aigc::testing::OracleCase;
  std::vector<OracleCase> cases = {
      {"silu", {}, {{"x", x}, {"dout", dout}}},
      {"group_norm", {{"groups", 4}, {"eps", 1e-5}}, {{"x", x}, {"w", w}, {"b", b}, {"dout", dout}}},
      {"upsample_nearest", {{"factor", 2}}, {{"x", x}, {"dout", dup}}},
      {"attention", {{"n_head", 2}, {"causal", false}}, {{"x", qkv}, {"dout", dqkv_out}}},
      {"add_channelwise", {}, {{"x", x}, {"v", v}, {"dout", dout}}},
      {"timestep_embedding", {{"dim", 32}, {"max_period", 10000}}, {{"x", t}}},
      {"mse_loss", {}, {{"x", pred}, {"y", target}, {"dout", dloss}}},
  };
  auto refs = aigc::testing::run_layer_oracle(cases, "diffusion_layers");
  ASSERT_EQ(refs.size(), cases.size());
  double worst = 0;
  auto check = [&](size_t k, const char* name, const Tensor& got) {
    worst = std::max(worst, aigc::testing::expect_close(*refs[k], name, got, 1e-5));
  };
  auto with_grad = [](const Tensor& a) {
    Tensor c = copy(a);
    c.set_requires_grad(true);
    return c;
  };
  {
    Tensor xi = with_grad(x);
    check(0, "out", run_backward([&] { return ops::silu(xi); }, dout));
    check(0, "dx", xi.grad());
  }
  {
    Tensor xi = with_grad(x), wi = with_grad(w), bi = with_grad(b);
    check(1, "out", run_backward([&] { return ops::group_norm(xi, wi, bi, 4); }, dout));
    check(1, "dx", xi.grad());
    check(1, "dw", wi.grad());
    check(1, "db", bi.grad());
  }
  {
    Tensor xi = with_grad(x);
    check(2, "out", run_backward([&] { return ops::upsample_nearest(xi, 2); }, dup));
    check(2, "dx", xi.grad());
  }
  {
    Tensor qi = with_grad(qkv);
    check(3, "out", run_backward([&] { return ops::self_attention(qi, 2, false); }, dqkv_out));
    check(3, "dx", qi.grad());
  }
  {
    Tensor xi = with_grad(x), vi = with_grad(v);
    check(4, "out", run_backward([&] { return ops::add_channelwise(xi, vi); }, dout));
    check(4, "dx", xi.grad());
    check(4, "dv", vi.grad());
  }
  check(5, "out", ops::timestep_embedding(t, 32));
  {
    Tensor pi = with_grad(pred), ti = with_grad(target);
    check(6, "out", run_backward([&] { return ops::mse_loss(pi, ti); }, dloss));
    check(6, "dx", pi.grad());
    check(6, "dy", ti.grad());
  }
  std::printf("[ parity ] diffusion layers: worst error relative to each tensor's largest value %.2e\n", worst);
}

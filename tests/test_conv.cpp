// Convolution layers: finite-difference gradient checks and parity with PyTorch (float64 oracle) for conv2d
// and conv_transpose2d over strides, padding, dilation, groups and output padding.
#include <gtest/gtest.h>

#include <cmath>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "grad_check.h"
#include "layer_oracle.h"

using namespace aigc;

namespace {

struct Case {
  const char* layer;
  Shape x, w;
  ops::Conv2dOptions o;
};

// Both layers over the option space: plain, strided + padded, dilated, grouped, output padding.
std::vector<Case> cases() {
  ops::Conv2dOptions plain, strided{2, 1, 1, 1, 0}, dilated{1, 2, 2, 1, 0}, grouped{1, 1, 1, 2, 0};
  ops::Conv2dOptions up{2, 1, 1, 1, 0}, up_pad{2, 1, 1, 1, 1}, up_group{2, 0, 1, 2, 1}, up_dil{1, 1, 2, 1, 0};
  return {{"conv2d", {2, 3, 7, 6}, {4, 3, 3, 3}, plain},
          {"conv2d", {2, 3, 8, 7}, {5, 3, 4, 4}, strided},
          {"conv2d", {1, 2, 9, 9}, {3, 2, 3, 2}, dilated},
          {"conv2d", {2, 4, 5, 5}, {6, 2, 3, 3}, grouped},
          {"conv_transpose2d", {2, 4, 3, 3}, {4, 3, 4, 4}, up},
          {"conv_transpose2d", {1, 3, 4, 5}, {3, 2, 3, 3}, up_pad},
          {"conv_transpose2d", {2, 4, 3, 4}, {4, 3, 3, 3}, up_group},
          {"conv_transpose2d", {1, 2, 4, 4}, {2, 3, 3, 3}, up_dil},
          // Kernels covering the whole input: the dense fast path (the DCGAN's last D and first G layers).
          {"conv2d", {3, 4, 5, 5}, {2, 4, 5, 5}, plain},
          {"conv_transpose2d", {3, 6, 1, 1}, {6, 4, 5, 5}, plain}};
}

Tensor apply(const Case& c, const Tensor& x, const Tensor& w, const Tensor& b) {
  return std::string(c.layer) == "conv2d" ? ops::conv2d(x, w, b, c.o) : ops::conv_transpose2d(x, w, b, c.o);
}

int64_t out_channels(const Case& c) { return std::string(c.layer) == "conv2d" ? c.w[0] : c.w[1] * c.o.groups; }

// Runs the layer with gradients of sum(out * dout) flowing back; returns out.
Tensor forward_backward(const Case& c, Tensor& x, Tensor& w, Tensor& b, const Tensor& dout) {
  x.set_requires_grad(true), w.set_requires_grad(true), b.set_requires_grad(true);
  Tensor out = apply(c, x, w, b);
  aigc::testing::backward_from(out, dout.to_vector());
  return out;
}

}  // namespace

TEST(GradCheck, Conv2dAndConvTranspose2d) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(std::string(c.layer) + " x" + shape_str(c.x) + " w" + shape_str(c.w));
    Rng rng(5);
    Tensor x = randn(c.x, rng), w = randn(c.w, rng, 0.5f), b = randn({out_channels(c)}, rng);
    Tensor out0;
    {
      NoGradGuard ng;
      out0 = apply(c, x, w, b);
    }
    aigc::testing::grad_check([&] { return apply(c, x, w, b); }, {x, w, b}, randn(out0.shape(), rng));
  }
}

TEST(Parity, ConvLayersMatchPyTorch) {
  const std::vector<Case> all = cases();
  std::vector<Tensor> xs, ws, bs, douts;
  std::vector<aigc::testing::OracleCase> oc;
  for (size_t k = 0; k < all.size(); k++) {
    const Case& c = all[k];
    Rng rng(100 + k);
    Tensor x = randn(c.x, rng), w = randn(c.w, rng, 0.5f), b = randn({out_channels(c)}, rng);
    Tensor probe;
    {
      NoGradGuard ng;
      probe = apply(c, x, w, b);
    }
    Tensor dout = randn(probe.shape(), rng);
    nlohmann::json opt = {{"stride", c.o.stride},
                          {"padding", c.o.padding},
                          {"dilation", c.o.dilation},
                          {"groups", c.o.groups},
                          {"output_padding", c.o.output_padding}};
    oc.push_back({c.layer, opt, {{"x", x}, {"w", w}, {"b", b}, {"dout", dout}}});
    xs.push_back(x), ws.push_back(w), bs.push_back(b), douts.push_back(dout);
  }
  auto refs = aigc::testing::run_layer_oracle(oc, "conv");
  ASSERT_EQ(refs.size(), all.size());
  double worst = 0;
  for (size_t k = 0; k < all.size(); k++) {
    SCOPED_TRACE(std::string(all[k].layer) + " case " + std::to_string(k));
    Tensor y = forward_backward(all[k], xs[k], ws[k], bs[k], douts[k]);
    for (auto [name, t] : {std::pair{"out", y}, {"dx", xs[k].grad()}, {"dw", ws[k].grad()}, {"db", bs[k].grad()}})
      worst = std::max(worst, aigc::testing::expect_close(*refs[k], name, t, 1e-5));
  }
  std::printf("[ parity ] conv layers: worst error relative to each tensor's largest value %.2e\n", worst);
}

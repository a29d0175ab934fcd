// The Blocked16 layout (inference): every op that takes it gives what it gives on plain tensors, the layout is
// the one oneDNN calls nChw16c, the other ops and autograd refuse it, and the U-Net's blocked inference path
// matches its plain one.
#include <gtest/gtest.h>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/models/unet.h"
#include "aigc/ops.h"
#include "aigc/rng.h"
#include "test_util.h"

using namespace aigc;
using aigc::testing::max_abs_diff;

namespace {

Tensor random(const Shape& shape, uint64_t seed, float mean = 0.0f) {
  Tensor t = Tensor::empty(shape);
  Rng rng(seed);
  init::normal(t, mean, 1.0f, rng);
  return t;
}

// The largest |x| over a tensor, to state tolerances relative to the values' size.
double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, double(std::abs(v)));
  return m;
}

}  // namespace

TEST(BlockedLayout, ConversionIsNChw16c) {
  NoGradGuard ng;
  const int64_t N = 2, C = 32, H = 3, W = 5;
  Tensor x = random({N, C, H, W}, 1);
  Tensor b = ops::to_blocked(x);
  EXPECT_EQ(b.layout(), Layout::Blocked16);
  EXPECT_EQ(b.shape(), x.shape());
  const float *px = x.f32(), *pb = b.f32();
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < H * W; i++)
        ASSERT_EQ(pb[((n * (C / 16) + c / 16) * H * W + i) * 16 + c % 16], px[(n * C + c) * H * W + i]);
  Tensor back = ops::to_plain(b);
  EXPECT_EQ(back.layout(), Layout::Plain);
  EXPECT_EQ(max_abs_diff(back, x), 0.0);
  EXPECT_TRUE(ops::to_blocked(b).same(b));  // already blocked: itself
  EXPECT_TRUE(ops::to_plain(x).same(x));
}

TEST(BlockedLayout, OpsMatchTheirPlainResults) {
  NoGradGuard ng;
  const Tensor x = random({3, 32, 6, 6}, 2, 0.5f), y = random({3, 32, 6, 6}, 3), z = random({3, 16, 6, 6}, 4);
  const Tensor xb = ops::to_blocked(x), yb = ops::to_blocked(y), zb = ops::to_blocked(z);
  // plain(op(blocked)) against op(plain): exact for data movement and convolutions (oneDNN runs the same kernel
  // on the same blocked data either way), to rounding for group normalization (its sums go in another order).
  auto expect_same = [](const Tensor& blocked, const Tensor& plain, double tol, const char* what) {
    SCOPED_TRACE(what);
    ASSERT_EQ(blocked.layout(), Layout::Blocked16);
    EXPECT_LE(max_abs_diff(ops::to_plain(blocked), plain), tol * std::max(1.0, max_abs(plain)));
  };
  expect_same(ops::add(xb, yb), ops::add(x, y), 0, "add");
  const Tensor v = random({3, 32}, 5);
  expect_same(ops::add_channelwise(xb, v), ops::add_channelwise(x, v), 0, "add_channelwise");
  expect_same(ops::concat_channels(xb, zb), ops::concat_channels(x, z), 0, "concat_channels");
  expect_same(ops::upsample_nearest(xb, 2), ops::upsample_nearest(x, 2), 0, "upsample_nearest");
  const Tensor gw = random({32}, 6, 1.0f), gb = random({32}, 7);
  for (int64_t groups : {8, 4, 1})  // 4, 8 and 32 channels per group: within a block of 16, and across blocks
    for (bool silu : {false, true}) {
      SCOPED_TRACE(std::to_string(groups) + " groups, silu " + std::to_string(silu));
      expect_same(ops::group_norm(xb, gw, gb, groups, 1e-5f, silu), ops::group_norm(x, gw, gb, groups, 1e-5f, silu),
                  2e-6, "group_norm");
    }
  const Tensor cat = ops::concat_channels(x, z), catb = ops::concat_channels(xb, zb);  // 48 channels
  expect_same(ops::group_norm(catb, Tensor(), Tensor(), 4, 1e-5f, true),               // 12 channels per group
              ops::group_norm(cat, Tensor(), Tensor(), 4, 1e-5f, true), 2e-6, "group_norm, 48 channels");
  const Tensor w3 = random({32, 32, 3, 3}, 8), w1 = random({16, 32, 1, 1}, 9), cb = random({32}, 10);
  expect_same(ops::conv2d(xb, w3, cb, {1, 1}), ops::conv2d(x, w3, cb, {1, 1}), 0, "conv2d 3x3");
  expect_same(ops::conv2d(xb, w3, cb, {2, 1}), ops::conv2d(x, w3, cb, {2, 1}), 0, "conv2d 3x3 stride 2");
  expect_same(ops::conv2d(xb, w1, Tensor()), ops::conv2d(x, w1, Tensor()), 0, "conv2d 1x1");
  // Two output channels do not fill a block: the result is plain.
  const Tensor w_out = random({2, 32, 3, 3}, 11);
  Tensor img = ops::conv2d(xb, w_out, Tensor(), {1, 1});
  EXPECT_EQ(img.layout(), Layout::Plain);
  EXPECT_EQ(max_abs_diff(img, ops::conv2d(x, w_out, Tensor(), {1, 1})), 0.0);
  // A plain input (an image's few channels) asked for a blocked output: a network's first convolution.
  const Tensor img3 = random({3, 3, 6, 6}, 20), w_in = random({32, 3, 3, 3}, 21);
  ops::Conv2dOptions to_blocked{1, 1};
  to_blocked.blocked_output = true;
  expect_same(ops::conv2d(img3, w_in, cb, to_blocked), ops::conv2d(img3, w_in, cb, {1, 1}), 1e-6, "conv2d plain in");
}

TEST(BlockedLayout, IsRefusedWhereItIsNotSupported) {
  Tensor xb;
  {
    NoGradGuard ng;
    xb = ops::to_blocked(random({2, 16, 4, 4}, 12));
    EXPECT_THROW(ops::silu(xb), Error);                              // an op without a blocked kernel
    EXPECT_THROW(xb.view({2, 256}), Error);                          // a view would reinterpret the order
    EXPECT_THROW(xb.to_vector(), Error);                             // so would reading it out
    EXPECT_THROW(ops::add(xb, random({2, 16, 4, 4}, 13)), Error);    // mixed layouts
    EXPECT_THROW(ops::to_blocked(random({2, 8, 4, 4}, 14)), Error);  // not whole blocks
    EXPECT_THROW(ops::conv_transpose2d(xb, random({16, 16, 3, 3}, 15), Tensor()), Error);
    ops::Conv2dOptions blocked_out;
    blocked_out.blocked_output = true;  // 8 output channels are not whole blocks
    EXPECT_THROW(ops::conv2d(random({2, 3, 4, 4}, 22), random({8, 3, 3, 3}, 23), Tensor(), blocked_out), Error);
  }
  // With gradients on, blocked tensors are refused (their ops have no backward).
  Tensor w = random({16, 16, 3, 3}, 16);
  w.set_requires_grad(true);
  EXPECT_THROW(ops::conv2d(xb, w, Tensor(), {1, 1}), Error);
  ops::Conv2dOptions blocked_out;
  blocked_out.blocked_output = true;
  EXPECT_THROW(ops::conv2d(random({2, 16, 4, 4}, 24), w, Tensor(), blocked_out), Error);
  Tensor x = random({2, 16, 4, 4}, 17);
  x.set_requires_grad(true);
  EXPECT_THROW(ops::to_blocked(x), Error);
  clear_tape();
}

// The U-Net under NoGradGuard runs blocked (ch a multiple of 16); with gradients on, in evaluation mode, plain.
// Levels of 16 and 32 channels, attention at 4x4 and skip concatenations of 48 channels: every blocked op.
TEST(BlockedLayout, UNetInferenceMatchesThePlainForward) {
  UNetConfig c;
  c.image_size = 8, c.channels = 1, c.ch = 16, c.ch_mult = {1, 2}, c.num_res_blocks = 1;
  c.attn_resolutions = {4}, c.groups = 4, c.n_head = 2, c.dropout = 0.1f;
  UNet net(c, 1);
  Rng rng(18);
  for (const Param& p : net.params().params())  // every weight random: zero-initialized layers would hide layers
    init::normal(p.value, p.name.find("norm") != std::string::npos && p.name.ends_with(".weight") ? 1.0f : 0.0f, 0.2f,
                 rng);
  const Tensor x = random({3, 1, 8, 8}, 19), t = Tensor::from_vector({0.0f, 500.0f, 999.0f}, {3});
  const Tensor plain = net.forward(x, t, Tensor(), false);
  EXPECT_FALSE(net.last_forward_blocked());
  clear_tape();
  Tensor blocked;
  {
    NoGradGuard ng;
    blocked = net.forward(x, t, Tensor(), false);
  }
  EXPECT_TRUE(net.last_forward_blocked());
  EXPECT_EQ(blocked.layout(), Layout::Plain);
  EXPECT_LE(max_abs_diff(blocked, plain), 1e-5 * std::max(1.0, max_abs(plain)));
  EXPECT_GT(max_abs(plain), 0.1);  // a network that computes something
}

// bfloat16 paths: rounding, mixed-precision linear layers (forward and backward), bf16 inference weights, and
// a short training run whose loss follows the fp32 run. The oracle is written here from the format's
// definition: bf16 keeps the top 16 bits of a float, rounded to nearest with ties to even, and every product of
// two bf16 values is exact in fp32, so a float64 product of the rounded operands is the exact reference.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/models/gpt.h"
#include "aigc/ops.h"
#include "aigc/optim.h"
#include "aigc/rng.h"
#include "test_util.h"

using namespace aigc;

namespace {

// Reference rounding, written independently of the engine's (integer add with ties to even).
float round_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  uint32_t lower = u & 0xffffu, upper = u & 0xffff0000u;
  bool round_up = lower > 0x8000u || (lower == 0x8000u && (upper & 0x10000u));
  return std::bit_cast<float>(round_up ? upper + 0x10000u : upper);
}

struct PrecisionScope {  // restores fp32 even when an assertion fails
  explicit PrecisionScope(MatmulPrecision p) { set_matmul_precision(p); }
  ~PrecisionScope() { set_matmul_precision(MatmulPrecision::F32); }
};

}  // namespace

TEST(Bf16, RoundingMatchesTheFormat) {
  Tensor x = Tensor::from_vector({1.0f, 1.00390625f /* tie, rounds to even 1.0 */, 1.01171875f /* tie, up */,
                                  -3.14159265f, 1e-30f, 3.0e38f, INFINITY, -INFINITY, 0.0f, -0.0f},
                                 {10});
  Tensor y = ops::to_bf16(x);
  ASSERT_EQ(y.dtype(), DType::BF16);
  const uint16_t* h = static_cast<const uint16_t*>(y.raw());
  std::vector<float> v = x.to_vector();
  for (size_t i = 0; i < v.size(); i++) {
    float got = std::bit_cast<float>(uint32_t(h[i]) << 16);
    EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(round_bf16(v[i]))) << "element " << i;
  }
  EXPECT_EQ(std::bit_cast<float>(uint32_t(h[1]) << 16), 1.0f);
  Tensor nan = ops::to_bf16(Tensor::from_vector({NAN}, {1}));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(uint32_t(static_cast<const uint16_t*>(nan.raw())[0]) << 16)));
}

// Mixed-precision linear: forward and all three gradients equal float64 math on bf16-rounded operands.
TEST(Bf16, MixedPrecisionLinearMatchesRoundedReference) {
  Rng rng(7);
  const int64_t N = 37, C_in = 70, C_out = 45;  // odd sizes: no kernel gets an aligned, padded shape
  Tensor x = randn({N, C_in}, rng), w = randn({C_out, C_in}, rng, 0.2f), b = randn({C_out}, rng);
  Tensor dout = randn({N, C_out}, rng);
  x.set_requires_grad(true), w.set_requires_grad(true), b.set_requires_grad(true);
  Tensor y;
  {
    PrecisionScope bf16(MatmulPrecision::BF16);
    y = ops::linear(x, w, b);
    aigc::testing::backward_from(y, dout.to_vector());
  }
  std::vector<float> X = x.to_vector(), W = w.to_vector(), B = b.to_vector(), D = dout.to_vector();
  std::vector<float> Y = y.to_vector(), dX = x.grad().to_vector(), dW = w.grad().to_vector(), dB = b.grad().to_vector();
  auto r = [](float v) { return double(round_bf16(v)); };
  auto close = [](double got, double ref, double scale) { return std::abs(got - ref) <= 1e-5 * scale + 1e-6; };
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < C_out; o++) {
      double s = B[size_t(o)], mag = std::abs(B[size_t(o)]);
      for (int64_t i = 0; i < C_in; i++) {
        double p = r(X[size_t(n * C_in + i)]) * r(W[size_t(o * C_in + i)]);
        s += p, mag += std::abs(p);
      }
      ASSERT_TRUE(close(Y[size_t(n * C_out + o)], s, mag))
          << "y[" << n << "," << o << "] " << Y[size_t(n * C_out + o)] << " vs " << s;
    }
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < C_in; i++) {
      double s = 0, mag = 0;
      for (int64_t o = 0; o < C_out; o++) {
        double p = r(D[size_t(n * C_out + o)]) * r(W[size_t(o * C_in + i)]);
        s += p, mag += std::abs(p);
      }
      ASSERT_TRUE(close(dX[size_t(n * C_in + i)], s, mag)) << "dx[" << n << "," << i << "]";
    }
  for (int64_t o = 0; o < C_out; o++) {
    double sb = 0, mb = 0;
    for (int64_t n = 0; n < N; n++) sb += D[size_t(n * C_out + o)], mb += std::abs(D[size_t(n * C_out + o)]);
    ASSERT_TRUE(close(dB[size_t(o)], sb, mb)) << "db[" << o << "] (the bias gradient stays fp32)";
    for (int64_t i = 0; i < C_in; i++) {
      double s = 0, mag = 0;
      for (int64_t n = 0; n < N; n++) {
        double p = r(D[size_t(n * C_out + o)]) * r(X[size_t(n * C_in + i)]);
        s += p, mag += std::abs(p);
      }
      ASSERT_TRUE(close(dW[size_t(o * C_in + i)], s, mag)) << "dw[" << o << "," << i << "]";
    }
  }
}

// Convolutions in mixed precision read bf16-rounded operands and write fp32: forward and both gradients equal the
// fp32 convolution of the rounded operands (up to summation order). Without native bf16 they stay fp32.
TEST(Bf16, MixedPrecisionConvMatchesRoundedReference) {
  Rng rng(9);
  Tensor x = randn({3, 16, 9, 9}, rng), w = randn({32, 16, 3, 3}, rng, 0.2f), b = randn({32}, rng);
  Tensor dout = randn({3, 32, 9, 9}, rng);
  auto rounded = [](const Tensor& t) {
    std::vector<float> v = t.to_vector();
    for (float& f : v) f = round_bf16(f);
    return Tensor::from_vector(v, t.shape());
  };
  const bool native = bf16_is_native();
  auto run = [&](const Tensor& xi, const Tensor& wi, const Tensor& di, MatmulPrecision p) {
    PrecisionScope scope(p);
    Tensor xc = Tensor::from_vector(xi.to_vector(), xi.shape()), wc = Tensor::from_vector(wi.to_vector(), wi.shape());
    Tensor bc = Tensor::from_vector(b.to_vector(), b.shape());
    for (Tensor* t : {&xc, &wc, &bc}) t->set_requires_grad(true);
    Tensor y = ops::conv2d(xc, wc, bc, {1, 1});
    aigc::testing::backward_from(y, di.to_vector());
    return std::vector<Tensor>{y, xc.grad(), wc.grad(), bc.grad()};
  };
  std::vector<Tensor> got = run(x, w, dout, MatmulPrecision::BF16);
  std::vector<Tensor> ref =
      native ? run(rounded(x), rounded(w), rounded(dout), MatmulPrecision::F32) : run(x, w, dout, MatmulPrecision::F32);
  const char* names[] = {"y", "dx", "dw", "db"};
  for (size_t k = 0; k < 4; k++) {
    double scale = 1e-3;
    for (float v : ref[k].to_vector()) scale = std::max(scale, double(std::abs(v)));
    EXPECT_LT(aigc::testing::max_abs_diff(got[k], ref[k]) / scale, k == 3 ? 1e-2 : 1e-5)
        << names[k] << (native ? " (native bf16)" : " (no native bf16: fp32)");
  }
}

// bf16 inference weights: one row (the generation kernel) and many rows (the matmul) both equal float64 math
// on the rounded weights (activations stay fp32 in the few-row kernel, are rounded in the matmul).
TEST(Bf16, InferenceWeightsMatchRoundedReference) {
  Rng rng(9);
  const int64_t C_in = 96, C_out = 51;
  Tensor w = randn({C_out, C_in}, rng, 0.2f), b = randn({C_out}, rng);
  Tensor w16 = ops::to_bf16(w);
  std::vector<float> W = w.to_vector(), B = b.to_vector();
  for (int64_t N : {1, 3, 40}) {
    Tensor x = randn({N, C_in}, rng);
    std::vector<float> X = x.to_vector();
    NoGradGuard ng;
    std::vector<float> Y = ops::linear(x, w16, b).to_vector();
    for (int64_t n = 0; n < N; n++)
      for (int64_t o = 0; o < C_out; o++) {
        double s = B[size_t(o)], mag = std::abs(B[size_t(o)]);
        for (int64_t i = 0; i < C_in; i++) {
          double xv = N > 4 ? round_bf16(X[size_t(n * C_in + i)]) : X[size_t(n * C_in + i)];
          double p = xv * round_bf16(W[size_t(o * C_in + i)]);
          s += p, mag += std::abs(p);
        }
        ASSERT_NEAR(Y[size_t(n * C_out + o)], s, 1e-5 * mag + 1e-6) << "N=" << N << " y[" << n << "," << o << "]";
      }
  }
  Tensor x = randn({2, C_in}, rng);
  x.set_requires_grad(true);
  EXPECT_THROW(ops::linear(x, w16, b), Error);  // bf16 weights are inference-only
}

// A GPT with bf16 inference weights gives nearly the fp32 logits; a short training run in bf16 mixed precision
// follows the fp32 loss curve.
TEST(Bf16, GptInferenceAndTrainingFollowFp32) {
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = 2, c.n_head = 4, c.n_embd = 64, c.block_size = 32, c.vocab_size = 50;
  Rng rng(3);
  const int64_t B = 8, T = 32;
  std::vector<int32_t> pattern(size_t(B * (T + 1)));
  for (size_t i = 0; i < pattern.size(); i++) pattern[i] = int32_t((i * 7 + i / 5) % 50);  // a learnable sequence
  std::vector<int32_t> xi(size_t(B * T)), yi(size_t(B * T));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      xi[size_t(b * T + t)] = pattern[size_t(b * (T + 1) + t)];
      yi[size_t(b * T + t)] = pattern[size_t(b * (T + 1) + t + 1)];
    }
  Tensor x = Tensor::from_ints(xi, {B, T}), y = Tensor::from_ints(yi, {B, T});

  auto run = [&](MatmulPrecision p) {
    PrecisionScope scope(p);
    GPT m(c);
    m.init_weights(11);
    OptimConfig oc;
    oc.lr = 3e-3f;
    Optimizer opt(m.params(), oc);
    float last = 0;
    for (int step = 0; step < 60; step++) {
      m.params().zero_grad();
      Tensor loss = m.loss(x, y, true, uint64_t(step));
      last = loss.item();
      backward(loss);
      opt.step(oc.lr);
    }
    return last;
  };
  float l32 = run(MatmulPrecision::F32), l16 = run(MatmulPrecision::BF16);
  EXPECT_LT(l32, 1.0f) << "the fp32 run should learn the sequence";
  EXPECT_LT(std::abs(l16 - l32) / l32, 0.02f) << "bf16 final loss " << l16 << " vs fp32 " << l32;

  GPT m(c);
  m.init_weights(5);
  Tensor ref, got;
  {
    NoGradGuard ng;
    ref = m.forward(x);
    m.set_inference_dtype(DType::BF16);
    got = m.forward(x);
  }
  std::vector<float> a = ref.to_vector(), g = got.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) num += (a[i] - g[i]) * (a[i] - g[i]), den += a[i] * a[i];
  EXPECT_LT(std::sqrt(num / den), 1e-2) << "relative RMS difference of bf16 vs fp32 logits";
  EXPECT_GT(std::sqrt(num / den), 0.0) << "the bf16 weights were not used";
}

// The op cases of the image kernels for tests/test_backend_ops.cpp: 2-D convolution, channel bias, the GAN's
// activations, batch norm, concat and BCE, and the diffusion U-Net's kernels (SiLU, group norm, upsampling, the
// Blocked16 versions, transpose, timestep embedding, combine_rows, MSE, clamp, EMA). Conventions as there: names
// start with the kernel, gradients are pre-filled (+=), assigned outputs start as NaN.
#include <cmath>
#include <set>

#include "backend_op_cases.h"

namespace aigc::backend_ops {

namespace {

std::string conv_dims(const ConvShape& s) {
  return cat(" N=", s.N, " C_in=", s.C_in, " ", s.H, "x", s.W, " C_out=", s.C_out, " k", s.KH, "x", s.KW, " s",
             s.stride_h, "x", s.stride_w, " p", s.pad_h, "x", s.pad_w, " d", s.dil_h, "x", s.dil_w, " g", s.groups,
             s.src_blocked ? " src_blocked" : "", s.dst_blocked ? " dst_blocked" : "");
}

// oneDNN may run a 3x3 stride-1 convolution over 16-channel multiples as Winograd.
Tolerance conv_tol(const ConvShape& s) {
  const bool winograd = s.KH == 3 && s.KW == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
                        s.groups == 1 && s.C_in % 16 == 0 && s.C_out % 16 == 0;
  return winograd ? kWinograd : kConv;
}

// Inputs of one convolution: x (N, C_in, H, W), weights scaled to keep outputs O(1), bias, dout (N, C_out, OH, OW).
struct ConvData {
  std::vector<float> x, w, b, dout;
  ConvData(const ConvShape& s, Rng& rng)
      : x(normal(rng, s.N * s.C_in * s.H * s.W)),
        w(normal(rng, s.C_out * (s.C_in / s.groups) * s.KH * s.KW,
                 1.0 / std::sqrt(double((s.C_in / s.groups) * s.KH * s.KW)))),
        b(normal(rng, s.C_out)),
        dout(normal(rng, s.N * s.C_out * s.out_h() * s.out_w())) {}
};

void add_conv_cases(std::vector<OpCase>& t) {
  const ConvShape plain[] = {
      {.N = 2, .C_in = 5, .H = 7, .W = 9, .C_out = 3, .KH = 1, .KW = 1},                          // 1x1
      {.N = 2, .C_in = 3, .H = 7, .W = 6, .C_out = 4, .KH = 3, .KW = 3, .pad_h = 1, .pad_w = 1},  // 3x3 same
      {.N = 2,
       .C_in = 4,
       .H = 8,
       .W = 8,
       .C_out = 6,
       .KH = 4,
       .KW = 4,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1},  // the DCGAN's 4x4 stride 2
      {.N = 1, .C_in = 2, .H = 9, .W = 9, .C_out = 3, .KH = 3, .KW = 2, .dil_h = 2, .dil_w = 2},  // dilated 3x2
      {.N = 2, .C_in = 4, .H = 5, .W = 5, .C_out = 6, .KH = 3, .KW = 3, .pad_h = 1, .pad_w = 1, .groups = 2},
      {.N = 2, .C_in = 5, .H = 6, .W = 7, .C_out = 5, .KH = 3, .KW = 3, .pad_h = 1, .pad_w = 1, .groups = 5},
      {.N = 2, .C_in = 3, .H = 9, .W = 7, .C_out = 4, .KH = 3, .KW = 3, .stride_h = 2, .pad_w = 1},  // uneven
      {.N = 3, .C_in = 4, .H = 5, .W = 5, .C_out = 2, .KH = 5, .KW = 5},  // kernel covers the input: dense path
      {.N = 1, .C_in = 1, .H = 1, .W = 1, .C_out = 1, .KH = 1, .KW = 1},  // size 1
      {.N = 2, .C_in = 16, .H = 13, .W = 13, .C_out = 16, .KH = 3, .KW = 3, .pad_h = 1, .pad_w = 1},
      {.N = 1,
       .C_in = 32,
       .H = 9,
       .W = 9,
       .C_out = 16,
       .KH = 4,
       .KW = 4,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1},
  };
  for (const ConvShape& s : plain) {
    const std::string dims = conv_dims(s);
    const int64_t n_in = s.N * s.C_in * s.H * s.W, n_out = s.N * s.C_out * s.out_h() * s.out_w(),
                  n_w = s.C_out * (s.C_in / s.groups) * s.KH * s.KW;
    for (bool acc : {false, true})
      for (bool bias : {true, false})
        add_case(t, cat("conv2d_forward", dims, " accumulate=", acc, bias ? "" : " bias=null"), conv_tol(s),
                 [=](Backend& be, Rng& rng) {
                   ConvData d(s, rng);
                   std::vector<float> out = acc ? normal(rng, n_out) : unset(n_out);
                   be.conv2d_forward(out.data(), d.x.data(), d.w.data(), bias ? d.b.data() : nullptr, s, acc);
                   return Outputs{{"out", out}};
                 });
    for (bool acc : {false, true})
      add_case(t, cat("conv2d_backward_data", dims, " accumulate=", acc), conv_tol(s), [=](Backend& be, Rng& rng) {
        ConvData d(s, rng);
        std::vector<float> dinp = acc ? normal(rng, n_in) : unset(n_in);
        be.conv2d_backward_data(dinp.data(), d.dout.data(), d.w.data(), s, acc);
        return Outputs{{"dinp", dinp}};
      });
    for (bool with_dbias : {true, false})
      add_case(t, cat("conv2d_backward_weights", dims, with_dbias ? "" : " dbias=null"), conv_tol(s),
               [=](Backend& be, Rng& rng) {
                 ConvData d(s, rng);
                 std::vector<float> dw = normal(rng, n_w), db = normal(rng, s.C_out);
                 be.conv2d_backward_weights(dw.data(), with_dbias ? db.data() : nullptr, d.dout.data(), d.x.data(), s);
                 return Outputs{{"dw", dw}, {"dbias", db}};
               });
    // dinp assigned or accumulated; any output may be null.
    for (const char* v : {"dinp_accumulate=1", "dinp_accumulate=0", "dinp=null", "dw=null", "dbias=null"})
      add_case(t, cat("conv2d_backward", dims, " ", v), conv_tol(s), [=](Backend& be, Rng& rng) {
        const std::string variant = v;
        const bool acc = variant != "dinp_accumulate=0";
        ConvData d(s, rng);
        std::vector<float> dinp = acc ? normal(rng, n_in) : unset(n_in), dw = normal(rng, n_w),
                           db = normal(rng, s.C_out);
        be.conv2d_backward(variant == "dinp=null" ? nullptr : dinp.data(), variant == "dw=null" ? nullptr : dw.data(),
                           variant == "dbias=null" ? nullptr : db.data(), d.dout.data(), d.x.data(), d.w.data(), s,
                           acc);
        return Outputs{{"dinp", dinp}, {"dw", dw}, {"dbias", db}};
      });
  }

  // Blocked16 activations (forward only, inference): the buffers are simply read and written as nChw16c.
  const ConvShape blocked[] = {
      {.N = 2, .C_in = 16, .H = 7, .W = 7, .C_out = 32, .KH = 3, .KW = 3, .pad_h = 1, .pad_w = 1},
      {.N = 1, .C_in = 32, .H = 5, .W = 3, .C_out = 16, .KH = 1, .KW = 1},
      {.N = 1,
       .C_in = 32,
       .H = 8,
       .W = 8,
       .C_out = 16,
       .KH = 4,
       .KW = 4,
       .stride_h = 2,
       .stride_w = 2,
       .pad_h = 1,
       .pad_w = 1},
  };
  for (ConvShape s : blocked)
    for (auto [src, dst] : {std::pair{true, false}, {false, true}, {true, true}}) {
      s.src_blocked = src, s.dst_blocked = dst;
      const int64_t n_out = s.N * s.C_out * s.out_h() * s.out_w();
      for (bool acc : {false, true})
        add_case(t, cat("conv2d_forward", conv_dims(s), " accumulate=", acc), conv_tol(s), [=](Backend& be, Rng& rng) {
          ConvData d(s, rng);
          std::vector<float> out = acc ? normal(rng, n_out) : unset(n_out);
          be.conv2d_forward(out.data(), d.x.data(), d.w.data(), d.b.data(), s, acc);
          return Outputs{{"out", out}};
        });
    }

  // MatmulPrecision::BF16: where the CPU has bf16 instructions both backends round every operand a convolution
  // reads to bf16 (and sum in fp32 / double); elsewhere both stay fp32.
  for (const ConvShape& s : {plain[1], plain[2]}) {
    const int64_t n_in = s.N * s.C_in * s.H * s.W, n_out = s.N * s.C_out * s.out_h() * s.out_w(),
                  n_w = s.C_out * (s.C_in / s.groups) * s.KH * s.KW;
    add_case(t, cat("conv2d_forward", conv_dims(s), " [bf16 precision]"), kConv, [=](Backend& be, Rng& rng) {
      PrecisionGuard bf16(MatmulPrecision::BF16);
      ConvData d(s, rng);
      std::vector<float> out = unset(n_out);
      be.conv2d_forward(out.data(), d.x.data(), d.w.data(), d.b.data(), s, false);
      return Outputs{{"out", out}};
    });
    add_case(t, cat("conv2d_backward", conv_dims(s), " [bf16 precision]"), kConv, [=](Backend& be, Rng& rng) {
      PrecisionGuard bf16(MatmulPrecision::BF16);
      ConvData d(s, rng);
      std::vector<float> dinp = normal(rng, n_in), dw = normal(rng, n_w), db = normal(rng, s.C_out);
      be.conv2d_backward(dinp.data(), dw.data(), db.data(), d.dout.data(), d.x.data(), d.w.data(), s, true);
      return Outputs{{"dinp", dinp}, {"dw", dw}, {"dbias", db}};
    });
  }
}

// ---- Channel bias, GAN kernels ----
void add_gan_cases(std::vector<OpCase>& t) {
  struct NCHW {
    int64_t N, C, HW;
  };
  for (const NCHW& s : {NCHW{2, 3, 7}, NCHW{1, 1, 1}, NCHW{0, 4, 5}, NCHW{3, 17, 33}}) {
    const std::string dims = cat(" N=", s.N, " C=", s.C, " HW=", s.HW);
    const int64_t n = s.N * s.C * s.HW;
    for (bool in_place : {false, true})
      add_case(t, cat("channel_bias_add", dims, in_place ? " in place" : ""), kElementwise, [=](Backend& be, Rng& rng) {
        std::vector<float> src = normal(rng, n), bias = normal(rng, s.C), out = in_place ? src : unset(n);
        be.channel_bias_add(out.data(), in_place ? out.data() : src.data(), bias.data(), s.N, s.C, s.HW);
        return Outputs{{"out", out}};
      });
    add_case(t, "channel_bias_backward" + dims, kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> dout = normal(rng, n), dbias = normal(rng, s.C);
      be.channel_bias_backward(dbias.data(), dout.data(), s.N, s.C, s.HW);
      return Outputs{{"dbias", dbias}};
    });
  }

  for (float slope : {0.2f, 0.01f})
    add_activation_cases(
        t, "leaky_relu_forward",
        [slope](Backend& be, float* out, const float* x, int64_t n) { be.leaky_relu_forward(out, x, n, slope); },
        "leaky_relu_backward",
        [slope](Backend& be, float* dx, const float* x, const float* d, int64_t n) {
          be.leaky_relu_backward(dx, x, d, n, slope);
        },
        kElementwise, cat(" slope=", slope));
  add_activation_cases(t, "tanh_forward", &Backend::tanh_forward, "tanh_backward", &Backend::tanh_backward, kTanhGrad);
  add_activation_cases(t, "sigmoid_forward", &Backend::sigmoid_forward, "sigmoid_backward", &Backend::sigmoid_backward);

  // Batch norm: training (batch statistics) and evaluation (given running statistics), with and without affine.
  for (const NCHW& s : {NCHW{2, 3, 7}, NCHW{4, 5, 1}, NCHW{1, 2, 13}, NCHW{3, 17, 33}, NCHW{2, 1, 1}}) {
    const std::string dims = cat(" N=", s.N, " C=", s.C, " HW=", s.HW);
    const int64_t n = s.N * s.C * s.HW;
    for (bool training : {true, false}) {
      const std::string mode = training ? " training" : " eval";
      for (bool affine : {true, false})
        add_case(t, cat("batchnorm_forward", dims, mode, affine ? "" : " w,b=null"), kNorm, [=](Backend& be, Rng& rng) {
          std::vector<float> x = normal(rng, n, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C), out = unset(n);
          std::vector<float> mean = training ? unset(s.C) : normal(rng, s.C, 0.5),
                             var = training ? unset(s.C) : uniform(rng, s.C, 0.5, 2.0);
          be.batchnorm_forward(out.data(), mean.data(), var.data(), x.data(), affine ? w.data() : nullptr,
                               affine ? b.data() : nullptr, s.N, s.C, s.HW, 1e-5f, training);
          return Outputs{{"out", out}, {"mean", mean}, {"var", var}};
        });
      for (const char* v : {"all", "dinp=null", "w,dw=null"})
        add_case(t, cat("batchnorm_backward", dims, mode, " ", v), kNorm, [=](Backend& be, Rng& rng) {
          const std::string variant = v;
          std::vector<float> x = normal(rng, n, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C),
                             dout = normal(rng, n), out = zeros(n), mean = normal(rng, s.C, 0.5),
                             var = uniform(rng, s.C, 0.5, 2.0);
          if (training)  // the batch statistics, from the reference so both backends see the same
            reference_backend().batchnorm_forward(out.data(), mean.data(), var.data(), x.data(), w.data(), b.data(),
                                                  s.N, s.C, s.HW, 1e-5f, true);
          std::vector<float> dinp = normal(rng, n), dw = normal(rng, s.C), db = normal(rng, s.C);
          const bool no_w = variant == "w,dw=null";
          be.batchnorm_backward(variant == "dinp=null" ? nullptr : dinp.data(), no_w ? nullptr : dw.data(), db.data(),
                                dout.data(), x.data(), no_w ? nullptr : w.data(), mean.data(), var.data(), s.N, s.C,
                                s.HW, 1e-5f, training);
          return Outputs{{"dinp", dinp}, {"dw", dw}, {"db", db}};
        });
    }
  }
  for (int64_t C : {7, 1})
    for (int64_t count : {1, 2, 98})  // count 1: no unbiasing
      add_case(t, cat("batchnorm_update_running C=", C, " count=", count), kElementwise, [=](Backend& be, Rng& rng) {
        std::vector<float> rm = normal(rng, C), rv = uniform(rng, C, 0.5, 2.0), m = normal(rng, C),
                           v = uniform(rng, C, 0.0, 3.0);
        be.batchnorm_update_running(rm.data(), rv.data(), m.data(), v.data(), C, count, 0.1f);
        return Outputs{{"running_mean", rm}, {"running_var", rv}};
      });

  struct Cat {
    int64_t N, Ca, Cb, S;
  };
  for (const Cat& s : {Cat{2, 3, 5, 7}, Cat{1, 1, 1, 1}, Cat{0, 2, 3, 4}, Cat{3, 16, 17, 13}}) {
    const std::string dims = cat(" N=", s.N, " Ca=", s.Ca, " Cb=", s.Cb, " S=", s.S);
    const int64_t na = s.N * s.Ca * s.S, nb = s.N * s.Cb * s.S;
    add_case(t, "concat_channels_forward" + dims, kExact, [=](Backend& be, Rng& rng) {
      std::vector<float> a = normal(rng, na), b = normal(rng, nb), out = unset(na + nb);
      be.concat_channels_forward(out.data(), a.data(), b.data(), s.N, s.Ca, s.Cb, s.S);
      return Outputs{{"out", out}};
    });
    // Each flag combination, and one side without a gradient.
    for (const char* v :
         {"a_acc=1 b_acc=1", "a_acc=1 b_acc=0", "a_acc=0 b_acc=1", "a_acc=0 b_acc=0", "da=null", "db=null"})
      add_case(t, cat("concat_channels_backward", dims, " ", v), kElementwise, [=](Backend& be, Rng& rng) {
        const std::string variant = v;
        const bool a_acc = variant != "a_acc=0 b_acc=1" && variant != "a_acc=0 b_acc=0",
                   b_acc = variant != "a_acc=1 b_acc=0" && variant != "a_acc=0 b_acc=0";
        std::vector<float> dout = normal(rng, na + nb), da = a_acc ? normal(rng, na) : unset(na),
                           db = b_acc ? normal(rng, nb) : unset(nb);
        be.concat_channels_backward(variant == "da=null" ? nullptr : da.data(),
                                    variant == "db=null" ? nullptr : db.data(), dout.data(), s.N, s.Ca, s.Cb, s.S,
                                    a_acc, b_acc);
        return Outputs{{"da", da}, {"db", db}};
      });
  }

  // BCE on logits: saturated logits (+-30) and targets exactly 0 and 1 among the random ones.
  auto bce_inputs = [](Rng& rng, int64_t n) {
    std::pair<std::vector<float>, std::vector<float>> xy{activation_input(rng, n), uniform(rng, n, 0.0, 1.0)};
    for (int64_t i = 0; i < n; i += 5) xy.second[size_t(i)] = float(i / 5 % 2);
    return xy;
  };
  for (int64_t n : kFlatSizes) {
    add_case(t, cat("bce_with_logits_forward n=", n), kReduction, [=](Backend& be, Rng& rng) {
      auto [x, y] = bce_inputs(rng, n);
      return Outputs{{"value", scalar(be.bce_with_logits_forward(x.data(), y.data(), n))}};
    });
    add_case(t, cat("bce_with_logits_backward n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      auto [x, y] = bce_inputs(rng, n);
      std::vector<float> dx = normal(rng, n);
      be.bce_with_logits_backward(dx.data(), x.data(), y.data(), 1.0f / float(std::max<int64_t>(n, 1)), n);
      return Outputs{{"dlogits", dx}};
    });
  }
}

// ---- Diffusion U-Net kernels ----
void add_diffusion_cases(std::vector<OpCase>& t) {
  add_activation_cases(t, "silu_forward", &Backend::silu_forward, "silu_backward", &Backend::silu_backward);

  // Group norm: several groups, one group, one channel per group (G = C), 16-channel multiples, an empty batch;
  // with and without SiLU and the affine part (null w, b).
  struct GN {
    int64_t N, C, HW, G;
  };
  for (const GN& s :
       {GN{2, 6, 7, 3}, GN{1, 4, 9, 1}, GN{2, 32, 13, 8}, GN{1, 5, 9, 5}, GN{3, 8, 33, 2}, GN{0, 4, 5, 2}})
    for (bool silu : {false, true})
      for (bool affine : {true, false}) {
        const std::string dims =
            cat(" N=", s.N, " C=", s.C, " HW=", s.HW, " G=", s.G, silu ? " silu" : "", affine ? "" : " w,b=null");
        const int64_t n = s.N * s.C * s.HW;
        add_case(t, "groupnorm_forward" + dims, kNorm, [=](Backend& be, Rng& rng) {
          std::vector<float> x = normal(rng, n, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C), out = unset(n),
                             mean = unset(s.N * s.G), rstd = unset(s.N * s.G);
          be.groupnorm_forward(out.data(), mean.data(), rstd.data(), x.data(), affine ? w.data() : nullptr,
                               affine ? b.data() : nullptr, s.N, s.C, s.HW, s.G, 1e-5f, silu);
          return Outputs{{"out", out}, {"mean", mean}, {"rstd", rstd}};
        });
        for (bool acc : {true, false})  // without affine there is no dw, db (as the ops layer calls it)
          add_case(t, cat("groupnorm_backward", dims, " dinp_accumulate=", acc), kNorm, [=](Backend& be, Rng& rng) {
            std::vector<float> x = normal(rng, n, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C),
                               dout = normal(rng, n), out = zeros(n), mean = zeros(s.N * s.G), rstd = zeros(s.N * s.G);
            const float* wp = affine ? w.data() : nullptr;
            const float* bp = affine ? b.data() : nullptr;
            reference_backend().groupnorm_forward(out.data(), mean.data(), rstd.data(), x.data(), wp, bp, s.N, s.C,
                                                  s.HW, s.G, 1e-5f, silu);
            std::vector<float> dinp = acc ? normal(rng, n) : unset(n), dw = normal(rng, s.C), db = normal(rng, s.C);
            be.groupnorm_backward(dinp.data(), affine ? dw.data() : nullptr, affine ? db.data() : nullptr, dout.data(),
                                  x.data(), wp, bp, mean.data(), rstd.data(), s.N, s.C, s.HW, s.G, silu, acc);
            return affine ? Outputs{{"dinp", dinp}, {"dw", dw}, {"db", db}} : Outputs{{"dinp", dinp}};
          });
      }

  struct Up {
    int64_t NC, H, W, f;
  };
  for (const Up& s : {Up{3, 4, 5, 2}, Up{1, 1, 1, 1}, Up{2, 3, 7, 3}, Up{0, 2, 2, 2}, Up{2, 1, 17, 2}}) {
    const std::string dims = cat(" NC=", s.NC, " H=", s.H, " W=", s.W, " f=", s.f);
    const int64_t n_in = s.NC * s.H * s.W, n_out = n_in * s.f * s.f;
    add_case(t, "upsample_nearest_forward" + dims, kExact, [=](Backend& be, Rng& rng) {
      std::vector<float> x = normal(rng, n_in), out = unset(n_out);
      be.upsample_nearest_forward(out.data(), x.data(), s.NC, s.H, s.W, s.f);
      return Outputs{{"out", out}};
    });
    add_case(t, "upsample_nearest_backward" + dims, kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> dout = normal(rng, n_out), dinp = normal(rng, n_in);
      be.upsample_nearest_backward(dinp.data(), dout.data(), s.NC, s.H, s.W, s.f);
      return Outputs{{"dinp", dinp}};
    });
  }

  // Blocked16 (N, C/16, HW, 16): random buffers are as good as converted ones, both backends read the same layout.
  for (const GN& s : {GN{2, 32, 13, 8}, GN{1, 16, 7, 1}, GN{2, 48, 5, 3}, GN{1, 32, 9, 32}, GN{0, 16, 3, 4}})
    for (bool silu : {false, true})
      for (bool affine : {true, false})
        add_case(t,
                 cat("groupnorm_forward_blocked16 N=", s.N, " C=", s.C, " HW=", s.HW, " G=", s.G, silu ? " silu" : "",
                     affine ? "" : " w,b=null"),
                 kNorm, [=](Backend& be, Rng& rng) {
                   const int64_t n = s.N * s.C * s.HW;
                   std::vector<float> x = normal(rng, n, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C),
                                      out = unset(n);
                   be.groupnorm_forward_blocked16(out.data(), x.data(), affine ? w.data() : nullptr,
                                                  affine ? b.data() : nullptr, s.N, s.C, s.HW, s.G, 1e-5f, silu);
                   return Outputs{{"out", out}};
                 });
  struct UpB {
    int64_t N, C, H, W, f;
  };
  for (const UpB& s : {UpB{2, 32, 3, 5, 2}, UpB{1, 16, 1, 1, 3}, UpB{1, 16, 4, 3, 1}, UpB{0, 16, 2, 2, 2}})
    add_case(t, cat("upsample_nearest_blocked16 N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " f=", s.f), kExact,
             [=](Backend& be, Rng& rng) {
               const int64_t n_in = s.N * s.C * s.H * s.W;
               std::vector<float> x = normal(rng, n_in), out = unset(n_in * s.f * s.f);
               be.upsample_nearest_blocked16(out.data(), x.data(), s.N, s.C, s.H, s.W, s.f);
               return Outputs{{"out", out}};
             });
  struct AddB {
    int64_t N, C, HW;
  };
  for (const AddB& s : {AddB{2, 32, 13}, AddB{1, 16, 1}, AddB{3, 48, 7}, AddB{0, 16, 4}})
    add_case(t, cat("add_channelwise_blocked16 N=", s.N, " C=", s.C, " HW=", s.HW), kElementwise,
             [=](Backend& be, Rng& rng) {
               const int64_t n = s.N * s.C * s.HW;
               std::vector<float> x = normal(rng, n), v = normal(rng, s.N * s.C), out = unset(n);
               be.add_channelwise_blocked16(out.data(), x.data(), v.data(), s.N, s.C, s.HW);
               return Outputs{{"out", out}};
             });

  struct Tr {
    int64_t B, N, M;
  };
  for (const Tr& s : {Tr{3, 33, 17}, Tr{1, 1, 1}, Tr{2, 7, 64}, Tr{0, 3, 4}, Tr{1, 40, 70}})
    for (bool acc : {false, true})
      add_case(t, cat("transpose_last2 B=", s.B, " N=", s.N, " M=", s.M, " accumulate=", acc),
               acc ? kElementwise : kExact, [=](Backend& be, Rng& rng) {
                 const int64_t n = s.B * s.N * s.M;
                 std::vector<float> x = normal(rng, n), out = acc ? normal(rng, n) : unset(n);
                 be.transpose_last2(out.data(), x.data(), s.B, s.N, s.M, acc);
                 return Outputs{{"out", out}};
               });

  // Timesteps 0, 1, fractional and large (phase accuracy); dim with an odd half (6, 130). dim = 2 is left out:
  // its single frequency max_period^(-0/0) is undefined.
  struct TS {
    int64_t B, dim;
    float max_period;
  };
  for (const TS& s : {TS{4, 4, 10000.0f}, TS{4, 6, 10000.0f}, TS{4, 64, 10000.0f}, TS{4, 130, 10000.0f},
                      TS{4, 64, 100.0f}, TS{0, 8, 10000.0f}})
    add_case(t, cat("timestep_embedding B=", s.B, " dim=", s.dim, " max_period=", s.max_period), kElementwise,
             [=](Backend& be, Rng&) {
               const std::vector<float> steps = {0.0f, 1.0f, 17.5f, 999.0f};
               std::vector<float> out = unset(s.B * s.dim);
               be.timestep_embedding(out.data(), steps.data(), s.B, s.dim, s.max_period);
               return Outputs{{"out", out}};
             });

  // combine_rows: out separate, out aliasing x or y, and b, y null (out += a x: the backward pass's use).
  struct CR {
    int64_t N, S;
  };
  for (const CR& s : {CR{3, 17}, CR{1, 1}, CR{0, 5}, CR{4, 65}})
    for (bool acc : {false, true})
      for (const char* v : {"out separate", "out=x", "out=y", "b,y=null"})
        add_case(t, cat("combine_rows N=", s.N, " S=", s.S, " accumulate=", acc, " ", v), kElementwise,
                 [=](Backend& be, Rng& rng) {
                   const std::string variant = v;
                   const int64_t n = s.N * s.S;
                   std::vector<float> a = normal(rng, s.N), b = normal(rng, s.N), x = normal(rng, n),
                                      y = normal(rng, n), out = acc ? normal(rng, n) : unset(n);
                   if (variant == "out=x") out = x;
                   if (variant == "out=y") out = y;
                   const bool no_y = variant == "b,y=null";
                   be.combine_rows(out.data(), a.data(), variant == "out=x" ? out.data() : x.data(),
                                   no_y ? nullptr : b.data(),
                                   no_y ? nullptr : (variant == "out=y" ? out.data() : y.data()), s.N, s.S, acc);
                   return Outputs{{"out", out}};
                 });

  for (int64_t n : kFlatSizes) {
    add_case(t, cat("mse_forward n=", n), kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> pred = normal(rng, n), target = normal(rng, n);
      return Outputs{{"value", scalar(be.mse_forward(pred.data(), target.data(), n))}};
    });
    for (const char* v : {"both", "dtarget=null", "dpred=null"})
      add_case(t, cat("mse_backward n=", n, " ", v), kElementwise, [=](Backend& be, Rng& rng) {
        const std::string variant = v;
        std::vector<float> pred = normal(rng, n), target = normal(rng, n), dpred = normal(rng, n),
                           dtarget = normal(rng, n);
        be.mse_backward(variant == "dpred=null" ? nullptr : dpred.data(),
                        variant == "dtarget=null" ? nullptr : dtarget.data(), pred.data(), target.data(), 0.37f, n);
        return Outputs{{"dpred", dpred}, {"dtarget", dtarget}};
      });
    // clamp: +-inf and values exactly at the bounds among the random ones.
    add_case(t, cat("clamp n=", n, " lo=-0.5 hi=1.25"), kExact, [=](Backend& be, Rng& rng) {
      std::vector<float> x = normal(rng, n), out = unset(n);
      const float special[] = {INFINITY, -INFINITY, -0.5f, 1.25f};
      for (size_t k = 0; k < std::size(special) && 2 + 4 * int64_t(k) < n; k++) x[2 + 4 * k] = special[k];
      be.clamp(out.data(), x.data(), n, -0.5f, 1.25f);
      return Outputs{{"out", out}};
    });
    for (float decay : {0.999f, 0.5f})
      add_case(t, cat("ema_update n=", n, " decay=", decay), kElementwise, [=](Backend& be, Rng& rng) {
        std::vector<float> ema = normal(rng, n), p = normal(rng, n);
        be.ema_update(ema.data(), p.data(), n, decay);
        return Outputs{{"ema", ema}};
      });
  }
}

}  // namespace

void add_image_cases(std::vector<OpCase>& table) {
  add_conv_cases(table);
  add_gan_cases(table);
  add_diffusion_cases(table);
}

}  // namespace aigc::backend_ops

// Backend parity, modelled on ggml's test-backend-ops: one table of op cases runs every kernel of
// include/aigc/backend.h on the fast backend (cpu_backend()) and on the reference backend (reference_backend(),
// plain scalar loops) with identical random inputs, and compares every output buffer at the case's stated
// tolerance (see the families in backend_op_cases.h). Shapes cover odd sizes, size 1, empty inputs where a kernel
// allows them, sizes off the SIMD widths, and every flag. Backward cases pre-fill their gradient outputs with
// random values so the += contract is checked; assigned outputs start as NaN so an unwritten element shows.
// This file holds the runner and the cases of the nn kernels; backend_op_cases_image.cpp holds the rest.
// AIGC_BACKEND_OPS_VERBOSE=1 prints every output's largest differences and how much of its tolerance the worst
// element uses (the headroom).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "aigc/gguf.h"
#include "aigc/quant.h"
#include "backend_op_cases.h"

namespace aigc::backend_ops {

namespace {

// The kernels of class Backend: backend_kernels() (src/backend/kernels.cpp), the one list of them.
// EveryKernelHasACase fails while a kernel has no case, and while that list differs from the kernels backend.h
// declares.
const std::vector<std::string> kKernels(backend_kernels().begin(), backend_kernels().end());

// ---- Matrix products and linear layers ----

// A quantized type's blocks of w (rows of whole blocks), as a GGUF file holds them.
std::string blocks_of(DType q, const std::vector<float>& w) {
  return convert_from_f32(*ggml_type_from_name(dtype_name(q)), w.data(), int64_t(w.size()));
}
void add_gemm_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t M, N, K;
  };
  const Shape shapes[] = {{7, 13, 33}, {17, 31, 65}, {1, 1, 1}, {33, 17, 1}, {5, 3, 0}, {0, 4, 6}, {64, 48, 130}};
  // Row-major storage: A is (M, K), or (K, M) when trans_a; each leading dimension is 3 more than needed.
  auto run_gemm = [](Backend& be, Rng& rng, bool ta, bool tb, Shape s, float alpha, float beta, bool nan_c) {
    const int64_t lda = (ta ? s.M : s.K) + 3, ldb = (tb ? s.K : s.N) + 3, ldc = s.N + 3;
    std::vector<float> A = normal(rng, (ta ? s.K : s.M) * lda), B = normal(rng, (tb ? s.N : s.K) * ldb);
    std::vector<float> C = nan_c ? unset(s.M * ldc) : normal(rng, s.M * ldc);  // padding columns must survive
    be.gemm(ta, tb, s.M, s.N, s.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
    return Outputs{{"C", C}};
  };
  for (const Shape& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        add_case(t, cat("gemm ta=", ta, " tb=", tb, " M=", s.M, " N=", s.N, " K=", s.K, " alpha=0.7 beta=-0.3"), kGemm,
                 [=](Backend& be, Rng& rng) { return run_gemm(be, rng, ta, tb, s, 0.7f, -0.3f, false); });
  // beta = 0: C is only written (BLAS), so a NaN in it must not survive; beta = 1: accumulate (backward passes).
  add_case(t, "gemm ta=0 tb=1 M=7 N=13 K=33 alpha=1 beta=0 over NaN", kGemm, [=](Backend& be, Rng& rng) {
    return run_gemm(be, rng, false, true, {7, 13, 33}, 1.0f, 0.0f, true);
  });
  add_case(t, "gemm ta=1 tb=0 M=17 N=31 K=65 alpha=-2 beta=0 over NaN", kGemm, [=](Backend& be, Rng& rng) {
    return run_gemm(be, rng, true, false, {17, 31, 65}, -2.0f, 0.0f, true);
  });
  add_case(t, "gemm ta=0 tb=0 M=5 N=3 K=0 alpha=1 beta=0 over NaN", kGemm, [=](Backend& be, Rng& rng) {
    return run_gemm(be, rng, false, false, {5, 3, 0}, 1.0f, 0.0f, true);
  });
  add_case(t, "gemm ta=1 tb=0 M=13 N=7 K=33 alpha=1 beta=1", kGemm, [=](Backend& be, Rng& rng) {
    return run_gemm(be, rng, true, false, {13, 7, 33}, 1.0f, 1.0f, false);
  });
}

void add_linear_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t N, C_in, C_out;
  };
  // N <= 16 takes the CPU's few-rows kernel, N > 16 oneDNN; N = 0 is an empty batch.
  const Shape shapes[] = {{7, 13, 5}, {33, 65, 31}, {1, 1, 1}, {0, 8, 3}, {16, 17, 16}, {17, 16, 17}, {4, 130, 9}};
  for (const Shape& s : shapes) {
    const std::string dims = cat(" N=", s.N, " C_in=", s.C_in, " C_out=", s.C_out);
    for (bool bias : {true, false})
      add_case(t, cat("linear_forward", dims, bias ? "" : " bias=null"), kGemm, [=](Backend& be, Rng& rng) {
        std::vector<float> x = normal(rng, s.N * s.C_in), w = normal(rng, s.C_out * s.C_in, 0.3),
                           b = normal(rng, s.C_out), out = unset(s.N * s.C_out);
        be.linear_forward(out.data(), x.data(), w.data(), bias ? b.data() : nullptr, s.N, s.C_in, s.C_out);
        return Outputs{{"out", out}};
      });
    // Which gradients are wanted: all, no bias (a layer without one), no input gradient (the first layer).
    for (const char* which : {"all", "dbias=null", "dinp=null"})
      add_case(t, cat("linear_backward", dims, " ", which), kGemm, [=](Backend& be, Rng& rng) {
        const std::string w_ = which;
        std::vector<float> x = normal(rng, s.N * s.C_in), w = normal(rng, s.C_out * s.C_in, 0.3),
                           dout = normal(rng, s.N * s.C_out), dinp = normal(rng, s.N * s.C_in),
                           dw = normal(rng, s.C_out * s.C_in), db = normal(rng, s.C_out);
        be.linear_backward(w_ == "dinp=null" ? nullptr : dinp.data(), dw.data(),
                           w_ == "dbias=null" ? nullptr : db.data(), dout.data(), x.data(), w.data(), s.N, s.C_in,
                           s.C_out);
        return Outputs{{"dinp", dinp}, {"dw", dw}, {"dbias", db}};
      });
  }
  // MatmulPrecision::BF16: both backends round the operands to bf16 and sum exactly-representable products.
  for (const Shape& s : {Shape{7, 13, 5}, Shape{33, 65, 31}}) {
    const std::string dims = cat(" N=", s.N, " C_in=", s.C_in, " C_out=", s.C_out, " [bf16 precision]");
    add_case(t, "linear_forward" + dims, kGemm, [=](Backend& be, Rng& rng) {
      PrecisionGuard bf16(MatmulPrecision::BF16);
      std::vector<float> x = normal(rng, s.N * s.C_in), w = normal(rng, s.C_out * s.C_in, 0.3),
                         b = normal(rng, s.C_out), out = unset(s.N * s.C_out);
      be.linear_forward(out.data(), x.data(), w.data(), b.data(), s.N, s.C_in, s.C_out);
      return Outputs{{"out", out}};
    });
    add_case(t, "linear_backward" + dims, kGemm, [=](Backend& be, Rng& rng) {
      PrecisionGuard bf16(MatmulPrecision::BF16);
      std::vector<float> x = normal(rng, s.N * s.C_in), w = normal(rng, s.C_out * s.C_in, 0.3),
                         dout = normal(rng, s.N * s.C_out), dinp = normal(rng, s.N * s.C_in),
                         dw = normal(rng, s.C_out * s.C_in), db = normal(rng, s.C_out);
      be.linear_backward(dinp.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), s.N, s.C_in, s.C_out);
      return Outputs{{"dinp", dinp}, {"dw", dw}, {"dbias", db}};
    });
  }
  // bf16 weights: up to 16 rows the CPU widens them in fp32 dot products (fp32 input, gemm tolerance); beyond, its
  // bf16 matmul also rounds the input to bf16, which the reference does not.
  // (C_in 51: the CPU's 32-wide steps, a 16-wide one and a scalar tail; N 6 x C_in 96: whole 32-wide steps for
  // a group of 4 rows and one of 2.)
  for (const Shape& s : {Shape{7, 13, 5}, Shape{1, 65, 33}, Shape{16, 31, 7}, Shape{3, 51, 9}, Shape{6, 96, 19},
                         Shape{17, 65, 31}, Shape{33, 130, 9}})
    for (bool bias : {true, false})
      add_case(t, cat("linear_forward_bf16w N=", s.N, " C_in=", s.C_in, " C_out=", s.C_out, bias ? "" : " bias=null"),
               s.N <= 16 ? kGemm : kBf16Operands, [=](Backend& be, Rng& rng) {
                 std::vector<float> x = normal(rng, s.N * s.C_in), b = normal(rng, s.C_out), out = unset(s.N * s.C_out);
                 std::vector<uint16_t> w = bf16_values(rng, s.C_out * s.C_in, 1.0 / std::sqrt(double(s.C_in)));
                 be.linear_forward_bf16w(out.data(), x.data(), w.data(), bias ? b.data() : nullptr, s.N, s.C_in,
                                         s.C_out);
                 return Outputs{{"out", out}};
               });
  // Q8_0 / Q4_0 / Q4_1 weights: both backends quantize the input with the same code, so the block dots are the same
  // integers; only the fp32 sums of scaled block dots differ from the reference's double sums. (scripts/test.sh
  // also runs this table with AIGC_QUANT_ISA=avx2 and =scalar, the CPU's narrower paths.) Rows16 weights: the
  // shapes cover groups of 16 with a tail of plain rows, 1 to 4 input rows per pass, and no whole group; the last
  // has more input than the CPU quantizes on one thread (each of up to 4 rows is quantized by every thread itself).
  for (DType q : {DType::Q8_0, DType::Q4_0, DType::Q4_1})
    for (Layout layout : {Layout::Plain, Layout::Rows16})
      for (const Shape& s : {Shape{1, 32, 5}, Shape{1, 768, 33}, Shape{3, 96, 17}, Shape{17, 64, 9}, Shape{6, 64, 48},
                             Shape{7, 96, 32}, Shape{2, 32, 16}, Shape{9, 4096, 17}})
        for (bool bias : {true, false})
          add_case(t,
                   cat("linear_forward_quant ", dtype_name(q), layout == Layout::Rows16 ? " rows16" : "", " N=", s.N,
                       " C_in=", s.C_in, " C_out=", s.C_out, bias ? "" : " bias=null"),
                   kQuantDot, [=](Backend& be, Rng& rng) {
                     std::vector<float> x = normal(rng, s.N * s.C_in), b = normal(rng, s.C_out),
                                        out = unset(s.N * s.C_out), wf = normal(rng, s.C_out * s.C_in, 0.1);
                     x[0] = 0;  // zeros, and an all-zero block (scale 0)
                     std::fill(wf.begin(), wf.begin() + 32, 0.0f);
                     std::string w = blocks_of(q, wf);
                     if (layout == Layout::Rows16) {
                       std::string plain = w;
                       interleave_rows16(q, plain.data(), w.data(), s.C_out, s.C_in);
                     }
                     be.linear_forward_quant(out.data(), x.data(), w.data(), q, layout, bias ? b.data() : nullptr, s.N,
                                             s.C_in, s.C_out);
                     return Outputs{{"out", out}};
                   });
  // Inputs on exact halves of the quantization step (amax 127: the step is 1), which round to even; a kernel that
  // rounded them away from zero would move each such product by a whole weight.
  for (DType q : {DType::Q8_0, DType::Q4_0, DType::Q4_1})
    add_case(t, cat("linear_forward_quant ", dtype_name(q), " rows16 input on halves"), kQuantDot,
             [=](Backend& be, Rng& rng) {
               const int64_t N = 2, C_in = 96, C_out = 32;
               std::vector<float> x(size_t(N * C_in)), out = unset(N * C_out), wf = normal(rng, C_out * C_in, 0.1);
               for (int64_t i = 0; i < N * C_in; i++)
                 x[size_t(i)] = i % 32 == 0 ? 127.0f : float(int(rng.uniform() * 240) - 120) + 0.5f;
               std::string plain = blocks_of(q, wf), w = plain;
               interleave_rows16(q, plain.data(), w.data(), C_out, C_in);
               be.linear_forward_quant(out.data(), x.data(), w.data(), q, Layout::Rows16, nullptr, N, C_in, C_out);
               return Outputs{{"out", out}};
             });
}

// ---- Embeddings, conversions, flat buffers ----
void add_flat_cases(std::vector<OpCase>& t) {
  struct Emb {
    int64_t B, T, C, V, pos0;
  };
  for (const Emb& e :
       {Emb{2, 7, 13, 11, 0}, Emb{2, 7, 13, 11, 3}, Emb{1, 1, 1, 1, 0}, Emb{3, 5, 65, 4, 2}, Emb{0, 4, 8, 5, 0}})
    for (bool pos : {true, false}) {
      const std::string dims =
          cat(" B=", e.B, " T=", e.T, " C=", e.C, " V=", e.V, " pos0=", e.pos0, pos ? "" : " wpe=null");
      const int64_t P = e.pos0 + e.T + 2;  // rows of wpe: a few more than used
      add_case(t, "embedding_forward" + dims, kExact, [=](Backend& be, Rng& rng) {
        std::vector<int32_t> idx = randint(rng, e.B * e.T, 0, int32_t(e.V));
        std::vector<float> wte = normal(rng, e.V * e.C), wpe = normal(rng, P * e.C), out = unset(e.B * e.T * e.C);
        be.embedding_forward(out.data(), idx.data(), wte.data(), pos ? wpe.data() : nullptr, e.B, e.T, e.C, e.pos0);
        return Outputs{{"out", out}};
      });
      // Few tokens, many rows: repeated tokens sum several rows into one gradient row.
      add_case(t, "embedding_backward" + dims, kReduction, [=](Backend& be, Rng& rng) {
        std::vector<int32_t> idx = randint(rng, e.B * e.T, 0, int32_t(e.V));
        std::vector<float> dout = normal(rng, e.B * e.T * e.C), dwte = normal(rng, e.V * e.C),
                           dwpe = normal(rng, P * e.C);
        be.embedding_backward(dwte.data(), pos ? dwpe.data() : nullptr, dout.data(), idx.data(), e.B, e.T, e.C, e.pos0);
        return Outputs{{"dwte", dwte}, {"dwpe", dwpe}};
      });
    }

  // bf16 rounding: ties to even both ways, just off the tie, overflow to inf, infinities, NaNs (quiet, negative
  // with payload, signalling), subnormal ties, signed zero.
  const std::vector<uint32_t> specials = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf818000u,
                                          0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
                                          0x7f800001u, 0x00008000u, 0x00018000u, 0x80000000u, 0x00000001u};
  add_case(t, cat("convert_f32_to_bf16 specials n=", specials.size()), kExact, [=](Backend& be, Rng&) {
    std::vector<float> x;
    for (uint32_t u : specials) x.push_back(std::bit_cast<float>(u));
    std::vector<uint16_t> out(x.size(), 0xdeadu);
    be.convert_f32_to_bf16(out.data(), x.data(), int64_t(x.size()));
    return Outputs{{"bits", bits_as_floats(out)}};
  });
  for (int64_t n : kFlatSizes) {
    add_case(t, cat("convert_f32_to_bf16 n=", n), kExact, [=](Backend& be, Rng& rng) {
      std::vector<float> x = normal(rng, n, 100.0);
      std::vector<uint16_t> out(size_t(n), 0xdeadu);
      be.convert_f32_to_bf16(out.data(), x.data(), n);
      return Outputs{{"bits", bits_as_floats(out)}};
    });
    add_case(t, cat("add_forward n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> a = normal(rng, n), b = normal(rng, n), out = unset(n);
      be.add_forward(out.data(), a.data(), b.data(), n);
      return Outputs{{"out", out}};
    });
    add_case(t, cat("accumulate n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> dst = normal(rng, n), src = normal(rng, n);
      be.accumulate(dst.data(), src.data(), n);
      return Outputs{{"dst", dst}};
    });
    add_case(t, cat("copy n=", n), kExact, [=](Backend& be, Rng& rng) {
      std::vector<float> src = normal(rng, n), dst = unset(n);
      be.copy(dst.data(), src.data(), n);
      return Outputs{{"dst", dst}};
    });
    add_case(t, cat("scale n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> x = normal(rng, n);
      be.scale(x.data(), -0.37f, n);
      return Outputs{{"x", x}};
    });
    add_case(t, cat("sum_squares n=", n), kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> x = normal(rng, n);
      return Outputs{{"value", scalar(be.sum_squares(x.data(), n))}};
    });
  }
  add_case(t, "sum_squares n=70001", kReduction, [=](Backend& be, Rng& rng) {  // past the CPU's 65536 chunks
    std::vector<float> x = normal(rng, 70001);
    return Outputs{{"value", scalar(be.sum_squares(x.data(), 70001))}};
  });
  // all_finite: clean buffers, and one bad value at the start, the middle or the end.
  for (int64_t n : {0, 1, 17, 1000})
    for (float bad : {0.0f, INFINITY, -INFINITY, NAN})
      for (int64_t at : std::set<int64_t>{0, n / 2, n - 1}) {
        if ((bad == 0.0f && at != 0) || (bad != 0.0f && n == 0)) continue;  // the clean buffer once
        const std::string what = bad == 0.0f ? "finite" : cat(bad, " at ", at);
        add_case(t, cat("all_finite n=", n, " ", what), kExact, [=](Backend& be, Rng& rng) {
          std::vector<float> x = normal(rng, n);
          if (bad != 0.0f) x[size_t(at)] = bad;
          return Outputs{{"value", scalar(be.all_finite(x.data(), n) ? 1.0 : 0.0)}};
        });
      }
}

// ---- Layer norm, GELU, ReLU, dropout ----
void add_layer_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t N, C;
  };
  for (const Shape& s : {Shape{7, 13}, Shape{1, 1}, Shape{3, 65}, Shape{0, 8}, Shape{33, 31}, Shape{2, 257}}) {
    const std::string dims = cat(" N=", s.N, " C=", s.C);
    for (bool stats : {true, false})  // inference passes no mean/rstd
      add_case(t, cat("layernorm_forward", dims, stats ? "" : " mean,rstd=null"), kNorm, [=](Backend& be, Rng& rng) {
        std::vector<float> x = normal(rng, s.N * s.C, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C),
                           out = unset(s.N * s.C), mean = unset(s.N), rstd = unset(s.N);
        be.layernorm_forward(out.data(), stats ? mean.data() : nullptr, stats ? rstd.data() : nullptr, x.data(),
                             w.data(), b.data(), s.N, s.C, 1e-5f);
        return stats ? Outputs{{"out", out}, {"mean", mean}, {"rstd", rstd}} : Outputs{{"out", out}};
      });
    for (bool params : {true, false})  // a frozen layer norm passes no dw, db
      add_case(t, cat("layernorm_backward", dims, params ? "" : " dw,db=null"), kNorm, [=](Backend& be, Rng& rng) {
        std::vector<float> x = normal(rng, s.N * s.C, 2.0, 0.5), w = normal(rng, s.C), b = normal(rng, s.C),
                           dout = normal(rng, s.N * s.C), out = zeros(s.N * s.C), mean = zeros(s.N), rstd = zeros(s.N);
        // The saved statistics come from the reference, so both backends get the same inputs.
        reference_backend().layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), s.N,
                                              s.C, 1e-5f);
        std::vector<float> dinp = normal(rng, s.N * s.C), dw = normal(rng, s.C), db = normal(rng, s.C);
        be.layernorm_backward(dinp.data(), params ? dw.data() : nullptr, params ? db.data() : nullptr, dout.data(),
                              x.data(), w.data(), mean.data(), rstd.data(), s.N, s.C);
        return Outputs{{"dinp", dinp}, {"dw", dw}, {"db", db}};
      });
  }
  add_activation_cases(t, "gelu_forward", &Backend::gelu_forward, "gelu_backward", &Backend::gelu_backward, kTanhGrad);
  add_activation_cases(t, "relu_forward", &Backend::relu_forward, "relu_backward", &Backend::relu_backward);

  for (int64_t n : kFlatSizes)
    for (float p : {0.0f, 0.3f})
      for (uint64_t seed : {uint64_t(1234), uint64_t(99)}) {
        // The reference reproduces the CPU's counter-based mask (splitmix64 of seed and index) exactly.
        add_case(t, cat("dropout_forward n=", n, " p=", p, " seed=", seed), kElementwise, [=](Backend& be, Rng& rng) {
          std::vector<float> x = normal(rng, n), out = unset(n), mask = unset(n);
          be.dropout_forward(out.data(), mask.data(), x.data(), n, p, seed);
          return Outputs{{"out", out}, {"mask", mask}};
        });
      }
  for (int64_t n : kFlatSizes)
    add_case(t, cat("mul_backward n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> dout = normal(rng, n), mask = uniform(rng, n, 0.0, 1.0), dinp = normal(rng, n);
      for (float& m : mask) m = m < 0.3f ? 0.0f : 1.0f / 0.7f;
      be.mul_backward(dinp.data(), dout.data(), mask.data(), n);
      return Outputs{{"dinp", dinp}};
    });
}

// ---- Attention and the loss ----
void add_attention_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t B, T, C, NH;
  };
  // T = 1, odd T, odd head sizes (33 / 3 = 11), one head, and T = 130 across the CPU's 128-query blocks.
  const Shape shapes[] = {{1, 1, 12, 3}, {2, 7, 12, 2}, {2, 13, 33, 3}, {3, 5, 8, 1}, {1, 130, 16, 2}};
  for (const Shape& s : shapes)
    for (bool causal : {true, false}) {
      const std::string dims = cat(" B=", s.B, " T=", s.T, " C=", s.C, " NH=", s.NH, causal ? " causal" : " full");
      const int64_t n_qkv = s.B * s.T * 3 * s.C, n_out = s.B * s.T * s.C, n_lse = s.B * s.NH * s.T;
      for (bool with_lse : {true, false})  // inference passes no lse
        add_case(t, cat("attention_forward", dims, with_lse ? "" : " lse=null"), kAttention,
                 [=](Backend& be, Rng& rng) {
                   std::vector<float> qkv = normal(rng, n_qkv), out = unset(n_out), lse = unset(n_lse);
                   be.attention_forward(out.data(), with_lse ? lse.data() : nullptr, qkv.data(), s.B, s.T, s.C, s.NH,
                                        causal);
                   return with_lse ? Outputs{{"out", out}, {"lse", lse}} : Outputs{{"out", out}};
                 });
      add_case(t, "attention_backward" + dims, kAttention, [=](Backend& be, Rng& rng) {
        std::vector<float> qkv = normal(rng, n_qkv), dout = normal(rng, n_out), out = zeros(n_out), lse = zeros(n_lse),
                           dqkv = normal(rng, n_qkv);
        reference_backend().attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, causal);
        be.attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C, s.NH,
                              causal);
        return Outputs{{"dqkv", dqkv}};
      });
    }

  // KV cache (B, NKV, T_cap, HS): positions before pos0 hold earlier keys and values (random here); the kernel
  // writes positions pos0 .. pos0 + T - 1 and leaves the rest alone. NKV < NH: grouped-query attention; qkv
  // repeats each group's k, v as rope_qkv writes them, and the cache's random earlier rows make a wrong head show.
  const auto repeat_kv = [](std::vector<float>& qkv, int64_t rows, int64_t C, int64_t NH, int64_t NKV) {
    const int64_t HS = C / NH, rep = NH / NKV;
    for (int64_t n = 0; n < rows; n++)
      for (int64_t part = 1; part <= 2; part++)  // k, then v
        for (int64_t h = 0; h < NH; h++)
          std::copy_n(&qkv[size_t(n * 3 * C + part * C + (h / rep) * rep * HS)], HS,
                      &qkv[size_t(n * 3 * C + part * C + h * HS)]);
  };
  struct Cached {
    int64_t B, T, C, NH, NKV, pos0, T_cap;
  };
  // The caches in f32 or f16: an f16 cache goes in as halves and comes out widened, every value compared.
  struct Cache {
    std::vector<float> f;
    std::vector<uint16_t> h;
    void* data(DType kv) { return kv == DType::F16 ? static_cast<void*>(h.data()) : f.data(); }
  };
  auto cache = [](Rng& rng, int64_t n, DType kv) {
    Cache c{normal(rng, n), {}};
    if (kv == DType::F16)
      for (float x : c.f) c.h.push_back(io::f32_to_f16(x));
    return c;
  };
  auto widened = [](const Cache& c, DType kv) {
    if (kv == DType::F32) return c.f;
    std::vector<float> f;
    for (uint16_t x : c.h) f.push_back(io::f16_to_f32(x));
    return f;
  };
  for (DType kvt : {DType::F32, DType::F16})
    for (const Cached& s : {Cached{2, 3, 12, 3, 3, 5, 11}, Cached{2, 4, 12, 2, 2, 0, 6}, Cached{1, 1, 33, 3, 3, 7, 8},
                            Cached{3, 5, 8, 1, 1, 1, 9}, Cached{2, 3, 24, 6, 2, 4, 9}, Cached{1, 2, 16, 4, 1, 3, 7},
                            Cached{2, 3, 24, 6, 2, 0, 9}, Cached{1, 3, 64, 2, 1, 2, 6}})
      add_case(t,
               cat("attention_cached ", dtype_name(kvt), " B=", s.B, " T=", s.T, " C=", s.C, " NH=", s.NH,
                   " NKV=", s.NKV, " pos0=", s.pos0, " T_cap=", s.T_cap),
               kAttention, [=](Backend& be, Rng& rng) {
                 const int64_t kv = s.B * s.T_cap * s.NKV * (s.C / s.NH);
                 std::vector<float> qkv = normal(rng, s.B * s.T * 3 * s.C), out = unset(s.B * s.T * s.C);
                 Cache kc = cache(rng, kv, kvt), vc = cache(rng, kv, kvt);
                 repeat_kv(qkv, s.B * s.T, s.C, s.NH, s.NKV);
                 be.attention_cached(out.data(), qkv.data(), kc.data(kvt), vc.data(kvt), kvt, s.B, s.T, s.C, s.NH,
                                     s.NKV, s.pos0, s.T_cap);
                 return Outputs{{"out", out}, {"kcache", widened(kc, kvt)}, {"vcache", widened(vc, kvt)}};
               });
  // Continuous batching: distinct cache slots (not in row order, one slot unused) and distinct positions.
  struct Decode {
    std::vector<int32_t> slot, pos;
    int64_t S, C, NH, NKV, T_cap;
  };
  for (DType kvt : {DType::F32, DType::F16})
    for (const Decode& d : {Decode{{2, 0, 3}, {0, 5, 9}, 4, 12, 3, 3, 10}, Decode{{0}, {7}, 1, 33, 3, 3, 8},
                            Decode{{1, 0}, {3, 1}, 2, 16, 1, 1, 4}, Decode{{1, 2}, {6, 2}, 3, 24, 6, 2, 8},
                            Decode{{0}, {4}, 1, 16, 4, 1, 5},
                            // head sizes 64 and 128, which the CPU backend compiles separately
                            Decode{{1, 0}, {37, 12}, 2, 256, 4, 2, 40}, Decode{{0}, {9}, 1, 256, 2, 1, 12},
                            // rows of several 64-key chunks and a one-key tail chunk, SmolLM's 3 query heads a group
                            Decode{{1, 0}, {150, 64}, 2, 576, 9, 3, 160}, Decode{{0}, {200}, 1, 256, 2, 2, 210},
                            Decode{{0, 1}, {70, 129}, 2, 24, 2, 1, 130},
                            // exactly one and two whole chunks (64 and 128 keys)
                            Decode{{1, 0}, {63, 127}, 2, 576, 9, 3, 130},
                            // head size 64, 4 and 5 query heads a group: in threes, then one or two
                            Decode{{0}, {100}, 1, 256, 4, 1, 110}, Decode{{0}, {70}, 1, 320, 5, 1, 80}}) {
      const int64_t B = int64_t(d.slot.size());
      std::string pos;
      for (int32_t p : d.pos) pos += cat(pos.empty() ? "" : ",", p);
      add_case(t,
               cat("attention_decode ", dtype_name(kvt), " B=", B, " S=", d.S, " C=", d.C, " NH=", d.NH, " NKV=", d.NKV,
                   " T_cap=", d.T_cap, " pos=", pos),
               kAttention, [=](Backend& be, Rng& rng) {
                 const int64_t kv = d.S * d.T_cap * d.NKV * (d.C / d.NH);
                 std::vector<float> qkv = normal(rng, B * 3 * d.C), out = unset(B * d.C);
                 Cache kc = cache(rng, kv, kvt), vc = cache(rng, kv, kvt);
                 repeat_kv(qkv, B, d.C, d.NH, d.NKV);
                 be.attention_decode(out.data(), qkv.data(), kc.data(kvt), vc.data(kvt), kvt, d.slot.data(),
                                     d.pos.data(), B, d.C, d.NH, d.NKV, d.T_cap);
                 return Outputs{{"out", out}, {"kcache", widened(kc, kvt)}, {"vcache", widened(vc, kvt)}};
               });
    }

  // Cross-entropy: every 4th row is ignored (targets -1 and -100); lse is compared on every row.
  struct CE {
    int64_t N, V;
  };
  for (const CE& s : {CE{5, 7}, CE{13, 257}, CE{1, 1}, CE{0, 9}, CE{8, 65}}) {
    auto targets = [s](Rng& rng) {
      std::vector<int32_t> y = randint(rng, s.N, 0, int32_t(s.V));
      for (int64_t n = 1; n < s.N; n += 4) y[size_t(n)] = n % 8 == 1 ? -1 : -100;
      return y;
    };
    const std::string dims = cat(" N=", s.N, " V=", s.V);
    add_case(t, "cross_entropy_forward" + dims, kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> logits = normal(rng, s.N * s.V, 2.0), losses = unset(s.N), lse = unset(s.N);
      std::vector<int32_t> y = targets(rng);
      be.cross_entropy_forward(losses.data(), lse.data(), logits.data(), y.data(), s.N, s.V);
      return Outputs{{"losses", losses}, {"lse", lse}};
    });
    add_case(t, "cross_entropy_backward" + dims, kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> logits = normal(rng, s.N * s.V, 2.0), losses = zeros(s.N), lse = zeros(s.N),
                         dlogits = normal(rng, s.N * s.V);
      std::vector<int32_t> y = targets(rng);
      reference_backend().cross_entropy_forward(losses.data(), lse.data(), logits.data(), y.data(), s.N, s.V);
      be.cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), y.data(), 0.37f, s.N, s.V);
      return Outputs{{"dlogits", dlogits}};
    });
  }
}

// ---- Optimizers ----
void add_optimizer_cases(std::vector<OpCase>& t) {
  for (int64_t n : {0, 1, 17, 1000})
    for (bool decoupled : {true, false})
      for (int64_t step : {1, 5})
        add_case(t, cat("adam_update n=", n, decoupled ? " AdamW" : " Adam+L2", " t=", step), kElementwise,
                 [=](Backend& be, Rng& rng) {
                   std::vector<float> p = normal(rng, n), g = normal(rng, n), m = normal(rng, n, 0.1),
                                      v = uniform(rng, n, 0.0, 0.01);
                   be.adam_update(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f,
                                  decoupled, step);
                   return Outputs{{"p", p}, {"m", m}, {"v", v}};
                 });
  for (int64_t n : {0, 1, 17, 1000})
    for (float momentum : {0.0f, 0.9f})
      for (float wd : {0.0f, 0.01f})
        for (bool first : {true, false})
          add_case(t, cat("sgd_update n=", n, " momentum=", momentum, " wd=", wd, " first_step=", first), kElementwise,
                   [=](Backend& be, Rng& rng) {
                     std::vector<float> p = normal(rng, n), g = normal(rng, n), buf = normal(rng, n);
                     be.sgd_update(p.data(), g.data(), buf.data(), n, 0.1f, momentum, wd, first);
                     return Outputs{{"p", p}, {"buf", buf}};
                   });
}

const std::vector<OpCase>& all_cases() {
  static const std::vector<OpCase> table = [] {
    std::vector<OpCase> t;
    add_gemm_cases(t);
    add_linear_cases(t);
    add_flat_cases(t);
    add_layer_cases(t);
    add_attention_cases(t);
    add_optimizer_cases(t);
    add_image_cases(t);
    add_llama_cases(t);
    return t;
  }();
  return table;
}

// ---- Comparison ----
struct Diff {
  size_t bad = 0, worst = 0;   // elements out of tolerance; the one furthest out (or the largest diff if none)
  double worst_excess = -1.0;  // |diff| / allowed at `worst` (infinite for NaN / inf mismatches)
  double max_abs = 0.0, max_rel = 0.0;
};

Diff compare(const std::vector<float>& fast, const std::vector<float>& ref, const Tolerance& tol) {
  Diff d;
  for (size_t i = 0; i < ref.size(); i++) {
    const float a = fast[i], r = ref[i];
    double excess = 0.0;
    bool ok;
    if (std::isnan(a) || std::isnan(r)) {
      ok = std::isnan(a) && std::isnan(r);
      excess = ok ? 0.0 : INFINITY;
    } else if (std::isinf(a) || std::isinf(r)) {
      ok = a == r;
      excess = ok ? 0.0 : INFINITY;
    } else {
      const double diff = std::abs(double(a) - double(r)), allowed = tol.atol + tol.rtol * std::abs(double(r));
      ok = diff <= allowed;
      excess = allowed > 0.0 ? diff / allowed : (diff > 0.0 ? INFINITY : 0.0);
      d.max_abs = std::max(d.max_abs, diff);
      if (r != 0.0f) d.max_rel = std::max(d.max_rel, diff / std::abs(double(r)));
    }
    if (!ok) d.bad++;
    if (excess > d.worst_excess) d.worst_excess = excess, d.worst = i;
  }
  return d;
}

}  // namespace

TEST(BackendOps, FastBackendMatchesReferenceOnEveryCase) {
  PrecisionGuard f32(MatmulPrecision::F32);  // the default; cases that want bf16 set it themselves
  Backend& fast = cpu_backend();
  Backend& ref = reference_backend();
  const bool verbose = std::getenv("AIGC_BACKEND_OPS_VERBOSE") != nullptr;
  std::vector<std::string> failures;
  size_t n_outputs = 0, n_floats = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const OpCase& c : all_cases()) {
    Outputs got, want;
    const char* running = fast.name();
    try {
      got = c.run(fast);
      running = ref.name();
      want = c.run(ref);
    } catch (const std::exception& e) {
      failures.push_back(cat(c.name, ": the ", running, " backend threw: ", e.what()));
      continue;
    }
    if (got.size() != want.size()) {
      failures.push_back(
          cat(c.name, ": ", got.size(), " outputs from ", fast.name(), ", ", want.size(), " from ", ref.name()));
      continue;
    }
    for (size_t k = 0; k < got.size(); k++) {
      const auto& [name, a] = got[k];
      const std::vector<float>& r = want[k].second;
      if (name != want[k].first || a.size() != r.size()) {
        failures.push_back(cat(c.name, " / ", name, ": sizes ", a.size(), " vs ", r.size()));
        continue;
      }
      n_outputs++, n_floats += r.size();
      const Diff d = compare(a, r, c.tol);
      if (verbose)
        std::printf("  %-70s %-8s max abs %.2e  max rel %.2e  %3.0f%% of tolerance\n", c.name.c_str(), name.c_str(),
                    d.max_abs, d.max_rel, 100.0 * std::max(d.worst_excess, 0.0));
      if (d.bad == 0) continue;
      char line[512];
      std::snprintf(line, sizeof line,
                    "%s / %s: %zu of %zu elements out of tolerance; worst [%zu]: %s %.9g, %s %.9g; max abs diff %.3g, "
                    "max rel diff %.3g (finite elements); tolerance atol %.1e + rtol %.1e (%s)",
                    c.name.c_str(), name.c_str(), d.bad, r.size(), d.worst, fast.name(), double(a[d.worst]), ref.name(),
                    double(r[d.worst]), d.max_abs, d.max_rel, c.tol.atol, c.tol.rtol, c.tol.why);
      failures.push_back(line);
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ backend ] %zu cases, %zu outputs, %zu floats compared in %.0f ms\n", all_cases().size(), n_outputs,
              n_floats, ms);
  std::string report;
  for (const std::string& f : failures) report += "  " + f + "\n";
  EXPECT_TRUE(failures.empty()) << failures.size() << " outputs of " << fast.name() << " differ from " << ref.name()
                                << ":\n"
                                << report;
}

TEST(BackendOps, EveryKernelHasACase) {
  const std::set<std::string> kernels(kKernels.begin(), kKernels.end());
  EXPECT_EQ(kernels.size(), kKernels.size()) << "kKernels lists a name twice";
  std::map<std::string, int> count;
  std::set<std::string> names;
  for (const OpCase& c : all_cases()) {
    // The kernel is the name's first word: "conv2d_backward_data ..." does not count for conv2d_backward.
    const std::string kernel = c.name.substr(0, c.name.find(' '));
    EXPECT_TRUE(kernels.count(kernel)) << "case \"" << c.name << "\" does not start with a kernel from kKernels";
    EXPECT_TRUE(names.insert(c.name).second) << "two cases are named \"" << c.name << "\"";
    count[kernel]++;
  }
  for (const std::string& k : kKernels) EXPECT_GT(count[k], 0) << "Backend::" << k << " has no case in the op table";
#ifdef AIGC_SOURCE_DIR
  // The list against the header itself: every `virtual <type> <name>(` of backend.h but name() and the destructor.
  std::ifstream in(std::string(AIGC_SOURCE_DIR) + "/include/aigc/backend.h");
  ASSERT_TRUE(in) << "cannot read include/aigc/backend.h";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::regex virtual_method(R"(virtual\s+[A-Za-z_][\w:<>*&\s]*?\b([A-Za-z_]\w*)\s*\()");
  std::set<std::string> declared;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), virtual_method); it != std::sregex_iterator(); ++it)
    declared.insert((*it)[1].str());
  for (const char* not_a_kernel :
       {"name", "alloc", "release", "fill_zero", "discard", "trim", "to_host", "from_host", "supports", "run_held"})
    declared.erase(not_a_kernel);  // memory, capability and threads (tests/test_backend_contract.cpp)
  std::string missing, extra;
  for (const std::string& k : declared)
    if (!kernels.count(k)) missing += " " + k;
  for (const std::string& k : kernels)
    if (!declared.count(k)) extra += " " + k;
  EXPECT_TRUE(missing.empty())
      << "backend.h declares kernels that backend_kernels() lacks (add them there, and their cases):" << missing;
  EXPECT_TRUE(extra.empty()) << "backend_kernels() names kernels that backend.h does not declare:" << extra;
#endif
}

}  // namespace aigc::backend_ops

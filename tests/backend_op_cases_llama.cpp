// Op cases of the Llama family's kernels: RMS normalization, the SwiGLU gate, and the rotary embedding that packs
// grouped-query heads (see backend_op_cases.h for how the table runs).
#include <algorithm>

#include "backend_op_cases.h"

namespace aigc::backend_ops {

namespace {

void add_rmsnorm_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t N, C;
  };
  for (const Shape& s : {Shape{7, 13}, Shape{1, 1}, Shape{3, 65}, Shape{0, 8}, Shape{33, 31}, Shape{2, 257}}) {
    const std::string dims = cat(" N=", s.N, " C=", s.C);
    for (bool stats : {true, false})  // inference passes no rstd
      add_case(t, cat("rmsnorm_forward", dims, stats ? "" : " rstd=null"), kNorm, [=](Backend& be, Rng& rng) {
        std::vector<float> x = normal(rng, s.N * s.C, 2.0, 0.5), w = normal(rng, s.C), out = unset(s.N * s.C),
                           rstd = unset(s.N);
        be.rmsnorm_forward(out.data(), stats ? rstd.data() : nullptr, x.data(), w.data(), s.N, s.C, 1e-5f);
        return stats ? Outputs{{"out", out}, {"rstd", rstd}} : Outputs{{"out", out}};
      });
    for (bool params : {true, false})  // a frozen norm passes no dw
      add_case(t, cat("rmsnorm_backward", dims, params ? "" : " dw=null"), kNorm, [=](Backend& be, Rng& rng) {
        std::vector<float> x = normal(rng, s.N * s.C, 2.0, 0.5), w = normal(rng, s.C), dout = normal(rng, s.N * s.C),
                           out = zeros(s.N * s.C), rstd = zeros(s.N);
        reference_backend().rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, 1e-5f);
        std::vector<float> dinp = normal(rng, s.N * s.C), dw = normal(rng, s.C);
        be.rmsnorm_backward(dinp.data(), params ? dw.data() : nullptr, dout.data(), x.data(), w.data(), rstd.data(),
                            s.N, s.C);
        return Outputs{{"dinp", dinp}, {"dw", dw}};
      });
  }
}

void add_swiglu_cases(std::vector<OpCase>& t) {
  for (int64_t n : kFlatSizes) {
    add_case(t, cat("swiglu_forward n=", n), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> g = activation_input(rng, n), u = normal(rng, n), out = unset(n);
      be.swiglu_forward(out.data(), g.data(), u.data(), n);
      return Outputs{{"out", out}};
    });
    for (bool both : {true, false})  // dup null: the up projection frozen
      add_case(t, cat("swiglu_backward n=", n, both ? "" : " dup=null"), kElementwise, [=](Backend& be, Rng& rng) {
        std::vector<float> g = activation_input(rng, n), u = normal(rng, n), dout = normal(rng, n), dg = normal(rng, n),
                           du = normal(rng, n);
        be.swiglu_backward(dg.data(), both ? du.data() : nullptr, dout.data(), g.data(), u.data(), n);
        return Outputs{{"dgate", dg}, {"dup", du}};
      });
  }
}

void add_rope_cases(std::vector<OpCase>& t) {
  struct Shape {
    int64_t N, NH, NKV, HS;
  };
  // MHA, GQA and MQA; head sizes off the SIMD widths; positions up to 40000 (large angles).
  for (const Shape& s : {Shape{5, 4, 4, 8}, Shape{7, 4, 2, 6}, Shape{3, 6, 1, 34}, Shape{1, 1, 1, 2}, Shape{0, 2, 1, 4},
                         Shape{9, 8, 2, 64}}) {
    const std::string dims = cat(" N=", s.N, " NH=", s.NH, " NKV=", s.NKV, " HS=", s.HS);
    const int64_t C = s.NH * s.HS, Ckv = s.NKV * s.HS;
    auto freqs = [=](Rng& rng) {
      std::vector<float> f = uniform(rng, s.HS / 2, 1e-4, 1.0);
      f[0] = 1.0f;
      return f;
    };
    add_case(t, cat("rope_qkv_forward", dims), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> q = normal(rng, s.N * C), k = normal(rng, s.N * Ckv), v = normal(rng, s.N * Ckv),
                         f = freqs(rng), qkv = unset(s.N * 3 * C);
      std::vector<int32_t> pos = randint(rng, s.N, 0, 40000);
      be.rope_qkv_forward(qkv.data(), q.data(), k.data(), v.data(), pos.data(), f.data(), s.N, s.NH, s.NKV, s.HS);
      return Outputs{{"qkv", qkv}};
    });
    // Decoding rotates every layer at one position: a second call there with other frequencies, the first's again,
    // then the first's buffer holding the second's values, each as computed afresh (a backend may keep the last
    // table, but must key it by the values).
    add_case(
        t, cat("rope_qkv_forward at one position, frequencies changing", dims), kElementwise,
        [=](Backend& be, Rng& rng) {
          const std::vector<float> q = normal(rng, s.N * C), k = normal(rng, s.N * Ckv), v = normal(rng, s.N * Ckv);
          std::vector<float> f1 = freqs(rng);
          const std::vector<float> f2 = freqs(rng);
          const std::vector<int32_t> pos(size_t(s.N), 1234);
          std::vector<float> a = unset(s.N * 3 * C), b = unset(s.N * 3 * C), c = unset(s.N * 3 * C),
                             d = unset(s.N * 3 * C);
          be.rope_qkv_forward(a.data(), q.data(), k.data(), v.data(), pos.data(), f1.data(), s.N, s.NH, s.NKV, s.HS);
          be.rope_qkv_forward(b.data(), q.data(), k.data(), v.data(), pos.data(), f2.data(), s.N, s.NH, s.NKV, s.HS);
          be.rope_qkv_forward(c.data(), q.data(), k.data(), v.data(), pos.data(), f1.data(), s.N, s.NH, s.NKV, s.HS);
          std::copy(f2.begin(), f2.end(), f1.begin());
          be.rope_qkv_forward(d.data(), q.data(), k.data(), v.data(), pos.data(), f1.data(), s.N, s.NH, s.NKV, s.HS);
          return Outputs{{"first", a}, {"other frequencies", b}, {"first again", c}, {"same buffer, new values", d}};
        });
    add_case(t, cat("rope_qkv_backward", dims), kReduction, [=](Backend& be, Rng& rng) {
      std::vector<float> g = normal(rng, s.N * 3 * C), f = freqs(rng), dq = normal(rng, s.N * C),
                         dk = normal(rng, s.N * Ckv), dv = normal(rng, s.N * Ckv);
      std::vector<int32_t> pos = randint(rng, s.N, 0, 40000);
      be.rope_qkv_backward(dq.data(), dk.data(), dv.data(), g.data(), pos.data(), f.data(), s.N, s.NH, s.NKV, s.HS);
      return Outputs{{"dq", dq}, {"dk", dk}, {"dv", dv}};
    });
  }
}

}  // namespace

void add_llama_cases(std::vector<OpCase>& table) {
  add_rmsnorm_cases(table);
  add_swiglu_cases(table);
  add_rope_cases(table);
}

}  // namespace aigc::backend_ops

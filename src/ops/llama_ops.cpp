// Front doors of the Llama family's layers: RMS normalization, the SwiGLU gate, and the rotary embedding that
// packs grouped-query heads into the qkv layout the attention ops take.
#include <algorithm>

#include "aigc/autograd.h"
#include "aigc/ops.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::grad_of;

Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps) {
  check_f32(x, "rmsnorm", "input");
  check_f32(w, "rmsnorm", "weight");
  const int64_t C = x.size(-1), N = x.numel() / std::max<int64_t>(C, 1);
  AIGC_CHECK(w.numel() == C, "rmsnorm: weight size must equal the last dim " + std::to_string(C));
  Tensor out = Tensor::empty(x.shape());
  const bool rec = needs_grad({&x, &w});
  Tensor rstd = rec ? Tensor::empty({N}) : Tensor();
  be(x).rmsnorm_forward(out.f32(), rec ? rstd.f32() : nullptr, x.f32(), w.f32(), N, C, eps);
  if (rec)
    record(
        out, {&x, &w},
        [out, x, w, rstd, N, C] {
          be(x).rmsnorm_backward(grad_of(x), grad_of(w), out.grad().f32(), x.f32(), w.f32(), rstd.f32(), N, C);
        },
        "rmsnorm");
  return out;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_f32(gate, "swiglu", "gate");
  check_f32(up, "swiglu", "up");
  AIGC_CHECK(gate.shape() == up.shape(), "swiglu: gate " + shape_str(gate.shape()) + " and up " +
                                             shape_str(up.shape()) + " must have the same shape");
  Tensor out = Tensor::empty(gate.shape());
  be(gate).swiglu_forward(out.f32(), gate.f32(), up.f32(), gate.numel());
  if (needs_grad({&gate, &up}))
    record(
        out, {&gate, &up},
        [out, gate, up] {
          be(gate).swiglu_backward(grad_of(gate), grad_of(up), out.grad().f32(), gate.f32(), up.f32(), gate.numel());
        },
        "swiglu");
  return out;
}

Tensor rope_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& inv_freq,
                int64_t n_head, int64_t n_kv_head) {
  check_f32(q, "rope_qkv", "q");
  check_f32(k, "rope_qkv", "k");
  check_f32(v, "rope_qkv", "v");
  check_f32(inv_freq, "rope_qkv", "inv_freq");
  AIGC_CHECK(n_head > 0 && n_kv_head > 0 && n_head % n_kv_head == 0, "rope_qkv: n_head (" + std::to_string(n_head) +
                                                                         ") must be a multiple of n_kv_head (" +
                                                                         std::to_string(n_kv_head) + ")");
  AIGC_CHECK(q.size(-1) % n_head == 0, "rope_qkv: q's last dim must split into n_head heads");
  const int64_t HS = q.size(-1) / n_head, N = q.numel() / q.size(-1);
  AIGC_CHECK(HS % 2 == 0, "rope_qkv: the head size must be even, got " + std::to_string(HS));
  AIGC_CHECK(inv_freq.numel() == HS / 2, "rope_qkv: inv_freq must hold head_size / 2 frequencies");
  for (const Tensor* t : {&k, &v})
    AIGC_CHECK(t->size(-1) == n_kv_head * HS && t->numel() == N * n_kv_head * HS,
               "rope_qkv: k and v must be (..., n_kv_head * head_size) with q's rows, got " + shape_str(t->shape()));
  AIGC_CHECK(pos.dtype() == DType::I32 && pos.is_contiguous() && pos.numel() == N,
             "rope_qkv: positions must be i32 with one per row");
  Shape shape = q.shape();
  shape.back() = 3 * n_head * HS;
  Tensor out = Tensor::empty(shape);
  be(q).rope_qkv_forward(out.f32(), q.f32(), k.f32(), v.f32(), pos.i32(), inv_freq.f32(), N, n_head, n_kv_head, HS);
  if (needs_grad({&q, &k, &v}))
    record(
        out, {&q, &k, &v},
        [out, q, k, v, pos, inv_freq, N, n_head, n_kv_head, HS] {
          be(q).rope_qkv_backward(grad_of(q), grad_of(k), grad_of(v), out.grad().f32(), pos.i32(), inv_freq.f32(), N,
                                  n_head, n_kv_head, HS);
        },
        "rope_qkv");
  return out;
}

}  // namespace aigc::ops

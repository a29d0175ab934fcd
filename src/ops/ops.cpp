#include "aigc/ops.h"

#include <bit>
#include <cstring>
#include <functional>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/quant.h"
#include "op_util.h"

namespace aigc::ops {

using detail::be;
using detail::check_f32;
using detail::grad_of;

// idx: i32 (B,T) token ids, each in [0, V).
static void check_token_ids(const Tensor& idx, int64_t V, const char* op) {
  AIGC_CHECK(idx.dtype() == DType::I32 && idx.dim() == 2,
             std::string(op) + ": idx must be i32 of shape (B,T), got " + shape_str(idx.shape()));
  const int32_t* ids = idx.i32();
  for (int64_t i = 0; i < idx.numel(); i++)
    AIGC_CHECK(ids[i] >= 0 && ids[i] < V, std::string(op) + ": token id " + std::to_string(ids[i]) +
                                              " is outside the vocabulary (size " + std::to_string(V) + ")");
}

Tensor embedding(const Tensor& idx, const Tensor& wte, const Tensor& wpe, int64_t pos0) {
  check_token_ids(idx, wte.size(0), "embedding");
  check_f32(wte, "embedding", "wte");
  int64_t B = idx.size(0), T = idx.size(1), V = wte.size(0), C = wte.size(1);
  if (wpe.defined()) {
    check_f32(wpe, "embedding", "wpe");
    AIGC_CHECK(wpe.size(1) == C, "embedding: wpe width differs from wte width");
    AIGC_CHECK(pos0 + T <= wpe.size(0), "embedding: positions up to " + std::to_string(pos0 + T) +
                                            " exceed the model's context length " + std::to_string(wpe.size(0)));
  }
  const int32_t* ids = idx.i32();
  Tensor out = Tensor::empty({B, T, C});
  be(wte).embedding_forward(out.f32(), ids, wte.f32(), wpe.defined() ? wpe.f32() : nullptr, B, T, C, pos0);
  if (needs_grad({&wte, &wpe})) {
    record(
        out, {&wte, &wpe},
        [out, idx, wte, wpe, B, T, C, pos0] {
          be(wte).embedding_backward(grad_of(wte), grad_of(wpe), out.grad().f32(), idx.i32(), B, T, C, pos0);
        },
        "embedding");
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_f32(x, "linear", "input");
  if (w.dtype() != DType::BF16 && !is_quantized(w.dtype())) check_f32(w, "linear", "weight");
  AIGC_CHECK(w.dim() == 2, "linear: weight must be 2-D (out, in)");
  int64_t C_in = w.size(1), C_out = w.size(0);
  AIGC_CHECK(x.size(-1) == C_in,
             "linear: input width " + std::to_string(x.size(-1)) + " != weight's in-features " + std::to_string(C_in));
  if (b.defined()) AIGC_CHECK(b.numel() == C_out, "linear: bias size differs from out-features");
  int64_t N = x.numel() / C_in;
  Shape oshape = x.shape();
  oshape.back() = C_out;
  Tensor out = Tensor::empty(oshape);
  if (is_quantized(w.dtype())) {  // inference with Q8_0 / Q4_0 / Q4_1 weights
    AIGC_CHECK(!needs_grad({&x, &w, &b}), "linear: quantized weights are for inference; run it under NoGradGuard");
    be(x).linear_forward_quant(out.f32(), x.f32(), w.raw(), w.dtype(), w.layout(), b.defined() ? b.f32() : nullptr, N,
                               C_in, C_out);
    return out;
  }
  if (w.dtype() == DType::BF16) {  // inference with bf16 weights
    AIGC_CHECK(!needs_grad({&x, &w, &b}), "linear: bf16 weights are for inference; run it under NoGradGuard");
    be(x).linear_forward_bf16w(out.f32(), x.f32(), static_cast<const uint16_t*>(w.raw()),
                               b.defined() ? b.f32() : nullptr, N, C_in, C_out);
    return out;
  }
  be(x).linear_forward(out.f32(), x.f32(), w.f32(), b.defined() ? b.f32() : nullptr, N, C_in, C_out);
  if (needs_grad({&x, &w, &b})) {
    record(
        out, {&x, &w, &b},
        [out, x, w, b, N, C_in, C_out] {
          be(x).linear_backward(grad_of(x), grad_of(w), grad_of(b), out.grad().f32(), x.f32(), w.f32(), N, C_in, C_out);
        },
        "linear",
        [w](const Tensor& g, const std::vector<bool>& need) {
          detail::refuse_param_grad("linear", need);
          const int64_t C_out = w.size(0), C_in = w.size(1);  // d/dx = g W = linear(g, W^T)
          Tensor wt = transpose_last2(w.view({1, C_out, C_in})).view({C_in, C_out});
          return std::vector<Tensor>{linear(g, wt, Tensor()), Tensor(), Tensor()};
        });
  }
  return out;
}

Tensor to_bf16(const Tensor& x) {
  check_f32(x, "to_bf16", "input");
  Tensor out = Tensor::empty(x.shape(), DType::BF16, x.device());
  be(x).convert_f32_to_bf16(static_cast<uint16_t*>(out.raw()), x.f32(), x.numel());
  return out;
}

Tensor quantize(const Tensor& x, DType dtype) {
  check_f32(x, "quantize", "input");
  AIGC_CHECK(is_quantized(dtype), std::string("quantize: ") + dtype_name(dtype) + " is not a quantized type");
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());  // checks the rows fill whole blocks
  const std::vector<float> v = x.to_vector();
  std::vector<char> blocks(dtype_bytes(dtype, x.numel()));
  for (int64_t b = 0; b < x.numel() / kQuantBlock; b++) {
    if (dtype == DType::Q8_0)
      quantize_block(v.data() + b * kQuantBlock, reinterpret_cast<BlockQ8_0*>(blocks.data())[b]);
    else if (dtype == DType::Q4_0)
      quantize_block(v.data() + b * kQuantBlock, reinterpret_cast<BlockQ4_0*>(blocks.data())[b]);
    else
      quantize_block(v.data() + b * kQuantBlock, reinterpret_cast<BlockQ4_1*>(blocks.data())[b]);
  }
  backend_for(x.device()).from_host(out.raw(), blocks.data(), blocks.size());
  return out;
}

Tensor to_rows16(const Tensor& w) {
  AIGC_CHECK(is_quantized(w.dtype()) && w.dim() == 2,
             std::string("to_rows16: needs a 2-D quantized matrix, got ") + dtype_name(w.dtype()));
  if (w.layout() == Layout::Rows16) return w;
  std::vector<char> plain(dtype_bytes(w.dtype(), w.numel()));
  backend_for(w.device()).to_host(plain.data(), w.raw(), plain.size());
  return rows16_from_blocks(plain.data(), w.shape(), w.dtype(), w.device());
}

Tensor rows16_from_blocks(const void* blocks, const Shape& shape, DType dtype, Device device, TensorPack* into) {
  AIGC_CHECK(is_quantized(dtype) && shape.size() == 2,
             std::string("rows16_from_blocks: needs a 2-D quantized shape, got ") + dtype_name(dtype));
  AIGC_CHECK(!into || into->device() == device, "rows16_from_blocks: the pack is on another device");
  // Both check that the rows fill whole blocks.
  Tensor out = into ? into->reserve(shape, dtype, Layout::Rows16) : Tensor::empty(shape, dtype, device);
  out.impl()->layout = Layout::Rows16;
  if (device == Device::CPU) {  // straight into place: a loaded model's largest matrix is not copied once more
    interleave_rows16(dtype, blocks, out.raw(), shape[0], shape[1]);
    return out;
  }
  const size_t n = dtype_bytes(dtype, out.numel());
  std::vector<char> rows16(n);
  interleave_rows16(dtype, blocks, rows16.data(), shape[0], shape[1]);
  backend_for(device).from_host(out.raw(), rows16.data(), n);
  return out;
}

Tensor embedding_rows(const Tensor& idx, int64_t V, int64_t C, const std::function<void(int64_t, float*)>& row) {
  check_token_ids(idx, V, "embedding");
  const int32_t* ids = idx.i32();
  Tensor out = Tensor::empty({idx.size(0), idx.size(1), C});
  for (int64_t i = 0; i < idx.numel(); i++) row(ids[i], out.f32() + i * C);
  return out;
}

Tensor embedding_rows(const Tensor& idx, const Tensor& w) {
  AIGC_CHECK(
      w.dim() == 2 && (w.dtype() == DType::BF16 || is_quantized(w.dtype())) && w.device() == Device::CPU,
      std::string("embedding_rows: needs a 2-D bf16 or quantized matrix on the CPU, got ") + dtype_name(w.dtype()));
  const int64_t V = w.size(0), C = w.size(1);
  std::vector<char> plain(dtype_bytes(w.dtype(), C));  // a Rows16 row in the plain layout
  return embedding_rows(idx, V, C, [&](int64_t t, float* o) {
    if (w.dtype() == DType::BF16) {
      const auto* h = static_cast<const uint16_t*>(w.raw()) + t * C;
      for (int64_t j = 0; j < C; j++) o[j] = std::bit_cast<float>(uint32_t(h[j]) << 16);
      return;
    }
    const char* at = static_cast<const char*>(w.raw()) + int64_t(plain.size()) * t;
    if (w.layout() == Layout::Rows16) {
      rows16_row(w.dtype(), w.raw(), plain.data(), V, C, t);
      at = plain.data();
    }
    if (w.dtype() == DType::Q8_0)
      dequantize_blocks<BlockQ8_0>(at, o, C);
    else if (w.dtype() == DType::Q4_0)
      dequantize_blocks<BlockQ4_0>(at, o, C);
    else
      dequantize_blocks<BlockQ4_1>(at, o, C);
  });
}

Tensor add(const Tensor& a, const Tensor& b) {
  detail::check_f32_any_layout(a, "add", "a");
  detail::check_f32_any_layout(b, "add", "b");
  AIGC_CHECK(a.shape() == b.shape(),
             "add: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ");
  AIGC_CHECK(a.layout() == b.layout(), "add: one input is blocked, the other plain (ops::to_blocked, ops::to_plain)");
  detail::check_blocked_inference(a, "add", {&a, &b});
  Tensor out = detail::empty_in(a.shape(), a.layout());  // element by element: the same in either layout
  be(a).add_forward(out.f32(), a.f32(), b.f32(), a.numel());
  if (needs_grad({&a, &b})) {
    record(
        out, {&a, &b},
        [out, a, b] {
          const float* d = out.grad().f32();
          for (const Tensor* t : {&a, &b}) {
            bool acc;  // the first gradient to reach an input is a copy, later ones add
            if (float* g = detail::grad_to_write(*t, &acc)) {
              if (acc)
                be(*t).accumulate(g, d, t->numel());
              else
                be(*t).copy(g, d, t->numel());
            }
          }
        },
        "add",
        [](const Tensor& g, const std::vector<bool>&) {
          return std::vector<Tensor>{g, g};
        });
  }
  return out;
}

Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  check_f32(x, "layernorm", "input");
  int64_t C = x.size(-1), N = x.numel() / C;
  AIGC_CHECK(w.numel() == C && b.numel() == C,
             "layernorm: weight/bias size must equal the last dim " + std::to_string(C));
  Tensor out = Tensor::empty(x.shape());
  bool rec = needs_grad({&x, &w, &b});
  Tensor mean = rec ? Tensor::empty({N}) : Tensor(), rstd = rec ? Tensor::empty({N}) : Tensor();
  be(x).layernorm_forward(out.f32(), rec ? mean.f32() : nullptr, rec ? rstd.f32() : nullptr, x.f32(), w.f32(), b.f32(),
                          N, C, eps);
  if (rec) {
    record(
        out, {&x, &w, &b},
        [out, x, w, b, mean, rstd, N, C] {
          float* gx = grad_of(x);
          // layernorm_backward always writes dinp; give it scratch when x takes no gradient.
          Tensor scratch = gx ? Tensor() : Tensor::zeros(x.shape());
          be(x).layernorm_backward(gx ? gx : scratch.f32(), grad_of(w), grad_of(b), out.grad().f32(), x.f32(), w.f32(),
                                   mean.f32(), rstd.f32(), N, C);
        },
        "layernorm");
  }
  return out;
}

using detail::activation;

Tensor gelu(const Tensor& x) { return activation(x, &Backend::gelu_forward, &Backend::gelu_backward, "gelu"); }
Tensor relu(const Tensor& x) { return activation(x, &Backend::relu_forward, &Backend::relu_backward, "relu"); }

Tensor dropout(const Tensor& x, float p, uint64_t seed) {
  AIGC_CHECK(p >= 0.0f && p < 1.0f, "dropout: p must be in [0, 1)");
  if (p == 0.0f) return x;
  check_f32(x, "dropout", "input");
  Tensor out = Tensor::empty(x.shape()), mask = Tensor::empty(x.shape());
  be(x).dropout_forward(out.f32(), mask.f32(), x.f32(), x.numel(), p, seed);
  if (needs_grad({&x})) {
    record(
        out, {&x}, [out, x, mask] { be(x).mul_backward(grad_of(x), out.grad().f32(), mask.f32(), x.numel()); },
        "dropout");
  }
  return out;
}

Tensor self_attention(const Tensor& qkv, int64_t n_head, bool causal) {
  check_f32(qkv, "attention", "qkv");
  AIGC_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "attention: qkv must be (B,T,3C), got " + shape_str(qkv.shape()));
  int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3;
  AIGC_CHECK(n_head > 0 && C % n_head == 0,
             "attention: n_embd " + std::to_string(C) + " is not divisible by n_head " + std::to_string(n_head));
  Tensor out = Tensor::empty({B, T, C});
  bool rec = needs_grad({&qkv});
  Tensor lse = rec ? Tensor::empty({B, n_head, T}) : Tensor();  // softmax statistics for backward
  be(qkv).attention_forward(out.f32(), rec ? lse.f32() : nullptr, qkv.f32(), B, T, C, n_head, causal);
  if (rec) {
    record(
        out, {&qkv},
        [out, qkv, lse, B, T, C, n_head, causal] {
          be(qkv).attention_backward(grad_of(qkv), out.grad().f32(), qkv.f32(), out.f32(), lse.f32(), B, T, C, n_head,
                                     causal);
        },
        "self_attention");
  }
  return out;
}

// KV caches: contiguous f32 or f16 tensors, both of one type.
static void check_kv_cache(const Tensor& k, const Tensor& v, const char* op) {
  AIGC_CHECK((k.dtype() == DType::F32 || k.dtype() == DType::F16) && k.dtype() == v.dtype() && k.is_contiguous() &&
                 v.is_contiguous(),
             std::string(op) + ": the KV cache must be contiguous f32 or f16, got " + dtype_name(k.dtype()) + " and " +
                 dtype_name(v.dtype()));
}

Tensor attention_cached(const Tensor& qkv, int64_t n_head, Tensor& kcache, Tensor& vcache, int64_t pos0) {
  check_f32(qkv, "attention_cached", "qkv");
  int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3;
  AIGC_CHECK(kcache.dim() == 4 && kcache.size(0) == B && kcache.size(1) > 0 && n_head % kcache.size(1) == 0 &&
                 kcache.shape() == vcache.shape(),
             "attention_cached: bad cache shape");
  int64_t T_cap = kcache.size(2);
  AIGC_CHECK(pos0 + T <= T_cap, "attention_cached: the KV cache holds " + std::to_string(T_cap) + " positions; " +
                                    std::to_string(pos0 + T) + " needed");
  check_kv_cache(kcache, vcache, "attention_cached");
  Tensor out = Tensor::empty({B, T, C});
  be(qkv).attention_cached(out.f32(), qkv.f32(), kcache.raw(), vcache.raw(), kcache.dtype(), B, T, C, n_head,
                           kcache.size(1), pos0, T_cap);
  return out;
}

Tensor attention_decode(const Tensor& qkv, int64_t n_head, Tensor& kcache, Tensor& vcache, const Tensor& slots,
                        const Tensor& pos) {
  check_f32(qkv, "attention_decode", "qkv");
  AIGC_CHECK(qkv.dim() == 3 && qkv.size(1) == 1,
             "attention_decode: qkv must be (B,1,3C), got " + shape_str(qkv.shape()));
  const int64_t B = qkv.size(0), C = qkv.size(2) / 3;
  AIGC_CHECK(
      kcache.dim() == 4 && kcache.size(1) > 0 && n_head % kcache.size(1) == 0 && kcache.shape() == vcache.shape(),
      "attention_decode: bad cache shape");
  AIGC_CHECK(slots.dtype() == DType::I32 && pos.dtype() == DType::I32 && slots.numel() == B && pos.numel() == B,
             "attention_decode: slots and pos must be i32 with one entry per row");
  const int64_t S = kcache.size(0), T_cap = kcache.size(2);
  std::vector<bool> used(size_t(S), false);
  const std::vector<int32_t> slot_of = slots.to_ints(), pos_of = pos.to_ints();
  for (int64_t b = 0; b < B; b++) {
    const int32_t s = slot_of[size_t(b)], p = pos_of[size_t(b)];
    AIGC_CHECK(s >= 0 && s < S && !used[size_t(s)], "attention_decode: slot " + std::to_string(s) +
                                                        " is out of range or used twice (" + std::to_string(S) +
                                                        " slots)");
    AIGC_CHECK(p >= 0 && p < T_cap, "attention_decode: position " + std::to_string(p) + " outside the cache's " +
                                        std::to_string(T_cap) + " positions");
    used[size_t(s)] = true;
  }
  check_kv_cache(kcache, vcache, "attention_decode");
  Tensor out = Tensor::empty({B, 1, C});
  be(qkv).attention_decode(out.f32(), qkv.f32(), kcache.raw(), vcache.raw(), kcache.dtype(), slots.i32(), pos.i32(), B,
                           C, n_head, kcache.size(1), T_cap);
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_f32(logits, "cross_entropy", "logits");
  int64_t V = logits.size(-1), N = logits.numel() / V;
  AIGC_CHECK(targets.dtype() == DType::I32 && targets.numel() == N,
             "cross_entropy: targets must be i32 with one entry per logits row");
  int64_t counted = 0;
  for (int32_t t : targets.to_ints()) {
    AIGC_CHECK(t < V, "cross_entropy: target " + std::to_string(t) + " >= vocabulary size " + std::to_string(V));
    counted += t >= 0;
  }
  Tensor losses = Tensor::empty({N}), lse = Tensor::empty({N});
  be(logits).cross_entropy_forward(losses.f32(), lse.f32(), logits.f32(), targets.i32(), N, V);
  double total = 0.0;  // summed in row order in double: deterministic and accurate
  for (float l : losses.to_vector()) total += l;
  Tensor out = Tensor::from_vector({counted ? float(total / double(counted)) : 0.0f}, {1});
  if (needs_grad({&logits})) {
    record(
        out, {&logits},
        [out, logits, targets, lse, N, V, counted] {
          float d = out.grad().item() / float(counted ? counted : 1);
          be(logits).cross_entropy_backward(grad_of(logits), logits.f32(), lse.f32(), targets.i32(), d, N, V);
        },
        "cross_entropy");
  }
  return out;
}

}  // namespace aigc::ops

// Differentiable ops: the front doors model code uses. Each checks shapes, allocates its output, calls the
// backend kernel and, when gradients are needed, records the backward step on the autograd tape.
// No math lives here; see backend/.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "aigc/tensor.h"

namespace aigc::ops {

// idx (B,T) i32 -> wte[idx] + wpe[pos0 + t]: (B,T,C). wpe may be undefined (no position embedding).
Tensor embedding(const Tensor& idx, const Tensor& wte, const Tensor& wpe, int64_t pos0 = 0);
// x (..., C_in) @ w^T + b, w (C_out, C_in), b (C_out) or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// A bfloat16 copy of an fp32 tensor (no gradient): inference weights at half the bytes.
Tensor to_bf16(const Tensor& x);
// Weights (out, in) in ggml's Q8_0, Q4_0 or Q4_1 blocks along `in` (a multiple of 32), for linear() at inference.
Tensor quantize(const Tensor& x, DType dtype);
// A quantized matrix in the Rows16 layout (see Layout), as linear reads it fastest; w itself if it is already.
Tensor to_rows16(const Tensor& w);
// The same from a matrix's blocks in ggml's row layout on the host (a file's bytes), with no plain copy on the device.
Tensor rows16_from_blocks(const void* blocks, const Shape& shape, DType dtype, Device device = Device::CPU,
                          TensorPack* into = nullptr);  // made in the pack `into` (on `device`) if given
// idx (B,T) i32 -> rows of an inference weight w (V,C) in f32: (B,T,C), each row its values exactly (bf16, or
// q8_0 / q4_0 / q4_1 blocks in either layout). Token embeddings looked up in a tied head's weights; no gradient;
// host memory (the CPU backend's).
Tensor embedding_rows(const Tensor& idx, const Tensor& w);
// The same for any table of V rows of C values: row(t, out) writes token t's (ids checked first).
Tensor embedding_rows(const Tensor& idx, int64_t V, int64_t C, const std::function<void(int64_t, float*)>& row);
Tensor add(const Tensor& a, const Tensor& b);
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps = 1e-5f);
Tensor gelu(const Tensor& x);
Tensor relu(const Tensor& x);
// Inverted dropout with probability p (identity when p == 0). seed fixes the mask.
Tensor dropout(const Tensor& x, float p, uint64_t seed);
// qkv (B,T,3C) -> multi-head attention output (B,T,C); causal: position t sees positions 0..t only.
Tensor self_attention(const Tensor& qkv, int64_t n_head, bool causal);
inline Tensor causal_self_attention(const Tensor& qkv, int64_t n_head) { return self_attention(qkv, n_head, true); }
// Inference only: qkv (B,T,3C) for positions pos0..pos0+T-1; appends k,v to the caches (B,NKV,T_cap,HS), where
// NKV, the caches' key/value heads, divides n_head (grouped-query attention; Backend::attention_cached).
Tensor attention_cached(const Tensor& qkv, int64_t n_head, Tensor& kcache, Tensor& vcache, int64_t pos0);
// Inference only, continuous batching: qkv (B,1,3C) holds one new position for each of B independent sequences;
// row b continues the sequence in cache slot slots[b] (caches (S,NKV,T_cap,HS)) at position pos[b] (both i32 (B)).
Tensor attention_decode(const Tensor& qkv, int64_t n_head, Tensor& kcache, Tensor& vcache, const Tensor& slots,
                        const Tensor& pos);
// 2-D convolutions over (N, C, H, W), with PyTorch's semantics and weight layouts:
// conv2d weight (C_out, C_in / groups, KH, KW); conv_transpose2d weight (C_in, C_out / groups, KH, KW) and
// output size (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1. Bias may be undefined.
struct Conv2dOptions {
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  int64_t output_padding = 0;  // conv_transpose2d only
  // conv2d, inference: write the output in the Blocked16 layout (C_out a multiple of 16) even from a plain input,
  // as the first convolution of a network that runs blocked does (no separate ops::to_blocked pass).
  bool blocked_output = false;
};
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o = {});
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o = {});
// Layouts (see Layout). to_blocked: a plain (N, C, H, W), C a multiple of 16, in the Blocked16 layout that
// oneDNN's convolutions use, for inference (no gradient): conv2d, group_norm, add, add_channelwise,
// concat_channels and upsample_nearest then take and give blocked tensors (conv2d gives a plain one when its
// C_out is not a multiple of 16), with no layout conversion around each convolution; every other op refuses
// them. to_plain converts back. Both return x itself when it is in that layout already.
Tensor to_blocked(const Tensor& x);
Tensor to_plain(const Tensor& x);
// Image-model layers. leaky_relu: x for x > 0, slope x otherwise.
Tensor leaky_relu(const Tensor& x, float slope = 0.2f);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
// Batch normalization per channel of (N, C, H, W) or (N, C), PyTorch semantics: training normalizes with the
// batch statistics (biased variance) and updates running_mean / running_var in place (momentum, unbiased
// variance); evaluation normalizes with the running statistics. w, b (C) may be undefined (no affine part).
Tensor batch_norm2d(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean, Tensor& running_var,
                    bool training, float momentum = 0.1f, float eps = 1e-5f);
// a (N, Ca, ...) and b (N, Cb, ...) joined along dim 1: (N, Ca + Cb, ...).
Tensor concat_channels(const Tensor& a, const Tensor& b);
// Inference only: x (..., sum(sizes)) cut along its last dim into (..., sizes[i]) pieces (views when x has one row).
std::vector<Tensor> split_last(const Tensor& x, const std::vector<int64_t>& sizes);
// Mean binary cross-entropy of logits against targets in [0, 1] (same shape), without overflow for any logit.
Tensor bce_with_logits(const Tensor& logits, const Tensor& targets);
// Mean softmax cross-entropy of logits (..., V) against targets (...) i32; targets < 0 are ignored.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

// ---- Llama-family layers (src/ops/llama_ops.cpp) ----
// RMS normalization over the last dim: w x / sqrt(mean(x^2) + eps).
Tensor rmsnorm(const Tensor& x, const Tensor& w, float eps);
// silu(gate) * up, elementwise (the SwiGLU MLP's gate).
Tensor swiglu(const Tensor& gate, const Tensor& up);
// q (..., NH*HS), k and v (..., NKV*HS), one i32 position per row -> (..., 3*NH*HS) for the attention ops: q and k
// turned by the rotary embedding (frequencies inv_freq, HS/2 of them; Hugging Face's "rotate half" pairs), k and
// v heads repeated NH/NKV times (grouped-query attention).
Tensor rope_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos, const Tensor& inv_freq,
                int64_t n_head, int64_t n_kv_head);

// ---- GAN objectives (src/ops/gan_ops.cpp) ----
// g times leaky_relu's slope at x (1 where x > 0, else slope): leaky_relu's backward as an op, for grad_graph.
Tensor leaky_relu_grad(const Tensor& x, const Tensor& g, float slope);
// Channels [start, start + len) of x (N, C, ...): a leading or trailing block (concat_channels' inverse).
Tensor slice_channels(const Tensor& x, int64_t start, int64_t len);
// mean over samples n of (||g[n]|| - center)^2 for g (N, ...): the WGAN-GP penalty with center 1 (Gulrajani et
// al.), R1's mean squared gradient norm with center 0 (Mescheder et al.). One element; gradient to g.
Tensor gradient_penalty(const Tensor& g, float center);
// w / sigma with sigma = u . (W v), W = w viewed as (C_out, rest): spectral normalization (Miyato et al.) for
// the singular vectors u (C_out) and v (rest) of the last power iteration, which are constants here (as in
// PyTorch's spectral_norm); the gradient to w flows through sigma too. sigma_out, when given, receives sigma.
Tensor spectral_normalize(const Tensor& w, const Tensor& u, const Tensor& v, float* sigma_out = nullptr);

// ---- Diffusion U-Net layers ----
Tensor silu(const Tensor& x);  // x * sigmoid(x)
// Group normalization of (N, C, ...) with `groups` groups of C / groups channels (PyTorch's GroupNorm); w, b (C)
// may be undefined. silu: SiLU(GroupNorm(x)) in one pass (the U-Net's usual pair).
Tensor group_norm(const Tensor& x, const Tensor& w, const Tensor& b, int64_t groups, float eps = 1e-5f,
                  bool silu = false);
// (N, C, H, W) -> (N, C, f H, f W), each pixel repeated f x f times.
Tensor upsample_nearest(const Tensor& x, int64_t f);
// (B, N, M) -> (B, M, N).
Tensor transpose_last2(const Tensor& x);
// x (B, C, ...) + v (B, C) broadcast over the trailing dimensions (the U-Net adds its time embedding so).
Tensor add_channelwise(const Tensor& x, const Tensor& v);
// Sinusoidal embedding (B, dim) of timesteps t (B) f32, no gradient: sin(t w_i) | cos(t w_i), w_i from 1 down to
// 1 / max_period geometrically (Ho et al.'s U-Net).
Tensor timestep_embedding(const Tensor& t, int64_t dim, float max_period = 10000.0f);
// Per-sample a[n] x[n] + b[n] y[n] over (N, ...) tensors (y may be undefined when b is empty): the noising and
// sampling formulas of diffusion, with gradients to x and y.
Tensor combine_rows(const std::vector<float>& a, const Tensor& x, const std::vector<float>& b, const Tensor& y);
// Elementwise min(max(x, lo), hi); no gradient (sampling only).
Tensor clamp(const Tensor& x, float lo, float hi);
// Mean squared error over all elements (gradients to both inputs).
Tensor mse_loss(const Tensor& pred, const Tensor& target);

}  // namespace aigc::ops

// The backend interface: every kernel the ops layer needs, as raw-pointer functions with one argument order
// (outputs, inputs, sizes). Backward kernels ADD into their input-gradient outputs (+=), so a tensor used
// twice (tied embeddings, residual branches) collects both contributions without extra passes.
// Shape letters: B batch, T time, C channels, NH heads, HS head size (C / NH), V vocab, N rows (= B*T).
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <vector>

#include "aigc/tensor.h"

namespace aigc {

// A 2-D convolution in PyTorch's terms: input (N, C_in, H, W), weights (C_out, C_in / groups, KH, KW),
// output (N, C_out, out_h(), out_w()); dilation 1 means adjacent taps.
struct ConvShape {
  int64_t N, C_in, H, W, C_out, KH, KW;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  bool src_blocked = false, dst_blocked = false;  // input / output in the Blocked16 layout (forward only)
  int64_t out_h() const { return (H + 2 * pad_h - dil_h * (KH - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (W + 2 * pad_w - dil_w * (KW - 1) - 1) / stride_w + 1; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- Memory: each backend owns its device's memory ----
  // Every tensor's Storage comes from its device's backend. alloc: nbytes > 0, 64-byte aligned, uninitialized;
  // nullptr when out of memory. release: a block from alloc, with the nbytes it was allocated with.
  virtual void* alloc(size_t nbytes) = 0;
  virtual void release(void* p, size_t nbytes) = 0;
  virtual void fill_zero(void* p, size_t nbytes) = 0;
  // The values of nbytes at p (inside one block from alloc) are no longer needed: the backend may give their
  // memory back, and reads of them then see unspecified values. The default keeps it.
  virtual void discard(void* p, size_t nbytes) { (void)p, (void)nbytes; }
  // Gives back the free blocks a backend keeps for reuse (after a load, whose temporaries are not made again).
  virtual void trim() {}
  // Copies between host memory and this backend's memory: the only way tensor bytes reach the host
  // (Tensor::to_vector, item, from_vector, from_ints).
  virtual void to_host(void* host_dst, const void* src, size_t nbytes) = 0;
  virtual void from_host(void* dst, const void* host_src, size_t nbytes) = 0;
  // Whether this backend runs `kernel` (a method name below, e.g. "gemm") on tensors of `dtype`. A new backend
  // may start with part of the table; callers and tests ask before they rely on a kernel.
  virtual bool supports(const char* kernel, DType dtype) const = 0;
  // Runs f(ctx), a stretch of kernel calls made from this thread (one decoding step), with the backend's threads
  // held ready between the kernels instead of started and stopped for each: a step of a small model is hundreds
  // of kernels of a few microseconds. For steps of at most 16 rows: the CPU backend's larger products are oneDNN's,
  // which run on one thread inside a held step. The default just calls f (run_held wraps a lambda).
  virtual void run_held(void (*f)(void*), void* ctx) { f(ctx); }

  // C (M,N) = alpha * op(A) op(B) + beta * C; row-major, op(A) is (M,K), op(B) is (K,N).
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;

  // out (N,C) = inp (N,C) @ W^T (W is (C_out,C_in)) + bias, and its gradients.
  virtual void linear_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N, int64_t C_in,
                              int64_t C_out) = 0;
  virtual void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                               const float* w, int64_t N, int64_t C_in, int64_t C_out) = 0;
  // The same product with weights stored as bf16 (inference only).
  virtual void linear_forward_bf16w(float* out, const float* inp, const uint16_t* w, const float* bias, int64_t N,
                                    int64_t C_in, int64_t C_out) = 0;
  // The same product with weights in ggml's Q8_0, Q4_0 or Q4_1 blocks (wtype; aigc/quant.h), C_in a multiple of 32, as
  // llama.cpp computes it: each input row is first quantized to Q8_0 blocks (quantize_activation_block), then
  // every pair of blocks adds
  // d_w d_x sum(q_w q_x), the sum exact in integers (inference only). wlayout: Plain (ggml's rows of blocks) or
  // Rows16 (quant.h).
  virtual void linear_forward_quant(float* out, const float* inp, const void* w, DType wtype, Layout wlayout,
                                    const float* bias, int64_t N, int64_t C_in, int64_t C_out) = 0;

  // 2-D convolution. With accumulate the result is added to the output instead of replacing it (the backward
  // kernels of the ops always accumulate; a transposed convolution's forward pass is backward_data).
  virtual void conv2d_forward(float* out, const float* inp, const float* w, const float* bias, const ConvShape& s,
                              bool accumulate) = 0;
  virtual void conv2d_backward_data(float* dinp, const float* dout, const float* w, const ConvShape& s,
                                    bool accumulate) = 0;
  virtual void conv2d_backward_weights(float* dw, float* dbias, const float* dout, const float* inp,
                                       const ConvShape& s) = 0;  // dw += ..., dbias += ... (either may be null)
  // Both backward passes of a convolution (dw, dbias accumulate; dinp too when dinp_accumulate, else it is
  // assigned; any may be null), sharing work on dout.
  virtual void conv2d_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                               const float* w, const ConvShape& s, bool dinp_accumulate) = 0;

  // out (N, C, HW) = src + bias[c] per channel (src may be out: in place), and dbias[c] += sum of dout over N and HW.
  virtual void channel_bias_add(float* out, const float* src, const float* bias, int64_t N, int64_t C, int64_t HW) = 0;
  virtual void channel_bias_backward(float* dbias, const float* dout, int64_t N, int64_t C, int64_t HW) = 0;

  // out (B,T,C) = wte[idx] + wpe[t]  (wpe may be null: no position embedding).
  virtual void embedding_forward(float* out, const int32_t* idx, const float* wte, const float* wpe, int64_t B,
                                 int64_t T, int64_t C, int64_t pos0) = 0;
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* idx, int64_t B, int64_t T,
                                  int64_t C, int64_t pos0) = 0;

  virtual void convert_f32_to_bf16(uint16_t* out, const float* inp, int64_t n) = 0;  // round to nearest even
  virtual void add_forward(float* out, const float* a, const float* b, int64_t n) = 0;
  virtual void accumulate(float* dst, const float* src, int64_t n) = 0;  // dst += src
  virtual void copy(float* dst, const float* src, int64_t n) = 0;        // dst = src

  // Layer normalization over the last dim; mean/rstd (N) are saved for backward.
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                                 int64_t N, int64_t C, float eps) = 0;
  virtual void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                  const float* w, const float* mean, const float* rstd, int64_t N, int64_t C) = 0;

  // ---- Llama-family blocks ----
  // RMS normalization over the last dim: out = w x / sqrt(mean(x^2) + eps); rstd (N) saved for backward (may be
  // null). Backward: dinp += ..., dw += ... (dw may be null).
  virtual void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int64_t C,
                               float eps) = 0;
  virtual void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                                const float* rstd, int64_t N, int64_t C) = 0;
  // SwiGLU's gate: out = silu(gate) up, elementwise; backward adds into dgate and dup.
  virtual void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) = 0;
  virtual void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                               int64_t n) = 0;
  // Rotary position embedding and grouped-query heads, packed for the attention kernels: q (N, NH*HS),
  // k and v (N, NKV*HS) of N rows at positions pos (N) -> qkv (N, 3*NH*HS) = rot(q) | rot(k) | v, where k and v
  // heads repeat so that query head h reads kv head h / (NH / NKV). rot turns each pair (x_i, x_{i+HS/2}) of a
  // head by the angle pos * inv_freq[i] (HS/2 frequencies; the "rotate half" form of Hugging Face's Llama), the
  // angle rounded to fp32 as there. Backward adds the inverse rotation and sums the repeats into dq, dk, dv.
  virtual void rope_qkv_forward(float* qkv, const float* q, const float* k, const float* v, const int32_t* pos,
                                const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) = 0;
  virtual void rope_qkv_backward(float* dq, float* dk, float* dv, const float* dqkv, const int32_t* pos,
                                 const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) = 0;

  // GELU (tanh approximation) and ReLU.
  virtual void gelu_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;
  virtual void relu_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void relu_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;

  // LeakyReLU (slope for x < 0), tanh and the logistic sigmoid; backward recomputes from the input.
  virtual void leaky_relu_forward(float* out, const float* inp, int64_t n, float slope) = 0;
  virtual void leaky_relu_backward(float* dinp, const float* inp, const float* dout, int64_t n, float slope) = 0;
  virtual void tanh_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;
  virtual void sigmoid_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void sigmoid_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;

  // Batch normalization over (N, C, HW) per channel. Training: normalizes with the batch mean and biased
  // variance and writes them to mean, var (C). Evaluation: normalizes with the given mean, var (running stats);
  // its backward treats them as constants.
  virtual void batchnorm_forward(float* out, float* mean, float* var, const float* inp, const float* w, const float* b,
                                 int64_t N, int64_t C, int64_t HW, float eps, bool training) = 0;
  virtual void batchnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                  const float* w, const float* mean, const float* var, int64_t N, int64_t C, int64_t HW,
                                  float eps, bool training) = 0;
  // running = (1 - momentum) running + momentum batch; the variance enters unbiased (count / (count - 1)).
  virtual void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var,
                                        int64_t C, int64_t count, float momentum) = 0;

  // out (N, Ca + Cb, S) = a (N, Ca, S) followed by b (N, Cb, S) along dim 1; backward adds the slices back
  // (or assigns them: a_acc / b_acc false).
  virtual void concat_channels_forward(float* out, const float* a, const float* b, int64_t N, int64_t Ca, int64_t Cb,
                                       int64_t S) = 0;
  virtual void concat_channels_backward(float* da, float* db, const float* dout, int64_t N, int64_t Ca, int64_t Cb,
                                        int64_t S, bool a_acc, bool b_acc) = 0;

  // Binary cross-entropy on logits x against targets y in [0, 1], computed stably as
  // max(x, 0) - x y + log(1 + exp(-|x|)). Forward returns the sum over n; backward adds scale (sigmoid(x) - y).
  virtual double bce_with_logits_forward(const float* logits, const float* targets, int64_t n) = 0;
  virtual void bce_with_logits_backward(float* dlogits, const float* logits, const float* targets, float scale,
                                        int64_t n) = 0;

  // ---- Diffusion U-Net kernels ----
  // SiLU (x sigmoid(x)); backward recomputes from the input.
  virtual void silu_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void silu_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;
  // Group normalization of (N, C, HW): per sample, the C channels form G groups of C/G channels, each normalized
  // with its own mean and biased variance; then the per-channel affine w, b (either may be null), and with silu
  // a SiLU on top (fused: the normalized values are never stored). mean and rstd (N*G) are saved for backward,
  // which recomputes the rest.
  virtual void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                                 int64_t N, int64_t C, int64_t HW, int64_t G, float eps, bool silu) = 0;
  // dw, db accumulate; dinp too when dinp_accumulate, else it is assigned.
  virtual void groupnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                  const float* w, const float* b, const float* mean, const float* rstd, int64_t N,
                                  int64_t C, int64_t HW, int64_t G, bool silu, bool dinp_accumulate) = 0;
  // Nearest-neighbour upsampling of (NC, H, W) planes by an integer factor f: out (NC, fH, fW); backward sums
  // each f x f block of dout into its source pixel.
  virtual void upsample_nearest_forward(float* out, const float* inp, int64_t NC, int64_t H, int64_t W, int64_t f) = 0;
  virtual void upsample_nearest_backward(float* dinp, const float* dout, int64_t NC, int64_t H, int64_t W,
                                         int64_t f) = 0;
  // The Blocked16 layout's versions (inference only, C a multiple of 16; see Layout): group normalization
  // without the saved statistics, nearest upsampling, and x + v[n, c] over blocked x (N, C, HW) with v (N, C)
  // plain. (Converting between layouts is a transpose_last2 of (N C/16, 16, HW) and back.)
  virtual void groupnorm_forward_blocked16(float* out, const float* inp, const float* w, const float* b, int64_t N,
                                           int64_t C, int64_t HW, int64_t G, float eps, bool silu) = 0;
  virtual void upsample_nearest_blocked16(float* out, const float* inp, int64_t N, int64_t C, int64_t H, int64_t W,
                                          int64_t f) = 0;
  virtual void add_channelwise_blocked16(float* out, const float* x, const float* v, int64_t N, int64_t C,
                                         int64_t HW) = 0;
  // out (B, M, N) [+]= inp (B, N, M) with the last two dimensions swapped.
  virtual void transpose_last2(float* out, const float* inp, int64_t B, int64_t N, int64_t M, bool accumulate) = 0;
  // Sinusoidal embedding of (possibly fractional) timesteps t (B) into out (B, dim), dim even, half = dim / 2:
  // out[b, i] = sin(t_b w_i) and out[b, half + i] = cos(t_b w_i), with w_i = max_period^(-i / (half - 1)).
  virtual void timestep_embedding(float* out, const float* t, int64_t B, int64_t dim, float max_period) = 0;
  // Per-sample linear combination of rows of S values: out[n, :] = a[n] x[n, :] + b[n] y[n, :]; out may alias
  // x or y. With accumulate the result is added to out.
  virtual void combine_rows(float* out, const float* a, const float* x, const float* b, const float* y, int64_t N,
                            int64_t S, bool accumulate) = 0;
  // Sum of squared differences (the MSE loss before the mean); backward adds scale * 2 (pred - target) to dpred
  // and its negative to dtarget (either may be null).
  virtual double mse_forward(const float* pred, const float* target, int64_t n) = 0;
  virtual void mse_backward(float* dpred, float* dtarget, const float* pred, const float* target, float scale,
                            int64_t n) = 0;
  // out = min(max(inp, lo), hi).
  virtual void clamp(float* out, const float* inp, int64_t n, float lo, float hi) = 0;
  // Exponential moving average of parameters: ema = decay ema + (1 - decay) p.
  virtual void ema_update(float* ema, const float* p, int64_t n, float decay) = 0;

  // Inverted dropout: mask holds 0 or 1/(1-p).
  virtual void dropout_forward(float* out, float* mask, const float* inp, int64_t n, float p, uint64_t seed) = 0;
  virtual void mul_backward(float* dinp, const float* dout, const float* mask, int64_t n) = 0;

  // Multi-head self-attention, causal (each position sees itself and earlier ones) or not (every position sees
  // all). qkv (B,T,3C) holds q|k|v per row, out (B,T,C).
  // lse (B,NH,T) receives each query row's softmax log-sum-exp for backward (may be null for inference);
  // backward recomputes the probabilities from it and from out.
  virtual void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                                 bool causal) = 0;
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                                  int64_t B, int64_t T, int64_t C, int64_t NH, bool causal) = 0;
  // Incremental attention with a KV cache: qkv (B,T,3C) holds T new positions starting at pos0; their k, v are
  // written into kcache/vcache (B,NKV,T_cap,HS) first, then each query attends to positions [0, pos0 + t].
  // Grouped-query attention: NKV divides NH, and query head h reads cache head h / (NH / NKV), whose k and v are
  // those of qkv's head (h / (NH / NKV)) * (NH / NKV), the first of its group. qkv must repeat each group's k and
  // v in all its heads (as ops::rope_qkv writes them): a prompt into an empty cache may read them from qkv.
  // The caches hold kv values: F32, or F16 (IEEE half, llama.cpp's default: half the memory and the bytes a
  // decoding step reads; keys and values are rounded to nearest even as they are stored, and read back exactly).
  virtual void attention_cached(float* out, const float* qkv, void* kcache, void* vcache, DType kv, int64_t B,
                                int64_t T, int64_t C, int64_t NH, int64_t NKV, int64_t pos0, int64_t T_cap) = 0;
  // One decoding step of B independent sequences (continuous batching): qkv (B,1,3C) holds one new position per
  // row; row b's sequence lives in cache slot slot[b] of kcache/vcache (S,NKV,T_cap,HS) and the new position is
  // pos[b]. Its k, v are stored there, then its query attends to positions [0, pos[b]] of that slot.
  virtual void attention_decode(float* out, const float* qkv, void* kcache, void* vcache, DType kv, const int32_t* slot,
                                const int32_t* pos, int64_t B, int64_t C, int64_t NH, int64_t NKV, int64_t T_cap) = 0;

  // Softmax cross-entropy per row. losses (N), lse (N) = log-sum-exp saved for backward. Rows whose target is
  // negative are ignored (loss 0, no gradient).
  virtual void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                                     int64_t V) = 0;
  // dlogits += scale * (softmax(logits) - onehot(target)) for each row.
  virtual void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                                      float scale, int64_t N, int64_t V) = 0;

  // Optimizer and gradient utilities over flat buffers.
  virtual double sum_squares(const float* x, int64_t n) = 0;
  virtual void scale(float* x, float s, int64_t n) = 0;
  virtual bool all_finite(const float* x, int64_t n) = 0;
  // AdamW (decoupled decay) when decoupled, else Adam with L2 added to the gradient. t is the 1-based step.
  virtual void adam_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                           float eps, float weight_decay, bool decoupled, int64_t t) = 0;
  virtual void sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float weight_decay,
                          bool first_step) = 0;
};

Backend& backend_for(Device d);  // the backend that owns device d's memory and runs its kernels
template <typename F>
void run_held(Backend& be, F&& f) {
  be.run_held([](void* c) { (*static_cast<std::remove_reference_t<F>*>(c))(); }, &f);
}
Backend& cpu_backend();
// Plain scalar loops for every kernel, slow and obviously right: what the fast backends are tested against
// (tests/test_backend_ops.cpp). Host memory, plain aligned allocations.
Backend& reference_backend();

// Precision of the linear layers' matrix products. BF16 rounds both operands to bfloat16 and accumulates in fp32
// (mixed precision: parameters, gradients and optimizer state stay fp32). Process-wide.
enum class MatmulPrecision { F32, BF16 };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
// Whether bf16 products run on native bf16 instructions here (else they are emulated in fp32: same values,
// no speed-up).
bool bf16_is_native();
// The instructions the CPU backend's quantized dot products use here: "avx512-vnni", "avx2" or "scalar"
// (AIGC_QUANT_ISA=avx2|scalar forces a narrower one).
const char* quant_kernel_isa();

// Every kernel name of Backend (for supports() and the op-case table's coverage check).
const std::vector<const char*>& backend_kernels();
// The dtypes a CPU-side backend (cpu, reference) runs `kernel` on: F32 everywhere, I32 for token ids, BF16 for
// the bf16 weights and conversion.
bool host_backend_supports(const char* kernel, DType dtype);

// Threads used by the CPU kernels (OpenMP); 0 = library default.
void set_num_threads(int n);
int get_num_threads();

}  // namespace aigc

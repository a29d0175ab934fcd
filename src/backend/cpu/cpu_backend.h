// The CPU backend: oneDNN's sgemm for every matrix product, OpenMP + compiler-vectorized loops for the rest.
// Each kernel has a plain loop body that reads like its formula; speed comes from fusion and threading,
// not from intrinsics, so the reference and the fast version are the same code.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>

#include "aigc/backend.h"

namespace aigc::cpu {

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override;
  void linear_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N, int64_t C_in,
                      int64_t C_out) override;
  void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                       int64_t N, int64_t C_in, int64_t C_out) override;
  void linear_forward_bf16w(float* out, const float* inp, const uint16_t* w, const float* bias, int64_t N, int64_t C_in,
                            int64_t C_out) override;
  void conv2d_forward(float* out, const float* inp, const float* w, const float* bias, const ConvShape& s,
                      bool accumulate) override;
  void conv2d_backward_data(float* dinp, const float* dout, const float* w, const ConvShape& s,
                            bool accumulate) override;
  void conv2d_backward_weights(float* dw, float* dbias, const float* dout, const float* inp,
                               const ConvShape& s) override;
  void conv2d_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
                       const ConvShape& s, bool dinp_accumulate) override;
  void channel_bias_add(float* out, const float* src, const float* bias, int64_t N, int64_t C, int64_t HW) override;
  void channel_bias_backward(float* dbias, const float* dout, int64_t N, int64_t C, int64_t HW) override;
  void embedding_forward(float* out, const int32_t* idx, const float* wte, const float* wpe, int64_t B, int64_t T,
                         int64_t C, int64_t pos0) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* idx, int64_t B, int64_t T,
                          int64_t C, int64_t pos0) override;
  void convert_f32_to_bf16(uint16_t* out, const float* inp, int64_t n) override { f32_to_bf16(out, inp, n); }
  void add_forward(float* out, const float* a, const float* b, int64_t n) override;
  void accumulate(float* dst, const float* src, int64_t n) override;
  void copy(float* dst, const float* src, int64_t n) override;
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int64_t N, int64_t C, float eps) override;
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int64_t N, int64_t C) override;
  void gelu_forward(float* out, const float* inp, int64_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;
  void relu_forward(float* out, const float* inp, int64_t n) override;
  void relu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;
  void leaky_relu_forward(float* out, const float* inp, int64_t n, float slope) override;
  void leaky_relu_backward(float* dinp, const float* inp, const float* dout, int64_t n, float slope) override;
  void tanh_forward(float* out, const float* inp, int64_t n) override;
  void tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;
  void sigmoid_forward(float* out, const float* inp, int64_t n) override;
  void sigmoid_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;
  void batchnorm_forward(float* out, float* mean, float* var, const float* inp, const float* w, const float* b,
                         int64_t N, int64_t C, int64_t HW, float eps, bool training) override;
  void batchnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* var, int64_t N, int64_t C, int64_t HW, float eps,
                          bool training) override;
  void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int64_t C,
                                int64_t count, float momentum) override;
  void concat_channels_forward(float* out, const float* a, const float* b, int64_t N, int64_t Ca, int64_t Cb,
                               int64_t S) override;
  void concat_channels_backward(float* da, float* db, const float* dout, int64_t N, int64_t Ca, int64_t Cb, int64_t S,
                                bool a_acc, bool b_acc) override;
  double bce_with_logits_forward(const float* logits, const float* targets, int64_t n) override;
  void bce_with_logits_backward(float* dlogits, const float* logits, const float* targets, float scale,
                                int64_t n) override;
  void silu_forward(float* out, const float* inp, int64_t n) override;
  void silu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override;
  void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int64_t N, int64_t C, int64_t HW, int64_t G, float eps, bool silu) override;
  void groupnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* b, const float* mean, const float* rstd, int64_t N, int64_t C, int64_t HW,
                          int64_t G, bool silu, bool dinp_accumulate) override;
  void upsample_nearest_forward(float* out, const float* inp, int64_t NC, int64_t H, int64_t W, int64_t f) override;
  void upsample_nearest_backward(float* dinp, const float* dout, int64_t NC, int64_t H, int64_t W, int64_t f) override;
  void groupnorm_forward_blocked16(float* out, const float* inp, const float* w, const float* b, int64_t N, int64_t C,
                                   int64_t HW, int64_t G, float eps, bool silu) override;
  void upsample_nearest_blocked16(float* out, const float* inp, int64_t N, int64_t C, int64_t H, int64_t W,
                                  int64_t f) override;
  void add_channelwise_blocked16(float* out, const float* x, const float* v, int64_t N, int64_t C, int64_t HW) override;
  void transpose_last2(float* out, const float* inp, int64_t B, int64_t N, int64_t M, bool accumulate) override;
  void timestep_embedding(float* out, const float* t, int64_t B, int64_t dim, float max_period) override;
  void combine_rows(float* out, const float* a, const float* x, const float* b, const float* y, int64_t N, int64_t S,
                    bool accumulate) override;
  double mse_forward(const float* pred, const float* target, int64_t n) override;
  void mse_backward(float* dpred, float* dtarget, const float* pred, const float* target, float scale,
                    int64_t n) override;
  void clamp(float* out, const float* inp, int64_t n, float lo, float hi) override;
  void ema_update(float* ema, const float* p, int64_t n, float decay) override;
  void dropout_forward(float* out, float* mask, const float* inp, int64_t n, float p, uint64_t seed) override;
  void mul_backward(float* dinp, const float* dout, const float* mask, int64_t n) override;
  void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                         bool causal) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                          int64_t B, int64_t T, int64_t C, int64_t NH, bool causal) override;
  void attention_cached(float* out, const float* qkv, float* kcache, float* vcache, int64_t B, int64_t T, int64_t C,
                        int64_t NH, int64_t pos0, int64_t T_cap) override;
  void attention_decode(float* out, const float* qkv, float* kcache, float* vcache, const int32_t* slot,
                        const int32_t* pos, int64_t B, int64_t C, int64_t NH, int64_t T_cap) override;
  void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                             int64_t V) override;
  void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                              float scale, int64_t N, int64_t V) override;
  double sum_squares(const float* x, int64_t n) override;
  void scale(float* x, float s, int64_t n) override;
  bool all_finite(const float* x, int64_t n) override;
  void adam_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                   float eps, float weight_decay, bool decoupled, int64_t t) override;
  void sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum, float weight_decay,
                  bool first_step) override;
};

// exp(x) for float, written so the compiler can vectorize it (std::exp does not vectorize without fast-math).
// x = n ln2 + r with |r| <= ln2/2; e^r by its Taylor series to degree 7 (relative error < 1e-8 before rounding).
inline float exp_vec(float x) {
  float xc = x < -87.0f ? -87.0f : x;  // a NaN passes through both clamps
  xc = xc > 88.0f ? 88.0f : xc;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (floorf would not vectorize without -ffast-math).
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693145751953125f;  // ln2 split in two parts keeps r exact
  r = r - n * 1.4286068203094172e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((int32_t(n) + 127) << 23);
}

// The logistic 1 / (1 + e^-x) without overflow for large |x|: e^-|x| never exceeds 1. One division for both
// signs (a vector division costs as much as the whole exponential).
inline float sigmoid(float x) {
  const float e = exp_vec(-(x < 0.0f ? -x : x));
  const float r = 1.0f / (1.0f + e);
  return x >= 0.0f ? r : e * r;
}

// Nearest upsampling by f of `rows` input rows of W pixels, each pixel V consecutive floats (1 for plain
// planes, 16 for the blocked layout): each input row gives f output rows of W f pixels.
template <int64_t V>
void upsample_nearest_rows(float* out, const float* inp, int64_t rows, int64_t W, int64_t f) {
  const int64_t OW = W * f;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < rows; p++) {
    const float* src = inp + p * W * V;
    float* dst = out + p * f * OW * V;
    for (int64_t x = 0; x < OW; x++)
      for (int64_t j = 0; j < V; j++) dst[x * V + j] = src[(x / f) * V + j];
    for (int64_t r = 1; r < f; r++) std::copy(dst, dst + OW * V, dst + r * OW * V);
  }
}

// bfloat16: the top half of a float. Rounding is to nearest, ties to even; NaNs stay NaNs.
inline uint16_t bf16_from_f32(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f32_from_bf16(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n);
// C (M,N) = alpha op(A) op(B) + beta C with bf16 A, B and fp32 C, row-major as in Backend::gemm.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
bool bf16_matmul_is_native();
// C (M,N) = A (M,K) B^T + beta C in fp32 through the matmul primitive; false if it has no fast kernel here.
bool gemm_f32_matmul(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                     float beta, float* C, int64_t ldc);  // oneDNN has a fast bf16 kernel for this CPU

}  // namespace aigc::cpu

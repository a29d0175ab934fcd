// The reference backend: every kernel of Backend as plain scalar loops over the formula in backend.h, sums in
// double, no threads, no vectors, no libraries. Slow and obviously right: the fast backends are tested against it
// (tests/test_backend_ops.cpp). Where a kernel's convention is a choice (random masks, bf16 rounding, NaN
// handling) it copies the CPU backend's rule exactly, so the two agree to rounding.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#include "aigc/backend.h"

namespace aigc::ref {

class ReferenceBackend final : public Backend {
 public:
  const char* name() const override { return "reference"; }
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
  void convert_f32_to_bf16(uint16_t* out, const float* inp, int64_t n) override;
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

// bfloat16 is the top 16 bits of a float. Rounding to nearest, ties to even: add 0x7fff plus the lowest kept bit,
// then truncate. A NaN keeps its sign and payload's top bits and gets the quiet bit (0x40) set, so it stays a NaN
// (the CPU backend's rule, bit for bit).
inline uint16_t bf16_round(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  const uint32_t lowest_kept = (u >> 16) & 1u;
  return uint16_t((u + 0x7fffu + lowest_kept) >> 16);
}
inline float bf16_to_float(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }
// x rounded to the nearest bf16 value, as a float.
inline float round_to_bf16(float x) { return bf16_to_float(bf16_round(x)); }

// The logistic function 1 / (1 + e^-x) in double, written so that e^(...) never overflows.
inline double sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// Index of element (n, c, p) of an (N, C, P) tensor (P = H W pixels) in the Blocked16 layout (N, C/16, P, 16).
inline int64_t blocked16_index(int64_t n, int64_t c, int64_t p, int64_t C, int64_t P) {
  return ((n * (C / 16) + c / 16) * P + p) * 16 + c % 16;
}

}  // namespace aigc::ref

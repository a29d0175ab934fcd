// Reference kernels, part 1: matrix products, linear layers, 2-D convolution, channel biases and bf16
// conversion; plus reference_backend(). Every output element is one sum written out as its formula, accumulated
// in double. (reference_nn.cpp and reference_image.cpp hold the rest.)
#include <cstdlib>
#include <cstring>
#include <vector>

#include "aigc/error.h"
#include "aigc/quant.h"
#include "reference_backend.h"

namespace aigc::ref {

namespace {

// Under MatmulPrecision::BF16 the linear layers' products round both operands to bf16 (see backend.h); the
// accumulation stays in high precision. `x` as the product reads it.
inline double operand(float x, bool bf16) { return double(bf16 ? round_to_bf16(x) : x); }

bool linear_in_bf16() { return matmul_precision() == MatmulPrecision::BF16; }

// The CPU backend's convolutions round the operands they read to bf16 under MatmulPrecision::BF16 only where the
// CPU has native bf16 instructions (otherwise they stay fp32); the reference follows the same rule.
bool conv_in_bf16() { return matmul_precision() == MatmulPrecision::BF16 && bf16_is_native(); }

}  // namespace

// C[i, j] = alpha sum_k op(A)[i, k] op(B)[k, j] + beta C[i, j], with op(A)[i, k] = A[k, i] when trans_a, and
// op(B)[k, j] = B[j, k] when trans_b. With beta == 0, C is only written (BLAS: a NaN in C does not survive).
void ReferenceBackend::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        sum += double(a) * double(b);
      }
      double c = double(alpha) * sum;
      if (beta != 0.0f) c += double(beta) * double(C[i * ldc + j]);
      C[i * ldc + j] = float(c);
    }
}

// out[n, o] = bias[o] + sum_i inp[n, i] w[o, i]   (w is (C_out, C_in)).
void ReferenceBackend::linear_forward(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                                      int64_t C_in, int64_t C_out) {
  const bool bf16 = linear_in_bf16();
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < C_out; o++) {
      double sum = bias ? double(bias[o]) : 0.0;
      for (int64_t i = 0; i < C_in; i++) sum += operand(inp[n * C_in + i], bf16) * operand(w[o * C_in + i], bf16);
      out[n * C_out + o] = float(sum);
    }
}

// dbias[o] += sum_n dout[n, o];  dinp[n, i] += sum_o dout[n, o] w[o, i];  dw[o, i] += sum_n dout[n, o] inp[n, i].
// Each output may be null. The bias gradient reads dout in fp32 under either precision (as the CPU backend does).
void ReferenceBackend::linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                                       const float* w, int64_t N, int64_t C_in, int64_t C_out) {
  const bool bf16 = linear_in_bf16();
  if (dbias)
    for (int64_t o = 0; o < C_out; o++) {
      double sum = 0.0;
      for (int64_t n = 0; n < N; n++) sum += double(dout[n * C_out + o]);
      dbias[o] += float(sum);
    }
  if (dinp)
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < C_in; i++) {
        double sum = 0.0;
        for (int64_t o = 0; o < C_out; o++) sum += operand(dout[n * C_out + o], bf16) * operand(w[o * C_in + i], bf16);
        dinp[n * C_in + i] += float(sum);
      }
  if (dw)
    for (int64_t o = 0; o < C_out; o++)
      for (int64_t i = 0; i < C_in; i++) {
        double sum = 0.0;
        for (int64_t n = 0; n < N; n++) sum += operand(dout[n * C_out + o], bf16) * operand(inp[n * C_in + i], bf16);
        dw[o * C_in + i] += float(sum);
      }
}

// out[n, o] = bias[o] + sum_i inp[n, i] w[o, i], with each bf16 weight widened exactly to fp32 (its 16 bits become
// the float's top half). The input is used as given, in fp32.
void ReferenceBackend::linear_forward_bf16w(float* out, const float* inp, const uint16_t* w, const float* bias,
                                            int64_t N, int64_t C_in, int64_t C_out) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t o = 0; o < C_out; o++) {
      double sum = bias ? double(bias[o]) : 0.0;
      for (int64_t i = 0; i < C_in; i++) sum += double(inp[n * C_in + i]) * double(bf16_to_float(w[o * C_in + i]));
      out[n * C_out + o] = float(sum);
    }
}

// Quantized weights: each input row becomes Q8_0 blocks, and each output is the sum over blocks of
// d_w d_x sum_j q_w[j] q_x[j] + offset_w d_x sum_j q_x[j], the inner sums in integers, the rest in double.
template <typename Block>
static void linear_quant(float* out, const float* inp, const Block* w, const float* bias, int64_t N, int64_t C_in,
                         int64_t C_out) {
  const int64_t nb = C_in / kQuantBlock;
  std::vector<BlockQ8_0> xq(static_cast<size_t>(nb));
  for (int64_t n = 0; n < N; n++) {
    for (int64_t b = 0; b < nb; b++) quantize_activation_block(inp + n * C_in + b * kQuantBlock, xq[size_t(b)]);
    for (int64_t o = 0; o < C_out; o++) {
      double sum = bias ? double(bias[o]) : 0.0;
      for (int64_t b = 0; b < nb; b++) {
        int qw[32], qx[32];
        block_ints(w[o * nb + b], qw);
        block_ints(xq[size_t(b)], qx);
        int64_t dot = 0, xsum = 0;
        for (int j = 0; j < 32; j++) dot += qw[j] * qx[j], xsum += qx[j];
        const double dx = io::f16_to_f32(xq[size_t(b)].d);
        sum += double(io::f16_to_f32(w[o * nb + b].d)) * dx * double(dot) +
               double(block_offset(w[o * nb + b])) * dx * double(xsum);
      }
      out[n * C_out + o] = float(sum);
    }
  }
}

void ReferenceBackend::linear_forward_quant(float* out, const float* inp, const void* w, DType wtype, Layout wlayout,
                                            const float* bias, int64_t N, int64_t C_in, int64_t C_out) {
  AIGC_CHECK(C_in % kQuantBlock == 0, "linear_forward_quant: C_in must be a multiple of 32");
  std::vector<char> plain;
  if (wlayout == Layout::Rows16) {  // the reference reads the blocks in ggml's order
    plain.resize(dtype_bytes(wtype, C_out * C_in));
    deinterleave_rows16(wtype, w, plain.data(), C_out, C_in);
    w = plain.data();
  } else {
    AIGC_CHECK(wlayout == Layout::Plain, "linear_forward_quant: weights must be plain or Rows16");
  }
  if (wtype == DType::Q8_0)
    linear_quant(out, inp, static_cast<const BlockQ8_0*>(w), bias, N, C_in, C_out);
  else if (wtype == DType::Q4_0)
    linear_quant(out, inp, static_cast<const BlockQ4_0*>(w), bias, N, C_in, C_out);
  else if (wtype == DType::Q4_1)
    linear_quant(out, inp, static_cast<const BlockQ4_1*>(w), bias, N, C_in, C_out);
  else
    fail(std::string("linear_forward_quant: weights of type ") + dtype_name(wtype) + " are not quantized");
}

// ---- 2-D convolution ----
// Output pixel (oh, ow) reads input pixel (ih, iw) = (oh stride_h - pad_h + kh dil_h, ow stride_w - pad_w + kw dil_w)
// through tap (kh, kw); taps that land in the padding read zero. Channels split into `groups` independent groups:
// output channel co reads input channels g C_in/G .. (g+1) C_in/G - 1 with g = co / (C_out/G), and its weights
// w[co, ci, kh, kw] have ci counted within the group.

namespace {

// Where element (n, c, h, w) of an (N, C, H, W) activation lies: row-major NCHW, or Blocked16 (N, C/16, H, W, 16).
inline int64_t act_index(bool blocked, int64_t n, int64_t c, int64_t h, int64_t w, int64_t C, int64_t H, int64_t W) {
  return blocked ? blocked16_index(n, c, h * W + w, C, H * W) : ((n * C + c) * H + h) * W + w;
}

inline int64_t w_index(const ConvShape& s, int64_t co, int64_t ci, int64_t kh, int64_t kw) {
  return ((co * (s.C_in / s.groups) + ci) * s.KH + kh) * s.KW + kw;
}

void check_conv(const ConvShape& s) {
  AIGC_CHECK(s.groups >= 1 && s.C_in % s.groups == 0 && s.C_out % s.groups == 0,
             "conv2d (reference): C_in and C_out must divide by groups");
  AIGC_CHECK(!s.src_blocked || s.C_in % 16 == 0, "conv2d (reference): src_blocked needs C_in a multiple of 16");
  AIGC_CHECK(!s.dst_blocked || s.C_out % 16 == 0, "conv2d (reference): dst_blocked needs C_out a multiple of 16");
}

void check_plain(const ConvShape& s) {
  AIGC_CHECK(!s.src_blocked, "conv2d (reference): the backward passes take plain tensors only (src_blocked is set)");
  AIGC_CHECK(!s.dst_blocked, "conv2d (reference): the backward passes take plain tensors only (dst_blocked is set)");
}

// dinp[n, ci, ih, iw] (+)= sum over the (co, oh, ow, kh, kw) that read it of dout[n, co, oh, ow] w[co, ci, kh, kw]:
// the adjoint of the forward pass, computed by scattering each output gradient back along the taps it came from.
void backward_data(float* dinp, const float* dout, const float* w, const ConvShape& s, bool accumulate) {
  check_plain(s);
  check_conv(s);
  const bool bf16 = conv_in_bf16();
  const int64_t OH = s.out_h(), OW = s.out_w(), Cig = s.C_in / s.groups, Cog = s.C_out / s.groups;
  std::vector<double> sum(size_t(s.N * s.C_in * s.H * s.W), 0.0);
  for (int64_t n = 0; n < s.N; n++)
    for (int64_t co = 0; co < s.C_out; co++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          const double d = operand(dout[((n * s.C_out + co) * OH + oh) * OW + ow], bf16);
          const int64_t g = co / Cog;
          for (int64_t ci = 0; ci < Cig; ci++)
            for (int64_t kh = 0; kh < s.KH; kh++)
              for (int64_t kw = 0; kw < s.KW; kw++) {
                const int64_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
                const int64_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                sum[size_t(((n * s.C_in + g * Cig + ci) * s.H + ih) * s.W + iw)] +=
                    d * operand(w[w_index(s, co, ci, kh, kw)], bf16);
              }
        }
  for (size_t i = 0; i < sum.size(); i++) dinp[i] = float((accumulate ? double(dinp[i]) : 0.0) + sum[i]);
}

// dw[co, ci, kh, kw] += sum_{n, oh, ow} dout[n, co, oh, ow] inp[n, g C_in/G + ci, ih, iw];
// dbias[co] += sum_{n, oh, ow} dout[n, co, oh, ow]. Either may be null.
void backward_weights(float* dw, float* dbias, const float* dout, const float* inp, const ConvShape& s) {
  check_plain(s);
  check_conv(s);
  const bool bf16 = conv_in_bf16();
  const int64_t OH = s.out_h(), OW = s.out_w(), Cig = s.C_in / s.groups, Cog = s.C_out / s.groups;
  auto dout_at = [&](int64_t n, int64_t co, int64_t oh, int64_t ow) {
    return operand(dout[((n * s.C_out + co) * OH + oh) * OW + ow], bf16);
  };
  if (dw)
    for (int64_t co = 0; co < s.C_out; co++)
      for (int64_t ci = 0; ci < Cig; ci++)
        for (int64_t kh = 0; kh < s.KH; kh++)
          for (int64_t kw = 0; kw < s.KW; kw++) {
            const int64_t c = (co / Cog) * Cig + ci;  // the input channel this weight reads
            double sum = 0.0;
            for (int64_t n = 0; n < s.N; n++)
              for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                  const int64_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
                  const int64_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
                  if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                  sum += dout_at(n, co, oh, ow) * operand(inp[((n * s.C_in + c) * s.H + ih) * s.W + iw], bf16);
                }
            dw[w_index(s, co, ci, kh, kw)] += float(sum);
          }
  if (dbias)
    for (int64_t co = 0; co < s.C_out; co++) {
      double sum = 0.0;
      for (int64_t n = 0; n < s.N; n++)
        for (int64_t oh = 0; oh < OH; oh++)
          for (int64_t ow = 0; ow < OW; ow++) sum += dout_at(n, co, oh, ow);
      dbias[co] += float(sum);
    }
}

}  // namespace

// out[n, co, oh, ow] (+)= bias[co] + sum_{ci, kh, kw} inp[n, g C_in/G + ci, ih, iw] w[co, ci, kh, kw].
// The input and output may each be in the Blocked16 layout (s.src_blocked, s.dst_blocked).
void ReferenceBackend::conv2d_forward(float* out, const float* inp, const float* w, const float* bias,
                                      const ConvShape& s, bool accumulate) {
  check_conv(s);
  const bool bf16 = conv_in_bf16();
  const int64_t OH = s.out_h(), OW = s.out_w(), Cig = s.C_in / s.groups, Cog = s.C_out / s.groups;
  for (int64_t n = 0; n < s.N; n++)
    for (int64_t co = 0; co < s.C_out; co++)
      for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = 0; ow < OW; ow++) {
          const int64_t g = co / Cog;
          double sum = bias ? double(bias[co]) : 0.0;
          for (int64_t ci = 0; ci < Cig; ci++)
            for (int64_t kh = 0; kh < s.KH; kh++)
              for (int64_t kw = 0; kw < s.KW; kw++) {
                const int64_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
                const int64_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;  // zero padding
                const float x = inp[act_index(s.src_blocked, n, g * Cig + ci, ih, iw, s.C_in, s.H, s.W)];
                sum += operand(x, bf16) * operand(w[w_index(s, co, ci, kh, kw)], bf16);
              }
          float& o = out[act_index(s.dst_blocked, n, co, oh, ow, s.C_out, OH, OW)];
          o = float((accumulate ? double(o) : 0.0) + sum);
        }
}

void ReferenceBackend::conv2d_backward_data(float* dinp, const float* dout, const float* w, const ConvShape& s,
                                            bool accumulate) {
  backward_data(dinp, dout, w, s, accumulate);
}

void ReferenceBackend::conv2d_backward_weights(float* dw, float* dbias, const float* dout, const float* inp,
                                               const ConvShape& s) {
  backward_weights(dw, dbias, dout, inp, s);
}

// Both passes: dinp assigned or accumulated (dinp_accumulate), dw and dbias accumulated; any may be null.
void ReferenceBackend::conv2d_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                                       const float* w, const ConvShape& s, bool dinp_accumulate) {
  check_plain(s);
  if (dinp) backward_data(dinp, dout, w, s, dinp_accumulate);
  if (dw || dbias) backward_weights(dw, dbias, dout, inp, s);
}

// out[n, c, i] = src[n, c, i] + bias[c] (src may be out).
void ReferenceBackend::channel_bias_add(float* out, const float* src, const float* bias, int64_t N, int64_t C,
                                        int64_t HW) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < HW; i++) out[(n * C + c) * HW + i] = src[(n * C + c) * HW + i] + bias[c];
}

// dbias[c] += sum_{n, i} dout[n, c, i].
void ReferenceBackend::channel_bias_backward(float* dbias, const float* dout, int64_t N, int64_t C, int64_t HW) {
  for (int64_t c = 0; c < C; c++) {
    double sum = 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < HW; i++) sum += double(dout[(n * C + c) * HW + i]);
    dbias[c] += float(sum);
  }
}

// out[i] = inp[i] rounded to the nearest bf16 (ties to even; NaNs stay NaNs).
void ReferenceBackend::convert_f32_to_bf16(uint16_t* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = bf16_round(inp[i]);
}

}  // namespace aigc::ref

namespace aigc {

Backend& reference_backend() {
  static ref::ReferenceBackend& b = *new ref::ReferenceBackend;  // never destroyed, like the CPU backend
  return b;
}

}  // namespace aigc

namespace aigc::ref {

// Host memory, plainly: no cache, no threads.
void* ReferenceBackend::alloc(size_t nbytes) { return std::aligned_alloc(64, (nbytes + 63) / 64 * 64); }
void ReferenceBackend::release(void* p, size_t) { std::free(p); }
void ReferenceBackend::fill_zero(void* p, size_t nbytes) { std::memset(p, 0, nbytes); }
void ReferenceBackend::to_host(void* host_dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(host_dst, src, nbytes);
}
void ReferenceBackend::from_host(void* dst, const void* host_src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, host_src, nbytes);
}
bool ReferenceBackend::supports(const char* kernel, DType dtype) const { return host_backend_supports(kernel, dtype); }

}  // namespace aigc::ref

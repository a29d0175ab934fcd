// Reference kernels, part 4: the Llama family's RMS normalization, SwiGLU gate and rotary embedding with
// grouped-query heads. Scalar loops, sums in double.
#include <cmath>

#include "reference_backend.h"

namespace aigc::ref {

void ReferenceBackend::rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int64_t C,
                                       float eps) {
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    double sq = 0.0;
    for (int64_t c = 0; c < C; c++) sq += double(x[c]) * double(x[c]);
    const double r = 1.0 / std::sqrt(sq / double(C) + double(eps));
    for (int64_t c = 0; c < C; c++) out[n * C + c] = float(double(x[c]) * r * double(w[c]));
    if (rstd) rstd[n] = float(r);
  }
}

// With xhat = x rstd and dn = dout w: dinp += rstd (dn - xhat mean_c(dn xhat)), dw += sum_n dout xhat.
void ReferenceBackend::rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                                        const float* rstd, int64_t N, int64_t C) {
  auto xhat = [&](int64_t n, int64_t c) { return double(inp[n * C + c]) * double(rstd[n]); };
  if (dinp)
    for (int64_t n = 0; n < N; n++) {
      double sum_dn_xhat = 0.0;
      for (int64_t c = 0; c < C; c++) sum_dn_xhat += double(dout[n * C + c]) * double(w[c]) * xhat(n, c);
      const double m = sum_dn_xhat / double(C);
      for (int64_t c = 0; c < C; c++)
        dinp[n * C + c] += float(double(rstd[n]) * (double(dout[n * C + c]) * double(w[c]) - xhat(n, c) * m));
    }
  if (dw)
    for (int64_t c = 0; c < C; c++) {
      double s = 0.0;
      for (int64_t n = 0; n < N; n++) s += double(dout[n * C + c]) * xhat(n, c);
      dw[c] += float(s);
    }
}

void ReferenceBackend::swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double g = gate[i];
    out[i] = float(g * sigmoid(g) * double(up[i]));
  }
}

// d silu(g) / dg = s (1 + g (1 - s)) with s = sigmoid(g).
void ReferenceBackend::swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                       int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double g = gate[i], s = sigmoid(g), d = dout[i];
    if (dgate) dgate[i] += float(d * double(up[i]) * s * (1.0 + g * (1.0 - s)));
    if (dup) dup[i] += float(d * g * s);
  }
}

namespace {
// The rotation of pair i at position p: the angle is rounded to fp32 (as Hugging Face's Llama computes it), its
// cosine and sine are taken in double.
void rope_angle(int32_t p, float inv_freq, double* c, double* s) {
  const float a = float(p) * inv_freq;
  *c = std::cos(double(a));
  *s = std::sin(double(a));
}
}  // namespace

void ReferenceBackend::rope_qkv_forward(float* qkv, const float* q, const float* k, const float* v, const int32_t* pos,
                                        const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) {
  const int64_t C = NH * HS, Ckv = NKV * HS, half = HS / 2, rep = NH / NKV;
  for (int64_t n = 0; n < N; n++) {
    float* out = qkv + n * 3 * C;
    for (int64_t h = 0; h < NH; h++) {
      const float* qh = q + n * C + h * HS;
      const float* kh = k + n * Ckv + (h / rep) * HS;
      const float* vh = v + n * Ckv + (h / rep) * HS;
      for (int64_t i = 0; i < half; i++) {
        double c, s;
        rope_angle(pos[n], inv_freq[i], &c, &s);
        out[h * HS + i] = float(double(qh[i]) * c - double(qh[i + half]) * s);
        out[h * HS + i + half] = float(double(qh[i + half]) * c + double(qh[i]) * s);
        out[C + h * HS + i] = float(double(kh[i]) * c - double(kh[i + half]) * s);
        out[C + h * HS + i + half] = float(double(kh[i + half]) * c + double(kh[i]) * s);
      }
      for (int64_t i = 0; i < HS; i++) out[2 * C + h * HS + i] = vh[i];
    }
  }
}

// The transpose of the rotation is the rotation by -angle; repeated kv heads sum their gradients.
void ReferenceBackend::rope_qkv_backward(float* dq, float* dk, float* dv, const float* dqkv, const int32_t* pos,
                                         const float* inv_freq, int64_t N, int64_t NH, int64_t NKV, int64_t HS) {
  const int64_t C = NH * HS, Ckv = NKV * HS, half = HS / 2, rep = NH / NKV;
  for (int64_t n = 0; n < N; n++) {
    const float* g = dqkv + n * 3 * C;
    for (int64_t h = 0; h < NH; h++)
      for (int64_t i = 0; i < half; i++) {
        double c, s;
        rope_angle(pos[n], inv_freq[i], &c, &s);
        const double a = g[h * HS + i], b = g[h * HS + i + half];
        if (dq) {
          dq[n * C + h * HS + i] += float(a * c + b * s);
          dq[n * C + h * HS + i + half] += float(b * c - a * s);
        }
      }
    for (int64_t j = 0; j < NKV; j++) {
      for (int64_t i = 0; i < HS; i++) {
        double sk = 0.0, sv = 0.0;  // the gradients reaching kv head j from its rep query heads
        for (int64_t h = j * rep; h < (j + 1) * rep; h++) {
          const double a = g[C + h * HS + (i % half)], b = g[C + h * HS + (i % half) + half];
          double c, s;
          rope_angle(pos[n], inv_freq[i % half], &c, &s);
          sk += i < half ? a * c + b * s : b * c - a * s;
          sv += g[2 * C + h * HS + i];
        }
        if (dk) dk[n * Ckv + j * HS + i] += float(sk);
        if (dv) dv[n * Ckv + j * HS + i] += float(sv);
      }
    }
  }
}

}  // namespace aigc::ref

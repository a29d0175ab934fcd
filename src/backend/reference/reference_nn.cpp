// Reference kernels, part 2: the transformer's kernels (embeddings, element-wise adds, layer normalization, GELU,
// ReLU, dropout, attention, cross-entropy) and the optimizer utilities. Scalar loops, sums in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "aigc/half.h"
#include "reference_backend.h"

namespace aigc::ref {

// out[b, t, :] = wte[idx[b, t], :] + wpe[pos0 + t, :]   (no wpe term when wpe is null).
void ReferenceBackend::embedding_forward(float* out, const int32_t* idx, const float* wte, const float* wpe, int64_t B,
                                         int64_t T, int64_t C, int64_t pos0) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const int64_t n = b * T + t, tok = idx[n];
      for (int64_t c = 0; c < C; c++)
        out[n * C + c] = wpe ? wte[tok * C + c] + wpe[(pos0 + t) * C + c] : wte[tok * C + c];
    }
}

// dwte[idx[b, t], :] += dout[b, t, :];  dwpe[pos0 + t, :] += dout[b, t, :]   (either may be null).
void ReferenceBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* idx, int64_t B,
                                          int64_t T, int64_t C, int64_t pos0) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const int64_t n = b * T + t, tok = idx[n];
      for (int64_t c = 0; c < C; c++) {
        if (dwte) dwte[tok * C + c] += dout[n * C + c];
        if (dwpe) dwpe[(pos0 + t) * C + c] += dout[n * C + c];
      }
    }
}

void ReferenceBackend::add_forward(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ReferenceBackend::accumulate(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

void ReferenceBackend::copy(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

// Per row x of C values: mean = sum x / C, var = sum (x - mean)^2 / C (biased), rstd = 1 / sqrt(var + eps),
// out = (x - mean) rstd w + b. mean and rstd are saved when not null.
void ReferenceBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                         const float* b, int64_t N, int64_t C, float eps) {
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++) sum += double(x[c]);
    const double m = sum / double(C);
    double sq = 0.0;
    for (int64_t c = 0; c < C; c++) sq += (double(x[c]) - m) * (double(x[c]) - m);
    const double r = 1.0 / std::sqrt(sq / double(C) + double(eps));
    for (int64_t c = 0; c < C; c++) out[n * C + c] = float((double(x[c]) - m) * r * double(w[c]) + double(b[c]));
    if (mean) mean[n] = float(m);
    if (rstd) rstd[n] = float(r);
  }
}

// With xhat = (x - mean) rstd (the saved statistics) and dn = dout w:
//   dinp += rstd (dn - mean_c(dn) - xhat mean_c(dn xhat)),  dw += sum_n dout xhat,  db += sum_n dout.
// Any output may be null.
void ReferenceBackend::layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                          const float* w, const float* mean, const float* rstd, int64_t N, int64_t C) {
  auto xhat = [&](int64_t n, int64_t c) { return (double(inp[n * C + c]) - double(mean[n])) * double(rstd[n]); };
  if (dinp)
    for (int64_t n = 0; n < N; n++) {
      double sum_dn = 0.0, sum_dn_xhat = 0.0;
      for (int64_t c = 0; c < C; c++) {
        const double dn = double(dout[n * C + c]) * double(w[c]);
        sum_dn += dn;
        sum_dn_xhat += dn * xhat(n, c);
      }
      const double mean_dn = sum_dn / double(C), mean_dn_xhat = sum_dn_xhat / double(C);
      for (int64_t c = 0; c < C; c++) {
        const double dn = double(dout[n * C + c]) * double(w[c]);
        dinp[n * C + c] += float(double(rstd[n]) * (dn - mean_dn - xhat(n, c) * mean_dn_xhat));
      }
    }
  for (int64_t c = 0; c < C; c++) {
    double sw = 0.0, sb = 0.0;
    for (int64_t n = 0; n < N; n++) {
      sw += double(dout[n * C + c]) * xhat(n, c);
      sb += double(dout[n * C + c]);
    }
    if (dw) dw[c] += float(sw);
    if (db) db[c] += float(sb);
  }
}

namespace {
const double kSqrt2OverPi = std::sqrt(2.0 / std::numbers::pi);
constexpr double kGeluA = 0.044715;
}  // namespace

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void ReferenceBackend::gelu_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double x = inp[i];
    const double th = std::tanh(kSqrt2OverPi * (x + kGeluA * x * x * x));
    out[i] = float(0.5 * x * (1.0 + th));
  }
}

// d/dx GELU = 0.5 (1 + th) + 0.5 x (1 - th^2) sqrt(2/pi) (1 + 3 0.044715 x^2);  dinp += that * dout.
void ReferenceBackend::gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double x = inp[i];
    const double th = std::tanh(kSqrt2OverPi * (x + kGeluA * x * x * x));
    const double du = kSqrt2OverPi * (1.0 + 3.0 * kGeluA * x * x);
    const double grad = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
    dinp[i] += float(grad * double(dout[i]));
  }
}

// max(x, 0) (a NaN gives 0, as in the CPU backend); backward passes dout where x > 0.
void ReferenceBackend::relu_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void ReferenceBackend::relu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
}

// ---- Dropout ----
// The mask must be the CPU backend's, bit for bit: element i draws u = the top 53 bits of
// splitmix64(splitmix64(seed) ^ i), scaled to [0, 1), and is dropped when u < p.
namespace {
uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
}  // namespace

// mask[i] = 0 when dropped, else 1 / (1 - p) (inverted dropout); out = inp mask.
void ReferenceBackend::dropout_forward(float* out, float* mask, const float* inp, int64_t n, float p, uint64_t seed) {
  const float keep_scale = 1.0f / (1.0f - p);
  const uint64_t base = splitmix64(seed);
  for (int64_t i = 0; i < n; i++) {
    const double u = double(splitmix64(base ^ uint64_t(i)) >> 11) / 9007199254740992.0;  // 2^53
    mask[i] = u < double(p) ? 0.0f : keep_scale;
    out[i] = inp[i] * mask[i];
  }
}

// dinp += dout mask.
void ReferenceBackend::mul_backward(float* dinp, const float* dout, const float* mask, int64_t n) {
  for (int64_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}

// ---- Attention ----
// Head h of a qkv row (3C floats: q | k | v) is q[h HS .. (h+1) HS), k at offset C, v at offset 2C.
// A query q attending to keys k_0 .. k_{L-1}: s_j = q . k_j / sqrt(HS), p = softmax(s), out = sum_j p_j v_j.
namespace {

// Writes out[0..HS) = sum_{j < L} p_j v_j with p_j = softmax_j(q . k_j / sqrt(HS)); key j is k + j ld, value j is
// v + j ld. Returns log sum_j exp(s_j).
double attend(float* out, const float* q, const float* k, const float* v, int64_t ld, int64_t L, int64_t HS) {
  const double scale = 1.0 / std::sqrt(double(HS));
  std::vector<double> s(static_cast<size_t>(L));
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < L; j++) {
    double dot = 0.0;
    for (int64_t d = 0; d < HS; d++) dot += double(q[d]) * double(k[j * ld + d]);
    s[size_t(j)] = dot * scale;
    mx = std::max(mx, s[size_t(j)]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < L; j++) sum += std::exp(s[size_t(j)] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t d = 0; d < HS; d++) {
    double o = 0.0;
    for (int64_t j = 0; j < L; j++) o += std::exp(s[size_t(j)] - lse) * double(v[j * ld + d]);
    out[d] = float(o);
  }
  return lse;
}

}  // namespace

// Query t of (batch b, head h) sees keys 0..t (causal) or all T; lse[b, h, t] is saved when lse is not null.
void ReferenceBackend::attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C,
                                         int64_t NH, bool causal) {
  const int64_t HS = C / NH, C3 = 3 * C;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++)
      for (int64_t t = 0; t < T; t++) {
        const float* base = qkv + b * T * C3 + h * HS;  // head h of row (b, 0)
        const int64_t L = causal ? t + 1 : T;
        const double l = attend(out + (b * T + t) * C + h * HS, base + t * C3, base + C, base + 2 * C, C3, L, HS);
        if (lse) lse[(b * NH + h) * T + t] = float(l);
      }
}

// With the saved lse and out: P_ij = exp(s_ij - lse_i), D_i = dout_i . out_i (= sum_j P_ij dP_ij), dP_ij =
// dout_i . v_j, dS_ij = P_ij (dP_ij - D_i); then dq_i += sum_j dS_ij k_j / sqrt(HS), dk_j += sum_i dS_ij q_i /
// sqrt(HS), dv_j += sum_i P_ij dout_i (all added into dqkv).
void ReferenceBackend::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                          const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, bool causal) {
  const int64_t HS = C / NH, C3 = 3 * C;
  const double scale = 1.0 / std::sqrt(double(HS));
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++) {
      auto q = [&](int64_t t) { return qkv + (b * T + t) * C3 + h * HS; };
      auto k = [&](int64_t t) { return q(t) + C; };
      auto v = [&](int64_t t) { return q(t) + 2 * C; };
      auto dO = [&](int64_t t) { return dout + (b * T + t) * C + h * HS; };
      auto O = [&](int64_t t) { return out + (b * T + t) * C + h * HS; };
      std::vector<double> dq(size_t(T * HS), 0.0), dk(size_t(T * HS), 0.0), dv(size_t(T * HS), 0.0);
      for (int64_t i = 0; i < T; i++) {
        double D = 0.0;
        for (int64_t d = 0; d < HS; d++) D += double(dO(i)[d]) * double(O(i)[d]);
        const double lse_i = lse[(b * NH + h) * T + i];
        for (int64_t j = 0; j < (causal ? i + 1 : T); j++) {
          double s = 0.0, dP = 0.0;
          for (int64_t d = 0; d < HS; d++) {
            s += double(q(i)[d]) * double(k(j)[d]);
            dP += double(dO(i)[d]) * double(v(j)[d]);
          }
          const double P = std::exp(s * scale - lse_i);
          const double dS = P * (dP - D);
          for (int64_t d = 0; d < HS; d++) {
            dv[size_t(j * HS + d)] += P * double(dO(i)[d]);
            dq[size_t(i * HS + d)] += dS * scale * double(k(j)[d]);
            dk[size_t(j * HS + d)] += dS * scale * double(q(i)[d]);
          }
        }
      }
      for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < HS; d++) {
          float* row = dqkv + (b * T + t) * C3 + h * HS;
          row[d] += float(dq[size_t(t * HS + d)]);
          row[C + d] += float(dk[size_t(t * HS + d)]);
          row[2 * C + d] += float(dv[size_t(t * HS + d)]);
        }
    }
}

namespace {

// A cache of F32 or F16 values (Backend::attention_cached): element i as float, and storing one.
float cache_at(const void* c, DType kv, int64_t i) {
  return kv == DType::F16 ? io::f16_to_f32(static_cast<const uint16_t*>(c)[i]) : static_cast<const float*>(c)[i];
}
void cache_put(void* c, DType kv, int64_t i, float x) {
  if (kv == DType::F16)
    static_cast<uint16_t*>(c)[i] = io::f32_to_f16_saturated(x);
  else
    static_cast<float*>(c)[i] = x;
}
// Cache head rows [0, L) of HS values from `at`, as floats.
std::vector<float> cache_rows(const void* c, DType kv, int64_t at, int64_t L, int64_t HS) {
  std::vector<float> r(size_t(L * HS));
  for (int64_t i = 0; i < L * HS; i++) r[size_t(i)] = cache_at(c, kv, at + i);
  return r;
}

}  // namespace

// First kcache/vcache[b, g, pos0 + t, :] = k, v of row (b, t)'s head g * rep (the first of group g) for every new
// position; then query t of head h attends to cache positions 0 .. pos0 + t of cache head h / rep.
void ReferenceBackend::attention_cached(float* out, const float* qkv, void* kcache, void* vcache, DType kv, int64_t B,
                                        int64_t T, int64_t C, int64_t NH, int64_t NKV, int64_t pos0, int64_t T_cap) {
  const int64_t HS = C / NH, C3 = 3 * C, rep = NH / NKV;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t g = 0; g < NKV; g++)
        for (int64_t d = 0; d < HS; d++) {
          const int64_t at = ((b * NKV + g) * T_cap + pos0 + t) * HS + d;
          cache_put(kcache, kv, at, qkv[(b * T + t) * C3 + C + g * rep * HS + d]);
          cache_put(vcache, kv, at, qkv[(b * T + t) * C3 + 2 * C + g * rep * HS + d]);
        }
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++) {
      const int64_t head = (b * NKV + h / rep) * T_cap * HS;
      const std::vector<float> k = cache_rows(kcache, kv, head, pos0 + T, HS),
                               v = cache_rows(vcache, kv, head, pos0 + T, HS);
      for (int64_t t = 0; t < T; t++)
        attend(out + (b * T + t) * C + h * HS, qkv + (b * T + t) * C3 + h * HS, k.data(), v.data(), HS, pos0 + t + 1,
               HS);
    }
}

// Row b: its new k, v go to cache slot slot[b] at position pos[b]; its query then attends to positions
// 0 .. pos[b] of that slot.
void ReferenceBackend::attention_decode(float* out, const float* qkv, void* kcache, void* vcache, DType kv,
                                        const int32_t* slot, const int32_t* pos, int64_t B, int64_t C, int64_t NH,
                                        int64_t NKV, int64_t T_cap) {
  const int64_t HS = C / NH, C3 = 3 * C, rep = NH / NKV;
  for (int64_t b = 0; b < B; b++)
    for (int64_t g = 0; g < NKV; g++)
      for (int64_t d = 0; d < HS; d++) {
        const int64_t at = ((int64_t(slot[b]) * NKV + g) * T_cap + pos[b]) * HS + d;
        cache_put(kcache, kv, at, qkv[b * C3 + C + g * rep * HS + d]);
        cache_put(vcache, kv, at, qkv[b * C3 + 2 * C + g * rep * HS + d]);
      }
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < NH; h++) {
      const int64_t head = (int64_t(slot[b]) * NKV + h / rep) * T_cap * HS, L = int64_t(pos[b]) + 1;
      const std::vector<float> k = cache_rows(kcache, kv, head, L, HS), v = cache_rows(vcache, kv, head, L, HS);
      attend(out + b * C + h * HS, qkv + b * C3 + h * HS, k.data(), v.data(), HS, L, HS);
    }
}

// ---- Cross-entropy ----
// lse[n] = log sum_j exp(logits[n, j]) (NaN when any logit of the row is not finite, so it surfaces as a NaN
// loss); losses[n] = lse[n] - logits[n, target], or 0 when the target is negative (ignored).
void ReferenceBackend::cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                             int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; n++) {
    const float* x = logits + n * V;
    bool finite = true;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < V; j++) {
      finite = finite && std::isfinite(x[j]);
      mx = std::max(mx, double(x[j]));
    }
    double sum = 0.0;
    for (int64_t j = 0; j < V; j++) sum += std::exp(double(x[j]) - mx);
    const double l = finite ? mx + std::log(sum) : std::numeric_limits<double>::quiet_NaN();
    lse[n] = float(l);
    losses[n] = targets[n] < 0 ? 0.0f : float(l - double(x[targets[n]]));
  }
}

// dlogits[n, j] += scale (exp(logits[n, j] - lse[n]) - [j == target[n]]), skipping rows whose target is negative.
void ReferenceBackend::cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                              const int32_t* targets, float scale, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] < 0) continue;
    for (int64_t j = 0; j < V; j++) {
      const double p = std::exp(double(logits[n * V + j]) - double(lse[n]));
      const double onehot = j == targets[n] ? 1.0 : 0.0;
      dlogits[n * V + j] += float(double(scale) * (p - onehot));
    }
  }
}

// ---- Optimizer utilities ----

// sum_i x[i]^2.
double ReferenceBackend::sum_squares(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; i++) total += double(x[i]) * double(x[i]);
  return total;
}

void ReferenceBackend::scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}

bool ReferenceBackend::all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// Adam (PyTorch's formulation), t the 1-based step:
//   g' = g + wd p (Adam, L2) or g' = g with p decayed first, p = p (1 - lr wd) (AdamW, decoupled);
//   m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
//   p = p - lr m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t).
void ReferenceBackend::adam_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                                   float beta2, float eps, float weight_decay, bool decoupled, int64_t t) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(t)), bc2 = 1.0 - std::pow(double(beta2), double(t));
  for (int64_t i = 0; i < n; i++) {
    double pi = p[i], gi = g[i];
    if (decoupled)
      pi -= double(lr) * double(weight_decay) * pi;
    else
      gi += double(weight_decay) * pi;
    m[i] = float(double(beta1) * double(m[i]) + (1.0 - double(beta1)) * gi);
    v[i] = float(double(beta2) * double(v[i]) + (1.0 - double(beta2)) * gi * gi);
    const double m_hat = double(m[i]) / bc1, v_hat = double(v[i]) / bc2;
    p[i] = float(pi - double(lr) * m_hat / (std::sqrt(v_hat) + double(eps)));
  }
}

// SGD (PyTorch's formulation): g' = g + wd p; with momentum, buf = g' on the first step, else
// buf = momentum buf + g', and g' = buf; then p -= lr g'.
void ReferenceBackend::sgd_update(float* p, const float* g, float* buf, int64_t n, float lr, float momentum,
                                  float weight_decay, bool first_step) {
  for (int64_t i = 0; i < n; i++) {
    double gi = double(g[i]) + double(weight_decay) * double(p[i]);
    if (momentum != 0.0f) {
      buf[i] = first_step ? float(gi) : float(double(momentum) * double(buf[i]) + gi);
      gi = buf[i];
    }
    p[i] = float(double(p[i]) - double(lr) * gi);
  }
}

}  // namespace aigc::ref

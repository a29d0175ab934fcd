// Reference kernels, part 3: the image models' kernels (LeakyReLU, tanh, sigmoid, batch normalization, channel
// concatenation, binary cross-entropy) and the diffusion U-Net's (SiLU, group normalization, nearest upsampling,
// the Blocked16 versions, transposes, timestep embeddings, row combinations, MSE, clamp, EMA). Scalar loops, sums
// in double.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "aigc/error.h"
#include "reference_backend.h"

namespace aigc::ref {

// x for x > 0, else slope x; backward dout or slope dout.
void ReferenceBackend::leaky_relu_forward(float* out, const float* inp, int64_t n, float slope) {
  for (int64_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}

void ReferenceBackend::leaky_relu_backward(float* dinp, const float* inp, const float* dout, int64_t n, float slope) {
  for (int64_t i = 0; i < n; i++) dinp[i] += inp[i] > 0.0f ? dout[i] : slope * dout[i];
}

// tanh(x); backward dinp += (1 - tanh(x)^2) dout.
void ReferenceBackend::tanh_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = float(std::tanh(double(inp[i])));
}

void ReferenceBackend::tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double t = std::tanh(double(inp[i]));
    dinp[i] += float((1.0 - t * t) * double(dout[i]));
  }
}

// s(x) = 1 / (1 + e^-x); backward dinp += s (1 - s) dout.
void ReferenceBackend::sigmoid_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = float(sigmoid(double(inp[i])));
}

void ReferenceBackend::sigmoid_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double s = sigmoid(double(inp[i]));
    dinp[i] += float(s * (1.0 - s) * double(dout[i]));
  }
}

// ---- Batch normalization over (N, C, HW), per channel c over its M = N HW values ----

// Training: mean = sum x / M and var = sum (x - mean)^2 / M (biased) are computed and written to mean, var.
// Evaluation: mean, var are read. Then out = (x - mean) / sqrt(var + eps) w + b (w, b may be null: 1, 0).
void ReferenceBackend::batchnorm_forward(float* out, float* mean, float* var, const float* inp, const float* w,
                                         const float* b, int64_t N, int64_t C, int64_t HW, float eps, bool training) {
  const double M = double(N * HW);
  for (int64_t c = 0; c < C; c++) {
    double m, v;
    if (training) {
      double sum = 0.0;
      for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < HW; i++) sum += double(inp[(n * C + c) * HW + i]);
      m = sum / M;
      double sq = 0.0;
      for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < HW; i++)
          sq += (double(inp[(n * C + c) * HW + i]) - m) * (double(inp[(n * C + c) * HW + i]) - m);
      v = sq / M;
      mean[c] = float(m), var[c] = float(v);
    } else {
      m = mean[c], v = var[c];
    }
    const double rstd = 1.0 / std::sqrt(v + double(eps));
    const double wc = w ? double(w[c]) : 1.0, bc = b ? double(b[c]) : 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < HW; i++) {
        const int64_t at = (n * C + c) * HW + i;
        out[at] = float((double(inp[at]) - m) * rstd * wc + bc);
      }
  }
}

// With rstd = 1 / sqrt(var + eps) and xhat = (x - mean) rstd: dw += sum dout xhat, db += sum dout, and
// dinp += w rstd (dout - mean(dout) - xhat mean(dout xhat)) in training (the statistics depend on x), or
// dinp += w rstd dout in evaluation (they are constants). Any output may be null.
void ReferenceBackend::batchnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                          const float* w, const float* mean, const float* var, int64_t N, int64_t C,
                                          int64_t HW, float eps, bool training) {
  const double M = double(N * HW);
  for (int64_t c = 0; c < C; c++) {
    const double m = mean[c], rstd = 1.0 / std::sqrt(double(var[c]) + double(eps));
    auto xhat = [&](int64_t at) { return (double(inp[at]) - m) * rstd; };
    double sum_d = 0.0, sum_dx = 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < HW; i++) {
        const int64_t at = (n * C + c) * HW + i;
        sum_d += double(dout[at]);
        sum_dx += double(dout[at]) * xhat(at);
      }
    if (dw) dw[c] += float(sum_dx);
    if (db) db[c] += float(sum_d);
    if (!dinp) continue;
    const double k = (w ? double(w[c]) : 1.0) * rstd;
    const double mean_d = training ? sum_d / M : 0.0, mean_dx = training ? sum_dx / M : 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < HW; i++) {
        const int64_t at = (n * C + c) * HW + i;
        dinp[at] += float(k * (double(dout[at]) - mean_d - xhat(at) * mean_dx));
      }
  }
}

// running = (1 - momentum) running + momentum batch, the batch variance made unbiased by count / (count - 1)
// (left as is when count <= 1).
void ReferenceBackend::batchnorm_update_running(float* running_mean, float* running_var, const float* mean,
                                                const float* var, int64_t C, int64_t count, float momentum) {
  const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0, mom = momentum;
  for (int64_t c = 0; c < C; c++) {
    running_mean[c] = float((1.0 - mom) * double(running_mean[c]) + mom * double(mean[c]));
    running_var[c] = float((1.0 - mom) * double(running_var[c]) + mom * double(var[c]) * unbias);
  }
}

// out[n, c, s] = a[n, c, s] for c < Ca, b[n, c - Ca, s] after.
void ReferenceBackend::concat_channels_forward(float* out, const float* a, const float* b, int64_t N, int64_t Ca,
                                               int64_t Cb, int64_t S) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < Ca + Cb; c++)
      for (int64_t s = 0; s < S; s++)
        out[(n * (Ca + Cb) + c) * S + s] = c < Ca ? a[(n * Ca + c) * S + s] : b[(n * Cb + c - Ca) * S + s];
}

// da, db = or += their slices of dout (a_acc, b_acc); either may be null.
void ReferenceBackend::concat_channels_backward(float* da, float* db, const float* dout, int64_t N, int64_t Ca,
                                                int64_t Cb, int64_t S, bool a_acc, bool b_acc) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < Ca + Cb; c++)
      for (int64_t s = 0; s < S; s++) {
        const float d = dout[(n * (Ca + Cb) + c) * S + s];
        if (c < Ca && da) {
          float& g = da[(n * Ca + c) * S + s];
          g = a_acc ? g + d : d;
        }
        if (c >= Ca && db) {
          float& g = db[(n * Cb + c - Ca) * S + s];
          g = b_acc ? g + d : d;
        }
      }
}

// sum_i max(x, 0) - x y + log(1 + exp(-|x|)).
double ReferenceBackend::bce_with_logits_forward(const float* logits, const float* targets, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const double x = logits[i], y = targets[i];
    total += std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::fabs(x)));
  }
  return total;
}

// dlogits += scale (sigmoid(x) - y).
void ReferenceBackend::bce_with_logits_backward(float* dlogits, const float* logits, const float* targets, float scale,
                                                int64_t n) {
  for (int64_t i = 0; i < n; i++)
    dlogits[i] += float(double(scale) * (sigmoid(double(logits[i])) - double(targets[i])));
}

// SiLU: x s(x); backward dinp += s(x) (1 + x (1 - s(x))) dout.
void ReferenceBackend::silu_forward(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = float(double(inp[i]) * sigmoid(double(inp[i])));
}

namespace {
double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}
}  // namespace

void ReferenceBackend::silu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  for (int64_t i = 0; i < n; i++) dinp[i] += float(silu_grad(double(inp[i])) * double(dout[i]));
}

// ---- Group normalization ----
// Sample n's channels c in [g C/G, (g+1) C/G) over all HW pixels form group g: mean and var (biased) over its
// C/G HW values, rstd = 1 / sqrt(var + eps), y = (x - mean) rstd w[c] + b[c], out = y or SiLU(y).
namespace {

// The forward pass for either layout: at(n, c, i) is the offset of element (n, c, pixel i). mean, rstd (N G)
// are written when not null.
template <typename At>
void groupnorm(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int64_t N,
               int64_t C, int64_t HW, int64_t G, float eps, bool silu, At at) {
  const int64_t cpg = C / G;
  const double len = double(cpg * HW);
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < G; g++) {
      double sum = 0.0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
        for (int64_t i = 0; i < HW; i++) sum += double(inp[at(n, c, i)]);
      const double m = sum / len;
      double sq = 0.0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
        for (int64_t i = 0; i < HW; i++) sq += (double(inp[at(n, c, i)]) - m) * (double(inp[at(n, c, i)]) - m);
      const double r = 1.0 / std::sqrt(sq / len + double(eps));
      if (mean) mean[n * G + g] = float(m);
      if (rstd) rstd[n * G + g] = float(r);
      for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
        for (int64_t i = 0; i < HW; i++) {
          const double y = (double(inp[at(n, c, i)]) - m) * r * (w ? double(w[c]) : 1.0) + (b ? double(b[c]) : 0.0);
          out[at(n, c, i)] = float(silu ? y * sigmoid(y) : y);
        }
    }
}

}  // namespace

void ReferenceBackend::groupnorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                                         const float* b, int64_t N, int64_t C, int64_t HW, int64_t G, float eps,
                                         bool silu) {
  auto at = [&](int64_t n, int64_t c, int64_t i) { return (n * C + c) * HW + i; };
  groupnorm(out, mean, rstd, inp, w, b, N, C, HW, G, eps, silu, at);
}

// With xhat = (x - mean) rstd (saved statistics), y = xhat w + b, and gy the gradient at y (dout, or through
// the SiLU dout silu'(y)): dw[c] += sum gy xhat, db[c] += sum gy over samples and pixels; with gx = gy w,
// dinp = or += rstd (gx - mean_group(gx) - xhat mean_group(gx xhat)). Any output may be null.
void ReferenceBackend::groupnorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                                          const float* w, const float* b, const float* mean, const float* rstd,
                                          int64_t N, int64_t C, int64_t HW, int64_t G, bool silu,
                                          bool dinp_accumulate) {
  const int64_t cpg = C / G;
  const double len = double(cpg * HW);
  auto xhat = [&](int64_t n, int64_t c, int64_t i) {
    return (double(inp[(n * C + c) * HW + i]) - double(mean[n * G + c / cpg])) * double(rstd[n * G + c / cpg]);
  };
  auto gy = [&](int64_t n, int64_t c, int64_t i) {
    const double d = dout[(n * C + c) * HW + i];
    if (!silu) return d;
    const double y = xhat(n, c, i) * (w ? double(w[c]) : 1.0) + (b ? double(b[c]) : 0.0);
    return d * silu_grad(y);
  };
  for (int64_t c = 0; c < C; c++) {
    double sw = 0.0, sb = 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < HW; i++) {
        sw += gy(n, c, i) * xhat(n, c, i);
        sb += gy(n, c, i);
      }
    if (dw) dw[c] += float(sw);
    if (db) db[c] += float(sb);
  }
  if (!dinp) return;
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < G; g++) {
      double sum_gx = 0.0, sum_gx_xhat = 0.0;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
        for (int64_t i = 0; i < HW; i++) {
          const double gx = gy(n, c, i) * (w ? double(w[c]) : 1.0);
          sum_gx += gx;
          sum_gx_xhat += gx * xhat(n, c, i);
        }
      const double r = rstd[n * G + g], mean_gx = sum_gx / len, mean_gx_xhat = sum_gx_xhat / len;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
        for (int64_t i = 0; i < HW; i++) {
          const double gx = gy(n, c, i) * (w ? double(w[c]) : 1.0);
          const double dx = r * (gx - mean_gx - xhat(n, c, i) * mean_gx_xhat);
          float& o = dinp[(n * C + c) * HW + i];
          o = float((dinp_accumulate ? double(o) : 0.0) + dx);
        }
    }
}

// out[p, y, x] = inp[p, y / f, x / f] over (NC, f H, f W).
void ReferenceBackend::upsample_nearest_forward(float* out, const float* inp, int64_t NC, int64_t H, int64_t W,
                                                int64_t f) {
  for (int64_t p = 0; p < NC; p++)
    for (int64_t y = 0; y < f * H; y++)
      for (int64_t x = 0; x < f * W; x++) out[(p * f * H + y) * f * W + x] = inp[(p * H + y / f) * W + x / f];
}

// dinp[p, y, x] += sum of the f x f block dout[p, f y .. f y + f - 1, f x .. f x + f - 1].
void ReferenceBackend::upsample_nearest_backward(float* dinp, const float* dout, int64_t NC, int64_t H, int64_t W,
                                                 int64_t f) {
  for (int64_t p = 0; p < NC; p++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        double sum = 0.0;
        for (int64_t dy = 0; dy < f; dy++)
          for (int64_t dx = 0; dx < f; dx++) sum += double(dout[(p * f * H + f * y + dy) * f * W + f * x + dx]);
        dinp[(p * H + y) * W + x] += float(sum);
      }
}

// ---- Blocked16 versions: the plain formulas, reading and writing through blocked16_index ----

namespace {
void check_blocked(int64_t C, const char* op) {
  AIGC_CHECK(C % 16 == 0,
             std::string(op) + " (reference): the Blocked16 layout needs C a multiple of 16, got " + std::to_string(C));
}
}  // namespace

void ReferenceBackend::groupnorm_forward_blocked16(float* out, const float* inp, const float* w, const float* b,
                                                   int64_t N, int64_t C, int64_t HW, int64_t G, float eps, bool silu) {
  check_blocked(C, "groupnorm_forward_blocked16");
  auto at = [&](int64_t n, int64_t c, int64_t i) { return blocked16_index(n, c, i, C, HW); };
  groupnorm(out, nullptr, nullptr, inp, w, b, N, C, HW, G, eps, silu, at);
}

void ReferenceBackend::upsample_nearest_blocked16(float* out, const float* inp, int64_t N, int64_t C, int64_t H,
                                                  int64_t W, int64_t f) {
  check_blocked(C, "upsample_nearest_blocked16");
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t y = 0; y < f * H; y++)
        for (int64_t x = 0; x < f * W; x++)
          out[blocked16_index(n, c, y * f * W + x, C, f * H * f * W)] =
              inp[blocked16_index(n, c, (y / f) * W + x / f, C, H * W)];
}

// out[n, c, i] = x[n, c, i] + v[n, c], x and out blocked, v (N, C) plain.
void ReferenceBackend::add_channelwise_blocked16(float* out, const float* x, const float* v, int64_t N, int64_t C,
                                                 int64_t HW) {
  check_blocked(C, "add_channelwise_blocked16");
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < HW; i++) {
        const int64_t at = blocked16_index(n, c, i, C, HW);
        out[at] = x[at] + v[n * C + c];
      }
}

// out[b, j, i] (+)= inp[b, i, j] for inp (B, N, M), out (B, M, N).
void ReferenceBackend::transpose_last2(float* out, const float* inp, int64_t B, int64_t N, int64_t M, bool accumulate) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < N; i++)
      for (int64_t j = 0; j < M; j++) {
        float& o = out[(b * M + j) * N + i];
        o = accumulate ? o + inp[(b * N + i) * M + j] : inp[(b * N + i) * M + j];
      }
}

// out[b, i] = sin(t_b w_i), out[b, half + i] = cos(t_b w_i), w_i = max_period^(-i / (half - 1)).
void ReferenceBackend::timestep_embedding(float* out, const float* t, int64_t B, int64_t dim, float max_period) {
  const int64_t half = dim / 2;
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < half; i++) {
      const double freq = std::pow(double(max_period), -double(i) / double(half - 1));
      out[b * dim + i] = float(std::sin(double(t[b]) * freq));
      out[b * dim + half + i] = float(std::cos(double(t[b]) * freq));
    }
}

// out[n, i] (+)= a[n] x[n, i] + b[n] y[n, i] (no y term when y is null; b null counts as 0). out may alias x or y:
// each element is read before it is written.
void ReferenceBackend::combine_rows(float* out, const float* a, const float* x, const float* b, const float* y,
                                    int64_t N, int64_t S, bool accumulate) {
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < S; i++) {
      double v = double(a[n]) * double(x[n * S + i]);
      if (y) v += (b ? double(b[n]) : 0.0) * double(y[n * S + i]);
      out[n * S + i] = float((accumulate ? double(out[n * S + i]) : 0.0) + v);
    }
}

// sum_i (pred - target)^2.
double ReferenceBackend::mse_forward(const float* pred, const float* target, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; i++) {
    const double d = double(pred[i]) - double(target[i]);
    total += d * d;
  }
  return total;
}

// dpred += 2 scale (pred - target), dtarget -= the same (either may be null).
void ReferenceBackend::mse_backward(float* dpred, float* dtarget, const float* pred, const float* target, float scale,
                                    int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const double g = 2.0 * double(scale) * (double(pred[i]) - double(target[i]));
    if (dpred) dpred[i] += float(g);
    if (dtarget) dtarget[i] -= float(g);
  }
}

// min(max(x, lo), hi), written so that a NaN passes through (as in the CPU backend).
void ReferenceBackend::clamp(float* out, const float* inp, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) out[i] = inp[i] < lo ? lo : (inp[i] > hi ? hi : inp[i]);
}

// ema = decay ema + (1 - decay) p.
void ReferenceBackend::ema_update(float* ema, const float* p, int64_t n, float decay) {
  for (int64_t i = 0; i < n; i++) ema[i] = float(double(decay) * double(ema[i]) + (1.0 - double(decay)) * double(p[i]));
}

}  // namespace aigc::ref

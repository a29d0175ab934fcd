// Multi-head self-attention. Per (batch, head): S = q k^T / sqrt(HS), causal mask (text) or none (image
// positions), softmax -> P, out = P v.
// q, k, v are read straight out of the fused qkv rows (leading dimension 3C) and the output is written straight
// into its (B,T,C) slot, so no head split/merge copies exist. Training and prefill: each (b,h) pair runs
// single-threaded gemms; threads split the B*NH pairs, which write disjoint columns: no races. Decoding splits
// (row, KV group, chunk of keys) items instead and merges the chunks (attention_decode).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "aigc/half.h"
#include "cpu_backend.h"
#include "vec16.h"

namespace aigc::cpu {

// Softmax of row s[0..len) in place, zeroing s[len..width).
static inline void masked_softmax_row(float* s, int64_t len, int64_t width) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < len; j++) mx = s[j] > mx ? s[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < len; j++) {
    s[j] = exp_vec(s[j] - mx);
    sum += s[j];
  }
  float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < len; j++) s[j] *= inv;
  for (int64_t j = len; j < width; j++) s[j] = 0.0f;
}

// Attention in blocks of queries and keys with an online softmax: the T x T probability matrix never
// exists, causal blocks above the diagonal are skipped, and backward recomputes each block's probabilities from the
// saved row log-sum-exp (lse) instead of storing them.
constexpr int64_t kBlock = 128;

namespace {

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  cpu_backend().gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

struct HeadPtrs {  // one (batch, head) pair: q, k, v (and their gradients) inside the fused qkv rows
  const float *q, *k, *v;
  int64_t ld;  // 3C
};

// Keys of block j0 (width bk) that query row i may see.
inline int64_t visible(bool causal, int64_t i, int64_t j0, int64_t bk) {
  return causal ? std::min(bk, i - j0 + 1) : bk;
}

void head_forward(float* o, int64_t ldo, float* lse, const HeadPtrs& h, int64_t T, int64_t HS, float scale, bool causal,
                  float* S, float* acc, float* m, float* l) {
  for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
    const int64_t bq = std::min(kBlock, T - i0);
    for (int64_t r = 0; r < bq; r++) m[r] = -INFINITY, l[r] = 0.0f;
    std::fill(acc, acc + bq * HS, 0.0f);
    for (int64_t j0 = 0; j0 < (causal ? i0 + bq : T); j0 += kBlock) {  // causal: blocks at or left of the diagonal
      const int64_t bk = std::min(kBlock, T - j0);
      gemm(false, true, bq, bk, HS, scale, h.q + i0 * h.ld, h.ld, h.k + j0 * h.ld, h.ld, 0.0f, S, kBlock);
      for (int64_t r = 0; r < bq; r++) {
        float* row = S + r * kBlock;
        const int64_t vis = visible(causal, i0 + r, j0, bk);
        if (vis <= 0) {
          std::fill(row, row + bk, 0.0f);
          continue;
        }
        float mx = m[r];
#pragma omp simd reduction(max : mx)
        for (int64_t c = 0; c < vis; c++) mx = std::max(mx, row[c]);
        const float corr = m[r] == -INFINITY ? 0.0f : exp_vec(m[r] - mx);  // rescales what was summed so far
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < vis; c++) {
          row[c] = exp_vec(row[c] - mx);
          sum += row[c];
        }
        for (int64_t c = vis; c < bk; c++) row[c] = 0.0f;
        l[r] = l[r] * corr + sum;
        m[r] = mx;
        float* a = acc + r * HS;
#pragma omp simd
        for (int64_t d = 0; d < HS; d++) a[d] *= corr;
      }
      gemm(false, false, bq, HS, bk, 1.0f, S, kBlock, h.v + j0 * h.ld, h.ld, 1.0f, acc, HS);
    }
    for (int64_t r = 0; r < bq; r++) {
      const float inv = 1.0f / l[r];
      float* dst = o + (i0 + r) * ldo;
#pragma omp simd
      for (int64_t d = 0; d < HS; d++) dst[d] = acc[r * HS + d] * inv;
      lse[i0 + r] = m[r] + std::log(l[r]);
    }
  }
}

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C,
                                   int64_t NH, bool causal) {
  const int64_t HS = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
#pragma omp parallel
  {
    std::vector<float> S(size_t(kBlock * kBlock)), acc(size_t(kBlock * HS)), m(kBlock), l(kBlock);
    std::vector<float> lse_scratch(lse ? 0 : size_t(T));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      const int64_t b = bh / NH, hd = bh % NH;
      const float* q = qkv + b * T * C3 + hd * HS;
      HeadPtrs h{q, q + C, q + 2 * C, C3};
      head_forward(out + b * T * C + hd * HS, C, lse ? lse + bh * T : lse_scratch.data(), h, T, HS, scale, causal,
                   S.data(), acc.data(), m.data(), l.data());
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                    const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, bool causal) {
  const int64_t HS = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(float(HS));
#pragma omp parallel
  {
    std::vector<float> P(size_t(kBlock * kBlock)), dS(size_t(kBlock * kBlock)), D(static_cast<size_t>(T));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      const int64_t b = bh / NH, hd = bh % NH;
      const float* q = qkv + b * T * C3 + hd * HS;
      const float *k = q + C, *v = q + 2 * C;
      float* dq = dqkv + b * T * C3 + hd * HS;
      float *dk = dq + C, *dv = dq + 2 * C;
      const float* dO = dout + b * T * C + hd * HS;
      const float* O = out + b * T * C + hd * HS;
      const float* L = lse + bh * T;
      for (int64_t t = 0; t < T; t++) {  // D = rowsum(dO * O): the softmax backward's correction term
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < HS; d++) s += dO[t * C + d] * O[t * C + d];
        D[size_t(t)] = s;
      }
      for (int64_t j0 = 0; j0 < T; j0 += kBlock) {
        const int64_t bk = std::min(kBlock, T - j0);
        for (int64_t i0 = causal ? j0 : 0; i0 < T; i0 += kBlock) {  // causal: blocks at or below the diagonal
          const int64_t bq = std::min(kBlock, T - i0);
          gemm(false, true, bq, bk, HS, scale, q + i0 * C3, C3, k + j0 * C3, C3, 0.0f, P.data(), kBlock);
          for (int64_t r = 0; r < bq; r++) {  // P = exp(S - lse), masked
            float* row = P.data() + r * kBlock;
            const int64_t vis = visible(causal, i0 + r, j0, bk);
            const float lr = L[i0 + r];
#pragma omp simd
            for (int64_t c = 0; c < vis; c++) row[c] = exp_vec(row[c] - lr);
            for (int64_t c = std::max<int64_t>(vis, 0); c < bk; c++) row[c] = 0.0f;
          }
          gemm(true, false, bk, HS, bq, 1.0f, P.data(), kBlock, dO + i0 * C, C, 1.0f, dv + j0 * C3,
               C3);  // dV += P^T dO
          gemm(false, true, bq, bk, HS, 1.0f, dO + i0 * C, C, v + j0 * C3, C3, 0.0f, dS.data(), kBlock);  // dP = dO V^T
          for (int64_t r = 0; r < bq; r++) {  // dS = P * (dP - D)
            float* d = dS.data() + r * kBlock;
            const float* p = P.data() + r * kBlock;
            const float Dr = D[size_t(i0 + r)];
#pragma omp simd
            for (int64_t c = 0; c < bk; c++) d[c] = p[c] * (d[c] - Dr);
          }
          gemm(false, false, bq, HS, bk, scale, dS.data(), kBlock, k + j0 * C3, C3, 1.0f, dq + i0 * C3, C3);  // dQ
          gemm(true, false, bk, HS, bq, scale, dS.data(), kBlock, q + i0 * C3, C3, 1.0f, dk + j0 * C3, C3);   // dK
        }
      }
    }
  }
}

// n floats as halves, rounded to nearest even and saturating at +-65504 (io::f32_to_f16_saturated), 16 at a time
// where the CPU converts them: a prompt's keys and values are millions of values.
static void narrow_f16(const float* f, uint16_t* h, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 big = _mm512_set1_ps(65504.0f);
  const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(f + i);
    // |x| > 65504 (false for NaN, which converts to NaN): the largest half with x's sign.
    const __mmask16 over = _mm512_cmp_ps_mask(_mm512_abs_ps(x), big, _CMP_GT_OQ);
    const __m512 capped =
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big), _mm512_and_si512(_mm512_castps_si512(x), sign)));
    x = _mm512_mask_blend_ps(over, x, capped);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i),
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; i++) h[i] = io::f32_to_f16_saturated(f[i]);
}

// Copies head h's key and value out of a qkv row into cache rows kc, vc (HS values each, F32 or F16) at element at.
static inline void store_kv(const float* row, void* kc, void* vc, DType kv, int64_t at, int64_t h, int64_t HS,
                            int64_t C) {
  const float *k = row + C + h * HS, *v = row + 2 * C + h * HS;
  if (kv == DType::F16) {
    narrow_f16(k, static_cast<uint16_t*>(kc) + at, HS);
    narrow_f16(v, static_cast<uint16_t*>(vc) + at, HS);
  } else {
    std::copy(k, k + HS, static_cast<float*>(kc) + at);
    std::copy(v, v + HS, static_cast<float*>(vc) + at);
  }
}

// 16 F16 values as floats: the CPU's conversion (AVX-512, or F16C in two halves), else one at a time.
static inline v16f widen16(const uint16_t* p) {
#if defined(__AVX512F__)
  return v16f(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__F16C__)
  const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
               b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  v16f v;
  std::memcpy(&v, &a, sizeof a);
  std::memcpy(reinterpret_cast<char*>(&v) + sizeof a, &b, sizeof b);
  return v;
#else
  v16f v;
  for (int i = 0; i < 16; i++) v[i] = io::f16_to_f32(p[i]);
  return v;
#endif
}

// n F16 values as floats (a cache head's rows, for the products of attention_cached).
static void widen_f16(const uint16_t* h, float* f, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) store16(f + i, widen16(h + i));
  for (; i < n; i++) f[i] = io::f16_to_f32(h[i]);
}

void CpuBackend::attention_cached(float* out, const float* qkv, void* kcache, void* vcache, DType kv, int64_t B,
                                  int64_t T, int64_t C, int64_t NH, int64_t NKV, int64_t pos0, int64_t T_cap) {
  const int64_t HS = C / NH, C3 = 3 * C, L = pos0 + T, rep = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HS));
  // Append the new keys and values: cache layout (B, NKV, T_cap, HS), each group's from its first head.
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < B * T; bt++) {
    int64_t b = bt / T, t = bt % T;
    for (int64_t g = 0; g < NKV; g++)
      store_kv(qkv + bt * C3, kcache, vcache, kv, ((b * NKV + g) * T_cap + pos0 + t) * HS, g * rep, HS, C);
  }
  // A prompt into an empty cache is plain causal attention over the prompt: the blocked kernel. With an f16 cache
  // it reads the prompt's keys and values rounded as the cache holds them (as every later step reads them), from a
  // copy of qkv: B T 3C floats, not a T x T score matrix per thread.
  if (pos0 == 0 && kv == DType::F32) {
    attention_forward(out, nullptr, qkv, B, T, C, NH, true);
    return;
  }
  if (pos0 == 0) {
    std::vector<float> rounded(qkv, qkv + B * T * C3);
#pragma omp parallel
    {
      std::vector<uint16_t> half(size_t(2 * C));
#pragma omp for schedule(static)
      for (int64_t bt = 0; bt < B * T; bt++) {
        float* kv_row = rounded.data() + bt * C3 + C;  // k | v
        narrow_f16(kv_row, half.data(), 2 * C);
        widen_f16(half.data(), kv_row, 2 * C);
      }
    }
    attention_forward(out, nullptr, rounded.data(), B, T, C, NH, true);
    return;
  }
#pragma omp parallel
  {
    std::vector<float> S(size_t(T * L)), k32(kv == DType::F16 ? size_t(L * HS) : 0), v32(k32.size());
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * NH; bh++) {
      int64_t b = bh / NH, h = bh % NH;
      const float* q = qkv + b * T * C3 + h * HS;
      const int64_t head = (b * NKV + h / rep) * T_cap * HS;
      const float *kc = k32.data(), *vc = v32.data();
      if (kv == DType::F16) {
        widen_f16(static_cast<const uint16_t*>(kcache) + head, k32.data(), L * HS);
        widen_f16(static_cast<const uint16_t*>(vcache) + head, v32.data(), L * HS);
      } else {
        kc = static_cast<const float*>(kcache) + head, vc = static_cast<const float*>(vcache) + head;
      }
      gemm(false, true, T, L, HS, scale, q, C3, kc, HS, 0.0f, S.data(), L);
      for (int64_t i = 0; i < T; i++) masked_softmax_row(S.data() + i * L, pos0 + i + 1, L);
      gemm(false, false, T, HS, L, 1.0f, S.data(), L, vc, HS, 0.0f, out + b * T * C + h * HS, C);
    }
  }
}

namespace {

// Decode attention splits each row's keys into chunks of kKeyChunk; one work item is a (row, KV group, chunk), so a
// single sequence still spreads over every thread, and the chunks' partial softmaxes combine exactly afterwards.
constexpr int64_t kKeyChunk = 64;

// 16 cache values as floats: F32 as they are, F16 widened.
inline v16f load16_kv(const float* p) { return load16(p); }
inline v16f load16_kv(const uint16_t* p) { return widen16(p); }
inline float kv_at(const float* p) { return *p; }
inline float kv_at(const uint16_t* p) { return io::f16_to_f32(*p); }

// The scores' softmax over n keys in place (S becomes exp(S - m)): the largest score m and the sum l.
inline void softmax_chunk(float* S, int64_t n, float& m, float& l) {
  float mx = -INFINITY, sum = 0;
  for (int64_t t = 0; t < n; t++) mx = S[t] > mx ? S[t] : mx;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < n; t++) {
    S[t] = exp_vec(S[t] - mx);
    sum += S[t];
  }
  m = mx, l = sum;
}

// R heads of a KV group at once, head size 64: each key and value row is widened to floats once for all R heads,
// not once a head (grouped-query attention's heads share them). The dot products of 16 / R keys with the R heads
// fill the 16 sums of one hsum16. Per head, the same sums as decode_chunk's one-head loop.
template <int R, typename E>
void decode_heads64(const float* q, const E* kc, const E* vc, int64_t j0, int64_t j1, float scale, float* o, float* m,
                    float* l) {
  constexpr int64_t V = 4, KB = 16 / R;
  const int64_t n = j1 - j0;
  float S[R][kKeyChunk];
  v16f qv[R][V];
  for (int r = 0; r < R; r++)
    for (int64_t i = 0; i < V; i++) qv[r][i] = load16(q + r * 64 + 16 * i) * scale;
  auto widen_row = [](const E* p, v16f* x) {
    for (int64_t i = 0; i < V; i++) x[i] = load16_kv(p + 16 * i);
  };
  auto dot = [&](int r, const v16f* k) {
    v16f s = qv[r][0] * k[0];
    for (int64_t i = 1; i < V; i++) s += qv[r][i] * k[i];
    return s;
  };
  int64_t t = 0;
  for (; t + KB <= n; t += KB) {
    v16f a[16];
    for (int64_t u = 0; u < KB; u++) {
      v16f k[V];
      widen_row(kc + (j0 + t + u) * 64, k);
      for (int r = 0; r < R; r++) a[r * KB + u] = dot(r, k);
    }
    for (int64_t z = R * KB; z < 16; z++) a[z] = v16f{};
    float sums[16];
    store16(sums, hsum16(a));  // lane r KB + u: head r, key t + u
    for (int r = 0; r < R; r++)
      for (int64_t u = 0; u < KB; u++) S[r][t + u] = sums[r * KB + u];
  }
  for (; t < n; t++) {
    v16f k[V];
    widen_row(kc + (j0 + t) * 64, k);
    for (int r = 0; r < R; r++) S[r][t] = hsum(dot(r, k));
  }
  for (int r = 0; r < R; r++) softmax_chunk(S[r], n, m[r], l[r]);
  v16f acc[R][V] = {};
  for (t = 0; t < n; t++) {
    v16f v[V];
    widen_row(vc + (j0 + t) * 64, v);
    for (int r = 0; r < R; r++)
      for (int64_t i = 0; i < V; i++) acc[r][i] += S[r][t] * v[i];
  }
  for (int r = 0; r < R; r++)
    for (int64_t i = 0; i < V; i++) store16(o + r * 64 + 16 * i, acc[r][i]);
}

// The rep query heads of one KV group (q: rep rows of HS) against the group's keys and values [j0, j1): per head,
// the largest score m, the sum l of exp(score - m) and o = sum of exp(score - m) v (HS floats), unnormalized. Each
// key and value row is read from memory once for all rep heads (the later heads find the chunk in L1/L2). With the
// head size known at compile time (kHS: the common 64 and 128) the scores of 16 keys come from 16 vector sums
// reduced together (hsum16) and o stays in registers; kHS 0 takes any size with plain loops.
template <int64_t kHS, typename E>
void decode_chunk(const float* q, int64_t rep, const E* kc, const E* vc, int64_t j0, int64_t j1, int64_t hs,
                  float scale, float* o, float* m, float* l) {
  const int64_t HS = kHS ? kHS : hs, n = j1 - j0;
  if constexpr (kHS == 64) {
    if (rep > 1) {  // heads in threes (the registers hold three heads' queries), then two or one
      for (int64_t r = 0; r < rep;) {
        const int64_t R = std::min<int64_t>(3, rep - r);
        if (R == 3) decode_heads64<3>(q + r * 64, kc, vc, j0, j1, scale, o + r * 64, m + r, l + r);
        if (R == 2) decode_heads64<2>(q + r * 64, kc, vc, j0, j1, scale, o + r * 64, m + r, l + r);
        if (R == 1) decode_heads64<1>(q + r * 64, kc, vc, j0, j1, scale, o + r * 64, m + r, l + r);
        r += R;
      }
      return;
    }
  }
  float S[kKeyChunk];
  for (int64_t r = 0; r < rep; r++) {
    const float* qr = q + r * HS;
    if constexpr (kHS > 0) {
      constexpr int64_t V = kHS / 16;
      v16f qv[V];
      for (int64_t i = 0; i < V; i++) qv[i] = load16(qr + 16 * i) * scale;
      auto dot = [&](const E* k) {
        v16f s = qv[0] * load16_kv(k);
        for (int64_t i = 1; i < V; i++) s += qv[i] * load16_kv(k + 16 * i);
        return s;
      };
      int64_t t = 0;
      for (; t + 16 <= n; t += 16) {
        v16f a[16];
        for (int u = 0; u < 16; u++) a[u] = dot(kc + (j0 + t + u) * kHS);
        store16(S + t, hsum16(a));
      }
      for (; t < n; t++) S[t] = hsum(dot(kc + (j0 + t) * kHS));
    } else {
      for (int64_t t = 0; t < n; t++) {
        const E* k = kc + (j0 + t) * HS;
        float d = 0;
#pragma omp simd reduction(+ : d)
        for (int64_t i = 0; i < HS; i++) d += qr[i] * kv_at(k + i);
        S[t] = d * scale;
      }
    }
    softmax_chunk(S, n, m[r], l[r]);
    float* orow = o + r * HS;
    if constexpr (kHS > 0) {
      constexpr int64_t V = kHS / 16;
      v16f acc[V] = {};
      for (int64_t t = 0; t < n; t++) {
        const E* v = vc + (j0 + t) * kHS;
        for (int64_t i = 0; i < V; i++) acc[i] += S[t] * load16_kv(v + 16 * i);
      }
      for (int64_t i = 0; i < V; i++) store16(orow + 16 * i, acc[i]);
    } else {
      std::fill(orow, orow + HS, 0.0f);
      for (int64_t t = 0; t < n; t++) {
        const float p = S[t];
        const E* v = vc + (j0 + t) * HS;
#pragma omp simd
        for (int64_t i = 0; i < HS; i++) orow[i] += p * kv_at(v + i);
      }
    }
  }
}

}  // namespace

void CpuBackend::attention_decode(float* out, const float* qkv, void* kcache, void* vcache, DType kv,
                                  const int32_t* slot, const int32_t* pos, int64_t B, int64_t C, int64_t NH,
                                  int64_t NKV, int64_t T_cap) {
  const int64_t HS = C / NH, C3 = 3 * C, rep = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HS));
  // Store every row's new keys and values first (a group's heads all read them): B NKV HS floats each.
  for (int64_t b = 0; b < B; b++)
    for (int64_t g = 0; g < NKV; g++) {
      store_kv(qkv + b * C3, kcache, vcache, kv, ((int64_t(slot[b]) * NKV + g) * T_cap + pos[b]) * HS, g * rep, HS, C);
    }
  // Work items: row b's are first[b] .. first[b + 1], NKV groups x its chunks. Each item leaves rep heads' partial
  // (o, m, l); rows differ in length (each sequence is at its own position), the items hardly do.
  std::vector<int64_t> first(size_t(B) + 1, 0);
  auto chunks = [&](int64_t b) { return (int64_t(pos[b]) + kKeyChunk) / kKeyChunk; };  // of L = pos + 1 keys
  for (int64_t b = 0; b < B; b++) first[size_t(b) + 1] = first[size_t(b)] + NKV * chunks(b);
  const int64_t items = first[size_t(B)];
  static thread_local std::vector<float> po, pm, pl;  // the caller's; the threads below see them through pointers
  po.resize(size_t(items * rep * HS)), pm.resize(size_t(items * rep)), pl.resize(size_t(items * rep));
  float *o = po.data(), *m = pm.data(), *l = pl.data();
  auto items_of = [&](const auto* kc, const auto* vc) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(kc)>>;
    auto chunk = HS == 64 ? decode_chunk<64, E> : HS == 128 ? decode_chunk<128, E> : decode_chunk<0, E>;
    on_threads([&](int id, int nt) {
      for (int64_t it = items * id / nt; it < items * (id + 1) / nt; it++) {
        const int64_t b = std::upper_bound(first.begin(), first.end(), it) - first.begin() - 1;
        const int64_t nc = chunks(b), g = (it - first[size_t(b)]) / nc, c = (it - first[size_t(b)]) % nc;
        const int64_t at = (int64_t(slot[b]) * NKV + g) * T_cap * HS, j0 = c * kKeyChunk;
        chunk(qkv + b * C3 + g * rep * HS, rep, kc + at, vc + at, j0, std::min(int64_t(pos[b]) + 1, j0 + kKeyChunk), HS,
              scale, o + it * rep * HS, m + it * rep, l + it * rep);
      }
    });
  };
  if (kv == DType::F16)
    items_of(static_cast<const uint16_t*>(kcache), static_cast<const uint16_t*>(vcache));
  else
    items_of(static_cast<const float*>(kcache), static_cast<const float*>(vcache));
  // Combine each head's chunks: softmax over all keys = each chunk's exp(m_c - M) share of the total.
  parallel_range(B * NH, HS * (items / std::max<int64_t>(1, B * NKV)), [&](int64_t bh0, int64_t bh1) {
    for (int64_t bh = bh0; bh < bh1; bh++) {
      const int64_t b = bh / NH, h = bh % NH, nc = chunks(b), g = h / rep, r = h % rep;
      const int64_t it0 = first[size_t(b)] + g * nc;
      float M = -INFINITY, den = 0;
      for (int64_t c = 0; c < nc; c++) M = std::max(M, m[(it0 + c) * rep + r]);
      float* y = out + b * C + h * HS;
      std::fill(y, y + HS, 0.0f);
      for (int64_t c = 0; c < nc; c++) {
        const int64_t at = (it0 + c) * rep + r;
        const float w = std::exp(m[at] - M);
        den += w * l[at];
        const float* oc = o + at * HS;
#pragma omp simd
        for (int64_t i = 0; i < HS; i++) y[i] += w * oc[i];
      }
      const float inv = 1.0f / den;
#pragma omp simd
      for (int64_t i = 0; i < HS; i++) y[i] *= inv;
    }
  });
}

}  // namespace aigc::cpu

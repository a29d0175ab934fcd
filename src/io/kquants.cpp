// ggml's k-quants, Q4_K, Q5_K and Q6_K: super-blocks of 256 values along a row, each with sub-block scales that are
// themselves quantized against one or two fp16 numbers of the super-block. The byte layouts are ggml's (a GGUF
// file's tensor data); aigc reads them to float and writes them from float; gguf_gpt.cpp runs Q4_K as Q4_1
// (q4_k_to_q4_1) and the others as Q8_0.
//
//   Q4_K (144 bytes): f16 d, f16 dmin, scales[12] (8 scales and 8 mins of 6 bits), qs[128] (4-bit values)
//                     value = d * scale_j * q - dmin * min_j, sub-block j of 32 values, q in 0..15
//   Q5_K (176 bytes): as Q4_K with qh[32] (the fifth bit of each value) between scales and qs; q in 0..31
//   Q6_K (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
//                     value = d * scale_j * (q - 32), sub-block j of 16 values, q in 0..63
//
// Within a super-block the values go in chunks of 64 (Q4_K, Q5_K) or 128 (Q6_K): a byte's low nibble holds a value
// of the chunk's first half (or quarter), its high nibble the value 32 places later.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "aigc/error.h"
#include "aigc/gguf.h"
#include "aigc/half.h"

namespace aigc {

namespace {

constexpr int64_t kSuper = 256;

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return io::f16_to_f32(h);
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = io::f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Sub-block j's 6-bit scale and min in Q4_K / Q5_K's 12 bytes: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4
// in the nibbles of byte j + 4, with their top 2 bits in the spare top bits of bytes j - 4 and j.
void scale_min(const uint8_t* s, int j, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63, m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void put_scale_min(uint8_t* s, int j, int sc, int m) {
  if (j < 4) {
    s[j] = uint8_t((s[j] & 0xC0) | sc), s[j + 4] = uint8_t((s[j + 4] & 0xC0) | m);
  } else {
    s[j + 4] = uint8_t((sc & 0xF) | ((m & 0xF) << 4));
    s[j - 4] = uint8_t((s[j - 4] & 63) | ((sc >> 4) << 6));
    s[j] = uint8_t((s[j] & 63) | ((m >> 4) << 6));
  }
}

int nearest(float v) { return int(std::lrintf(v)); }

// ---- Q4_K and Q5_K: value = scale * q - min over 32 values, q in 0..qmax ----

// The scale and min of one sub-block (min >= 0, so that 0 is in range as ggml requires): the range's ends, then
// two least-squares refits of (scale, min) to the chosen levels.
void fit_affine(const float* x, int qmax, float& scale, float& min) {
  float lo = std::min(0.0f, *std::min_element(x, x + 32)), hi = *std::max_element(x, x + 32);
  scale = (hi - lo) / float(qmax), min = -lo;
  for (int iter = 0; iter < 2 && scale > 0; iter++) {
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    for (int i = 0; i < 32; i++) {
      const double q = std::clamp(nearest((x[i] + min) / scale), 0, qmax);
      sq += q, sx += x[i], sqq += q * q, sqx += q * x[i];
    }
    const double det = 32 * sqq - sq * sq;
    if (det <= 0) break;
    const double s = (32 * sqx - sq * sx) / det, b = (sq * s - sx) / 32;  // x ~ s q - b
    if (s <= 0 || b < 0) break;
    scale = float(s), min = float(b);
  }
}

template <int kBits>
void quantize_affine(const float* x, uint8_t* out) {
  constexpr int qmax = (1 << kBits) - 1;
  float scale[8], min[8];
  for (int j = 0; j < 8; j++) fit_affine(x + 32 * j, qmax, scale[j], min[j]);
  const float max_scale = *std::max_element(scale, scale + 8), max_min = *std::max_element(min, min + 8);
  uint8_t* s = out + 4;
  std::memset(s, 0, 12);
  put_f16(out, max_scale / 63), put_f16(out + 2, max_min / 63);
  const float d = f16_at(out), dmin = f16_at(out + 2);  // what a reader sees
  int q[kSuper];
  for (int j = 0; j < 8; j++) {
    const int sc = d > 0 ? std::clamp(nearest(scale[j] / d), 0, 63) : 0;
    const int m = dmin > 0 ? std::clamp(nearest(min[j] / dmin), 0, 63) : 0;
    put_scale_min(s, j, sc, m);
    const float step = d * float(sc), offset = dmin * float(m);
    for (int i = 0; i < 32; i++)
      q[32 * j + i] = step > 0 ? std::clamp(nearest((x[32 * j + i] + offset) / step), 0, qmax) : 0;
  }
  uint8_t* qh = out + 16;
  uint8_t* qs = kBits == 5 ? out + 48 : out + 16;
  if (kBits == 5) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; c++)
    for (int l = 0; l < 32; l++) {
      const int a = q[64 * c + l], b = q[64 * c + 32 + l];
      qs[32 * c + l] = uint8_t((a & 0xF) | ((b & 0xF) << 4));
      if (kBits == 5) qh[l] = uint8_t(qh[l] | ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
    }
}

template <int kBits>
void dequantize_affine(const uint8_t* in, float* y) {
  const float d = f16_at(in), dmin = f16_at(in + 2);
  const uint8_t* s = in + 4;
  const uint8_t* qh = in + 16;
  const uint8_t* qs = kBits == 5 ? in + 48 : in + 16;
  for (int c = 0; c < 4; c++)
    for (int half = 0; half < 2; half++) {
      int sc, m;
      scale_min(s, 2 * c + half, sc, m);
      const float step = d * float(sc), offset = dmin * float(m);
      for (int l = 0; l < 32; l++) {
        int q = half ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xF;
        if (kBits == 5) q |= ((qh[l] >> (2 * c + half)) & 1) << 4;
        y[64 * c + 32 * half + l] = step * float(q) - offset;
      }
    }
}

// ---- Q6_K: value = d * scale_j * (q - 32) over 16 values ----

void quantize_q6_k_block(const float* x, uint8_t* out) {
  // Each sub-block's scale maps its largest magnitude to -32 exactly (the side with the extra level).
  float scale[16];
  for (int j = 0; j < 16; j++) {
    float big = 0;
    for (int i = 0; i < 16; i++)
      if (std::fabs(x[16 * j + i]) > std::fabs(big)) big = x[16 * j + i];
    scale[j] = -big / 32;
  }
  float max_scale = 0;
  for (float v : scale) max_scale = std::max(max_scale, std::fabs(v));
  uint8_t *ql = out, *qh = out + 128, *sc = out + 192;
  put_f16(out + 208, max_scale / 127);
  const float d = f16_at(out + 208);
  int q[kSuper];
  for (int j = 0; j < 16; j++) {
    const int s = d > 0 ? std::clamp(nearest(scale[j] / d), -128, 127) : 0;
    sc[j] = uint8_t(int8_t(s));
    const float step = d * float(s);
    for (int i = 0; i < 16; i++)
      q[16 * j + i] = step != 0 ? std::clamp(nearest(x[16 * j + i] / step), -32, 31) + 32 : 32;
  }
  std::memset(qh, 0, 64);
  for (int h = 0; h < 2; h++)
    for (int l = 0; l < 32; l++) {
      const int* v = q + 128 * h + l;  // v[0], v[32], v[64], v[96]
      ql[64 * h + l] = uint8_t((v[0] & 0xF) | ((v[64] & 0xF) << 4));
      ql[64 * h + 32 + l] = uint8_t((v[32] & 0xF) | ((v[96] & 0xF) << 4));
      qh[32 * h + l] = uint8_t((v[0] >> 4) | ((v[32] >> 4) << 2) | ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
    }
}

void dequantize_q6_k_block(const uint8_t* in, float* y) {
  const uint8_t *ql = in, *qh = in + 128;
  const float d = f16_at(in + 208);
  for (int h = 0; h < 2; h++)
    for (int l = 0; l < 32; l++) {
      const uint8_t lo0 = ql[64 * h + l], lo1 = ql[64 * h + 32 + l], hi = qh[32 * h + l];
      const int q[4] = {(lo0 & 0xF) | ((hi & 3) << 4), (lo1 & 0xF) | (((hi >> 2) & 3) << 4),
                        (lo0 >> 4) | (((hi >> 4) & 3) << 4), (lo1 >> 4) | (((hi >> 6) & 3) << 4)};
      for (int k = 0; k < 4; k++) {
        const int i = 128 * h + 32 * k + l;
        y[i] = d * float(int8_t(in[192 + i / 16])) * float(q[k] - 32);
      }
    }
}

using BlockFn = void (*)(const float*, uint8_t*);
using UnblockFn = void (*)(const uint8_t*, float*);

struct KQuant {
  int64_t bytes;
  BlockFn quantize;
  UnblockFn dequantize;
};

KQuant kquant(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_K:
      return {144, quantize_affine<4>, dequantize_affine<4>};
    case GgmlType::Q5_K:
      return {176, quantize_affine<5>, dequantize_affine<5>};
    case GgmlType::Q6_K:
      return {210, quantize_q6_k_block, dequantize_q6_k_block};
    default:
      fail(std::string("not a k-quant: ") + ggml_type_info(uint32_t(type))->name);
  }
}

}  // namespace

std::string q4_k_to_q4_1(const uint8_t* src, int64_t n) {
  AIGC_CHECK(n % kSuper == 0, "q4_k_to_q4_1: the row length must be a multiple of 256");
  std::string out(size_t(n / 32 * 20), '\0');
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  for (int64_t b = 0; b < n / kSuper; b++) {
    const uint8_t* in = src + b * 144;
    const float d = f16_at(in), dmin = f16_at(in + 2);
    for (int j = 0; j < 8; j++) {  // sub-block j: bytes 32 (j / 2) .. of qs, low nibbles for even j
      int sc, m;
      scale_min(in + 4, j, sc, m);
      uint8_t* blk = o + (b * 8 + j) * 20;
      put_f16(blk, d * float(sc)), put_f16(blk + 2, -dmin * float(m));
      const uint8_t* qs = in + 16 + 32 * (j / 2);
      auto q = [&](int l) { return j % 2 ? qs[l] >> 4 : qs[l] & 0xF; };
      for (int l = 0; l < 16; l++) blk[4 + l] = uint8_t(q(l) | (q(l + 16) << 4));
    }
  }
  return out;
}

bool runs_converted(GgmlType type) { return is_kquant(type) || type == GgmlType::Q5_0 || type == GgmlType::Q5_1; }

bool is_kquant(GgmlType type) { return type == GgmlType::Q4_K || type == GgmlType::Q5_K || type == GgmlType::Q6_K; }

std::string quantize_kquant(GgmlType type, const float* x, int64_t n) {
  const KQuant k = kquant(type);
  AIGC_CHECK(n % kSuper == 0,
             std::string(ggml_type_info(uint32_t(type))->name) + ": the row length must be a multiple of 256");
  std::string out(size_t(n / kSuper * k.bytes), '\0');
  for (int64_t b = 0; b < n / kSuper; b++)
    k.quantize(x + b * kSuper, reinterpret_cast<uint8_t*>(out.data()) + b * k.bytes);
  return out;
}

void dequantize_kquant(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const KQuant k = kquant(type);
  AIGC_CHECK(n % kSuper == 0,
             std::string(ggml_type_info(uint32_t(type))->name) + ": the row length must be a multiple of 256");
  for (int64_t b = 0; b < n / kSuper; b++) k.dequantize(src + b * k.bytes, dst + b * kSuper);
}

}  // namespace aigc

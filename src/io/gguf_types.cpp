// GGUF's value kinds and tensor types: names, sizes, the metadata value constructors, and the conversions between
// float and the tensor types (see aigc/gguf.h; the block formats are aigc/quant.h).
#include <cstring>

#include "aigc/error.h"
#include "aigc/gguf.h"
#include "aigc/half.h"
#include "aigc/quant.h"

namespace aigc {

// ---- types ----

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::F32:
      return GgmlTypeInfo{"f32", 1, 4};
    case GgmlType::F16:
      return GgmlTypeInfo{"f16", 1, 2};
    case GgmlType::BF16:
      return GgmlTypeInfo{"bf16", 1, 2};
    case GgmlType::Q8_0:
      return GgmlTypeInfo{"q8_0", 32, 34};
    case GgmlType::Q4_0:
      return GgmlTypeInfo{"q4_0", 32, 18};
    case GgmlType::Q4_1:
      return GgmlTypeInfo{"q4_1", 32, 20};
    case GgmlType::Q5_0:
      return GgmlTypeInfo{"q5_0", 32, 22};
    case GgmlType::Q5_1:
      return GgmlTypeInfo{"q5_1", 32, 24};
    case GgmlType::Q4_K:
      return GgmlTypeInfo{"q4_k", 256, 144};
    case GgmlType::Q5_K:
      return GgmlTypeInfo{"q5_k", 256, 176};
    case GgmlType::Q6_K:
      return GgmlTypeInfo{"q6_k", 256, 210};
  }
  return std::nullopt;
}

std::optional<GgmlType> ggml_type_from_name(const std::string& name) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                     GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    if (name == ggml_type_info(uint32_t(t))->name) return t;
  return std::nullopt;
}

const char* gguf_kind_name(GgufKind k) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return uint32_t(k) <= 12 ? names[uint32_t(k)] : "unknown";
}

GgufValue GgufValue::of_u32(uint32_t v) {
  GgufValue x;
  x.kind = GgufKind::U32;
  x.u = v;
  return x;
}
GgufValue GgufValue::of_i32(int32_t v) {
  GgufValue x;
  x.kind = GgufKind::I32;
  x.i = v;
  return x;
}
GgufValue GgufValue::of_u64(uint64_t v) {
  GgufValue x;
  x.kind = GgufKind::U64;
  x.u = v;
  return x;
}
GgufValue GgufValue::of_f32(float v) {
  GgufValue x;
  x.kind = GgufKind::F32;
  x.f = v;
  return x;
}
GgufValue GgufValue::of_bool(bool v) {
  GgufValue x;
  x.kind = GgufKind::BOOL;
  x.u = v;
  return x;
}
GgufValue GgufValue::of_string(std::string v) {
  GgufValue x;
  x.kind = GgufKind::STRING;
  x.s = std::move(v);
  return x;
}

GgufValue GgufValue::of_strings(const std::vector<std::string>& v) {
  GgufValue x;
  x.kind = GgufKind::ARRAY, x.elem = GgufKind::STRING;
  for (const std::string& s : v) x.arr.push_back(of_string(s));
  return x;
}
GgufValue GgufValue::of_i32s(const std::vector<int32_t>& v) {
  GgufValue x;
  x.kind = GgufKind::ARRAY, x.elem = GgufKind::I32;
  for (int32_t i : v) x.arr.push_back(of_i32(i));
  return x;
}
GgufValue GgufValue::of_f32s(const std::vector<float>& v) {
  GgufValue x;
  x.kind = GgufKind::ARRAY, x.elem = GgufKind::F32;
  for (float f : v) x.arr.push_back(of_f32(f));
  return x;
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---- quantization ----

namespace {

// Q5_0 and Q5_1: Q4_0 and Q4_1 with a fifth bit for each value, bit j of qh (little-endian) for value j. Q5_0:
// value = d (q - 16), d = m / -16 for the value m of largest magnitude; Q5_1: value = d q + min, d = range / 31.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "ggml's block sizes");

template <typename Block>
void pack5(Block& b, const int* q) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; j++) {
    b.qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= uint32_t(q[j] >> 4) << j | uint32_t(q[j + 16] >> 4) << (j + 16);
  }
  std::memcpy(b.qh, &qh, 4);
}
template <typename Block>
void unpack5(const Block& b, int* q) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; j++)
    q[j] = (b.qs[j] & 0xF) | int((qh >> j) & 1) << 4, q[j + 16] = (b.qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
}

void quantize_block(const float* x, BlockQ5_0& b) {
  float amax = 0, m = 0;
  for (int j = 0; j < 32; j++)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), m = x[j];
  const float d = m / -16.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d);
  int q[32];
  for (int j = 0; j < 32; j++) q[j] = floor_to(x[j] * id + 16.5f, 31);
  pack5(b, q);
}
void quantize_block(const float* x, BlockQ5_1& b) {
  const float lo = *std::min_element(x, x + 32), hi = *std::max_element(x, x + 32);
  const float d = (hi - lo) / 31.0f, id = d ? 1.0f / d : 0.0f;
  b.d = io::f32_to_f16(d), b.m = io::f32_to_f16(lo);
  int q[32];
  for (int j = 0; j < 32; j++) q[j] = floor_to((x[j] - lo) * id + 0.5f, 31);
  pack5(b, q);
}
void dequantize_block(const BlockQ5_0& b, float* y) {
  int q[32];
  unpack5(b, q);
  for (int j = 0; j < 32; j++) y[j] = io::f16_to_f32(b.d) * float(q[j] - 16);
}
void dequantize_block(const BlockQ5_1& b, float* y) {
  int q[32];
  unpack5(b, q);
  for (int j = 0; j < 32; j++) y[j] = io::f16_to_f32(b.d) * float(q[j]) + io::f16_to_f32(b.m);
}

template <typename Block>
std::string quantize_blocks(const float* x, int64_t n, const char* name) {
  AIGC_CHECK(n % kQuantBlock == 0, std::string(name) + ": the row length must be a multiple of 32");
  std::string out(size_t(n / kQuantBlock) * sizeof(Block), '\0');
  Block* o = reinterpret_cast<Block*>(out.data());
  for (int64_t b = 0; b < n / kQuantBlock; b++) quantize_block(x + b * kQuantBlock, o[b]);
  return out;
}

}  // namespace

std::string quantize_q8_0(const float* x, int64_t n) { return quantize_blocks<BlockQ8_0>(x, n, "q8_0"); }
std::string quantize_q4_0(const float* x, int64_t n) { return quantize_blocks<BlockQ4_0>(x, n, "q4_0"); }

void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = type == GgmlType::F16 ? io::f16_to_f32(h) : io::bf16_to_f32(h);
      }
      return;
    case GgmlType::Q8_0:
      dequantize_blocks<BlockQ8_0>(src, dst, n);
      return;
    case GgmlType::Q4_0:
      dequantize_blocks<BlockQ4_0>(src, dst, n);
      return;
    case GgmlType::Q4_1:
      dequantize_blocks<BlockQ4_1>(src, dst, n);
      return;
    case GgmlType::Q5_0:
      dequantize_blocks<BlockQ5_0>(src, dst, n);
      return;
    case GgmlType::Q5_1:
      dequantize_blocks<BlockQ5_1>(src, dst, n);
      return;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      dequantize_kquant(type, src, dst, n);
      return;
  }
  fail("dequantize: unsupported ggml type " + std::to_string(uint32_t(type)));
}

std::string convert_from_f32(GgmlType type, const float* x, int64_t n) {
  switch (type) {
    case GgmlType::F32:
      return std::string(reinterpret_cast<const char*>(x), size_t(n) * 4);
    case GgmlType::F16:
    case GgmlType::BF16: {
      std::string out(size_t(n) * 2, '\0');
      for (int64_t i = 0; i < n; i++) {
        const uint16_t h = type == GgmlType::F16 ? io::f32_to_f16(x[i]) : io::f32_to_bf16(x[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      return out;
    }
    case GgmlType::Q8_0:
      return quantize_q8_0(x, n);
    case GgmlType::Q4_0:
      return quantize_q4_0(x, n);
    case GgmlType::Q4_1:
      return quantize_blocks<BlockQ4_1>(x, n, "q4_1");
    case GgmlType::Q5_0:
      return quantize_blocks<BlockQ5_0>(x, n, "q5_0");
    case GgmlType::Q5_1:
      return quantize_blocks<BlockQ5_1>(x, n, "q5_1");
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return quantize_kquant(type, x, n);
  }
  fail("convert_from_f32: unsupported ggml type " + std::to_string(uint32_t(type)));
}

}  // namespace aigc

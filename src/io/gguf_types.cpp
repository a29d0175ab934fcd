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
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
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

template <typename Block>
std::string quantize_blocks(const float* x, int64_t n, const char* name) {
  AIGC_CHECK(n % kQuantBlock == 0, std::string(name) + ": the row length must be a multiple of 32");
  std::string out(size_t(n / kQuantBlock) * sizeof(Block), '\0');
  Block* o = reinterpret_cast<Block*>(out.data());
  for (int64_t b = 0; b < n / kQuantBlock; b++) quantize_block(x + b * kQuantBlock, o[b]);
  return out;
}

template <typename Block>
void dequantize_blocks(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQuantBlock; b++) {
    Block blk;
    std::memcpy(&blk, src + b * sizeof(Block), sizeof(Block));  // the file gives no alignment
    dequantize_block(blk, dst + b * kQuantBlock);
  }
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
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return quantize_kquant(type, x, n);
  }
  fail("convert_from_f32: unsupported ggml type " + std::to_string(uint32_t(type)));
}

}  // namespace aigc

// GGUF (ggml's single-file model format, version 3): a header with typed key/value metadata and tensor infos,
// then the tensor data, each tensor at an aligned offset.
//
//   "GGUF" u32 version | u64 tensor_count | u64 kv_count | kv_count x (string key, u32 type, value)
//   | tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset)
//   | padding to general.alignment (default 32) | data
//
// Little-endian throughout; a string is a u64 byte count and the bytes. dims[0] is the fastest-varying
// dimension, so a PyTorch (out, in) matrix is stored with dims {in, out} and the same bytes.
// The reader treats files as untrusted, like the safetensors reader: every count, size and offset is validated
// before use, and any violation is an aigc::Error naming the file and the field.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aigc/file_util.h"

namespace aigc {

// The tensor element types aigc reads and writes, with ggml's ids. Quantized types pack blocks of elements along
// dims[0]: Q8_0 (32 int8 and an fp16 scale), Q4_0 (32 4-bit values and an fp16 scale), Q4_1 (Q4_0 with an fp16
// minimum), Q5_0 / Q5_1 (the same with a fifth bit per value; llama.cpp's fallback for k-quant rows that are not
// whole super-blocks), and the k-quants Q4_K,
// Q5_K, Q6_K (super-blocks of 256 values with quantized sub-block scales; src/io/kquants.cpp).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30
};
struct GgmlTypeInfo {
  const char* name;     // "f32", "q8_0", ...
  int64_t block_elems;  // elements per block (1 for plain types)
  int64_t block_bytes;  // bytes per block
};
// nullopt for a type id aigc does not know (the error then names the id).
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type);
// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"
std::optional<GgmlType> ggml_type_from_name(const std::string& name);
bool is_kquant(GgmlType type);
// Types aigc reads and writes but runs as another (k-quants, Q5_0, Q5_1): their matrices are converted on load.
bool runs_converted(GgmlType type);

// A metadata value. Arrays hold elements of one type (arrays of arrays are allowed, up to 4 deep).
enum class GgufKind : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12
};
struct GgufValue {
  GgufKind kind = GgufKind::U32;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // floats
  std::string s;
  GgufKind elem = GgufKind::U32;  // for arrays
  std::vector<GgufValue> arr;

  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_u64(uint64_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(const std::vector<std::string>& v);
  static GgufValue of_i32s(const std::vector<int32_t>& v);
  static GgufValue of_f32s(const std::vector<float>& v);
};
const char* gguf_kind_name(GgufKind k);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is contiguous
  GgmlType type;
  uint64_t offset;  // within the data section, a multiple of the alignment
  uint64_t nbytes;
  int64_t numel() const;
};

class GgufReader {
 public:
  // Maps the file (FileBytes) and validates it: afterwards every tensor's bytes are known to lie inside the data.
  explicit GgufReader(const std::string& path);
  // The same checks on bytes in memory; `name` stands in for the path in errors.
  static GgufReader from_bytes(const std::string& name, std::string bytes);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order
  const GgufTensorInfo* find(const std::string& name) const;               // nullptr if absent
  const uint8_t* data(const GgufTensorInfo& t) const;                      // t.nbytes bytes
  void drop(const GgufTensorInfo& t) const;  // t's bytes are read (FileBytes::drop): out of this process's memory
  void drop(const GgufTensorInfo& t, size_t from, size_t to) const;  // the same for its bytes [from, to)

  // Typed metadata lookups; errors name the file, the key and what was found. Integers of any width convert
  // when the value fits.
  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  uint64_t get_uint(const std::string& key) const;
  std::optional<uint64_t> get_uint_opt(const std::string& key) const;
  float get_float(const std::string& key) const;
  std::optional<float> get_float_opt(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::optional<std::string> get_string_opt(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;
  std::vector<float> get_floats(const std::string& key) const;  // finite
  std::optional<bool> get_bool_opt(const std::string& key) const;

  // A tensor as float (every type above is converted), after checking its dims are exactly
  // expected_dims (ggml order). Errors name the file and tensor.
  void read_f32_into(const std::string& name, float* dst, const std::vector<int64_t>& expected_dims) const;

 private:
  GgufReader(std::string name, FileBytes bytes);
  void parse();
  const GgufValue& require(const std::string& key) const;
  std::string path_;
  FileBytes bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  size_t data_start_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// Builds a GGUF file: metadata in insertion order, then tensors laid out in the order added, each padded to the
// alignment. Tensor bytes are borrowed (they must outlive write()). Writes atomically.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue v);
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims, const void* data,
                  size_t nbytes);
  // Copies the bytes (for tensors converted on the fly).
  void add_tensor_owned(const std::string& name, GgmlType type, const std::vector<int64_t>& dims, std::string bytes);
  void write(const std::string& path) const;

 private:
  struct T {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    const void* data;
    size_t nbytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<T> tensors_;
  std::vector<std::unique_ptr<std::string>> owned_;
  uint64_t alignment_ = 32;
};

// Quantization in ggml's block layouts (reference, round-to-nearest): n a multiple of the block size.
std::string quantize_q8_0(const float* x, int64_t n);
std::string quantize_q4_0(const float* x, int64_t n);
// The k-quants from and to float (n a multiple of 256): aigc's own quantizer (each sub-block's range, refitted by
// least squares), in ggml's layouts.
std::string quantize_kquant(GgmlType type, const float* x, int64_t n);
void dequantize_kquant(GgmlType type, const uint8_t* src, float* dst, int64_t n);
// A Q4_K matrix's blocks as Q4_1 blocks (n a multiple of 256): each 32-value sub-block is one, with its scale and
// minimum rounded to halves. aigc runs Q4_K matrices so (4.5 bits a weight become 5).
std::string q4_k_to_q4_1(const uint8_t* src, int64_t n);
// Any supported type's bytes (n elements) to float.
void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n);
// float to any supported type's bytes.
std::string convert_from_f32(GgmlType type, const float* x, int64_t n);

}  // namespace aigc

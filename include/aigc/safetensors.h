// safetensors (the Hugging Face tensor file format): an 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data.
// The reader treats files as untrusted: every size and offset is validated before use, following the rules
// of the reference implementation, and any violation is an aigc::Error naming the file and the field.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aigc {

// Every dtype name the reference implementation knows. F4 and F6_* pack elements into bits, so a tensor of
// them must cover a whole number of bytes.
// clang-format off
enum class StDType {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};
// clang-format on
size_t st_dtype_bits(StDType dt);
size_t st_dtype_size(StDType dt);  // bytes per element; aigc::Error for the sub-byte dtypes (F4, F6_*)
const char* st_dtype_name(StDType dt);
std::optional<StDType> st_dtype_from_name(std::string_view name);

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte offsets within the data section
  uint64_t nbytes() const { return end - begin; }
};

class SafeTensorsReader {
 public:
  // Reads the whole file and validates it; afterwards every offset is known to lie inside the data.
  explicit SafeTensorsReader(const std::string& path);
  // The same checks on a file's bytes already in memory (a checkpoint compiled into the binary); `name` stands in
  // for the path in error messages.
  static SafeTensorsReader from_bytes(const std::string& name, std::string bytes);
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }  // sorted by offset
  const StTensorInfo* find(const std::string& name) const;               // nullptr if absent
  const uint8_t* data(const StTensorInfo& t) const;                      // t.nbytes() bytes; no alignment is promised
  // Converts F32 / F16 / BF16 to float. Errors name the file and tensor.
  std::vector<float> read_f32(const std::string& name) const;
  // As read_f32, into dst (numel floats), after checking the shape is exactly expected_shape.
  void read_f32_into(const std::string& name, float* dst, const std::vector<int64_t>& expected_shape) const;

 private:
  SafeTensorsReader(std::string name, std::string bytes);
  const StTensorInfo& require(const std::string& name) const;
  void parse_header(std::string_view header);

  std::string path_, bytes_;
  size_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

struct StTensorOut {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;  // must equal product(shape) * element size
};

// Writes atomically (temp file + fsync + rename), streaming each tensor's bytes straight from `data`;
// tensors are laid out contiguously in the given order. The header is padded with spaces to a multiple of
// 8 bytes so the data section starts 8-byte aligned. Names must be unique, valid UTF-8 and not
// "__metadata__".
void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace aigc

// safetensors (the Hugging Face tensor file format): an 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data.
// The reader treats files as untrusted: every size and offset is validated before use, as the reference
// implementation does, and any violation is an aigc::Error naming the file and the field.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace aigc {

enum class StDType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };
size_t st_dtype_size(StDType dt);
const char* st_dtype_name(StDType dt);

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte offsets within the data section
};

class SafeTensorsReader {
 public:
  explicit SafeTensorsReader(const std::string& path);
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }  // sorted by offset
  const StTensorInfo* find(const std::string& name) const;
  const uint8_t* data(const StTensorInfo& t) const;
  // Converts F32 / F16 / BF16 to float. Errors name the file and tensor.
  std::vector<float> read_f32(const std::string& name) const;
  void read_f32_into(const std::string& name, float* dst, const std::vector<int64_t>& expected_shape) const;

 private:
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
  size_t nbytes;
};

// Writes atomically (temp file + fsync + rename); tensors are laid out in the given order.
void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace aigc

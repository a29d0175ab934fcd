#include "aigc/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "aigc/error.h"
#include "aigc/file_util.h"

namespace aigc {

namespace {

struct DTypeEntry {
  StDType dt;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {StDType::BOOL, "BOOL", 1}, {StDType::U8, "U8", 1},    {StDType::I8, "I8", 1},     {StDType::I16, "I16", 2},
    {StDType::U16, "U16", 2},   {StDType::F16, "F16", 2},  {StDType::BF16, "BF16", 2}, {StDType::I32, "I32", 4},
    {StDType::U32, "U32", 4},   {StDType::F32, "F32", 4},  {StDType::F64, "F64", 8},   {StDType::I64, "I64", 8},
    {StDType::U64, "U64", 8},
};

// The reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeader = 100'000'000;

float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

size_t st_dtype_size(StDType dt) {
  for (const auto& e : kDTypes)
    if (e.dt == dt) return e.size;
  return 0;
}

const char* st_dtype_name(StDType dt) {
  for (const auto& e : kDTypes)
    if (e.dt == dt) return e.name;
  return "?";
}

SafeTensorsReader::SafeTensorsReader(const std::string& path) : path_(path) {
  bytes_ = read_file(path);
  const std::string where = "safetensors file '" + path + "': ";
  AIGC_CHECK(bytes_.size() >= 8, where + "only " + std::to_string(bytes_.size()) + " bytes; a file needs at least 8");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | uint8_t(bytes_[size_t(i)]);
  AIGC_CHECK(n <= kMaxHeader, where + "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  AIGC_CHECK(n <= bytes_.size() - 8, where + "header length " + std::to_string(n) + " runs past the end of the " +
                                         std::to_string(bytes_.size()) + "-byte file (truncated?)");
  std::string_view header(bytes_.data() + 8, size_t(n));
  AIGC_CHECK(!header.empty() && header[0] == '{', where + "the header must be a JSON object starting with '{'");
  data_start_ = 8 + size_t(n);

  // nlohmann::json keeps the last of duplicate keys; a parser callback sees every top-level key first.
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
      if (depth == 1 && ev == nlohmann::json::parse_event_t::key && !seen.insert(v.get<std::string>()).second)
        duplicate = v.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail(where + "the header is not valid JSON: " + e.what());
  }
  AIGC_CHECK(duplicate.empty(), where + "duplicate tensor name \"" + duplicate + "\"");
  AIGC_CHECK(j.is_object(), where + "the header must be a JSON object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      AIGC_CHECK(v.is_object(), where + "__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        AIGC_CHECK(m.value().is_string(), where + "__metadata__ value for \"" + m.key() + "\" is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = where + "tensor \"" + name + "\": ";
    AIGC_CHECK(v.is_object(), tw + "entry must be an object");
    for (auto f = v.begin(); f != v.end(); ++f)
      AIGC_CHECK(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets",
                 tw + "unexpected field \"" + f.key() + "\"");
    AIGC_CHECK(v.contains("dtype") && v["dtype"].is_string(), tw + "missing string field \"dtype\"");
    AIGC_CHECK(v.contains("shape") && v["shape"].is_array(), tw + "missing array field \"shape\"");
    AIGC_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
               tw + "\"data_offsets\" must be [begin, end]");
    StTensorInfo t;
    t.name = name;
    std::string dt = v["dtype"].get<std::string>();
    auto e = std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const DTypeEntry& d) { return dt == d.name; });
    AIGC_CHECK(e != std::end(kDTypes), tw + "unknown dtype \"" + dt + "\"");
    t.dtype = e->dt;
    uint64_t nbytes = e->size;
    for (const auto& d : v["shape"]) {
      AIGC_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                 tw + "shape entries must be non-negative integers, got " + d.dump());
      uint64_t dim = d.get<uint64_t>();
      AIGC_CHECK(dim <= uint64_t(INT64_MAX), tw + "dimension too large");
      AIGC_CHECK(!__builtin_mul_overflow(nbytes, dim, &nbytes), tw + "shape " + v["shape"].dump() + " overflows");
      t.shape.push_back(int64_t(dim));
    }
    for (const auto& o : v["data_offsets"])
      AIGC_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                 tw + "data_offsets must be non-negative integers");
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    AIGC_CHECK(t.begin <= t.end, tw + "data_offsets begin > end");
    AIGC_CHECK(t.end - t.begin == nbytes, tw + "data_offsets span " + std::to_string(t.end - t.begin) +
                                              " bytes but dtype " + dt + " x shape " + v["shape"].dump() + " needs " +
                                              std::to_string(nbytes));
    tensors_.push_back(std::move(t));
  }
  // Offsets must tile the data section exactly: contiguous from 0, no gaps, no overlaps, nothing after.
  std::sort(tensors_.begin(), tensors_.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const StTensorInfo& t : tensors_) {
    AIGC_CHECK(t.begin == expect, where + "tensor \"" + t.name + "\" starts at byte " + std::to_string(t.begin) +
                                      ", expected " + std::to_string(expect) +
                                      (t.begin < expect ? " (overlaps the previous tensor)" : " (gap in the data)"));
    expect = t.end;
  }
  uint64_t data_size = bytes_.size() - data_start_;
  AIGC_CHECK(expect == data_size, where + "tensors cover " + std::to_string(expect) + " bytes but the data section has " +
                                      std::to_string(data_size) + (expect > data_size ? " (truncated file?)" : ""));
  for (size_t i = 0; i < tensors_.size(); i++) index_[tensors_[i].name] = i;
}

const StTensorInfo* SafeTensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* SafeTensorsReader::data(const StTensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_start_ + t.begin;
}

std::vector<float> SafeTensorsReader::read_f32(const std::string& name) const {
  const StTensorInfo* t = find(name);
  AIGC_CHECK(t, "safetensors file '" + path_ + "': no tensor \"" + name + "\"");
  const uint8_t* p = data(*t);
  size_t n = size_t(t->end - t->begin) / st_dtype_size(t->dtype);
  std::vector<float> out(n);
  switch (t->dtype) {
    case StDType::F32:
      if (n) std::memcpy(out.data(), p, n * 4);
      break;
    case StDType::BF16:
    case StDType::F16:
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = t->dtype == StDType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      break;
    default:
      fail("safetensors file '" + path_ + "': tensor \"" + name + "\" has dtype " + st_dtype_name(t->dtype) +
           "; expected F32, F16 or BF16");
  }
  return out;
}

void SafeTensorsReader::read_f32_into(const std::string& name, float* dst,
                                      const std::vector<int64_t>& expected_shape) const {
  const StTensorInfo* t = find(name);
  AIGC_CHECK(t, "safetensors file '" + path_ + "': no tensor \"" + name + "\"");
  auto str = [](const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? "," : "") + std::to_string(s[i]);
    return r + "]";
  };
  AIGC_CHECK(t->shape == expected_shape, "safetensors file '" + path_ + "': tensor \"" + name + "\" has shape " +
                                             str(t->shape) + ", expected " + str(expected_shape));
  std::vector<float> v = read_f32(name);
  if (!v.empty()) std::memcpy(dst, v.data(), v.size() * 4);
}

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const StTensorOut& t : tensors) {
    AIGC_CHECK(t.name != "__metadata__" && names.insert(t.name).second,
               "write_safetensors: invalid or duplicate tensor name \"" + t.name + "\"");
    uint64_t n = st_dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= uint64_t(d);
    AIGC_CHECK(n == t.nbytes, "write_safetensors: tensor \"" + t.name + "\" has " + std::to_string(t.nbytes) +
                                  " bytes but its shape needs " + std::to_string(n));
    h[t.name] = {{"dtype", st_dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(header.data(), header.size());
  for (const StTensorOut& t : tensors) w.write(t.data, t.nbytes);
  w.commit();
}

}  // namespace aigc

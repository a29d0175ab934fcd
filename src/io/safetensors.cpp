#include "aigc/safetensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/half.h"
#include "aigc/json_brief.h"
#include "aigc/tensor.h"  // shape_str

namespace aigc {

// The format is little-endian and the readers below memcpy raw bytes into host numbers.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using Json = nlohmann::json;

struct DTypeEntry {
  StDType dt;
  const char* name;
  unsigned bits;
};
constexpr DTypeEntry kDTypes[] = {
    {StDType::BOOL, "BOOL", 8},       {StDType::F4, "F4", 4},           {StDType::F6_E2M3, "F6_E2M3", 6},
    {StDType::F6_E3M2, "F6_E3M2", 6}, {StDType::U8, "U8", 8},           {StDType::I8, "I8", 8},
    {StDType::F8_E5M2, "F8_E5M2", 8}, {StDType::F8_E4M3, "F8_E4M3", 8}, {StDType::F8_E8M0, "F8_E8M0", 8},
    {StDType::I16, "I16", 16},        {StDType::U16, "U16", 16},        {StDType::F16, "F16", 16},
    {StDType::BF16, "BF16", 16},      {StDType::I32, "I32", 32},        {StDType::U32, "U32", 32},
    {StDType::F32, "F32", 32},        {StDType::C64, "C64", 64},        {StDType::F64, "F64", 64},
    {StDType::I64, "I64", 64},        {StDType::U64, "U64", 64},
};

const DTypeEntry& entry_of(StDType dt) {
  for (const DTypeEntry& e : kDTypes)
    if (e.dt == dt) return e;
  fail("safetensors: invalid StDType value " + std::to_string(int(dt)));
}

// The reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeader = 100'000'000;
// A valid header nests 3 deep (object > tensor entry > shape array). The cap is looser so that slightly
// wrong entries still get a precise message, yet a header of a million '[' cannot exhaust memory.
constexpr int kMaxDepth = 16;

// Bytes taken by `shape` elements of `dt`, or an explanation of why there is no such number.
// Dimensions are uint64 here so the reader can check them before narrowing to int64.
std::optional<uint64_t> tensor_bytes(StDType dt, const std::vector<uint64_t>& shape, std::string* why) {
  uint64_t bits = entry_of(dt).bits;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(bits, d, &bits)) {
      *why = "the size of the shape overflows 64 bits";
      return std::nullopt;
    }
  }
  if (bits % 8 != 0) {
    *why = "the tensor does not fill a whole number of bytes (" + std::to_string(bits) + " bits)";
    return std::nullopt;
  }
  return bits / 8;
}

// Parser messages quote the offending bytes, which may be invalid UTF-8 or megabytes long: escape and cap them
// so the error stays printable (and loggable as JSON).
std::string printable(std::string_view s, size_t max_len = 400) {
  std::string r;
  for (unsigned char c : s.substr(0, max_len)) {
    if (c >= 0x20 && c < 0x7f) {
      r += char(c);
    } else {
      static const char hex[] = "0123456789abcdef";
      r += "\\x";
      r += hex[c >> 4];
      r += hex[c & 15];
    }
  }
  if (s.size() > max_len) r += "...";
  return r;
}

// A JSON number that is an integer >= 0 (serde's usize rules: no floats, no negatives, no strings).
bool json_u64(const Json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = uint64_t(j.get<int64_t>());
    return true;
  }
  return false;
}

// Parses the header. nlohmann::json silently keeps the last of duplicate keys, so a parser callback watches
// every object's keys and refuses repeats (two tensors with one name would make the file ambiguous).
Json parse_json_header(std::string_view header, const std::string& where) {
  std::vector<std::set<std::string>> keys;  // one set per open object or array (arrays leave theirs empty)
  std::string top_key;                      // the tensor (or "__metadata__") being parsed, for messages
  auto cb = [&](int, Json::parse_event_t ev, Json& v) {
    switch (ev) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (keys.size() >= size_t(kMaxDepth))
          fail(where + "the header nests deeper than " + std::to_string(kMaxDepth) + " levels");
        keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        keys.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& k = v.get_ref<const std::string&>();
        if (keys.size() == 1) top_key = k;
        if (!keys.back().insert(k).second) {
          if (keys.size() == 1) fail(where + "duplicate tensor name \"" + k + "\" in the header");
          fail(where + "\"" + top_key + "\": duplicate key \"" + k + "\"");
        }
        break;
      }
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of input, which would accept "{}\0garbage". A raw NUL is
  // never valid JSON (not even inside a string), so refuse it up front as serde_json would.
  size_t nul = header.find('\0');
  if (nul != std::string_view::npos)
    fail(where + "the header is not valid UTF-8 JSON: NUL byte at header offset " + std::to_string(nul));
  try {
    return Json::parse(header.data(), header.data() + header.size(), cb);
  } catch (const Json::exception& e) {
    // nlohmann rejects ill-formed UTF-8 inside strings; bytes >= 0x80 outside strings are syntax errors.
    fail(where + "the header is not valid UTF-8 JSON: " + printable(e.what()));
  }
}

StTensorInfo parse_entry(const std::string& name, const Json& v, const std::string& where) {
  const std::string tw = where + "tensor \"" + name + "\": ";
  AIGC_CHECK(v.is_object(),
             tw + "the entry must be an object with dtype, shape and data_offsets, got " + std::string(v.type_name()));
  for (auto f = v.begin(); f != v.end(); ++f)
    AIGC_CHECK(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets",
               tw + "unexpected field \"" + f.key() + "\"");
  for (const char* k : {"dtype", "shape", "data_offsets"})
    AIGC_CHECK(v.contains(k), tw + "missing field \"" + k + "\"");
  const Json& jd = v["dtype"];
  const Json& js = v["shape"];
  const Json& jo = v["data_offsets"];

  StTensorInfo t;
  t.name = name;
  AIGC_CHECK(jd.is_string(), tw + "\"dtype\" must be a string, got " + json_brief(jd));
  std::optional<StDType> dt = st_dtype_from_name(jd.get_ref<const std::string&>());
  AIGC_CHECK(dt.has_value(), tw + "unknown dtype " + jd.dump());
  t.dtype = *dt;

  AIGC_CHECK(js.is_array(), tw + "\"shape\" must be an array of non-negative integers, got " + json_brief(js));
  std::vector<uint64_t> dims;
  for (const Json& d : js) {
    uint64_t u = 0;
    AIGC_CHECK(json_u64(d, &u), tw + "\"shape\" entries must be non-negative integers, got " + json_brief(d));
    AIGC_CHECK(u <= uint64_t(INT64_MAX), tw + "dimension " + d.dump() + " is too large");
    dims.push_back(u);
    t.shape.push_back(int64_t(u));
  }

  AIGC_CHECK(jo.is_array() && jo.size() == 2, tw + "\"data_offsets\" must be [begin, end], got " + json_brief(jo));
  AIGC_CHECK(json_u64(jo[0], &t.begin) && json_u64(jo[1], &t.end),
             tw + "\"data_offsets\" must be non-negative integers, got " + json_brief(jo));
  AIGC_CHECK(t.begin <= t.end, tw + "\"data_offsets\" " + jo.dump() + " has begin > end");

  std::string why;
  std::optional<uint64_t> need = tensor_bytes(t.dtype, dims, &why);
  AIGC_CHECK(need.has_value(), tw + "dtype " + jd.get<std::string>() + " x shape " + js.dump() + ": " + why);
  AIGC_CHECK(t.nbytes() == *need, tw + "\"data_offsets\" " + jo.dump() + " span " + std::to_string(t.nbytes()) +
                                      " bytes, but dtype " + jd.get<std::string>() + " x shape " + js.dump() +
                                      " needs " + std::to_string(*need));
  return t;
}

}  // namespace

size_t st_dtype_bits(StDType dt) { return entry_of(dt).bits; }

size_t st_dtype_size(StDType dt) {
  const DTypeEntry& e = entry_of(dt);
  AIGC_CHECK(e.bits % 8 == 0, std::string("dtype ") + e.name + " packs elements into bits; it has no byte size");
  return e.bits / 8;
}

const char* st_dtype_name(StDType dt) { return entry_of(dt).name; }

std::optional<StDType> st_dtype_from_name(std::string_view name) {
  for (const DTypeEntry& e : kDTypes)
    if (name == e.name) return e.dt;
  return std::nullopt;
}

SafeTensorsReader::SafeTensorsReader(const std::string& path) : SafeTensorsReader(path, read_file(path)) {}

SafeTensorsReader SafeTensorsReader::from_bytes(const std::string& name, std::string bytes) {
  return SafeTensorsReader(name, std::move(bytes));
}

SafeTensorsReader::SafeTensorsReader(std::string name, std::string bytes)
    : path_(std::move(name)), bytes_(std::move(bytes)) {
  const std::string where = "safetensors file '" + path_ + "': ";
  const uint64_t size = bytes_.size();
  AIGC_CHECK(size >= 8, where + "the file is " + std::to_string(size) +
                            " bytes, too short for the 8-byte header length (truncated?)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | uint8_t(bytes_[size_t(i)]);
  AIGC_CHECK(n <= kMaxHeader,
             where + "header length " + std::to_string(n) + " exceeds the 100 MB limit (not a safetensors file?)");
  AIGC_CHECK(n <= size - 8, where + "header length " + std::to_string(n) + " runs past the end of the " +
                                std::to_string(size) + "-byte file (truncated?)");
  data_start_ = 8 + size_t(n);
  parse_header(std::string_view(bytes_.data() + 8, size_t(n)));
}

void SafeTensorsReader::parse_header(std::string_view header) {
  const std::string where = "safetensors file '" + path_ + "': ";
  AIGC_CHECK(!header.empty() && header[0] == '{', where + "the header must be a JSON object starting with '{'");
  Json j = parse_json_header(header, where);
  AIGC_CHECK(j.is_object(), where + "the header must be a JSON object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const Json& v = it.value();
    if (it.key() == "__metadata__") {
      if (v.is_null()) continue;  // the reference reads this as an absent Option
      AIGC_CHECK(v.is_object(), where + "\"__metadata__\" must be an object of strings, got " + v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        AIGC_CHECK(m.value().is_string(),
                   where + "\"__metadata__\" value for \"" + m.key() + "\" is not a string: " + json_brief(m.value()));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    tensors_.push_back(parse_entry(it.key(), v, where));
  }

  // Offsets must tile the data section exactly: contiguous from 0, no gaps, no overlaps, nothing after.
  std::sort(tensors_.begin(), tensors_.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const uint64_t data_size = bytes_.size() - data_start_;
  uint64_t expect = 0;
  const StTensorInfo* prev = nullptr;
  for (const StTensorInfo& t : tensors_) {
    const std::string tw = where + "tensor \"" + t.name + "\": ";
    if (t.begin != expect) {
      std::string after = prev ? "the previous tensor \"" + prev->name + "\" ends at byte " + std::to_string(expect)
                               : "the first tensor must start at byte 0";
      fail(tw + "data_offsets start at byte " + std::to_string(t.begin) + ", but " + after +
           (t.begin < expect ? " (overlapping data_offsets)" : " (gap in data_offsets)"));
    }
    AIGC_CHECK(t.end <= data_size, tw + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                       "] run past the end of the " + std::to_string(data_size) +
                                       "-byte data section (out of range; truncated file?)");
    expect = t.end;
    prev = &t;
  }
  AIGC_CHECK(expect == data_size, where + std::to_string(data_size - expect) +
                                      " trailing bytes after the last tensor's data (the file length must be exact)");
  for (size_t i = 0; i < tensors_.size(); i++) index_[tensors_[i].name] = i;
}

const StTensorInfo* SafeTensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensorInfo& SafeTensorsReader::require(const std::string& name) const {
  const StTensorInfo* t = find(name);
  AIGC_CHECK(t, "safetensors file '" + path_ + "': no tensor \"" + name + "\"");
  return *t;
}

const uint8_t* SafeTensorsReader::data(const StTensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_start_ + t.begin;
}

std::vector<float> SafeTensorsReader::read_f32(const std::string& name) const {
  const StTensorInfo& t = require(name);
  std::vector<float> out;
  if (t.dtype == StDType::F32 || t.dtype == StDType::F16 || t.dtype == StDType::BF16)
    out.resize(size_t(t.nbytes() / st_dtype_size(t.dtype)));
  read_f32_into(name, out.data(), t.shape);
  return out;
}

void SafeTensorsReader::read_f32_into(const std::string& name, float* dst,
                                      const std::vector<int64_t>& expected_shape) const {
  const StTensorInfo& t = require(name);
  const std::string tw = "safetensors file '" + path_ + "': tensor \"" + name + "\" ";
  AIGC_CHECK(t.shape == expected_shape,
             tw + "has shape " + shape_str(t.shape) + ", expected " + shape_str(expected_shape));
  const uint8_t* p = data(t);
  switch (t.dtype) {
    case StDType::F32:
      if (t.nbytes()) std::memcpy(dst, p, size_t(t.nbytes()));
      return;
    case StDType::F16:
    case StDType::BF16: {
      const size_t n = size_t(t.nbytes() / 2);
      const bool bf = t.dtype == StDType::BF16;
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);  // the data section need not be 2-byte aligned
        dst[i] = bf ? io::bf16_to_f32(h) : io::f16_to_f32(h);
      }
      return;
    }
    default:
      fail(tw + "has dtype " + st_dtype_name(t.dtype) + "; expected F32, F16 or BF16");
  }
}

void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string where = "write_safetensors '" + path + "': ";
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string_view> names;
  for (const StTensorOut& t : tensors) {
    const std::string tw = where + "tensor \"" + t.name + "\": ";
    AIGC_CHECK(t.name != "__metadata__", tw + "the name is reserved for metadata");
    AIGC_CHECK(names.insert(t.name).second, tw + "duplicate tensor name");
    std::vector<uint64_t> dims;
    for (int64_t d : t.shape) {
      AIGC_CHECK(d >= 0, tw + "negative dimension in shape " + shape_str(t.shape));
      dims.push_back(uint64_t(d));
    }
    std::string why;
    std::optional<uint64_t> need = tensor_bytes(t.dtype, dims, &why);
    AIGC_CHECK(need.has_value(), tw + "shape " + shape_str(t.shape) + ": " + why);
    AIGC_CHECK(*need == t.nbytes, tw + "nbytes is " + std::to_string(t.nbytes) + " but " + st_dtype_name(t.dtype) +
                                      " x shape " + shape_str(t.shape) + " needs " + std::to_string(*need));
    AIGC_CHECK(t.data || t.nbytes == 0, tw + "data is null");
    uint64_t end = 0;
    AIGC_CHECK(!__builtin_add_overflow(offset, *need, &end), tw + "total data size overflows 64 bits");
    h[t.name] = {{"dtype", st_dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(where + "tensor names and metadata must be valid UTF-8: " + e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  AIGC_CHECK(header.size() <= kMaxHeader, where + "the header would be " + std::to_string(header.size()) +
                                              " bytes, over the 100 MB limit readers enforce");
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  AtomicFileWriter w(path);
  w.write(len, 8);
  w.write(header.data(), header.size());
  for (const StTensorOut& t : tensors) w.write(t.data, t.nbytes);
  w.commit();
}

}  // namespace aigc

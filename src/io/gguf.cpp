// GGUF reading and writing (see aigc/gguf.h). The reader never trusts a count: each one is checked against the
// bytes left before anything is allocated, so a 100-byte file cannot ask for gigabytes.
#include "aigc/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aigc/error.h"
#include "aigc/file_util.h"

namespace aigc {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;              // ggml's limit
constexpr int kMaxArrayDepth = 4;
constexpr uint64_t kMaxAlignment = 1u << 20;

// Names and keys quoted in errors: control and non-ASCII bytes escaped, long ones cut.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 80; i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + (s.size() > 80 ? "...\"" : "\"");
}

// Smallest encoded size of one value of a kind (for bounding counts before allocating).
uint64_t min_size(GgufKind k) {
  switch (k) {
    case GgufKind::U8:
    case GgufKind::I8:
    case GgufKind::BOOL:
      return 1;
    case GgufKind::U16:
    case GgufKind::I16:
      return 2;
    case GgufKind::U32:
    case GgufKind::I32:
    case GgufKind::F32:
      return 4;
    case GgufKind::U64:
    case GgufKind::I64:
    case GgufKind::F64:
    case GgufKind::STRING:
      return 8;
    case GgufKind::ARRAY:
      return 12;
  }
  return 1;
}

bool known_kind(uint32_t k) { return k <= 12; }

class Cursor {
 public:
  Cursor(const std::string& file, std::string_view bytes) : file_(file), b_(bytes) {}
  size_t pos() const { return p_; }
  uint64_t left() const { return b_.size() - p_; }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string str(const std::string& what) {
    uint64_t n = read<uint64_t>(what + " (length)");
    need(n, what);
    std::string s(b_.substr(p_, size_t(n)));
    p_ += size_t(n);
    return s;
  }
  void need(uint64_t n, const std::string& what) {
    if (n > left())
      fail(file_ + ": " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(p_) +
           " but only " + std::to_string(left()) + " are left");
  }
  [[noreturn]] void bad(const std::string& what) { fail(file_ + ": " + what); }

 private:
  const std::string& file_;
  std::string_view b_;
  size_t p_ = 0;
};

GgufValue read_value(Cursor& c, GgufKind kind, const std::string& where, int depth) {
  GgufValue v;
  v.kind = kind;
  switch (kind) {
    case GgufKind::U8:
      v.u = c.read<uint8_t>(where);
      break;
    case GgufKind::I8:
      v.i = c.read<int8_t>(where);
      break;
    case GgufKind::U16:
      v.u = c.read<uint16_t>(where);
      break;
    case GgufKind::I16:
      v.i = c.read<int16_t>(where);
      break;
    case GgufKind::U32:
      v.u = c.read<uint32_t>(where);
      break;
    case GgufKind::I32:
      v.i = c.read<int32_t>(where);
      break;
    case GgufKind::U64:
      v.u = c.read<uint64_t>(where);
      break;
    case GgufKind::I64:
      v.i = c.read<int64_t>(where);
      break;
    case GgufKind::F32:
      v.f = c.read<float>(where);
      break;
    case GgufKind::F64:
      v.f = c.read<double>(where);
      break;
    case GgufKind::BOOL: {
      uint8_t b = c.read<uint8_t>(where);
      if (b > 1) c.bad(where + ": a bool must be 0 or 1, got " + std::to_string(b));
      v.u = b;
      break;
    }
    case GgufKind::STRING:
      v.s = c.str(where);
      break;
    case GgufKind::ARRAY: {
      if (depth >= kMaxArrayDepth) c.bad(where + ": arrays nest deeper than " + std::to_string(kMaxArrayDepth));
      uint32_t et = c.read<uint32_t>(where + " (element type)");
      if (!known_kind(et)) c.bad(where + ": unknown array element type " + std::to_string(et));
      v.elem = GgufKind(et);
      uint64_t n = c.read<uint64_t>(where + " (element count)");
      // Each element takes at least min_size bytes: a count the file cannot hold is refused before allocating.
      if (n > c.left() / min_size(v.elem))
        c.bad(where + ": array of " + std::to_string(n) + " " + gguf_kind_name(v.elem) +
              " elements cannot fit in the " + std::to_string(c.left()) + " bytes left");
      v.arr.reserve(size_t(n));
      for (uint64_t i = 0; i < n; i++)
        v.arr.push_back(read_value(c, v.elem, where + "[" + std::to_string(i) + "]", depth + 1));
      break;
    }
  }
  return v;
}

void put_bytes(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <typename T>
void put(std::string& out, T v) {
  put_bytes(out, &v, sizeof v);
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

void write_value(std::string& out, const GgufValue& v) {
  switch (v.kind) {
    case GgufKind::U8:
      put<uint8_t>(out, uint8_t(v.u));
      break;
    case GgufKind::I8:
      put<int8_t>(out, int8_t(v.i));
      break;
    case GgufKind::U16:
      put<uint16_t>(out, uint16_t(v.u));
      break;
    case GgufKind::I16:
      put<int16_t>(out, int16_t(v.i));
      break;
    case GgufKind::U32:
      put<uint32_t>(out, uint32_t(v.u));
      break;
    case GgufKind::I32:
      put<int32_t>(out, int32_t(v.i));
      break;
    case GgufKind::U64:
      put<uint64_t>(out, v.u);
      break;
    case GgufKind::I64:
      put<int64_t>(out, v.i);
      break;
    case GgufKind::F32:
      put<float>(out, float(v.f));
      break;
    case GgufKind::F64:
      put<double>(out, v.f);
      break;
    case GgufKind::BOOL:
      put<uint8_t>(out, v.u ? 1 : 0);
      break;
    case GgufKind::STRING:
      put_string(out, v.s);
      break;
    case GgufKind::ARRAY:
      put<uint32_t>(out, uint32_t(v.elem));
      put<uint64_t>(out, v.arr.size());
      for (const GgufValue& e : v.arr) {
        AIGC_CHECK(e.kind == v.elem, "GGUF writer: an array of " + std::string(gguf_kind_name(v.elem)) + " holds a " +
                                         gguf_kind_name(e.kind));
        write_value(out, e);
      }
      break;
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---- reader ----

GgufReader::GgufReader(const std::string& path) : GgufReader(path, FileBytes::map(path)) {}

GgufReader GgufReader::from_bytes(const std::string& name, std::string bytes) {
  return GgufReader(name, FileBytes(std::move(bytes)));
}

GgufReader::GgufReader(std::string name, FileBytes bytes) : path_(std::move(name)), bytes_(std::move(bytes)) {
  parse();
}

void GgufReader::parse() {
  const std::string_view b = bytes_.view();
  Cursor c(path_, b);
  if (b.size() < 4 || c.read<uint32_t>("magic") != kMagic) c.bad("not a GGUF file (it does not start with \"GGUF\")");
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3)
    c.bad("GGUF version " + std::to_string(version_) + " is not supported (versions 2 and 3 are)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 8 + 4 + 8.
  if (n_kv > c.left() / 13) c.bad("metadata count " + std::to_string(n_kv) + " cannot fit in the file");
  if (n_tensors > c.left() / 32) c.bad("tensor count " + std::to_string(n_tensors) + " cannot fit in the file");

  for (uint64_t i = 0; i < n_kv; i++) {
    const std::string where = "metadata entry " + std::to_string(i);
    std::string key = c.str(where + " key");
    if (key.empty()) c.bad(where + ": the key is empty");
    const std::string kw = "metadata " + quoted(key);
    uint32_t kind = c.read<uint32_t>(kw + " (type)");
    if (!known_kind(kind)) c.bad(kw + ": unknown value type " + std::to_string(kind));
    GgufValue v = read_value(c, GgufKind(kind), kw, 0);
    if (!kv_.emplace(key, std::move(v)).second) c.bad(kw + " appears twice");
  }
  if (auto a = kv_.find("general.alignment"); a != kv_.end()) {
    if (a->second.kind != GgufKind::U32)
      c.bad("metadata \"general.alignment\" must be a uint32, got " + std::string(gguf_kind_name(a->second.kind)));
    alignment_ = a->second.u;
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) || alignment_ > kMaxAlignment)
      c.bad("metadata \"general.alignment\" must be a power of two up to 2^20, got " + std::to_string(alignment_));
  }

  for (uint64_t i = 0; i < n_tensors; i++) {
    GgufTensorInfo t;
    t.name = c.str("tensor info " + std::to_string(i) + " name");
    const std::string tw = "tensor " + quoted(t.name);
    if (t.name.empty()) c.bad("tensor info " + std::to_string(i) + ": the name is empty");
    uint32_t nd = c.read<uint32_t>(tw + " (dimension count)");
    if (nd < 1 || nd > kMaxDims) c.bad(tw + ": " + std::to_string(nd) + " dimensions (1 to 4 are allowed)");
    // At most 2^60 values, so that their bytes (up to 4 a value, f32's) fit in 64 bits: an f32 tensor of 2^62
    // values had 0 bytes, passed every span check, and went on as 2^62 values.
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
      uint64_t n = c.read<uint64_t>(tw + " (dimension " + std::to_string(d) + ")");
      if (n == 0 || n > (uint64_t(1) << 60) / numel)
        c.bad(tw + ": dimension " + std::to_string(d) + " = " + std::to_string(n) +
              (n == 0 ? " is empty" : " makes the element count overflow"));
      numel *= n;
      t.dims.push_back(int64_t(n));
    }
    uint32_t type = c.read<uint32_t>(tw + " (type)");
    std::optional<GgmlTypeInfo> info = ggml_type_info(type);
    if (!info)
      c.bad(tw + ": ggml type " + std::to_string(type) +
            " is not supported (f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k are)");
    t.type = GgmlType(type);
    if (t.dims[0] % info->block_elems)
      c.bad(tw + ": its first dimension " + std::to_string(t.dims[0]) + " is not a multiple of " + info->name +
            "'s block of " + std::to_string(info->block_elems));
    t.nbytes = numel / uint64_t(info->block_elems) * uint64_t(info->block_bytes);
    t.offset = c.read<uint64_t>(tw + " (offset)");
    if (t.offset % alignment_)
      c.bad(tw + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
            std::to_string(alignment_));
    if (!index_.emplace(t.name, tensors_.size()).second) c.bad(tw + " appears twice");
    tensors_.push_back(std::move(t));
  }

  data_start_ = size_t(align_up(c.pos(), alignment_));
  const uint64_t data_size = b.size() >= data_start_ ? b.size() - data_start_ : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail(path_ + ": tensor " + quoted(t.name) + " spans bytes [" + std::to_string(t.offset) + ", " +
           std::to_string(t.offset + t.nbytes) + ") of the data section, which holds " + std::to_string(data_size) +
           (b.size() < data_start_ ? " (the file ends before its data section)" : "") + " (truncated file?)");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); i++)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      fail(path_ + ": tensors " + quoted(by_offset[i - 1]->name) + " and " + quoted(by_offset[i]->name) + " overlap");
}

const GgufTensorInfo* GgufReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* GgufReader::data(const GgufTensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(bytes_.view().data()) + data_start_ + t.offset;
}

void GgufReader::drop(const GgufTensorInfo& t) const { bytes_.drop(data_start_ + t.offset, t.nbytes); }
void GgufReader::drop(const GgufTensorInfo& t, size_t from, size_t to) const {
  to = std::min<size_t>(to, t.nbytes);
  if (from < to) bytes_.drop(data_start_ + t.offset + from, to - from);
}

const GgufValue& GgufReader::require(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) fail(path_ + ": the metadata key \"" + key + "\" is missing");
  return it->second;
}

std::optional<uint64_t> GgufReader::get_uint_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_uint(key);
}

uint64_t GgufReader::get_uint(const std::string& key) const {
  const GgufValue& v = require(key);
  switch (v.kind) {
    case GgufKind::U8:
    case GgufKind::U16:
    case GgufKind::U32:
    case GgufKind::U64:
      return v.u;
    case GgufKind::I8:
    case GgufKind::I16:
    case GgufKind::I32:
    case GgufKind::I64:
      if (v.i >= 0) return uint64_t(v.i);
      fail(path_ + ": metadata \"" + key + "\" must not be negative, got " + std::to_string(v.i));
    default:
      fail(path_ + ": metadata \"" + key + "\" must be an integer, got a " + gguf_kind_name(v.kind));
  }
}

std::optional<float> GgufReader::get_float_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_float(key);
}

float GgufReader::get_float(const std::string& key) const {
  const GgufValue& v = require(key);
  AIGC_CHECK(v.kind == GgufKind::F32 || v.kind == GgufKind::F64,
             path_ + ": metadata \"" + key + "\" must be a float, got a " + gguf_kind_name(v.kind));
  AIGC_CHECK(std::isfinite(v.f), path_ + ": metadata \"" + key + "\" is not finite");
  return float(v.f);
}

std::optional<std::string> GgufReader::get_string_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_string(key);
}

std::string GgufReader::get_string(const std::string& key) const {
  const GgufValue& v = require(key);
  AIGC_CHECK(v.kind == GgufKind::STRING,
             path_ + ": metadata \"" + key + "\" must be a string, got a " + gguf_kind_name(v.kind));
  return v.s;
}

std::vector<std::string> GgufReader::get_strings(const std::string& key) const {
  const GgufValue& v = require(key);
  AIGC_CHECK(v.kind == GgufKind::ARRAY && v.elem == GgufKind::STRING,
             path_ + ": metadata \"" + key + "\" must be an array of strings");
  std::vector<std::string> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) out.push_back(e.s);
  return out;
}

std::vector<float> GgufReader::get_floats(const std::string& key) const {
  const GgufValue& v = require(key);
  AIGC_CHECK(v.kind == GgufKind::ARRAY && (v.elem == GgufKind::F32 || v.elem == GgufKind::F64),
             path_ + ": metadata \"" + key + "\" must be an array of floats");
  std::vector<float> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) {
    AIGC_CHECK(std::isfinite(e.f), path_ + ": metadata \"" + key + "\" holds a value that is not finite");
    out.push_back(float(e.f));
  }
  return out;
}

std::optional<bool> GgufReader::get_bool_opt(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const GgufValue& v = require(key);
  AIGC_CHECK(v.kind == GgufKind::BOOL,
             path_ + ": metadata \"" + key + "\" must be a bool, got a " + gguf_kind_name(v.kind));
  return v.u != 0;
}

std::vector<int64_t> GgufReader::get_ints(const std::string& key) const {
  const GgufValue& v = require(key);
  const bool ok = v.kind == GgufKind::ARRAY && v.elem != GgufKind::ARRAY && v.elem != GgufKind::STRING &&
                  v.elem != GgufKind::F32 && v.elem != GgufKind::F64 && v.elem != GgufKind::BOOL;
  AIGC_CHECK(ok, path_ + ": metadata \"" + key + "\" must be an array of integers");
  std::vector<int64_t> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) {
    AIGC_CHECK(e.kind != GgufKind::U64 || e.u <= uint64_t(INT64_MAX),
               path_ + ": metadata \"" + key + "\" holds a value out of range");
    out.push_back(e.kind == GgufKind::U8 || e.kind == GgufKind::U16 || e.kind == GgufKind::U32 ||
                          e.kind == GgufKind::U64
                      ? int64_t(e.u)
                      : e.i);
  }
  return out;
}

void GgufReader::read_f32_into(const std::string& name, float* dst, const std::vector<int64_t>& expected) const {
  const GgufTensorInfo* t = find(name);
  AIGC_CHECK(t, path_ + ": tensor \"" + name + "\" is missing");
  auto dims_str = [](const std::vector<int64_t>& d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  };
  AIGC_CHECK(t->dims == expected, path_ + ": tensor \"" + name + "\" has dims " + dims_str(t->dims) + ", expected " +
                                      dims_str(expected) + " (ggml order: the contiguous dimension first)");
  dequantize(t->type, data(*t), dst, t->numel());
}

// ---- writer ----

void GgufWriter::set(const std::string& key, GgufValue v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  if (key == "general.alignment") alignment_ = v.u;
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims, const void* data,
                            size_t nbytes) {
  std::optional<GgmlTypeInfo> info = ggml_type_info(uint32_t(type));
  AIGC_CHECK(info && !dims.empty() && dims.size() <= kMaxDims,
             "GGUF writer: tensor \"" + name + "\": bad type or dims");
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  AIGC_CHECK(dims[0] % info->block_elems == 0 && size_t(numel / info->block_elems * info->block_bytes) == nbytes,
             "GGUF writer: tensor \"" + name + "\" has " + std::to_string(nbytes) + " bytes, which do not match its " +
                 info->name + " dims");
  for (const T& t : tensors_) AIGC_CHECK(t.name != name, "GGUF writer: tensor \"" + name + "\" is added twice");
  tensors_.push_back(T{name, type, dims, data, nbytes});
}

void GgufWriter::add_tensor_owned(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                                  std::string bytes) {
  owned_.push_back(std::make_unique<std::string>(std::move(bytes)));
  add_tensor(name, type, dims, owned_.back()->data(), owned_.back()->size());
}

void GgufWriter::write(const std::string& path) const {
  std::string head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(head, k);
    put<uint32_t>(head, uint32_t(v.kind));
    write_value(head, v);
  }
  uint64_t offset = 0;
  for (const T& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, uint32_t(t.dims.size()));
    for (int64_t d : t.dims) put<uint64_t>(head, uint64_t(d));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, offset);
    offset = align_up(offset + t.nbytes, alignment_);
  }
  head.resize(size_t(align_up(head.size(), alignment_)), '\0');
  AtomicFileWriter w(path);
  w.write(head.data(), head.size());
  const std::string zeros(size_t(alignment_), '\0');
  for (const T& t : tensors_) {
    w.write(t.data, t.nbytes);
    w.write(zeros.data(), size_t(align_up(t.nbytes, alignment_) - t.nbytes));
  }
  w.commit();
}

}  // namespace aigc

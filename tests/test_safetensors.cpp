// safetensors and atomic files: round trips, interrupted writes, and every malformed-file case the reference
// implementation rejects, rejected here with an aigc::Error that names the file and the problem (never a
// crash: scripts/test.sh also runs this under ASan/UBSan).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/safetensors.h"

using namespace aigc;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

// Each test gets its own directory, removed afterwards.
class SafeTensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("aigc_st_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  size_t files_in_dir() const {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir_)) n += e.is_regular_file();
    return n;
  }

  // Expects reading `bytes` to fail with a message naming the file and containing `needle`.
  void expect_rejected(const std::string& bytes, const std::string& needle) {
    std::string p = path("bad.safetensors");
    write_raw(p, bytes);
    try {
      SafeTensorsReader r(p);
      ADD_FAILURE() << "accepted a malformed file; expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
      EXPECT_NE(msg.find(p), std::string::npos) << "the message should name the file: " << msg;
    }
  }

  static void write_raw(const std::string& p, const std::string& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(f.good()) << p;
  }

  fs::path dir_;
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return s;
}

uint64_t header_len(const std::string& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | uint8_t(file[size_t(i)]);
  return n;
}

// A file from a raw header and data section; the length field may lie.
std::string make_file(const std::string& header, const std::string& data,
                      uint64_t len = std::numeric_limits<uint64_t>::max()) {
  return le64(len == std::numeric_limits<uint64_t>::max() ? header.size() : len) + header + data;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
         std::to_string(b) + ", " + std::to_string(e) + "]}";
}

const std::string k8(8, 'x');  // 8 data bytes

}  // namespace

// --- round trips -------------------------------------------------------------------------------------------

TEST_F(SafeTensors, RoundTripDtypesMetadataZeroSize) {
  std::string p = path("rt.safetensors");
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  uint16_t bf[4] = {0x3f80, 0xc000, 0x4049, 0x7f80};  // 1, -2, 3.140625, +inf
  // F16: 1, -2, smallest subnormal, 65504, -0, -inf, NaN, largest subnormal
  uint16_t hf[8] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0xfc00, 0x7e00, 0x03ff};
  int64_t ints[2] = {-5, int64_t(1) << 40};
  write_safetensors(p,
                    {{"a", StDType::F32, {2, 3}, a.data(), 24},
                     {"b", StDType::BF16, {4}, bf, 8},
                     {"h", StDType::F16, {2, 4}, hf, 16},
                     {"empty", StDType::F32, {0, 5}, nullptr, 0},
                     {"i", StDType::I64, {2}, ints, 16},
                     {"scalar", StDType::F32, {}, a.data(), 4}},
                    {{"k", "v"}, {"config", "{\"x\": 1}"}, {"utf8", "春风"}});
  SafeTensorsReader r(p);
  EXPECT_EQ(r.metadata().size(), 3u);
  EXPECT_EQ(r.metadata().at("k"), "v");
  EXPECT_EQ(r.metadata().at("config"), "{\"x\": 1}");
  EXPECT_EQ(r.metadata().at("utf8"), "春风");
  EXPECT_EQ(r.read_f32("a"), a);
  std::vector<float> b = r.read_f32("b");
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.0f);
  EXPECT_EQ(b[2], 3.140625f);
  EXPECT_TRUE(std::isinf(b[3]) && b[3] > 0);
  std::vector<float> h = r.read_f32("h");
  ASSERT_EQ(h.size(), 8u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[3], 65504.0f);
  EXPECT_TRUE(h[4] == 0.0f && std::signbit(h[4]));
  EXPECT_TRUE(std::isinf(h[5]) && h[5] < 0);
  EXPECT_TRUE(std::isnan(h[6]));
  EXPECT_EQ(h[7], std::ldexp(1023.0f, -24));
  EXPECT_TRUE(r.read_f32("empty").empty());
  EXPECT_EQ(r.find("empty")->shape, std::vector<int64_t>({0, 5}));
  EXPECT_EQ(r.read_f32("scalar"), std::vector<float>({1.5f}));
  EXPECT_TRUE(r.find("scalar")->shape.empty());

  const StTensorInfo* ti = r.find("i");
  ASSERT_NE(ti, nullptr);
  EXPECT_EQ(ti->dtype, StDType::I64);
  int64_t back[2];
  std::memcpy(back, r.data(*ti), 16);
  EXPECT_EQ(back[0], -5);
  EXPECT_EQ(back[1], int64_t(1) << 40);
  EXPECT_EQ(r.find("nope"), nullptr);

  // tensors() is in offset order, contiguous from 0.
  uint64_t at = 0;
  for (const StTensorInfo& t : r.tensors()) {
    EXPECT_EQ(t.begin, at) << t.name;
    at = t.end;
  }
  EXPECT_EQ(at, 24u + 8 + 16 + 16 + 4);

  std::vector<float> dst(6, -1.0f);
  r.read_f32_into("a", dst.data(), {2, 3});
  EXPECT_EQ(dst, a);
  try {
    r.read_f32_into("a", dst.data(), {3, 2});
    ADD_FAILURE() << "shape mismatch accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor \"a\" has shape [2,3], expected [3,2]"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  try {
    r.read_f32("nope");
    ADD_FAILURE() << "missing tensor read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor \"nope\""), std::string::npos) << e.what();
  }
  try {
    r.read_f32("i");
    ADD_FAILURE() << "I64 read as float";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype I64"), std::string::npos) << e.what();
  }

  // The header is padded with spaces so the data section starts 8-byte aligned.
  std::string bytes = read_file(p);
  uint64_t n = header_len(bytes);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + at);
  EXPECT_EQ(bytes[8], '{');
  size_t close = bytes.rfind('}', 8 + n);
  for (size_t i = close + 1; i < 8 + n; i++) EXPECT_EQ(bytes[i], ' ');
}

TEST_F(SafeTensors, RoundTripManyTensors) {
  std::mt19937_64 rng(7);
  const StDType dts[] = {StDType::F32, StDType::F16, StDType::BF16, StDType::U8, StDType::I32, StDType::F64};
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<StTensorOut> out;
  for (int i = 0; i < 300; i++) {
    StDType dt = dts[rng() % 6];
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (size_t d = 0, rank = rng() % 4; d < rank; d++) {
      shape.push_back(int64_t(rng() % 5));
      numel *= shape.back();
    }
    bufs.emplace_back(size_t(numel) * st_dtype_size(dt));
    for (uint8_t& x : bufs.back()) x = uint8_t(rng());
    out.push_back({"layer." + std::to_string(i) + ".w", dt, shape, bufs.back().data(), bufs.back().size()});
  }
  std::string p = path("many.safetensors");
  write_safetensors(p, out, {});
  SafeTensorsReader r(p);
  EXPECT_TRUE(r.metadata().empty());
  ASSERT_EQ(r.tensors().size(), out.size());
  for (size_t i = 0; i < out.size(); i++) {
    const StTensorInfo* t = r.find(out[i].name);
    ASSERT_NE(t, nullptr) << out[i].name;
    EXPECT_EQ(t->dtype, out[i].dtype);
    EXPECT_EQ(t->shape, out[i].shape);
    ASSERT_EQ(t->nbytes(), bufs[i].size());
    EXPECT_TRUE(bufs[i].empty() || std::memcmp(r.data(*t), bufs[i].data(), bufs[i].size()) == 0) << out[i].name;
  }
}

TEST_F(SafeTensors, MatchesTheReferenceLayout) {
  // An empty file is "{}" padded to 8 bytes, and a tensor entry is compact JSON with keys in the reference's
  // order, so files we write are byte-identical to the reference writer's for the same input order.
  std::string p = path("empty.safetensors");
  write_safetensors(p, {}, {});
  EXPECT_EQ(read_file(p), le64(8) + "{}      ");
  EXPECT_TRUE(SafeTensorsReader(p).tensors().empty());

  float v[6] = {0, 1, 2, 3, 4, 5};
  write_safetensors(p, {{"attn.0", StDType::F32, {1, 2, 3}, v, 24}}, {});
  std::string header = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
  ASSERT_EQ(header.size(), 64u);
  EXPECT_EQ(read_file(p), le64(64) + header + std::string(reinterpret_cast<const char*>(v), 24));

  // Files from other writers: any key order, tensors listed out of offset order, null metadata, padding.
  std::string hdr = "{" + entry("second", "U8", "[8]", 8, 16) + ", \"__metadata__\": null, " +
                    entry("first", "F8_E4M3", "[2, 4]", 0, 8) + ", " + entry("z", "F4", "[2]", 16, 17) + "}   ";
  write_raw(p, make_file(hdr, k8 + "ABCDEFGH" + "q"));
  SafeTensorsReader r(p);
  ASSERT_EQ(r.tensors().size(), 3u);
  EXPECT_EQ(r.tensors()[0].name, "first");
  EXPECT_EQ(r.tensors()[1].name, "second");
  EXPECT_EQ(r.tensors()[2].dtype, StDType::F4);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(r.data(*r.find("second"))), 8), "ABCDEFGH");
  EXPECT_TRUE(r.metadata().empty());
}

// --- atomic files ------------------------------------------------------------------------------------------

TEST_F(SafeTensors, AtomicWriterWithoutCommitKeepsTheOldFile) {
  std::string p = path("f.bin");
  write_file_atomic(p, "old contents");
  {
    AtomicFileWriter w(p);
    w.write("new", 3);
    // destroyed without commit(), as when an exception unwinds mid-save
  }
  EXPECT_EQ(read_file(p), "old contents");
  EXPECT_EQ(files_in_dir(), 1u) << "the temporary file was left behind";

  // An exception thrown while a checkpoint streams out leaves the previous checkpoint readable.
  float x[2] = {1, 2};
  std::string ck = path("ck.safetensors");
  write_safetensors(ck, {{"x", StDType::F32, {2}, x, 8}}, {});
  EXPECT_THROW(write_safetensors(ck, {{"x", StDType::F32, {3}, x, 8}}, {}), Error);
  EXPECT_EQ(SafeTensorsReader(ck).read_f32("x"), std::vector<float>({1, 2}));
  EXPECT_EQ(files_in_dir(), 2u);

  {
    AtomicFileWriter w(p);
    w.write("new ", 4);
    w.write("contents", 8);
    EXPECT_EQ(w.bytes_written(), 12u);
    w.commit();
    EXPECT_THROW(w.write("x", 1), Error);
    EXPECT_THROW(w.commit(), Error);
  }
  EXPECT_EQ(read_file(p), "new contents");
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  EXPECT_EQ(files_in_dir(), 2u);
}

TEST_F(SafeTensors, FileErrorsNameThePath) {
  std::string missing_dir = path("no/such/dir/f.bin");
  try {
    write_file_atomic(missing_dir, "x");
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing_dir), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  try {
    read_file(path("missing"));
    ADD_FAILURE() << "read a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path("missing")), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_file(dir_.string()), Error);  // a directory
  // Renaming a file over a directory fails; the temp file must not be left behind.
  fs::create_directories(dir_ / "sub");
  EXPECT_THROW(write_file_atomic(path("sub"), "x"), Error);
  EXPECT_EQ(files_in_dir(), 0u);
}

TEST_F(SafeTensors, WriterValidatesItsInput) {
  float x[4] = {};
  std::string p = path("w.safetensors");
  auto rejects = [&](std::vector<StTensorOut> t, const std::string& needle) {
    try {
      write_safetensors(p, t, {});
      ADD_FAILURE() << "write accepted; expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  rejects({{"x", StDType::F32, {2}, x, 12}}, "needs 8");
  rejects({{"x", StDType::F32, {-2}, x, 8}}, "negative");
  rejects({{"x", StDType::F32, {2}, x, 8}, {"x", StDType::F32, {2}, x, 8}}, "duplicate");
  rejects({{"__metadata__", StDType::F32, {2}, x, 8}}, "reserved");
  rejects({{"x", StDType::F32, {2}, nullptr, 8}}, "null");
  rejects({{"x", StDType::U8, {int64_t(1) << 62, 16}, x, 8}}, "overflow");
  rejects({{"x", StDType::F4, {3}, x, 2}}, "whole number of bytes");
  rejects({{"\xff\xfe", StDType::F32, {2}, x, 8}}, "UTF-8");
  EXPECT_FALSE(fs::exists(p));
  EXPECT_EQ(files_in_dir(), 0u);
  EXPECT_THROW(st_dtype_size(StDType::F4), Error);
  EXPECT_EQ(st_dtype_bits(StDType::F6_E2M3), 6u);
  EXPECT_EQ(st_dtype_from_name("BF16"), StDType::BF16);
  EXPECT_FALSE(st_dtype_from_name("bf16").has_value());
}

// --- malformed files ---------------------------------------------------------------------------------------

TEST_F(SafeTensors, RejectsTruncatedFiles) {
  std::string p = path("src.safetensors");
  std::vector<float> a(16, 1.0f);
  write_safetensors(p, {{"a", StDType::F32, {16}, a.data(), 64}}, {{"m", "x"}});
  std::string good = read_file(p);
  const size_t data_at = good.size() - 64;
  for (size_t cut : {size_t(0), size_t(1), size_t(7)}) expect_rejected(good.substr(0, cut), "too short");
  for (size_t cut : {size_t(8), size_t(9), size_t(20), data_at - 1})
    expect_rejected(good.substr(0, cut), "past the end");
  for (size_t cut : {data_at, data_at + 1, good.size() - 4, good.size() - 1})
    expect_rejected(good.substr(0, cut), "out of range");
}

TEST_F(SafeTensors, RejectsBadHeaderLengths) {
  expect_rejected(make_file("{}", "", 1000), "past the end");
  expect_rejected(make_file("{}", "", 11), "past the end");
  expect_rejected(make_file("{}", "", uint64_t(1) << 63), "100 MB");
  expect_rejected(make_file("{}", "", ~uint64_t(0) - 7), "100 MB");  // 8 + N would wrap around
  expect_rejected(make_file("{}", "", 100'000'001), "100 MB");
  expect_rejected(make_file("", ""), "starting with '{'");  // N = 0
}

TEST_F(SafeTensors, RejectsNonObjectHeaders) {
  expect_rejected(make_file("not json", ""), "starting with '{'");
  expect_rejected(make_file("[1, 2]  ", ""), "JSON object");
  expect_rejected(make_file(" {}", ""), "starting with '{'");
  expect_rejected(make_file("{\"a\": 1", ""), "not valid UTF-8 JSON");
  expect_rejected(make_file("{} x", ""), "not valid UTF-8 JSON");
  expect_rejected(make_file("{}\0\0"s, ""), "NUL byte");
  expect_rejected(make_file("{}\0 garbage"s, ""), "NUL byte");
  expect_rejected(make_file("{\"a\0\": 1}"s, ""), "NUL byte");
  expect_rejected(make_file("{\"\xff\": 1}", ""), "not valid UTF-8 JSON");
  try {  // the parser quotes the bad bytes; the message must stay printable ASCII
    write_raw(path("u.safetensors"), make_file("{\"\xc3\x28\": 1}", ""));
    SafeTensorsReader r(path("u.safetensors"));
    ADD_FAILURE() << "ill-formed UTF-8 accepted";
  } catch (const Error& e) {
    for (char c : std::string(e.what())) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << e.what();
  }
  expect_rejected(make_file("{/* c */}", ""), "not valid UTF-8 JSON");
  expect_rejected(make_file("{\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}", ""),
                  "nests deeper");
}

TEST_F(SafeTensors, RejectsOffsetProblems) {
  expect_rejected(
      make_file("{" + entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 4, 12) + "}", k8 + "xxxx"),
      "overlapping");
  expect_rejected(make_file("{" + entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 0, 8) + "}", k8),
                  "overlapping");
  expect_rejected(
      make_file("{" + entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 12, 20) + "}", k8 + k8 + "xxxx"),
      "gap");
  expect_rejected(make_file("{" + entry("a", "F32", "[2]", 8, 16) + "}", k8 + k8), "must start at byte 0");
  expect_rejected(make_file("{" + entry("a", "F32", "[2]", 0, 8) + "}", k8 + "extra"), "trailing bytes");
  expect_rejected(make_file("{}", "x"), "trailing bytes");
  expect_rejected(make_file("{" + entry("a", "F32", "[2]", 0, 8) + "}", "xxxx"), "out of range");
  expect_rejected(make_file("{" + entry("a", "U8", "[1000000]", 0, 1000000) + "}", k8), "out of range");
  expect_rejected(make_file("{" + entry("a", "U8", "[0]", 18446744073709551615u, 18446744073709551615u) + "}", k8),
                  "must start at byte 0");
  expect_rejected(make_file("{" + entry("a", "F32", "[2]", 8, 0) + "}", k8), "begin > end");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", k8),
                  "[begin, end]");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8, 9]}}", k8),
                  "[begin, end]");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}", k8),
                  "non-negative");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8.0]}}", k8),
                  "non-negative integers");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, \"8\"]}}", k8),
                  "non-negative integers");
}

TEST_F(SafeTensors, RejectsDtypeAndShapeProblems) {
  auto one = [](const std::string& body) { return make_file("{\"a\": {" + body + "}}", k8); };
  expect_rejected(one("\"dtype\": \"F31\", \"shape\": [2], \"data_offsets\": [0, 8]"), "unknown dtype \"F31\"");
  expect_rejected(one("\"dtype\": \"f32\", \"shape\": [2], \"data_offsets\": [0, 8]"), "unknown dtype");
  expect_rejected(one("\"dtype\": 32, \"shape\": [2], \"data_offsets\": [0, 8]"), "\"dtype\" must be a string");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]"), "needs 12");
  expect_rejected(one("\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [0, 8]"), "needs 16");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]"), "non-negative");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]"), "non-negative integers");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [[2]], \"data_offsets\": [0, 8]"), "non-negative integers");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4], \"data_offsets\": [0, 8]"),
                  "overflows");
  expect_rejected(one("\"dtype\": \"U8\", \"shape\": [18446744073709551615, 2], \"data_offsets\": [0, 8]"),
                  "too large");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [1e2], \"data_offsets\": [0, 8]"), "non-negative integers");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [99999999999999999999999], \"data_offsets\": [0, 8]"),
                  "non-negative integers");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": \"2\", \"data_offsets\": [0, 8]"), "\"shape\" must be");
  expect_rejected(one("\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 8]"), "whole number of bytes");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8], \"x\": 1"),
                  "unexpected field \"x\"");
  expect_rejected(one("\"dtype\": \"F32\", \"data_offsets\": [0, 8]"), "missing field \"shape\"");
  expect_rejected(one("\"shape\": [2], \"data_offsets\": [0, 8]"), "missing field \"dtype\"");
  expect_rejected(one("\"dtype\": \"F32\", \"shape\": [2]"), "missing field \"data_offsets\"");
  expect_rejected(make_file("{\"a\": 5}", ""), "tensor \"a\": the entry must be an object");
  expect_rejected(make_file("{\"a\": [0, 8]}", k8), "must be an object");
}

TEST_F(SafeTensors, RejectsDuplicatesAndBadMetadata) {
  expect_rejected(make_file("{" + entry("a", "U8", "[8]", 0, 8) + ", " + entry("a", "U8", "[8]", 0, 8) + "}", k8),
                  "duplicate tensor name \"a\"");
  // A duplicate that would otherwise look valid: last-wins parsing would silently drop the first one.
  expect_rejected(make_file("{" + entry("a", "U8", "[0]", 0, 0) + ", " + entry("a", "U8", "[8]", 0, 8) + "}", k8),
                  "duplicate tensor name");
  expect_rejected(
      make_file("{\"a\": {\"dtype\": \"U8\", \"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}}", k8),
      "duplicate key \"dtype\"");
  expect_rejected(make_file("{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", ""), "duplicate key \"k\"");
  expect_rejected(make_file("{\"__metadata__\": {}, \"__metadata__\": {}}", ""), "duplicate");
  expect_rejected(make_file("{\"__metadata__\": {\"k\": 5}}", ""), "value for \"k\" is not a string");
  expect_rejected(make_file("{\"__metadata__\": {\"k\": {\"x\": \"y\"}}}", ""), "not a string");
  // Nested values are named by kind, not written out (which recurses once per level); deeper than 16 levels the
  // header is refused while it is parsed.
  expect_rejected(make_file("{\"__metadata__\": {\"k\": [[[1]]]}}", ""), "not a string: an array of 1");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_rejected(make_file("{\"__metadata__\": {\"k\": " + deep + "}}", ""), "nests deeper than 16 levels");
  expect_rejected(make_file("{\"__metadata__\": [1]}", ""), "\"__metadata__\" must be an object of strings");
  expect_rejected(make_file("{\"__metadata__\": \"x\"}", ""), "\"__metadata__\" must be an object");
}

TEST_F(SafeTensors, RandomCorruptionNeverCrashes) {
  // Mutate a valid file's length field and header (and sometimes its size) 2000 times; every read must
  // either succeed or throw aigc::Error. Successful reads touch all the data so ASan would see a bad offset.
  std::string p = path("src.safetensors");
  std::vector<float> a(6, 2.0f), b(4, 3.0f);
  uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
  uint8_t u[5] = {1, 2, 3, 4, 5};
  write_safetensors(p,
                    {{"a", StDType::F32, {2, 3}, a.data(), 24},
                     {"bb", StDType::F16, {3}, h, 6},
                     {"c", StDType::F32, {4}, b.data(), 16},
                     {"u", StDType::U8, {5}, u, 5},
                     {"z", StDType::BF16, {0}, nullptr, 0}},
                    {{"m", "x"}, {"n", "[1,2]"}});
  const std::string good = read_file(p);
  const uint64_t hlen = header_len(good);
  std::mt19937_64 rng(2024);
  const char interesting[] = "{}[]\":,0123456789-eE. \\u\x00\xff\x80";
  const std::string q = path("fuzz.safetensors");
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 2000; iter++) {
    std::string f = good;
    const int kind = int(rng() % 10);
    if (kind == 0) {  // rewrite the length field to something near, or anything
      uint64_t n = rng() % 2 ? hlen + (rng() % 33) - 16 : rng() >> (rng() % 64);
      f.replace(0, 8, le64(n));
    } else if (kind == 1) {  // resize the file
      f.resize(size_t(rng() % (f.size() + 16)), 'x');
    } else {  // overwrite 1-4 bytes of the length field or header
      for (int e = 0, edits = 1 + int(rng() % 4); e < edits; e++) {
        size_t pos = size_t(rng() % (8 + hlen));
        f[pos] = rng() % 2 ? interesting[rng() % (sizeof interesting - 1)] : char(rng());
      }
    }
    write_raw(q, f);
    try {
      SafeTensorsReader r(q);
      uint64_t sum = 0;
      for (const StTensorInfo& t : r.tensors()) {
        const uint8_t* d = r.data(t);
        for (uint64_t i = 0; i < t.nbytes(); i++) sum += d[i];
        if (t.dtype == StDType::F32 || t.dtype == StDType::F16 || t.dtype == StDType::BF16) {
          EXPECT_EQ(r.read_f32(t.name).size() * st_dtype_size(t.dtype), t.nbytes());
        }
      }
      EXPECT_LE(sum, 255u * f.size());
      ok++;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(q), std::string::npos) << e.what();
      rejected++;
    }
  }
  RecordProperty("accepted", ok);
  EXPECT_EQ(ok + rejected, 2000);
  EXPECT_GT(ok, 0);           // some mutations are harmless (padding, metadata text)
  EXPECT_GT(rejected, 1000);  // most damage must be caught
}

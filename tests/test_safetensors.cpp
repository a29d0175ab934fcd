// safetensors: round trips, and every malformed-file case the reference implementation rejects, rejected here
// with an aigc::Error that says what is wrong (never a crash: scripts/test.sh also runs this under ASan/UBSan).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/rng.h"
#include "aigc/safetensors.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("aigc_st_" + std::to_string(getpid()) + "_" + name)).string();
}

// Builds a file from a raw header and a data section.
std::string make_file(const std::string& header, const std::string& data, uint64_t len_override = UINT64_MAX) {
  uint64_t n = len_override == UINT64_MAX ? header.size() : len_override;
  std::string f(8, '\0');
  for (int i = 0; i < 8; i++) f[size_t(i)] = char(uint8_t(n >> (8 * i)));
  return f + header + data;
}

// Expects reading `bytes` to fail with a message containing `needle`.
void expect_rejected(const std::string& bytes, const std::string& needle) {
  std::string p = tmp_path("bad");
  write_file_atomic(p, bytes);
  try {
    SafeTensorsReader r(p);
    ADD_FAILURE() << "accepted a malformed file; expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find(p), std::string::npos) << "the message should name the file: " << msg;
  }
  fs::remove(p);
}

const std::string k8(8, 'x');  // 8 data bytes

}  // namespace

TEST(SafeTensors, RoundTripDtypesMetadataZeroSize) {
  std::string p = tmp_path("rt");
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  uint16_t bf[3] = {0x3f80, 0xc000, 0x4049};  // 1, -2, 3.140625
  uint16_t hf[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};  // 1, -2, smallest subnormal, 65504
  write_safetensors(p,
                    {{"a", StDType::F32, {2, 3}, a.data(), 24},
                     {"b", StDType::BF16, {3}, bf, 6},
                     {"h", StDType::F16, {4}, hf, 8},
                     {"empty", StDType::F32, {0, 5}, nullptr, 0}},
                    {{"k", "v"}, {"config", "{\"x\": 1}"}});
  SafeTensorsReader r(p);
  EXPECT_EQ(r.metadata().at("k"), "v");
  EXPECT_EQ(r.metadata().at("config"), "{\"x\": 1}");
  EXPECT_EQ(r.read_f32("a"), a);
  EXPECT_EQ(r.read_f32("b"), std::vector<float>({1.0f, -2.0f, 3.140625f}));
  std::vector<float> h = r.read_f32("h");
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[3], 65504.0f);
  EXPECT_TRUE(r.read_f32("empty").empty());
  EXPECT_EQ(r.find("a")->shape, std::vector<int64_t>({2, 3}));
  std::vector<float> dst(6);
  EXPECT_THROW(r.read_f32_into("a", dst.data(), {3, 2}), Error);
  EXPECT_THROW(r.read_f32("nope"), Error);
  // The header is padded so the data section starts 8-byte aligned.
  std::string bytes = read_file(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  fs::remove(p);
}

TEST(SafeTensors, RejectsTruncatedFiles) {
  std::string p = tmp_path("trunc_src");
  std::vector<float> a(16, 1.0f);
  write_safetensors(p, {{"a", StDType::F32, {16}, a.data(), 64}}, {});
  std::string good = read_file(p);
  fs::remove(p);
  for (size_t cut : {size_t(0), size_t(5), size_t(8), size_t(20), good.size() - 64, good.size() - 1})
    expect_rejected(good.substr(0, cut), cut < 8 ? "at least 8" : cut < good.size() - 64 ? "past the end" : "cover");
}

TEST(SafeTensors, RejectsBadHeaderLengths) {
  expect_rejected(make_file("{}", "", 1000), "past the end");
  expect_rejected(make_file("{}", "", uint64_t(1) << 63), "100 MB");
  expect_rejected(make_file("{}", "", 200'000'000), "100 MB");
}

TEST(SafeTensors, RejectsNonObjectHeaders) {
  expect_rejected(make_file("not json", ""), "JSON");
  expect_rejected(make_file("[1, 2]  ", ""), "object");
  expect_rejected(make_file("{\"a\": 1", ""), "JSON");
}

TEST(SafeTensors, RejectsOffsetProblems) {
  auto t = [](const std::string& name, int b, int e, const std::string& shape = "[2]") {
    return "\"" + name + "\": {\"dtype\": \"F32\", \"shape\": " + shape + ", \"data_offsets\": [" + std::to_string(b) +
           ", " + std::to_string(e) + "]}";
  };
  expect_rejected(make_file("{" + t("a", 0, 8) + ", " + t("b", 4, 12) + "}", k8 + "xxxx"), "overlaps");
  expect_rejected(make_file("{" + t("a", 0, 8) + ", " + t("b", 12, 20) + "}", k8 + k8 + "xxxx"), "gap");
  expect_rejected(make_file("{" + t("a", 8, 16) + "}", k8 + k8), "expected 0");
  expect_rejected(make_file("{" + t("a", 0, 8) + "}", k8 + "extra"), "cover");
  expect_rejected(make_file("{" + t("a", 0, 8) + "}", "xxxx"), "cover");
  expect_rejected(make_file("{" + t("a", 8, 0) + "}", k8), "begin > end");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", k8), "[begin, end]");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}", k8),
                  "non-negative");
}

TEST(SafeTensors, RejectsDtypeAndShapeProblems) {
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F31\", \"shape\": [2], \"data_offsets\": [0, 8]}}", k8),
                  "unknown dtype");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", k8), "needs 12");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", k8),
                  "non-negative");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4], "
                            "\"data_offsets\": [0, 8]}}",
                            k8),
                  "overflows");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": \"2\", \"data_offsets\": [0, 8]}}", k8), "shape");
  expect_rejected(make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8], \"x\": 1}}", k8),
                  "unexpected field");
  expect_rejected(make_file("{\"a\": 5}", ""), "must be an object");
}

TEST(SafeTensors, RejectsDuplicatesAndBadMetadata) {
  expect_rejected(make_file("{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}, "
                            "\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}}",
                            k8),
                  "duplicate");
  expect_rejected(make_file("{\"__metadata__\": {\"k\": 5}}", ""), "not a string");
  expect_rejected(make_file("{\"__metadata__\": [1]}", ""), "__metadata__");
}

TEST(SafeTensors, RandomCorruptionNeverCrashes) {
  // Mutate a valid file's header and length bytes; every read must either succeed or throw aigc::Error.
  std::string p = tmp_path("fuzz_src");
  std::vector<float> a(6, 2.0f), b(4, 3.0f);
  write_safetensors(p, {{"a", StDType::F32, {2, 3}, a.data(), 24}, {"b", StDType::F32, {4}, b.data(), 16}},
                    {{"m", "x"}});
  std::string good = read_file(p);
  fs::remove(p);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | uint8_t(good[size_t(i)]);
  Rng rng(2024);
  const char interesting[] = "{}[]\":,0123456789-eE \x00\xff";
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 2000; iter++) {
    std::string f = good;
    int edits = 1 + int(rng.next_u64() % 4);
    for (int e = 0; e < edits; e++) {
      size_t pos = size_t(rng.next_u64() % (8 + hlen));
      f[pos] = rng.uniform() < 0.5 ? interesting[rng.next_u64() % (sizeof interesting - 1)] : char(rng.next_u64());
    }
    if (rng.uniform() < 0.1) f.resize(size_t(rng.next_u64() % f.size()));
    std::string q = tmp_path("fuzz");
    write_file_atomic(q, f);
    try {
      SafeTensorsReader r(q);
      for (const StTensorInfo& t : r.tensors())
        if (t.dtype == StDType::F32) r.read_f32(t.name);
      ok++;
    } catch (const Error&) {
      rejected++;
    }
  }
  EXPECT_EQ(ok + rejected, 2000);
  EXPECT_GT(rejected, 1000);  // most random damage must be caught
}

// GGUF: the container (every value kind, tensors, alignment), the untrusted-input checks, the f16 and block
// quantization formats, and GPT models written and read back. llama.cpp's own reading of these files is
// tested in test_llama_cpp.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "aigc/autograd.h"
#include "aigc/chat_template.h"
#include "aigc/checkpoint.h"
#include "aigc/checkpoint_kind.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/gguf.h"
#include "aigc/half.h"
#include "test_util.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

class Gguf : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = aigc::testing::fresh_temp_dir("aigc_gguf_" +
                                         std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// A small file with one value of every kind, nested arrays, and tensors of every type.
std::string sample_file(const std::string& p, std::vector<float>& a, std::vector<float>& q) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("test"));
  GgufValue v;
  v.kind = GgufKind::U8, v.u = 200;
  w.set("k.u8", v);
  v = {}, v.kind = GgufKind::I8, v.i = -100;
  w.set("k.i8", v);
  v = {}, v.kind = GgufKind::U16, v.u = 60000;
  w.set("k.u16", v);
  v = {}, v.kind = GgufKind::I16, v.i = -30000;
  w.set("k.i16", v);
  w.set("k.u32", GgufValue::of_u32(4000000000u));
  w.set("k.i32", GgufValue::of_i32(-2000000000));
  w.set("k.u64", GgufValue::of_u64(1ull << 60));
  v = {}, v.kind = GgufKind::I64, v.i = -(1ll << 60);
  w.set("k.i64", v);
  w.set("k.f32", GgufValue::of_f32(0.25f));
  v = {}, v.kind = GgufKind::F64, v.f = 1e-300;
  w.set("k.f64", v);
  w.set("k.bool", GgufValue::of_bool(true));
  w.set("k.str", GgufValue::of_string(std::string("h\0llo", 5)));
  w.set("k.strs", GgufValue::of_strings({"a", "", "Ġthe"}));
  w.set("k.i32s", GgufValue::of_i32s({1, -2, 3}));
  GgufValue nested;
  nested.kind = GgufKind::ARRAY, nested.elem = GgufKind::ARRAY;
  nested.arr = {GgufValue::of_f32s({1.5f}), GgufValue::of_f32s({})};
  w.set("k.nested", nested);
  a.resize(64 * 3);
  q.resize(64 * 2);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (float& x : a) x = nd(rng);
  for (float& x : q) x = nd(rng);
  w.add_tensor("a", GgmlType::F32, {64, 3}, a.data(), a.size() * 4);
  w.add_tensor_owned("a16", GgmlType::F16, {64, 3}, convert_from_f32(GgmlType::F16, a.data(), int64_t(a.size())));
  w.add_tensor_owned("abf", GgmlType::BF16, {192}, convert_from_f32(GgmlType::BF16, a.data(), int64_t(a.size())));
  w.add_tensor_owned("q8", GgmlType::Q8_0, {64, 2}, quantize_q8_0(q.data(), 128));
  w.add_tensor_owned("q4", GgmlType::Q4_0, {128}, quantize_q4_0(q.data(), 128));
  w.write(p);
  return read_file(p);
}

void write_raw(const std::string& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

}  // namespace

TEST_F(Gguf, EveryValueKindAndTensorTypeRoundTrips) {
  std::vector<float> a, q;
  const std::string bytes = sample_file(path("s.gguf"), a, q);
  GgufReader r(path("s.gguf"));
  EXPECT_EQ(r.version(), 3u);
  EXPECT_EQ(r.get_string("general.architecture"), "test");
  EXPECT_EQ(r.get_uint("k.u8"), 200u);
  EXPECT_EQ(r.metadata().at("k.i8").i, -100);
  EXPECT_EQ(r.get_uint("k.u16"), 60000u);
  EXPECT_EQ(r.metadata().at("k.i16").i, -30000);
  EXPECT_EQ(r.get_uint("k.u32"), 4000000000u);
  EXPECT_EQ(r.metadata().at("k.i32").i, -2000000000);
  EXPECT_EQ(r.get_uint("k.u64"), 1ull << 60);
  EXPECT_EQ(r.metadata().at("k.i64").i, -(1ll << 60));
  EXPECT_EQ(r.get_float("k.f32"), 0.25f);
  EXPECT_EQ(r.metadata().at("k.f64").f, 1e-300);
  EXPECT_EQ(r.metadata().at("k.bool").u, 1u);
  EXPECT_EQ(r.get_string("k.str"), std::string("h\0llo", 5));
  EXPECT_EQ(r.get_strings("k.strs"), (std::vector<std::string>{"a", "", "Ġthe"}));
  EXPECT_EQ(r.get_ints("k.i32s"), (std::vector<int64_t>{1, -2, 3}));
  const GgufValue& n = r.metadata().at("k.nested");
  ASSERT_EQ(n.arr.size(), 2u);
  EXPECT_EQ(n.arr[0].arr.at(0).f, 1.5);
  EXPECT_TRUE(n.arr[1].arr.empty());
  EXPECT_THROW(r.get_uint("k.i32"), Error);  // negative
  EXPECT_THROW(r.get_string("k.u8"), Error);
  EXPECT_THROW(r.get_uint("missing"), Error);

  ASSERT_EQ(r.tensors().size(), 5u);
  for (const GgufTensorInfo& t : r.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
  std::vector<float> got(a.size());
  r.read_f32_into("a", got.data(), {64, 3});
  EXPECT_EQ(got, a);
  r.read_f32_into("a16", got.data(), {64, 3});
  for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(got[i], a[i], std::fabs(a[i]) * 0x1p-11f) << i;
  r.read_f32_into("abf", got.data(), {192});
  for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(got[i], a[i], std::fabs(a[i]) * 0x1p-8f) << i;
  EXPECT_THROW(r.read_f32_into("a", got.data(), {3, 64}), Error);  // dims are checked, in ggml order
  EXPECT_THROW(r.read_f32_into("nope", got.data(), {1}), Error);
  // The data section follows the header at the alignment; each tensor is padded to it.
  EXPECT_EQ(bytes.size() % 32, 0u);
}

TEST_F(Gguf, HalfConversionIsExactAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 65536; h++) {
    const float f = io::f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(io::f16_to_f32(io::f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(io::f32_to_f16(f), h) << h;  // every half survives the round trip
    // Halfway to the next half up (a tie) rounds to the even one of the two.
    const float next = io::f16_to_f32(uint16_t(h + 1));
    if ((h & 0x7c00u) != 0x7c00u && ((h + 1) & 0x7c00u) != 0x7c00u && !std::isnan(next) && h != 0x7fff && h != 0xffff) {
      const double mid = (double(f) + double(next)) / 2;
      if (float(mid) == mid) {
        EXPECT_EQ(io::f32_to_f16(float(mid)), (h & 1) ? h + 1 : h) << h;
      }
    }
  }
  EXPECT_EQ(io::f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(io::f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(io::f32_to_f16(65520.0f), 0x7c00);  // half an ulp past the largest half: infinity
  EXPECT_EQ(io::f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(io::f32_to_f16(0x1p-25f), 0);    // a tie between 0 and the smallest subnormal: even (0)
  EXPECT_EQ(io::f32_to_f16(0x1.8p-24f), 2);  // a tie between 1 and 2 subnormal ulps: even (2)
}

TEST_F(Gguf, BlockQuantizationMatchesTheFormats) {
  std::vector<float> x(32 * 64);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (float& v : x) v = nd(rng) * (1 + float(rng() % 4));
  x[5] = 0;
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block has scale 0 and decodes to zeros
  const std::string q8 = quantize_q8_0(x.data(), int64_t(x.size())), q4 = quantize_q4_0(x.data(), int64_t(x.size()));
  ASSERT_EQ(q8.size(), x.size() / 32 * 34);
  ASSERT_EQ(q4.size(), x.size() / 32 * 18);
  std::vector<float> d8(x.size()), d4(x.size());
  dequantize(GgmlType::Q8_0, reinterpret_cast<const uint8_t*>(q8.data()), d8.data(), int64_t(x.size()));
  dequantize(GgmlType::Q4_0, reinterpret_cast<const uint8_t*>(q4.data()), d4.data(), int64_t(x.size()));
  for (size_t b = 0; b < x.size() / 32; b++) {
    float amax = 0, max = 0;
    for (size_t j = 0; j < 32; j++)
      if (std::fabs(x[b * 32 + j]) > amax) amax = std::fabs(x[b * 32 + j]), max = x[b * 32 + j];
    // Q8_0: scale amax/127 (rounded to f16), each value within half a step of the input.
    uint16_t h;
    std::memcpy(&h, q8.data() + b * 34, 2);
    EXPECT_EQ(h, io::f32_to_f16(amax / 127));
    const float s8 = io::f16_to_f32(h);
    // Q4_0: scale max/-8, so the extreme value decodes as -8 steps exactly; the rest within half a step.
    std::memcpy(&h, q4.data() + b * 18, 2);
    EXPECT_EQ(h, io::f32_to_f16(max / -8));
    const float s4 = io::f16_to_f32(h);
    for (size_t j = 0; j < 32; j++) {
      const size_t i = b * 32 + j;
      EXPECT_LE(std::fabs(d8[i] - x[i]), s8 * 0.5f + amax * 1e-3f) << i;
      // Q4_0 steps run from -8 to +7: values beyond +7.5 steps (the side opposite the extreme) clip to +7.
      const float steps4 = s4 ? x[i] / s4 : 0;
      EXPECT_LE(std::fabs(d4[i] - x[i]), std::fabs(s4) * (steps4 > 7.5f ? 1.0f : 0.5f) + amax * 1e-3f) << i;
      if (amax == 0) {
        EXPECT_EQ(d8[i], 0.0f);
        EXPECT_EQ(d4[i], 0.0f);
      }
    }
  }
  // Nibble order: element j in the low half of byte j, element j + 16 in the high half.
  std::vector<float> ramp(32);
  for (int j = 0; j < 32; j++) ramp[size_t(j)] = float(j - 8) * -1.0f;  // max magnitude 23 at j = 31
  const std::string r4 = quantize_q4_0(ramp.data(), 32);
  std::vector<float> back(32);
  dequantize(GgmlType::Q4_0, reinterpret_cast<const uint8_t*>(r4.data()), back.data(), 32);
  EXPECT_FLOAT_EQ(back[31], ramp[31]);
  EXPECT_EQ(uint8_t(r4[2 + 15]) >> 4, 0);  // element 31 is the -8 step: nibble 0
  EXPECT_THROW(quantize_q8_0(x.data(), 31), Error);
}

TEST_F(Gguf, MalformedFilesAreRejectedWithTheField) {
  std::vector<float> a, q;
  const std::string good = sample_file(path("s.gguf"), a, q);
  auto expect_rejected = [&](const std::string& bytes, const std::string& needle) {
    write_raw(path("bad.gguf"), bytes);
    try {
      GgufReader r(path("bad.gguf"));
      ADD_FAILURE() << "accepted a file that should fail with: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path("bad.gguf")), std::string::npos) << e.what();
    }
  };
  auto patch = [&](size_t off, const void* v, size_t n) {
    std::string f = good;
    std::memcpy(f.data() + off, v, n);
    return f;
  };
  expect_rejected("", "not a GGUF file");
  expect_rejected("GGML", "not a GGUF file");
  uint32_t ver = 1;
  expect_rejected(patch(4, &ver, 4), "version 1 is not supported");
  uint64_t huge = 1ull << 40;
  expect_rejected(patch(8, &huge, 8), "tensor count");
  expect_rejected(patch(16, &huge, 8), "metadata count");
  // Every truncation fails cleanly, naming what it ran out on.
  // (The last tensor, q4, holds 72 bytes and 24 of padding: cutting 30 cuts into it.)
  for (size_t n : {size_t(10), size_t(30), good.size() / 3, good.size() - 30})
    expect_rejected(good.substr(0, n), n == good.size() - 30 ? "truncated" : n == 10 ? "needs" : "");
  // The first key's length: beyond the file.
  expect_rejected(patch(24, &huge, 8), "metadata entry 0 key");

  // Hand-built headers for the semantic checks.
  auto header = [](uint64_t n_tensors, const std::string& kvs, uint64_t n_kv, const std::string& infos) {
    std::string f = "GGUF";
    uint32_t v = 3;
    f.append(reinterpret_cast<char*>(&v), 4);
    f.append(reinterpret_cast<char*>(&n_tensors), 8);
    f.append(reinterpret_cast<char*>(&n_kv), 8);
    return f + kvs + infos;
  };
  auto s = [](const std::string& x) {
    uint64_t n = x.size();
    return std::string(reinterpret_cast<char*>(&n), 8) + x;
  };
  auto u32 = [](uint32_t x) { return std::string(reinterpret_cast<char*>(&x), 4); };
  auto u64 = [](uint64_t x) { return std::string(reinterpret_cast<char*>(&x), 8); };
  auto info = [&](const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t off) {
    std::string t = s(name) + u32(uint32_t(dims.size()));
    for (uint64_t d : dims) t += u64(d);
    return t + u32(type) + u64(off);
  };
  const std::string pad(64, '\0');
  expect_rejected(header(0, s("a") + u32(4) + u32(1) + s("a") + u32(4) + u32(2), 2, "") + pad, "\"a\" appears twice");
  expect_rejected(header(0, s("a") + u32(99) + u32(1), 1, "") + pad, "unknown value type 99");
  expect_rejected(header(0, s("a") + u32(7) + std::string(1, '\x02'), 1, "") + pad, "bool must be 0 or 1");
  expect_rejected(header(0, s("general.alignment") + u32(4) + u32(48), 1, "") + pad, "power of two");
  expect_rejected(header(0, s("general.alignment") + u32(10) + u64(32), 1, "") + pad, "must be a uint32");
  expect_rejected(header(0, s("a") + u32(9) + u32(4) + u64(1ull << 50), 1, "") + pad, "cannot fit");
  std::string deep = s("a") + u32(9);  // an array of arrays of arrays ...
  for (int i = 0; i < 6; i++) deep += u32(9) + u64(1);
  expect_rejected(header(0, deep, 1, "") + pad, "nest deeper");
  expect_rejected(header(1, "", 0, info("t", {32}, 77, 0)) + pad, "ggml type 77 is not supported");
  expect_rejected(header(1, "", 0, info("t", {}, 0, 0)) + pad, "0 dimensions");
  expect_rejected(header(1, "", 0, info("t", {1, 1, 1, 1, 1}, 0, 0)) + pad, "5 dimensions");
  expect_rejected(header(1, "", 0, info("t", {4, 0}, 0, 0)) + pad, "is empty");
  expect_rejected(header(1, "", 0, info("t", {1ull << 40, 1ull << 40}, 0, 0)) + pad, "overflow");
  expect_rejected(header(1, "", 0, info("t", {1ull << 31, 1ull << 31}, 0, 0)) + pad, "overflow");  // f32: 2^64 bytes
  expect_rejected(header(1, "", 0, info("t", {33}, 8, 0)) + pad, "not a multiple of q8_0's block of 32");
  expect_rejected(header(1, "", 0, info("t", {4}, 0, 8)) + pad, "not a multiple of the alignment");
  expect_rejected(header(1, "", 0, info("t", {1000}, 0, 0)) + pad, "spans bytes [0, 4000)");
  expect_rejected(header(2, "", 0, info("t", {4}, 0, 0) + info("t", {4}, 0, 32)) + pad + pad, "appears twice");
  expect_rejected(header(2, "", 0, info("t", {16}, 0, 0) + info("u", {4}, 0, 32)) + pad + pad, "overlap");
  // A valid hand-built file is accepted (the checks above fail for their reason alone).
  GgufReader ok =
      GgufReader::from_bytes("ok", header(2, "", 0, info("t", {8}, 0, 0) + info("u", {4}, 0, 32)) + pad + pad);
  EXPECT_EQ(ok.tensors().size(), 2u);
}

TEST_F(Gguf, RandomCorruptionNeverCrashes) {
  // 3000 mutations of a valid file (bytes overwritten with small or extreme integers, cuts, growth); every read
  // either succeeds or throws aigc::Error, and a successful read decodes every tensor (ASan watches the bytes).
  std::vector<float> a, q;
  const std::string good = sample_file(path("s.gguf"), a, q);
  std::mt19937_64 rng(2026);
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 3000; iter++) {
    std::string f = good;
    const int kind = int(rng() % 8);
    if (kind == 0) {
      f.resize(size_t(rng() % (f.size() + 64)), '\0');
    } else {
      for (int e = 0, edits = 1 + int(rng() % 3); e < edits; e++) {
        const size_t pos = size_t(rng() % f.size());
        const uint64_t vals[] = {0, 1, 2, 3, 4, 8, 9, 31, 32, 33, 0xff, 0xffffffffull, ~0ull, rng()};
        const uint64_t v = vals[rng() % std::size(vals)];
        std::memcpy(f.data() + pos, &v, std::min<size_t>(rng() % 2 ? 8 : 1, f.size() - pos));
      }
    }
    try {
      GgufReader r = GgufReader::from_bytes("fuzz", std::move(f));
      for (const GgufTensorInfo& t : r.tensors()) {
        std::vector<float> out(size_t(t.numel()));
        r.read_f32_into(t.name, out.data(), t.dims);
      }
      ok++;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("fuzz"), std::string::npos) << e.what();
      rejected++;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(rejected, 1000);
}

namespace {

GPTConfig tiny_gpt(int64_t vocab) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.block_size = 32, c.vocab_size = vocab;
  return c;
}

Tensor logits_of(GPT& m, const std::vector<int32_t>& ids) {
  NoGradGuard ng;
  return m.forward(Tensor::from_ints(ids, {1, int64_t(ids.size())}));
}

}  // namespace

TEST_F(Gguf, GptRoundTripsThroughEveryType) {
  // A GPT with a padded vocabulary and an untied head, and a byte-level BPE tokenizer trained here.
  GPTConfig c = tiny_gpt(320);
  c.tie_embeddings = false;
  GPT m(c);
  m.init_weights(5);
  auto tok = train_bpe_tokenizer("the cat sat on the mat, then the cat sat on the hat; 12 345 6789", 300);
  const std::vector<int32_t> ids = {1, 40, 260, 7, 299, 3};
  const Tensor ref = logits_of(m, ids);
  const std::pair<const char*, double> tols[] = {
      {"f32", 0}, {"f16", 2e-3}, {"bf16", 2e-2}, {"q8_0", 2e-2}, {"q4_0", 0.3}};
  for (auto [type, tol] : tols) {
    const std::string p = path(std::string(type) + ".gguf");
    save_gguf(p, m, *tok, *ggml_type_from_name(type), "tiny");
    EXPECT_EQ(checkpoint_kind(p), "gpt");
    LoadedModel lm = load_model(p);
    EXPECT_EQ(lm.model->config().to_json(), c.to_json()) << type;
    EXPECT_EQ(lm.tokenizer->to_json(), tok->to_json()) << type;  // the padding is the model's only
    const double err = aigc::testing::max_abs_diff(logits_of(*lm.model, ids), ref);
    EXPECT_LE(err, tol) << type;
    if (tol > 0) {
      EXPECT_GT(err, 0) << type;  // the type was really applied
    }
    GgufReader r(p);
    EXPECT_EQ(r.find("blk.0.attn_qkv.weight")->type, *ggml_type_from_name(type));
    EXPECT_EQ(r.find("blk.0.attn_qkv.bias")->type, GgmlType::F32);
    EXPECT_EQ(r.find("blk.1.ffn_down.weight")->dims, (std::vector<int64_t>{256, 64}));
  }
  // Tied embeddings write no output.weight; the raw-bytes tokenizer becomes 256 byte tokens without merges.
  GPT tied(tiny_gpt(256));
  tied.init_weights(6);
  auto bytes = make_bytes_tokenizer();
  save_gguf(path("tied.gguf"), tied, *bytes, GgmlType::F32, "tied");
  EXPECT_EQ(GgufReader(path("tied.gguf")).find("output.weight"), nullptr);
  LoadedModel lt = load_model(path("tied.gguf"));
  EXPECT_TRUE(lt.model->config().tie_embeddings);
  const std::vector<int32_t> byte_ids = {1, 40, 200, 7, 255, 3};
  EXPECT_EQ(aigc::testing::max_abs_diff(logits_of(*lt.model, byte_ids), logits_of(tied, byte_ids)), 0.0);
  const std::string text = "any bytes: \xff\x00\x80 ok";
  EXPECT_EQ(lt.tokenizer->encode(text), bytes->encode(text));
}

TEST_F(Gguf, LlamaRoundTripsWithPermutedRotaryRowsAndFrequencyFactors) {
  // Grouped-query heads, a head size unlike n_embd / n_head, llama3 scaling (written as rope_freqs.weight).
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.head_dim = 8, c.n_embd = 32, c.n_hidden = 64;
  c.block_size = 32, c.vocab_size = 320, c.rope_theta = 500000.0f;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8.0f, c.rope_scaling.original_max_position = 16;
  GPT m(c);
  m.init_weights(9);
  auto tok = train_bpe_tokenizer("the cat sat on the mat, then the cat sat on the hat; 12 345 6789", 300);
  const std::vector<int32_t> ids = {1, 40, 260, 7, 299, 3, 17, 5};
  const Tensor ref = logits_of(m, ids);
  save_gguf(path("llama.gguf"), m, *tok, GgmlType::F32, "tiny-llama");
  GgufReader r(path("llama.gguf"));
  EXPECT_EQ(r.get_string("general.architecture"), "llama");
  EXPECT_EQ(r.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(r.get_uint("llama.attention.key_length"), 8u);
  EXPECT_EQ(r.find("blk.1.attn_k.weight")->dims, (std::vector<int64_t>{32, 16}));
  ASSERT_NE(r.find("rope_freqs.weight"), nullptr);
  // attn_q's rows are in llama.cpp's adjacent-pair order: row 2j + s of a head is aigc's row s hd/2 + j.
  std::vector<float> q(32 * 32);
  r.read_f32_into("blk.0.attn_q.weight", q.data(), {32, 32});
  const float* w = m.params().find("model.layers.0.self_attn.q_proj.weight")->value.f32();
  EXPECT_EQ(q[(8 + 2 * 3 + 1) * 32 + 5], w[(8 + 4 + 3) * 32 + 5]);  // head 1, j = 3, s = 1, column 5
  EXPECT_EQ(q[(8 + 2 * 3) * 32 + 5], w[(8 + 3) * 32 + 5]);
  LoadedModel lm = load_model(path("llama.gguf"));
  const GPTConfig& back = lm.model->config();
  EXPECT_TRUE(back.is_llama());
  EXPECT_EQ(back.kv_heads(), 2);
  EXPECT_EQ(back.head_size(), 8);
  EXPECT_EQ(back.rope_scaling.type, "factors");  // llama3 as GGUF carries it: one divisor per frequency
  const std::vector<float> f0 = c.rope_inv_freq(), f1 = back.rope_inv_freq();
  for (size_t i = 0; i < f0.size(); i++) EXPECT_NEAR(f1[i], f0[i], 1e-7f * f0[i]) << i;
  EXPECT_LE(aigc::testing::max_abs_diff(logits_of(*lm.model, ids), ref), 1e-5);
  // A second trip keeps the factors as they are.
  save_gguf(path("llama2.gguf"), *lm.model, *lm.tokenizer, GgmlType::F32, "again");
  EXPECT_EQ(load_model(path("llama2.gguf")).model->config().to_json(), back.to_json());
}

TEST_F(Gguf, UnsupportedModelsAreRefusedClearly) {
  GPTConfig post = GPTConfig::transformer_style();
  post.n_layer = 1, post.n_head = 2, post.n_embd = 32, post.block_size = 16, post.vocab_size = 256;
  GPT m(post);
  auto bytes = make_bytes_tokenizer();
  try {
    save_gguf(path("x.gguf"), m, *bytes, GgmlType::F32, "x");
    ADD_FAILURE() << "exported a post-LN model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("norm \"post\""), std::string::npos) << e.what();
  }
  GPT g(tiny_gpt(64));
  auto chars = make_char_tokenizer("abc");
  EXPECT_THROW(save_gguf(path("c.gguf"), g, *chars, GgmlType::F32, "c"), Error);
  // Byte-level BPE with a pre-tokenizer aigc does not run (DeepSeek's) is refused, not encoded with GPT-2's.
  {
    auto bpe = train_bpe_tokenizer("aa ab ba bb", 260);
    GPT g260(tiny_gpt(260));
    save_gguf(path("pre.gguf"), g260, *bpe, GgmlType::F32, "pre");
    GgufReader r(path("pre.gguf"));
    GgufWriter w2;
    for (const auto& [k, val] : r.metadata())
      w2.set(k, k == "tokenizer.ggml.pre" ? GgufValue::of_string("deepseek-llm") : val);
    for (const GgufTensorInfo& t : r.tensors()) w2.add_tensor(t.name, t.type, t.dims, r.data(t), t.nbytes);
    w2.write(path("llama3.gguf"));
    try {
      load_model(path("llama3.gguf"));
      ADD_FAILURE() << "read a deepseek-llm vocabulary with GPT-2's pre-tokenizer";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.pre \"deepseek-llm\" is not supported"), std::string::npos)
          << e.what();
    }
  }
  // A GGUF of another architecture names it.
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("mamba"));
  w.write(path("mamba.gguf"));
  try {
    load_model(path("mamba.gguf"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"mamba\" is not supported"), std::string::npos) << e.what();
  }
}

// SentencePiece vocabularies (tokenizer.ggml.model "llama"): what is malformed is refused naming it, and a llama
// model with one goes through a GGUF file and back with the same tokenizer.
TEST_F(Gguf, SentencePieceVocabulariesAreCheckedAndRoundTrip) {
  const std::string sp = "\xE2\x96\x81";
  SpmVocab v;
  v.tokens = {"<unk>", "<s>", "</s>", "<0x0A>", sp, "a", "b", sp + "a", "ab", sp + "ba", "ba", "<|im_start|>"};
  v.types = {2, 3, 3, 6, 1, 1, 1, 1, 1, 1, 1, 3};
  for (size_t i = 0; i < v.tokens.size(); i++) v.scores.push_back(-float(i));
  v.unk = 0, v.bos = 1, v.eos = 2;
  // A ChatML template (tokenizer.chat_template), which the file keeps and the chat renderer knows.
  v.chat_template =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
      "}}{% endif %}";
  const auto tok = tokenizer_from_spm(v);
  EXPECT_EQ(tok->chat_template(), v.chat_template);
  // The best score joins first: "▁a" (-7) before "ab" (-8), after which "b" stays alone.
  EXPECT_EQ(tok->encode("ab"), (std::vector<int>{7, 6}));
  // "ab" (-8), then "ba" (-10), then "▁ba" (-9) once "ba" exists; the newline is a byte token.
  EXPECT_EQ(tok->encode("ba\nab"), (std::vector<int>{9, 3, 8}));
  EXPECT_EQ(tok->encode("a<|im_start|>"), (std::vector<int>{7, 11}));  // control tokens match whole
  EXPECT_EQ(tok->prefix_ids(), std::vector<int>{1});
  EXPECT_EQ(tok->decode_text({7, 6, 3, 8}), "ab\nab");

  // Equal scores (what files converted from a tokenizer.json alone hold): the leftmost pair joins first, whatever
  // the joined tokens' ids. "▁abc": "ab" before "bc", though "bc" has the lower id.
  {
    SpmVocab tied;
    tied.tokens = {"<unk>", sp, "a", "b", "c", "bc", "ab"};
    tied.types = {2, 1, 1, 1, 1, 1, 1};
    tied.scores.assign(tied.tokens.size(), -1000.0f);
    tied.unk = 0;
    const auto t = tokenizer_from_spm(tied);
    EXPECT_EQ(t->encode("abc"), (std::vector<int>{1, 6, 4}));
    EXPECT_EQ(t->encode("bcab"), (std::vector<int>{1, 5, 6}));
    GPTConfig tc = GPTConfig::llama_style();
    tc.n_layer = 1, tc.n_head = 2, tc.n_kv_head = 1, tc.n_embd = 32, tc.n_hidden = 64, tc.block_size = 16;
    tc.vocab_size = 8;
    GPT tm(tc);
    save_gguf(path("tied.gguf"), tm, *t, GgmlType::F32, "tied");
    const std::vector<float> scores = GgufReader(path("tied.gguf")).get_floats("tokenizer.ggml.scores");
    EXPECT_EQ(scores[5], scores[6]);  // the file keeps the tie
    EXPECT_EQ(load_model(path("tied.gguf")).tokenizer->encode("abc"), (std::vector<int>{1, 6, 4}));
  }
  auto refused = [&](SpmVocab bad, const std::string& want) {
    try {
      tokenizer_from_spm(bad);
      ADD_FAILURE() << "accepted a vocabulary that should name: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  SpmVocab bad = v;
  bad.scores.pop_back();
  refused(bad, "11 scores for 12 tokens");
  bad = v, bad.tokens[6] = "a";
  refused(bad, "token 6 \"a\" repeats token 5");
  bad = v, bad.tokens[6] = "";
  refused(bad, "token 6 is empty");
  bad = v, bad.tokens[6] = "\xff";
  refused(bad, "not valid UTF-8");
  bad = v, bad.eos = 12;
  refused(bad, "the eos id 12 is not a token");

  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 1, c.n_head = 2, c.n_kv_head = 1, c.n_embd = 32, c.n_hidden = 64, c.block_size = 16;
  c.vocab_size = 16;
  GPT m(c);
  save_gguf(path("spm.gguf"), m, *tok, GgmlType::F32, "spm");
  const GgufReader r(path("spm.gguf"));
  EXPECT_EQ(r.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(r.get_strings("tokenizer.ggml.tokens").size(), 16u);  // padded to the model's rows
  const LoadedModel back = load_model(path("spm.gguf"));
  for (const std::string s : {"ab", "ba\nab", " b a ", "a<|im_start|>", "\xF0\x9F\x99\x82"})
    EXPECT_EQ(back.tokenizer->encode(s), tok->encode(s)) << s;
  EXPECT_EQ(back.tokenizer->eos_id(), std::optional<int>(2));
  EXPECT_EQ(back.tokenizer->chat_template(), v.chat_template);
  EXPECT_EQ(chat_format(back.tokenizer->chat_template()), ChatFormat::kChatML);
}

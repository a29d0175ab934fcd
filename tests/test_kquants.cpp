// ggml's k-quants (Q4_K, Q5_K, Q6_K) in aigc: the quantizer's error against each type's steps, GGUF files written
// with them (the q4_k_m recipe, the fallbacks) and read back. That the bytes are the layouts llama.cpp reads is
// checked by llama.cpp itself (test_llama_cpp.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "aigc/autograd.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/gguf.h"
#include "aigc/half.h"
#include "test_util.h"

using namespace aigc;

namespace {

// Rows as weights look: normal values whose spread changes from one 32-value sub-block to the next, a few large
// outliers, an all-zero super-block, an all-positive sub-block and a constant one.
std::vector<float> weight_like(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) x[size_t(i)] = nd(rng) * (0.5f + float((i / 32) % 5));
  for (int k = 0; k < 8; k++) x[rng() % x.size()] *= 8;
  std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
  for (int i = 512; i < 544; i++) x[size_t(i)] = 1 + std::fabs(x[size_t(i)]);
  std::fill(x.begin() + 544, x.begin() + 576, 0.25f);
  return x;
}

double rms_error(GgmlType type, const std::vector<float>& x, std::vector<float>& back) {
  const std::string q = convert_from_f32(type, x.data(), int64_t(x.size()));
  EXPECT_EQ(int64_t(q.size()), int64_t(x.size()) / ggml_type_info(uint32_t(type))->block_elems *
                                   ggml_type_info(uint32_t(type))->block_bytes);
  back.assign(x.size(), -1.0f);
  dequantize(type, reinterpret_cast<const uint8_t*>(q.data()), back.data(), int64_t(x.size()));
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); i++) e += (back[i] - x[i]) * double(back[i] - x[i]), s += double(x[i]) * x[i];
  return std::sqrt(e / s);
}

}  // namespace

// Each k-quant decodes within a small fraction of the values' spread, finer with each added bit, and Q4_K (4.5
// bits a value) finer than Q4_0 (also 4.5): its sub-blocks have an offset and their own scale. Zeros stay zeros,
// a constant sub-block comes back near that constant (k-quant scales have 6 bits against the super-block's
// largest), and an all-positive one stays positive.
TEST(KQuants, EachTypeDecodesFinerWithEachBit) {
  const std::vector<float> x = weight_like(256 * 48, 1);
  std::vector<float> back;
  std::map<std::string, double> err;
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q5_K, GgmlType::Q6_K,
                     GgmlType::Q8_0}) {
    const std::string name = ggml_type_info(uint32_t(t))->name;
    err[name] = rms_error(t, x, back);
    std::printf("[ k-quants ] %s: rms error %.4f of the values' rms\n", name.c_str(), err[name]);
    for (int i = 256; i < 512; i++) ASSERT_EQ(back[size_t(i)], 0.0f) << name << " " << i;
    for (int i = 544; i < 576; i++) EXPECT_NEAR(back[size_t(i)], 0.25f, 0.25f * 0.03f) << name << " " << i;
    for (int i = 512; i < 544; i++) EXPECT_GT(back[size_t(i)], 0.5f) << name << " " << i;
  }
  // Measured 0.098, 0.077, 0.049, 0.039, 0.039, 0.021 and 0.0063 (Q4_0, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0).
  EXPECT_LT(err["q5_0"], 0.6 * err["q4_0"]);
  EXPECT_LT(err["q5_1"], err["q5_0"]);
  EXPECT_LT(err["q4_k"], 0.85 * err["q4_0"]);
  EXPECT_LT(err["q5_k"], 0.6 * err["q4_k"]);
  EXPECT_LT(err["q6_k"], 0.6 * err["q5_k"]);
  EXPECT_LT(err["q8_0"], 0.6 * err["q6_k"]);
  EXPECT_LT(err["q4_k"], 0.09);
  EXPECT_THROW(quantize_kquant(GgmlType::Q4_K, x.data(), 255), Error);
  EXPECT_THROW(quantize_kquant(GgmlType::Q8_0, x.data(), 256), Error);
}

// Q4_K's 6-bit scales and mins for sub-blocks 4..7 spill their top bits into bytes 0..7: a super-block whose
// sub-blocks differ 50x in spread needs every one of those bits, and decodes each sub-block within its own step.
TEST(KQuants, SubBlockScalesUseAllSixBits) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; i++) x[size_t(i)] = float((i * 7) % 32 - 10) * (1 + 7 * float(i / 32)) / 16;
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K}) {
    const std::string q = quantize_kquant(t, x.data(), 256);
    std::vector<float> back(256);
    dequantize_kquant(t, reinterpret_cast<const uint8_t*>(q.data()), back.data(), 256);
    const float levels = t == GgmlType::Q4_K ? 15 : 31;
    for (int j = 0; j < 8; j++) {
      const float lo = *std::min_element(x.begin() + 32 * j, x.begin() + 32 * j + 32);
      const float hi = *std::max_element(x.begin() + 32 * j, x.begin() + 32 * j + 32);
      // Half a step, and the 6-bit rounding of the scale (1/63 of the largest) over the range.
      const float tol = (hi - std::min(lo, 0.0f)) / levels * 0.5f + (8 * 7 + 1) * 31.0f / 16 / 63 * 1.1f;
      for (int i = 32 * j; i < 32 * j + 32; i++)
        EXPECT_NEAR(back[size_t(i)], x[size_t(i)], tol) << ggml_type_info(uint32_t(t))->name << " " << i;
    }
  }
}

// The q4_k_m recipe (after llama.cpp's): Q6_K for the head and for attn_v / ffn_down in the "more bits" layers,
// Q4_K elsewhere, matrices whose rows are not a multiple of 256 as Q8_0, and general.file_type 15. Read back, the
// file decodes to the values of its blocks, and, for inference only, runs as q8_0 with the same logits as the
// full load. The Q6_K head's 256 rows are converted in 4 chunks of 64 rows.
TEST(KQuants, MediumMixFilesFollowTheRecipeAndLoad) {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 8, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 256, c.n_hidden = 320, c.block_size = 32;
  c.vocab_size = 256, c.tie_embeddings = false;
  GPT m(c);
  m.init_weights(3);
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_kquants");
  const std::string file = (dir / "m.gguf").string();
  const std::optional<GgufTypes> types = GgufTypes::from_name("Q4_K_M");
  ASSERT_TRUE(types);
  save_gguf(file, m, *bytes, *types, "m");
  {
    GgufReader g(file);
    EXPECT_EQ(g.get_uint("general.file_type"), 15u);
    auto type = [&](const std::string& n) { return ggml_type_info(uint32_t(g.find(n)->type))->name; };
    EXPECT_STREQ(type("output.weight"), "q6_k");
    EXPECT_STREQ(type("token_embd.weight"), "q4_k");
    EXPECT_STREQ(type("blk.0.attn_q.weight"), "q4_k");
    EXPECT_STREQ(type("blk.3.ffn_gate.weight"), "q4_k");
    // More bits in layer 0 (the first eighth), 3 and 6 (every third from there) and 7 (the last eighth).
    for (int l = 0; l < 8; l++) {
      const bool more = l == 0 || l == 3 || l == 6 || l == 7;
      EXPECT_STREQ(type("blk." + std::to_string(l) + ".attn_v.weight"), more ? "q6_k" : "q4_k") << l;
      // ffn_down's rows are 320 long: not whole super-blocks, so Q8_0 whatever the layer.
      EXPECT_STREQ(type("blk." + std::to_string(l) + ".ffn_down.weight"), "q8_0") << l;
    }
    EXPECT_STREQ(type("blk.0.attn_norm.weight"), "f32");
  }
  // Q4_K matrices run as Q4_1 (q|k|v and gate|up joined in it where all are Q4_K), the rest as Q8_0: between a
  // q4_0 file's bytes and a q8_0 file's.
  LoadedModel full = load_model(file), blocks = load_model(file, true);
  EXPECT_EQ(full.model->inference_dtype(), DType::Q4_1);
  EXPECT_FALSE(full.model->inference_only());
  ASSERT_TRUE(blocks.model->inference_only());
  EXPECT_EQ(blocks.model->inference_dtype(), DType::Q4_1);
  EXPECT_EQ(blocks.model->inference_weight_bytes(), full.model->inference_weight_bytes());
  int64_t q8 = 0, q4 = 0;
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    save_gguf((dir / "o.gguf").string(), m, *bytes, t, "o");
    (t == GgmlType::Q8_0 ? q8 : q4) = load_model((dir / "o.gguf").string(), true).model->inference_weight_bytes();
  }
  std::printf("[ k-quants ] inference weights: q4_k_m %lld bytes, q4_0 %lld, q8_0 %lld\n",
              (long long)blocks.model->inference_weight_bytes(), (long long)q4, (long long)q8);
  EXPECT_GT(blocks.model->inference_weight_bytes(), q4);
  EXPECT_LT(blocks.model->inference_weight_bytes(), (q4 + q8) / 2);
  NoGradGuard ng;
  const Tensor x = Tensor::from_ints({5, 17, 250, 3, 99}, {1, 5});
  const std::vector<float> a = full.model->forward(x).to_vector(), b = blocks.model->forward(x).to_vector();
  EXPECT_EQ(a, b);
  {  // Both loads convert the Q6_K head in chunks: against the same file with the head stored as the q8_0 of its
     // whole dequantized values (taken as they are), the logits are the same.
    GgufReader r(file);
    const GgufTensorInfo& head = *r.find("output.weight");
    std::vector<float> v(size_t(head.dims[0] * head.dims[1]));
    dequantize(head.type, r.data(head), v.data(), int64_t(v.size()));
    const std::string q8 = quantize_q8_0(v.data(), int64_t(v.size()));
    const std::string q8_file = (dir / "q8_head.gguf").string();
    aigc::testing::write_gguf_replacing(r, q8_file, head.name, GgmlType::Q8_0, q8.data(), q8.size());
    EXPECT_EQ(load_model(q8_file, true).model->forward(x).to_vector(), b);
  }
  // And closer to the f32 model's logits than the q4_0 file's (the same bits a weight, where not 6 or 8).
  const std::vector<float> ref = m.forward(x).to_vector();
  auto distance = [&](const std::vector<float>& y) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < ref.size(); i++) diff += (y[i] - ref[i]) * double(y[i] - ref[i]), norm += ref[i] * ref[i];
    return std::sqrt(diff / norm);
  };
  save_gguf(file, m, *bytes, GgmlType::Q4_0, "m");
  const double d_q4_0 = distance(load_model(file).model->forward(x).to_vector());
  std::printf("[ k-quants ] logits' relative distance from f32: q4_k_m %.3f, q4_0 %.3f\n", distance(a), d_q4_0);
  EXPECT_LT(distance(a), d_q4_0);
  std::filesystem::remove_all(dir);
}

// A k-quant file whose attn_q is f16 (a per-tensor override): that matrix is read as values, not taken as blocks of
// the type the file's others run in. Loaded for inference only, its logits are those of the same file with attn_q
// in f32 holding the same values (taken as bf16 blocks, the f16 bytes gave other numbers, with no error).
TEST(KQuants, MatricesInFloatTypesAreReadAsValuesInKQuantFiles) {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 1, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 256, c.n_hidden = 512, c.block_size = 32;
  c.vocab_size = 256;
  GPT m(c);
  m.init_weights(4);
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_kquants_f16");
  const std::string kq = (dir / "kq.gguf").string();
  save_gguf(kq, m, *bytes, GgmlType::Q6_K, "m");
  const GgufReader r(kq);
  const GgufTensorInfo& t = *r.find("blk.0.attn_q.weight");
  std::vector<float> q(size_t(t.numel()));  // attn_q's values, rounded to f16, and their f16 bytes
  r.read_f32_into(t.name, q.data(), t.dims);
  std::vector<uint16_t> q16(q.size());
  for (size_t i = 0; i < q.size(); i++) q16[i] = io::f32_to_f16(q[i]), q[i] = io::f16_to_f32(q16[i]);
  const std::string f16_file = (dir / "f16.gguf").string(), f32_file = (dir / "f32.gguf").string();
  aigc::testing::write_gguf_replacing(r, f16_file, t.name, GgmlType::F16, q16.data(), q16.size() * sizeof(uint16_t));
  aigc::testing::write_gguf_replacing(r, f32_file, t.name, GgmlType::F32, q.data(), q.size() * sizeof(float));
  LoadedModel f16 = load_model(f16_file, true), f32 = load_model(f32_file, true);
  ASSERT_TRUE(f16.model->inference_only());
  NoGradGuard ng;
  const Tensor x = Tensor::from_ints({5, 17, 250, 3}, {1, 4});
  EXPECT_EQ(f16.model->forward(x).to_vector(), f32.model->forward(x).to_vector());
  std::filesystem::remove_all(dir);
}

// Quantized inference: the kernel path the CPU takes, GPT decoding from Q8_0 / Q4_0 blocks, and GGUF files that
// keep their blocks through aigc. The kernels themselves are checked against the reference backend in the op-case
// table (test_backend_ops.cpp), on every path.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdlib>
#include <functional>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/gguf.h"
#include "aigc/ops.h"
#include "aigc/quant.h"
#include "aigc/rng.h"
#include "test_util.h"

using namespace aigc;

TEST(Quant, KernelPathIsTheWidestTheCpuHasUnlessNarrowed) {
  std::string want = "scalar";
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) want = "avx2";
  if (want == "avx2" && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    want = "avx512-vnni";
#endif
  const char* env = std::getenv("AIGC_QUANT_ISA");
  if (env && std::string(env) == "scalar") want = "scalar";
  if (env && std::string(env) == "avx2" && want == "avx512-vnni") want = "avx2";
  EXPECT_EQ(quant_kernel_isa(), want);
  std::printf("[ quant ] kernel path: %s\n", quant_kernel_isa());
}

TEST(Quant, LinearRefusesGradientsAndPartialBlocks) {
  // 127 is a whole step of a block whose scale is exactly 1 (amax / 127).
  Tensor w = Tensor::from_vector(std::vector<float>(64, 127.0f), {2, 32});
  Tensor q = ops::quantize(w, DType::Q8_0);
  EXPECT_EQ(q.dtype(), DType::Q8_0);
  Tensor x = Tensor::from_vector(std::vector<float>(32, 127.0f), {1, 32});
  x.set_requires_grad(true);
  EXPECT_THROW(ops::linear(x, q, Tensor()), Error);  // inference only
  {
    NoGradGuard ng;
    Tensor y = ops::linear(x, q, Tensor());
    EXPECT_EQ(y.to_vector()[0], 32.0f * 127 * 127);
  }
  EXPECT_THROW(ops::quantize(Tensor::from_vector(std::vector<float>(40, 1.0f), {2, 20}), DType::Q4_0), Error);
}

// Inference joins matrices that read the same input (q|k|v, gate|up) and splits the product after: one row gives
// views, several rows copies; either way each piece is the product of its own rows.
TEST(Quant, JoinedProductsSplitIntoEachMatrixsProduct) {
  NoGradGuard ng;
  Rng rng(3);
  const std::vector<int64_t> rows = {48, 16, 32};
  std::vector<Tensor> ws;
  for (int64_t r : rows) {
    std::vector<float> v(size_t(r * 64));
    for (float& f : v) f = float(rng.uniform() - 0.5);
    ws.push_back(Tensor::from_vector(v, {r, 64}));
  }
  const Tensor joined =
      ops::concat_channels(ops::concat_channels(ws[0].view({1, -1}), ws[1].view({1, -1})), ws[2].view({1, -1}))
          .view({96, 64});
  for (int64_t n : {1, 3}) {
    std::vector<float> xv(size_t(n * 64));
    for (float& f : xv) f = float(rng.uniform() - 0.5);
    const Tensor x = Tensor::from_vector(xv, {n, 1, 64});
    const std::vector<Tensor> parts = ops::split_last(ops::linear(x, joined, Tensor()), rows);
    ASSERT_EQ(parts.size(), rows.size());
    for (size_t i = 0; i < rows.size(); i++) {
      EXPECT_EQ(parts[i].shape(), (Shape{n, 1, rows[i]}));
      // The same sums, though the product's kernel may block a wider matrix differently: equal to rounding.
      const std::vector<float> got = parts[i].to_vector(), want = ops::linear(x, ws[i], Tensor()).to_vector();
      ASSERT_EQ(got.size(), want.size());
      for (size_t j = 0; j < got.size(); j++) EXPECT_NEAR(got[j], want[j], 1e-5) << "piece " << i << ", n=" << n;
    }
  }
  // One row that starts inside its storage (the second row of two): the pieces are its parts.
  std::vector<float> twenty(20);
  for (size_t i = 0; i < twenty.size(); i++) twenty[i] = float(i);
  const Tensor row = Tensor::from_vector(twenty, {2, 10}).narrow0(1, 1);
  const std::vector<Tensor> ps = ops::split_last(row, {3, 7});
  EXPECT_EQ(ps[0].shape(), (Shape{1, 3}));
  EXPECT_EQ(ps[1].shape(), (Shape{1, 7}));
  EXPECT_EQ(ps[1].f32(), row.f32() + 3);  // views of the row, not copies
  EXPECT_EQ(ps[0].to_vector(), (std::vector<float>{10, 11, 12}));
  EXPECT_EQ(ps[1].to_vector(), (std::vector<float>{13, 14, 15, 16, 17, 18, 19}));
  EXPECT_THROW(ops::split_last(Tensor::zeros({2, 10}), {4, 5}), Error);  // the sizes must cover the row
  EXPECT_THROW(ops::split_last(Tensor::zeros({2, 10}), {10, 0}), Error);
}

TEST(Quant, Rows16IsTheSpecifiedReorderingOfTheBlocks) {
  // Every byte of a Q8_0 / Q4_0 matrix with 2 whole groups and a tail of 5 rows lands where quant.h says, and
  // reading the layout back gives the blocks again.
  const int64_t rows = 37, cols = 96, nb = cols / 32;
  Rng rng(11);
  std::vector<float> v(size_t(rows * cols));
  for (float& f : v) f = float(rng.normal());
  for (DType q : {DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(q));
    const std::string plain =
        q == DType::Q8_0 ? quantize_q8_0(v.data(), rows * cols) : quantize_q4_0(v.data(), rows * cols);
    std::string packed(plain.size(), '\0'), back(plain.size(), '\0');
    interleave_rows16(q, plain.data(), packed.data(), rows, cols);
    const int64_t block = q == DType::Q8_0 ? 34 : 18, quads = (block - 2) / 4, tile = 16 * block;
    for (int64_t r = 0; r < 32; r++)
      for (int64_t b = 0; b < nb; b++) {
        const int64_t p = (r * nb + b) * block, t = (r / 16 * nb + b) * tile;
        EXPECT_EQ(packed.substr(size_t(t + 2 * (r % 16)), 2), plain.substr(size_t(p), 2)) << r << " " << b;
        for (int64_t j = 0; j < quads; j++)
          EXPECT_EQ(packed.substr(size_t(t + 32 + 64 * j + 4 * (r % 16)), 4), plain.substr(size_t(p + 2 + 4 * j), 4));
      }
    const size_t tail = size_t(32 * nb * block);
    EXPECT_EQ(packed.substr(tail), plain.substr(tail));  // rows 32..36 stay plain
    deinterleave_rows16(q, packed.data(), back.data(), rows, cols);
    EXPECT_EQ(back, plain);
    std::string row(size_t(nb * block), '\0');
    for (int64_t r = 0; r < rows; r++) {  // and one row alone, in a group or past them
      rows16_row(q, packed.data(), row.data(), rows, cols, r);
      EXPECT_EQ(row, plain.substr(size_t(r * nb * block), row.size())) << r;
    }
    // linear reads either layout to the same outputs
    Tensor w = Tensor::from_vector(v, {rows, cols}),
           x = Tensor::from_vector(std::vector<float>(v.begin(), v.begin() + 3 * cols), {3, cols});
    NoGradGuard ng;
    const Tensor qw = ops::quantize(w, q), rw = ops::to_rows16(qw);
    EXPECT_EQ(rw.layout(), Layout::Rows16);
    const std::vector<float> a = ops::linear(x, qw, Tensor()).to_vector(), c = ops::linear(x, rw, Tensor()).to_vector();
    for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(a[i], c[i], 1e-4f * (1 + std::fabs(a[i])));
    // embedding_rows reads a row of either layout (or bf16) as exactly its values
    const Tensor ids = Tensor::from_ints({36, 0, 17, 31}, {2, 2});
    std::vector<float> all(v.size()), want_bf16(v.size());
    for (int64_t b = 0; b < rows * nb; b++)
      if (q == DType::Q8_0)
        dequantize_block(reinterpret_cast<const BlockQ8_0*>(plain.data())[b], all.data() + b * 32);
      else
        dequantize_block(reinterpret_cast<const BlockQ4_0*>(plain.data())[b], all.data() + b * 32);
    for (size_t i = 0; i < v.size(); i++) want_bf16[i] = io::bf16_to_f32(io::f32_to_bf16(v[i]));
    for (const Tensor& t : {qw, rw, ops::to_bf16(w)}) {
      const std::vector<float> got = ops::embedding_rows(ids, t).to_vector();
      const std::vector<float>& from = t.dtype() == DType::BF16 ? want_bf16 : all;
      ASSERT_EQ(got.size(), size_t(4 * cols));
      for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < cols; j++)
          EXPECT_EQ(got[size_t(i * cols + j)], from[size_t(ids.i32()[i] * cols + j)]) << dtype_name(t.dtype());
    }
    EXPECT_THROW(ops::embedding_rows(Tensor::from_ints({37}, {1, 1}), rw), Error);
  }
  EXPECT_THROW(ops::to_rows16(Tensor::from_vector(std::vector<float>(64, 1.0f), {2, 32})), Error);
}

TEST(Quant, GptDecodesFromBlocksAndGgufFilesKeepThem) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.block_size = 32, c.vocab_size = 256;
  GPT m(c);
  m.init_weights(3);
  const std::vector<int32_t> ids = {5, 17, 250, 3, 99, 100, 7};
  NoGradGuard ng;
  const Tensor ref = m.forward(Tensor::from_ints(ids, {1, 7}));
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_quant");
  for (DType q : {DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(q));
    m.set_inference_dtype(q);
    const Tensor got = m.forward(Tensor::from_ints(ids, {1, 7}));
    const double err = aigc::testing::max_abs_diff(got, ref);
    EXPECT_GT(err, 0);  // the blocks are used
    EXPECT_LT(err, q == DType::Q8_0 ? 0.02 : 0.1);
    // The KV-cache path gives the same logits as the full forward (the same kernels).
    KVCache cache = m.make_cache(1, 32);
    const Tensor last = m.forward_cached(Tensor::from_ints(ids, {1, 7}), cache);
    const std::vector<float> a = last.to_vector(), full = got.to_vector();
    for (int64_t v = 0; v < 256; v++) EXPECT_NEAR(a[size_t(v)], full[size_t(6 * 256 + v)], 1e-4);
    // A GGUF of this type loads into the same blocks: written again, it is the same file.
    const std::string p = (dir / "m.gguf").string(), p2 = (dir / "m2.gguf").string();
    m.set_inference_dtype(DType::F32);
    save_gguf(p, m, *bytes, q == DType::Q8_0 ? GgmlType::Q8_0 : GgmlType::Q4_0, "m");
    LoadedModel lm = load_model(p);
    EXPECT_EQ(lm.model->inference_dtype(), q);
    save_gguf(p2, *lm.model, *lm.tokenizer, q == DType::Q8_0 ? GgmlType::Q8_0 : GgmlType::Q4_0, "m");
    EXPECT_TRUE(read_file(p) == read_file(p2));
    m.set_inference_dtype(q);
  }
  std::filesystem::remove_all(dir);
}

// Loaded for inference only, a q8_0 / q4_0 GGUF file's matrices are its blocks as they are (joined, reordered,
// llama's q/k rows put back in aigc's order) and never f32: the same logits as the full load, which decodes the
// blocks to f32 and quantizes them again. Such a model refuses what needs f32 weights, naming why.
TEST(Quant, InferenceOnlyLoadsTakeTheFilesBlocksAsTheyAre) {
  GPTConfig llama = GPTConfig::llama_style();
  llama.n_layer = 2, llama.n_head = 4, llama.n_kv_head = 2, llama.n_embd = 64, llama.n_hidden = 96;
  llama.block_size = 32, llama.vocab_size = 256;
  GPTConfig gpt2;
  gpt2.n_layer = 2, gpt2.n_head = 2, gpt2.n_embd = 64, gpt2.block_size = 32, gpt2.vocab_size = 256;
  // Keys and values of 8 rows: q|k|v's parts do not end on Rows16's groups of 16 rows (joined through one buffer);
  // an output head of 4104 rows, copied from the file in chunks (bf16 3, q8_0 2, q4_0 1), the last ending inside a
  // group of 16 rows.
  GPTConfig odd = llama;
  odd.n_head = 8, odd.n_kv_head = 1, odd.vocab_size = 4104;
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_quant_blocks");
  const std::vector<int32_t> ids = {5, 17, 250, 3, 99, 100, 7};
  const std::vector<std::pair<std::string, GPTConfig>> configs = {
      {"llama", llama}, {"gpt2", gpt2}, {"llama 8-row kv", odd}};
  for (const auto& [config_name, c] : configs)
    for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::BF16}) {
      SCOPED_TRACE(config_name + " " + std::to_string(int(type)));
      GPT m(c);
      m.init_weights(5);
      const std::string file = (dir / "m.gguf").string();
      save_gguf(file, m, *bytes, type, "m");
      LoadedModel full = load_model(file), blocks = load_model(file, true);
      EXPECT_FALSE(full.model->inference_only());
      ASSERT_TRUE(blocks.model->inference_only());
      EXPECT_EQ(blocks.model->inference_dtype(), full.model->inference_dtype());
      {
        NoGradGuard ng;
        const Tensor x = Tensor::from_ints(ids, {1, 7});
        EXPECT_EQ(blocks.model->forward(x).to_vector(), full.model->forward(x).to_vector());
        KVCache a = full.model->make_cache(1, 16), b = blocks.model->make_cache(1, 16);
        EXPECT_EQ(blocks.model->forward_cached(x, b).to_vector(), full.model->forward_cached(x, a).to_vector());
        EXPECT_EQ(blocks.model->forward_decode({9}, {0}, {7}, b).to_vector(),
                  full.model->forward_decode({9}, {0}, {7}, a).to_vector());
      }
      auto refuses = [](const std::function<void()>& f, const std::string& want) {
        try {
          f();
          ADD_FAILURE() << "no error naming: " << want;
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
        }
      };
      GPT& bm = *blocks.model;
      refuses([&] { bm.set_inference_dtype(DType::BF16); }, "loaded for inference");
      refuses([&] { save_gguf((dir / "again.gguf").string(), bm, *bytes, GgmlType::F32, "m"); }, "inference only");
      refuses([&] { save_checkpoint((dir / "c.safetensors").string(), bm, *bytes, nullptr, "{}"); }, "inference only");
      refuses([&] { bm.loss(Tensor::from_ints(ids, {1, 7}), Tensor::from_ints(ids, {1, 7})); }, "cannot train");
    }
  std::filesystem::remove_all(dir);
}

// Making inference weights (joined ones too) leaves the parameters as training needs them: a training step after
// set_inference_dtype still puts every gradient in the flat buffer.
TEST(Quant, InferenceWeightsLeaveTrainingAlone) {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 1, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 64, c.n_hidden = 96, c.block_size = 16, c.vocab_size = 64;
  for (DType d : {DType::BF16, DType::Q8_0}) {
    GPT m(c);
    m.set_inference_dtype(d);
    const std::vector<int32_t> ids = {1, 2, 3, 4};
    EXPECT_NO_THROW(backward(m.loss(Tensor::from_ints(ids, {1, 4}), Tensor::from_ints(ids, {1, 4})))) << dtype_name(d);
    EXPECT_TRUE(m.params().has_grads());
  }
}

// A file whose joined matrices differ in type (here attn_k in f32 beside q8_0 q and v): the inference-only load
// decodes the bytes of the others beside it and joins them as the full load does, to the same logits.
TEST(Quant, InferenceOnlyLoadsJoinMatricesOfMixedTypes) {
  GPTConfig c = GPTConfig::llama_style();
  c.n_layer = 1, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 64, c.n_hidden = 96, c.block_size = 16, c.vocab_size = 256;
  GPT m(c);
  m.init_weights(7);
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_quant_mixed");
  const std::string q8 = (dir / "q8.gguf").string(), mixed = (dir / "mixed.gguf").string();
  save_gguf(q8, m, *bytes, GgmlType::Q8_0, "m");
  const GgufReader r(q8);
  const GgufTensorInfo& k = *r.find("blk.0.attn_k.weight");
  std::vector<float> k_f32(size_t(k.numel()));
  r.read_f32_into(k.name, k_f32.data(), k.dims);
  aigc::testing::write_gguf_replacing(r, mixed, k.name, GgmlType::F32, k_f32.data(), k_f32.size() * sizeof(float));
  LoadedModel full = load_model(mixed), blocks = load_model(mixed, true);
  ASSERT_TRUE(blocks.model->inference_only());
  NoGradGuard ng;
  const Tensor x = Tensor::from_ints({5, 17, 250, 3}, {1, 4});
  EXPECT_EQ(blocks.model->forward(x).to_vector(), full.model->forward(x).to_vector());
  std::filesystem::remove_all(dir);
}

// An inference-only load keeps no f32 copy of what it runs from blocks: of the parameters' f32 buffer only the
// few small ones (norms) are in memory, for both the matrices and the token embedding, whose rows are looked up in
// the file's own bytes (the logits match the full load's: InferenceOnlyLoadsTakeTheFilesBlocksAsTheyAre).
TEST(Quant, InferenceOnlyLoadsHoldNoF32Matrices) {
  GPTConfig c = GPTConfig::llama_style();  // untied: the embedding and the head are both 1 MiB of f32 here
  c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 256, c.n_hidden = 512, c.block_size = 32;
  c.vocab_size = 1024;
  GPT m(c);
  m.init_weights(3);
  auto bytes = make_bytes_tokenizer();
  const auto dir = aigc::testing::fresh_temp_dir("aigc_quant_lean");
  const std::string file = (dir / "m.gguf").string();
  save_gguf(file, m, *bytes, GgmlType::Q4_0, "m");
  for (bool inference_only : {false, true}) {
    SCOPED_TRACE(inference_only ? "inference only" : "full");
    LoadedModel lm = load_model(file, inference_only);
    const ParamStore& ps = lm.model->params();
    const size_t page = 4096, n = size_t(ps.numel()) * sizeof(float);
    char* lo = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(ps.data()) & ~uintptr_t(page - 1));
    const size_t pages = (size_t(reinterpret_cast<char*>(ps.data()) + n - lo) + page - 1) / page;
    std::vector<unsigned char> in_memory(pages);
    ASSERT_EQ(mincore(lo, pages * page, in_memory.data()), 0);
    size_t resident = 0;
    for (unsigned char r : in_memory) resident += r & 1;
    if (inference_only)
      EXPECT_LT(resident, pages / 20) << "of " << pages << " pages";  // the norms' few pages
    else
      EXPECT_EQ(resident, pages);  // every f32 value was read
  }
  std::filesystem::remove_all(dir);
}

// The GPT forward pass, composed from ops only. Read top to bottom: embeddings -> n_layer blocks -> ln_f -> head.
#include "aigc/models/gpt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aigc/autograd.h"
#include "aigc/backend.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/quant.h"
#include "aigc/rng.h"

namespace aigc {

GPT::GPT(const GPTConfig& config, bool random_init) : config_(config) {
  config_.validate();
  if (config_.is_llama()) {
    add_llama_params();
    params_.finalize(random_init);  // a loader writes every value
    if (random_init) init_weights(0);
    return;
  }
  const int64_t C = config_.n_embd, V = config_.vocab_size;
  wte_ = params_.add("wte.weight", {V, C}, true);                   // (V, C)
  wpe_ = params_.add("wpe.weight", {config_.block_size, C}, true);  // (block_size, C)
  for (int64_t l = 0; l < config_.n_layer; l++) {
    std::string p = "h." + std::to_string(l) + ".";
    Block b;
    b.ln_1_w = params_.add(p + "ln_1.weight", {C}, false);
    b.ln_1_b = params_.add(p + "ln_1.bias", {C}, false);
    b.attn_w = params_.add(p + "attn.c_attn.weight", {3 * C, C}, true);  // (3C, C): q | k | v
    b.attn_b = params_.add(p + "attn.c_attn.bias", {3 * C}, false);
    b.attn_proj_w = params_.add(p + "attn.c_proj.weight", {C, C}, true);
    b.attn_proj_b = params_.add(p + "attn.c_proj.bias", {C}, false);
    b.ln_2_w = params_.add(p + "ln_2.weight", {C}, false);
    b.ln_2_b = params_.add(p + "ln_2.bias", {C}, false);
    b.fc_w = params_.add(p + "mlp.c_fc.weight", {4 * C, C}, true);
    b.fc_b = params_.add(p + "mlp.c_fc.bias", {4 * C}, false);
    b.fc_proj_w = params_.add(p + "mlp.c_proj.weight", {C, 4 * C}, true);
    b.fc_proj_b = params_.add(p + "mlp.c_proj.bias", {C}, false);
    blocks_.push_back(b);
  }
  ln_f_w_ = params_.add("ln_f.weight", {C}, false);
  ln_f_b_ = params_.add("ln_f.bias", {C}, false);
  if (!config_.tie_embeddings) {
    lm_head_w_ = params_.add("lm_head.weight", {V, C}, true);
    if (config_.lm_head_bias) lm_head_b_ = params_.add("lm_head.bias", {V}, false);
  }
  params_.finalize(random_init);  // a loader writes every value
  if (random_init) init_weights(0);
}

void GPT::init_weights(uint64_t seed) {
  Rng rng(seed);
  NoGradGuard ng;
  for (const Param& p : params_.params()) {
    const Tensor& t = p.value;
    bool is_gain =
        (p.name.find("ln_") != std::string::npos || p.name.ends_with("norm.weight")) && p.name.ends_with(".weight");
    if (is_gain) {
      init::constant(t, 1.0f);
    } else if (p.name.ends_with(".bias")) {
      init::constant(t, 0.0f);
    } else if (config_.norm != "post") {
      // GPT-2 (and llama): residual-stream projections are scaled down so the residual's variance does not grow
      // with depth.
      float std = 0.02f;
      if (p.name.ends_with("c_proj.weight") || p.name.ends_with("o_proj.weight") ||
          p.name.ends_with("down_proj.weight"))
        std /= std::sqrt(2.0f * float(config_.n_layer));
      init::normal(t, 0.0f, std, rng);
    } else if (p.name == "wte.weight" || p.name == "wpe.weight") {
      init::normal(t, 0.0f, 1.0f, rng);  // nn.Embedding's default
    } else {
      float bound = 1.0f / std::sqrt(float(t.size(1)));  // nn.Linear's default (kaiming-uniform, a = sqrt(5))
      init::uniform(t, -bound, bound, rng);
    }
  }
}

Tensor GPT::linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (!inference_weights_.empty() && !grad_enabled()) {
    auto it = inference_weights_.find(w.impl());
    if (it != inference_weights_.end()) return ops::linear(x, it->second, b);
  }
  return ops::linear(x, w, b);
}

std::vector<Tensor> GPT::linears(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& bs) {
  if (!grad_enabled()) {
    auto it = joined_weights_.find(ws.at(0).impl());
    if (it != joined_weights_.end())
      return ops::split_last(ops::linear(x, it->second.w, it->second.b), it->second.rows);
  }
  std::vector<Tensor> out;
  for (size_t i = 0; i < ws.size(); i++) out.push_back(linear(x, ws[i], i < bs.size() ? bs[i] : Tensor()));
  return out;
}

void GPT::set_inference_dtype(DType dtype) {
  AIGC_CHECK(dtype == DType::F32 || dtype == DType::BF16 || is_quantized(dtype),
             std::string("inference weights must be f32, bf16, q8_0, q4_0 or q4_1, got ") + dtype_name(dtype));
  AIGC_CHECK(!inference_only_, std::string("this model was loaded for inference in ") + dtype_name(inference_dtype_) +
                                   " straight from its file's blocks, without f32 weights to convert to " +
                                   dtype_name(dtype) + "; load it again asking for " + dtype_name(dtype));
  inference_dtype_ = dtype;
  MakeWeights make;  // none for f32: the parameters themselves
  if (dtype != DType::F32)
    make = [dtype](const std::vector<Tensor>& ws, TensorPack&) { return convert_weights(ws, dtype); };
  build_inference_weights(make);
}

void GPT::set_inference_blocks(DType dtype, const std::function<FileBlocks(const std::string&)>& blocks,
                               bool params_loaded) {
  AIGC_CHECK(is_quantized(dtype) || dtype == DType::BF16,
             std::string("set_inference_blocks: ") + dtype_name(dtype) + " is not bf16, q8_0, q4_0 or q4_1");
  std::unordered_map<const TensorImpl*, std::string> name_of;
  for (const Param& p : params_.params()) name_of[p.value.impl()] = p.name;
  inference_dtype_ = dtype;
  std::vector<Tensor> sources = build_inference_weights([&](const std::vector<Tensor>& ws, TensorPack& pack) {
    std::vector<FileBlocks> b;
    bool same = true, none = true;  // none: all f32, joined in dtype as set_inference_dtype would
    for (const Tensor& w : ws) {
      const std::string& name = name_of.at(w.impl());
      b.push_back(blocks(name));
      const size_t n = b.back().view().size();
      const DType d = n == 0 ? dtype : b.back().dtype;
      AIGC_CHECK(n == 0 || n == dtype_bytes(d, w.numel()),
                 "set_inference_blocks: " + name + " has " + std::to_string(n) + " bytes");
      same = same && n > 0 && d == b[0].dtype;
      none = none && n == 0;
    }
    if (none) return convert_weights(ws, dtype);
    if (!same) return Tensor();  // mixed types (or some f32): each runs apart, in its own
    return pack_file_blocks(ws, b, pack);
  });
  // The weights as made, now copied into the pack, would stay in the backend's reuse cache: a load makes none again.
  backend_for(wte_.device()).trim();
  // Which parameters hold f32 values now is the loader's business: from here on none is read or converted.
  inference_only_ = !params_loaded;
  if (!inference_only_) return;
  // So the f32 matrices' memory goes back to the system, and the embedding's too unless tokens are looked up in it.
  std::erase_if(sources, [&](const Tensor& t) { return t.impl() == wte_.impl(); });  // a tied head
  if (!embedding_rows_.bytes.empty() || embed_with_head_) sources.push_back(wte_);
  for (const Tensor& t : sources) backend_for(t.device()).discard(t.raw(), size_t(t.numel()) * sizeof(float));
}

// The matrices ws (one, or a join's parts) from their file bytes b, all of one type, made in the pack: each part's
// rows copied to their place about 256 KB at a time (Rows16 for a quantized type), each chunk's file pages let go as
// soon as it is copied. Rows16 lays rows out in groups of 16: a part that ends inside a group would share it with the
// next, so such a join's parts are appended into one buffer first.
Tensor GPT::pack_file_blocks(const std::vector<Tensor>& ws, std::vector<FileBlocks>& b, TensorPack& pack) {
  const DType d = b[0].dtype;
  const bool quant = is_quantized(d);
  const int64_t cols = ws[0].size(1);
  int64_t rows = 0;
  bool whole_groups = true;
  for (size_t i = 0; i < ws.size(); i++) {
    rows += ws[i].size(0);
    whole_groups = whole_groups && (i + 1 == ws.size() || ws[i].size(0) % kRowGroup == 0);
  }
  if (quant && !whole_groups) {
    std::string bytes;
    bytes.reserve(size_t(rows) * dtype_bytes(d, cols));
    for (FileBlocks& f : b) {
      bytes += f.view();
      if (f.read_upto) f.read_upto(f.view().size());
      std::string().swap(f.bytes);
    }
    return ops::rows16_from_blocks(bytes.data(), {rows, cols}, d, ws[0].device(), &pack);
  }
  Tensor t = pack.reserve({rows, cols}, d, quant ? Layout::Rows16 : Layout::Plain);
  Backend& be = backend_for(t.device());
  const size_t row_bytes = dtype_bytes(d, cols);
  // Chunks of about 256 KB: small enough that little is held twice, large enough that letting pages go is cheap.
  const int64_t step = std::max<int64_t>(kRowGroup, int64_t((size_t(256) << 10) / row_bytes) / kRowGroup * kRowGroup);
  std::vector<char> host;  // a chunk on its way to another device's memory
  int64_t r0 = 0;
  for (size_t i = 0; i < ws.size(); i++) {
    const std::string_view v = b[i].view();
    const int64_t n = ws[i].size(0);
    for (int64_t r = 0; r < n; r += step) {
      const int64_t m = std::min(step, n - r);
      const char* src = v.data() + size_t(r) * row_bytes;
      char* dst = static_cast<char*>(t.raw()) + size_t(r0 + r) * row_bytes;  // Rows16 groups take their rows' bytes
      const size_t nbytes = size_t(m) * row_bytes;
      const bool cpu = t.device() == Device::CPU;
      if (!cpu) host.resize(nbytes);
      char* to = cpu ? dst : host.data();
      quant ? interleave_rows16(d, src, to, m, cols) : void(std::memcpy(to, src, nbytes));
      if (!cpu) be.from_host(dst, to, nbytes);
      if (b[i].read_upto) b[i].read_upto(size_t(r + m) * row_bytes);
    }
    std::string().swap(b[i].bytes);
    r0 += n;
  }
  return t;
}

void GPT::embed_with_head() {
  AIGC_CHECK(config_.tie_embeddings, "embed_with_head: the model's head is not its token embedding");
  embed_with_head_ = true;
}

void GPT::set_embedding_rows(EmbeddingRows rows) {
  AIGC_CHECK(rows.bytes.empty() || (rows.row_bytes > 0 && rows.to_f32 &&
                                    int64_t(rows.bytes.size()) == rows.row_bytes * config_.vocab_size),
             "set_embedding_rows: " + std::to_string(rows.bytes.size()) + " bytes are not " +
                 std::to_string(config_.vocab_size) + " rows of " + std::to_string(rows.row_bytes));
  embedding_rows_ = std::move(rows);
}

Tensor GPT::positions(int64_t B, int64_t T, int64_t pos0) {
  std::vector<int32_t> p(size_t(B * T));
  for (int64_t i = 0; i < B * T; i++) p[size_t(i)] = int32_t(pos0 + i % T);
  return Tensor::from_ints(p, {B * T});
}

Tensor GPT::embed(const Tensor& idx) {
  const EmbeddingRows& e = embedding_rows_;
  AIGC_CHECK(!(embed_with_head_ || !e.bytes.empty()) || !grad_enabled(),
             "embedding: tokens looked up in a file's rows have no gradient (this model is for inference)");
  if (embed_with_head_) {
    auto it = inference_weights_.find(wte_.impl());
    AIGC_CHECK(it != inference_weights_.end(), "embedding: the head's inference weights are not built");
    return ops::embedding_rows(idx, it->second);
  }
  if (e.bytes.empty()) return ops::embedding(idx, wte_, Tensor());
  return ops::embedding_rows(idx, config_.vocab_size, config_.n_embd, [&](int64_t t, float* out) {
    e.to_f32(reinterpret_cast<const uint8_t*>(e.bytes.data()) + t * e.row_bytes, out);
  });
}

int64_t GPT::inference_weight_bytes() const {
  int64_t n = 0;
  for (const auto& [impl, w] : inference_weights_) n += int64_t(dtype_bytes(w.dtype(), w.numel()));
  for (const auto& [impl, j] : joined_weights_) n += int64_t(dtype_bytes(j.w.dtype(), j.w.numel()));
  return n;
}

namespace {

// The values of ts one after the other, copied on the host: a view of a parameter would give it a gradient outside
// the flat buffer.
std::vector<float> joined_values(const std::vector<Tensor>& ts) {
  std::vector<float> v;
  for (const Tensor& t : ts) {
    const std::vector<float> x = t.to_vector();
    v.insert(v.end(), x.begin(), x.end());
  }
  return v;
}

}  // namespace

Tensor GPT::convert_weights(const std::vector<Tensor>& ws, DType dtype) {
  Tensor all = ws[0];
  if (ws.size() > 1) {
    int64_t rows = 0;
    for (const Tensor& w : ws) rows += w.size(0);
    all = Tensor::from_vector(joined_values(ws), {rows, ws[0].size(1)});
  }
  // A matrix whose rows do not fill whole blocks stays bf16 (as GGUF files fall back to f16).
  return is_quantized(dtype) && all.size(1) % kQuantBlock == 0 ? ops::to_rows16(ops::quantize(all, dtype))
                                                               : ops::to_bf16(all);
}

std::vector<Tensor> GPT::build_inference_weights(const MakeWeights& make) {
  inference_weights_.clear();
  joined_weights_.clear();
  std::vector<Tensor> sources;
  if (!make) return sources;
  NoGradGuard ng;
  // Matrices that read the same input are joined by rows: a decoded token then makes one pass over them, not
  // three (or two) small ones that each pay a fork and join of the threads and a cold start of the memory stream.
  // make() may decline a join (an undefined tensor): the matrices then run apart.
  //
  // Each is copied into a pack as soon as it is made, in the order a forward pass reads them: a decoded token
  // streams through large blocks from one end to the other, on huge pages (backend memory), instead of hundreds of
  // small allocations of 4 KiB pages; and the weights as made are dropped one by one, never all held twice. Blocks
  // of up to 256 MiB, at most 2 bytes a weight (bf16, the widest type make gives).
  size_t bound = 0;
  for (const Param& p : params_.params())
    if (p.value.dim() == 2) bound += size_t(p.value.numel()) * 2 + 64;
  TensorPack pack(wte_.device(), std::min(bound, size_t(256) << 20));
  auto one = [&](const Tensor& w) {
    inference_weights_[w.impl()] = pack.add(make({w}, pack));
    sources.push_back(w);
  };
  auto join = [&](const std::vector<Tensor>& ws, const std::vector<Tensor>& bs) {
    Joined j;
    for (const Tensor& w : ws) j.rows.push_back(w.size(0));
    j.w = make(ws, pack);
    if (!j.w.defined()) {
      for (const Tensor& w : ws) one(w);
      return;
    }
    j.w = pack.add(j.w);
    if (!bs.empty() && bs[0].defined()) {  // their values as they are now (a loader has read them by this point)
      const std::vector<float> v = joined_values(bs);
      j.b = Tensor::from_vector(v, {int64_t(v.size())});
    }
    joined_weights_[ws[0].impl()] = std::move(j);
    sources.insert(sources.end(), ws.begin(), ws.end());
  };
  for (const Block& b : blocks_)
    if (config_.is_llama()) {
      join({b.q_w, b.k_w, b.v_w}, {b.q_b, b.k_b, b.v_b});  // Qwen2's biases, or undefined tensors
      one(b.o_w);
      join({b.gate_w, b.up_w}, {});
      one(b.down_w);
    } else {
      for (const Tensor& w : {b.attn_w, b.attn_proj_w, b.fc_w, b.fc_proj_w}) one(w);
    }
  one(config_.tie_embeddings ? wte_ : lm_head_w_);
  return sources;
}

Tensor GPT::attention(const Block& blk, const Tensor& x, size_t layer, bool train, uint64_t seed, KVCache* cache,
                      const Decode* decode) {
  Tensor qkv = linear(x, blk.attn_w, blk.attn_b);  // (B,T,3C)
  Tensor y = linear(attend(qkv, layer, cache, decode), blk.attn_proj_w, blk.attn_proj_b);
  return train ? ops::dropout(y, config_.dropout, seed) : y;
}

Tensor GPT::attend(const Tensor& qkv, size_t layer, KVCache* cache, const Decode* decode) {
  const int64_t nh = config_.n_head;
  return decode  ? ops::attention_decode(qkv, nh, cache->k[layer], cache->v[layer], decode->slots, decode->pos)
         : cache ? ops::attention_cached(qkv, nh, cache->k[layer], cache->v[layer], cache->pos)
                 : ops::causal_self_attention(qkv, nh);  // (B,T,NH HS)
}

Tensor GPT::mlp(const Block& blk, const Tensor& x, bool train, uint64_t seed) {
  Tensor h = linear(x, blk.fc_w, blk.fc_b);  // (B,T,4C)
  h = config_.activation == "gelu" ? ops::gelu(h) : ops::relu(h);
  h = linear(h, blk.fc_proj_w, blk.fc_proj_b);  // (B,T,C)
  return train ? ops::dropout(h, config_.dropout, seed) : h;
}

Tensor GPT::hidden(const Tensor& idx, bool train, uint64_t seed, KVCache* cache, const Decode* decode) {
  if (grad_enabled()) {
    AIGC_CHECK(!inference_only_,
               "this model was loaded for inference only (its matrices are the file's quantized "
               "blocks): it cannot train");
    params_.ensure_grads();  // gradients must land in the flat buffer
  }
  if (config_.is_llama()) return hidden_llama(idx, cache, decode);
  const float eps = config_.ln_eps;
  // Token + position embeddings (B,T,C); decoding rows each sit at their own position.
  Tensor x;
  if (decode) {
    x = ops::add(embed(idx), ops::embedding(decode->pos.view({idx.size(0), 1}), wpe_, Tensor()));
  } else if (embedding_rows_.bytes.empty() && !embed_with_head_) {
    x = ops::embedding(idx, wte_, wpe_, cache ? cache->pos : 0);
  } else {  // the rows from the file, the positions from wpe
    const int64_t B = idx.size(0), T = idx.size(1), pos0 = cache ? cache->pos : 0;
    AIGC_CHECK(pos0 + T <= config_.block_size, "embedding: positions up to " + std::to_string(pos0 + T) +
                                                   " exceed the model's context length " +
                                                   std::to_string(config_.block_size));
    x = ops::add(embed(idx), ops::embedding(positions(B, T, pos0).view({B, T}), wpe_, Tensor()));
  }
  if (train) x = ops::dropout(x, config_.dropout, seed);
  for (size_t l = 0; l < blocks_.size(); l++) {
    const Block& b = blocks_[l];
    uint64_t s = seed * 1000003u + 2 * l + 1;  // distinct dropout masks per site
    if (config_.norm == "pre") {
      x = ops::add(x, attention(b, ops::layernorm(x, b.ln_1_w, b.ln_1_b, eps), l, train, s, cache, decode));
      x = ops::add(x, mlp(b, ops::layernorm(x, b.ln_2_w, b.ln_2_b, eps), train, s + 1));
    } else {
      x = ops::layernorm(ops::add(x, attention(b, x, l, train, s, cache, decode)), b.ln_1_w, b.ln_1_b, eps);
      x = ops::layernorm(ops::add(x, mlp(b, x, train, s + 1)), b.ln_2_w, b.ln_2_b, eps);
    }
  }
  if (cache && !decode) cache->pos += idx.size(1);
  return ops::layernorm(x, ln_f_w_, ln_f_b_, eps);
}

Tensor GPT::head(const Tensor& x) {
  return config_.tie_embeddings ? linear(x, wte_, Tensor()) : linear(x, lm_head_w_, lm_head_b_);
}

Tensor GPT::forward(const Tensor& idx, bool train, uint64_t dropout_seed) {
  return head(hidden(idx, train, dropout_seed, nullptr));
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets, bool train, uint64_t dropout_seed) {
  return ops::cross_entropy(forward(idx, train, dropout_seed), targets);
}

KVCache GPT::make_cache(int64_t batch, int64_t capacity, DType kv) const {
  AIGC_CHECK(capacity <= config_.block_size, "KV cache capacity exceeds the model's context length");
  AIGC_CHECK(kv == DType::F32 || kv == DType::F16,
             std::string("the KV cache must be f32 or f16, got ") + dtype_name(kv));
  KVCache c;
  c.capacity = capacity;
  const int64_t hs = config_.head_size(), nkv = config_.kv_heads();  // grouped-query attention keeps NKV heads
  // One block for all layers (huge pages when it is large enough: backend memory), each layer's keys and values
  // a view of it.
  const Tensor all = Tensor::zeros({2 * config_.n_layer, batch, nkv, capacity, hs}, kv);
  for (int64_t l = 0; l < config_.n_layer; l++) {
    c.k.push_back(all.narrow0(2 * l, 1).view({batch, nkv, capacity, hs}));
    c.v.push_back(all.narrow0(2 * l + 1, 1).view({batch, nkv, capacity, hs}));
  }
  return c;
}

Tensor GPT::forward_cached(const Tensor& idx, KVCache& cache) {
  NoGradGuard ng;
  const int64_t B = idx.size(0), T = idx.size(1), C = config_.n_embd;
  Tensor x = hidden(idx, false, 0, &cache);  // (B,T,C)
  if (T > 1) {
    AIGC_CHECK(B == 1, "forward_cached: prompts of several tokens need batch 1");
    x = x.view({T, C}).narrow0(T - 1, 1);  // only the last position's logits are needed
  }
  return head(x.view({B, C}));  // (B,V)
}

Tensor GPT::forward_decode(const std::vector<int32_t>& tokens, const std::vector<int32_t>& slots,
                           const std::vector<int32_t>& pos, KVCache& cache) {
  NoGradGuard ng;
  const int64_t B = int64_t(tokens.size());
  AIGC_CHECK(B > 0 && slots.size() == tokens.size() && pos.size() == tokens.size(),
             "forward_decode: tokens, slots and positions must be non-empty and of equal length");
  for (int32_t p : pos)
    AIGC_CHECK(p >= 0 && p < config_.block_size, "forward_decode: position " + std::to_string(p) +
                                                     " is outside the model's context of " +
                                                     std::to_string(config_.block_size));
  Decode d{Tensor::from_ints(slots, {B}), Tensor::from_ints(pos, {B})};
  Tensor logits;
  auto step = [&] {
    Tensor x = hidden(Tensor::from_ints(tokens, {B, 1}), false, 0, &cache, &d);  // (B,1,C)
    logits = head(x.view({B, config_.n_embd}));                                  // (B,V)
  };
  // A few rows make hundreds of short kernels, whose threads the backend holds through the step (for at most 16
  // rows: Backend::run_held).
  if (B <= 16)
    run_held(backend_for(wte_.device()), step);
  else
    step();
  return logits;
}

KVCache KVCache::slot(int64_t s) const {
  KVCache c;
  c.capacity = capacity;
  for (size_t l = 0; l < k.size(); l++) c.k.push_back(k[l].narrow0(s, 1)), c.v.push_back(v[l].narrow0(s, 1));
  return c;
}

int64_t GPT::num_params() const {
  int64_t n = 0;
  for (const Param& p : params_.params()) n += p.value.numel();
  return n;
}

}  // namespace aigc

// GPT: a decoder-only transformer language model, in the flavours GPTConfig chooses:
//  - "gpt2": pre-LN blocks, GELU (tanh), tied input/output embeddings, GPT-2 initialization;
//  - "transformer": the classic post-LN TransformerLM (x = LN(x + MHA(x)); x = LN(x + FFN(x)), ReLU FFN),
//    with a final LayerNorm and an untied linear head. Unlike the reference PyTorch code it descends from,
//    attention here is causal (a teacher-forced LM must not see the token it predicts) and runs per sequence
//    over (B,T,C) tensors (the reference fed (B,T,C) to a (T,B,C) module and so attended across the batch);
//  - arch "llama" (src/models/gpt/llama.cpp): pre-RMSNorm blocks, rotary position embeddings, grouped-query
//    attention, a SwiGLU MLP, no biases, a tied or untied head: Llama, Mistral, SmolLM, TinyLlama.
// Parameter names follow the checkpoint keys (GPT-2's wte, wpe, h.N.attn.c_attn, ...; Hugging Face's
// model.layers.N.self_attn.q_proj, ... for llama); Linear weights are (out, in).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "aigc/params.h"
#include "aigc/tensor.h"

namespace aigc {

// Rotary embedding frequency scaling, as Hugging Face's rope_scaling: "none", "linear" (every frequency divided
// by factor), "llama3" (low frequencies divided by factor, high ones kept, a smooth ramp between), or "factors"
// (frequency i divided by freq_factors[i]: how GGUF files carry llama3's scaling, as the tensor rope_freqs).
struct RopeScaling {
  std::string type = "none";
  float factor = 1.0f, low_freq_factor = 1.0f, high_freq_factor = 4.0f;
  int64_t original_max_position = 8192;
  std::vector<float> freq_factors;
};

struct GPTConfig {
  std::string arch = "gpt";  // "gpt" (GPT-2 / TransformerLM blocks) or "llama"
  int64_t n_layer = 6;
  int64_t n_head = 6;
  int64_t n_embd = 384;
  int64_t block_size = 256;  // max context length (learned position embeddings)
  int64_t vocab_size = 256;
  std::string norm = "pre";         // "pre" (GPT-2) or "post" (classic TransformerLM)
  std::string activation = "gelu";  // "gelu" (tanh approximation) or "relu"
  bool tie_embeddings = true;       // lm_head shares wte
  bool lm_head_bias = false;        // only for an untied head
  float dropout = 0.0f;
  float ln_eps = 1e-5f;  // LayerNorm's epsilon, or RMSNorm's for llama
  // llama only:
  int64_t n_kv_head = 0;  // key/value heads (grouped-query attention), dividing n_head; 0 = n_head
  int64_t head_dim = 0;   // 0 = n_embd / n_head
  int64_t n_hidden = 0;   // the SwiGLU MLP's hidden size; 0 = 8/3 n_embd rounded up to a multiple of 32
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool qkv_bias = false;  // the q, k and v projections carry biases (Qwen2)

  static GPTConfig gpt2_style();         // pre-LN, GELU, tied
  static GPTConfig transformer_style();  // post-LN, ReLU, untied head with bias, 512 positions
  static GPTConfig llama_style();        // arch llama, untied head, RMSNorm eps 1e-5
  bool is_llama() const { return arch == "llama"; }
  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_size() const { return head_dim > 0 ? head_dim : n_embd / n_head; }
  int64_t hidden_size() const;  // the MLP's hidden width
  // The parameters a model of this shape holds (tied weights once), in double so that any header's sizes can be
  // checked against a file's tensors before anything is allocated.
  double param_count() const;
  std::vector<float> rope_inv_freq() const;  // head_size() / 2 rotary frequencies, scaled (fp32 as Hugging Face)
  std::string to_json() const;
  static GPTConfig from_json(const std::string& json);  // validates every field
  void validate() const;

 private:
  void validate_llama() const;
};

struct KVCache {
  std::vector<Tensor> k, v;  // per layer (B, n_head, capacity, head_size); B = sequences (slots)
  int64_t pos = 0;           // positions filled so far (forward_cached; forward_decode tracks positions per row)
  int64_t capacity = 0;
  // Slot s alone as a batch-1 cache (a view sharing storage), empty: a new sequence's prompt is prefilled into it
  // with forward_cached, then it continues with forward_decode.
  KVCache slot(int64_t s) const;
};

class GPT {
 public:
  // random_init false leaves every parameter zero, for a loader that fills them all: the random init costs more
  // than reading a large checkpoint.
  explicit GPT(const GPTConfig& config, bool random_init = true);

  // GPT-2's init: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layer), zero biases, unit LN gains.
  // The transformer style uses PyTorch's defaults for its modules instead.
  void init_weights(uint64_t seed);

  // Logits (B,T,V) for tokens idx (B,T). Dropout is active when train is true.
  Tensor forward(const Tensor& idx, bool train = false, uint64_t dropout_seed = 0);
  // Mean next-token cross-entropy of forward(idx) against targets (B,T).
  Tensor loss(const Tensor& idx, const Tensor& targets, bool train = false, uint64_t dropout_seed = 0);

  // Inference with a KV cache: feeds idx (B,T) at positions cache.pos.., returns logits of the last position (B,V).
  // kv: the cache's type, F32 or F16 (half the memory; llama.cpp's default).
  KVCache make_cache(int64_t batch, int64_t capacity, DType kv = DType::F32) const;
  Tensor forward_cached(const Tensor& idx, KVCache& cache);
  // Continuous batching: one new token per row, row b continuing the sequence held in cache slot slots[b] at
  // position pos[b] (cache from make_cache(n_slots, ...)). Rows are independent sequences at their own positions,
  // yet the weights are read once for all of them. Returns logits (B,V).
  Tensor forward_decode(const std::vector<int32_t>& tokens, const std::vector<int32_t>& slots,
                        const std::vector<int32_t>& pos, KVCache& cache);
  // Weights used by inference (no-grad) forwards: F32 (the parameters themselves), BF16 (rounded copies of every
  // matrix, read at half the bytes per token), or Q8_0 / Q4_0 / Q4_1 (ggml's blocks: ~1.06, ~0.56 and ~0.63 bytes
  // per weight, multiplied as llama.cpp does; aigc/backend.h). Training always uses the fp32 parameters.
  void set_inference_dtype(DType dtype);
  DType inference_dtype() const { return inference_dtype_; }
  // Inference weights taken as they are from a file: blocks(name) gives a matrix parameter's type (bf16, q8_0,
  // q4_0, q4_1) and bytes in ggml's row layout, or no bytes for one whose f32 values were loaded instead (it takes
  // `dtype`). Matrices joined for inference (q|k|v, gate|up) in one type stay in it; a group of mixed types is
  // not joined, each matrix keeping its own. The f32 values of the others need never exist (a q4_0 model then takes its
  // blocks' memory, not 4 bytes per weight), so the model is inference-only from then on (training, set_inference_dtype
  // and saving refuse it), unless params_loaded says every parameter holds its f32 values too.
  // The bytes are either held (`bytes`) or where the file lies (`mapped`, valid until read_upto(size) is called):
  // read front to back, the first n of them are reported read with read_upto(n), so their pages can go while the
  // rest are still to be copied (a tied head of 49152 x 576 bf16, 57 MB, is then never held twice whole).
  struct FileBlocks {
    DType dtype = DType::F32;
    std::string bytes;
    std::string_view mapped;
    std::function<void(size_t)> read_upto;
    std::string_view view() const { return mapped.data() ? mapped : std::string_view(bytes); }
  };
  void set_inference_blocks(DType dtype, const std::function<FileBlocks(const std::string&)>& blocks,
                            bool params_loaded = false);
  // Token embeddings looked up in a file's own rows (a loader's, for an inference-only model): token t's row is
  // row_bytes bytes at t * row_bytes of `bytes`, which to_f32 turns into n_embd floats (the values an f32 load
  // would read). Set before set_inference_blocks, the embedding then never exists in f32: for most small models
  // the largest matrix, at 4 bytes a weight.
  struct EmbeddingRows {
    std::string bytes;
    int64_t row_bytes = 0;
    std::function<void(const uint8_t* row, float* out)> to_f32;
  };
  void set_embedding_rows(EmbeddingRows rows);
  // Or, for a tied model whose head weights are the file's embedding blocks as they are (bf16, q8_0, q4_0,
  // q4_1), in those weights' rows: then the embedding takes no memory of its own.
  void embed_with_head();
  bool inference_only() const { return inference_only_; }
  // Bytes of the inference weights in their types (joined ones once); 0 for f32, which uses the parameters.
  int64_t inference_weight_bytes() const;

  const GPTConfig& config() const { return config_; }
  ParamStore& params() { return params_; }
  int64_t num_params() const;  // distinct parameters (tied weights counted once)

 private:
  struct Block {
    Tensor ln_1_w, ln_1_b, attn_w, attn_b, attn_proj_w, attn_proj_b;
    Tensor ln_2_w, ln_2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
    Tensor q_w, k_w, v_w, o_w, gate_w, up_w, down_w;  // llama (its norms are ln_1_w and ln_2_w)
    Tensor q_b, k_b, v_b;                             // llama with qkv_bias (Qwen2)
  };
  struct Decode {  // forward_decode's rows: cache slot and position of each, i32 (B)
    Tensor slots, pos;
  };
  // Final hidden states (B,T,C). cache: incremental inference; with decode, per-row slots and positions.
  Tensor hidden(const Tensor& idx, bool train, uint64_t seed, KVCache* cache, const Decode* decode = nullptr);
  Tensor attention(const Block& blk, const Tensor& x, size_t layer, bool train, uint64_t seed, KVCache* cache,
                   const Decode* decode);
  Tensor mlp(const Block& blk, const Tensor& x, bool train, uint64_t seed);
  // Attention over qkv (B,T,3 NH HS): causal, or against the KV cache (incremental, or per-row decoding).
  Tensor attend(const Tensor& qkv, size_t layer, KVCache* cache, const Decode* decode);
  Tensor head(const Tensor& x);
  Tensor embed(const Tensor& idx);  // token embeddings (B,T,C): from the file's rows when set, else wte
  static Tensor positions(int64_t B, int64_t T, int64_t pos0);  // i32 (B T): pos0 + t for each row's t
  // The llama blocks (llama.cpp).
  void add_llama_params();
  Tensor hidden_llama(const Tensor& idx, KVCache* cache, const Decode* decode);
  Tensor llama_attention(const Block& blk, const Tensor& x, const Tensor& pos, size_t layer, KVCache* cache,
                         const Decode* decode);
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);  // ops::linear with the inference weights
  // x times each of ws plus its bias in bs (Qwen2's q, k and v; none, or undefined ones, for no bias): at
  // inference, one product with their rows and biases concatenated when set_inference_dtype joined them (llama's
  // q|k|v and gate|up read the same input), its output split after.
  std::vector<Tensor> linears(const Tensor& x, const std::vector<Tensor>& ws, const std::vector<Tensor>& bs = {});
  // The inference weights: make(ws) gives the weight for matrices ws joined by rows (most often just one).
  // Returns the matrices it made weights for.
  // make(ws, pack) gives ws's inference weights, made in the pack (TensorPack::reserve) or copied into it after.
  using MakeWeights = std::function<Tensor(const std::vector<Tensor>&, TensorPack&)>;
  std::vector<Tensor> build_inference_weights(const MakeWeights& make);
  Tensor pack_file_blocks(const std::vector<Tensor>& ws, std::vector<FileBlocks>& b, TensorPack& pack);
  static Tensor convert_weights(const std::vector<Tensor>& ws, DType dtype);  // from the f32 parameters

  GPTConfig config_;
  ParamStore params_;
  Tensor wte_, wpe_, ln_f_w_, ln_f_b_, lm_head_w_, lm_head_b_;
  Tensor inv_freq_;  // llama: the rotary frequencies
  std::vector<Block> blocks_;
  std::unordered_map<const TensorImpl*, Tensor> inference_weights_;  // parameter -> its bf16 or quantized copy
  // Matrices joined by rows for inference, keyed by the first: the rows each one holds, and their biases joined
  // (f32) if they have any.
  struct Joined {
    Tensor w, b;
    std::vector<int64_t> rows;
  };
  std::unordered_map<const TensorImpl*, Joined> joined_weights_;
  EmbeddingRows embedding_rows_;
  bool embed_with_head_ = false;
  DType inference_dtype_ = DType::F32;
  bool inference_only_ = false;
};

}  // namespace aigc

// The Llama family's blocks, read top to bottom like Hugging Face's LlamaForCausalLM, whose state-dict keys the
// parameters carry: token embedding -> n_layer blocks of
//   x = x + o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = RMSNorm(x)   (input_layernorm)
//   x = x + down_proj(silu(gate_proj(h)) * up_proj(h)),                       h = RMSNorm(x) (post_attention_layernorm)
// -> RMSNorm (model.norm) -> lm_head (or the embedding, tied). Keys and values may have fewer heads than queries
// (grouped-query attention); ops::rope_qkv repeats them into the layout the attention kernels and KV cache use.
#include "aigc/models/gpt.h"
#include "aigc/ops.h"

namespace aigc {

void GPT::add_llama_params() {
  const int64_t C = config_.n_embd, V = config_.vocab_size, H = config_.hidden_size();
  const int64_t Cq = config_.n_head * config_.head_size(), Ckv = config_.kv_heads() * config_.head_size();
  wte_ = params_.add("model.embed_tokens.weight", {V, C}, true);
  for (int64_t l = 0; l < config_.n_layer; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Block b;
    b.ln_1_w = params_.add(p + "input_layernorm.weight", {C}, false);
    b.q_w = params_.add(p + "self_attn.q_proj.weight", {Cq, C}, true);
    b.k_w = params_.add(p + "self_attn.k_proj.weight", {Ckv, C}, true);
    b.v_w = params_.add(p + "self_attn.v_proj.weight", {Ckv, C}, true);
    if (config_.qkv_bias) {
      b.q_b = params_.add(p + "self_attn.q_proj.bias", {Cq}, false);
      b.k_b = params_.add(p + "self_attn.k_proj.bias", {Ckv}, false);
      b.v_b = params_.add(p + "self_attn.v_proj.bias", {Ckv}, false);
    }
    b.o_w = params_.add(p + "self_attn.o_proj.weight", {C, Cq}, true);
    b.ln_2_w = params_.add(p + "post_attention_layernorm.weight", {C}, false);
    b.gate_w = params_.add(p + "mlp.gate_proj.weight", {H, C}, true);
    b.up_w = params_.add(p + "mlp.up_proj.weight", {H, C}, true);
    b.down_w = params_.add(p + "mlp.down_proj.weight", {C, H}, true);
    blocks_.push_back(b);
  }
  ln_f_w_ = params_.add("model.norm.weight", {C}, false);
  if (!config_.tie_embeddings) lm_head_w_ = params_.add("lm_head.weight", {V, C}, true);
  const std::vector<float> f = config_.rope_inv_freq();
  inv_freq_ = Tensor::from_vector(f, {int64_t(f.size())});
}

Tensor GPT::llama_attention(const Block& blk, const Tensor& x, const Tensor& pos, size_t layer, KVCache* cache,
                            const Decode* decode) {
  const std::vector<Tensor> p = linears(x, {blk.q_w, blk.k_w, blk.v_w}, {blk.q_b, blk.k_b, blk.v_b});  // Qwen2: biased
  Tensor qkv = ops::rope_qkv(p[0], p[1], p[2], pos, inv_freq_, config_.n_head, config_.kv_heads());    // (B,T,3 NH HS)
  return linear(attend(qkv, layer, cache, decode), blk.o_w, Tensor());
}

Tensor GPT::hidden_llama(const Tensor& idx, KVCache* cache, const Decode* decode) {
  const float eps = config_.ln_eps;
  const int64_t B = idx.size(0), T = idx.size(1);
  // Each row's position: its own in decoding, else pos0 + t.
  const Tensor pos = decode ? decode->pos : positions(B, T, cache ? cache->pos : 0);
  Tensor x = embed(idx);  // (B,T,C)
  for (size_t l = 0; l < blocks_.size(); l++) {
    const Block& b = blocks_[l];
    x = ops::add(x, llama_attention(b, ops::rmsnorm(x, b.ln_1_w, eps), pos, l, cache, decode));
    Tensor h = ops::rmsnorm(x, b.ln_2_w, eps);
    const std::vector<Tensor> gu = linears(h, {b.gate_w, b.up_w});
    x = ops::add(x, linear(ops::swiglu(gu[0], gu[1]), b.down_w, Tensor()));
  }
  if (cache && !decode) cache->pos += T;
  return ops::rmsnorm(x, ln_f_w_, eps);
}

}  // namespace aigc

// GPT models as GGUF files in llama.cpp's "gpt2", "llama" and "qwen2" (llama blocks with biased q, k and v
// projections) architectures: the same tensors under ggml's names, the hyperparameters as "<arch>.*" keys, and the
// byte-level BPE vocabulary and merges as "tokenizer.ggml.*". aigc's Linear weights are (out, in) row-major, which
// is ggml's dims {in, out} with the same bytes: no transposes, except that llama.cpp's llama rotates adjacent pairs
// where aigc (as Hugging Face) rotates (i, i + d/2): the rows of attn_q and attn_k are permuted within each head on
// the way out and back. Its qwen2 rotates as aigc does (ggml's "neox" rotation): nothing is permuted.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>

#include "aigc/backend.h"
#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/gguf.h"
#include "aigc/quant.h"

namespace aigc {

namespace {

// aigc parameter name -> ggml tensor name, for block l or the model-wide tensors.
std::string ggml_name(const std::string& p) {
  static const std::pair<const char*, const char*> block[] = {
      {"ln_1.weight", "attn_norm.weight"},
      {"ln_1.bias", "attn_norm.bias"},
      {"attn.c_attn.weight", "attn_qkv.weight"},
      {"attn.c_attn.bias", "attn_qkv.bias"},
      {"attn.c_proj.weight", "attn_output.weight"},
      {"attn.c_proj.bias", "attn_output.bias"},
      {"ln_2.weight", "ffn_norm.weight"},
      {"ln_2.bias", "ffn_norm.bias"},
      {"mlp.c_fc.weight", "ffn_up.weight"},
      {"mlp.c_fc.bias", "ffn_up.bias"},
      {"mlp.c_proj.weight", "ffn_down.weight"},
      {"mlp.c_proj.bias", "ffn_down.bias"},
      // llama
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  static const std::pair<const char*, const char*> global[] = {
      {"wte.weight", "token_embd.weight"},         {"wpe.weight", "position_embd.weight"},
      {"ln_f.weight", "output_norm.weight"},       {"ln_f.bias", "output_norm.bias"},
      {"lm_head.weight", "output.weight"},         {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
  };
  for (const char* prefix : {"h.", "model.layers."})
    if (p.starts_with(prefix)) {
      const size_t at = std::string_view(prefix).size(), dot = p.find('.', at);
      const std::string rest = p.substr(dot + 1);
      for (auto [a, g] : block)
        if (rest == a) return "blk." + p.substr(at, dot - at) + "." + g;
    }
  for (auto [a, g] : global)
    if (p == a) return g;
  fail("GGUF: no ggml name for parameter " + p);
}

// The architecture a model is written as.
std::string gguf_arch(const GPTConfig& c) { return !c.is_llama() ? "gpt2" : c.qkv_bias ? "qwen2" : "llama"; }

// The heads (of head size hd) whose rows a llama q or k projection holds, or 0 for any other parameter (and for
// qwen2, which rotates as aigc does).
int64_t rope_heads(const std::string& p, const GPTConfig& c) {
  if (gguf_arch(c) != "llama") return 0;
  if (p.ends_with("self_attn.q_proj.weight")) return c.n_head;
  if (p.ends_with("self_attn.k_proj.weight")) return c.kv_heads();
  return 0;
}

// Row r of head h is pair element s = r / (hd/2) of frequency j = r % (hd/2) in aigc's order; llama.cpp's puts it
// at 2 j + s. to_ggml: aigc -> llama.cpp, else back.
// Rows of `in` elements: floats, or a quantized row's bytes.
template <typename T>
std::vector<T> permute_rope_rows(const T* w, int64_t heads, int64_t hd, int64_t in, bool to_ggml) {
  std::vector<T> out(size_t(heads * hd * in));
  for (int64_t h = 0; h < heads; h++)
    for (int64_t r = 0; r < hd; r++) {
      const int64_t g = 2 * (r % (hd / 2)) + r / (hd / 2);  // llama.cpp's row for aigc's row r
      const int64_t src = h * hd + (to_ggml ? r : g), dst = h * hd + (to_ggml ? g : r);
      std::copy_n(w + src * in, in, out.data() + dst * in);
    }
  return out;
}

// ggml dims of an aigc tensor of this shape: reversed.
std::vector<int64_t> ggml_dims(const Shape& s) { return std::vector<int64_t>(s.rbegin(), s.rend()); }

// general.file_type: what most tensors hold (llama.cpp's enum).
uint32_t file_type(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return 0;
    case GgmlType::F16:
      return 1;
    case GgmlType::Q4_0:
      return 2;
    case GgmlType::Q4_1:
      return 3;
    case GgmlType::Q5_0:
      return 8;
    case GgmlType::Q5_1:
      return 9;
    case GgmlType::Q8_0:
      return 7;
    case GgmlType::BF16:
      return 32;
    case GgmlType::Q4_K:
      return 14;  // MOSTLY_Q4_K_S (15 with the _M recipe)
    case GgmlType::Q5_K:
      return 16;  // MOSTLY_Q5_K_S (17 with the _M recipe)
    case GgmlType::Q6_K:
      return 18;
  }
  return 0;
}

// Whether a ggml tensor name is the output head: output.weight, or the token embedding when tied.
bool is_head(const std::string& name, const GPTConfig& c) {
  return name == "output.weight" || (name == "token_embd.weight" && c.tie_embeddings);
}

// llama.cpp's "_M" recipe spends 6 bits on attn_v and ffn_down in the first and last eighth of the layers and in
// every third layer between.
bool more_bits_layer(int64_t layer, int64_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

// A matrix's type in the file: the requested one, Q6_K where the _M recipe asks, and a fallback where the rows
// do not fill the type's blocks: q8_0 for a k-quant (llama.cpp takes q5_0 / q5_1 there, which aigc lacks), f16
// otherwise.
GgmlType matrix_type(const GgufTypes& types, const std::string& name, int64_t row, int64_t n_layer, bool head) {
  GgmlType t = types.matrices;
  if (types.medium) {
    int64_t layer = -1;
    if (name.rfind("blk.", 0) == 0) {
      const char* end = name.data() + name.size();
      if (std::from_chars(name.data() + 4, end, layer).ec != std::errc()) layer = -1;
    }
    const bool v_or_down = name.find(".attn_v.") != std::string::npos || name.find(".ffn_down.") != std::string::npos;
    if (head || (v_or_down && layer >= 0 && more_bits_layer(layer, n_layer))) t = GgmlType::Q6_K;
  }
  if (row % ggml_type_info(uint32_t(t))->block_elems == 0) return t;
  return is_kquant(t) && row % kQuantBlock == 0 ? GgmlType::Q8_0 : GgmlType::F16;
}

// The vocabulary in GPT-2's byte alphabet, and the merges ("left right"), of a bpe or bytes tokenizer.
void tokenizer_texts(const Tokenizer& tok, std::vector<std::string>& vocab, std::vector<std::string>& merges) {
  if (tok.kind() == "bytes") {
    // 256 byte tokens and no merges: GPT-2's byte-level BPE then gives exactly the byte ids.
    vocab = gpt2_byte_alphabet();
    return;
  }
  AIGC_CHECK(tok.kind() == "bpe",
             "GGUF export takes GPT-2-style byte-level BPE, raw bytes and SentencePiece-form "
             "Hugging Face vocabularies; this model's tokenizer (\"" +
                 tok.kind() + "\") is none of them");
  nlohmann::json j = nlohmann::json::parse(tok.to_json());
  vocab = j["vocab"].get<std::vector<std::string>>();
  merges = j["merges"].get<std::vector<std::string>>();
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

namespace {

// The hyperparameters under "<arch>.": gpt2's, or llama's (qwen2's) with its rotary and grouped-query keys.
void write_hparams(GgufWriter& w, const GPTConfig& c) {
  const std::string a = gguf_arch(c) + ".";
  auto u32 = [&](const char* k, int64_t v) { w.set(a + k, GgufValue::of_u32(uint32_t(v))); };
  u32("context_length", c.block_size);
  u32("embedding_length", c.n_embd);
  u32("feed_forward_length", c.hidden_size());
  u32("block_count", c.n_layer);
  u32("attention.head_count", c.n_head);
  if (!c.is_llama()) {
    w.set(a + "attention.layer_norm_epsilon", GgufValue::of_f32(c.ln_eps));
    return;
  }
  u32("attention.head_count_kv", c.kv_heads());
  u32("attention.key_length", c.head_size());
  u32("attention.value_length", c.head_size());
  u32("rope.dimension_count", c.head_size());
  u32("vocab_size", c.vocab_size);
  w.set(a + "attention.layer_norm_rms_epsilon", GgufValue::of_f32(c.ln_eps));
  w.set(a + "rope.freq_base", GgufValue::of_f32(c.rope_theta));
  if (c.rope_scaling.type == "linear") {
    w.set(a + "rope.scaling.type", GgufValue::of_string("linear"));
    w.set(a + "rope.scaling.factor", GgufValue::of_f32(c.rope_scaling.factor));
  }
}

// llama3's (or any per-frequency) scaling as GGUF carries it: rope_freqs.weight, each frequency's divisor.
std::vector<float> rope_freq_factors(const GPTConfig& c) {
  if (c.rope_scaling.type != "llama3" && c.rope_scaling.type != "factors") return {};
  GPTConfig plain = c;
  plain.rope_scaling = RopeScaling{};
  const std::vector<float> base = plain.rope_inv_freq(), scaled = c.rope_inv_freq();
  std::vector<float> f(base.size());
  for (size_t i = 0; i < f.size(); i++) f[i] = base[i] / scaled[i];
  return f;
}

}  // namespace

std::optional<GgufTypes> GgufTypes::from_name(const std::string& name) {
  std::string n = name;
  for (char& ch : n) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (n == "q4_k_m" || n == "q5_k_m") return GgufTypes(n == "q4_k_m" ? GgmlType::Q4_K : GgmlType::Q5_K, true);
  if (n == "q4_k_s" || n == "q5_k_s") n.resize(4);
  if (const std::optional<GgmlType> t = ggml_type_from_name(n)) return GgufTypes(*t);
  return std::nullopt;
}

void save_gguf(const std::string& path, GPT& model, const Tokenizer& tok, GgufTypes matrix_types,
               const std::string& name) {
  const GgmlType type = matrix_types.matrices;
  AIGC_CHECK(!model.inference_only(), "GGUF export: this model was loaded for inference only, as its file's blocks");
  const GPTConfig& c = model.config();
  AIGC_CHECK(c.is_llama() || (c.norm == "pre" && c.activation == "gelu" && !c.lm_head_bias),
             "GGUF export supports GPT-2-style models (pre-LN, GELU, no head bias) and llama; this one is norm \"" +
                 c.norm + "\", activation \"" + c.activation + "\"");
  // llama.cpp's qwen2 sizes its q and o projections n_embd x n_embd.
  AIGC_CHECK(!c.qkv_bias || c.n_head * c.head_size() == c.n_embd,
             "GGUF export: llama.cpp's qwen2 needs n_head x head_dim = n_embd; this model has " +
                 std::to_string(c.n_head) + " x " + std::to_string(c.head_size()) + " for " + std::to_string(c.n_embd));
  // A SentencePiece-form tokenizer goes as its tokens and scores; the others as byte-level BPE, under the name of
  // their pre-tokenizer (GPT-2's for the "bpe" tokenizer).
  const std::optional<SpmVocab> spm = spm_vocab_of(tok);
  const std::optional<ByteLevelVocab> bl = spm ? std::nullopt : byte_level_vocab_of(tok);
  std::vector<std::string> vocab, merges;
  std::vector<int32_t> types;
  std::optional<int> eos = tok.eos_id(), bos = eos;
  if (spm) {
    vocab = spm->tokens, types = spm->types;
  } else if (bl) {
    vocab = bl->tokens, types = bl->types, merges = bl->merges, bos = bl->bos;
  } else {
    tokenizer_texts(tok, vocab, merges);
    types.assign(vocab.size(), 1);     // normal
    if (eos) types[size_t(*eos)] = 3;  // control
  }
  AIGC_CHECK(int64_t(vocab.size()) <= c.vocab_size, "GGUF export: the tokenizer has more tokens than the model");
  // A vocabulary padded past the tokenizer's (for speed) gets placeholder tokens llama.cpp marks unused.
  for (int64_t i = int64_t(vocab.size()); i < c.vocab_size; i++) {
    vocab.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(5);
  }

  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string(gguf_arch(c)));
  w.set("general.name", GgufValue::of_string(name));
  w.set("general.file_type", GgufValue::of_u32(file_type(type) + (matrix_types.medium ? 1 : 0)));
  w.set("general.quantization_version", GgufValue::of_u32(2));
  write_hparams(w, c);
  if (spm) {
    std::vector<float> scores = spm->scores;
    scores.resize(vocab.size(), -1e9f);
    w.set("tokenizer.ggml.model", GgufValue::of_string("llama"));
    w.set("tokenizer.ggml.pre", GgufValue::of_string("default"));
    w.set("tokenizer.ggml.tokens", GgufValue::of_strings(vocab));
    w.set("tokenizer.ggml.scores", GgufValue::of_f32s(scores));
    w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
    auto id = [&](const char* key, const std::optional<int>& t) {
      if (t) w.set(key, GgufValue::of_u32(uint32_t(*t)));
    };
    id("tokenizer.ggml.unknown_token_id", spm->unk);
    id("tokenizer.ggml.bos_token_id", spm->bos);
    id("tokenizer.ggml.eos_token_id", spm->eos);
    w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(spm->add_bos));
    w.set("tokenizer.ggml.add_eos_token", GgufValue::of_bool(spm->add_eos));
    w.set("tokenizer.ggml.add_space_prefix", GgufValue::of_bool(spm->add_space_prefix));
    if (!spm->chat_template.empty()) w.set("tokenizer.chat_template", GgufValue::of_string(spm->chat_template));
  } else {
    w.set("tokenizer.ggml.model", GgufValue::of_string("gpt2"));
    w.set("tokenizer.ggml.pre", GgufValue::of_string(bl ? bl->pre : "gpt-2"));
    w.set("tokenizer.ggml.tokens", GgufValue::of_strings(vocab));
    w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
    w.set("tokenizer.ggml.merges", GgufValue::of_strings(merges));
    if (bos) w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(uint32_t(*bos)));
    if (eos) w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(uint32_t(*eos)));
    w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(bl && bl->add_bos));
    if (bl) w.set("tokenizer.ggml.add_eos_token", GgufValue::of_bool(bl->add_eos));
    if (bl && !bl->chat_template.empty()) w.set("tokenizer.chat_template", GgufValue::of_string(bl->chat_template));
  }

  for (const Param& p : model.params().params()) {
    const Tensor& t = p.value;
    // Matrices take the requested type (when their rows fit its blocks); vectors stay f32, as in llama.cpp.
    const std::string gname = ggml_name(p.name);
    const GgmlType tt =
        t.dim() == 2 ? matrix_type(matrix_types, gname, t.size(1), c.n_layer, is_head(gname, c)) : GgmlType::F32;
    std::vector<float> permuted;
    const float* data = t.f32();
    if (const int64_t heads = rope_heads(p.name, c)) {
      permuted = permute_rope_rows(data, heads, c.head_size(), t.size(1), true);
      data = permuted.data();
    }
    if (tt == GgmlType::F32 && permuted.empty())
      w.add_tensor(ggml_name(p.name), tt, ggml_dims(t.shape()), data, size_t(t.numel()) * 4);
    else
      w.add_tensor_owned(ggml_name(p.name), tt, ggml_dims(t.shape()), convert_from_f32(tt, data, t.numel()));
  }
  const std::vector<float> factors = rope_freq_factors(c);
  if (!factors.empty())
    w.add_tensor_owned("rope_freqs.weight", GgmlType::F32, {int64_t(factors.size())},
                       convert_from_f32(GgmlType::F32, factors.data(), int64_t(factors.size())));
  w.write(path);
}

LoadedModel load_gguf_model(const std::string& path, bool inference_only) {
  return load_gguf_model(GgufReader(path), inference_only);
}

namespace {

// The model's hyperparameters from the file, checked against its tensors before anything is allocated.
GPTConfig read_config(const GgufReader& g, const std::string& arch) {
  const std::string& path = g.path();
  const std::string a = arch + ".";
  auto dim = [&](const char* key) {
    uint64_t v = g.get_uint(a + key);
    AIGC_CHECK(v >= 1 && v <= (1u << 24), path + ": " + a + key + " = " + std::to_string(v) + " is out of range");
    return int64_t(v);
  };
  GPTConfig c = arch == "gpt2" ? GPTConfig::gpt2_style() : GPTConfig::llama_style();
  c.qkv_bias = arch == "qwen2";
  c.n_layer = dim("block_count");
  c.n_head = dim("attention.head_count");
  c.n_embd = dim("embedding_length");
  c.block_size = dim("context_length");
  if (arch == "gpt2") {
    c.ln_eps = g.get_float("gpt2.attention.layer_norm_epsilon");
    if (auto ff = g.get_uint_opt("gpt2.feed_forward_length"))
      AIGC_CHECK(int64_t(*ff) == 4 * c.n_embd, path + ": gpt2.feed_forward_length " + std::to_string(*ff) +
                                                   " is not 4 x embedding_length, which aigc's GPT requires");
  } else {
    c.ln_eps = g.get_float(a + "attention.layer_norm_rms_epsilon");
    c.n_hidden = dim("feed_forward_length");
    c.n_kv_head = g.has(a + "attention.head_count_kv") ? dim("attention.head_count_kv") : c.n_head;
    if (g.has(a + "attention.key_length")) c.head_dim = dim("attention.key_length");
    const int64_t hs = c.head_size();
    AIGC_CHECK(!g.has(a + "attention.value_length") || dim("attention.value_length") == hs,
               path + ": " + a + "attention.value_length differs from key_length, which aigc does not support");
    AIGC_CHECK(!g.has(a + "rope.dimension_count") || dim("rope.dimension_count") == hs,
               path + ": " + a + "rope.dimension_count differs from the head size (partial rotary is not supported)");
    c.rope_theta = g.get_float_opt(a + "rope.freq_base").value_or(10000.0f);
    const std::string st = g.get_string_opt(a + "rope.scaling.type").value_or("none");
    AIGC_CHECK(st == "none" || st == "linear",
               path + ": " + a + "rope.scaling.type \"" + st + "\" is not supported (none, linear)");
    if (st == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = g.get_float(a + "rope.scaling.factor");
    }
    if (const GgufTensorInfo* rf = g.find("rope_freqs.weight")) {
      AIGC_CHECK(rf->dims.size() == 1 && rf->dims[0] == hs / 2,
                 path + ": rope_freqs.weight must hold head_size / 2 = " + std::to_string(hs / 2) + " values");
      AIGC_CHECK(st == "none", path + ": rope_freqs.weight and a rope.scaling.type at once are not supported");
      c.rope_scaling.type = "factors";
      c.rope_scaling.freq_factors.resize(size_t(hs / 2));
      g.read_f32_into("rope_freqs.weight", c.rope_scaling.freq_factors.data(), rf->dims);
    }
  }
  AIGC_CHECK(c.ln_eps > 0, path + ": the normalization epsilon must be positive");
  const GgufTensorInfo* te = g.find("token_embd.weight");
  AIGC_CHECK(te && te->dims.size() == 2, path + ": tensor \"token_embd.weight\" is missing or not a matrix");
  c.vocab_size = te->dims[1];
  c.tie_embeddings = g.find("output.weight") == nullptr;
  c.validate();
  // Every parameter must be in the file, so a header cannot make the model larger than the file's tensors: refuse
  // before allocating (the per-tensor dims are checked as each is read).
  const double need = c.param_count();
  double have = 0;
  for (const GgufTensorInfo& t : g.tensors()) have += double(t.numel());
  AIGC_CHECK(need <= have, path + ": the " + arch + " hyperparameters need " + std::to_string(int64_t(need)) +
                               " parameters but the file's tensors hold " + std::to_string(int64_t(have)));
  return c;
}

}  // namespace

LoadedModel load_gguf_model(const GgufReader& g, bool inference_only) {
  const std::string& path = g.path();
  const std::string arch = g.get_string("general.architecture");
  AIGC_CHECK(arch == "gpt2" || arch == "llama" || arch == "qwen2",
             path + ": architecture \"" + arch + "\" is not supported (gpt2, llama and qwen2 are)");
  const GPTConfig c = read_config(g, arch);

  // The tokenizer: byte-level BPE in GPT-2's alphabet ("gpt2"), or SentencePiece's tokens and scores ("llama").
  // Trailing unused placeholders belong to the model only.
  const std::string tm = g.get_string("tokenizer.ggml.model");
  AIGC_CHECK(tm == "gpt2" || tm == "llama",
             path + ": tokenizer.ggml.model \"" + tm + "\" is not supported (gpt2 and llama are)");
  // Byte-level BPE splits text with a pre-tokenizer regex that llama.cpp names here: GPT-2's (or none named) runs
  // in the "bpe" tokenizer, Llama 3's, Qwen2's and SmolLM's in an "hf" one; any other is refused rather than
  // encoded with the wrong regex, silently.
  const std::string pre = g.get_string_opt("tokenizer.ggml.pre").value_or("gpt-2");
  const auto& names = byte_level_pre_names();
  if (tm == "gpt2" && pre != "gpt-2" && std::find(names.begin(), names.end(), pre) == names.end()) {
    std::string known = "gpt-2";
    for (const std::string& n : names) known += ", " + n;
    fail(path + ": tokenizer.ggml.pre \"" + pre + "\" is not supported for byte-level BPE (" + known + " are)");
  }
  std::vector<std::string> vocab = g.get_strings("tokenizer.ggml.tokens");
  std::vector<int32_t> types;
  if (g.has("tokenizer.ggml.token_type")) {
    for (int64_t t : g.get_ints("tokenizer.ggml.token_type")) types.push_back(int32_t(std::clamp<int64_t>(t, 0, 7)));
    AIGC_CHECK(types.size() == vocab.size(), path + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                                                 " entries for " + std::to_string(vocab.size()) + " tokens");
    while (!vocab.empty() && types[vocab.size() - 1] == 5) vocab.pop_back(), types.pop_back();
  }
  LoadedModel lm;
  const size_t n_tokens = vocab.size();
  auto id = [&](const char* key) -> std::optional<int> {
    const auto u = g.get_uint_opt(key);
    if (u && *u >= n_tokens) fail(std::string(key) + " is " + std::to_string(*u) + ", not a token");
    return u ? std::optional<int>(int(*u)) : std::nullopt;
  };
  try {
    if (tm == "gpt2" && pre != "gpt-2") {
      ByteLevelVocab v;
      v.tokens = std::move(vocab);
      v.types = std::move(types);
      v.merges = g.has("tokenizer.ggml.merges") ? g.get_strings("tokenizer.ggml.merges") : std::vector<std::string>{};
      v.pre = pre;
      v.bos = id("tokenizer.ggml.bos_token_id"), v.eos = id("tokenizer.ggml.eos_token_id");
      // llama.cpp's defaults: Llama 3 starts every text with its bos token, the others do not.
      v.add_bos = g.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(pre == "llama-bpe") && v.bos;
      v.add_eos = g.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(false) && v.eos;
      v.chat_template = g.get_string_opt("tokenizer.chat_template").value_or("");
      lm.tokenizer = tokenizer_from_byte_level(v);
    } else if (tm == "gpt2") {
      nlohmann::json tj = {{"kind", "bpe"},
                           {"vocab", vocab},
                           {"merges", g.has("tokenizer.ggml.merges") ? g.get_strings("tokenizer.ggml.merges")
                                                                     : std::vector<std::string>{}}};
      lm.tokenizer = tokenizer_from_json(tj.dump());
    } else {
      SpmVocab v;
      v.tokens = std::move(vocab);
      v.scores = g.get_floats("tokenizer.ggml.scores");
      AIGC_CHECK(v.scores.size() >= v.tokens.size(), "tokenizer.ggml.scores has " + std::to_string(v.scores.size()) +
                                                         " entries for " + std::to_string(v.tokens.size()) + " tokens");
      v.scores.resize(v.tokens.size());
      v.types = std::move(types);
      v.unk = id("tokenizer.ggml.unknown_token_id"), v.bos = id("tokenizer.ggml.bos_token_id");
      v.eos = id("tokenizer.ggml.eos_token_id");
      // llama.cpp's defaults for SentencePiece vocabularies: a bos token first, a space before the text.
      v.add_bos = g.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(true) && v.bos;
      v.add_eos = g.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(false) && v.eos;
      v.add_space_prefix = g.get_bool_opt("tokenizer.ggml.add_space_prefix").value_or(true);
      v.chat_template = g.get_string_opt("tokenizer.chat_template").value_or("");
      lm.tokenizer = tokenizer_from_spm(v);
    }
  } catch (const std::exception& e) {
    fail(path + ": the vocabulary: " + e.what());
  }
  AIGC_CHECK(lm.tokenizer->vocab_size() <= c.vocab_size,
             path + ": the tokenizer has more tokens than token_embd.weight has rows");

  // Inference runs on the file's matrix type. aigc has no k-quant kernels: a Q4_K matrix runs as Q4_1 (each
  // 32-value sub-block is one, its scale and minimum rounded to halves) and a Q5_K or Q6_K one as Q8_0 (8-bit
  // steps, far finer than theirs), each converted alone from the file's bytes. For inference only, the matrices
  // in such a type (bf16, q8_0, q4_0, or from a k-quant) are taken as their blocks and never exist in f32, nor does
  // the token embedding (its rows are looked up in the file's bytes; a tied one's blocks are the head's too).
  const GgufTensorInfo* first = g.find(c.is_llama() ? "blk.0.attn_q.weight" : "blk.0.attn_qkv.weight");
  const GgmlType mt = first ? first->type : GgmlType::F32;
  // A file with any k-quant matrix: rows that are not whole super-blocks fall back to q8_0, so even attn_q may not
  // be one (the SmolLM shapes), and its q8_0 matrices run as its blocks too.
  bool kquant_file = false;
  for (const GgufTensorInfo& t : g.tensors()) kquant_file = kquant_file || runs_converted(t.type);
  // The types whose blocks run as they are in the file (a k-quant's are converted: runs_converted).
  auto as_blocks = [](GgmlType t) {
    return t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::BF16;
  };
  auto run_type = [](GgmlType t) {
    return t == GgmlType::Q4_K                        ? DType::Q4_1
           : runs_converted(t) || t == GgmlType::Q8_0 ? DType::Q8_0
           : t == GgmlType::Q4_0                      ? DType::Q4_0
           : t == GgmlType::Q4_1                      ? DType::Q4_1
                                                      : DType::BF16;
  };
  const bool blocky = kquant_file || as_blocks(mt);
  const DType qt = run_type(mt);
  auto blocks_of = [&](const Param& p) -> const GgufTensorInfo* {
    const std::string name = ggml_name(p.name);
    if (!blocky || p.value.dim() != 2 || (name == "token_embd.weight" && !is_head(name, c)) ||
        name == "position_embd.weight")
      return nullptr;
    const GgufTensorInfo* t = g.find(name);
    // Only types run from their blocks: a k-quant file's f16 or f32 matrix (even its attn_q) is read as values.
    const bool runs_from_blocks = t && (runs_converted(t->type) || as_blocks(t->type));
    const bool usable =
        runs_from_blocks && (t->type == mt || (kquant_file && (runs_converted(t->type) || t->type == GgmlType::Q8_0)));
    return usable && t->dims == ggml_dims(p.value.shape()) ? t : nullptr;
  };
  lm.model = std::make_unique<GPT>(c, false);  // every parameter is read below, or taken as blocks
  if (inference_only && blocky) {  // most of the f32 parameters are never written: none of their memory is needed
    const ParamStore& ps = lm.model->params();
    backend_for(ps.device()).discard(ps.data(), size_t(ps.numel()) * sizeof(float));
  }
  // For inference only, tokens are looked up in token_embd's own rows (in its type, dequantized one row at a time),
  // or, tied and run as they are, in the head's: its f32 values are read only when a tied head is converted from
  // them.
  const GgufTensorInfo* embd = g.find("token_embd.weight");
  const bool embd_rows = inference_only && blocky && embd && embd->dims == std::vector<int64_t>{c.n_embd, c.vocab_size};
  const Param* wte = nullptr;
  for (const Param& p : lm.model->params().params())
    if (ggml_name(p.name) == "token_embd.weight") wte = &p;
  const bool as_is = embd && as_blocks(embd->type);
  const bool head_rows = embd_rows && c.tie_embeddings && wte && blocks_of(*wte) && as_is;
  for (const Param& p : lm.model->params().params()) {
    const bool embedding = &p == wte;
    if (inference_only && blocks_of(p) && !embedding) continue;
    if (embedding && embd_rows && (!c.tie_embeddings || blocks_of(p))) continue;
    g.read_f32_into(ggml_name(p.name), p.value.f32(), ggml_dims(p.value.shape()));
    g.drop(*g.find(ggml_name(p.name)));  // the file's pages leave as each tensor is taken, not all at the end
    if (const int64_t heads = rope_heads(p.name, c)) {
      const std::vector<float> back = permute_rope_rows(p.value.f32(), heads, c.head_size(), p.value.size(1), false);
      std::copy(back.begin(), back.end(), p.value.f32());
    }
  }
  // Quantizing the dequantized values of a q8_0 / q4_0 / bf16 file gives back its blocks bit for bit (each
  // block's largest value sits exactly on a step), so a full load takes the f32 detour; not so for the others.
  const bool exact_detour = mt == GgmlType::Q8_0 || mt == GgmlType::Q4_0 || mt == GgmlType::BF16;
  if (!blocky || (!inference_only && exact_detour)) {
    if (blocky) lm.model->set_inference_dtype(qt);
    return lm;
  }
  if (head_rows) {
    lm.model->embed_with_head();
  } else if (embd_rows) {
    const int64_t row_bytes = int64_t(embd->nbytes) / c.vocab_size;
    lm.model->set_embedding_rows(
        {std::string(reinterpret_cast<const char*>(g.data(*embd)), embd->nbytes), row_bytes,
         [type = embd->type, n = c.n_embd](const uint8_t* row, float* out) { dequantize(type, row, out, n); }});
    g.drop(*embd);
  }
  std::unordered_map<std::string, const Param*> by_name;
  for (const Param& p : lm.model->params().params()) by_name[p.name] = &p;
  // A tensor's bytes read up to n: each call lets go of what is new since the last, and 64 KB before it (the page
  // that straddled the last end, which a drop keeps: only whole pages go).
  auto release = [&g](const GgufTensorInfo* t) {
    return [&g, t, done = size_t(0)](size_t n) mutable {
      g.drop(*t, done > (size_t(64) << 10) ? done - (size_t(64) << 10) : 0, n);
      done = n;
    };
  };
  lm.model->set_inference_blocks(
      qt,
      [&](const std::string& name) -> GPT::FileBlocks {
        const Param& p = *by_name.at(name);
        const GgufTensorInfo* t = blocks_of(p);
        if (!t) return {};
        const DType d = run_type(t->type);
        const int64_t heads = rope_heads(p.name, c), rows = p.value.size(0);
        if (!runs_converted(t->type) && !heads) {  // as in the file: read from there
          return {d, {}, std::string_view(reinterpret_cast<const char*>(g.data(*t)), t->nbytes), release(t)};
        }
        std::string bytes;
        if (t->type == GgmlType::Q4_K) {
          bytes = q4_k_to_q4_1(g.data(*t), p.value.numel());
        } else if (heads && runs_converted(t->type)) {  // its values, in q8_0 blocks, rows in aigc's order
          std::vector<float> v(size_t(p.value.numel()));
          dequantize(t->type, g.data(*t), v.data(), p.value.numel());
          v = permute_rope_rows(v.data(), heads, c.head_size(), p.value.size(1), false);
          g.drop(*t);
          return {d, quantize_q8_0(v.data(), int64_t(v.size())), {}, {}};
        } else if (runs_converted(t->type)) {
          // A few rows at a time, each chunk's pages let go behind it: the whole matrix in f32 was the load's peak
          // (a Q6_K head: 4 bytes a value; Llama-3-8B's, 2.1 GB). Rows hold whole blocks of each of these types.
          const int64_t cols = p.value.size(1), row_bytes = int64_t(t->nbytes) / rows;
          const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 14) / cols);  // 64 KB of floats
          std::vector<float> v(size_t(std::min(chunk, rows) * cols));
          bytes.reserve(size_t(rows * cols / kQuantBlock) * sizeof(BlockQ8_0));
          auto read_upto = release(t);
          for (int64_t r = 0; r < rows; r += chunk) {
            const int64_t n = std::min(chunk, rows - r);
            dequantize(t->type, g.data(*t) + r * row_bytes, v.data(), n * cols);
            bytes += quantize_q8_0(v.data(), n * cols);
            read_upto(size_t((r + n) * row_bytes));
          }
          return {d, std::move(bytes), {}, {}};
        } else {
          bytes.assign(reinterpret_cast<const char*>(g.data(*t)), t->nbytes);
        }
        if (heads) {  // rows of whole blocks: put back in aigc's order as bytes
          const std::vector<char> back =
              permute_rope_rows(bytes.data(), heads, c.head_size(), int64_t(bytes.size()) / rows, false);
          bytes.assign(back.begin(), back.end());
        }
        g.drop(*t);
        return {d, std::move(bytes), {}, {}};
      },
      !inference_only);
  return lm;
}

}  // namespace aigc

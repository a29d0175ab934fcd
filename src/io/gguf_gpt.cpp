// GPT models as GGUF files in llama.cpp's "gpt2" architecture: the same tensors under ggml's names, the
// hyperparameters as "gpt2.*" keys, and the byte-level BPE vocabulary and merges as "tokenizer.ggml.*".
// aigc's Linear weights are (out, in) row-major, which is ggml's dims {in, out} with the same bytes: no transposes.
#include <fstream>
#include <nlohmann/json.hpp>
#include <string_view>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/gguf.h"

namespace aigc {

namespace {

// aigc parameter name -> ggml tensor name, for block l or the model-wide tensors.
std::string ggml_name(const std::string& p) {
  static const std::pair<const char*, const char*> block[] = {
      {"ln_1.weight", "attn_norm.weight"},          {"ln_1.bias", "attn_norm.bias"},
      {"attn.c_attn.weight", "attn_qkv.weight"},    {"attn.c_attn.bias", "attn_qkv.bias"},
      {"attn.c_proj.weight", "attn_output.weight"}, {"attn.c_proj.bias", "attn_output.bias"},
      {"ln_2.weight", "ffn_norm.weight"},           {"ln_2.bias", "ffn_norm.bias"},
      {"mlp.c_fc.weight", "ffn_up.weight"},         {"mlp.c_fc.bias", "ffn_up.bias"},
      {"mlp.c_proj.weight", "ffn_down.weight"},     {"mlp.c_proj.bias", "ffn_down.bias"},
  };
  static const std::pair<const char*, const char*> global[] = {
      {"wte.weight", "token_embd.weight"},   {"wpe.weight", "position_embd.weight"},
      {"ln_f.weight", "output_norm.weight"}, {"ln_f.bias", "output_norm.bias"},
      {"lm_head.weight", "output.weight"},
  };
  if (p.starts_with("h.")) {
    const size_t dot = p.find('.', 2);
    const std::string rest = p.substr(dot + 1);
    for (auto [a, g] : block)
      if (rest == a) return "blk." + p.substr(2, dot - 2) + "." + g;
  }
  for (auto [a, g] : global)
    if (p == a) return g;
  fail("GGUF: no ggml name for parameter " + p);
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
    case GgmlType::Q8_0:
      return 7;
    case GgmlType::BF16:
      return 32;
  }
  return 0;
}

// The vocabulary in GPT-2's byte alphabet, and the merges ("left right"), of a bpe or bytes tokenizer.
void tokenizer_texts(const Tokenizer& tok, std::vector<std::string>& vocab, std::vector<std::string>& merges) {
  if (tok.kind() == "bytes") {
    // 256 byte tokens and no merges: GPT-2's byte-level BPE then gives exactly the byte ids.
    vocab = gpt2_byte_alphabet();
    return;
  }
  AIGC_CHECK(tok.kind() == "bpe",
             "GGUF holds byte-level BPE vocabularies (and raw bytes); this model's tokenizer is \"" + tok.kind() +
                 "\", which llama.cpp cannot reproduce");
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

void save_gguf(const std::string& path, GPT& model, const Tokenizer& tok, GgmlType type, const std::string& name) {
  const GPTConfig& c = model.config();
  AIGC_CHECK(c.norm == "pre" && c.activation == "gelu" && !c.lm_head_bias,
             "GGUF export supports GPT-2-style models (pre-LN, GELU, no head bias); this one is norm \"" + c.norm +
                 "\", activation \"" + c.activation + "\"");
  std::vector<std::string> vocab, merges;
  tokenizer_texts(tok, vocab, merges);
  AIGC_CHECK(int64_t(vocab.size()) <= c.vocab_size, "GGUF export: the tokenizer has more tokens than the model");
  std::vector<int32_t> types(vocab.size(), 1);  // normal
  std::optional<int> eos = tok.eos_id();
  if (eos) types[size_t(*eos)] = 3;  // control
  // A vocabulary padded past the tokenizer's (for speed) gets placeholder tokens llama.cpp marks unused.
  for (int64_t i = int64_t(vocab.size()); i < c.vocab_size; i++) {
    vocab.push_back("[PAD" + std::to_string(i) + "]");
    types.push_back(5);
  }

  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("gpt2"));
  w.set("general.name", GgufValue::of_string(name));
  w.set("general.file_type", GgufValue::of_u32(file_type(type)));
  w.set("general.quantization_version", GgufValue::of_u32(2));
  w.set("gpt2.context_length", GgufValue::of_u32(uint32_t(c.block_size)));
  w.set("gpt2.embedding_length", GgufValue::of_u32(uint32_t(c.n_embd)));
  w.set("gpt2.feed_forward_length", GgufValue::of_u32(uint32_t(4 * c.n_embd)));
  w.set("gpt2.block_count", GgufValue::of_u32(uint32_t(c.n_layer)));
  w.set("gpt2.attention.head_count", GgufValue::of_u32(uint32_t(c.n_head)));
  w.set("gpt2.attention.layer_norm_epsilon", GgufValue::of_f32(c.ln_eps));
  w.set("tokenizer.ggml.model", GgufValue::of_string("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::of_string("gpt-2"));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings(vocab));
  w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
  w.set("tokenizer.ggml.merges", GgufValue::of_strings(merges));
  if (eos) {
    w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(uint32_t(*eos)));
    w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(uint32_t(*eos)));
  }
  w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(false));

  for (const Param& p : model.params().params()) {
    const Tensor& t = p.value;
    // Matrices take the requested type (when their rows fit its blocks); vectors stay f32, as in llama.cpp.
    GgmlType tt = t.dim() == 2 ? type : GgmlType::F32;
    if (t.dim() == 2 && t.size(1) % ggml_type_info(uint32_t(tt))->block_elems) tt = GgmlType::F16;
    if (tt == GgmlType::F32)
      w.add_tensor(ggml_name(p.name), tt, ggml_dims(t.shape()), t.f32(), size_t(t.numel()) * 4);
    else
      w.add_tensor_owned(ggml_name(p.name), tt, ggml_dims(t.shape()), convert_from_f32(tt, t.f32(), t.numel()));
  }
  w.write(path);
}

LoadedModel load_gguf_model(const std::string& path) { return load_gguf_model(GgufReader(path)); }

LoadedModel load_gguf_model(const GgufReader& g) {
  const std::string& path = g.path();
  const std::string arch = g.get_string("general.architecture");
  AIGC_CHECK(arch == "gpt2", path + ": architecture \"" + arch + "\" is not supported (gpt2 is)");
  auto dim = [&](const char* key) {
    uint64_t v = g.get_uint(std::string("gpt2.") + key);
    AIGC_CHECK(v >= 1 && v <= (1u << 24), path + ": gpt2." + key + " = " + std::to_string(v) + " is out of range");
    return int64_t(v);
  };
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = dim("block_count");
  c.n_head = dim("attention.head_count");
  c.n_embd = dim("embedding_length");
  c.block_size = dim("context_length");
  c.ln_eps = g.get_float("gpt2.attention.layer_norm_epsilon");
  AIGC_CHECK(c.ln_eps > 0, path + ": gpt2.attention.layer_norm_epsilon must be positive");
  if (auto ff = g.get_uint_opt("gpt2.feed_forward_length"))
    AIGC_CHECK(int64_t(*ff) == 4 * c.n_embd, path + ": gpt2.feed_forward_length " + std::to_string(*ff) +
                                                 " is not 4 x embedding_length, which aigc's GPT requires");
  const GgufTensorInfo* te = g.find("token_embd.weight");
  AIGC_CHECK(te && te->dims.size() == 2, path + ": tensor \"token_embd.weight\" is missing or not a matrix");
  c.vocab_size = te->dims[1];
  c.tie_embeddings = g.find("output.weight") == nullptr;
  c.validate();
  // Every parameter must be in the file, so a header cannot make the model larger than the file's tensors: refuse
  // before allocating (the per-tensor dims are checked as each is read).
  const double C = double(c.n_embd), need = double(c.vocab_size) * C * (c.tie_embeddings ? 1 : 2) +
                                            double(c.block_size) * C + double(c.n_layer) * (12 * C * C + 13 * C) +
                                            2 * C;
  double have = 0;
  for (const GgufTensorInfo& t : g.tensors()) have += double(t.numel());
  AIGC_CHECK(need <= have, path + ": the gpt2 hyperparameters need " + std::to_string(int64_t(need)) +
                               " parameters but the file's tensors hold " + std::to_string(int64_t(have)));

  // The tokenizer: byte-level BPE in GPT-2's alphabet; trailing unused placeholders belong to the model only.
  const std::string tm = g.get_string("tokenizer.ggml.model");
  AIGC_CHECK(tm == "gpt2", path + ": tokenizer.ggml.model \"" + tm + "\" is not supported (gpt2 is)");
  std::vector<std::string> vocab = g.get_strings("tokenizer.ggml.tokens");
  if (g.has("tokenizer.ggml.token_type")) {
    std::vector<int64_t> types = g.get_ints("tokenizer.ggml.token_type");
    AIGC_CHECK(types.size() == vocab.size(), path + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                                                 " entries for " + std::to_string(vocab.size()) + " tokens");
    while (!vocab.empty() && types[vocab.size() - 1] == 5) vocab.pop_back();
  }
  nlohmann::json tj = {
      {"kind", "bpe"},
      {"vocab", vocab},
      {"merges", g.has("tokenizer.ggml.merges") ? g.get_strings("tokenizer.ggml.merges") : std::vector<std::string>{}}};
  LoadedModel lm;
  try {
    lm.tokenizer = tokenizer_from_json(tj.dump());
  } catch (const std::exception& e) {
    fail(path + ": the vocabulary: " + e.what());
  }
  AIGC_CHECK(lm.tokenizer->vocab_size() <= c.vocab_size,
             path + ": the tokenizer has more tokens than token_embd.weight has rows");

  lm.model = std::make_unique<GPT>(c);
  for (const Param& p : lm.model->params().params())
    g.read_f32_into(ggml_name(p.name), p.value.f32(), ggml_dims(p.value.shape()));
  // Inference runs on the file's matrix type. Quantizing the dequantized values gives back the file's blocks bit
  // for bit (each block's largest value sits exactly on a step), so nothing is lost by the f32 detour.
  const GgmlType mt = g.find("blk.0.attn_qkv.weight") ? g.find("blk.0.attn_qkv.weight")->type : GgmlType::F32;
  if (mt == GgmlType::Q8_0) lm.model->set_inference_dtype(DType::Q8_0);
  if (mt == GgmlType::Q4_0) lm.model->set_inference_dtype(DType::Q4_0);
  if (mt == GgmlType::BF16) lm.model->set_inference_dtype(DType::BF16);
  return lm;
}

}  // namespace aigc

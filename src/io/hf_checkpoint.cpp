// Hugging Face model directories (read-only): config.json, the weights in model.safetensors or in the shards that
// model.safetensors.index.json lists, and the tokenizer (vocab.json + merges.txt, or tokenizer.json). Two layouts:
// GPT-2 (its projections stored as Conv1D, (in, out)) and Llama's (LlamaForCausalLM and the models sharing its
// keys: Mistral without a sliding window, SmolLM, TinyLlama, and Qwen2 with its q, k and v biases), whose keys are
// aigc's own parameter names.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/json_brief.h"
#include "aigc/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace aigc {

namespace {

json read_json_file(const std::string& path) {
  try {
    // config.json and the shard index nest a few levels; deeper is refused while parsing.
    return json::parse(read_file(path), [&](int depth, json::parse_event_t, json&) {
      if (depth > 64) fail("'" + path + "': JSON nested deeper than 64 levels");
      return true;
    });
  } catch (const json::exception& e) {
    fail("'" + path + "' is not valid JSON: " + e.what());
  }
}

int64_t json_int(const json& j, const std::string& file, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (j.contains(k) && j[k].is_number_integer()) return j[k].get<int64_t>();
  fail("'" + file + "': missing integer field \"" + std::string(*keys.begin()) + "\"");
}

// An optional field: absent or null gives `fallback`; any other type than T is an error naming the field.
template <typename T>
T json_opt(const json& j, const std::string& file, const char* key, T fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  const bool ok = std::is_same_v<T, bool>          ? v.is_boolean()
                  : std::is_same_v<T, std::string> ? v.is_string()
                  : std::is_integral_v<T>          ? v.is_number_integer()
                                                   : v.is_number();
  AIGC_CHECK(ok, "'" + file + "': field \"" + key + "\" has the wrong type: " + json_brief(v));
  return v.get<T>();
}

// The weights of a directory: one model.safetensors, or the shards of model.safetensors.index.json.
class HfWeights {
 public:
  explicit HfWeights(const fs::path& dir) {
    const fs::path index = dir / "model.safetensors.index.json";
    if (!fs::exists(index)) {
      const fs::path one = dir / "model.safetensors";
      AIGC_CHECK(fs::exists(one), "'" + dir.string() + "' has neither model.safetensors nor its shard index");
      add_file(one);
      return;
    }
    const json j = read_json_file(index.string());
    AIGC_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
               "'" + index.string() + "': no \"weight_map\" object");
    std::map<std::string, const SafeTensorsReader*> opened;
    for (const auto& [name, file] : j["weight_map"].items()) {
      AIGC_CHECK(file.is_string(), "'" + index.string() + "': weight_map[\"" + name + "\"] is not a file name");
      const std::string f = file.get<std::string>();
      // Shards lie beside the index: a path elsewhere is refused.
      AIGC_CHECK(
          !f.empty() && f.find('/') == std::string::npos && f.find('\\') == std::string::npos && f != "." && f != "..",
          "'" + index.string() + "': weight_map[\"" + name + "\"] = \"" + f + "\" is not a file in the directory");
      if (!opened.count(f)) opened[f] = &add_file(dir / f);
      AIGC_CHECK(by_name_.count(name) && by_name_[name].first == opened[f],
                 "'" + index.string() + "': tensor " + name + " is not in " + f);
    }
  }
  const std::map<std::string, std::pair<const SafeTensorsReader*, const StTensorInfo*>>& tensors() const {
    return by_name_;
  }
  // Reads `name` into dst as f32 after checking its shape.
  void read(const std::string& name, float* dst, const Shape& shape) const {
    auto it = by_name_.find(name);
    AIGC_CHECK(it != by_name_.end(), "Hugging Face weights: missing tensor " + name);
    it->second.first->read_f32_into(name, dst, shape);
  }

 private:
  const SafeTensorsReader& add_file(const fs::path& path) {
    AIGC_CHECK(fs::exists(path), "'" + path.string() + "' does not exist");
    files_.push_back(std::make_unique<SafeTensorsReader>(path.string()));
    for (const StTensorInfo& t : files_.back()->tensors()) {
      AIGC_CHECK(!by_name_.count(t.name), "'" + path.string() + "': tensor " + t.name + " is in two shards");
      by_name_[t.name] = {files_.back().get(), &t};
    }
    return *files_.back();
  }
  std::vector<std::unique_ptr<SafeTensorsReader>> files_;
  std::map<std::string, std::pair<const SafeTensorsReader*, const StTensorInfo*>> by_name_;
};

// The config's values, and its size: every parameter is read from the weights, so config.json cannot make the
// model larger than they are. Refused before anything is allocated (each tensor's shape is checked as it is read).
void validate(const GPTConfig& c, const HfWeights& w, const std::string& file) {
  try {
    c.validate();
  } catch (const Error& e) {
    fail("'" + file + "': " + e.what());  // the file, then the field in aigc's words
  }
  double have = 0;
  for (const auto& [name, where] : w.tensors()) {
    double n = 1;
    for (int64_t d : where.second->shape) n *= double(d);
    have += n;
  }
  const double need = c.param_count();
  AIGC_CHECK(need <= have, "'" + file + "': the config asks for " + std::to_string(int64_t(std::min(need, 9e18))) +
                               " parameters but the weights hold " + std::to_string(int64_t(have)));
}

std::unique_ptr<Tokenizer> load_hf_dir_tokenizer(const fs::path& dir) {
  if (fs::exists(dir / "tokenizer.json")) return load_hf_tokenizer(dir.string());
  return load_bpe_tokenizer(dir.string());
}

GPTConfig gpt2_config(const json& j, const std::string& file) {
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = json_int(j, file, {"n_layer", "num_hidden_layers"});
  c.n_head = json_int(j, file, {"n_head", "num_attention_heads"});
  c.n_embd = json_int(j, file, {"n_embd", "hidden_size"});
  c.block_size = json_int(j, file, {"n_positions", "n_ctx", "max_position_embeddings"});
  c.vocab_size = json_int(j, file, {"vocab_size"});
  c.ln_eps = json_opt(j, file, "layer_norm_epsilon", c.ln_eps);
  const std::string act = json_opt<std::string>(j, file, "activation_function", "gelu_new");
  AIGC_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "relu",
             "'" + file + "': activation_function \"" + act + "\" is not supported (gelu_new, relu)");
  c.activation = act == "relu" ? "relu" : "gelu";
  return c;
}

LoadedModel load_gpt2(const fs::path& dir, const json& j, const std::string& file) {
  GPTConfig c = gpt2_config(j, file);
  HfWeights weights(dir);
  // Keys may carry a "transformer." prefix; attention mask buffers are not parameters.
  std::map<std::string, std::string> key;  // aigc name -> file key
  for (const auto& [name, where] : weights.tensors()) {
    std::string n = name.starts_with("transformer.") ? name.substr(12) : name;
    if (!n.ends_with(".attn.bias") && !n.ends_with(".attn.masked_bias")) key[n] = name;
  }
  auto read_all = [&](const std::string& n) {
    AIGC_CHECK(key.count(n), "'" + dir.string() + "': missing tensor " + n);
    const auto& [st, info] = weights.tensors().at(key[n]);
    return std::make_pair(st->read_f32(info->name), info->shape);
  };
  c.tie_embeddings = !key.count("lm_head.weight") || read_all("lm_head.weight").first == read_all("wte.weight").first;
  validate(c, weights, file);

  LoadedModel lm;
  lm.model = std::make_unique<GPT>(c, false);
  for (const Param& p : lm.model->params().params()) {
    const Shape& shape = p.value.shape();
    // GPT-2 stores its projections as Conv1D, (in, out); aigc's Linear weights are (out, in).
    const bool conv1d = p.name.ends_with(".weight") &&
                        (p.name.find(".attn.") != std::string::npos || p.name.find(".mlp.") != std::string::npos);
    if (!conv1d) {
      AIGC_CHECK(key.count(p.name), "'" + dir.string() + "': missing tensor " + p.name);
      weights.read(key[p.name], p.value.f32(), shape);
      continue;
    }
    auto [w, wshape] = read_all(p.name);
    AIGC_CHECK(wshape == Shape({shape[1], shape[0]}), "'" + dir.string() + "': tensor " + p.name + " has shape " +
                                                          shape_str(wshape) + ", expected " +
                                                          shape_str({shape[1], shape[0]}) + " (Conv1D layout)");
    float* dst = p.value.f32();
    for (int64_t i = 0; i < shape[1]; i++)
      for (int64_t o = 0; o < shape[0]; o++) dst[o * shape[1] + i] = w[size_t(i * shape[0] + o)];
  }
  lm.tokenizer = load_hf_dir_tokenizer(dir);
  return lm;
}

RopeScaling rope_scaling_of(const json& j, const std::string& file) {
  RopeScaling s;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return s;
  const json& r = j["rope_scaling"];
  AIGC_CHECK(r.is_object(), "'" + file + "': rope_scaling must be an object or null");
  std::string type = json_opt<std::string>(r, file, "rope_type", json_opt<std::string>(r, file, "type", "default"));
  AIGC_CHECK(type == "default" || type == "linear" || type == "llama3",
             "'" + file + "': rope_scaling type \"" + type + "\" is not supported (default, linear, llama3)");
  s.type = type == "default" ? "none" : type;
  s.factor = json_opt(r, file, "factor", s.factor);
  s.low_freq_factor = json_opt(r, file, "low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = json_opt(r, file, "high_freq_factor", s.high_freq_factor);
  s.original_max_position = json_opt(r, file, "original_max_position_embeddings", s.original_max_position);
  return s;
}

// Llama's config.json (Mistral's too), or Qwen2's: Llama blocks whose q, k and v projections carry biases.
GPTConfig llama_config(const json& j, const std::string& file, bool qwen2) {
  GPTConfig c = GPTConfig::llama_style();
  c.qkv_bias = qwen2;
  c.n_layer = json_int(j, file, {"num_hidden_layers"});
  c.n_head = json_int(j, file, {"num_attention_heads"});
  c.n_kv_head = json_opt<int64_t>(j, file, "num_key_value_heads", c.n_head);
  c.n_embd = json_int(j, file, {"hidden_size"});
  c.n_hidden = json_int(j, file, {"intermediate_size"});
  c.head_dim = json_opt<int64_t>(j, file, "head_dim", 0);
  c.block_size = json_int(j, file, {"max_position_embeddings"});
  c.vocab_size = json_int(j, file, {"vocab_size"});
  c.ln_eps = json_opt(j, file, "rms_norm_eps", 1e-6f);
  c.rope_theta = json_opt(j, file, "rope_theta", c.rope_theta);
  c.rope_scaling = rope_scaling_of(j, file);
  c.tie_embeddings = json_opt(j, file, "tie_word_embeddings", false);
  const std::string act = json_opt<std::string>(j, file, "hidden_act", "silu");
  AIGC_CHECK(act == "silu", "'" + file + "': hidden_act \"" + act + "\" is not supported (silu)");
  for (const char* k : {"attention_bias", "mlp_bias"})
    AIGC_CHECK(!json_opt(j, file, k, false), "'" + file + "': " + k + " true is not supported (no biases)");
  // Mistral's sliding window changes nothing while the context fits in it. Qwen2 names a window that it uses
  // only with use_sliding_window.
  const bool windowed = !qwen2 || json_opt(j, file, "use_sliding_window", false);
  const int64_t window = windowed ? json_opt<int64_t>(j, file, "sliding_window", 0) : 0;
  AIGC_CHECK(window == 0 || window >= c.block_size, "'" + file + "': sliding_window " + std::to_string(window) +
                                                        " is shorter than the context " + std::to_string(c.block_size) +
                                                        "; sliding-window attention is not supported");
  return c;
}

LoadedModel load_llama(const fs::path& dir, const json& j, const std::string& file, bool qwen2) {
  GPTConfig c = llama_config(j, file, qwen2);
  HfWeights weights(dir);
  // A checkpoint without lm_head.weight ties the head to the embedding whatever the config says.
  if (!weights.tensors().count("lm_head.weight")) c.tie_embeddings = true;
  validate(c, weights, file);
  LoadedModel lm;
  lm.model = std::make_unique<GPT>(c, false);
  std::map<std::string, bool> used;
  for (const Param& p : lm.model->params().params()) {
    weights.read(p.name, p.value.f32(), p.value.shape());
    used[p.name] = true;
  }
  // A tensor aigc does not know (a bias, a different layout) would be silently dropped: refuse it instead.
  for (const auto& [name, where] : weights.tensors())
    AIGC_CHECK(used.count(name) || name.ends_with("rotary_emb.inv_freq") || name == "lm_head.weight",
               "'" + dir.string() + "': tensor " + name + " is not part of the Llama architecture aigc runs");
  lm.tokenizer = load_hf_dir_tokenizer(dir);
  return lm;
}

}  // namespace

LoadedModel load_hf_model(const std::string& path) {
  const fs::path dir(path);
  const std::string file = (dir / "config.json").string();
  AIGC_CHECK(fs::exists(file), "'" + path + "' has no config.json (expected a Hugging Face model directory)");
  const json j = read_json_file(file);
  AIGC_CHECK(j.is_object(), "'" + file + "': expected a JSON object");
  const std::string type = json_opt<std::string>(j, file, "model_type", "gpt2");
  LoadedModel lm;
  if (type == "gpt2")
    lm = load_gpt2(dir, j, file);
  else if (type == "llama" || type == "mistral" || type == "qwen2")
    lm = load_llama(dir, j, file, type == "qwen2");
  else
    fail("'" + file + "': model_type \"" + type + "\" is not supported (gpt2, llama, mistral, qwen2)");
  AIGC_CHECK(lm.tokenizer->vocab_size() <= lm.model->config().vocab_size,
             "'" + path + "': the tokenizer has more tokens than the model's vocab_size");
  return lm;
}

}  // namespace aigc

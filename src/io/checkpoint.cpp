#include "aigc/checkpoint.h"
#include "aigc/checkpoint_kind.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/safetensors.h"

namespace fs = std::filesystem;

namespace aigc {

static const char* kFormat = "aigc-gpt-1";

void save_checkpoint(const std::string& path, GPT& model, const Tokenizer& tokenizer, Optimizer* optimizer,
                     const std::string& train_state_json) {
  std::vector<StTensorOut> out;
  for (const Param& p : model.params().params())
    out.push_back({p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"aigc.config", model.config().to_json()},
      {"aigc.tokenizer", tokenizer.to_json()},
  };
  if (optimizer) {
    int64_t n = model.params().numel();
    out.push_back({"optim.m", StDType::F32, {n}, optimizer->m().f32(), size_t(n) * 4});
    if (optimizer->v().defined()) out.push_back({"optim.v", StDType::F32, {n}, optimizer->v().f32(), size_t(n) * 4});
    nlohmann::json oj = {{"name", optimizer->config().name}, {"steps", optimizer->steps()}};
    meta["aigc.optimizer"] = oj.dump();
  }
  if (!train_state_json.empty()) meta["aigc.train_state"] = train_state_json;
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_safetensors(path, out, meta);
}

// --- Hugging Face GPT-2 -------------------------------------------------------------------------------------

static nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("'" + path + "' is not valid JSON: " + e.what());
  }
}

static int64_t json_int(const nlohmann::json& j, const std::string& file, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (j.contains(k) && j[k].is_number_integer()) return j[k].get<int64_t>();
  fail("'" + file + "': missing integer field \"" + std::string(*keys.begin()) + "\"");
}

static LoadedModel load_hf_gpt2(const std::string& dir) {
  std::string cfg_path = (fs::path(dir) / "config.json").string();
  std::string st_path = (fs::path(dir) / "model.safetensors").string();
  AIGC_CHECK(fs::exists(cfg_path), "'" + dir + "' has no config.json (expected a Hugging Face GPT-2 directory)");
  AIGC_CHECK(fs::exists(st_path), "'" + dir + "' has no model.safetensors");
  nlohmann::json j = read_json_file(cfg_path);
  GPTConfig c = GPTConfig::gpt2_style();
  c.n_layer = json_int(j, cfg_path, {"n_layer", "num_hidden_layers"});
  c.n_head = json_int(j, cfg_path, {"n_head", "num_attention_heads"});
  c.n_embd = json_int(j, cfg_path, {"n_embd", "hidden_size"});
  c.block_size = json_int(j, cfg_path, {"n_positions", "n_ctx", "max_position_embeddings"});
  c.vocab_size = json_int(j, cfg_path, {"vocab_size"});
  if (j.contains("layer_norm_epsilon") && j["layer_norm_epsilon"].is_number())
    c.ln_eps = j["layer_norm_epsilon"].get<float>();
  if (j.contains("activation_function") && j["activation_function"].is_string()) {
    std::string act = j["activation_function"];
    AIGC_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "relu",
               "'" + cfg_path + "': activation_function \"" + act + "\" is not supported (gelu_new, relu)");
    c.activation = act == "relu" ? "relu" : "gelu";
  }

  SafeTensorsReader st(st_path);
  // Keys may carry a "transformer." prefix; attention mask buffers are not parameters.
  std::map<std::string, const StTensorInfo*> by_name;
  for (const StTensorInfo& t : st.tensors()) {
    std::string n = t.name.starts_with("transformer.") ? t.name.substr(12) : t.name;
    if (n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias")) continue;
    by_name[n] = &t;
  }
  auto lm = by_name.find("lm_head.weight");
  bool untied = false;
  if (lm != by_name.end()) {
    auto wte = by_name.find("wte.weight");
    AIGC_CHECK(wte != by_name.end(), "'" + st_path + "': missing tensor wte.weight");
    std::vector<float> a = st.read_f32(lm->second->name), b = st.read_f32(wte->second->name);
    untied = a != b;
  }
  c.tie_embeddings = !untied;
  c.validate();

  LoadedModel lmodel;
  lmodel.model = std::make_unique<GPT>(c);
  for (const Param& p : lmodel.model->params().params()) {
    auto it = by_name.find(p.name);
    AIGC_CHECK(it != by_name.end(), "'" + st_path + "': missing tensor " + p.name);
    const Shape& shape = p.value.shape();
    // GPT-2 stores its projections as Conv1D, (in, out); aigc's Linear weights are (out, in).
    bool conv1d = p.name.ends_with(".weight") &&
                  (p.name.find(".attn.") != std::string::npos || p.name.find(".mlp.") != std::string::npos);
    if (!conv1d) {
      st.read_f32_into(it->second->name, p.value.f32(), shape);
      continue;
    }
    std::vector<float> w = st.read_f32(it->second->name);
    AIGC_CHECK(it->second->shape == Shape({shape[1], shape[0]}),
               "'" + st_path + "': tensor " + it->second->name + " has shape " + shape_str(it->second->shape) +
                   ", expected " + shape_str({shape[1], shape[0]}) + " (Conv1D layout)");
    float* dst = p.value.f32();
    for (int64_t i = 0; i < shape[1]; i++)
      for (int64_t o = 0; o < shape[0]; o++) dst[o * shape[1] + i] = w[size_t(i * shape[0] + o)];
  }
  lmodel.tokenizer = load_bpe_tokenizer(dir);
  AIGC_CHECK(lmodel.tokenizer->vocab_size() <= c.vocab_size,
             "'" + dir + "': the tokenizer has more tokens than the model's vocab_size");
  return lmodel;
}

// --- aigc checkpoints -----------------------------------------------------------------------------------------

static std::string meta_field(const SafeTensorsReader& st, const std::string& path, const std::string& key) {
  auto it = st.metadata().find(key);
  AIGC_CHECK(it != st.metadata().end(), "'" + path + "' is not an aigc checkpoint: metadata has no \"" + key + "\"");
  return it->second;
}

LoadedModel load_model(const std::string& path) {
  AIGC_CHECK(fs::exists(path), "checkpoint '" + path + "' does not exist");
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "config.json")) return load_hf_gpt2(path);
    fs::path f = fs::path(path) / "model.safetensors";
    AIGC_CHECK(fs::exists(f), "directory '" + path + "' holds neither config.json nor model.safetensors");
    return load_model(f.string());
  }
  if (is_gguf_file(path)) return load_gguf_model(path);
  SafeTensorsReader st(path);
  AIGC_CHECK(meta_field(st, path, "format") == kFormat,
             "'" + path + "': unsupported checkpoint format \"" + meta_field(st, path, "format") + "\"");
  LoadedModel lm;
  lm.model = std::make_unique<GPT>(GPTConfig::from_json(meta_field(st, path, "aigc.config")));
  lm.tokenizer = tokenizer_from_json(meta_field(st, path, "aigc.tokenizer"));
  AIGC_CHECK(lm.tokenizer->vocab_size() <= lm.model->config().vocab_size,
             "'" + path + "': the tokenizer has more tokens than the model's vocab_size");
  for (const Param& p : lm.model->params().params()) {
    AIGC_CHECK(st.find(p.name), "'" + path + "': missing tensor " + p.name);
    st.read_f32_into(p.name, p.value.f32(), p.value.shape());
  }
  auto ts = st.metadata().find("aigc.train_state");
  if (ts != st.metadata().end()) lm.train_state = ts->second;
  return lm;
}

void load_optimizer_state(const std::string& path, GPT& model, Optimizer& optimizer) {
  SafeTensorsReader st(path);
  nlohmann::json oj;
  try {
    oj = nlohmann::json::parse(meta_field(st, path, "aigc.optimizer"));
  } catch (const nlohmann::json::exception& e) {
    fail("'" + path + "': invalid optimizer metadata: " + e.what());
  }
  AIGC_CHECK(oj.value("name", "") == optimizer.config().name, "'" + path + "' holds " +
                                                                  oj.value("name", std::string("?")) +
                                                                  " state; this run uses " + optimizer.config().name);
  int64_t n = model.params().numel();
  st.read_f32_into("optim.m", optimizer.m().f32(), {n});
  if (optimizer.v().defined()) st.read_f32_into("optim.v", optimizer.v().f32(), {n});
  optimizer.set_steps(oj.value("steps", int64_t(0)));
}

}  // namespace aigc

namespace aigc {

std::string checkpoint_kind(const std::string& path) {
  if (is_gguf_file(path)) return "gpt";
  SafeTensorsReader st(path);
  auto it = st.metadata().find("format");
  if (it == st.metadata().end()) return "";
  if (it->second == "aigc-ddpm-1") return "ddpm";
  if (it->second == "aigc-dcgan-1") return "dcgan";
  if (it->second == "aigc-gpt-1") return "gpt";
  return "";
}

std::vector<std::string> checkpoint_class_names(const SafeTensorsReader& st) {
  auto it = st.metadata().find("aigc.classes");
  if (it == st.metadata().end()) return {};
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  AIGC_CHECK(j.is_array(), "'" + st.path() + "': aigc.classes must be a list of names");
  std::vector<std::string> out;
  for (auto& v : j) out.push_back(v.is_string() ? v.get<std::string>() : "");
  return out;
}

}  // namespace aigc

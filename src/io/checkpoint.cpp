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
  AIGC_CHECK(!model.inference_only(),
             "save_checkpoint: this model was loaded for inference only, as its file's "
             "quantized blocks: there are no f32 weights to save");
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

// --- aigc checkpoints -----------------------------------------------------------------------------------------

static std::string meta_field(const SafeTensorsReader& st, const std::string& path, const std::string& key) {
  auto it = st.metadata().find(key);
  AIGC_CHECK(it != st.metadata().end(), "'" + path + "' is not an aigc checkpoint: metadata has no \"" + key + "\"");
  return it->second;
}

LoadedModel load_model(const std::string& path, bool inference_only) {
  AIGC_CHECK(fs::exists(path), "checkpoint '" + path + "' does not exist");
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "config.json")) return load_hf_model(path);
    fs::path f = fs::path(path) / "model.safetensors";
    AIGC_CHECK(fs::exists(f), "directory '" + path + "' holds neither config.json nor model.safetensors");
    return load_model(f.string(), inference_only);
  }
  if (is_gguf_file(path)) return load_gguf_model(path, inference_only);
  SafeTensorsReader st(path);
  AIGC_CHECK(meta_field(st, path, "format") == kFormat,
             "'" + path + "': unsupported checkpoint format \"" + meta_field(st, path, "format") + "\"");
  LoadedModel lm;
  lm.model = std::make_unique<GPT>(GPTConfig::from_json(meta_field(st, path, "aigc.config")), false);
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

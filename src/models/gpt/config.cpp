// GPTConfig presets, validation and JSON (stored in checkpoint metadata).
#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "aigc/models/gpt.h"

namespace aigc {

GPTConfig GPTConfig::gpt2_style() { return GPTConfig{}; }

GPTConfig GPTConfig::transformer_style() {
  GPTConfig c;
  c.norm = "post";
  c.activation = "relu";
  c.tie_embeddings = false;
  c.lm_head_bias = true;
  c.block_size = 512;
  return c;
}

void GPTConfig::validate() const {
  auto pos = [](int64_t v, const char* f) {
    AIGC_CHECK(v > 0, std::string("model config: ") + f + " must be positive, got " + std::to_string(v));
  };
  pos(n_layer, "n_layer");
  pos(n_head, "n_head");
  pos(n_embd, "n_embd");
  pos(block_size, "block_size");
  pos(vocab_size, "vocab_size");
  AIGC_CHECK(n_embd % n_head == 0, "model config: n_embd (" + std::to_string(n_embd) +
                                       ") must be divisible by n_head (" + std::to_string(n_head) + ")");
  AIGC_CHECK(norm == "pre" || norm == "post", "model config: norm must be \"pre\" or \"post\", got \"" + norm + "\"");
  AIGC_CHECK(activation == "gelu" || activation == "relu",
             "model config: activation must be \"gelu\" or \"relu\", got \"" + activation + "\"");
  AIGC_CHECK(dropout >= 0.0f && dropout < 1.0f, "model config: dropout must be in [0, 1)");
  AIGC_CHECK(!(tie_embeddings && lm_head_bias), "model config: lm_head_bias needs an untied head");
  AIGC_CHECK(ln_eps > 0.0f, "model config: ln_eps must be positive");
}

std::string GPTConfig::to_json() const {
  nlohmann::json j = {{"n_layer", n_layer},
                      {"n_head", n_head},
                      {"n_embd", n_embd},
                      {"block_size", block_size},
                      {"vocab_size", vocab_size},
                      {"norm", norm},
                      {"activation", activation},
                      {"tie_embeddings", tie_embeddings},
                      {"lm_head_bias", lm_head_bias},
                      {"dropout", dropout},
                      {"ln_eps", ln_eps}};
  return j.dump();
}

GPTConfig GPTConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(std::string("model config: not valid JSON: ") + e.what());
  }
  AIGC_CHECK(j.is_object(), "model config: expected a JSON object");
  GPTConfig c;
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    try {
      j.at(key).get_to(field);
    } catch (const std::exception&) {
      fail(std::string("model config: field \"") + key + "\" has the wrong type: " + j.at(key).dump());
    }
  };
  get("n_layer", c.n_layer);
  get("n_head", c.n_head);
  get("n_embd", c.n_embd);
  get("block_size", c.block_size);
  get("vocab_size", c.vocab_size);
  get("norm", c.norm);
  get("activation", c.activation);
  get("tie_embeddings", c.tie_embeddings);
  get("lm_head_bias", c.lm_head_bias);
  get("dropout", c.dropout);
  get("ln_eps", c.ln_eps);
  c.validate();
  return c;
}

}  // namespace aigc

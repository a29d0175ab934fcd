// GPTConfig presets, validation and JSON (stored in checkpoint metadata).
#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>

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

GPTConfig GPTConfig::llama_style() {
  GPTConfig c;
  c.arch = "llama";
  c.norm = "rms";
  c.activation = "swiglu";
  c.tie_embeddings = false;
  return c;
}

int64_t GPTConfig::hidden_size() const {
  if (!is_llama()) return 4 * n_embd;
  if (n_hidden > 0) return n_hidden;
  return (8 * n_embd / 3 + 31) / 32 * 32;  // SwiGLU's three matrices hold about as much as a 4x GELU MLP's two
}

double GPTConfig::param_count() const {
  const double C = double(n_embd), V = double(vocab_size), H = double(hidden_size());
  if (is_llama()) {
    const double Cq = double(n_head) * double(head_size()), Ckv = double(kv_heads()) * double(head_size());
    double layer = 2 * C + 2 * Cq * C + 2 * Ckv * C + 3 * H * C;  // norms, q and o, k and v, the MLP
    if (qkv_bias) layer += Cq + 2 * Ckv;
    return V * C * (tie_embeddings ? 1 : 2) + double(n_layer) * layer + C;
  }
  const double layer = 4 * C + 4 * C * C + 4 * C + 2 * H * C + H + C;  // norms, attention, the MLP
  const double head = tie_embeddings ? 0 : V * C + (lm_head_bias ? V : 0);
  return V * C + double(block_size) * C + double(n_layer) * layer + 2 * C + head;
}

std::vector<float> GPTConfig::rope_inv_freq() const {
  const int64_t hs = head_size();
  std::vector<float> f(size_t(hs / 2));
  for (int64_t i = 0; i < hs / 2; i++) {
    // fp32 throughout, as Hugging Face computes them: 1 / theta^(2i / hs).
    const float e = float(2 * i) / float(hs);
    f[size_t(i)] = 1.0f / std::pow(rope_theta, e);
  }
  const RopeScaling& s = rope_scaling;
  if (s.type == "linear") {
    for (float& v : f) v /= s.factor;
  } else if (s.type == "factors") {
    for (size_t i = 0; i < f.size(); i++) f[i] /= s.freq_factors[i];
  } else if (s.type == "llama3") {
    const float old = float(s.original_max_position);
    const float low_wavelen = old / s.low_freq_factor, high_wavelen = old / s.high_freq_factor;
    for (float& v : f) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / v;
      if (wavelen > low_wavelen) {
        v /= s.factor;  // low frequencies: stretched
      } else if (!(wavelen < high_wavelen)) {
        const float smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = (1.0f - smooth) * v / s.factor + smooth * v;
      }
    }
  }
  return f;
}

void GPTConfig::validate() const {
  // Every size at most 2^24 (the largest models use 2^17 or so): products of two sizes cannot overflow, and a file
  // cannot ask for absurd tables (rotary frequencies, caches) that its tensors do not bound.
  constexpr int64_t kMax = int64_t(1) << 24;
  auto pos = [](int64_t v, const char* f) {
    AIGC_CHECK(v > 0 && v <= kMax, std::string("model config: ") + f + " must be in [1, " + std::to_string(kMax) +
                                       "], got " + std::to_string(v));
  };
  pos(n_layer, "n_layer");
  pos(n_head, "n_head");
  pos(n_embd, "n_embd");
  pos(block_size, "block_size");
  pos(vocab_size, "vocab_size");
  AIGC_CHECK(
      n_kv_head >= 0 && n_kv_head <= kMax && head_dim >= 0 && head_dim <= kMax && n_hidden >= 0 && n_hidden <= kMax,
      "model config: n_kv_head, head_dim and n_hidden must be in [0, " + std::to_string(kMax) + "]");
  AIGC_CHECK(arch == "gpt" || arch == "llama", "model config: arch must be \"gpt\" or \"llama\", got \"" + arch + "\"");
  AIGC_CHECK(dropout >= 0.0f && dropout < 1.0f, "model config: dropout must be in [0, 1)");
  AIGC_CHECK(ln_eps > 0.0f, "model config: ln_eps must be positive");
  AIGC_CHECK(!qkv_bias || is_llama(), "model config: qkv_bias is for arch llama (GPT-2's attention has its biases)");
  if (is_llama()) {
    validate_llama();
    return;
  }
  AIGC_CHECK(n_embd % n_head == 0, "model config: n_embd (" + std::to_string(n_embd) +
                                       ") must be divisible by n_head (" + std::to_string(n_head) + ")");
  AIGC_CHECK(norm == "pre" || norm == "post", "model config: norm must be \"pre\" or \"post\", got \"" + norm + "\"");
  AIGC_CHECK(activation == "gelu" || activation == "relu",
             "model config: activation must be \"gelu\" or \"relu\", got \"" + activation + "\"");
  AIGC_CHECK(!(tie_embeddings && lm_head_bias), "model config: lm_head_bias needs an untied head");
}

void GPTConfig::validate_llama() const {
  auto str = [](auto v) { return std::to_string(v); };
  AIGC_CHECK(norm == "rms" && activation == "swiglu",
             "model config: arch llama has norm \"rms\" and activation \"swiglu\", got \"" + norm + "\" and \"" +
                 activation + "\"");
  AIGC_CHECK(dropout == 0.0f, "model config: arch llama has no dropout; set dropout to 0");
  AIGC_CHECK(!lm_head_bias, "model config: arch llama has no lm_head bias");
  AIGC_CHECK(n_kv_head >= 0 && n_head % kv_heads() == 0,
             "model config: n_head (" + str(n_head) + ") must be a multiple of n_kv_head (" + str(n_kv_head) + ")");
  AIGC_CHECK(head_dim > 0 || n_embd % n_head == 0, "model config: n_embd (" + str(n_embd) +
                                                       ") must be divisible by n_head (" + str(n_head) +
                                                       ") unless head_dim is given");
  AIGC_CHECK(head_dim >= 0 && head_size() % 2 == 0,
             "model config: the head size must be even for the rotary embedding, got " + str(head_size()));
  AIGC_CHECK(n_hidden >= 0, "model config: n_hidden must not be negative");
  AIGC_CHECK(rope_theta > 0.0f && std::isfinite(rope_theta), "model config: rope_theta must be positive");
  const RopeScaling& s = rope_scaling;
  AIGC_CHECK(s.type == "none" || s.type == "linear" || s.type == "llama3" || s.type == "factors",
             "model config: rope_scaling type must be \"none\", \"linear\", \"llama3\" or \"factors\", got \"" +
                 s.type + "\"");
  if (s.type == "factors") {
    AIGC_CHECK(int64_t(s.freq_factors.size()) == head_size() / 2,
               "model config: rope_scaling freq_factors needs head_size / 2 = " + str(head_size() / 2) +
                   " values, got " + str(s.freq_factors.size()));
    for (float v : s.freq_factors)
      AIGC_CHECK(v > 0.0f && std::isfinite(v), "model config: rope_scaling freq_factors must be positive");
  }
  AIGC_CHECK(s.factor > 0.0f && std::isfinite(s.factor), "model config: rope_scaling factor must be positive");
  if (s.type == "llama3")
    AIGC_CHECK(s.low_freq_factor > 0.0f && s.high_freq_factor > s.low_freq_factor && s.original_max_position > 0,
               "model config: llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor and a positive "
               "original_max_position_embeddings");
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
  if (is_llama()) {
    j["arch"] = arch;
    j["n_kv_head"] = kv_heads();
    j["head_dim"] = head_size();
    j["n_hidden"] = hidden_size();
    j["rope_theta"] = rope_theta;
    j["rope_scaling"] = {{"type", rope_scaling.type},
                         {"factor", rope_scaling.factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling.original_max_position}};
    if (rope_scaling.type == "factors") j["rope_scaling"]["freq_factors"] = rope_scaling.freq_factors;
    if (qkv_bias) j["qkv_bias"] = true;
  }
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
  auto get_in = [&](const nlohmann::json& obj, const char* key, auto& field) {
    if (!obj.contains(key)) return;
    try {
      obj.at(key).get_to(field);
    } catch (const std::exception&) {
      fail(std::string("model config: field \"") + key + "\" has the wrong type: " + obj.at(key).dump());
    }
  };
  auto get = [&](const char* key, auto& field) { get_in(j, key, field); };
  get("arch", c.arch);
  if (c.arch == "llama") c = llama_style();
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
  get("n_kv_head", c.n_kv_head);
  get("head_dim", c.head_dim);
  get("n_hidden", c.n_hidden);
  get("rope_theta", c.rope_theta);
  get("qkv_bias", c.qkv_bias);
  if (j.contains("rope_scaling")) {
    const nlohmann::json& s = j.at("rope_scaling");
    AIGC_CHECK(s.is_object(), "model config: rope_scaling must be an object");
    get_in(s, "type", c.rope_scaling.type);
    get_in(s, "factor", c.rope_scaling.factor);
    get_in(s, "low_freq_factor", c.rope_scaling.low_freq_factor);
    get_in(s, "high_freq_factor", c.rope_scaling.high_freq_factor);
    get_in(s, "original_max_position_embeddings", c.rope_scaling.original_max_position);
    get_in(s, "freq_factors", c.rope_scaling.freq_factors);
  }
  c.validate();
  return c;
}

}  // namespace aigc

// Byte-level BPE vocabularies as GGUF files carry them (tokenizer.ggml.model "gpt2") with a pre-tokenizer other than
// GPT-2's: the file holds tokens, types and merges, and names the regex that splits text before BPE in
// tokenizer.ggml.pre; llama.cpp compiles the regexes in. aigc turns such a vocabulary into the tokenizer.json
// Hugging Face's own files use for those models (a Split on the regex, then ByteLevel), so the Hugging Face
// tokenizer runs it, and writes such a tokenizer back under its name.
//
//   "llama-bpe" (Llama 3): contractions in any case, letters with one leading non-letter, digits in threes, and
//                          a whole word found in the vocabulary is its own token (ignore_merges)
//   "qwen2"     (Qwen2, Qwen2.5): as Llama 3, with digits one at a time
//   "smollm"    (SmolLM, SmolLM2): digits one at a time, then GPT-2's regex
#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "aigc/tokenizer.h"
#include "tokenizer_internal.h"

namespace aigc {

namespace {

using json = nlohmann::json;

const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

json split(const std::string& regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The pre_tokenizer and ignore_merges of a name; nullopt for a name aigc does not run.
std::optional<std::pair<json, bool>> pre_tokenizer_of(const std::string& pre) {
  auto seq = [](json a, json b) { return json{{"type", "Sequence"}, {"pretokenizers", {a, b}}}; };
  if (pre == "llama-bpe") return std::make_pair(seq(split(kLlama3Regex), byte_level(false)), true);
  if (pre == "qwen2") return std::make_pair(seq(split(kQwen2Regex), byte_level(false)), false);
  if (pre == "smollm") return std::make_pair(seq(split("\\p{N}"), byte_level(true)), false);
  return std::nullopt;
}

}  // namespace

const std::vector<std::string>& byte_level_pre_names() {
  static const std::vector<std::string> names = {"llama-bpe", "qwen2", "smollm"};
  return names;
}

std::unique_ptr<Tokenizer> tokenizer_from_byte_level(const ByteLevelVocab& v) {
  const auto pre = pre_tokenizer_of(v.pre);
  if (!pre) {
    std::string names;
    for (const std::string& n : byte_level_pre_names()) names += (names.empty() ? "" : ", ") + n;
    fail("byte-level vocabulary: pre-tokenizer \"" + v.pre + "\" is not supported (gpt-2, " + names + " are)");
  }
  const size_t n = v.tokens.size();
  AIGC_CHECK(n > 0, "byte-level vocabulary: no tokens");
  AIGC_CHECK(v.types.empty() || v.types.size() == n, "byte-level vocabulary: " + std::to_string(v.types.size()) +
                                                         " token types for " + std::to_string(n) + " tokens");
  auto type = [&](size_t i) { return v.types.empty() ? 1 : v.types[i]; };
  // Control and user-defined tokens after the last normal one are added tokens, matched whole in the text (as
  // Hugging Face does; llama.cpp only when asked to parse special tokens). Any earlier stay in the model.
  size_t model_size = n;
  while (model_size > 0 && (type(model_size - 1) == 3 || type(model_size - 1) == 4)) model_size--;
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < n; i++) {
    const std::string& t = v.tokens[i];
    AIGC_CHECK(!t.empty(), "byte-level vocabulary: token " + std::to_string(i) + " is empty");
    AIGC_CHECK(!vocab.contains(t), "byte-level vocabulary: token " + std::to_string(i) + " \"" + t +
                                       "\" repeats token " + std::to_string(vocab.value(t, json(-1)).get<int64_t>()));
    vocab[t] = i;
    if (i >= model_size) added.push_back(tok::hf_added_token(i, t, type(i) == 3));
  }
  json model_vocab = json::object();
  for (size_t i = 0; i < model_size; i++) model_vocab[v.tokens[i]] = i;
  json merges = json::array();
  for (const std::string& m : v.merges) {
    const size_t sp = m.find(' ');
    AIGC_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < m.size() && m.find(' ', sp + 1) == std::string::npos,
               "byte-level vocabulary: merge \"" + m + "\" is not two tokens separated by a space");
    merges.push_back(m);
  }
  const json model = {{"type", "BPE"},          {"vocab", model_vocab}, {"merges", merges},
                      {"byte_fallback", false}, {"fuse_unk", false},    {"ignore_merges", pre->second},
                      {"dropout", nullptr}};
  const json tokenizer = {{"version", "1.0"},          {"model", model},
                          {"normalizer", nullptr},     {"pre_tokenizer", pre->first},
                          {"post_processor", nullptr}, {"decoder", {{"type", "ByteLevel"}}},
                          {"added_tokens", added}};
  auto named = [&](const std::optional<int>& id, const char* what) -> json {
    if (!id) return json();
    AIGC_CHECK(*id >= 0 && size_t(*id) < n, std::string("byte-level vocabulary: the ") + what + " token id " +
                                                std::to_string(*id) + " is not a token");
    return v.tokens[size_t(*id)];
  };
  json config = {{"add_bos_token", v.add_bos && v.bos},
                 {"add_eos_token", v.add_eos && v.eos},
                 {"bos_token", named(v.bos, "bos")},
                 {"eos_token", named(v.eos, "eos")}};
  if (!v.chat_template.empty()) config["chat_template"] = v.chat_template;
  return tokenizer_from_json(json{{"kind", "hf"}, {"tokenizer", tokenizer.dump()}, {"config", config}}.dump());
}

std::optional<ByteLevelVocab> byte_level_vocab_of(const Tokenizer& tok) {
  if (tok.kind() != "hf") return std::nullopt;
  const json j = json::parse(tok.to_json());
  const json t = json::parse(j["tokenizer"].get<std::string>());
  const json& m = t["model"];
  if (m.value("type", "") != "BPE" || m.value("byte_fallback", false) || !t.value("normalizer", json()).is_null() ||
      t.value("decoder", json()) != json{{"type", "ByteLevel"}})
    return std::nullopt;
  ByteLevelVocab v;
  for (const std::string& name : byte_level_pre_names()) {
    const auto pre = pre_tokenizer_of(name);
    if (t.value("pre_tokenizer", json()) == pre->first && m.value("ignore_merges", false) == pre->second) v.pre = name;
  }
  if (v.pre.empty()) return std::nullopt;
  tok::hf_tokens(t, v.tokens, v.types);
  for (const json& e : m["merges"])
    v.merges.push_back(e.is_string() ? e.get<std::string>() : e[0].get<std::string>() + " " + e[1].get<std::string>());
  tok::copy_specials(tok, v);
  return v;
}

}  // namespace aigc

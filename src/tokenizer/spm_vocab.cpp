// SentencePiece vocabularies as GGUF files carry them (tokenizer.ggml.model "llama": Llama 1 and 2, Mistral,
// TinyLlama): tokens with scores and types, no merge list. llama.cpp encodes such text by joining, again and again,
// the adjacent pair of symbols whose joined text is the token with the highest score (the leftmost pair among
// equals), starting from single characters, and spells what is left outside the vocabulary as <0xXX> byte tokens.
// That is byte-fallback BPE whose merges are every split of every token into two tokens, ranked by the joined
// token's score: the tokenizer.json Hugging Face's converters write for these models. So a vocabulary becomes that
// tokenizer.json here, and the Hugging Face tokenizer runs it: one encoder for both kinds of file.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <unordered_map>

#include "aigc/error.h"
#include "aigc/tokenizer.h"
#include "tokenizer_internal.h"

namespace aigc {

namespace {

using json = nlohmann::json;
const std::string kSpace = "\xE2\x96\x81";  // "▁", SentencePiece's space

// Byte offsets where UTF-8 characters start in s (s.size() included); a split inside a character is no split.
std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); i += tok::utf8_len_at(s, i)) at.push_back(i);
  at.push_back(s.size());
  return at;
}

bool is_byte_token(const std::string& t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_spm(const SpmVocab& v) {
  const size_t n = v.tokens.size();
  AIGC_CHECK(n > 0, "SentencePiece vocabulary: no tokens");
  AIGC_CHECK(v.scores.size() == n, "SentencePiece vocabulary: " + std::to_string(v.scores.size()) + " scores for " +
                                       std::to_string(n) + " tokens");
  AIGC_CHECK(v.types.empty() || v.types.size() == n, "SentencePiece vocabulary: " + std::to_string(v.types.size()) +
                                                         " token types for " + std::to_string(n) + " tokens");
  auto type = [&](size_t i) { return v.types.empty() ? 1 : v.types[i]; };
  auto named = [&](const std::optional<int>& id, const char* what) -> std::optional<std::string> {
    if (!id) return std::nullopt;
    AIGC_CHECK(*id >= 0 && size_t(*id) < n, std::string("SentencePiece vocabulary: the ") + what + " id " +
                                                std::to_string(*id) + " is not a token (" + std::to_string(n) +
                                                " tokens)");
    return v.tokens[size_t(*id)];
  };

  json vocab = json::object(), added = json::array();
  std::unordered_map<std::string, int> id_of;
  for (size_t i = 0; i < n; i++) {
    const std::string& t = v.tokens[i];
    AIGC_CHECK(!t.empty(), "SentencePiece vocabulary: token " + std::to_string(i) + " is empty");
    AIGC_CHECK(tok::utf8_valid(t), "SentencePiece vocabulary: token " + std::to_string(i) + " (" +
                                       tok::describe_symbol(t) + ") is not valid UTF-8");
    AIGC_CHECK(id_of.emplace(t, int(i)).second, "SentencePiece vocabulary: token " + std::to_string(i) + " \"" + t +
                                                    "\" repeats token " + std::to_string(id_of[t]));
    vocab[t] = i;
    // Control tokens (<s>, </s>, chat markers) and user-defined ones are matched whole in the text, as Hugging
    // Face's added tokens are; only control ones are special.
    if (type(i) == 3 || type(i) == 4) added.push_back(tok::hf_added_token(i, t, type(i) == 3));
  }

  // Merges: every token of two or more characters (of any type, as llama.cpp looks joined text up among all of
  // them), split every way into two tokens, ranked by the joined token's score: equal scores share a rank, and
  // then the leftmost pair joins first, as in llama.cpp. (Files converted from tokenizer.json alone give every
  // token the same score.) Pieces past kMaxPiece bytes are never joined to: SentencePiece's are 16 characters at
  // most, and each split costs the token's length.
  constexpr size_t kMaxPiece = 256;
  std::vector<size_t> order;
  for (size_t i = 0; i < n; i++)
    if (v.tokens[i].size() <= kMaxPiece && char_starts(v.tokens[i]).size() > 2) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v.scores[a] > v.scores[b]; });
  json merges = json::array(), ranks = json::array();
  uint32_t rank = 0;
  for (size_t o = 0; o < order.size(); o++) {
    const size_t i = order[o];
    if (o > 0 && v.scores[i] != v.scores[order[o - 1]]) rank++;
    const std::string& t = v.tokens[i];
    const std::vector<size_t> at = char_starts(t);
    for (size_t k = 1; k + 1 < at.size(); k++) {
      const std::string left = t.substr(0, at[k]), right = t.substr(at[k]);
      if (id_of.count(left) && id_of.count(right)) merges.push_back({left, right}), ranks.push_back(rank);
    }
  }

  json model = {{"type", "BPE"},         {"vocab", vocab},   {"merges", merges},       {"merge_ranks", ranks},
                {"byte_fallback", true}, {"fuse_unk", true}, {"ignore_merges", false}, {"dropout", nullptr}};
  if (auto unk = named(v.unk, "unknown token")) model["unk_token"] = *unk;
  json normalizers = json::array();
  if (v.add_space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
  json decoders = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}};
  if (v.add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  const json tokenizer = {{"version", "1.0"},
                          {"model", model},
                          {"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
                          {"pre_tokenizer", nullptr},
                          {"post_processor", nullptr},
                          {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
                          {"added_tokens", added}};
  json config = {{"add_bos_token", v.add_bos}, {"add_eos_token", v.add_eos}};
  if (!v.chat_template.empty()) config["chat_template"] = v.chat_template;
  config["bos_token"] = named(v.bos, "bos") ? json(*named(v.bos, "bos")) : json();
  config["eos_token"] = named(v.eos, "eos") ? json(*named(v.eos, "eos")) : json();
  if (!v.bos) config["add_bos_token"] = false;
  if (!v.eos) config["add_eos_token"] = false;
  return tokenizer_from_json(json{{"kind", "hf"}, {"tokenizer", tokenizer.dump()}, {"config", config}}.dump());
}

void tok::hf_tokens(const json& tokenizer, std::vector<std::string>& tokens, std::vector<int32_t>& types) {
  const json& vocab = tokenizer["model"]["vocab"];
  const json added = tokenizer.value("added_tokens", json::array());
  size_t n = vocab.size();
  for (const json& a : added) n = std::max(n, a["id"].get<size_t>() + 1);
  tokens.assign(n, std::string());
  types.assign(n, 1);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) tokens[it->get<size_t>()] = it.key();
  for (const json& a : added) {
    const size_t id = a["id"].get<size_t>();
    tokens[id] = a["content"].get<std::string>();
    types[id] = a.value("special", false) ? 3 : 4;
  }
}

json tok::hf_added_token(size_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content}, {"special", special},  {"normalized", false},
          {"lstrip", false}, {"rstrip", false},    {"single_word", false}};
}

std::optional<SpmVocab> spm_vocab_of(const Tokenizer& tok) {
  if (tok.kind() != "hf") return std::nullopt;
  const json j = json::parse(tok.to_json());
  const json t = json::parse(j["tokenizer"].get<std::string>());
  // Exactly the SentencePiece form: byte fallback, merges applied, no pre-tokenizer, and a normalizer that turns
  // spaces into "▁" after an optional "▁" in front. Anything more would encode differently from the file.
  const json& m = t["model"];
  if (!m.value("byte_fallback", false) || m.value("ignore_merges", false) ||
      !t.value("pre_tokenizer", json()).is_null())
    return std::nullopt;
  const json norm = t.value("normalizer", json());
  if (!norm.is_object() || norm.value("type", "") != "Sequence") return std::nullopt;
  const json& steps = norm["normalizers"];
  const json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
  const json prepend_step = {{"type", "Prepend"}, {"prepend", kSpace}};
  const bool prepend = steps.size() == 2 && steps[0] == prepend_step && steps[1] == replace;
  if (!prepend && !(steps.size() == 1 && steps[0] == replace)) return std::nullopt;
  for (const json& a : t.value("added_tokens", json::array()))  // matched after normalizing: not in raw text
    if (a.value("normalized", false) && !a.value("special", false)) return std::nullopt;

  SpmVocab v;
  v.add_space_prefix = prepend;
  tok::hf_tokens(t, v.tokens, v.types);
  const size_t n = v.tokens.size();
  for (size_t i = 0; i < n; i++)
    if (v.types[i] == 1 && is_byte_token(v.tokens[i])) v.types[i] = 6;
  // Scores that rank the merges as the list (or merge_ranks) does: a token's score is minus the rank of the first
  // merge that makes it. Single characters never result from a merge, so their score is never compared.
  std::unordered_map<std::string, int> id_of;
  for (size_t i = 0; i < n; i++) id_of.emplace(v.tokens[i], int(i));
  const json& merges = m["merges"];
  const json ranks = m.value("merge_ranks", json::array());
  v.scores.assign(n, 0.0f);
  std::vector<bool> made(n, false);
  double worst = 0;
  for (size_t r = 0; r < merges.size(); r++) {
    const json& e = merges[r];
    std::string joined;
    if (e.is_string()) {
      std::string s = e.get<std::string>();
      joined = s.erase(s.find(' '), 1);
    } else {
      joined = e[0].get<std::string>() + e[1].get<std::string>();
    }
    const int id = id_of.at(joined);
    const double rank = ranks.size() == merges.size() ? ranks[r].get<double>() : double(r);
    if (!made[size_t(id)]) made[size_t(id)] = true, v.scores[size_t(id)] = -float(rank);
    worst = std::max(worst, rank);
  }
  // Longer tokens no merge makes: below every merge (llama.cpp could still join them; the list never does).
  for (size_t i = 0; i < n; i++)
    if (!made[i] && v.types[i] == 1 && char_starts(v.tokens[i]).size() > 2) v.scores[i] = -float(worst + 1 + double(i));
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    v.unk = id_of.at(m["unk_token"].get<std::string>());
    v.types[size_t(*v.unk)] = 2;
  }
  tok::copy_specials(tok, v);
  return v;
}

}  // namespace aigc

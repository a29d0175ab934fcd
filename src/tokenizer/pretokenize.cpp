// GPT-2 pre-tokenization with PCRE2, matching the reference JavaScript encoder (gpt-3-encoder), whose pattern is
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+   (flags: u)
// JavaScript's \s is not PCRE2's: it is TAB, VT, FF, CR, LF, U+2028, U+2029, U+FEFF and the Zs category (PCRE2 adds
// U+0085 and omits U+FEFF), so the class is spelled out. \p{L} and \p{N} are PCRE2's (Unicode 14 in PCRE2 10.42)
// plus the letters and digits assigned since, up to Unicode 17 (Node.js 20's ICU 78): listed below, they were
// found by classifying every code point with both engines. The two agree on everything else.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <functional>
#include <memory>

#include "aigc/error.h"
#include "aigc/tokenizer.h"
#include "tokenizer_internal.h"

namespace aigc {
namespace {

const char* const kWs = R"(\t\n\x{0B}\f\r\x{2028}\x{2029}\x{FEFF}\p{Zs})";

}  // namespace

namespace tok {

// Letters (Lu Ll Lt Lm Lo) and numbers (Nd Nl No) of Unicode 15.0-17.0 that PCRE2 10.42 does not know yet
// (declared in tokenizer_internal.h: the tokenizer.json Split regexes use them too).
const char* const kNewLetters =
    R"(\x{88F}\x{C5C}\x{CDC}\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CF}\x{A7D2}\x{A7D4}\x{A7DA}-\x{A7DC}\x{A7F1})"
    R"(\x{105C0}-\x{105F3}\x{10940}-\x{10959}\x{10D4A}-\x{10D65}\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC7})"
    R"(\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E}\x{11390}-\x{113B5}\x{113B7}\x{113D1})"
    R"(\x{113D3}\x{11BC0}-\x{11BE0}\x{11DB0}-\x{11DDB}\x{11F02}\x{11F04}-\x{11F10}\x{11F12}-\x{11F33})"
    R"(\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D}\x{16D40}-\x{16D6C})"
    R"(\x{16EA0}-\x{16EB8}\x{16EBB}-\x{16ED3}\x{16FF2}-\x{16FF3}\x{187F8}-\x{187FF}\x{18CFF})"
    R"(\x{18D09}-\x{18D1E}\x{18D80}-\x{18DF2}\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D})"
    R"(\x{1E4D0}-\x{1E4EB}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{1E6C0}-\x{1E6DE}\x{1E6E0}-\x{1E6E2})"
    R"(\x{1E6E4}-\x{1E6E5}\x{1E6E7}-\x{1E6ED}\x{1E6F0}-\x{1E6F4}\x{1E6FE}-\x{1E6FF}\x{2B739}-\x{2B73F})"
    R"(\x{2CEA2}-\x{2CEAD}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{33479})";
const char* const kNewNumbers =
    R"(\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11DE0}-\x{11DE9}\x{11F50}-\x{11F59})"
    R"(\x{16130}-\x{16139}\x{16D70}-\x{16D79}\x{16FF4}-\x{16FF6}\x{1CCF0}-\x{1CCF9}\x{1D2C0}-\x{1D2D3})"
    R"(\x{1E4F0}-\x{1E4F9}\x{1E5F1}-\x{1E5FA})";

}  // namespace tok

namespace {

using tok::kNewLetters;
using tok::kNewNumbers;

struct Gpt2Regex {
  pcre2_code* code = nullptr;
  Gpt2Regex() {
    const std::string ws = kWs, letter = std::string(R"(\p{L})") + kNewLetters,
                      number = std::string(R"(\p{N})") + kNewNumbers;
    const std::string pat = "'s|'t|'re|'ve|'m|'ll|'d| ?[" + letter + "]+| ?[" + number + "]+| ?[^" + ws + letter +
                            number + "]+|[" + ws + "]+(?![^" + ws + "])|[" + ws + "]+";
    int err = 0;
    PCRE2_SIZE off = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.c_str()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                         nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail("GPT-2 pre-tokenizer regex failed to compile at offset " + std::to_string(off) + ": " +
           reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  }
  ~Gpt2Regex() { pcre2_code_free(code); }
};

const Gpt2Regex& gpt2_regex() {
  static const Gpt2Regex re;  // compiled once; the compiled code is read-only and shared between threads
  return re;
}

// Calls emit(begin, end) for consecutive byte ranges that cover valid UTF-8 s.
template <class Emit>
void split_valid(std::string_view s, Emit&& emit) {
  const Gpt2Regex& re = gpt2_regex();
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(re.code, nullptr), &pcre2_match_data_free);
  AIGC_CHECK(md, "GPT-2 pre-tokenizer: out of memory");
  auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos < s.size()) {
    int rc = pcre2_match(re.code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {  // every character matches some branch; kept so no byte is ever lost
      emit(pos, s.size());
      break;
    }
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("GPT-2 pre-tokenizer: regex match failed at byte " + std::to_string(pos) + ": " +
           reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    AIGC_CHECK(ov[1] > ov[0], "GPT-2 pre-tokenizer: empty match");
    if (ov[0] > pos) emit(pos, size_t(ov[0]));
    emit(size_t(ov[0]), size_t(ov[1]));
    pos = ov[1];
  }
}

}  // namespace

namespace tok {

void gpt2_split_each(std::string_view text, const std::function<void(std::string_view)>& fn) {
  if (utf8_valid(text)) {
    split_valid(text, [&](size_t b, size_t e) { fn(text.substr(b, e - b)); });
    return;
  }
  // The regex needs valid UTF-8: split a copy where each invalid byte is U+FFFD (what the reference sees after
  // decoding), then map the boundaries back; each U+FFFD before a boundary moved it 2 bytes to the right.
  std::string clean;
  std::vector<size_t> bad;  // offsets in clean of the inserted U+FFFDs, ascending
  clean.reserve(text.size() + 64);
  for (size_t i = 0; i < text.size();) {
    size_t len = utf8_len_at(text, i);
    if (len) {
      clean.append(text, i, len);
      i += len;
    } else {
      bad.push_back(clean.size());
      clean += "\xEF\xBF\xBD";
      i += 1;
    }
  }
  size_t k = 0, begin = 0;  // boundaries arrive in order, so one forward walk over `bad` maps them all
  split_valid(clean, [&](size_t, size_t e) {
    while (k < bad.size() && bad[k] < e) k++;
    size_t end = e - 2 * k;
    fn(text.substr(begin, end - begin));
    begin = end;
  });
}

}  // namespace tok

std::vector<std::string_view> gpt2_split(std::string_view text) {
  std::vector<std::string_view> out;
  tok::gpt2_split_each(text, [&](std::string_view c) { out.push_back(c); });
  return out;
}

}  // namespace aigc

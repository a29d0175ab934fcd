// UTF-8 helpers and the streaming decoder. Well-formedness follows Unicode's Table 3-7: no overlong forms, no
// surrogates, nothing above U+10FFFF.
#include <cstdio>

#include "aigc/tokenizer.h"
#include "tokenizer_internal.h"

namespace aigc::tok {

size_t utf8_expected_len(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Allowed range of the second byte; the lead byte decides it (this is where overlongs/surrogates are excluded).
static void second_range(unsigned char lead, unsigned char& lo, unsigned char& hi) {
  lo = 0x80, hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
}

size_t utf8_prefix_len_at(std::string_view s, size_t i) {
  unsigned char lead = static_cast<unsigned char>(s[i]);
  size_t need = utf8_expected_len(lead);
  if (need <= 1) return 1;
  size_t k = 1;
  for (; k < need && i + k < s.size(); k++) {
    unsigned char c = static_cast<unsigned char>(s[i + k]), lo = 0x80, hi = 0xBF;
    if (k == 1) second_range(lead, lo, hi);
    if (c < lo || c > hi) break;
  }
  return k;
}

size_t utf8_len_at(std::string_view s, size_t i) {
  unsigned char lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80) return 1;
  size_t need = utf8_expected_len(lead);
  if (need == 0) return 0;
  return utf8_prefix_len_at(s, i) == need ? need : 0;
}

bool utf8_valid(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w = 0;
      for (int k = 0; k < 8; k++) w |= uint64_t(static_cast<unsigned char>(s[i + size_t(k)])) << (8 * k);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t len = utf8_len_at(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

char32_t utf8_decode_valid(std::string_view s, size_t i, size_t len) {
  auto b = [&](size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string describe_symbol(std::string_view sym) {
  char buf[64];
  if (!sym.empty() && utf8_len_at(sym, 0) == sym.size()) {
    char32_t cp = utf8_decode_valid(sym, 0, sym.size());
    std::snprintf(buf, sizeof buf, " (U+%04X)", unsigned(cp));
    // Control characters would garble the message; show only the code point for them.
    bool printable = cp >= 0x20 && cp != 0x7F && !(cp >= 0x80 && cp < 0xA0);
    std::string out = printable ? "'" : "character";
    if (printable) {
      out += sym;
      out += "'";
    }
    return out + buf;
  }
  std::string out;
  for (char c : sym) {
    std::snprintf(buf, sizeof buf, "%sbyte 0x%02X", out.empty() ? "" : ", ", unsigned(static_cast<unsigned char>(c)));
    out += buf;
  }
  return out + " (invalid UTF-8)";
}

}  // namespace aigc::tok

namespace aigc {

std::string Utf8StreamDecoder::push(const std::string& bytes) {
  std::string buf = held_ + bytes, out;
  held_.clear();
  size_t i = 0;
  while (i < buf.size()) {
    size_t len = tok::utf8_len_at(buf, i);
    if (len) {
      out.append(buf, i, len);
      i += len;
      continue;
    }
    size_t part = tok::utf8_prefix_len_at(buf, i);
    if (i + part == buf.size() && part < tok::utf8_expected_len(static_cast<unsigned char>(buf[i]))) {
      held_ = buf.substr(i);  // a well-formed start cut off by the end: wait for the rest
      break;
    }
    out += "\xEF\xBF\xBD";
    i += part;
  }
  return out;
}

std::string Utf8StreamDecoder::flush() {
  std::string out = held_.empty() ? "" : "\xEF\xBF\xBD";
  held_.clear();
  return out;
}

}  // namespace aigc

// The Hugging Face tokenizer at work: split on added tokens, normalize, pre-tokenize, BPE; and decoding. The steps
// follow the tokenizers library (Rust), whose JavaScript port is the test oracle (tests/test_hf_tokenizer.cpp).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <queue>

#include "aigc/error.h"
#include "hf_internal.h"
#include "tokenizer_internal.h"

namespace aigc::tok {

// ---- Regexes ----

struct HfRegex {
  pcre2_code* code = nullptr;
  ~HfRegex() { pcre2_code_free(code); }
};

namespace {

// \p{L} and \p{N} (and \P{..} outside classes) widened by the code points PCRE2 10.42 does not know as letters or
// numbers yet, so that a tokenizer.json regex sees text as Node.js's and a current Unicode's do.
std::string widen_unicode_classes(const std::string& pat) {
  std::string out;
  bool in_class = false;
  const size_t n = pat.size();
  for (size_t i = 0; i < n;) {
    const char c = pat[i];
    if (c == '\\' && i + 1 < n) {
      const char e = pat[i + 1];
      if ((e == 'p' || e == 'P') && (pat.compare(i + 2, 3, "{L}") == 0 || pat.compare(i + 2, 3, "{N}") == 0)) {
        const char cls = pat[i + 3];
        const std::string prop = std::string("\\p{") + cls + "}", extra = cls == 'L' ? kNewLetters : kNewNumbers;
        if (e == 'p')
          out += in_class ? prop + extra : "[" + prop + extra + "]";
        else
          out += in_class ? pat.substr(i, 5) : "[^" + prop + extra + "]";
        i += 5;
        continue;
      }
      out.append(pat, i, 2);
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      i++;
      if (i < n && pat[i] == '^') out += pat[i++];
      if (i < n && pat[i] == ']') out += pat[i++];  // a ']' first in a class is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < n && pat[i + 1] == ':') {  // [:alpha:] inside a class
      size_t end = pat.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(pat, i, end + 2 - i);
        i = end + 2;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
    i++;
  }
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(code, msg, sizeof msg);
  return reinterpret_cast<const char*>(msg);
}

// Calls fn(begin, end) for each non-empty match in valid UTF-8 s, left to right.
template <class Fn>
void each_match(const HfRegex& re, std::string_view s, Fn&& fn) {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(re.code, nullptr), &pcre2_match_data_free);
  AIGC_CHECK(md, "Hugging Face tokenizer: out of memory");
  auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  for (size_t pos = 0; pos < s.size();) {
    int rc = pcre2_match(re.code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("Hugging Face tokenizer: regex match failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    if (ov[1] > ov[0]) {
      fn(size_t(ov[0]), size_t(ov[1]));
      pos = ov[1];
    } else {  // an empty match: nothing to split; go on after the next character
      pos = ov[0] + std::max<size_t>(1, utf8_len_at(s, ov[0]));
    }
  }
}

// White_Space code points (what lstrip / rstrip remove).
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Letters, numbers and marks: what a single_word added token may not touch.
bool is_word_char(std::string_view s, size_t i, size_t len) {
  static const std::shared_ptr<const HfRegex> re = hf_compile_regex(R"([\p{L}\p{N}\p{M}_])", false, "word class");
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(re->code, nullptr), &pcre2_match_data_free);
  return pcre2_match(re->code, reinterpret_cast<PCRE2_SPTR>(s.data() + i), len, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK,
                     md.get(), nullptr) >= 0;
}

// Start of the character that ends at s[end] (valid UTF-8, end > 0).
size_t char_start_before(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) i--;
  return i;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  for (size_t pos = 0;;) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) {
      out.append(s.substr(pos));
      return out;
    }
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
}

// s with each maximal ill-formed subpart replaced by U+FFFD (Python's errors="replace").
std::string replace_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_len_at(s, i);
    if (len) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += utf8_prefix_len_at(s, i);
    }
  }
  return out;
}

// Cuts s at each cut point (ascending, may repeat), keeping the non-empty parts.
void cut(const std::string& s, bool at_start, const std::vector<size_t>& cuts, std::vector<std::string>& keep_out,
         std::vector<bool>& start_out) {
  size_t prev = 0;
  auto take = [&](size_t b, size_t e) {
    if (e > b) {
      keep_out.push_back(s.substr(b, e - b));
      start_out.push_back(at_start && b == 0);
    }
  };
  for (size_t c : cuts) {
    take(prev, c);
    prev = std::max(prev, c);
  }
  take(prev, s.size());
}

// Unicode normalization (ICU). ASCII text is the same in every form.
std::string unicode_normalize(const std::string& s, HfNormalizerStep::Kind form) {
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return s;
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = form == HfNormalizerStep::kNfc    ? unorm2_getNFCInstance(&err)
                          : form == HfNormalizerStep::kNfd  ? unorm2_getNFDInstance(&err)
                          : form == HfNormalizerStep::kNfkc ? unorm2_getNFKCInstance(&err)
                                                            : unorm2_getNFKDInstance(&err);
  AIGC_CHECK(U_SUCCESS(err),
             std::string("Hugging Face tokenizer: ICU's normalizer is unavailable: ") + u_errorName(err));
  AIGC_CHECK(s.size() < (1u << 30), "Hugging Face tokenizer: text of " + std::to_string(s.size()) +
                                        " bytes is too long to normalize (1 GiB at most)");
  std::u16string in(s.size(), u'\0'), out;
  int32_t n16 = 0;
  u_strFromUTF8(in.data(), int32_t(in.size()), &n16, s.data(), int32_t(s.size()), &err);  // valid UTF-8 here
  AIGC_CHECK(U_SUCCESS(err), std::string("Hugging Face tokenizer: UTF-8 to UTF-16 failed: ") + u_errorName(err));
  out.resize(size_t(n16) * 4 + 16);  // NFKD of one UTF-16 unit is at most 18 units; retried below if short
  int32_t len = unorm2_normalize(n, in.data(), n16, out.data(), int32_t(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    out.resize(size_t(len));
    len = unorm2_normalize(n, in.data(), n16, out.data(), int32_t(out.size()), &err);
  }
  AIGC_CHECK(U_SUCCESS(err), std::string("Hugging Face tokenizer: Unicode normalization failed: ") + u_errorName(err));
  std::string utf8(size_t(len) * 3, '\0');
  int32_t n8 = 0;
  u_strToUTF8(utf8.data(), int32_t(utf8.size()), &n8, out.data(), len, &err);
  AIGC_CHECK(U_SUCCESS(err), std::string("Hugging Face tokenizer: UTF-16 to UTF-8 failed: ") + u_errorName(err));
  utf8.resize(size_t(n8));
  return utf8;
}

}  // namespace

std::shared_ptr<const HfRegex> hf_compile_regex(const std::string& pattern, bool literal, const std::string& where) {
  const std::string pat = literal ? pattern : widen_unicode_classes(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  auto re = std::make_shared<HfRegex>();
  re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(),
                           literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  AIGC_CHECK(re->code, where + ": the regex does not compile (PCRE2: " + pcre2_message(err) + ", at offset " +
                           std::to_string(off) + ")");
  pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // the interpreter runs it where JIT is unavailable
  return re;
}

std::string hf_normalize(const std::vector<HfNormalizerStep>& steps, std::string_view s) {
  std::string t(s);
  for (const HfNormalizerStep& st : steps) {
    if (st.kind == HfNormalizerStep::kPrepend) {
      if (!t.empty()) t = st.to + t;
    } else if (st.kind == HfNormalizerStep::kReplace) {
      t = replace_all(t, st.from, st.to);
    } else {
      t = unicode_normalize(t, st.kind);
    }
  }
  return t;
}

// ---- HfTokenizer ----

HfTokenizer::HfTokenizer(HfSpec spec, std::string json_text, std::string config_json)
    : spec_(std::move(spec)), json_text_(std::move(json_text)), config_json_(std::move(config_json)) {
  model_id_.reserve(size_t(spec_.model_size) * 2);
  for (int id = 0; id < spec_.model_size; id++) model_id_.emplace(spec_.text[size_t(id)], id);
  merges_.reserve(spec_.merges.size() * 2);
  for (size_t r = 0; r < spec_.merges.size(); r++) {
    auto [a, b] = spec_.merges[r];
    merges_[(uint64_t(uint32_t(a)) << 32) | uint32_t(b)] =
        Merge{spec_.merge_ranks.empty() ? uint32_t(r) : spec_.merge_ranks[r],
              model_id_.at(spec_.text[size_t(a)] + spec_.text[size_t(b)])};
  }
  for (int b = 0; b < 256; b++) {
    std::string alpha;
    append_utf8(alpha, byte_to_unicode()[size_t(b)]);
    auto it = model_id_.find(alpha);
    byte_sym_[size_t(b)] = it == model_id_.end() ? -1 : it->second;
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", unsigned(b));
    it = model_id_.find(std::string_view(hex));
    fallback_id_[size_t(b)] = it == model_id_.end() ? -1 : it->second;
  }
  bytes_.reserve(spec_.text.size());
  for (const std::string& t : spec_.text) {
    std::string s = t;
    for (const HfDecoderStep& st : spec_.decoder) {
      switch (st.kind) {
        case HfDecoderStep::kByteLevel:
          if (auto raw = gpt2_text_to_bytes(s)) s = std::move(*raw);  // else the token's own text, as HF does
          break;
        case HfDecoderStep::kByteFallback:
          if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' && std::isxdigit((unsigned char)s[3]) &&
              std::isxdigit((unsigned char)s[4]))
            s = std::string(1, char(std::stoi(s.substr(3, 2), nullptr, 16)));
          break;
        case HfDecoderStep::kReplace:
          s = replace_all(s, st.from, st.to);
          break;
        case HfDecoderStep::kStrip:
          for (int k = 0; k < st.start && s.compare(0, st.content.size(), st.content) == 0; k++)
            s.erase(0, st.content.size());
          for (int k = 0; k < st.stop && s.size() >= st.content.size() &&
                          s.compare(s.size() - st.content.size(), st.content.size(), st.content) == 0;
               k++)
            s.erase(s.size() - st.content.size());
          break;
      }
    }
    bytes_.push_back(std::move(s));
  }
  for (const HfAddedToken& t : spec_.added) {
    AddedIndex& index = t.normalized ? normalized_added_ : raw_added_;
    index.by_first[static_cast<unsigned char>(t.content[0])].push_back(&t);
    index.empty = false;
  }
  for (AddedIndex* index : {&raw_added_, &normalized_added_})
    for (auto& list : index->by_first)
      std::stable_sort(list.begin(), list.end(), [](const HfAddedToken* a, const HfAddedToken* b) {
        return a->content.size() > b->content.size();
      });
}

HfTokenizer::~HfTokenizer() = default;

// Leftmost-longest matches of the index's tokens; emit(text, offset, token or null) in order.
void HfTokenizer::split_added(const AddedIndex& index, std::string_view text,
                              const std::function<void(std::string_view, size_t, const HfAddedToken*)>& emit) const {
  size_t pos = 0;
  if (!index.empty) {
    for (size_t i = 0; i < text.size();) {
      const HfAddedToken* hit = nullptr;
      for (const HfAddedToken* t : index.by_first[static_cast<unsigned char>(text[i])]) {
        const size_t e = i + t->content.size();
        if (text.compare(i, t->content.size(), t->content) != 0) continue;
        if (t->single_word) {
          if (i > 0) {
            size_t b = char_start_before(text, i);
            if (is_word_char(text, b, i - b)) continue;
          }
          if (e < text.size() && is_word_char(text, e, utf8_len_at(text, e))) continue;
        }
        hit = t;
        break;
      }
      if (!hit) {
        i++;
        continue;
      }
      size_t b = i, e = i + hit->content.size();
      while (hit->lstrip && b > pos) {
        size_t c = char_start_before(text, b);
        if (!is_space(utf8_decode_valid(text, c, b - c))) break;
        b = c;
      }
      while (hit->rstrip && e < text.size()) {
        size_t len = utf8_len_at(text, e);
        if (!is_space(utf8_decode_valid(text, e, len))) break;
        e += len;
      }
      if (b > pos) emit(text.substr(pos, b - pos), pos, nullptr);
      emit(text.substr(b, e - b), b, hit);
      pos = i = e;
    }
  }
  if (pos < text.size()) emit(text.substr(pos), pos, nullptr);
}

std::string HfTokenizer::normalize(std::string_view s) const { return hf_normalize(spec_.normalizer, s); }

std::vector<HfTokenizer::Piece> HfTokenizer::pre_tokenize(std::string_view s, bool at_start) const {
  std::vector<Piece> pieces{{std::string(s), at_start}}, next;
  std::vector<std::string> parts;
  std::vector<bool> starts;
  for (const HfPreTokenizerStep& st : spec_.pre_tokenizer) {
    next.clear();
    for (Piece& p : pieces) {
      parts.clear();
      starts.clear();
      std::vector<size_t> cuts;
      switch (st.kind) {
        case HfPreTokenizerStep::kByteLevel: {
          if (st.add_prefix_space && p.text[0] != ' ') p.text.insert(0, 1, ' ');
          if (!st.use_regex) {
            next.push_back(std::move(p));
            continue;
          }
          bool first = true;
          gpt2_split_each(p.text, [&](std::string_view c) {
            next.push_back({std::string(c), p.at_start && first});
            first = false;
          });
          continue;
        }
        case HfPreTokenizerStep::kSplit: {
          const auto behavior = st.behavior;
          if (behavior == HfPreTokenizerStep::kRemoved) {
            size_t prev = 0;
            each_match(*st.regex, p.text, [&](size_t b, size_t e) {
              if (b > prev) next.push_back({p.text.substr(prev, b - prev), p.at_start && prev == 0});
              prev = e;
            });
            if (prev < p.text.size()) next.push_back({p.text.substr(prev), p.at_start && prev == 0});
            continue;
          }
          each_match(*st.regex, p.text, [&](size_t b, size_t e) {
            if (behavior != HfPreTokenizerStep::kMergedWithPrevious) cuts.push_back(b);
            if (behavior != HfPreTokenizerStep::kMergedWithNext) cuts.push_back(e);
          });
          break;
        }
        case HfPreTokenizerStep::kMetaspace: {
          p.text = replace_all(p.text, " ", st.replacement);
          const bool prepend =
              st.prepend == HfPreTokenizerStep::kAlways || (st.prepend == HfPreTokenizerStep::kFirst && p.at_start);
          if (prepend && p.text.compare(0, st.replacement.size(), st.replacement) != 0)
            p.text.insert(0, st.replacement);
          if (!st.split) {
            next.push_back(std::move(p));
            continue;
          }
          for (size_t hit = p.text.find(st.replacement); hit != std::string::npos;
               hit = p.text.find(st.replacement, hit + st.replacement.size()))
            cuts.push_back(hit);
          break;
        }
      }
      cut(p.text, p.at_start, cuts, parts, starts);
      for (size_t k = 0; k < parts.size(); k++) next.push_back({std::move(parts[k]), starts[k]});
    }
    pieces.swap(next);
  }
  return pieces;
}

// Lowest rank first (leftmost among equals), one merge at a time, as the tokenizers library does; with one rank
// per pair this is GPT-2's order too.
void HfTokenizer::apply_merges(std::vector<int>& sym) const {
  const int n = int(sym.size());
  if (n < 2 || merges_.empty()) return;
  std::vector<int> next(size_t(n), -1), prev(size_t(n), -1);
  for (int i = 0; i < n; i++) {
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
    prev[size_t(i)] = i - 1;
  }
  struct Cand {
    uint32_t rank;
    int pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto key = [](int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); };
  auto push = [&](int p) {
    if (p < 0 || next[size_t(p)] < 0) return;
    const int q = next[size_t(p)];
    auto it = merges_.find(key(sym[size_t(p)], sym[size_t(q)]));
    if (it != merges_.end()) heap.push({it->second.rank, p, sym[size_t(p)], sym[size_t(q)]});
  };
  for (int i = 0; i + 1 < n; i++) push(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int p = c.pos, q = next[size_t(p)];
    if (sym[size_t(p)] != c.left || q < 0 || sym[size_t(q)] != c.right) continue;  // stale
    sym[size_t(p)] = merges_.at(key(c.left, c.right)).result;
    sym[size_t(q)] = -1;
    next[size_t(p)] = next[size_t(q)];
    if (next[size_t(q)] >= 0) prev[size_t(next[size_t(q)])] = p;
    push(prev[size_t(p)]);
    push(p);
  }
  sym.erase(std::remove(sym.begin(), sym.end(), -1), sym.end());
}

void HfTokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  if (piece.empty()) return;
  if (spec_.ignore_merges) {
    auto it = spec_.byte_level ? model_id_.find(bytes_to_gpt2_text(piece)) : model_id_.find(piece);
    if (it != model_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  constexpr size_t kMaxCachedLen = 64, kMaxCacheEntries = 1 << 18;
  const bool cacheable = piece.size() <= kMaxCachedLen;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> sym;
  sym.reserve(piece.size());
  bool prev_unk = false;
  auto unknown = [&] {  // a symbol the vocabulary lacks: unk_token (fused when asked), or dropped when there is none
    if (!spec_.unk || (spec_.fuse_unk && prev_unk)) return;
    sym.push_back(*spec_.unk);
    prev_unk = true;
  };
  if (spec_.byte_level) {
    for (char ch : piece) {
      const int id = byte_sym_[static_cast<unsigned char>(ch)];
      if (id < 0) {
        unknown();
        continue;
      }
      sym.push_back(id);
      prev_unk = false;
    }
  } else {
    for (size_t i = 0; i < piece.size();) {
      const size_t len = utf8_len_at(piece, i);  // the text is valid UTF-8 here
      const std::string_view ch = piece.substr(i, len);
      i += len;
      if (auto it = model_id_.find(ch); it != model_id_.end()) {
        sym.push_back(it->second);
        prev_unk = false;
        continue;
      }
      bool all = spec_.byte_fallback;
      for (char b : ch) all = all && fallback_id_[static_cast<unsigned char>(b)] >= 0;
      if (!all) {
        unknown();
        continue;
      }
      for (char b : ch) sym.push_back(fallback_id_[static_cast<unsigned char>(b)]);
      prev_unk = false;
    }
  }
  apply_merges(sym);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(piece), std::move(sym));
  }
}

std::vector<int> HfTokenizer::encode(std::string_view input) const {
  std::string owned;
  std::string_view text = input;
  if (!utf8_valid(input)) {
    owned = replace_invalid_utf8(input);
    text = owned;
  }
  std::vector<int> out;
  out.reserve(text.size() / 3 + 1);
  split_added(raw_added_, text, [&](std::string_view section, size_t offset, const HfAddedToken* added) {
    if (added) {
      out.push_back(added->id);
      return;
    }
    const std::string norm = normalize(section);
    split_added(normalized_added_, norm, [&](std::string_view sub, size_t sub_offset, const HfAddedToken* t) {
      if (t) {
        out.push_back(t->id);
        return;
      }
      for (const Piece& p : pre_tokenize(sub, offset == 0 && sub_offset == 0)) encode_piece(p.text, out);
    });
  });
  return out;
}

std::string HfTokenizer::decode_token(int id) const {
  AIGC_CHECK(id >= 0 && size_t(id) < bytes_.size(), "Hugging Face tokenizer: token id " + std::to_string(id) +
                                                        " is out of range (vocabulary of " +
                                                        std::to_string(bytes_.size()) + ")");
  return bytes_[size_t(id)];
}

std::string HfTokenizer::decode_text(const std::vector<int>& ids) const {
  std::string s = decode(ids);
  const std::string& c = spec_.strip_content;
  if (c.empty()) return s;
  size_t b = 0, e = s.size();
  for (int k = 0; k < spec_.strip_start && e - b >= c.size() && s.compare(b, c.size(), c) == 0; k++) b += c.size();
  for (int k = 0; k < spec_.strip_stop && e - b >= c.size() && s.compare(e - c.size(), c.size(), c) == 0; k++)
    e -= c.size();
  return s.substr(b, e - b);
}

std::string HfTokenizer::to_json() const {
  nlohmann::json j = {{"kind", "hf"}, {"tokenizer", json_text_}, {"config", nlohmann::json::parse(config_json_)}};
  return j.dump();
}

}  // namespace aigc::tok

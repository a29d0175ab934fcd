// Byte-level BPE training. The corpus is pre-tokenized like GPT-2 and reduced to unique chunks with counts; pair
// counts are then kept up to date incrementally: a merge only revisits the chunks that contain its pair.
#include <queue>

#include "aigc/error.h"
#include "tokenizer_internal.h"

namespace aigc {
namespace {

struct Word {
  std::vector<int> sym;
  int64_t count;
  int stamp = -1;  // last merge that visited this word (dedupes the stale, repeated entries of `where`)
};

uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Candidate {
  int64_t count;
  uint64_t pair;
  // Max-heap on count; among equal counts the smallest (left id, right id) comes first.
  bool operator<(const Candidate& o) const { return count < o.count || (count == o.count && pair > o.pair); }
};

}  // namespace

std::unique_ptr<Tokenizer> train_bpe_tokenizer(std::string_view corpus, int vocab_size,
                                               std::function<void(int done, int total)> progress) {
  AIGC_CHECK(vocab_size >= 256,
             "BPE training: vocab_size must be at least 256 (the byte tokens), got " + std::to_string(vocab_size));
  std::vector<std::string> tokens;  // raw bytes per id
  std::unordered_map<std::string, int> id_of;
  for (int b = 0; b < 256; b++) {
    tokens.emplace_back(1, char(b));
    id_of.emplace(tokens.back(), b);
  }

  std::vector<Word> words;
  {
    std::unordered_map<std::string_view, int64_t> chunk_count;
    tok::gpt2_split_each(corpus, [&](std::string_view c) {
      if (c.size() > 1) chunk_count[c]++;  // single bytes hold no pairs
    });
    words.reserve(chunk_count.size());
    for (const auto& [c, n] : chunk_count) {
      Word w{{}, n};
      for (char ch : c) w.sym.push_back(static_cast<unsigned char>(ch));
      words.push_back(std::move(w));
    }
  }

  std::unordered_map<uint64_t, int64_t> counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words that contain (or contained) it
  for (size_t w = 0; w < words.size(); w++) {
    const auto& s = words[w].sym;
    for (size_t i = 0; i + 1 < s.size(); i++) {
      uint64_t k = pair_key(s[i], s[i + 1]);
      counts[k] += words[w].count;
      auto& list = where[k];
      if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
    }
  }
  std::priority_queue<Candidate> heap;
  for (const auto& [k, n] : counts) heap.push({n, k});

  std::vector<std::pair<int, int>> merges;
  std::unordered_map<uint64_t, int64_t> delta;
  std::vector<int> merged;
  const int total = vocab_size - 256;
  while (int(tokens.size()) < vocab_size && !heap.empty()) {
    Candidate top = heap.top();
    heap.pop();
    auto cit = counts.find(top.pair);
    if (cit == counts.end() || cit->second != top.count) continue;  // stale entry
    const int a = int(top.pair >> 32), b = int(uint32_t(top.pair));
    std::string bytes = tokens[size_t(a)] + tokens[size_t(b)];
    int c;
    bool fresh = false;
    if (auto it = id_of.find(bytes); it != id_of.end()) {
      c = it->second;  // same bytes already made by another pair: one token, two merges (GPT-2 has these too)
    } else {
      c = int(tokens.size());
      fresh = true;
      tokens.push_back(bytes);
      id_of.emplace(std::move(bytes), c);
    }
    const int stamp = int(merges.size());
    merges.emplace_back(a, b);

    std::vector<int32_t> visit = std::move(where[top.pair]);
    where.erase(top.pair);
    delta.clear();
    for (int32_t wi : visit) {
      Word& w = words[size_t(wi)];
      if (w.stamp == stamp) continue;
      w.stamp = stamp;
      auto& s = w.sym;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; i++) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); i++) delta[pair_key(s[i], s[i + 1])] -= w.count;
      merged.clear();
      for (size_t i = 0; i < s.size(); i++) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          merged.push_back(c);
          i++;
        } else {
          merged.push_back(s[i]);
        }
      }
      s.swap(merged);
      for (size_t i = 0; i + 1 < s.size(); i++) {
        uint64_t k = pair_key(s[i], s[i + 1]);
        delta[k] += w.count;
        if (s[i] == c || s[i + 1] == c) {  // only pairs with the new symbol are new to this word
          auto& list = where[k];
          if (list.empty() || list.back() != wi) list.push_back(wi);
        }
      }
    }
    for (const auto& [k, d] : delta) {
      if (d == 0) continue;
      int64_t& n = counts[k];
      n += d;
      if (n > 0) {
        heap.push({n, k});
      } else {
        counts.erase(k);
      }
    }
    if (progress && fresh) progress(c - 255, total);
  }

  std::vector<std::string> text;
  text.reserve(tokens.size());
  for (const std::string& t : tokens) text.push_back(tok::bytes_to_gpt2_text(t));
  return std::make_unique<tok::BpeTokenizer>(std::move(text), merges, "trained BPE");
}

}  // namespace aigc

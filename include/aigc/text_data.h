// Text corpora for language-model training: reading and cleaning files, the built-in corpus, and a
// deterministic, resumable, rank-shardable batch loader over a token stream.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/batch_cursor.h"
#include "aigc/tensor.h"

namespace aigc {

// Reads and concatenates files. Fortune-style files (records separated by lines holding a single '%') are
// cleaned: ANSI colour escapes and separator lines are removed.
std::string read_text_corpus(const std::vector<std::string>& paths);
std::string clean_fortune_text(const std::string& raw);

// Training files from a --data list. Two names stand for built-in corpora that need no download (Debian
// packages installed by scripts/setup.sh): "fortunes", English fortune cookies (about 2.5 MB, the default when
// the list is empty), and "poems", Tang poems and Song lyrics from fortunes-zh (about 40 K characters).
std::vector<std::string> resolve_corpus(const std::vector<std::string>& data);

// Cuts a token stream into windows of T+1 tokens (inputs and shifted targets) and visits them in a fixed
// shuffled order (a permutation drawn from `seed`). Global batch g (BatchCursor: which one a rank takes) is
// entries g * B ... g * B + B - 1 of that order (mod the number of windows), so ranks never overlap and
// `position` alone resumes.
class TokenLoader {
 public:
  TokenLoader(std::vector<int32_t> tokens, int64_t B, int64_t T, uint64_t seed, int rank = 0, int world = 1,
              int64_t accum = 1);
  void next(Tensor& idx, Tensor& targets);  // fills (B,T) i32 tensors
  int64_t position() const { return cursor_.position(); }
  void set_position(int64_t p) { cursor_.set_position(p); }
  int64_t last_index() const { return cursor_.last(); }  // the global index of the batch next() gave last
  int64_t num_windows() const { return n_windows_; }

 private:
  std::vector<int32_t> tokens_;
  std::vector<int64_t> order_;
  int64_t B_, T_, n_windows_;
  BatchCursor cursor_;
};

}  // namespace aigc

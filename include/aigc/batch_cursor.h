// Which batch of the global stream a rank takes next. An update uses world x accum batches: rank r takes the
// accum consecutive ones from r x accum, so the order of the data (and of every per-batch random draw keyed by
// the batch's index) depends on the seed and the global position only, never on the rank count: 2 ranks x 1
// micro-batch see what 1 process x 2 micro-batches sees, and a run resumes on any number of ranks.
#pragma once
#include <cstdint>
#include <string>

#include "aigc/error.h"

namespace aigc {

class BatchCursor {
 public:
  BatchCursor(int rank, int world, int64_t accum) : rank_(rank), world_(world), accum_(accum) {
    AIGC_CHECK(world >= 1 && rank >= 0 && rank < world,
               "rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world) + " processes");
    AIGC_CHECK(accum >= 1, "grad-accum must be at least 1");
  }
  // The global index of this rank's next batch.
  int64_t next() {
    last_ = position_ + rank_ * accum_ + micro_;
    if (++micro_ == accum_) micro_ = 0, position_ += world_ * accum_;
    return last_;
  }
  int64_t last() const { return last_; }  // the index next() returned last
  // Global batches before the current update (what a checkpoint records, between updates).
  int64_t position() const { return position_; }
  void set_position(int64_t p) { position_ = p, micro_ = 0; }

 private:
  int rank_, world_;
  int64_t accum_, position_ = 0, micro_ = 0, last_ = -1;
};

}  // namespace aigc

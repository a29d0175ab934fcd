// Rng: a small, portable, serializable random generator (xoshiro256** seeded by splitmix64), so runs are
// reproducible across standard libraries and a checkpoint can store the exact generator state.
#pragma once
#include <cstdint>
#include <string>

#include "aigc/tensor.h"

namespace aigc {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t next_u64();
  double uniform();           // [0, 1)
  double normal();            // N(0, 1), Box-Muller
  std::string state() const;  // round-trips through set_state
  void set_state(const std::string& s);

 private:
  uint64_t s_[4];
};

// In-place parameter initializers.
namespace init {
void normal(const Tensor& t, float mean, float std, Rng& rng);
void uniform(const Tensor& t, float lo, float hi, Rng& rng);
void constant(const Tensor& t, float value);
}  // namespace init

// A new tensor of N(mean, std^2) draws (latents, diffusion noise).
Tensor randn(const Shape& shape, Rng& rng, float std = 1.0f, float mean = 0.0f);

}  // namespace aigc

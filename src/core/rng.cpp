#include "aigc/rng.h"

#include <cmath>
#include <sstream>

#include "aigc/error.h"

namespace aigc {

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

Rng::Rng(uint64_t seed) {
  for (uint64_t& w : s_) w = splitmix64(seed);
}

uint64_t Rng::next_u64() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

double Rng::normal() {
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

std::string Rng::state() const {
  std::ostringstream o;
  o << s_[0] << ' ' << s_[1] << ' ' << s_[2] << ' ' << s_[3];
  return o.str();
}

void Rng::set_state(const std::string& s) {
  std::istringstream in(s);
  uint64_t v[4];
  AIGC_CHECK(bool(in >> v[0] >> v[1] >> v[2] >> v[3]), "invalid random generator state '" + s + "'");
  for (int i = 0; i < 4; i++) s_[i] = v[i];
}

namespace init {
void normal(const Tensor& t, float mean, float std, Rng& rng) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); i++) p[i] = mean + std * float(rng.normal());
}
void uniform(const Tensor& t, float lo, float hi, Rng& rng) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); i++) p[i] = lo + (hi - lo) * float(rng.uniform());
}
void constant(const Tensor& t, float value) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); i++) p[i] = value;
}
}  // namespace init

Tensor randn(const Shape& shape, Rng& rng, float std, float mean) {
  Tensor t = Tensor::empty(shape);
  init::normal(t, mean, std, rng);
  return t;
}

}  // namespace aigc

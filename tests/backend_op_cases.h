// The op-case table of tests/test_backend_ops.cpp (modelled on ggml's test-backend-ops): each case runs one Backend
// kernel on inputs drawn from a seed fixed by the case's name, and returns its output buffers by name. The runner
// calls every case on the fast backend and on the reference backend and compares the buffers at the case's
// tolerance. The cases of the nn kernels live in test_backend_ops.cpp, those of the image kernels (convolution,
// normalizations, diffusion, Blocked16) in backend_op_cases_image.cpp.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "aigc/backend.h"
#include "aigc/rng.h"

namespace aigc::backend_ops {

// An element passes when |fast - reference| <= atol + rtol |reference| (NaN and inf must sit at the same places).
struct Tolerance {
  double atol, rtol;
  const char* why;
};

// The tolerance families, each with the reason for its size. Inputs are O(1) (mostly N(0, 1)), so an absolute
// bound is meaningful next to the relative one, which covers outputs that are sums of many terms.
inline constexpr Tolerance kExact{0.0, 0.0, "pure data movement (copies, gathers, layouts, bf16 bits, selects)"};
inline constexpr Tolerance kElementwise{1e-6, 1e-6, "one short fp32 formula per element vs double: a few ulps"};
inline constexpr Tolerance kTanhGrad{1e-5, 1e-5,
                                     "fp32 tanh = 1 - 2/(1+e^2u): 1 - tanh^2 cancels, GELU's x du amplifies"};
inline constexpr Tolerance kReduction{1e-5, 1e-5, "fp32 partial sums (SIMD lanes, per-thread parts) vs one double sum"};
inline constexpr Tolerance kNorm{1e-5, 1e-4, "fp32 statistics, then rstd multiplies their rounding into every output"};
inline constexpr Tolerance kGemm{1e-4, 1e-4, "blocked fp32 dot products (oneDNN, SIMD) over K up to 130"};
inline constexpr Tolerance kConv{2e-4, 1e-4, "oneDNN's blocked fp32 convolutions; dw sums up to ~400 products"};
inline constexpr Tolerance kWinograd{1e-3, 1e-3,
                                     "oneDNN may pick Winograd F(4x4,3x3) here: its transforms cost digits"};
inline constexpr Tolerance kAttention{1e-4, 1e-4, "blocked fp32 gemms, online softmax with a polynomial exp"};
inline constexpr Tolerance kQuantDot{1e-5, 1e-5, "exact integer block dots; fp32 sums of scaled blocks vs double"};
inline constexpr Tolerance kBf16Operands{2e-2, 1e-2,
                                         "oneDNN's bf16 matmul rounds the fp32 input to bf16 (2^-9 per product)"};

// A kernel's named output buffers; int, double and bf16 results are converted to float.
using Outputs = std::vector<std::pair<std::string, std::vector<float>>>;

struct OpCase {
  std::string name;  // the Backend method it runs, a space, then what distinguishes the case
  Tolerance tol;
  std::function<Outputs(Backend&)> run;  // same inputs on every call (a fresh Rng seeded from the name)
};

// FNV-1a of the case name: each case draws its own inputs, the same for both backends and for every run.
inline uint64_t seed_of(const std::string& name) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ULL;
  return h;
}

// Adds a case; `body` builds its inputs from rng, calls the kernel on be and returns the outputs.
inline void add_case(std::vector<OpCase>& table, std::string name, Tolerance tol,
                     std::function<Outputs(Backend& be, Rng& rng)> body) {
  const uint64_t seed = seed_of(name);
  table.push_back({std::move(name), tol, [seed, body = std::move(body)](Backend& be) {
                     Rng rng(seed);
                     return body(be, rng);
                   }});
}

// ---- Inputs ----
inline std::vector<float> normal(Rng& rng, int64_t n, double std = 1.0, double mean = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(mean + std * rng.normal());
  return v;
}
inline std::vector<float> uniform(Rng& rng, int64_t n, double lo, double hi) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(lo + (hi - lo) * rng.uniform());
  return v;
}
inline std::vector<int32_t> randint(Rng& rng, int64_t n, int32_t lo, int32_t hi) {  // [lo, hi)
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = lo + int32_t(rng.next_u64() % uint64_t(hi - lo));
  return v;
}
// A buffer for the reference's forward pass that makes a backward case's saved statistics.
inline std::vector<float> zeros(int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.0f); }
// An output the kernel must assign: NaN everywhere, so any element it leaves unwritten shows.
inline std::vector<float> unset(int64_t n) {
  return std::vector<float>(size_t(n), std::numeric_limits<float>::quiet_NaN());
}
// Inputs of the activations: N(0, 3^2) with exact zeros (where the derivative convention shows) and large
// magnitudes (saturation, exp clamping) at fixed places.
inline std::vector<float> activation_input(Rng& rng, int64_t n) {
  std::vector<float> v = normal(rng, n, 3.0);
  const float special[] = {0.0f, -0.0f, 30.0f, -30.0f, 9.0f, -9.0f, 1e-4f, -1e-4f};
  for (size_t k = 0; k < std::size(special) && 3 + 8 * int64_t(k) < n; k++) v[size_t(3 + 8 * k)] = special[k];
  return v;
}
// Any bf16 values: the top halves of N(0, std^2) floats.
inline std::vector<uint16_t> bf16_values(Rng& rng, int64_t n, double std) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (uint16_t& x : v) x = uint16_t(std::bit_cast<uint32_t>(float(std * rng.normal())) >> 16);
  return v;
}

// ---- Outputs ----
inline std::vector<float> scalar(double x) { return {float(x)}; }
// bf16 results compared as bit patterns: each 16-bit value as the float it equals as an integer (exact).
inline std::vector<float> bits_as_floats(const std::vector<uint16_t>& bits) { return {bits.begin(), bits.end()}; }

// "a=1 b=2" style case names.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

// Sets the process-wide matmul precision for a scope (both backends read it).
class PrecisionGuard {
 public:
  explicit PrecisionGuard(MatmulPrecision p) : saved_(matmul_precision()) { set_matmul_precision(p); }
  ~PrecisionGuard() { set_matmul_precision(saved_); }
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  MatmulPrecision saved_;
};

// Element counts for the flat kernels: empty, one, odd, around SIMD widths (8, 16, 32, 64 lanes) and larger.
inline const std::vector<int64_t> kFlatSizes = {0, 1, 7, 17, 31, 65, 1000};

// Forward and backward cases of an activation y = f(x) whose backward adds f'(x) dout into dinp.
using UnaryForward = std::function<void(Backend&, float* out, const float* inp, int64_t n)>;
using UnaryBackward = std::function<void(Backend&, float* dinp, const float* inp, const float* dout, int64_t n)>;
inline void add_activation_cases(std::vector<OpCase>& table, const std::string& fwd_name, UnaryForward fwd,
                                 const std::string& bwd_name, UnaryBackward bwd, Tolerance bwd_tol = kElementwise,
                                 const std::string& note = "") {
  for (int64_t n : kFlatSizes) {
    add_case(table, cat(fwd_name, " n=", n, note), kElementwise, [=](Backend& be, Rng& rng) {
      std::vector<float> x = activation_input(rng, n), out = unset(n);
      fwd(be, out.data(), x.data(), n);
      return Outputs{{"out", out}};
    });
    add_case(table, cat(bwd_name, " n=", n, note), bwd_tol, [=](Backend& be, Rng& rng) {
      std::vector<float> x = activation_input(rng, n), dout = normal(rng, n), dinp = normal(rng, n);
      bwd(be, dinp.data(), x.data(), dout.data(), n);
      return Outputs{{"dinp", dinp}};
    });
  }
}

// The cases of backend_op_cases_image.cpp: convolution, channel bias, the GAN and diffusion kernels
// (LeakyReLU, tanh, sigmoid, SiLU, batch and group normalization, concat, BCE, upsampling, Blocked16, transpose,
// timestep embedding, combine_rows, MSE, clamp, EMA).
void add_image_cases(std::vector<OpCase>& table);
// The cases of backend_op_cases_llama.cpp: RMS normalization, SwiGLU, the rotary embedding with grouped-query heads.
void add_llama_cases(std::vector<OpCase>& table);

}  // namespace aigc::backend_ops

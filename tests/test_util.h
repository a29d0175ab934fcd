// Small helpers shared by the test files.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/rng.h"
#include "aigc/tensor.h"

namespace aigc::testing {

// True when AIGC_ALLOW_MISSING (a comma-separated list of dependency names, or "all") lets tests that need
// `name` be skipped where it is missing.
inline bool allowed_missing(const std::string& name) {
  const char* env = std::getenv("AIGC_ALLOW_MISSING");
  if (!env) return false;
  std::stringstream list(env);
  for (std::string item; std::getline(list, item, ',');)
    if (item == name || item == "all") return true;
  return false;
}

// A test that needs something from outside the project (a Debian package, node, an npm package): `why` is empty
// when it is there. When it is missing the test FAILS, saying what to install, unless AIGC_ALLOW_MISSING names it
// (then it is skipped): a missing install step must not pass silently.
#define AIGC_NEEDS(name, why)                                                                                      \
  do {                                                                                                             \
    const std::string aigc_why_ = (why);                                                                           \
    if (!aigc_why_.empty()) {                                                                                      \
      if (::aigc::testing::allowed_missing(name)) GTEST_SKIP() << aigc_why_ << " (allowed by AIGC_ALLOW_MISSING)"; \
      FAIL() << aigc_why_ << ". Run scripts/setup.sh, or set AIGC_ALLOW_MISSING=" << (name)                        \
             << " to skip the tests that need it";                                                                 \
    }                                                                                                              \
  } while (0)

// Debian's dataset-fashion-mnist, for the tests on real images.
inline std::string fashion_mnist_missing() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist")
             ? ""
             : "Fashion-MNIST is missing (Debian package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist)";
}

// An empty directory under the system temp dir, unique to this process and `name`.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / ("aigc_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs the recorded tape as if out were followed by sum(out * dout): out's gradient is seeded with dout.
inline void backward_from(const Tensor& out, const std::vector<float>& dout) {
  Tensor o = out;
  std::copy(dout.begin(), dout.end(), o.ensure_grad().f32());
  Tensor seed = Tensor::from_vector({0.0f}, {1});
  seed.set_requires_grad(true);
  backward(seed);
}

// Largest |a - b| over two same-sized tensors.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.to_vector(), y = b.to_vector();
  double m = x.size() == y.size() ? 0.0 : 1e30;
  for (size_t i = 0; i < std::min(x.size(), y.size()); i++) m = std::max(m, double(std::abs(x[i] - y[i])));
  return m;
}

}  // namespace aigc::testing

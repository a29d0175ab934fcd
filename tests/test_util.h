// Small helpers shared by the test files.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/rng.h"
#include "aigc/tensor.h"

namespace aigc::testing {

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

// Small helpers shared by the test files.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aigc/autograd.h"
#include "aigc/gguf.h"
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

// A labeled 28x28 IDX dataset of 40 images (pixel p of image i is (p (i + 3)) mod 251, label i mod 10) written
// into dir, so image tests need no installed data.
inline void write_tiny_idx(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
  };
  std::string img = be32(0x803) + be32(40) + be32(28) + be32(28), lab = be32(0x801) + be32(40);
  for (int i = 0; i < 40; i++) {
    for (int p = 0; p < 784; p++) img += char((p * (i + 3)) % 251);
    lab += char(i % 10);
  }
  std::ofstream(dir / "train-images-idx3-ubyte", std::ios::binary) << img;
  std::ofstream(dir / "train-labels-idx1-ubyte", std::ios::binary) << lab;
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

// A copy of the GGUF file `src` at `dst` with the tensor `name` stored as `nbytes` bytes of `type` at `data` (same
// dims): a file with one matrix in another type than its others, as per-tensor overrides make.
inline void write_gguf_replacing(const GgufReader& src, const std::string& dst, const std::string& name, GgmlType type,
                                 const void* data, size_t nbytes) {
  GgufWriter w;
  for (const auto& [k, v] : src.metadata()) w.set(k, v);
  for (const GgufTensorInfo& t : src.tensors())
    if (t.name == name)
      w.add_tensor(t.name, type, t.dims, data, nbytes);
    else
      w.add_tensor(t.name, t.type, t.dims, src.data(t), t.nbytes);
  w.write(dst);  // the writer reads the tensors' bytes here
}

}  // namespace aigc::testing

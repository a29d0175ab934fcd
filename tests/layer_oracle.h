// Runs single-layer cases through PyTorch (reference/torch/torch_layer_oracle.py, float64) and compares results.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "aigc/safetensors.h"
#include "aigc/tensor.h"
#include "test_util.h"

namespace aigc::testing {

struct OracleCase {
  std::string layer;
  nlohmann::json options = nlohmann::json::object();
  std::vector<std::pair<std::string, Tensor>> inputs;  // "x", "w", ..., "dout"
};

// All cases in one PyTorch start; returns each case's results. Fails the test if the oracle fails.
inline std::vector<std::unique_ptr<SafeTensorsReader>> run_layer_oracle(const std::vector<OracleCase>& cases,
                                                                        const std::string& tag) {
  std::filesystem::path dir = fresh_temp_dir("oracle_" + tag);
  std::string cmd = "/usr/bin/python3 " + std::string(AIGC_SOURCE_DIR) + "/reference/torch/torch_layer_oracle.py";
  for (size_t k = 0; k < cases.size(); k++) {
    std::vector<StTensorOut> ts;
    for (const auto& [name, t] : cases[k].inputs)
      ts.push_back({name, StDType::F32, t.shape(), t.f32(), size_t(t.numel()) * 4});
    auto in = dir / ("in" + std::to_string(k) + ".safetensors");
    write_safetensors(in.string(), ts, {{"layer", cases[k].layer}, {"options", cases[k].options.dump()}});
    // appended piece by piece: GCC 12 warns (falsely, -Wrestrict) on " " + a temporary string
    cmd += ' ';
    cmd += in.string();
    cmd += ' ';
    cmd += (dir / ("out" + std::to_string(k) + ".safetensors")).string();
  }
  std::vector<std::unique_ptr<SafeTensorsReader>> out;
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "the PyTorch oracle failed (is python3-torch installed? run scripts/setup.sh): " << cmd;
    return out;
  }
  for (size_t k = 0; k < cases.size(); k++)
    out.push_back(std::make_unique<SafeTensorsReader>((dir / ("out" + std::to_string(k) + ".safetensors")).string()));
  return out;
}

// Largest |got - ref| relative to the reference tensor's largest magnitude (floor 1e-3); asserts it is < tol.
inline double expect_close(const SafeTensorsReader& ref, const std::string& name, const Tensor& got, double tol) {
  std::vector<float> r = ref.read_f32(name), g = got.to_vector();
  EXPECT_EQ(r.size(), g.size()) << name;
  double scale = 1e-3, worst = 0;
  for (float v : r) scale = std::max(scale, double(std::abs(v)));
  for (size_t i = 0; i < std::min(r.size(), g.size()); i++)
    worst = std::max(worst, std::abs(double(g[i]) - r[i]) / scale);
  EXPECT_LT(worst, tol) << name << ": worst relative error vs PyTorch";
  return worst;
}

}  // namespace aigc::testing

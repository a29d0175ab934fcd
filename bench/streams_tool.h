// What the two streams tools (aigc_gan_streams, aigc_diffusion_streams) share: one command line,
// "[LEAD...] SEED STEPS OUT.safetensors [BATCH]", read with a clear error for a bad number; the 8-bit pixels of a
// batch in [-1, 1]; and one way to report a failure.
#pragma once
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "aigc/error.h"
#include "aigc/tensor.h"

namespace aigc::streams {

struct Args {
  std::vector<std::string> lead;  // the arguments before SEED (the diffusion tool's CONFIG_CKPT)
  uint64_t seed = 0;
  int64_t steps = 0, batch = 64;
  std::string out;
};

// A whole non-negative decimal number, or an error that names the argument.
inline uint64_t parse_count(const char* text, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  AIGC_CHECK(text[0] >= '0' && text[0] <= '9' && *end == '\0' && errno == 0,
             std::string(what) + " must be a whole number, got '" + text + "'");
  return v;
}

// Reads argv as "LEAD_NAMES SEED STEPS OUT.safetensors [BATCH]" and runs body; a wrong count prints the usage
// (exit 2), a failure prints "TOOL: reason" (exit 1).
inline int run_tool(int argc, char** argv, const std::vector<std::string>& lead_names,
                    const std::function<void(const Args&)>& body) {
  const int n_lead = int(lead_names.size());
  if (argc != n_lead + 4 && argc != n_lead + 5) {
    std::string usage;
    for (const std::string& name : lead_names) usage += name + " ";
    std::fprintf(stderr, "usage: %s %sSEED STEPS OUT.safetensors [BATCH]\n", argv[0], usage.c_str());
    return 2;
  }
  try {
    Args a;
    a.lead.assign(argv + 1, argv + 1 + n_lead);
    a.seed = parse_count(argv[n_lead + 1], "SEED");
    a.steps = int64_t(parse_count(argv[n_lead + 2], "STEPS"));
    a.out = argv[n_lead + 3];
    if (argc == n_lead + 5) a.batch = int64_t(parse_count(argv[n_lead + 4], "BATCH"));
    AIGC_CHECK(a.steps >= 1 && a.batch >= 1, "STEPS and BATCH must be positive");
    body(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  return 0;
}

// Appends a batch of images in [-1, 1] as 8-bit pixels (what the image loader read from the dataset).
inline void append_pixels(const Tensor& images, std::vector<uint8_t>& out) {
  for (float v : images.to_vector()) out.push_back(uint8_t(std::lround((v + 1.0f) * 127.5f)));
}

}  // namespace aigc::streams

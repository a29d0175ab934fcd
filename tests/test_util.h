// Small helpers shared by the test files.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

namespace aigc::testing {

// An empty directory under the system temp dir, unique to this process and `name`.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / ("aigc_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace aigc::testing

// aigc::Error: the one exception type library code throws. Messages say what was wrong
// (file, field, expected vs got) and, where it helps, what to do about it.
#pragma once
#include <stdexcept>
#include <string>

namespace aigc {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& msg);

}  // namespace aigc

// AIGC_CHECK(cond, msg): throw aigc::Error(msg) when cond is false. msg may be any std::string expression.
#define AIGC_CHECK(cond, msg)                    \
  do {                                           \
    if (!(cond)) ::aigc::fail(std::string(msg)); \
  } while (0)

// A JSON value as an error message shows it, cut at 80 characters. Untrusted files can nest arrays and objects as
// deep as their size allows, and serializing recurses once per level, so a container is written out only when
// its elements are all scalars; otherwise it is shown by kind and size.
#pragma once

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

namespace aigc {

inline std::string json_brief(const nlohmann::json& v) {
  const bool flat =
      !v.is_structured() || std::none_of(v.begin(), v.end(), [](const auto& e) { return e.is_structured(); });
  if (!flat) return (v.is_array() ? "an array of " : "an object of ") + std::to_string(v.size());
  const std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace aigc

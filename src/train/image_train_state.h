// What the image families' checkpoints record of their training streams besides the weights: the step and the
// loader's global position ("aigc.train_state"), so a resume continues exactly (the noise of every batch is
// drawn from a generator keyed by the batch's global index).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "aigc/error.h"
#include "aigc/image_data.h"

namespace aigc {

inline std::string image_train_state(int64_t step, const ImageLoader& loader) {
  return nlohmann::json{{"step", step}, {"position", loader.position()}}.dump();
}

// Puts the loader back where `json` (from checkpoint `ckpt`) says; returns the step.
inline int64_t restore_image_train_state(const std::string& ckpt, const std::string& json, ImageLoader& loader) {
  nlohmann::json state = nlohmann::json::parse(json, nullptr, false);
  AIGC_CHECK(state.is_object() && state.contains("step") && state.contains("position") &&
                 state["step"].is_number_integer() && state["position"].is_number_integer(),
             "'" + ckpt + "': aigc.train_state is damaged");
  loader.set_position(state["position"].get<int64_t>());
  return state["step"].get<int64_t>();
}

}  // namespace aigc

// What the image families' checkpoints record of their training streams besides the weights: the step, the
// loader's position and the noise generator's state ("aigc.train_state"), so a resume continues exactly.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/rng.h"

namespace aigc {

inline std::string image_train_state(int64_t step, const ImageLoader& loader, const Rng& rng) {
  return nlohmann::json{{"step", step}, {"position", loader.position()}, {"rng", rng.state()}}.dump();
}

// Puts the loader and the generator back where `json` (from checkpoint `ckpt`) says; returns the step.
inline int64_t restore_image_train_state(const std::string& ckpt, const std::string& json, ImageLoader& loader,
                                         Rng& rng) {
  nlohmann::json state = nlohmann::json::parse(json, nullptr, false);
  AIGC_CHECK(state.is_object() && state.contains("step") && state.contains("position") && state.contains("rng"),
             "'" + ckpt + "': aigc.train_state is damaged");
  loader.set_position(state["position"].get<int64_t>());
  rng.set_state(state["rng"].get<std::string>());
  return state["step"].get<int64_t>();
}

}  // namespace aigc

// Diffusion checkpoints: see models/ddpm.h.
#include <nlohmann/json.hpp>

#include "aigc/checkpoint_kind.h"
#include "aigc/error.h"
#include "aigc/models/ddpm.h"
#include "aigc/optim.h"
#include "aigc/safetensors.h"

namespace aigc {

namespace {

constexpr const char* kFormat = "aigc-ddpm-1";

const std::string& meta(const SafeTensorsReader& st, const std::string& key) {
  auto it = st.metadata().find(key);
  AIGC_CHECK(it != st.metadata().end(), "'" + st.path() + "': missing metadata field '" + key + "'");
  return it->second;
}

void check_format(const SafeTensorsReader& st) {
  AIGC_CHECK(meta(st, "format") == kFormat, "'" + st.path() + "' is not a diffusion checkpoint (format \"" +
                                                meta(st, "format") + "\", expected \"" + kFormat + "\")");
}

NoiseSchedule schedule_of(const SafeTensorsReader& st) {
  nlohmann::json j = nlohmann::json::parse(meta(st, "aigc.schedule"), nullptr, false);
  AIGC_CHECK(
      j.is_object() && j.contains("kind") && j["kind"].is_string() && j.contains("T") && j["T"].is_number_integer(),
      "'" + st.path() + "': aigc.schedule must be {\"kind\": string, \"T\": integer}");
  return NoiseSchedule::make(j["kind"].get<std::string>(), j["T"].get<int64_t>());
}

}  // namespace

UNetConfig ddpm_config_of(const std::string& path) {
  SafeTensorsReader st(path);
  check_format(st);
  return UNetConfig::from_json(meta(st, "aigc.config"));
}

NoiseSchedule ddpm_schedule_of(const std::string& path) {
  SafeTensorsReader st(path);
  check_format(st);
  return schedule_of(st);
}

LoadedDiffusion load_diffusion(const std::string& path, bool ema) {
  SafeTensorsReader st(path);
  check_format(st);
  LoadedDiffusion out;
  out.net = std::make_unique<UNet>(UNetConfig::from_json(meta(st, "aigc.config")));
  const int64_t n = out.net->params().numel();
  st.read_f32_into(ema ? "ema" : "model", out.net->params().data(), {n});
  out.schedule = schedule_of(st);
  out.class_names = checkpoint_class_names(st);
  return out;
}

void save_ddpm(const std::string& path, UNet& net, const Tensor& ema, Optimizer* adam, const NoiseSchedule& schedule,
               const std::vector<std::string>& class_names, const std::string& train_state_json) {
  const int64_t n = net.params().numel();
  AIGC_CHECK(ema.numel() == n, "save_ddpm: the EMA has " + std::to_string(ema.numel()) + " values for " +
                                   std::to_string(n) + " parameters");
  std::vector<StTensorOut> ts = {{"model", StDType::F32, {n}, net.params().data(), size_t(n) * 4},
                                 {"ema", StDType::F32, {n}, ema.f32(), size_t(n) * 4}};
  if (adam) {
    ts.push_back({"optim.m", StDType::F32, {n}, adam->m().f32(), size_t(n) * 4});
    ts.push_back({"optim.v", StDType::F32, {n}, adam->v().f32(), size_t(n) * 4});
  }
  write_safetensors(path, ts,
                    {{"format", kFormat},
                     {"aigc.config", net.config().to_json()},
                     {"aigc.schedule", nlohmann::json{{"kind", schedule.kind}, {"T", schedule.T()}}.dump()},
                     {"aigc.train_state", train_state_json},
                     {"aigc.classes", nlohmann::json(class_names).dump()}});
}

std::string load_ddpm(const std::string& path, UNet& net, Tensor& ema, Optimizer& adam) {
  SafeTensorsReader st(path);
  check_format(st);
  const int64_t n = net.params().numel();
  st.read_f32_into("model", net.params().data(), {n});
  st.read_f32_into("ema", ema.f32(), {n});
  st.read_f32_into("optim.m", adam.m().f32(), {n});
  st.read_f32_into("optim.v", adam.v().f32(), {n});
  return meta(st, "aigc.train_state");
}

}  // namespace aigc

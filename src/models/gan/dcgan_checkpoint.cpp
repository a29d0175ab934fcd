// DCGAN checkpoints (format aigc-dcgan-1): every tensor of both networks (and, for training, both optimizers)
// under a "G." or "D." prefix, the config, the class names and the training state in the metadata.
#include <nlohmann/json.hpp>

#include "aigc/checkpoint_kind.h"
#include "aigc/error.h"
#include "aigc/models/dcgan.h"
#include "aigc/optim.h"
#include "aigc/safetensors.h"

namespace aigc {

namespace {

constexpr const char* kFormat = "aigc-dcgan-1";

void add_net(std::vector<StTensorOut>& out, const std::string& prefix, ConvNet& net, Optimizer* opt) {
  for (const Param& p : net.params().params())
    out.push_back({prefix + p.name, StDType::F32, p.value.shape(), p.value.f32(), size_t(p.value.numel()) * 4});
  for (auto& [name, t] : net.buffers())
    out.push_back({prefix + name, StDType::F32, t.shape(), t.f32(), size_t(t.numel()) * 4});
  if (opt) {
    const int64_t n = net.params().numel();
    out.push_back({prefix + "optim.m", StDType::F32, {n}, opt->m().f32(), size_t(n) * 4});
    out.push_back({prefix + "optim.v", StDType::F32, {n}, opt->v().f32(), size_t(n) * 4});
  }
}

void read_net(const SafeTensorsReader& st, const std::string& prefix, ConvNet& net, Optimizer* opt) {
  for (const Param& p : net.params().params()) st.read_f32_into(prefix + p.name, p.value.f32(), p.value.shape());
  for (auto& [name, t] : net.buffers()) st.read_f32_into(prefix + name, t.f32(), t.shape());
  if (opt) {
    const int64_t n = net.params().numel();
    st.read_f32_into(prefix + "optim.m", opt->m().f32(), {n});
    st.read_f32_into(prefix + "optim.v", opt->v().f32(), {n});
  }
}

DCGANConfig config_of(const SafeTensorsReader& st) {
  auto fmt = st.metadata().find("format");
  AIGC_CHECK(fmt != st.metadata().end() && fmt->second == kFormat,
             "'" + st.path() + "' is not an aigc DCGAN checkpoint (metadata format must be " + kFormat + ")");
  auto cfg = st.metadata().find("aigc.config");
  AIGC_CHECK(cfg != st.metadata().end(), "'" + st.path() + "': metadata lacks aigc.config");
  return DCGANConfig::from_json(cfg->second);
}

}  // namespace

DCGANConfig dcgan_config_of(const std::string& path) { return config_of(SafeTensorsReader(path)); }

void save_dcgan(const std::string& path, Generator& g, Discriminator& d, Optimizer* og, Optimizer* od,
                const std::vector<std::string>& class_names, const std::string& train_state_json) {
  std::vector<StTensorOut> ts;
  add_net(ts, "G.", g, og);
  add_net(ts, "D.", d, od);
  write_safetensors(path, ts,
                    {{"format", kFormat},
                     {"aigc.config", g.config().to_json()},
                     {"aigc.train_state", train_state_json},
                     {"aigc.classes", nlohmann::json(class_names).dump()}});
}

std::string load_dcgan(const std::string& path, Generator& g, Discriminator& d, Optimizer& og, Optimizer& od) {
  SafeTensorsReader st(path);
  config_of(st);
  read_net(st, "G.", g, &og);
  read_net(st, "D.", d, &od);
  auto it = st.metadata().find("aigc.train_state");
  AIGC_CHECK(it != st.metadata().end(), "'" + path + "' holds no training state to resume from");
  return it->second;
}

LoadedGenerator load_generator(const std::string& path) {
  SafeTensorsReader st(path);
  LoadedGenerator out;
  out.g = std::make_unique<Generator>(config_of(st));
  read_net(st, "G.", *out.g, nullptr);
  out.class_names = checkpoint_class_names(st);
  return out;
}

}  // namespace aigc

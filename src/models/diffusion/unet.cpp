// The DDPM U-Net (see unet.h), composed from ops only.
#include "aigc/models/unet.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "aigc/autograd.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/rng.h"

namespace aigc {

void UNetConfig::validate() const {
  AIGC_CHECK(channels >= 1 && channels <= 4, "unet: channels must be 1 to 4");
  AIGC_CHECK(ch >= 1 && ch <= 1024, "unet: ch out of range");
  AIGC_CHECK(!ch_mult.empty() && ch_mult.size() <= 6, "unet: ch_mult needs 1 to 6 levels");
  for (int64_t m : ch_mult) AIGC_CHECK(m >= 1 && m <= 16, "unet: ch_mult entries must be 1 to 16");
  const int64_t down = int64_t(1) << (ch_mult.size() - 1);
  AIGC_CHECK(image_size >= 4 && image_size <= 256 && image_size % down == 0,
             "unet: image_size " + std::to_string(image_size) + " must be divisible by " + std::to_string(down) +
                 " (one halving per level after the first)");
  AIGC_CHECK(num_res_blocks >= 1 && num_res_blocks <= 8, "unet: num_res_blocks must be 1 to 8");
  AIGC_CHECK(groups >= 1 && ch % groups == 0, "unet: ch must be divisible by groups");
  AIGC_CHECK(n_head >= 1, "unet: n_head must be positive");
  AIGC_CHECK(prediction == "eps" || prediction == "v" || prediction == "x0",
             "unet: prediction must be eps, v or x0, not '" + prediction + "'");
  for (int64_t m : ch_mult)
    AIGC_CHECK((ch * m) % n_head == 0, "unet: every level's channels must be divisible by n_head");
  AIGC_CHECK(dropout >= 0.0f && dropout < 1.0f, "unet: dropout must be in [0, 1)");
  AIGC_CHECK(n_classes >= 0 && n_classes <= 1000, "unet: n_classes out of range");
}

std::string UNetConfig::to_json() const {
  return nlohmann::json{{"image_size", image_size},
                        {"channels", channels},
                        {"ch", ch},
                        {"ch_mult", ch_mult},
                        {"num_res_blocks", num_res_blocks},
                        {"attn_resolutions", attn_resolutions},
                        {"groups", groups},
                        {"n_head", n_head},
                        {"dropout", dropout},
                        {"n_classes", n_classes},
                        {"prediction", prediction}}
      .dump();
}

UNetConfig UNetConfig::from_json(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  AIGC_CHECK(j.is_object(), "unet config: not a JSON object");
  UNetConfig c;
  for (auto [key, field] : {std::pair{"image_size", &c.image_size},
                            {"channels", &c.channels},
                            {"ch", &c.ch},
                            {"num_res_blocks", &c.num_res_blocks},
                            {"groups", &c.groups},
                            {"n_head", &c.n_head},
                            {"n_classes", &c.n_classes}}) {
    AIGC_CHECK(j.contains(key) && j[key].is_number_integer(),
               std::string("unet config: '") + key + "' must be an integer");
    *field = j[key].get<int64_t>();
  }
  for (auto [key, field] : {std::pair{"ch_mult", &c.ch_mult}, {"attn_resolutions", &c.attn_resolutions}}) {
    AIGC_CHECK(j.contains(key) && j[key].is_array() && j[key].size() <= 16,
               std::string("unet config: '") + key + "' must be a list of integers");
    field->clear();
    for (auto& v : j[key]) {
      AIGC_CHECK(v.is_number_integer(), std::string("unet config: '") + key + "' must be a list of integers");
      field->push_back(v.get<int64_t>());
    }
  }
  AIGC_CHECK(j.contains("dropout") && j["dropout"].is_number(), "unet config: 'dropout' must be a number");
  c.dropout = j["dropout"].get<float>();
  if (j.contains("prediction")) {  // optional: older checkpoints predict the noise
    AIGC_CHECK(j["prediction"].is_string(), "unet config: 'prediction' must be a string");
    c.prediction = j["prediction"].get<std::string>();
  }
  c.validate();
  return c;
}

UNet::Conv UNet::add_conv(const std::string& name, int64_t in, int64_t out, int64_t k, int64_t stride) {
  Conv c;
  c.w = params_.add(name + ".weight", {out, in, k, k}, true);
  c.b = params_.add(name + ".bias", {out}, false);
  c.stride = stride, c.padding = k / 2;
  return c;
}

UNet::Norm UNet::add_norm(const std::string& name, int64_t c) {
  return {params_.add(name + ".weight", {c}, false), params_.add(name + ".bias", {c}, false)};
}

UNet::Stage UNet::add_stage(const std::string& name, int64_t in, int64_t out, bool attn) {
  Stage s;
  ResBlock& r = s.res;
  r.norm1 = add_norm(name + ".norm1", in);
  r.conv1 = add_conv(name + ".conv1", in, out, 3);
  r.temb_w = params_.add(name + ".temb.weight", {out, 4 * cfg_.ch}, true);
  r.temb_b = params_.add(name + ".temb.bias", {out}, false);
  r.norm2 = add_norm(name + ".norm2", out);
  r.conv2 = add_conv(name + ".conv2", out, out, 3);
  zero_init_.push_back(name + ".conv2.");  // each residual branch starts as the identity
  if (in != out) r.skip = add_conv(name + ".skip", in, out, 1);
  if (attn) {
    s.has_attn = true;
    s.attn.norm = add_norm(name + ".attn.norm", out);
    s.attn.qkv_w = params_.add(name + ".attn.qkv.weight", {3 * out, out}, true);
    s.attn.qkv_b = params_.add(name + ".attn.qkv.bias", {3 * out}, false);
    s.attn.proj_w = params_.add(name + ".attn.proj.weight", {out, out}, true);
    s.attn.proj_b = params_.add(name + ".attn.proj.bias", {out}, false);
    zero_init_.push_back(name + ".attn.proj.");
  }
  return s;
}

UNet::UNet(const UNetConfig& cfg, uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  const int64_t ch = cfg_.ch, ed = 4 * ch, L = int64_t(cfg_.ch_mult.size());
  temb1_w = params_.add("temb.0.weight", {ed, ch}, true);
  temb1_b = params_.add("temb.0.bias", {ed}, false);
  temb2_w = params_.add("temb.1.weight", {ed, ed}, true);
  temb2_b = params_.add("temb.1.bias", {ed}, false);
  if (cfg_.n_classes > 0) class_emb_ = params_.add("class_emb", {cfg_.n_classes + 1, ed}, true);
  conv_in_ = add_conv("conv_in", cfg_.channels, ch, 3);
  auto attn_at = [&](int64_t res) {
    return std::find(cfg_.attn_resolutions.begin(), cfg_.attn_resolutions.end(), res) != cfg_.attn_resolutions.end();
  };
  // Encoder; skips records the channels of every kept activation, in order.
  std::vector<int64_t> skips{ch};
  int64_t cur = ch, res = cfg_.image_size;
  for (int64_t i = 0; i < L; i++) {
    Level lv;
    const int64_t out = ch * cfg_.ch_mult[size_t(i)];
    for (int64_t r = 0; r < cfg_.num_res_blocks; r++) {
      const std::string name = "down." + std::to_string(i) + "." + std::to_string(r);
      lv.stages.push_back(add_stage(name, cur, out, attn_at(res)));
      cur = out;
      skips.push_back(cur);
    }
    if (i + 1 < L) {
      lv.has_resample = true;
      lv.resample = add_conv("down." + std::to_string(i) + ".downsample", cur, cur, 3, 2);
      skips.push_back(cur);
      res /= 2;
    }
    down_.push_back(std::move(lv));
  }
  mid1_ = add_stage("mid.0", cur, cur, true);
  mid2_ = add_stage("mid.1", cur, cur, false);
  // Decoder, from the lowest resolution up.
  for (int64_t i = L - 1; i >= 0; i--) {
    Level lv;
    const int64_t out = ch * cfg_.ch_mult[size_t(i)];
    for (int64_t r = 0; r <= cfg_.num_res_blocks; r++) {
      const std::string name = "up." + std::to_string(i) + "." + std::to_string(r);
      lv.stages.push_back(add_stage(name, cur + skips.back(), out, attn_at(res)));
      skips.pop_back();
      cur = out;
    }
    if (i > 0) {
      lv.has_resample = true;
      lv.resample = add_conv("up." + std::to_string(i) + ".upsample", cur, cur, 3);
      res *= 2;
    }
    up_.push_back(std::move(lv));
  }
  norm_out_ = add_norm("norm_out", cur);
  conv_out_ = add_conv("conv_out", cur, cfg_.channels, 3);
  zero_init_.push_back("conv_out.");
  params_.finalize();
  init_weights(seed);
}

// PyTorch's defaults (uniform in +-1/sqrt(fan_in) for weights and biases of convs and linears, GroupNorm 1 / 0,
// embeddings N(0, 1)), and zeros for the last layer of every residual branch and for the output conv.
void UNet::init_weights(uint64_t seed) {
  Rng rng(seed);
  NoGradGuard ng;
  const std::vector<Param>& ps = params_.params();
  for (size_t i = 0; i < ps.size(); i++) {
    const Param& p = ps[i];
    const bool zero =
        std::any_of(zero_init_.begin(), zero_init_.end(), [&](const std::string& z) { return p.name.starts_with(z); });
    if (zero) {
      init::constant(p.value, 0.0f);
    } else if (p.name == "class_emb") {
      init::normal(p.value, 0.0f, 1.0f, rng);
    } else if (p.name.find("norm") != std::string::npos) {
      init::constant(p.value, p.name.ends_with(".weight") ? 1.0f : 0.0f);
    } else {
      // A bias takes its bound from the weight declared just before it.
      const Tensor& w = p.name.ends_with(".bias") ? ps[i - 1].value : p.value;
      const float bound = 1.0f / std::sqrt(float(w.numel() / w.size(0)));
      init::uniform(p.value, -bound, bound, rng);
    }
  }
}

Tensor UNet::conv(const Conv& c, const Tensor& x, bool blocked_output) const {
  ops::Conv2dOptions o{c.stride, c.padding};
  o.blocked_output = blocked_output;
  return ops::conv2d(x, c.w, c.b, o);
}

Tensor UNet::norm_act(const Norm& n, const Tensor& x) const {
  return ops::group_norm(x, n.w, n.b, cfg_.groups, 1e-5f, /*silu=*/true);
}

Tensor UNet::res_block(const ResBlock& r, const Tensor& x, const Tensor& temb_act, bool training, uint64_t seed) const {
  Tensor h = conv(r.conv1, norm_act(r.norm1, x));
  h = ops::add_channelwise(h, ops::linear(temb_act, r.temb_w, r.temb_b));
  h = norm_act(r.norm2, h);
  if (training && cfg_.dropout > 0.0f) h = ops::dropout(h, cfg_.dropout, seed);
  h = conv(r.conv2, h);
  return ops::add(r.skip.w.defined() ? conv(r.skip, x) : x, h);
}

// Self-attention over the H*W positions, each a C-vector: (B, C, H, W) -> (B, HW, C) -> attention -> back.
// It works on plain tensors: a blocked input (inference) is converted, and so is the result (at these low
// resolutions the conversions are cheap).
Tensor UNet::attn_block(const AttnBlock& a, const Tensor& x_in) const {
  const Tensor x = ops::to_plain(x_in);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor h = ops::transpose_last2(ops::group_norm(x, a.norm.w, a.norm.b, cfg_.groups).view({B, C, H * W}));
  h = ops::self_attention(ops::linear(h, a.qkv_w, a.qkv_b), cfg_.n_head, /*causal=*/false);
  h = ops::transpose_last2(ops::linear(h, a.proj_w, a.proj_b));
  h = ops::add(x, h.view({B, C, H, W}));
  return x_in.layout() == Layout::Blocked16 ? ops::to_blocked(h) : h;
}

Tensor UNet::stage(const Stage& s, const Tensor& x, const Tensor& temb_act, bool training, uint64_t seed) const {
  Tensor h = res_block(s.res, x, temb_act, training, seed);
  return s.has_attn ? attn_block(s.attn, h) : h;
}

Tensor UNet::forward(const Tensor& x, const Tensor& t, const Tensor& labels, bool training, uint64_t dropout_seed) {
  const int64_t S = cfg_.image_size;
  AIGC_CHECK(x.dim() == 4 && x.size(1) == cfg_.channels && x.size(2) == S && x.size(3) == S,
             "unet: images must be (B, " + std::to_string(cfg_.channels) + ", " + std::to_string(S) + ", " +
                 std::to_string(S) + "), got " + shape_str(x.shape()));
  const int64_t B = x.size(0);
  AIGC_CHECK(t.dim() == 1 && t.size(0) == B, "unet: need one timestep per image");
  Tensor temb = ops::timestep_embedding(t, cfg_.ch);
  temb = ops::linear(ops::silu(ops::linear(temb, temb1_w, temb1_b)), temb2_w, temb2_b);
  if (cfg_.n_classes > 0) {
    AIGC_CHECK(labels.defined() && labels.numel() == B, "unet: a class-conditional model needs one label per image");
    temb = ops::add(temb, ops::embedding(labels.view({B, 1}), class_emb_, Tensor()).view({B, 4 * cfg_.ch}));
  }
  const Tensor temb_act = ops::silu(temb);  // every residual block projects SiLU(temb)
  uint64_t block = 0;                       // a different dropout mask per block
  auto next_seed = [&] { return block_dropout_seed(dropout_seed, ++block); };
  // Inference keeps the activations in oneDNN's blocked layout from the first convolution's output on (conv_out,
  // with its few channels, gives a plain result): no layout conversion around every convolution.
  last_forward_blocked_ = !training && !grad_enabled() && cfg_.ch % 16 == 0;
  Tensor h = conv(conv_in_, x, last_forward_blocked_);
  std::vector<Tensor> skips{h};
  for (const Level& lv : down_) {
    for (const Stage& s : lv.stages) skips.push_back(h = stage(s, h, temb_act, training, next_seed()));
    if (lv.has_resample) skips.push_back(h = conv(lv.resample, h));
  }
  h = stage(mid1_, h, temb_act, training, next_seed());
  h = stage(mid2_, h, temb_act, training, next_seed());
  for (const Level& lv : up_) {
    for (const Stage& s : lv.stages) {
      h = stage(s, ops::concat_channels(h, skips.back()), temb_act, training, next_seed());
      skips.pop_back();
    }
    if (lv.has_resample) h = conv(lv.resample, ops::upsample_nearest(h, 2));
  }
  return conv(conv_out_, norm_act(norm_out_, h));
}

}  // namespace aigc

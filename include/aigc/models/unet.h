// The denoising U-Net of Ho et al. 2020 ("DDPM"), sized for 28x28 or 32x32 images.
//  - Residual blocks: GroupNorm, SiLU, 3x3 conv, + the projected time embedding, GroupNorm, SiLU, dropout,
//    3x3 conv; a 1x1 conv on the skip path when the channel count changes.
//  - Encoder: per level num_res_blocks residual blocks (self-attention after each at the resolutions listed in
//    attn_resolutions), then a stride-2 3x3 conv down (except at the last level). Every block's output is kept
//    as a skip connection.
//  - Middle: residual block, self-attention, residual block.
//  - Decoder: per level num_res_blocks + 1 residual blocks, each on [h, skip] concatenated along channels, then
//    nearest 2x upsampling + 3x3 conv (except at the top level).
//  - Out: GroupNorm, SiLU, 3x3 conv to the image channels: the predicted noise.
// Time t enters as a sinusoidal embedding of size ch, through Linear(ch, 4ch), SiLU, Linear(4ch, 4ch). With
// n_classes > 0 a learned class embedding (n_classes + 1 rows; the last one means "no class", for classifier-free
// guidance) is added to it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/params.h"
#include "aigc/tensor.h"

namespace aigc {

struct UNetConfig {
  int64_t image_size = 28;  // divisible by 2^(levels - 1)
  int64_t channels = 1;
  int64_t ch = 32;                           // base channels
  std::vector<int64_t> ch_mult = {1, 2, 2};  // channels per level = ch * mult; one halving between levels
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attn_resolutions = {7};  // feature-map sizes that get self-attention after res blocks
  int64_t groups = 8;                           // GroupNorm groups (every channel count must divide)
  int64_t n_head = 1;
  float dropout = 0.1f;
  int64_t n_classes = 0;  // 0: unconditional
  // What the network outputs (diffusion.h): "eps" the noise (Ho et al.), "v" = sqrt(abar) eps - sqrt(1 - abar) x0
  // (Salimans & Ho) or "x0" the clean image.
  std::string prediction = "eps";
  std::string to_json() const;
  static UNetConfig from_json(const std::string& json);  // validates every field
  void validate() const;
};

class UNet {
 public:
  explicit UNet(const UNetConfig& cfg, uint64_t seed = 0);
  // x (B, C, S, S), t (B) f32 timesteps, labels (B) i32 in [0, n_classes] (n_classes = unconditional) or
  // undefined -> predicted noise (B, C, S, S). training enables dropout (mask drawn from dropout_seed).
  // Inference (not training, under NoGradGuard) keeps the activations in the blocked layout when ch is a
  // multiple of 16 (see Layout); last_forward_blocked() says whether the latest pass did.
  Tensor forward(const Tensor& x, const Tensor& t, const Tensor& labels, bool training, uint64_t dropout_seed = 0);
  // The seed of residual block k's dropout mask (k from 1, in forward order) in a forward pass given dropout_seed.
  static uint64_t block_dropout_seed(uint64_t dropout_seed, uint64_t k) { return dropout_seed * 1000003ull + k; }
  ParamStore& params() { return params_; }
  const UNetConfig& config() const { return cfg_; }
  bool last_forward_blocked() const { return last_forward_blocked_; }

 private:
  struct Conv {
    Tensor w, b;
    int64_t stride = 1, padding = 0;
  };
  struct Norm {
    Tensor w, b;
  };
  struct ResBlock {
    Norm norm1, norm2;
    Conv conv1, conv2, skip;  // skip.w undefined when in == out
    Tensor temb_w, temb_b;
  };
  struct AttnBlock {
    Norm norm;
    Tensor qkv_w, qkv_b, proj_w, proj_b;
  };
  struct Stage {  // a residual block, optionally followed by self-attention
    ResBlock res;
    bool has_attn = false;
    AttnBlock attn;
  };
  struct Level {
    std::vector<Stage> stages;
    bool has_resample = false;  // down (encoder) or up (decoder) at the end of the level
    Conv resample;
  };

  Conv add_conv(const std::string& name, int64_t in, int64_t out, int64_t k, int64_t stride = 1);
  Norm add_norm(const std::string& name, int64_t c);
  Stage add_stage(const std::string& name, int64_t in, int64_t out, bool attn);
  Tensor conv(const Conv& c, const Tensor& x, bool blocked_output = false) const;
  Tensor norm_act(const Norm& n, const Tensor& x) const;  // GroupNorm then SiLU
  Tensor res_block(const ResBlock& r, const Tensor& x, const Tensor& temb_act, bool training, uint64_t seed) const;
  Tensor attn_block(const AttnBlock& a, const Tensor& x) const;
  Tensor stage(const Stage& s, const Tensor& x, const Tensor& temb_act, bool training, uint64_t seed) const;
  void init_weights(uint64_t seed);

  UNetConfig cfg_;
  bool last_forward_blocked_ = false;
  ParamStore params_;
  Tensor temb1_w, temb1_b, temb2_w, temb2_b, class_emb_;
  Conv conv_in_, conv_out_;
  Norm norm_out_;
  std::vector<Level> down_, up_;
  Stage mid1_, mid2_;                   // mid1_ carries the middle attention
  std::vector<std::string> zero_init_;  // parameters that start at zero (last conv of each residual branch, ...)
};

}  // namespace aigc

// Options shared by several commands.
#include "command.h"

#include <CLI/CLI.hpp>

namespace aigc::cli {

namespace {
int g_threads = 0;  // 0: all cores
}

void add_threads(CLI::App* cmd) { cmd->add_option("--threads,-t", g_threads, "CPU threads (default: all cores)"); }
int threads() { return g_threads; }

void add_dtype(CLI::App* cmd, std::string& dtype) {
  cmd->add_option("--dtype", dtype,
                  "Weights for inference: f32, bf16 (half the bytes per token), q8_0, q4_0 or q4_1 (ggml's 8- and "
                  "4-bit blocks); default: the checkpoint's (a GGUF file's matrix type: q4_k runs as q4_1, q5_k and "
                  "q6_k as q8_0; else f32)")
      ->check(CLI::IsMember({"f32", "bf16", "q8_0", "q4_0", "q4_1"}));
}

void add_cache_type(CLI::App* cmd, DType& kv) {
  cmd->add_option_function<std::string>(
         "--cache-type", [&kv](const std::string& t) { kv = t == "f32" ? DType::F32 : DType::F16; },
         "KV cache: f16 (half the memory and the bytes a step reads at long contexts, as llama.cpp) or f32")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->default_str("f16");
}

void apply_dtype(GPT& model, const std::string& dtype) {
  if (dtype.empty()) return;
  const DType d = dtype == "bf16"   ? DType::BF16
                  : dtype == "q8_0" ? DType::Q8_0
                  : dtype == "q4_0" ? DType::Q4_0
                  : dtype == "q4_1" ? DType::Q4_1
                                    : DType::F32;
  // Already so (a GGUF file's own type, or Q4_1 from a Q4_K file's blocks): quantizing the f32 values again could
  // only lose what the file's blocks hold.
  if (model.inference_dtype() == d) return;
  model.set_inference_dtype(d);
}

void add_sampler(CLI::App* cmd, SamplerOptions& so) {
  cmd->add_option("--sampler", so.sampler,
                  "Diffusion: ddim (--steps steps), ddpm (ancestral, all T steps), or an ODE solver over noise "
                  "levels: euler, euler-a (ancestral), heun (2 model calls per step), dpm++2m (DPM-Solver++ 2M)")
      ->check(CLI::IsMember({"ddim", "ddpm", "euler", "euler-a", "heun", "dpm++2m"}))
      ->capture_default_str();
  cmd->add_option("--steps", so.steps, "Diffusion, all but ddpm: denoising steps")->capture_default_str();
  cmd->add_option("--sigmas", so.spacing,
                  "Diffusion, euler/euler-a/heun/dpm++2m: noise levels at DDIM's timesteps (uniform) or Karras "
                  "et al.'s rho = 7 spacing (karras)")
      ->check(CLI::IsMember({"uniform", "karras"}))
      ->capture_default_str();
  cmd->add_option("--eta", so.eta, "Diffusion, DDIM: 0 deterministic, 1 as much noise as DDPM")->capture_default_str();
  cmd->add_option("--variance", so.variance, "Diffusion, DDPM: sigma_t^2 = posterior variance or beta_t")
      ->check(CLI::IsMember({"posterior", "beta"}))
      ->capture_default_str();
  cmd->add_option("--guidance", so.guidance,
                  "Diffusion, conditional models: classifier-free guidance w, eps = (1 + w) eps(x, class) - "
                  "w eps(x); 0 = plain conditional sampling")
      ->capture_default_str();
}

}  // namespace aigc::cli

// The commands of the `aigc` CLI, one file each. A command adds its subcommand (options, help, an example) to
// the app and returns how to run it; main() only parses and runs the one chosen.
#pragma once
#include <functional>

#include "aigc/diffusion.h"
#include "aigc/models/gpt.h"

namespace CLI {
class App;
}

namespace aigc::cli {

struct Command {
  CLI::App* app = nullptr;    // the subcommand
  std::function<void()> run;  // after parsing, when the subcommand was given
};

Command train_command(CLI::App& app);
Command generate_command(CLI::App& app);
Command eval_command(CLI::App& app);
Command sample_command(CLI::App& app);
Command fid_command(CLI::App& app);
Command serve_command(CLI::App& app);
Command tokenize_command(CLI::App& app);
Command tokenizer_command(CLI::App& app);
Command convert_command(CLI::App& app);   // `aigc convert` (GGUF)
Command quantize_command(CLI::App& app);  // `aigc quantize` (GGUF, quantized)  // `aigc tokenizer train`

// --threads/-t: CPU threads for the kernels, applied before the command runs.
void add_threads(CLI::App* cmd);
int threads();
// --dtype for inference weights (generate, eval).
void add_dtype(CLI::App* cmd, std::string& dtype);
// --cache-type f16|f32: the KV cache's type (f16, llama.cpp's default: half the memory per position).
void add_cache_type(CLI::App* cmd, DType& kv);
void apply_dtype(GPT& model, const std::string& dtype);  // "" keeps the model's
// The diffusion sampler's options (sample, fid).
void add_sampler(CLI::App* cmd, SamplerOptions& so);

}  // namespace aigc::cli

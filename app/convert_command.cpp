// `aigc convert` and `aigc quantize`: a GPT or Llama model (aigc checkpoint, Hugging Face directory or GGUF) to a GGUF
// file that llama.cpp and other ggml engines run, with its matrices in f32, f16, bf16, q8_0, q4_0 or a k-quant.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "command.h"

namespace aigc::cli {

namespace {

struct ConvertArgs {
  std::string ckpt, out, type, name;
};

void add_convert_options(CLI::App* cmd, ConvertArgs& a, const char* type_help) {
  cmd->add_option("--ckpt,--model,-m", a.ckpt,
                  "aigc checkpoint, GGUF file, or Hugging Face directory (GPT-2, Llama, Mistral, Qwen2)")
      ->required();
  cmd->add_option("--out,-o", a.out, "Output .gguf file")->required();
  cmd->add_option("--type", a.type, type_help)->capture_default_str();
  cmd->add_option("--name", a.name, "general.name in the file (default: the output's file name)");
}

void run_convert(const ConvertArgs& a) {
  const std::optional<GgufTypes> type = GgufTypes::from_name(a.type);
  AIGC_CHECK(type, "--type must be f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k, q4_k_m or q5_k_m, got \"" +
                       a.type + "\"");
  auto t0 = std::chrono::steady_clock::now();
  LoadedModel lm = load_model(a.ckpt);
  const std::string name = a.name.empty() ? std::filesystem::path(a.out).stem().string() : a.name;
  save_gguf(a.out, *lm.model, *lm.tokenizer, *type, name);
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The types the matrices got: rows that do not fill a type's blocks fall back to another (q8_0 for k-quants).
  std::map<std::string, int> count;
  const GgufReader written(a.out);  // named: a temporary would be gone before the loop's body
  for (const GgufTensorInfo& t : written.tensors())
    if (t.dims.size() == 2) count[ggml_type_info(uint32_t(t.type))->name]++;
  std::string types;
  for (const auto& [name, n] : count) types += (types.empty() ? "" : ", ") + std::to_string(n) + " " + name;
  std::fprintf(stderr, "wrote %s: %lld parameters, %s matrices (%s), %.1f MB in %.1fs\n", a.out.c_str(),
               (long long)lm.model->num_params(), a.type.c_str(), types.c_str(),
               double(std::filesystem::file_size(a.out)) / 1e6, dt);
}

}  // namespace

Command convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  a->type = "f32";
  CLI::App* cmd = app.add_subcommand(
      "convert", "Write a GPT or Llama model as a GGUF file (llama.cpp's \"gpt2\" or \"llama\" architecture)");
  add_convert_options(cmd, *a,
                      "Matrix type: f32, f16, bf16, q8_0 (8-bit blocks), q4_0 (4-bit blocks), the k-quants q4_k, "
                      "q5_k, q6_k, or q4_k_m / q5_k_m (llama.cpp's mixes with q6_k); vectors stay f32");
  cmd->footer(
      "Examples:\n"
      "  aigc convert --ckpt runs/gpt/ckpt.safetensors --out gpt.gguf\n"
      "  aigc convert --ckpt gpt2-hf/ --type f16 --out gpt2-f16.gguf   # a Hugging Face GPT-2 directory\n"
      "  aigc generate --model gpt.gguf -p \"The \"");
  return {cmd, [a] { run_convert(*a); }};
}

Command quantize_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  a->type = "q8_0";
  CLI::App* cmd = app.add_subcommand("quantize", "Write a GPT model as a GGUF file with quantized matrices");
  add_convert_options(cmd, *a,
                      "q8_0 (8-bit blocks of 32, ~1.1 bytes/weight), q4_0 (4-bit, ~0.56), q4_k_m (4-bit k-quants "
                      "with 6-bit ones where they matter most, ~0.6), q5_k_m, q4_k, q5_k, q6_k; also f16, bf16");
  cmd->footer(
      "Examples:\n"
      "  aigc quantize --model runs/gpt/ckpt.safetensors --type q4_0 --out gpt-q4_0.gguf\n"
      "  aigc quantize --model runs/llama/ckpt.safetensors --type q4_k_m --out llama-q4_k_m.gguf\n"
      "  aigc quantize --model gpt-f32.gguf --out gpt-q8_0.gguf");
  return {cmd, [a] { run_convert(*a); }};
}

}  // namespace aigc::cli

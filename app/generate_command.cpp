// `aigc generate`: text from a checkpoint, streamed to stdout as it is sampled.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>

#include "aigc/checkpoint.h"
#include "aigc/generate.h"
#include "command.h"

namespace aigc::cli {

namespace {
struct GenerateArgs {
  std::string ckpt, prompt, dtype;
  GenerateOptions opt;
  int64_t seed = -1;
};
}  // namespace

Command generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a checkpoint (streams tokens as they come)");
  cmd->add_option("--ckpt,--model,-m", a->ckpt,
                  "aigc checkpoint, GGUF file (gpt2, llama), or Hugging Face directory (GPT-2, Llama, Mistral, Qwen2)")
      ->required();
  cmd->add_option("--prompt,-p", a->prompt, "Text to continue");
  cmd->add_option("--max-tokens,-n", a->opt.max_tokens, "Tokens to generate")->capture_default_str();
  SamplingOptions& s = a->opt.sampling;
  cmd->add_option("--temperature,--temp", s.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  cmd->add_option("--min-p", s.min_p, "Drop tokens below min-p x the top probability (0: off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repeat_penalty, "Penalize recent tokens (1: off)")->capture_default_str();
  cmd->add_option("--repeat-last-n", s.repeat_last_n, "Window for --repeat-penalty (-1: all, 0: off)")
      ->capture_default_str();
  cmd->add_option("--seed,-s", a->seed, "Sampling seed (-1: random)")->capture_default_str();
  cmd->add_option("--stop", a->opt.stop, "Stop when this text is produced (repeatable)");
  add_dtype(cmd, a->dtype);
  a->opt.kv_cache = DType::F16;
  add_cache_type(cmd, a->opt.kv_cache);
  add_threads(cmd);
  cmd->footer(
      "Examples:\n"
      "  aigc generate --ckpt runs/gpt/ckpt.safetensors -p \"The \" -n 200 --temp 0.8 --seed 1\n"
      "  aigc generate --ckpt gpt2/ -p \"Hello\" --stop \"\\n\" --dtype bf16   # a Hugging Face GPT-2 directory");
  return {cmd, [a] {
            LoadedModel lm = load_model(a->ckpt, a->dtype.empty());  // no other dtype: the file's blocks as they are
            apply_dtype(*lm.model, a->dtype);
            GenerateOptions opt = a->opt;
            opt.sampling.seed = a->seed >= 0 ? uint64_t(a->seed) : std::random_device{}();
            std::cout << a->prompt << std::flush;
            GenerateResult r = generate(*lm.model, *lm.tokenizer, a->prompt, opt,
                                        [](const std::string& t) { std::cout << t << std::flush; });
            std::cout << std::endl;
            // A full context drops its first half and reads the rest again: that prefill is part of the decoding
            // time, so a tokens/s figure that includes it says so.
            char shifts[160] = "";
            if (r.context_shifts > 0)
              std::snprintf(shifts, sizeof shifts,
                            "; context full %d time%s: its last half prefilled again, %.2fs of the %.2fs",
                            r.context_shifts, r.context_shifts == 1 ? "" : "s", r.shift_s, r.decode_s);
            std::fprintf(stderr,
                         "[%d prompt tokens in %.2fs (%.1f tok/s), %d generated in %.2fs (%.1f tok/s), stop: %s%s]\n",
                         r.n_prompt, r.prefill_s, r.n_prompt / std::max(r.prefill_s, 1e-9), r.n_generated, r.decode_s,
                         r.n_generated / std::max(r.decode_s, 1e-9), r.stop_reason.c_str(), shifts);
          }};
}

}  // namespace aigc::cli

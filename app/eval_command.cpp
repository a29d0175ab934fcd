// `aigc eval`: mean next-token cross-entropy and perplexity of a checkpoint on a text.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "aigc/checkpoint.h"
#include "aigc/evaluate.h"
#include "aigc/text_data.h"
#include "command.h"

namespace aigc::cli {

Command eval_command(CLI::App& app) {
  struct Args {
    std::string ckpt, data, dtype;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("eval", "Mean next-token cross-entropy and perplexity of a checkpoint on a text file");
  cmd->add_option("--ckpt,--model,-m", a->ckpt,
                  "aigc checkpoint, GGUF file (gpt2, llama), or Hugging Face directory (GPT-2, Llama, Mistral, Qwen2)")
      ->required();
  cmd->add_option("--data", a->data, "Text file, or a built-in corpus (fortune files are cleaned as in training)")
      ->required();
  add_dtype(cmd, a->dtype);
  add_threads(cmd);
  cmd->footer("Example:\n  aigc eval --ckpt runs/gpt/ckpt.safetensors --data poems");
  return {cmd, [a] {
            LoadedModel lm = load_model(a->ckpt, a->dtype.empty());  // no other dtype: the file's blocks as they are
            apply_dtype(*lm.model, a->dtype);
            std::vector<int> ids = lm.tokenizer->encode(read_text_corpus(resolve_corpus({a->data})));
            auto t0 = std::chrono::steady_clock::now();
            EvalResult r = evaluate_tokens(*lm.model, std::vector<int32_t>(ids.begin(), ids.end()));
            double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "%lld tokens in %.2fs (%.1f tok/s)\n", (long long)r.tokens, dt, double(r.tokens) / dt);
            std::printf("loss %.6f perplexity %.4f\n", r.loss, r.perplexity);
          }};
}

}  // namespace aigc::cli

// aigc: the command line. Each command lives in its own file (command.h); this only parses and runs one.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <vector>

#include "aigc/backend.h"
#include "aigc/error.h"
#include "command.h"

int main(int argc, char** argv) {
  using namespace aigc::cli;
  CLI::App app{
      "aigc: train and run generative models on your own hardware: GPT language models (text), DCGAN and DDPM "
      "diffusion models (images)"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  aigc train gpt --out runs/gpt                               # a small GPT on the built-in fortunes corpus\n"
      "  aigc generate --ckpt runs/gpt/ckpt.safetensors -p \"The \" -n 200\n"
      "  aigc train ddpm --steps 4000 --out runs/ddpm                # diffusion on Fashion-MNIST\n"
      "  aigc sample --ckpt runs/ddpm/ckpt.safetensors --steps 50 --n 64 --out grid.png\n"
      "  aigc convert --ckpt runs/gpt/ckpt.safetensors --type q8_0 --out gpt.gguf   # for llama.cpp\n"
      "  aigc serve --ckpt runs/gpt/ckpt.safetensors --image-ckpt runs/ddpm/ckpt.safetensors\n"
      "Run `aigc COMMAND --help` for each command's options.");
  const std::vector<Command> commands = {
      train_command(app), generate_command(app), eval_command(app),      sample_command(app),  fid_command(app),
      serve_command(app), tokenize_command(app), tokenizer_command(app), convert_command(app), quantize_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    aigc::set_num_threads(threads());
    for (const Command& c : commands)
      if (c.app->parsed()) c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

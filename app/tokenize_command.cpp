// `aigc tokenize` (a text's token ids) and `aigc tokenizer train` (a byte-level BPE tokenizer).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>

#include "aigc/file_util.h"
#include "aigc/text_data.h"
#include "aigc/tokenizer.h"
#include "command.h"

namespace aigc::cli {

Command tokenize_command(CLI::App& app) {
  struct Args {
    std::string tokenizer, text_file;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text file, space-separated, on one line");
  cmd->add_option("--tokenizer", a->tokenizer, "bytes, or a BPE tokenizer directory / vocab file")->required();
  cmd->add_option("--text-file", a->text_file, "Input text")->required();
  cmd->footer("Example:\n  aigc tokenize --tokenizer runs/bpe --text-file notes.txt");
  return {cmd, [a] {
            std::string text = read_file(a->text_file);
            std::unique_ptr<Tokenizer> t = load_tokenizer_spec(a->tokenizer, text);
            std::vector<int> ids = t->encode(text);
            std::string line;
            for (size_t i = 0; i < ids.size(); i++) line += (i ? " " : "") + std::to_string(ids[i]);
            std::printf("%s\n", line.c_str());
          }};
}

Command tokenizer_command(CLI::App& app) {
  struct Args {
    std::vector<std::string> data;
    int vocab_size = 4096;
    std::string out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("tokenizer", "Tokenizer tools");
  cmd->require_subcommand(1);
  CLI::App* train = cmd->add_subcommand("train", "Train a byte-level BPE tokenizer (GPT-2 format output)");
  train->add_option("--data", a->data, "Text file(s) (default: the built-in corpus)");
  train->add_option("--vocab-size", a->vocab_size, "Vocabulary size (>= 256)")->capture_default_str();
  train->add_option("--out", a->out, "Output directory for vocab.json + merges.txt")->required();
  train->footer("Example:\n  aigc tokenizer train --data poems --vocab-size 2048 --out runs/bpe");
  cmd->footer("Example:\n  aigc tokenizer train --vocab-size 4096 --out runs/bpe");
  return {cmd, [a] {
            std::string text = read_text_corpus(resolve_corpus(a->data));
            auto t0 = std::chrono::steady_clock::now();
            std::unique_ptr<Tokenizer> t = train_bpe_tokenizer(text, a->vocab_size, [](int done, int total) {
              if (done % 256 == 0 || done == total) std::fprintf(stderr, "\rmerges %d/%d", done, total);
            });
            save_bpe_tokenizer(*t, a->out);
            double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "\ntrained %d-token BPE on %zu bytes in %.1fs; wrote %s/vocab.json, merges.txt\n",
                         t->vocab_size(), text.size(), dt, a->out.c_str());
          }};
}

}  // namespace aigc::cli

// Checkpoints: aigc's own safetensors files (weights + optional optimizer state, with the model config, the
// tokenizer and the training state in the metadata), and Hugging Face GPT-2 directories (read-only).
#pragma once
#include <memory>
#include <string>

#include "aigc/models/gpt.h"
#include "aigc/optim.h"
#include "aigc/tokenizer.h"

namespace aigc {

struct LoadedModel {
  std::unique_ptr<GPT> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string train_state;  // JSON, empty for Hugging Face directories
};

// Writes atomically: a run killed mid-save leaves the previous file at `path` intact.
void save_checkpoint(const std::string& path, GPT& model, const Tokenizer& tokenizer, Optimizer* optimizer,
                     const std::string& train_state_json);

// path: an aigc checkpoint file, or a directory with config.json + model.safetensors (+ vocab.json/merges.txt).
LoadedModel load_model(const std::string& path);

// Restores m, v and the step counter saved by save_checkpoint (for --resume).
void load_optimizer_state(const std::string& path, GPT& model, Optimizer& optimizer);

}  // namespace aigc

// Checkpoints: aigc's own safetensors files (weights + optional optimizer state, with the model config, the
// tokenizer and the training state in the metadata), and Hugging Face GPT-2 directories (read-only).
#pragma once
#include <memory>
#include <string>

#include "aigc/gguf.h"
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

// path: an aigc checkpoint file, a GGUF file, or a Hugging Face directory (load_hf_model). inference_only: a GGUF
// file's bf16 / q8_0 / q4_0 matrices are kept as their bytes only, without f32 copies (a model then takes about its
// file's memory; GPT::set_inference_blocks); the model cannot train, convert or be saved.
LoadedModel load_model(const std::string& path, bool inference_only = false);
// A Hugging Face directory: config.json (model_type gpt2, or llama / mistral), model.safetensors or the shards of
// model.safetensors.index.json (f32, f16 or bf16), and tokenizer.json or vocab.json + merges.txt.
LoadedModel load_hf_model(const std::string& dir);

// The matrices' types in a GGUF file: all `matrices`, or with `medium`, llama.cpp's "_M" recipe for a k-quant
// (q4_k_m, q5_k_m): Q6_K for the output head and for attn_v and ffn_down in about a third of the layers.
struct GgufTypes {
  GgufTypes(GgmlType matrices, bool medium = false) : matrices(matrices), medium(medium) {}
  GgmlType matrices;
  bool medium;
  // "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m" ("q4_k_s" and "q5_k_s"
  // are q4_k and q5_k; any case); nullopt otherwise.
  static std::optional<GgufTypes> from_name(const std::string& name);
};

// GGUF files in llama.cpp's "gpt2" (GPT-2-style models: pre-LN, GELU) and "llama" architectures. save_gguf
// writes matrices as `types` says (a matrix whose rows do not fit its type's blocks falls back to q8_0 for a
// k-quant, else f16) and vectors as f32; the tokenizer must be byte-level BPE, bytes, or a SentencePiece-form
// Hugging Face one. load_gguf_model converts every tensor to f32, except, with inference_only, the matrices in
// the file's bf16 / q8_0 / q4_0 / q4_1 type, which stay as they are (load_model). A file with k-quant matrices
// runs Q4_K ones as Q4_1 blocks and Q5_K / Q6_K ones as q8_0 (each converted from the file's bytes, with or without
// inference_only), and its q8_0 ones as they are.
void save_gguf(const std::string& path, GPT& model, const Tokenizer& tokenizer, GgufTypes types,
               const std::string& name);
LoadedModel load_gguf_model(const std::string& path, bool inference_only = false);
LoadedModel load_gguf_model(const GgufReader& file, bool inference_only = false);
// Whether the file starts with GGUF's magic.
bool is_gguf_file(const std::string& path);

// Restores m, v and the step counter saved by save_checkpoint (for --resume).
void load_optimizer_state(const std::string& path, GPT& model, Optimizer& optimizer);

}  // namespace aigc

// `aigc serve`: an HTTP server with OpenAI's API shapes over aigc's models (cpp-httplib underneath).
//   POST /v1/completions, /v1/chat/completions (stream: true -> Server-Sent Events), /v1/images/generations
//   GET /v1/models, /health, /metrics (Prometheus text); POST /tokenize, /detokenize
//   GET /runs, /runs/NAME/metrics (training curves for the playground); GET / (the playground)
// Errors are OpenAI-style {"error": {...}} bodies with the matching 4xx/5xx status.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "aigc/checkpoint.h"
#include "aigc/image_model.h"

namespace aigc::serve {

// Positions per slot when --ctx is 0, for models whose context is longer (as llama.cpp's server defaults to 4096).
constexpr int kDefaultCtx = 4096;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (see Server::bind)
  std::string api_key;              // when set, every route but /health and the playground needs "Bearer KEY"
  int parallel = 4;                 // slots: requests decoded together
  int ctx = 0;                      // positions per slot; 0 = the model's context, at most kDefaultCtx
  DType kv_cache = DType::F32;      // the KV cache's type: F32 or F16
  int max_tokens_cap = 4096;        // the largest max_tokens a request may ask for
  int max_request_tokens = 16384;   // the most tokens one request may ask for: choices x max_tokens
  int max_queue = -1;               // text jobs (and image requests) that may wait; more get 429. -1: 4 x parallel
  std::string cors_origin;          // when set, browsers from this origin ("*": any) may call the API
  size_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  double timeout_s = 300;           // per request, queueing included
  std::string runs_dir = "runs";    // training runs whose metrics the playground charts
  std::string model_name;           // the text model's id (default: from the checkpoint path)
  std::string image_model_name;     // the image model's id
  bool quiet = false;               // no request log on stderr
};

class Server {
 public:
  Server(LoadedModel text, std::unique_ptr<ImageModel> image, ServerOptions opt);
  ~Server();
  int bind();  // binds host:port, returns the port; then run()
  void run();  // serves until shutdown()
  // Answers raw request bytes as one connection would (tests and fuzzing: no socket).
  std::string answer_bytes(const std::string& request);
  // Stops taking requests (503), lets in-flight ones finish (at most drain_limit), then stops run().
  void shutdown(std::chrono::milliseconds drain_limit);

  struct Impl;  // server_impl.h (named here so the server's own files can reach it)

 private:
  std::unique_ptr<Impl> impl_;
};

// A model id from a checkpoint path: the file's stem, or its directory's name for ".../ckpt.safetensors".
std::string model_id_from_path(const std::string& path);

}  // namespace aigc::serve

// `aigc serve`: the HTTP server (OpenAI's API and the playground), its options, and the run loop (signals,
// draining).
#include <pthread.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

#include "aigc/checkpoint.h"
#include "aigc/error.h"
#include "aigc/image_model.h"
#include "command.h"
#include "server.h"

namespace aigc::cli {

namespace {

struct ServeArgs {
  std::string ckpt, image_ckpt, dtype;
  int drain_s = 30;
  serve::ServerOptions server;
};

void add_serve_options(CLI::App* cmd, ServeArgs& a) {
  serve::ServerOptions& o = a.server;
  cmd->add_option("--ckpt,--model,-m", a.ckpt,
                  "Text model: an aigc checkpoint, a GGUF file (gpt2, llama) or a Hugging Face directory (GPT-2, "
                  "Llama, Mistral, Qwen2)")
      ->required();
  cmd->add_option("--image-ckpt", a.image_ckpt, "Image model for /v1/images/generations (DCGAN or diffusion)");
  cmd->add_option("--host", o.host, "Address to listen on (loopback unless you say otherwise)")->capture_default_str();
  cmd->add_option("--port", o.port, "Port (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' (not for /health or the playground)");
  cmd->add_option("--parallel", o.parallel, "Slots: requests decoded together in one batch per step")
      ->capture_default_str();
  cmd->add_option("--ctx,-c", o.ctx, "Tokens per slot, prompt + completion (0: the model's context, at most 4096)")
      ->capture_default_str();
  cmd->add_option("--max-tokens-cap", o.max_tokens_cap, "Largest max_tokens a request may ask for")
      ->capture_default_str();
  cmd->add_option("--max-request-tokens", o.max_request_tokens,
                  "Most tokens one request may ask for: choices (n x prompts) x max_tokens (more: 400)")
      ->capture_default_str();
  cmd->add_option("--max-queue", o.max_queue,
                  "Text generations (and image requests) that may wait for a slot; more get 429 with Retry-After "
                  "(default: 4 x --parallel)");
  cmd->add_option("--cors-origin", o.cors_origin,
                  "Let browser pages from this origin call the API (\"*\": any origin); off by default");
  cmd->add_option("--timeout", o.timeout_s, "Seconds a request may take, queueing included")->capture_default_str();
  cmd->add_option("--max-body", o.max_body_bytes, "Largest request body in bytes (larger: 413)")->capture_default_str();
  cmd->add_option("--runs", o.runs_dir, "Directory of training runs charted by the playground")->capture_default_str();
  cmd->add_option("--model-name", o.model_name, "Text model id in the API (default: from the checkpoint path)");
  cmd->add_option("--drain", a.drain_s, "On SIGTERM/SIGINT: seconds to let running requests finish")
      ->capture_default_str();
  add_dtype(cmd, a.dtype);
  o.kv_cache = DType::F16;
  add_cache_type(cmd, o.kv_cache);
  cmd->add_flag("--quiet,-q", o.quiet, "No request log on stderr");
  cmd->footer(
      "Examples:\n"
      "  aigc serve --ckpt runs/gpt/ckpt.safetensors --image-ckpt runs/ddpm/ckpt.safetensors --port 8080\n"
      "  aigc serve --ckpt gpt2/ --parallel 8 --api-key secret --cors-origin https://example.org");
}

void serve(ServeArgs a) {
  // SIGTERM and SIGINT are taken by one thread with sigwait (blocked everywhere else, so every thread created
  // from here on inherits the mask); it drains and stops the server. A vanished client must not kill us: no SIGPIPE.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  LoadedModel text = load_model(a.ckpt, a.dtype.empty());  // no other dtype: the file's blocks as they are
  apply_dtype(*text.model, a.dtype);
  if (a.server.model_name.empty()) a.server.model_name = serve::model_id_from_path(a.ckpt);
  std::unique_ptr<ImageModel> image;
  if (!a.image_ckpt.empty()) {
    image = ImageModel::load(a.image_ckpt);
    a.server.image_model_name = serve::model_id_from_path(a.image_ckpt);
  }
  const std::string host = a.server.host, name = a.server.model_name, image_name = a.server.image_model_name;
  const int parallel = a.server.parallel;
  serve::Server server(std::move(text), std::move(image), a.server);
  const int port = server.bind();
  std::fprintf(stderr, "aigc serve: text model '%s'%s, %d slots; http://%s:%d/ (playground), API under /v1\n",
               name.c_str(), image_name.empty() ? "" : (", image model '" + image_name + "'").c_str(), parallel,
               host.c_str(), port);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "aigc serve: %s, finishing running requests (at most %d s)\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", a.drain_s);
    server.shutdown(std::chrono::seconds(a.drain_s));
  });
  server.run();
  waiter.join();
  std::fprintf(stderr, "aigc serve: stopped\n");
}

}  // namespace

Command serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd =
      app.add_subcommand("serve", "HTTP server with OpenAI's API (completions, chat, images) and a playground");
  add_serve_options(cmd, *a);
  add_threads(cmd);
  return {cmd, [a] { serve(*a); }};
}

}  // namespace aigc::cli

// `aigc serve`: its command-line options and the run loop (signals, draining).
#pragma once
#include <string>

#include "server.h"

namespace CLI {
class App;
}

namespace aigc::cli {

struct ServeArgs {
  std::string ckpt, image_ckpt, dtype = "f32";
  int drain_s = 30;
  serve::ServerOptions server;
};
// Adds the `serve` subcommand's options to cmd (threads are added by the caller, as for other commands).
void add_serve_options(CLI::App* cmd, ServeArgs& a);
void serve(ServeArgs a);

}  // namespace aigc::cli

// The HTTP layer under `aigc serve`: cpp-httplib's request parser and router, with connections driven by aigc.
// Owning the connection loop gives three things httplib's own loop does not:
//  - a handler can ask whether its client is still there (client_gone), so a non-streamed request whose client
//    hung up is cancelled instead of computed for nobody;
//  - a handler can have the connection closed after its answer (close_after_answer), e.g. when the rest of an
//    oversized body is still unread;
//  - the whole stack (parser, routes, handlers) runs on bytes in memory (answer_bytes), for tests and fuzzing.
#pragma once
#include <httplib.h>

#include <string>

namespace aigc::serve {

class HttpCore : public httplib::Server {
 public:
  // Feeds `request` (one or more pipelined HTTP requests) through the parser and routes as one connection would,
  // and returns every byte the server wrote back. At most `max_requests` are answered.
  std::string answer_bytes(const std::string& request, int max_requests = 8);

  // From inside a handler or a content provider: true when the client has closed its side of the connection
  // (always false for answer_bytes). Cheap: one poll and at most a one-byte peek. A client that half-closes
  // after sending looks the same as one that left: non-streamed work for it is cancelled.
  static bool client_gone();
  // From inside a handler: close the connection once this answer is written (it says `Connection: close`).
  static void close_after_answer();
  static bool closing();

 private:
  bool process_and_close_socket(socket_t sock) override;
};

}  // namespace aigc::serve

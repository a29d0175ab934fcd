// Helpers for the `aigc serve` tests: a tiny model, a server on a free loopback port, requests and SSE reads.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "aigc/checkpoint.h"
#include "aigc/image_model.h"
#include "server.h"

namespace aigc::testing {

using json = nlohmann::json;

// A small random-weight GPT over bytes: fast, and its greedy output is a fixed function of the prompt.
inline LoadedModel tiny_model(int64_t n_embd = 32, int64_t block_size = 96) {
  GPTConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = n_embd, c.block_size = block_size, c.vocab_size = 256;
  LoadedModel m;
  m.model = std::make_unique<GPT>(c);
  m.model->init_weights(3);
  m.tokenizer = make_bytes_tokenizer();
  return m;
}

// A model slow enough for tests whose jobs must outlast a client, a timeout or the start of other clients, and
// fast enough for the jobs those tests wait on to finish within the client's 30 s. Optimized builds decode the
// 256-wide model at 0.1 ms a token, so 2,000 tokens could end before a client left; there, 2 layers of 768 read
// about 57 MB of fp32 weights a token, a pace set by memory bandwidth (2.4 ms a token on the 2-core CI machine).
// The unoptimized sanitizer build decodes an order of magnitude slower, and there the 256-wide model paces them.
inline LoadedModel paced_model() {
#if defined(__OPTIMIZE__)
  return tiny_model(768, 2048);
#else
  return tiny_model(256, 2048);
#endif
}

class Running {
 public:
  explicit Running(serve::ServerOptions o = {}, LoadedModel m = tiny_model(),
                   std::unique_ptr<ImageModel> image = nullptr) {
    o.port = 0, o.quiet = true, o.model_name = "tiny", o.image_model_name = "gan";
    server_ = std::make_unique<serve::Server>(std::move(m), std::move(image), o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~Running() { stop(); }
  void stop(std::chrono::milliseconds drain = std::chrono::seconds(5)) {
    if (!thread_.joinable()) return;
    server_->shutdown(drain);
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30, 0);
    return c;
  }
  int port() const { return port_; }
  serve::Server& server() { return *server_; }

 private:
  std::unique_ptr<serve::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

inline json post(const Running& s, const std::string& path, const json& body, int expect = 200) {
  auto r = s.client().Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return {};
  EXPECT_EQ(r->status, expect) << path << " " << body.dump() << " -> " << r->body;
  return json::parse(r->body);
}

// Posts a streaming request and returns the SSE events' data fields; keep(count) false ends the read early.
inline std::vector<std::string> stream(const Running& s, const std::string& path, const json& body,
                                       std::function<bool(size_t)> keep = {}) {
  httplib::Request req;
  req.method = "POST", req.path = path, req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string raw;
  std::vector<std::string> events;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    raw.append(d, n);
    for (size_t end; (end = raw.find("\n\n")) != std::string::npos; raw.erase(0, end + 2)) {
      const std::string ev = raw.substr(0, end);
      if (ev.rfind(":", 0) == 0) continue;  // an SSE comment (keep-alive probe)
      EXPECT_EQ(ev.rfind("data: ", 0), 0u) << "not an SSE data line: " << ev;
      events.push_back(ev.substr(6));
    }
    return !keep || keep(events.size());
  };
  auto r = s.client().send(req);
  if (!keep) {
    EXPECT_TRUE(r);
    if (r) {
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
    }
    EXPECT_TRUE(raw.empty()) << "an unterminated event: " << raw;
  }
  return events;
}

// Text of a streamed completion; checks the framing: JSON chunks of one id, one end per choice, then [DONE].
inline std::string streamed_text(const std::vector<std::string>& events, bool chat) {
  EXPECT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text, id;
  int ends = 0;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    json j = json::parse(events[i]);
    EXPECT_EQ(j["object"], chat ? "chat.completion.chunk" : "text_completion");
    if (id.empty()) id = j["id"];
    EXPECT_EQ(j["id"], id);
    const json& c = j["choices"][0];
    if (!c["finish_reason"].is_null()) {
      ends++;
      EXPECT_EQ(i + 2, events.size()) << "text after the end";
    }
    text += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
  }
  EXPECT_EQ(ends, 1);
  return text;
}

inline std::string metric(const Running& s, const std::string& name) {
  auto r = s.client().Get("/metrics");
  const size_t at = r->body.find("\n" + name + " ");
  return at == std::string::npos
             ? ""
             : r->body.substr(at + name.size() + 2, r->body.find('\n', at + 1) - at - name.size() - 2);
}

// Sends raw bytes to 127.0.0.1:port (optionally in pieces, `gap` apart) and returns what comes back until the server
// closes the connection or `wait` passes without a byte. For requests no HTTP client would send.
inline std::string raw_exchange(int port, const std::vector<std::string>& pieces,
                                std::chrono::milliseconds wait = std::chrono::milliseconds(2000),
                                std::chrono::milliseconds gap = std::chrono::milliseconds(0)) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET, a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    for (const std::string& p : pieces) {
      if (::send(fd, p.data(), p.size(), MSG_NOSIGNAL) < 0) break;
      if (gap.count()) std::this_thread::sleep_for(gap);
    }
    char buf[4096];
    for (pollfd pf{fd, POLLIN, 0}; ::poll(&pf, 1, int(wait.count())) > 0;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
  }
  ::close(fd);
  return out;
}

// The status code of the first response in raw bytes ("HTTP/1.1 400 ..."), or 0.
inline int raw_status(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0;
}

}  // namespace aigc::testing

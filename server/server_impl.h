// The inside of `aigc serve`, shared by its three files: server.cpp (the HTTP gate: routes, auth, body limits,
// errors, log, metrics, lifecycle), text_routes.cpp (completions and chat) and image_routes.cpp (images).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "engine.h"
#include "http_core.h"
#include "openai.h"
#include "server.h"

namespace aigc::serve {

using Clock = std::chrono::steady_clock;

void send_json(httplib::Response& res, int status, const json& body);
const char* error_type_for(int status);
std::string random_id(const char* prefix);
int64_t unix_now();

struct Server::Impl {
  ServerOptions opt;
  LoadedModel text;
  std::unique_ptr<ImageModel> image;
  Limits limits;
  std::unique_ptr<TextEngine> engine;
  HttpCore http;
  // Requests being answered (a stream counts until its last byte is sent): shutdown waits for them.
  std::atomic<int> in_flight{0};
  struct InFlight {
    std::atomic<int>& n;
    explicit InFlight(std::atomic<int>& n) : n(n) { n++; }
    ~InFlight() { n--; }
  };
  const Clock::time_point started = Clock::now();

  // Images: one generates at a time; at most opt.max_queue wait for their turn.
  std::mutex image_mu;
  std::condition_variable image_cv;
  bool image_running = false;
  int image_waiting = 0;
  double image_mean_s = 0;  // recent mean seconds one image request computes (guarded by image_mu)
  std::atomic<uint64_t> images_generated{0}, image_requests_refused{0}, image_requests_abandoned{0};
  std::atomic<double> image_max_wait_s{0};

  // Metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (route, status) -> count

  Impl(LoadedModel t, std::unique_ptr<ImageModel> img, ServerOptions o);

  // server.cpp
  void routes();
  bool gate(const httplib::Request& req, httplib::Response& res);  // true: answered here, before any body is read
  bool authorized(const httplib::Request& req) const;
  using BodyHandler = std::function<void(const std::string& body, const httplib::Request&, httplib::Response&)>;
  void post(const std::string& path, BodyHandler h);  // a POST route whose body is read within --max-body
  json parse_body(const std::string& body) const;
  void log(const httplib::Request& req, const httplib::Response& res);
  std::string metrics();
  void list_runs(httplib::Response& res);
  void run_metrics(const std::string& name, httplib::Response& res);
  // 429 with Retry-After, for a full queue.
  [[noreturn]] void queue_full(httplib::Response& res, double retry_after_s, const std::string& what);

  // text_routes.cpp
  void complete(const std::string& body, httplib::Response& res, bool chat);
  std::optional<ApiError> failure_of(const JobResult& jr) const;

  // image_routes.cpp
  void generate_images(const std::string& body, httplib::Response& res);
};

}  // namespace aigc::serve

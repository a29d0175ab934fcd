// A bounded load generator for `aigc serve` on loopback: C clients, each sending R streaming completions one
// after another. Reports aggregate generated tokens/s (the server's own token counter over the run, read from
// /metrics), and the time to first token (request sent -> first text event) at p50 and p99.
//
//   aigc_serve_load PORT CLIENTS REQUESTS_PER_CLIENT MAX_TOKENS [PROMPT]
//
// Prints one JSON line: {"clients", "requests", "errors", "tokens", "seconds", "tokens_per_s", "ttft_p50_ms",
// "ttft_p99_ms"}.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;

namespace {

double generated_tokens(int port) {
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/metrics");
  if (!r || r->status != 200) return -1;
  const std::string key = "\naigc_generated_tokens_total ";
  const size_t at = r->body.find(key);
  return at == std::string::npos ? -1 : std::stod(r->body.substr(at + key.size()));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s PORT CLIENTS REQUESTS_PER_CLIENT MAX_TOKENS [PROMPT]\n", argv[0]);
    return 2;
  }
  const int port = std::atoi(argv[1]), clients = std::atoi(argv[2]), per_client = std::atoi(argv[3]);
  const int max_tokens = std::atoi(argv[4]);
  const std::string prompt = argc > 5 ? argv[5] : "The history of the city begins";
  std::mutex mu;
  std::vector<double> ttft_ms;
  std::atomic<int> errors{0};

  const double tokens0 = generated_tokens(port);
  if (tokens0 < 0) {
    std::fprintf(stderr, "no aigc server answering /metrics on 127.0.0.1:%d\n", port);
    return 1;
  }
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; c++)
    threads.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_read_timeout(600, 0);
      for (int r = 0; r < per_client; r++) {
        // Sampled (seeded per request), with no stop: every request runs its max_tokens unless it meets end-of-text.
        nlohmann::json body = {{"prompt", prompt},
                               {"max_tokens", max_tokens},
                               {"stream", true},
                               {"temperature", 0.8},
                               {"seed", c * 1000 + r}};
        httplib::Request req;
        req.method = "POST", req.path = "/v1/completions", req.body = body.dump();
        req.set_header("Content-Type", "application/json");
        const auto sent = Clock::now();
        bool first = true;
        req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
          const std::string chunk(d, n);
          const size_t at = chunk.find("\"text\":\"");
          if (first && at != std::string::npos && chunk.compare(at + 8, 1, "\"") != 0) {  // non-empty text
            first = false;
            std::lock_guard<std::mutex> lk(mu);
            ttft_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
          }
          return true;
        };
        auto res = cli.send(req);
        if (!res || res->status != 200) errors++;
      }
    });
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double tokens = generated_tokens(port) - tokens0;
  nlohmann::json out = {{"clients", clients},
                        {"requests", clients * per_client},
                        {"errors", errors.load()},
                        {"tokens", tokens},
                        {"seconds", seconds},
                        {"tokens_per_s", tokens / seconds},
                        {"ttft_p50_ms", percentile(ttft_ms, 0.5)},
                        {"ttft_p99_ms", percentile(ttft_ms, 0.99)}};
  std::printf("%s\n", out.dump().c_str());
  return errors ? 1 : 0;
}

#include "server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "aigc/error.h"
#include "aigc/image_io.h"
#include "assets.h"
#include "engine.h"
#include "openai.h"

namespace aigc::serve {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string model_id_from_path(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.stem() == "ckpt" && !p.parent_path().filename().empty()) return p.parent_path().filename().string();
  return fs::is_directory(p) ? p.filename().string() : p.stem().string();
}

namespace {

// What the engine sends back to one request's HTTP thread: text pieces per choice, then each choice's end.
struct Exchange {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, std::string>> pieces;  // (choice, text)
  std::deque<std::pair<int, JobResult>> ends;      // (choice, result)
  std::vector<std::shared_ptr<TextJob>> jobs;
  void cancel() {
    for (auto& j : jobs) j->cancelled = true;
  }
};

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)rng());
  return prefix + std::string(buf);
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

const char* error_type_for(int status) {
  return status == 401   ? "authentication_error"
         : status == 404 ? "not_found_error"
         : status >= 500 ? "server_error"
                         : "invalid_request_error";
}

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  LoadedModel text;
  std::unique_ptr<ImageModel> image;
  Limits limits;
  std::unique_ptr<TextEngine> engine;
  httplib::Server http;
  std::mutex image_mu;  // one image request at a time
  // Requests being answered (a stream counts until its last byte is sent): shutdown waits for them.
  std::atomic<int> in_flight{0};
  struct InFlight {
    std::atomic<int>& n;
    explicit InFlight(std::atomic<int>& n) : n(n) { n++; }
    ~InFlight() { n--; }
  };
  const Clock::time_point started = Clock::now();

  // Metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (route, status) -> count
  std::atomic<uint64_t> images_generated{0};

  Impl(LoadedModel t, std::unique_ptr<ImageModel> img, ServerOptions o)
      : opt(std::move(o)), text(std::move(t)), image(std::move(img)) {
    const int model_ctx = int(text.model->config().block_size);
    AIGC_CHECK(opt.ctx >= 0 && opt.ctx <= model_ctx,
               "--ctx " + std::to_string(opt.ctx) + " exceeds the model's context of " + std::to_string(model_ctx));
    AIGC_CHECK(opt.max_tokens_cap >= 1, "--max-tokens-cap must be at least 1");
    AIGC_CHECK(opt.timeout_s > 0, "--timeout must be positive");
    AIGC_CHECK(opt.max_body_bytes >= 1024, "--max-body must be at least 1024 bytes");
    limits.model = opt.model_name;
    limits.ctx = opt.ctx ? opt.ctx : model_ctx;
    limits.max_tokens_cap = opt.max_tokens_cap;
    engine = std::make_unique<TextEngine>(*text.model, *text.tokenizer, opt.parallel, limits.ctx);
    // Streams hold a thread each for their whole life; keep enough for every slot plus waiting and idle clients.
    const size_t threads = size_t(std::max(16, 4 * opt.parallel + 8));
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_read_timeout(30, 0);
    http.set_write_timeout(30, 0);
    routes();
  }

  bool authorized(const httplib::Request& req) const {
    if (opt.api_key.empty()) return true;
    const std::string want = "Bearer " + opt.api_key;
    return req.get_header_value("Authorization") == want;
  }

  static bool public_path(const std::string& path) { return path == "/health" || find_asset(path) != nullptr; }

  json parse_body(const httplib::Request& req) const {
    try {
      return json::parse(req.body);
    } catch (const json::parse_error& e) {
      throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
    }
  }

  void routes() {
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (public_path(req.path) || authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'", "",
                               "invalid_api_key", "authentication_error"));
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors raised by the HTTP layer itself (unknown route, body too large, bad request line) get JSON bodies too;
    // a known route asked with the wrong method is 405, not 404.
    http.set_error_handler(
        httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          static const std::map<std::string, std::string> known = {{"/v1/completions", "POST"},
                                                                   {"/v1/chat/completions", "POST"},
                                                                   {"/v1/images/generations", "POST"},
                                                                   {"/tokenize", "POST"},
                                                                   {"/detokenize", "POST"},
                                                                   {"/v1/models", "GET"},
                                                                   {"/health", "GET"},
                                                                   {"/metrics", "GET"},
                                                                   {"/runs", "GET"}};
          auto it = known.find(req.path);
          if (res.status == 404 && it != known.end()) {
            res.status = 405;
            res.set_header("Allow", it->second);
            send_json(res, 405,
                      error_body(405, req.method + " is not allowed on " + req.path + "; use " + it->second,
                                 "invalid_request_error", "", "method_not_allowed"));
          } else if (res.status == 404) {
            send_json(res, 404, error_body(404, "no route " + req.method + " " + req.path, "not_found_error"));
          } else if (res.status == 413) {
            send_json(res, 413,
                      error_body(413, "the request body exceeds " + std::to_string(opt.max_body_bytes) + " bytes",
                                 "invalid_request_error", "", "payload_too_large"));
          } else {
            send_json(res, res.status,
                      error_body(res.status,
                                 "HTTP error " + std::to_string(res.status) + " on " + req.method + " " + req.path,
                                 error_type_for(res.status)));
          }
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_json(res, 500, error_body(500, e.what(), "server_error"));
      }
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) { log(req, res); });

    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const EngineStats s = engine->stats();
      send_json(res, engine->draining() ? 503 : 200,
                {{"status", engine->draining() ? "shutting down" : "ok"},
                 {"slots_idle", s.slots_total - s.slots_busy},
                 {"slots_processing", s.slots_busy},
                 {"queue", s.queued}});
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json data = json::array();
      data.push_back({{"id", opt.model_name},
                      {"object", "model"},
                      {"created", unix_now()},
                      {"owned_by", "aigc"},
                      {"context_length", limits.ctx}});
      if (image)
        data.push_back({{"id", opt.image_model_name},
                        {"object", "model"},
                        {"created", unix_now()},
                        {"owned_by", "aigc"},
                        {"kind", image->kind},
                        {"classes", image->class_names}});
      send_json(res, 200, {{"object", "list"}, {"data", data}});
    });
    http.Post("/v1/completions",
              [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, false); });
    http.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, true); });
    http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      json b = parse_body(req);
      if (!b.is_object() || !b.contains("content") || !b["content"].is_string())
        throw ApiError(400, "'content' must be a string", "content");
      send_json(res, 200, {{"tokens", text.tokenizer->encode(b["content"].get<std::string>())}});
    });
    http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      json b = parse_body(req);
      if (!b.is_object() || !b.contains("tokens") || !b["tokens"].is_array())
        throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
      std::vector<int> ids;
      for (const json& t : b["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= text.tokenizer->vocab_size())
          throw ApiError(400,
                         "'tokens' must hold integers in [0, " + std::to_string(text.tokenizer->vocab_size()) + ")",
                         "tokens");
        ids.push_back(t.get<int>());
      }
      Utf8StreamDecoder dec;  // invalid UTF-8 (a character cut by the ids given) becomes U+FFFD, never raw bytes
      std::string content = dec.push(text.tokenizer->decode(ids));
      content += dec.flush();
      send_json(res, 200, {{"content", content}});
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    http.Post("/v1/images/generations",
              [this](const httplib::Request& req, httplib::Response& res) { generate_images(req, res); });
    http.Get("/runs", [this](const httplib::Request&, httplib::Response& res) { list_runs(res); });
    http.Get(R"(/runs/([A-Za-z0-9_.\-]+)/metrics)",
             [this](const httplib::Request& req, httplib::Response& res) { run_metrics(req.matches[1], res); });
    http.Get(R"(/(|[A-Za-z0-9_.\-]+\.(?:html|js|css)))", [](const httplib::Request& req, httplib::Response& res) {
      const Asset* a = find_asset(req.path);
      if (!a) throw ApiError(404, "no such file: " + req.path, "", "", "not_found_error");
      res.set_content(std::string(a->data, a->size), a->mime);
    });
  }

  void log(const httplib::Request& req, const httplib::Response& res) {
    static const std::set<std::string> routes = {"/v1/completions",
                                                 "/v1/chat/completions",
                                                 "/v1/images/generations",
                                                 "/v1/models",
                                                 "/tokenize",
                                                 "/detokenize",
                                                 "/health",
                                                 "/metrics",
                                                 "/runs",
                                                 "/"};
    const std::string route = routes.count(req.path) ? req.path : "other";  // bounded label values
    {
      std::lock_guard<std::mutex> lk(metrics_mu);
      requests[{route, res.status}]++;
    }
    if (!opt.quiet) std::fprintf(stderr, "%s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
  }

  // /v1/completions and /v1/chat/completions: one engine job per (prompt, choice).
  void complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    InFlight busy(in_flight);
    if (engine->draining()) throw ApiError(503, "the server is shutting down", "", "", "server_error");
    const TextRequest r = parse_text_request(parse_body(req), chat, *text.tokenizer, limits);
    auto ex = std::make_shared<Exchange>();
    const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(opt.timeout_s * 1000));
    int prompt_tokens = 0;
    for (const auto& prompt : r.prompts) {
      prompt_tokens += int(prompt.size());
      for (int k = 0; k < r.n; k++) {
        auto job = std::make_shared<TextJob>();
        const int index = int(ex->jobs.size());
        job->prompt = prompt, job->opt = r.gen, job->deadline = deadline;
        job->opt.sampling.seed += uint64_t(k);
        std::weak_ptr<Exchange> w = ex;
        job->on_text = [w, index](const std::string& t) {
          if (auto e = w.lock()) {
            std::lock_guard<std::mutex> lk(e->mu);
            e->pieces.emplace_back(index, t);
            e->cv.notify_all();
          }
        };
        job->on_done = [w, index](const JobResult& jr) {
          if (auto e = w.lock()) {
            std::lock_guard<std::mutex> lk(e->mu);
            e->ends.emplace_back(index, jr);
            e->cv.notify_all();
          }
        };
        ex->jobs.push_back(job);
      }
    }
    for (auto& job : ex->jobs)
      if (!engine->submit(job)) {
        ex->cancel();
        throw ApiError(503, "the server is shutting down", "", "", "server_error");
      }
    const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-"), model = opt.model_name;
    const int64_t created = unix_now();
    if (r.stream) return stream(res, ex, r, id, created);

    // Not streamed: wait for every choice (the engine ends each job by its deadline at the latest).
    std::vector<Choice> choices(ex->jobs.size());
    int completion_tokens = 0;
    std::unique_lock<std::mutex> lk(ex->mu);
    size_t ended = 0;
    std::optional<ApiError> failure;
    while (ended < ex->jobs.size()) {
      ex->cv.wait(lk, [&] { return !ex->pieces.empty() || !ex->ends.empty(); });
      for (auto& [i, t] : ex->pieces) choices[size_t(i)].text += t;
      ex->pieces.clear();
      for (auto& [i, jr] : ex->ends) {
        ended++;
        completion_tokens += jr.n_generated;
        choices[size_t(i)].finish_reason = openai_finish_reason(jr.finish_reason);
        if (auto f = failure_of(jr)) failure = f;
      }
      ex->ends.clear();
    }
    if (failure) throw *failure;
    send_json(res, 200, completion_answer(r, id, created, model, choices, prompt_tokens, completion_tokens));
  }

  // A job that ended without its text (timed out, failed, cancelled) as the error the client gets.
  std::optional<ApiError> failure_of(const JobResult& jr) const {
    auto err = [](int status, const std::string& msg) { return ApiError(status, msg, "", "", error_type_for(status)); };
    if (jr.finish_reason == "timeout")
      return err(
          504, "generation did not finish within the server's timeout of " + std::to_string(int(opt.timeout_s)) + " s");
    if (jr.finish_reason == "error") return err(500, "generation failed: " + jr.error);
    if (jr.finish_reason == "cancelled") return err(503, "the request was cancelled (server shutting down)");
    return std::nullopt;
  }

  // Server-Sent Events: one `data: {chunk}` per piece of text as it comes, each choice's end, then `data: [DONE]`.
  void stream(httplib::Response& res, std::shared_ptr<Exchange> ex, const TextRequest& r, const std::string& id,
              int64_t created) {
    res.set_header("Cache-Control", "no-cache");
    in_flight++;  // until the releaser: the stream outlives this handler
    auto ended = std::make_shared<size_t>(0);
    auto started = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ex, r, id, created, ended, started](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string s = "data: " + j.dump() + "\n\n";
            return sink.write(s.data(), s.size());
          };
          if (!*started) {
            *started = true;
            if (r.chat)
              for (int i = 0; i < int(ex->jobs.size()); i++)
                if (!send(completion_chunk(r, id, created, opt.model_name, i, "", "", true))) return false;
          }
          std::deque<std::pair<int, std::string>> pieces;
          std::deque<std::pair<int, JobResult>> ends;
          {
            std::unique_lock<std::mutex> lk(ex->mu);
            // Wake at least every 250 ms to probe the client with an SSE comment: a client that went away while
            // its request waits is noticed and its job cancelled.
            if (!ex->cv.wait_for(lk, std::chrono::milliseconds(250),
                                 [&] { return !ex->pieces.empty() || !ex->ends.empty(); })) {
              lk.unlock();
              return sink.write(":\n\n", 3);  // false -> the releaser cancels the jobs
            }
            pieces.swap(ex->pieces), ends.swap(ex->ends);
          }
          for (auto& [i, t] : pieces)
            if (!send(completion_chunk(r, id, created, opt.model_name, i, t, ""))) return false;
          for (auto& [i, jr] : ends) {
            (*ended)++;
            if (auto f = failure_of(jr)) {
              if (!send(error_body(*f))) return false;
            } else if (!send(completion_chunk(r, id, created, opt.model_name, i, "",
                                              openai_finish_reason(jr.finish_reason)))) {
              return false;
            }
          }
          if (*ended == ex->jobs.size()) {
            const std::string done = "data: [DONE]\n\n";
            if (!sink.write(done.data(), done.size())) return false;
            sink.done();
          }
          return true;
        },
        [this, ex](bool success) {
          if (!success) ex->cancel();  // the client went away: free its slots at the next step
          in_flight--;
        });
  }

  void generate_images(const httplib::Request& req, httplib::Response& res) {
    InFlight busy(in_flight);
    if (engine->draining()) throw ApiError(503, "the server is shutting down", "", "", "server_error");
    json b = parse_body(req);
    if (!b.is_object()) throw ApiError(400, "the request body must be a JSON object");
    if (!image)
      throw ApiError(404, "this server has no image model (start it with --image-ckpt)", "model", "model_not_found");
    if (b.contains("model") && !b["model"].is_null() && b["model"] != opt.image_model_name)
      throw ApiError(
          404,
          "the image model '" + b["model"].dump() + "' does not exist; this server has '" + opt.image_model_name + "'",
          "model", "model_not_found");
    std::string prompt;
    if (b.contains("prompt") && !b["prompt"].is_null()) {
      if (!b["prompt"].is_string()) throw ApiError(400, "'prompt' must be a string (a class name)", "prompt");
      prompt = b["prompt"].get<std::string>();
    }
    int32_t cls = -1;
    if (!prompt.empty()) {
      if (image->n_classes == 0)
        throw ApiError(400, "this image model is unconditional: leave 'prompt' empty", "prompt");
      try {
        cls = class_index(prompt, image->class_names, image->n_classes);
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "prompt");
      }
    }
    const json n_field = b.value("n", json(1));
    if (!n_field.is_number_integer() || n_field.get<int64_t>() < 1 || n_field.get<int64_t>() > 64)
      throw ApiError(400, "'n' must be an integer between 1 and 64", "n");
    const int64_t n = n_field.get<int64_t>();
    const std::string want = std::to_string(image->image_size) + "x" + std::to_string(image->image_size);
    if (b.contains("size") && !b["size"].is_null() && b["size"] != want)
      throw ApiError(400, "'size' must be \"" + want + "\" for this model", "size");
    if (b.contains("response_format") && !b["response_format"].is_null() && b["response_format"] != "b64_json")
      throw ApiError(400, "'response_format' must be \"b64_json\" (this server keeps no files to link to)",
                     "response_format");
    uint64_t seed = std::random_device{}();
    if (b.contains("seed") && !b["seed"].is_null()) {
      if (!b["seed"].is_number_integer()) throw ApiError(400, "'seed' must be an integer", "seed");
      seed = b["seed"].get<uint64_t>();
    }
    SamplerOptions so;  // diffusion: DDIM, 50 steps
    if (b.contains("steps") && !b["steps"].is_null()) {
      if (!b["steps"].is_number_integer() || b["steps"].get<int64_t>() < 1 || b["steps"].get<int64_t>() > 1000)
        throw ApiError(400, "'steps' must be an integer between 1 and 1000", "steps");
      so.steps = b["steps"].get<int64_t>();
    }
    Tensor images;
    {
      std::lock_guard<std::mutex> one(image_mu);
      std::lock_guard<std::mutex> compute(engine->compute_mutex());  // the backend's threads are shared
      images = image->generate(n, seed, {.cls = cls, .sampler = so, .on_step = {}, .interpolate = false});
    }
    images_generated += uint64_t(n);
    json data = json::array();
    for (int64_t i = 0; i < n; i++) data.push_back({{"b64_json", base64(encode_png_grid(images.narrow0(i, 1), 1, 0))}});
    send_json(res, 200, {{"created", unix_now()}, {"data", data}});
  }

  void list_runs(httplib::Response& res) {
    json runs = json::array();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(opt.runs_dir, ec))
      if (fs::exists(e.path() / "metrics.jsonl")) runs.push_back(e.path().filename().string());
    std::sort(runs.begin(), runs.end());
    send_json(res, 200, {{"runs_dir", opt.runs_dir}, {"runs", runs}});
  }

  void run_metrics(const std::string& name, httplib::Response& res) {
    if (name == "." || name == "..") throw ApiError(400, "bad run name", "name");
    std::ifstream f(fs::path(opt.runs_dir) / name / "metrics.jsonl");
    if (!f)
      throw ApiError(404, "no run '" + name + "' with a metrics.jsonl under " + opt.runs_dir, "", "",
                     "not_found_error");
    json rows = json::array();
    std::string line;
    while (std::getline(f, line) && rows.size() < 100000) {
      json row = json::parse(line, nullptr, false);
      if (!row.is_discarded()) rows.push_back(std::move(row));  // a line being written now is skipped
    }
    send_json(res, 200, {{"run", name}, {"metrics", rows}});
  }

  std::string metrics() {
    const EngineStats s = engine->stats();
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      char line[64];
      std::snprintf(line, sizeof line, "%.17g", v);
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + line +
             "\n";
    };
    out += "# HELP aigc_requests_total HTTP requests answered, by route and status.\n";
    out += "# TYPE aigc_requests_total counter\n";
    {
      std::lock_guard<std::mutex> lk(metrics_mu);
      for (const auto& [key, count] : requests)
        out += "aigc_requests_total{route=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
               std::to_string(count) + "\n";
    }
    metric("aigc_prompt_tokens_total", "counter", "Prompt tokens prefilled.", double(s.prompt_tokens));
    metric("aigc_generated_tokens_total", "counter", "Tokens generated.", double(s.generated_tokens));
    metric("aigc_decode_steps_total", "counter", "Batched decoding steps.", double(s.decode_steps));
    metric("aigc_decode_rows_total", "counter", "Sequences decoded, summed over steps (rows / steps = mean batch).",
           double(s.decode_rows));
    metric("aigc_jobs_finished_total", "counter", "Generation jobs finished (any reason).", double(s.jobs_done));
    metric("aigc_jobs_cancelled_total", "counter", "Jobs cancelled (client gone, or shutdown).",
           double(s.jobs_cancelled));
    metric("aigc_queue_depth", "gauge", "Jobs waiting for a slot.", double(s.queued));
    metric("aigc_slots_busy", "gauge", "Slots generating now.", double(s.slots_busy));
    metric("aigc_slots_total", "gauge", "Slots (--parallel).", double(s.slots_total));
    metric("aigc_images_generated_total", "counter", "Images generated.", double(images_generated));
    metric("aigc_uptime_seconds", "gauge", "Seconds since the server started.",
           std::chrono::duration<double>(Clock::now() - started).count());
    return out;
  }
};

Server::Server(LoadedModel text, std::unique_ptr<ImageModel> image, ServerOptions opt)
    : impl_(std::make_unique<Impl>(std::move(text), std::move(image), std::move(opt))) {}

Server::~Server() = default;

int Server::bind() {
  Impl& m = *impl_;
  const int port = m.opt.port == 0 ? m.http.bind_to_any_port(m.opt.host)
                                   : (m.http.bind_to_port(m.opt.host, m.opt.port) ? m.opt.port : -1);
  AIGC_CHECK(port > 0, "could not listen on " + m.opt.host + ":" + std::to_string(m.opt.port) +
                           " (in use, or not an address of this machine)");
  return port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::shutdown(std::chrono::milliseconds drain_limit) {
  const auto until = Clock::now() + drain_limit;
  impl_->engine->drain(drain_limit);  // refuses new jobs, waits for running ones
  // Then lets the HTTP side send what the jobs produced (stopping the server cuts open streams).
  while (impl_->in_flight > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->http.stop();
}

}  // namespace aigc::serve

#include "server.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "aigc/error.h"
#include "assets.h"
#include "server_impl.h"

namespace aigc::serve {

namespace fs = std::filesystem;

std::string model_id_from_path(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.stem() == "ckpt" && !p.parent_path().filename().empty()) return p.parent_path().filename().string();
  return fs::is_directory(p) ? p.filename().string() : p.stem().string();
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)rng());
  return prefix + std::string(buf);
}

int64_t unix_now() { return int64_t(std::time(nullptr)); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body), "application/json");
}

const char* error_type_for(int status) {
  return status == 401   ? "authentication_error"
         : status == 404 ? "not_found_error"
         : status == 429 ? "rate_limit_error"
         : status >= 500 ? "server_error"
                         : "invalid_request_error";
}

namespace {

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, error_body(e)); }

// Request bytes for the log: printable ASCII as is, anything else as \xNN, at most 200 bytes.
std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 200; i++) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += char(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return s.size() > 200 ? out + "..." : out;
}

bool iequals(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Compares in time that depends on the lengths only, not on where the first difference is.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); i++) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

// Every route, by path, with the one method it answers (HEAD goes with GET).
std::string route_method(const std::string& path) {
  static const std::map<std::string, std::string> exact = {{"/v1/completions", "POST"},
                                                           {"/v1/chat/completions", "POST"},
                                                           {"/v1/images/generations", "POST"},
                                                           {"/tokenize", "POST"},
                                                           {"/detokenize", "POST"},
                                                           {"/v1/models", "GET"},
                                                           {"/health", "GET"},
                                                           {"/metrics", "GET"},
                                                           {"/runs", "GET"}};
  if (auto it = exact.find(path); it != exact.end()) return it->second;
  static const std::regex model(R"(/v1/models/[^/]+)"), run(R"(/runs/[A-Za-z0-9_.\-]+/metrics)");
  if (std::regex_match(path, model) || std::regex_match(path, run) || find_asset(path)) return "GET";
  return "";
}

// The label of a request in the metrics: its route, from a fixed set (unbounded label values would grow forever).
std::string route_label(const std::string& path) {
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  if (path.rfind("/runs/", 0) == 0) return "/runs/{name}/metrics";
  const std::string m = route_method(path);
  return m.empty() ? "other" : find_asset(path) ? "/" : path;
}

}  // namespace

Server::Impl::Impl(LoadedModel t, std::unique_ptr<ImageModel> img, ServerOptions o)
    : opt(std::move(o)), text(std::move(t)), image(std::move(img)) {
  const int model_ctx = int(text.model->config().block_size);
  AIGC_CHECK(opt.ctx >= 0 && opt.ctx <= model_ctx,
             "--ctx " + std::to_string(opt.ctx) + " exceeds the model's context of " + std::to_string(model_ctx));
  AIGC_CHECK(opt.max_tokens_cap >= 1, "--max-tokens-cap must be at least 1");
  AIGC_CHECK(opt.max_request_tokens >= 1, "--max-request-tokens must be at least 1");
  AIGC_CHECK(opt.timeout_s > 0, "--timeout must be positive");
  AIGC_CHECK(opt.max_body_bytes >= 1024, "--max-body must be at least 1024 bytes");
  if (opt.max_queue < 0) opt.max_queue = 4 * opt.parallel;
  limits.model = opt.model_name;
  // Each slot's KV cache is allocated up front: by default at most kDefaultCtx positions, not the whole context of
  // a long-context model (Llama 3.2 1B: 131,072 positions, 8.6 GB per slot in f32).
  limits.ctx = opt.ctx ? opt.ctx : std::min(model_ctx, kDefaultCtx);
  limits.max_tokens_cap = opt.max_tokens_cap;
  limits.max_request_tokens = opt.max_request_tokens;
  limits.max_jobs = opt.parallel + opt.max_queue;
  engine = std::make_unique<TextEngine>(*text.model, *text.tokenizer, opt.parallel, limits.ctx, opt.kv_cache);
  // Streams hold a thread each for their whole life; keep enough for every slot and queued job plus idle clients.
  const size_t threads = size_t(std::max(16, opt.parallel + opt.max_queue + 8));
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(opt.max_body_bytes);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  routes();
}

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (opt.api_key.empty()) return true;
  // "Bearer KEY": the scheme is case-insensitive (RFC 9110 11.1), the key is not.
  const std::string v = req.get_header_value("Authorization");
  const size_t sp = v.find(' ');
  if (sp == std::string::npos || !iequals(v.substr(0, sp), "bearer")) return false;
  const size_t key = v.find_first_not_of(' ', sp);
  return key != std::string::npos && same_secret(v.substr(key), opt.api_key);
}

// Runs before httplib reads any body: refuses what it can from the request line and headers alone, so that no
// unknown route, wrong method, oversized or absent body costs a read.
bool Server::Impl::gate(const httplib::Request& req, httplib::Response& res) {
  // Every answer given here leaves any body unread: the connection then closes, or the body's bytes would be
  // read as the next request.
  const bool has_te = req.has_header("Transfer-Encoding"), has_cl = req.has_header("Content-Length");
  const std::string len = req.get_header_value("Content-Length");
  auto answered = [&] {
    if (has_te || (has_cl && len != "0")) HttpCore::close_after_answer();
    return true;
  };
  const std::string method = route_method(req.path);
  if (req.method == "OPTIONS" && !opt.cors_origin.empty() && !method.empty()) {  // CORS preflight: no key needed
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", method + ", OPTIONS");
    // The headers the page asks for (OpenAI's SDKs send their own x-stainless-* ones), if they look like names.
    std::string asked = req.get_header_value("Access-Control-Request-Headers");
    const bool names = std::all_of(asked.begin(), asked.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ',' || c == ' ';
    });
    res.set_header("Access-Control-Allow-Headers", !asked.empty() && names ? asked : "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "600");
    return answered();
  }
  const bool is_public = req.path == "/health" || find_asset(req.path) != nullptr;
  if (!is_public && !authorized(req)) {
    send_error(res, ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'", "",
                             "invalid_api_key", "authentication_error"));
    return answered();
  }
  if (method.empty()) {
    send_json(res, 404, error_body(404, "no route " + req.method + " " + req.path, "not_found_error"));
    return answered();
  }
  if (req.method != method && !(req.method == "HEAD" && method == "GET")) {
    res.set_header("Allow", method);
    send_json(res, 405,
              error_body(405, req.method + " is not allowed on " + req.path + "; use " + method,
                         "invalid_request_error", "", "method_not_allowed"));
    return answered();
  }
  if (req.method != "POST") return false;
  // A POST's body: chunked (counted as it arrives), or Content-Length within --max-body. Neither means no body
  // (RFC 9112 6.3), answered now rather than read until the client closes. Any other transfer coding is refused
  // (httplib would read it until the client closes).
  if (has_te) {
    if (iequals(req.get_header_value("Transfer-Encoding"), "chunked")) return false;
    HttpCore::close_after_answer();
    send_error(res, ApiError(400, "only 'Transfer-Encoding: chunked' is supported", "", "bad_transfer_encoding"));
    return true;
  }
  if (!has_cl) {
    send_error(res, ApiError(400, "the request has no body: send a JSON body with Content-Length", "", "no_body"));
    return true;
  }
  if (len.empty() || len.size() > 18 || !std::all_of(len.begin(), len.end(), ::isdigit)) {
    HttpCore::close_after_answer();  // where the body ends is unknown
    send_error(res, ApiError(400, "Content-Length is not a number of bytes", "", "bad_content_length"));
    return true;
  }
  if (std::stoull(len) > opt.max_body_bytes) {
    HttpCore::close_after_answer();  // the body is left unread
    send_error(res, ApiError(413, "the request body exceeds " + std::to_string(opt.max_body_bytes) + " bytes", "",
                             "payload_too_large"));
    return true;
  }
  return false;
}

void Server::Impl::post(const std::string& path, BodyHandler h) {
  http.Post(path, [this, h](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
    std::string body;
    bool over = false;
    const bool ok = read([&](const char* d, size_t n) {
      if (body.size() + n > opt.max_body_bytes) return !(over = true);
      body.append(d, n);
      return true;
    });
    if (over) {
      HttpCore::close_after_answer();
      throw ApiError(413, "the request body exceeds " + std::to_string(opt.max_body_bytes) + " bytes", "",
                     "payload_too_large");
    }
    if (!ok) {
      HttpCore::close_after_answer();
      throw ApiError(400, "the request body could not be read (cut short, or malformed chunked encoding)", "",
                     "bad_body");
    }
    h(body, req, res);
  });
}

json Server::Impl::parse_body(const std::string& body) const {
  if (body.empty()) throw ApiError(400, "the request body is empty: send a JSON object", "", "no_body");
  // Nesting is bounded: what reads a request (schemas, dumps, copies) recurses into it.
  constexpr int kMaxDepth = 64;
  const json::parser_callback_t depth = [](int d, json::parse_event_t, json&) {
    if (d > kMaxDepth)
      throw ApiError(400, "the request body nests deeper than " + std::to_string(kMaxDepth) + " levels", "",
                     "too_deep");
    return true;
  };
  try {
    return json::parse(body, depth);
  } catch (const json::exception& e) {  // parse errors, and numbers too large for a double (out_of_range)
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
}

void Server::Impl::queue_full(httplib::Response& res, double retry_after_s, const std::string& what) {
  res.set_header("Retry-After", std::to_string(std::max(1, int(std::ceil(retry_after_s)))));
  throw ApiError(429, "the server is busy: " + what + "; retry after the time in Retry-After", "", "queue_full",
                 "rate_limit_error");
}

void Server::Impl::routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    return gate(req, res) ? httplib::Server::HandlerResponse::Handled : httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors raised by the HTTP layer itself (a bad request line, a URI too long) get JSON bodies too, and end the
  // connection: after bytes that are not HTTP, where the next request starts is anyone's guess.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    HttpCore::close_after_answer();
    send_json(
        res, res.status,
        error_body(res.status,
                   "HTTP error " + std::to_string(res.status) +
                       (req.method.empty() ? std::string(": malformed request") : " on " + req.method + " " + req.path),
                   error_type_for(res.status)));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      send_json(res, 500, error_body(500, e.what(), "server_error"));
    } catch (...) {
      send_json(res, 500, error_body(500, "unknown failure", "server_error"));
    }
  });
  // A client sending `Expect: 100-continue` waits for leave to send its body: the gate decides first.
  http.set_expect_100_continue_handler(
      [this](const httplib::Request& req, httplib::Response& res) { return gate(req, res) ? res.status : 100; });
  http.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (HttpCore::closing()) {  // say so, instead of offering keep-alive on a connection about to close
      res.headers.erase("Keep-Alive");
      if (!res.has_header("Connection")) res.set_header("Connection", "close");
    }
    if (res.status == 204) res.headers.erase("Content-Length");  // RFC 9110 8.6: none on a 204
    if (opt.cors_origin.empty() || !req.has_header("Origin")) return;
    res.set_header("Access-Control-Allow-Origin", opt.cors_origin);
    res.set_header("Access-Control-Expose-Headers", "Retry-After");  // so a page can honour a 429
    if (opt.cors_origin != "*") res.set_header("Vary", "Origin");
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
  auto text_model = [this] {
    return json{{"id", opt.model_name},
                {"object", "model"},
                {"created", unix_now()},
                {"owned_by", "aigc"},
                {"context_length", limits.ctx}};
  };
  auto image_model = [this] {
    return json{{"id", opt.image_model_name}, {"object", "model"},   {"created", unix_now()},
                {"owned_by", "aigc"},         {"kind", image->kind}, {"classes", image->class_names}};
  };
  http.Get("/v1/models", [this, text_model, image_model](const httplib::Request&, httplib::Response& res) {
    json data = json::array({text_model()});
    if (image) data.push_back(image_model());
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  });
  http.Get(R"(/v1/models/([^/]+))",
           [this, text_model, image_model](const httplib::Request& req, httplib::Response& res) {
             const std::string id = req.matches[1];
             if (id == opt.model_name) return send_json(res, 200, text_model());
             if (image && id == opt.image_model_name) return send_json(res, 200, image_model());
             throw ApiError(404, "the model '" + id + "' does not exist", "model", "model_not_found");
           });
  post("/v1/completions",
       [this](const std::string& b, const httplib::Request&, httplib::Response& res) { complete(b, res, false); });
  post("/v1/chat/completions",
       [this](const std::string& b, const httplib::Request&, httplib::Response& res) { complete(b, res, true); });
  post("/tokenize", [this](const std::string& body, const httplib::Request&, httplib::Response& res) {
    json b = parse_body(body);
    if (!b.is_object() || !b.contains("content") || !b["content"].is_string())
      throw ApiError(400, "'content' must be a string", "content");
    try {
      send_json(res, 200, {{"tokens", text.tokenizer->encode(b["content"].get<std::string>())}});
    } catch (const Error& e) {
      throw ApiError(400, std::string("'content' has text this model cannot read: ") + e.what(), "content",
                     "unsupported_character");
    }
  });
  post("/detokenize", [this](const std::string& body, const httplib::Request&, httplib::Response& res) {
    json b = parse_body(body);
    if (!b.is_object() || !b.contains("tokens") || !b["tokens"].is_array())
      throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
    std::vector<int> ids;
    for (const json& t : b["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= text.tokenizer->vocab_size())
        throw ApiError(400, "'tokens' must hold integers in [0, " + std::to_string(text.tokenizer->vocab_size()) + ")",
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
  post("/v1/images/generations",
       [this](const std::string& b, const httplib::Request&, httplib::Response& res) { generate_images(b, res); });
  http.Get("/runs", [this](const httplib::Request&, httplib::Response& res) { list_runs(res); });
  http.Get(R"(/runs/([A-Za-z0-9_.\-]+)/metrics)",
           [this](const httplib::Request& req, httplib::Response& res) { run_metrics(req.matches[1], res); });
  http.Get(R"(/(|[A-Za-z0-9_.\-]+\.(?:html|js|css)))", [](const httplib::Request& req, httplib::Response& res) {
    const Asset* a = find_asset(req.path);
    if (!a) throw ApiError(404, "no such file: " + req.path, "", "", "not_found_error");
    res.set_content(std::string(a->data, a->size), a->mime);
  });
}

void Server::Impl::log(const httplib::Request& req, const httplib::Response& res) {
  {
    std::lock_guard<std::mutex> lk(metrics_mu);
    requests[{route_label(req.path), res.status}]++;
  }
  if (!opt.quiet)
    std::fprintf(stderr, "%s %s -> %d\n", printable(req.method).c_str(), printable(req.path).c_str(), res.status);
}

void Server::Impl::list_runs(httplib::Response& res) {
  json runs = json::array();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opt.runs_dir, ec))
    if (fs::exists(e.path() / "metrics.jsonl", ec)) runs.push_back(e.path().filename().string());
  std::sort(runs.begin(), runs.end());
  send_json(res, 200, {{"runs_dir", opt.runs_dir}, {"runs", runs}});
}

void Server::Impl::run_metrics(const std::string& name, httplib::Response& res) {
  if (name == "." || name == "..") throw ApiError(400, "bad run name", "name");
  std::ifstream f(fs::path(opt.runs_dir) / name / "metrics.jsonl");
  if (!f)
    throw ApiError(404, "no run '" + name + "' with a metrics.jsonl under " + opt.runs_dir, "", "", "not_found_error");
  json rows = json::array();
  std::string line;
  while (std::getline(f, line) && rows.size() < 100000) {
    json row = json::parse(line, nullptr, false);
    if (!row.is_discarded()) rows.push_back(std::move(row));  // a line being written now is skipped
  }
  send_json(res, 200, {{"run", name}, {"metrics", rows}});
}

std::string Server::Impl::metrics() {
  const EngineStats s = engine->stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    char line[64];
    std::snprintf(line, sizeof line, "%.17g", v);
    out +=
        std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + line + "\n";
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
  metric("aigc_jobs_refused_total", "counter", "Text jobs refused with 429 (queue full).", double(s.jobs_refused));
  metric("aigc_queue_depth", "gauge", "Jobs waiting for a slot.", double(s.queued));
  metric("aigc_queue_wait_max_seconds", "gauge", "The longest any text job waited for a slot.", s.max_queue_wait_s);
  metric("aigc_slots_busy", "gauge", "Slots generating now.", double(s.slots_busy));
  metric("aigc_slots_total", "gauge", "Slots (--parallel).", double(s.slots_total));
  metric("aigc_images_generated_total", "counter", "Images generated.", double(images_generated));
  metric("aigc_image_requests_refused_total", "counter", "Image requests refused with 429 (queue full).",
         double(image_requests_refused));
  metric("aigc_image_requests_abandoned_total", "counter", "Image requests stopped because their client hung up.",
         double(image_requests_abandoned));
  metric("aigc_image_wait_max_seconds", "gauge", "The longest any image request waited for its turn.",
         image_max_wait_s.load());
  metric("aigc_uptime_seconds", "gauge", "Seconds since the server started.",
         std::chrono::duration<double>(Clock::now() - started).count());
  return out;
}

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

std::string Server::answer_bytes(const std::string& request) { return impl_->http.answer_bytes(request); }

void Server::shutdown(std::chrono::milliseconds drain_limit) {
  const auto until = Clock::now() + drain_limit;
  impl_->engine->drain(drain_limit);  // refuses new jobs, waits for running ones
  // Then lets the HTTP side send what the jobs produced (stopping the server cuts open streams).
  while (impl_->in_flight > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->http.stop();
}

}  // namespace aigc::serve

// `aigc serve` against hostile or careless clients: bytes that are not UTF-8 or not HTTP, bodies that lie about
// their size or never come, text outside the model's vocabulary, auth headers in any case, a full queue, requests
// asking for too much work, image requests that outlive their timeout or their client, and browsers (CORS).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "aigc/diffusion_trainer.h"
#include "aigc/tokenizer.h"
#include "server_util.h"
#include "test_util.h"

using namespace aigc;
using namespace aigc::testing;
using Ms = std::chrono::milliseconds;

namespace {

bool healthy(const Running& s) {
  auto r = s.client().Get("/health");
  return r && r->status == 200;
}

std::string http_post(const std::string& path, const std::string& body, const std::string& extra_headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The JSON error body of a raw response (after the blank line); discarded JSON when there is none.
json raw_body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? json(json::value_t::discarded)
                                 : json::parse(response.substr(at + 4), nullptr, false);
}

}  // namespace

TEST(ServerLimits, InvalidUtf8AnywhereIsAnsweredAndNeverStopsTheServer) {
  serve::ServerOptions o;
  o.api_key = "k";
  Running s(o);
  const std::string auth = "Authorization: Bearer k\r\n";
  struct Case {
    const char* what;
    std::string bytes;
    int status;
  };
  const std::vector<Case> cases = {
      {"a prompt of invalid UTF-8", http_post("/v1/completions", "{\"prompt\": \"\xff\xfe\", \"max_tokens\": 2}", auth),
       400},
      {"a chat message of invalid UTF-8",
       http_post("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"\xc3\x28\"}]}", auth),
       400},
      {"a model name of invalid UTF-8", http_post("/v1/completions", "{\"model\": \"\xff\", \"prompt\": \"a\"}", auth),
       400},
      {"a path that decodes to invalid UTF-8", "GET /%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth + "\r\n",
       404},
      {"a raw byte in the path", "GET /\xfe\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth + "\r\n", 404},
      {"a bare request line of two bytes, no key", "\xff\xfe\r\n\r\n", 400},
      {"a method of invalid UTF-8", "\xff\xfe / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400},
      {"a header of invalid UTF-8, no key",
       "GET /v1/models HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer \xff\r\n\r\n", 401},
  };
  for (const Case& c : cases) {
    const std::string answer = raw_exchange(s.port(), {c.bytes}, Ms(3000));
    EXPECT_EQ(raw_status(answer), c.status) << c.what << ": " << answer;
    const json body = raw_body(answer);
    ASSERT_FALSE(body.is_discarded()) << c.what << ": " << answer;
    EXPECT_TRUE(body["error"]["message"].is_string()) << c.what;
    ASSERT_TRUE(healthy(s)) << "the server stopped answering after " << c.what;
  }
  // The same bytes in memory (the fuzz target's path) are answered the same way.
  for (const Case& c : cases) EXPECT_EQ(raw_status(s.server().answer_bytes(c.bytes)), c.status) << c.what;
}

TEST(ServerLimits, TextOutsideTheVocabularyIs400NamingTheFieldAndTheCharacter) {
  LoadedModel m = tiny_model();
  m.tokenizer = make_char_tokenizer("abcdefghijklmnopqrstuvwxyz .,\n");
  Running s({}, std::move(m));
  json e = post(s, "/v1/completions", {{"prompt", "hello \xF0\x9F\x98\x80"}, {"max_tokens", 2}}, 400);
  EXPECT_EQ(e["error"]["param"], "prompt");
  const std::string msg = e["error"]["message"];
  EXPECT_NE(msg.find("U+1F600"), std::string::npos) << msg;
  e = post(s, "/v1/completions", {{"prompt", std::string("a\0b", 3)}, {"max_tokens", 2}}, 400);
  EXPECT_EQ(e["error"]["param"], "prompt");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("U+0000"), std::string::npos) << e.dump();
  e = post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "caf\xC3\xA9"}}}}}, 400);
  EXPECT_EQ(e["error"]["param"], "messages");
  e = post(s, "/tokenize", {{"content", "\xC3\xA9"}}, 400);
  EXPECT_EQ(e["error"]["param"], "content");
  EXPECT_EQ(post(s, "/v1/completions", {{"prompt", "hello"}, {"max_tokens", 2}})["choices"].size(), 1u);
}

TEST(ServerLimits, BodiesAreBoundedWhateverTheirFramingAndAMissingBodyIsAnsweredAtOnce) {
  serve::ServerOptions o;
  o.max_body_bytes = 4096;
  Running s(o);
  // Chunked: counted as it arrives; the server answers 413 without reading the rest.
  std::string chunk(1000, ' ');
  std::vector<std::string> pieces = {
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\n\r\n"};
  for (int i = 0; i < 20; i++) pieces.push_back("3e8\r\n" + chunk + "\r\n");
  const auto t0 = std::chrono::steady_clock::now();
  std::string answer = raw_exchange(s.port(), pieces, Ms(3000));
  EXPECT_EQ(raw_status(answer), 413) << answer;
  // A chunked body within the limit is read and answered.
  const std::string good = R"({"prompt": "a", "max_tokens": 2})";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", good.size());
  answer = raw_exchange(
      s.port(),
      {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" +
       std::string(size) + "\r\n" + good + "\r\n0\r\n\r\n"},
      Ms(3000));
  EXPECT_EQ(raw_status(answer), 200) << answer;
  // A Content-Length over the limit: 413 before any of the body is sent.
  answer = raw_exchange(
      s.port(), {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 50000000\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 413) << answer;
  // No Content-Length and no chunks: no body (RFC 9112), answered now, not after the read timeout.
  const auto t1 = std::chrono::steady_clock::now();
  answer = raw_exchange(s.port(), {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"}, Ms(5000));
  EXPECT_EQ(raw_status(answer), 400) << answer;
  EXPECT_EQ(raw_body(answer)["error"]["code"], "no_body");
  answer = raw_exchange(s.port(), {http_post("/v1/completions", "")});
  EXPECT_EQ(raw_status(answer), 400) << answer;
  answer = raw_exchange(
      s.port(), {"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 12x\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 400) << answer;
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(10));  // 5 s waits at most, none spent
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  // A body for a route that takes none, or for no route at all, is never read.
  answer = raw_exchange(
      s.port(), {"PUT /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 405) << answer;
  answer = raw_exchange(
      s.port(), {"POST /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 404) << answer;
  EXPECT_TRUE(healthy(s));
}

TEST(ServerLimits, TheBearerSchemeIsCaseInsensitiveAndTheKeyIsNot) {
  serve::ServerOptions o;
  o.api_key = "Sesame";
  Running s(o);
  const std::string body = json{{"prompt", "a"}, {"max_tokens", 2}}.dump();
  for (const char* ok : {"Bearer Sesame", "bearer Sesame", "BEARER Sesame", "bEaReR  Sesame"}) {
    auto r = s.client().Post("/v1/completions", {{"Authorization", ok}}, body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << ok;
  }
  for (const char* bad : {"Bearer sesame", "Basic Sesame", "BearerSesame", "Bearer", "Sesame", "Bearer Sesame2"}) {
    auto r = s.client().Post("/v1/completions", {{"Authorization", bad}}, body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << bad;
  }
}

TEST(ServerLimits, AFullQueueAnswers429WithRetryAfterAndOthersStillFinish) {
  serve::ServerOptions o;
  o.parallel = 1, o.max_queue = 1;
  Running s(o, paced_model());  // ~2 ms a token
  const json long_job = {{"prompt", "a"}, {"max_tokens", 300}, {"temperature", 0}};
  // The first job holds the one slot long enough, even on a fast machine, for the second to wait in the queue.
  const json longer_job = {{"prompt", "a"}, {"max_tokens", 1200}, {"temperature", 0}};
  std::vector<int> statuses(2);
  std::thread first(
      [&] { statuses[0] = s.client().Post("/v1/completions", longer_job.dump(), "application/json")->status; });
  for (int i = 0; i < 200 && metric(s, "aigc_slots_busy") != "1"; i++) std::this_thread::sleep_for(Ms(5));
  std::thread second(
      [&] { statuses[1] = s.client().Post("/v1/completions", long_job.dump(), "application/json")->status; });
  for (int i = 0; i < 200 && metric(s, "aigc_queue_depth") != "1"; i++) std::this_thread::sleep_for(Ms(10));
  ASSERT_EQ(metric(s, "aigc_queue_depth"), "1");  // the queue's one place is taken
  auto r = s.client().Post("/v1/completions", long_job.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_GE(std::atoi(r->get_header_value("Retry-After").c_str()), 1);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "queue_full");
  // A request with more choices than slots + queue could ever hold is a 400, not a 429 to retry forever.
  json e = post(s, "/v1/completions", {{"prompt", "a"}, {"n", 3}, {"max_tokens", 2}}, 400);
  EXPECT_EQ(e["error"]["param"], "n");
  first.join(), second.join();
  EXPECT_EQ(statuses, std::vector<int>({200, 200}));
  EXPECT_EQ(metric(s, "aigc_jobs_refused_total"), "1");
}

TEST(ServerLimits, ChoicesTimesMaxTokensIsBoundedPerRequest) {
  serve::ServerOptions o;
  o.max_request_tokens = 100;
  Running s(o);
  json e = post(s, "/v1/completions", {{"prompt", "a"}, {"n", 4}, {"max_tokens", 30}}, 400);
  EXPECT_EQ(e["error"]["param"], "max_tokens");
  EXPECT_EQ(e["error"]["code"], "request_too_large");
  e = post(s, "/v1/completions", {{"prompt", {"a", "b"}}, {"n", 2}, {"max_tokens", 30}}, 400);  // 2 prompts x 2
  EXPECT_EQ(post(s, "/v1/completions", {{"prompt", "a"}, {"n", 4}, {"max_tokens", 25}})["choices"].size(), 4u);
  // Chat's default max_tokens (the rest of the context) shrinks to the budget instead of failing.
  json c = post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"n", 4}});
  EXPECT_LE(c["usage"]["completion_tokens"].get<int>(), 100);
}

TEST(ServerLimits, ImageRequestsHonourTheTimeoutTheQueueAndTheirClient) {
  auto dir = fresh_temp_dir("server_ddpm");
  DiffusionTrainOptions d;
  d.model.ch = 8, d.model.ch_mult = {1, 2}, d.model.num_res_blocks = 1, d.model.attn_resolutions = {};
  d.model.groups = 4, d.model.dropout = 0;
  d.batch_size = 4, d.steps = 1, d.timesteps = 1000, d.warmup = 1;
  d.sample_interval = 100000, d.ckpt_interval = 100000, d.out_dir = dir.string(), d.quiet = true;
  const std::string ckpt = train_diffusion(d).checkpoint;
  serve::ServerOptions o;
  o.timeout_s = 0.3, o.max_queue = 1;
  Running s(o, tiny_model(), ImageModel::load(ckpt));
  // 1,000 denoising steps take far longer than 0.3 s: stopped between steps, answered 504.
  const auto t0 = std::chrono::steady_clock::now();
  json e = post(s, "/v1/images/generations", {{"n", 4}, {"steps", 1000}}, 504);
  EXPECT_EQ(e["error"]["type"], "server_error");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  // One computes, one waits, a third is refused with 429.
  std::vector<int> statuses(2);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; i++) {
    clients.emplace_back([&, i] {
      statuses[size_t(i)] =
          s.client().Post("/v1/images/generations", json{{"n", 4}, {"steps", 1000}}.dump(), "application/json")->status;
    });
    std::this_thread::sleep_for(Ms(60));
  }
  auto r = s.client().Post("/v1/images/generations", json{{"steps", 2}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  for (auto& c : clients) c.join();
  EXPECT_EQ(statuses, std::vector<int>({504, 504}));
  EXPECT_EQ(metric(s, "aigc_image_requests_refused_total"), "1");
  s.stop();

  // A client that hangs up: its generation stops at the next probe instead of running to the end.
  o.timeout_s = 60;
  Running t(o, tiny_model(), ImageModel::load(ckpt));
  const std::string body = json{{"n", 16}, {"steps", 1000}}.dump();
  const auto t1 = std::chrono::steady_clock::now();
  post(t, "/v1/images/generations", {{"n", 16}, {"steps", 100}});
  const double hundred_steps = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  raw_exchange(t.port(), {http_post("/v1/images/generations", body)}, Ms(100));
  const auto t2 = std::chrono::steady_clock::now();
  post(t, "/v1/images/generations", {{"steps", 2}, {"size", nullptr}});
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count();
  EXPECT_EQ(metric(t, "aigc_image_requests_abandoned_total"), "1");
  EXPECT_LT(waited, 2 * hundred_steps + 0.5)
      << "the abandoned 1,000 steps (~" << 10 * hundred_steps << " s) were run to the end";
  std::filesystem::remove_all(dir);
}

TEST(ServerLimits, ModelsCanBeRetrievedById) {
  Running s;
  auto r = s.client().Get("/v1/models/tiny");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json m = json::parse(r->body);
  EXPECT_EQ(m["id"], "tiny");
  EXPECT_EQ(m["object"], "model");
  EXPECT_EQ(m["owned_by"], "aigc");
  r = s.client().Get("/v1/models/gpt-9");
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "model_not_found");
}

TEST(ServerLimits, CorsIsOffByDefaultAndAnswersPreflightsWhenOn) {
  {
    Running s;
    auto r = s.client().Get("/v1/models", {{"Origin", "http://app.example"}});
    EXPECT_FALSE(r->has_header("Access-Control-Allow-Origin"));
    EXPECT_EQ(s.client().Options("/v1/chat/completions")->status, 405);
  }
  serve::ServerOptions o;
  o.cors_origin = "http://app.example", o.api_key = "k";
  Running s(o);
  httplib::Headers pre = {{"Origin", "http://app.example"},
                          {"Access-Control-Request-Method", "POST"},
                          {"Access-Control-Request-Headers", "authorization, content-type"}};
  auto r = s.client().Options("/v1/chat/completions", pre);  // preflights carry no key
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "http://app.example");
  EXPECT_NE(r->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Headers"), "authorization, content-type");  // as asked
  EXPECT_EQ(r->get_header_value("Access-Control-Expose-Headers"), "Retry-After");
  EXPECT_FALSE(r->has_header("Content-Length"));  // none on a 204
  r = s.client().Post("/v1/completions", {{"Origin", "http://app.example"}, {"Authorization", "Bearer k"}},
                      json{{"prompt", "a"}, {"max_tokens", 2}}.dump(), "application/json");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "http://app.example");
  r = s.client().Get("/v1/models", {{"Origin", "http://app.example"}});  // errors carry it too: the page can read them
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "http://app.example");
}

TEST(ServerLimits, ANonStreamedRequestWhoseClientLeavesIsCancelled) {
  serve::ServerOptions o;
  o.parallel = 1;
  Running s(o, paced_model());  // ~2 ms a token: 2,000 tokens outlast the client
  const std::string body = json{{"prompt", "a"}, {"max_tokens", 2000}, {"temperature", 0}}.dump();
  raw_exchange(s.port(), {http_post("/v1/completions", body)}, Ms(100));
  for (int i = 0; i < 100 && metric(s, "aigc_jobs_cancelled_total") != "1"; i++) std::this_thread::sleep_for(Ms(20));
  EXPECT_EQ(metric(s, "aigc_jobs_cancelled_total"), "1");
  EXPECT_EQ(post(s, "/v1/completions", {{"prompt", "b"}, {"max_tokens", 3}})["choices"].size(), 1u);
}

TEST(ServerLimits, RefusalsBeforeTheBodyCloseTheConnectionAndFramingIsStrict) {
  Running s;
  // Answered before its body was read: the body must not be taken for the next request.
  std::string answer = raw_exchange(
      s.port(), {"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 22\r\n\r\nGET /health HTTP/1.1\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 404) << answer;
  EXPECT_EQ(answer.find("HTTP/1.1", 5), std::string::npos) << "a second answer: " << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("Keep-Alive"), std::string::npos) << answer;
  // Transfer codings: chunked in any case is read; anything else is refused, not read until the client closes.
  const std::string good = R"({"prompt": "a", "max_tokens": 2})";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", good.size());
  answer = raw_exchange(s.port(),
                        {"POST /v1/completions HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: Chunked\r\n\r\n" +
                         std::string(size) + "\r\n" + good + "\r\n0\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 200) << answer;
  answer = raw_exchange(s.port(), {"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 400) << answer;
  // Expect: 100-continue: an oversized body is refused before the client is told to send it.
  answer = raw_exchange(s.port(),
                        {"POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n"});
  EXPECT_EQ(raw_status(answer), 413) << answer;
  EXPECT_EQ(answer.find("100 Continue"), std::string::npos) << answer;
  // Bodies nested deeper than 64 levels are refused before anything recurses into them.
  const json e =
      post(s, "/v1/completions",
           json::parse("{\"prompt\": \"a\", \"x\": " + std::string(100, '[') + std::string(100, ']') + "}"), 400);
  EXPECT_EQ(e["error"]["code"], "too_deep");
  EXPECT_TRUE(healthy(s));
}

// `aigc serve` end to end over loopback: OpenAI shapes, SSE framing, auth, every bad-input case, continuous
// batching (concurrent greedy streams equal their one-client outputs) and a client leaving mid-stream.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "aigc/error.h"
#include "aigc/gan_trainer.h"
#include "aigc/generate.h"
#include "aigc/image_model.h"
#include "openai.h"
#include "server.h"
#include "server_util.h"

using namespace aigc;
using json = nlohmann::json;
using namespace aigc::testing;

TEST(Server, CompletionShapesFollowOpenAI) {
  Running s;
  json a = post(s, "/v1/completions", {{"prompt", "hello"}, {"max_tokens", 12}, {"temperature", 0}});
  EXPECT_EQ(a["object"], "text_completion");
  EXPECT_EQ(a["model"], "tiny");
  EXPECT_TRUE(a["id"].get<std::string>().rfind("cmpl-", 0) == 0);
  EXPECT_TRUE(a["created"].is_number_integer());
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0]["index"], 0);
  EXPECT_TRUE(a["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(a["choices"][0]["text"].is_string());
  EXPECT_TRUE(a["choices"][0]["finish_reason"] == "length" || a["choices"][0]["finish_reason"] == "stop");
  EXPECT_EQ(a["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(a["usage"]["total_tokens"],
            a["usage"]["prompt_tokens"].get<int>() + a["usage"]["completion_tokens"].get<int>());

  // The same greedy request through the library gives the same text.
  LoadedModel m = tiny_model();
  GenerateOptions g;
  g.max_tokens = 12, g.sampling.temperature = 0;
  EXPECT_EQ(a["choices"][0]["text"], generate(*m.model, *m.tokenizer, "hello", g).text);

  json c = post(s, "/v1/chat/completions",
                {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
                 {"max_tokens", 5},
                 {"n", 2}});
  EXPECT_EQ(c["object"], "chat.completion");
  ASSERT_EQ(c["choices"].size(), 2u);
  EXPECT_EQ(c["choices"][1]["index"], 1);
  EXPECT_EQ(c["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(c["choices"][0]["message"]["content"].is_string());
  EXPECT_EQ(
      c["usage"]["prompt_tokens"],
      int(serve::chat_prompt(json::parse(R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}])"))
              .size()));

  json models = s.client().Get("/v1/models") ? json::parse(s.client().Get("/v1/models")->body) : json();
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["object"], "model");

  json t = post(s, "/tokenize", {{"content", "h\xC3\xA9"}});
  EXPECT_EQ(t["tokens"], json({104, 0xC3, 0xA9}));
  EXPECT_EQ(post(s, "/detokenize", {{"tokens", t["tokens"]}})["content"], "h\xC3\xA9");
  EXPECT_EQ(post(s, "/detokenize", {{"tokens", {104, 0xC3}}})["content"], "h\xEF\xBF\xBD");  // a cut character
  auto h = s.client().Get("/health");
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
}

TEST(Server, ChatTemplateIsThePlainOneDocumented) {
  EXPECT_EQ(
      serve::chat_prompt(json::parse(
          R"([{"role":"system","content":"S"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":[{"type":"text","text":"c"}]}])")),
      "S\n\nUser: a\nAssistant: b\nUser: c\nAssistant:");
}

TEST(Server, StreamsServerSentEventsThatAddUpToTheAnswer) {
  Running s;
  const json body = {{"prompt", "The cat"}, {"max_tokens", 30}, {"temperature", 0}};
  const std::string whole = post(s, "/v1/completions", body)["choices"][0]["text"];
  json sb = body;
  sb["stream"] = true;
  EXPECT_EQ(streamed_text(stream(s, "/v1/completions", sb), false), whole);

  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}}, {"max_tokens", 20}, {"temperature", 0}};
  const std::string chat_whole = post(s, "/v1/chat/completions", chat)["choices"][0]["message"]["content"];
  json cs = chat;
  cs["stream"] = true;
  std::vector<std::string> ev = stream(s, "/v1/chat/completions", cs);
  EXPECT_EQ(json::parse(ev[0])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(streamed_text(ev, true), chat_whole);
}

TEST(Server, StopStringsEndTheTextAndAreNotShown) {
  Running s;
  const json body = {{"prompt", "x"}, {"max_tokens", 40}, {"temperature", 0}};
  const std::string whole = post(s, "/v1/completions", body)["choices"][0]["text"];
  ASSERT_GE(whole.size(), 10u);
  json b = body;
  b["stop"] = {whole.substr(6, 3)};
  json a = post(s, "/v1/completions", b);
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(a["choices"][0]["text"], whole.substr(0, whole.find(whole.substr(6, 3))));
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  serve::ServerOptions o;
  o.api_key = "sesame";
  Running s(o);
  const std::string body = json{{"prompt", "a"}, {"max_tokens", 2}}.dump();
  auto none = s.client().Post("/v1/completions", body, "application/json");
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["code"], "invalid_api_key");
  auto wrong = s.client().Post("/v1/completions", {{"Authorization", "Bearer open"}}, body, "application/json");
  EXPECT_EQ(wrong->status, 401);
  auto right = s.client().Post("/v1/completions", {{"Authorization", "Bearer sesame"}}, body, "application/json");
  EXPECT_EQ(right->status, 200);
  EXPECT_EQ(s.client().Get("/v1/models")->status, 401);
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // probes need no key
}

TEST(Server, BadRequestsGetTheRightStatusAndAnErrorBody) {
  serve::ServerOptions o;
  o.max_body_bytes = 4096;
  Running s(o);
  struct Case {
    const char* what;
    std::string method, path, body;
    int status;
  };
  const std::string long_prompt(200, 'a');  // the context is 96 tokens
  const std::vector<Case> cases = {
      {"malformed JSON", "POST", "/v1/completions", "{\"prompt\": ", 400},
      {"not an object", "POST", "/v1/completions", "[1, 2]", 400},
      {"missing prompt", "POST", "/v1/completions", R"({"max_tokens": 3})", 400},
      {"missing messages", "POST", "/v1/chat/completions", R"({"prompt": "a"})", 400},
      {"prompt of the wrong type", "POST", "/v1/completions", R"({"prompt": {"a": 1}})", 400},
      {"temperature of the wrong type", "POST", "/v1/completions", R"({"prompt": "a", "temperature": "hot"})", 400},
      {"stream of the wrong type", "POST", "/v1/completions", R"({"prompt": "a", "stream": "yes"})", 400},
      {"unknown role", "POST", "/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "a"}]})", 400},
      {"unknown model", "POST", "/v1/completions", R"({"model": "gpt-9", "prompt": "a"})", 404},
      {"negative max_tokens", "POST", "/v1/completions", R"({"prompt": "a", "max_tokens": -5})", 400},
      {"huge max_tokens", "POST", "/v1/completions", R"({"prompt": "a", "max_tokens": 100000000000})", 400},
      {"max_tokens beyond uint64", "POST", "/v1/completions", R"({"prompt": "a", "max_tokens": 1e300})", 400},
      {"prompt longer than the context", "POST", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400},
      {"five stop strings", "POST", "/v1/completions", R"({"prompt": "a", "stop": ["1","2","3","4","5"]})", 400},
      {"n = 0", "POST", "/v1/completions", R"({"prompt": "a", "n": 0})", 400},
      {"token id outside the vocabulary", "POST", "/v1/completions", R"({"prompt": [1, 999]})", 400},
      {"body over the limit", "POST", "/v1/completions", json{{"prompt", std::string(5000, 'a')}}.dump(), 413},
      {"unknown route", "GET", "/v2/everything", "", 404},
      {"wrong method", "GET", "/v1/chat/completions", "", 405},
      {"wrong method on a GET route", "POST", "/v1/models", "{}", 405},
      {"detokenize of non-ids", "POST", "/detokenize", R"({"tokens": ["a"]})", 400},
      {"image request without an image model", "POST", "/v1/images/generations", R"({"prompt": "bag"})", 404},
  };
  for (const Case& c : cases) {
    httplib::Request req;
    req.method = c.method, req.path = c.path, req.body = c.body;
    if (!c.body.empty()) req.set_header("Content-Type", "application/json");
    auto r = s.client().send(req);
    ASSERT_TRUE(r) << c.what;
    EXPECT_EQ(r->status, c.status) << c.what << ": " << r->body;
    json e = json::parse(r->body, nullptr, false);
    ASSERT_FALSE(e.is_discarded()) << c.what << ": " << r->body;
    EXPECT_TRUE(e["error"]["message"].is_string()) << c.what;
    EXPECT_TRUE(e["error"]["type"].is_string()) << c.what;
  }
  EXPECT_EQ(
      post(s, "/v1/completions", {{"prompt", long_prompt.substr(0, 50)}, {"max_tokens", 2}})["usage"]["prompt_tokens"],
      50);
  EXPECT_EQ(json::parse(s.client().Get("/health")->body)["status"], "ok");  // still serving
}

TEST(Server, ConcurrentStreamsAreBatchedAndEachMatchesItsOneClientOutput) {
  serve::ServerOptions o;
  o.parallel = 4;
  // ~2 ms a token: each stream lasts far longer than the clients' threads take to start, so they overlap even on
  // a loaded machine (with the 32-wide model a stream could end before the next client had connected).
  Running s(o, paced_model());
  const std::vector<std::string> prompts = {"Once upon", "In a hole", "It was the best", "Call me"};
  std::vector<std::string> alone;
  for (const std::string& p : prompts)
    alone.push_back(
        post(s, "/v1/completions", {{"prompt", p}, {"max_tokens", 60}, {"temperature", 0}})["choices"][0]["text"]);
  const double rows0 = std::stod(metric(s, "aigc_decode_rows_total")),
               steps0 = std::stod(metric(s, "aigc_decode_steps_total"));
  std::vector<std::string> together(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); i++)
    clients.emplace_back([&, i] {
      json b = {{"prompt", prompts[i]}, {"max_tokens", 60}, {"temperature", 0}, {"stream", true}};
      together[i] = streamed_text(stream(s, "/v1/completions", b), false);
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < prompts.size(); i++) EXPECT_EQ(together[i], alone[i]) << prompts[i];
  const double rows = std::stod(metric(s, "aigc_decode_rows_total")) - rows0;
  const double steps = std::stod(metric(s, "aigc_decode_steps_total")) - steps0;
  EXPECT_GT(rows / steps, 1.5) << "the streams were not decoded together";
}

TEST(Server, AClientThatLeavesMidStreamFreesItsSlot) {
  serve::ServerOptions o;
  o.parallel = 1;
  Running s(o, paced_model());  // ~2 ms a token: 2,000 tokens outlast the client
  // Read two events, then hang up: the job must end as cancelled long before its 2,000 tokens.
  json b = {{"prompt", "a"}, {"max_tokens", 2000}, {"stream", true}, {"temperature", 0}};
  stream(s, "/v1/completions", b, [](size_t n) { return n < 2; });
  for (int i = 0; i < 100 && metric(s, "aigc_jobs_cancelled_total") != "1"; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(metric(s, "aigc_jobs_cancelled_total"), "1");
  EXPECT_EQ(metric(s, "aigc_slots_busy"), "0");
  // The one slot is free again: a new request is answered.
  EXPECT_EQ(post(s, "/v1/completions", {{"prompt", "b"}, {"max_tokens", 3}})["choices"].size(), 1u);
}

TEST(Server, RequestsPastTheTimeoutEndWith504) {
  serve::ServerOptions o;
  o.timeout_s = 0.2;
  Running s(o, paced_model());  // ~2 ms a token: 2,000 tokens take longer than 0.2 s
  json e = post(s, "/v1/completions", {{"prompt", "a"}, {"max_tokens", 2000}}, 504);
  EXPECT_EQ(e["error"]["type"], "server_error");
  EXPECT_EQ(post(s, "/v1/completions", {{"prompt", "a"}, {"max_tokens", 2}})["choices"].size(), 1u);
}

TEST(Server, ShutdownFinishesRunningStreamsAndRefusesNewWork) {
  Running s({}, paced_model());
  std::vector<std::string> events;
  std::atomic<bool> started{false};
  std::thread client([&] {
    json b = {{"prompt", "a"}, {"max_tokens", 400}, {"stream", true}, {"temperature", 0}};
    events = stream(s, "/v1/completions", b, [&](size_t n) {
      started = n > 0;
      return true;
    });
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread stopper([&] { s.stop(std::chrono::seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = s.client().Post("/v1/completions", json{{"prompt", "b"}}.dump(), "application/json");
  ASSERT_TRUE(r);  // the port stays open while draining: new work is answered 503, not dropped
  EXPECT_EQ(r->status, 503) << r->body;
  client.join();
  stopper.join();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");  // the running stream was finished, not cut
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
}

TEST(Server, ImageGenerationAnswersSeededPngsAndChecksItsFields) {
  // A conditional DCGAN trained for two steps on Fashion-MNIST: enough to exercise the route.
  auto dir = std::filesystem::temp_directory_path() / "aigc_server_gan";
  std::filesystem::remove_all(dir);
  GanTrainOptions g;
  g.conditional = true, g.steps = 2, g.batch_size = 16, g.out_dir = dir.string(), g.quiet = true;
  g.model.nz = 16, g.model.ngf = 16, g.model.ndf = 16;
  g.sample_interval = 1000;
  const std::string ckpt = train_dcgan(g).checkpoint;
  Running s({}, tiny_model(), ImageModel::load(ckpt));

  json a = post(s, "/v1/images/generations", {{"prompt", "sneaker"}, {"n", 3}, {"seed", 7}, {"size", "28x28"}});
  ASSERT_EQ(a["data"].size(), 3u);
  EXPECT_TRUE(a["created"].is_number_integer());
  for (const json& d : a["data"]) {
    const std::string b64 = d["b64_json"];
    EXPECT_EQ(b64.substr(0, 12), "iVBORw0KGgoA");  // base64 of the PNG signature
    EXPECT_EQ(b64.size() % 4, 0u);
  }
  json same = post(s, "/v1/images/generations", {{"prompt", "sneaker"}, {"n", 3}, {"seed", 7}});
  EXPECT_EQ(same["data"], a["data"]);  // the seed makes it reproducible
  json other = post(s, "/v1/images/generations", {{"prompt", "bag"}, {"n", 3}, {"seed", 7}});
  EXPECT_NE(other["data"], a["data"]);

  for (const json& bad :
       {json{{"prompt", "car"}}, json{{"prompt", 3}}, json{{"n", 0}}, json{{"n", 1000}}, json{{"size", "1024x1024"}},
        json{{"response_format", "url"}}, json{{"seed", "x"}}, json{{"steps", -1}}}) {
    json e = post(s, "/v1/images/generations", bad, 400);
    EXPECT_TRUE(e["error"]["param"].is_string()) << bad.dump();
  }
  post(s, "/v1/images/generations", {{"model", "dall-e-3"}}, 404);
  const std::string listed = post(s, "/v1/images/generations", {{"prompt", "car"}}, 400)["error"]["message"];
  EXPECT_NE(listed.find("sneaker"), std::string::npos) << listed;  // the classes a prompt may name
  EXPECT_NE(listed.find("ankle-boot"), std::string::npos) << listed;
  json models = json::parse(s.client().Get("/v1/models")->body);
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][1]["id"], "gan");
  EXPECT_EQ(models["data"][1]["classes"][7], "sneaker");
  std::filesystem::remove_all(dir);
}

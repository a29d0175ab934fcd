// The OpenAI API surface beyond plain text: log-probabilities (checked against a full forward pass of the same
// text), usage in streams, and the fields this server cannot honour, refused by name.
#include <gtest/gtest.h>

#include <cmath>

#include "aigc/autograd.h"
#include "aigc/tokenizer.h"
#include "openai.h"
#include "server_util.h"

using namespace aigc;
using namespace aigc::testing;

namespace {

// log-softmax of the model's logits at every position of `ids`, by one full forward pass (no cache).
std::vector<std::vector<double>> full_pass_logprobs(const std::vector<int>& ids) {
  LoadedModel m = tiny_model();
  NoGradGuard ng;
  const std::vector<int32_t> v(ids.begin(), ids.end());
  Tensor logits = m.model->forward(Tensor::from_ints(v, {1, int64_t(v.size())}));
  const int64_t V = logits.size(2);
  std::vector<std::vector<double>> out;
  for (size_t t = 0; t < ids.size(); t++) {
    const float* row = logits.f32() + int64_t(t) * V;
    double mx = row[0], z = 0;
    for (int64_t i = 0; i < V; i++) mx = std::max(mx, double(row[i]));
    for (int64_t i = 0; i < V; i++) z += std::exp(double(row[i]) - mx);
    std::vector<double> lp(size_t(V), 0.0);
    for (int64_t i = 0; i < V; i++) lp[size_t(i)] = double(row[i]) - mx - std::log(z);
    out.push_back(std::move(lp));
  }
  return out;
}

// The byte of a bytes-tokenizer token as logprobs write it: the character, or "bytes:\\xNN" when the byte is not
// UTF-8 by itself.
int byte_of(const std::string& token) {
  if (token.rfind("bytes:\\x", 0) == 0 && token.size() == 10) return std::stoi(token.substr(8), nullptr, 16);
  EXPECT_EQ(token.size(), 1u) << token;
  return token.empty() ? -1 : static_cast<unsigned char>(token[0]);
}

}  // namespace

TEST(ServerApi, CompletionLogprobsAreTheModelsOwnUnderAFullForwardPass) {
  Running s;
  // Sampled with a temperature and truncation: the reported numbers must not depend on either.
  const json body = {{"prompt", "The cat"}, {"max_tokens", 12}, {"logprobs", 3},
                     {"temperature", 1.3},  {"top_k", 5},       {"seed", 11}};
  const json a = post(s, "/v1/completions", body);
  const json& lp = a["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << a.dump();
  const size_t n = lp["tokens"].size();
  ASSERT_EQ(n, size_t(a["usage"]["completion_tokens"].get<int>()));
  std::vector<int> ids = {'T', 'h', 'e', ' ', 'c', 'a', 't'};
  std::string bytes;
  for (const json& t : lp["tokens"]) ids.push_back(byte_of(t)), bytes += char(ids.back());
  Utf8StreamDecoder dec;
  EXPECT_EQ(dec.push(bytes) + dec.flush(), a["choices"][0]["text"]);  // the tokens are the text
  const auto full = full_pass_logprobs(ids);
  for (size_t k = 0; k < n; k++) {
    const size_t pos = 7 + k - 1;  // the position whose logits predicted generated token k
    EXPECT_NEAR(lp["token_logprobs"][k].get<double>(), full[pos][size_t(ids[7 + k])], 1e-4) << k;
    EXPECT_EQ(lp["text_offset"][k], 7 + k);  // counted from the start of the prompt
    const json& top = lp["top_logprobs"][k];
    ASSERT_EQ(top.size(), 3u);
    std::vector<double> sorted = full[pos];
    std::sort(sorted.rbegin(), sorted.rend());
    for (const auto& [tok, l] : top.items()) {
      EXPECT_NEAR(l.get<double>(), full[pos][size_t(byte_of(tok))], 1e-4);
      EXPECT_GE(l.get<double>(), sorted[2] - 1e-4);  // among the three most likely
    }
  }
  // Streamed, the same seed gives the same tokens and numbers, split over the chunks.
  json sb = body;
  sb["stream"] = true;
  json streamed = json::array();
  for (const std::string& ev : stream(s, "/v1/completions", sb)) {
    if (ev == "[DONE]") break;
    const json c = json::parse(ev)["choices"][0];
    if (c["logprobs"].is_object())
      for (size_t k = 0; k < c["logprobs"]["tokens"].size(); k++)
        streamed.push_back(
            {c["logprobs"]["tokens"][k], c["logprobs"]["token_logprobs"][k], c["logprobs"]["text_offset"][k]});
  }
  ASSERT_EQ(streamed.size(), n);
  for (size_t k = 0; k < n; k++) {
    EXPECT_EQ(streamed[k][0], lp["tokens"][k]);
    EXPECT_NEAR(streamed[k][1].get<double>(), lp["token_logprobs"][k].get<double>(), 1e-6);
    EXPECT_EQ(streamed[k][2], lp["text_offset"][k]);
  }
  // No logprobs asked for: null, as before.
  EXPECT_TRUE(post(s, "/v1/completions", {{"prompt", "a"}, {"max_tokens", 2}})["choices"][0]["logprobs"].is_null());
}

TEST(ServerApi, ChatLogprobsHaveOpenAIsShape) {
  Running s;
  const json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"max_tokens", 6},
                     {"logprobs", true},
                     {"top_logprobs", 2},
                     {"seed", 3}};
  const json a = post(s, "/v1/chat/completions", body);
  const json& content = a["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), size_t(a["usage"]["completion_tokens"].get<int>()));
  for (const json& c : content) {
    EXPECT_TRUE(c["token"].is_string());
    EXPECT_LE(c["logprob"].get<double>(), 0.0);
    ASSERT_EQ(c["bytes"].size(), 1u);
    EXPECT_EQ(c["bytes"][0], byte_of(c["token"]));
    if (c["bytes"][0].get<int>() >= 0x80) {
      EXPECT_EQ(c["token"].get<std::string>().rfind("bytes:", 0), 0u);
    }
    ASSERT_EQ(c["top_logprobs"].size(), 2u);
    EXPECT_GE(c["top_logprobs"][0]["logprob"].get<double>(), c["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_GE(c["top_logprobs"][0]["logprob"].get<double>(), c["logprob"].get<double>() - 1e-6);
  }
  EXPECT_TRUE(a["choices"][0]["logprobs"]["refusal"].is_null());
  json e = post(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"top_logprobs", 2}},
                400);
  EXPECT_EQ(e["error"]["param"], "top_logprobs");
  post(s, "/v1/completions", {{"prompt", "a"}, {"logprobs", 6}}, 400);  // OpenAI's limit is 5
}

TEST(ServerApi, StreamsCarryUsageWhenAskedFor) {
  Running s;
  for (bool chat : {false, true}) {
    json body = {{"max_tokens", 9}, {"temperature", 0}, {"n", 2}};
    if (chat)
      body["messages"] = {{{"role", "user"}, {"content", "Hello"}}};
    else
      body["prompt"] = "Hello";
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const json whole = post(s, path, body);
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    const std::vector<std::string> ev = stream(s, path, body);
    ASSERT_GE(ev.size(), 3u);
    EXPECT_EQ(ev.back(), "[DONE]");
    const json last = json::parse(ev[ev.size() - 2]);
    EXPECT_TRUE(last["choices"].empty()) << last.dump();
    EXPECT_EQ(last["usage"], whole["usage"]) << chat;
    for (size_t i = 0; i + 2 < ev.size(); i++) EXPECT_TRUE(json::parse(ev[i])["usage"].is_null()) << ev[i];
    // Without stream_options, no usage field at all (as before).
    body.erase("stream_options");
    EXPECT_FALSE(json::parse(stream(s, path, body)[0]).contains("usage"));
  }
  json e = post(s, "/v1/completions", {{"prompt", "a"}, {"stream_options", {{"include_usage", true}}}}, 400);
  EXPECT_EQ(e["error"]["param"], "stream_options");
}

TEST(ServerApi, WhatTheServerCannotHonourIsRefusedByName) {
  Running s;
  const json msgs = {{{"role", "user"}, {"content", "Hi"}}};
  const json tool = {{"type", "function"}, {"function", {{"name", "f"}, {"parameters", json::object()}}}};
  struct Case {
    json body;
    std::string param;
  };
  for (const Case& c : std::vector<Case>{
           {{{"messages", msgs}, {"tools", {tool}}}, "tools"},
           {{{"messages", msgs}, {"tool_choice", "auto"}}, "tool_choice"},
           {{{"messages", msgs}, {"functions", {tool["function"]}}}, "functions"},
           {{{"messages", msgs}, {"audio", {{"voice", "alloy"}, {"format", "wav"}}}}, "audio"},
           {{{"messages", msgs}, {"modalities", {"text", "audio"}}}, "modalities"},
           {{{"messages", msgs}, {"response_format", {{"type", "xml"}}}}, "response_format"},
       }) {
    const json e = post(s, "/v1/chat/completions", c.body, 400);
    EXPECT_EQ(e["error"]["param"], c.param) << c.body.dump();
    EXPECT_NE(e["error"]["message"].get<std::string>().find(c.param), std::string::npos) << e.dump();
  }
  // Accepted: an empty tools list, text modality and format, and a transcript with tool results.
  post(s, "/v1/chat/completions",
       {{"messages",
         {{{"role", "user"}, {"content", "weather?"}},
          {{"role", "assistant"}, {"content", nullptr}},
          {{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "sunny"}}}},
        {"tools", json::array()},
        {"modalities", {"text"}},
        {"response_format", {{"type", "text"}}},
        {"max_tokens", 2}});
  EXPECT_EQ(serve::chat_prompt(json::parse(R"([{"role":"user","content":"a"},{"role":"tool","content":"b"}])")),
            "User: a\nTool: b\nAssistant:");
}

namespace {

// A text that nlohmann's parser finds cut short (an error at the very end), not wrong.
bool json_prefix(const std::string& text) {
  try {
    return !json::parse(text).is_discarded();
  } catch (const json::parse_error& e) {
    return e.byte >= text.size();
  }
}

}  // namespace

TEST(ServerApi, ResponseFormatJsonConstrainsEveryOutputToParseAndMatchTheSchema) {
  Running s({}, tiny_model(32, 512));
  const json schema = json::parse(R"({"type": "object", "properties": {
      "answer": {"enum": ["yes", "no", "maybe"]}, "score": {"type": "integer"}, "ok": {"type": "boolean"},
      "tags": {"type": "array", "items": {"enum": [1, 2, 3]}}}, "required": ["answer", "ok"],
      "additionalProperties": false})");
  int finished = 0, total = 0;
  for (const json& format : {json{{"type", "json_object"}},
                             json{{"type", "json_schema"}, {"json_schema", {{"name", "a"}, {"schema", schema}}}}}) {
    for (double temperature : {0.0, 0.7, 1.5}) {
      for (int seed = 1; seed <= 8; seed++) {
        const json a = post(s, "/v1/chat/completions",
                            {{"messages", {{{"role", "user"}, {"content", "Reply in JSON."}}}},
                             {"response_format", format},
                             {"temperature", temperature},
                             {"seed", seed},
                             {"max_tokens", 300}});
        const std::string text = a["choices"][0]["message"]["content"];
        total++;
        if (a["choices"][0]["finish_reason"] == "length") {
          EXPECT_TRUE(json_prefix(text)) << text;  // cut by max_tokens: still a valid beginning
          continue;
        }
        finished++;
        const json v = json::parse(text, nullptr, false);
        ASSERT_FALSE(v.is_discarded()) << format.dump() << " t=" << temperature << " seed=" << seed << ": " << text;
        EXPECT_TRUE(v.is_object()) << text;
        if (format["type"] == "json_schema") {
          EXPECT_TRUE(v.contains("answer") && v.contains("ok")) << text;
          for (const auto& [k, x] : v.items()) EXPECT_TRUE(schema["properties"].contains(k)) << text;
          if (v.contains("score")) {
            EXPECT_TRUE(v["score"].is_number_integer()) << text;
          }
          EXPECT_TRUE(v["ok"].is_boolean()) << text;
        }
      }
    }
  }
  EXPECT_GE(finished, total / 2) << "most generations should close their value within 300 tokens";
  // Streamed, the same request gives the same text.
  json body = {{"messages", {{{"role", "user"}, {"content", "Reply in JSON."}}}},
               {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "a"}, {"schema", schema}}}}},
               {"seed", 3},
               {"max_tokens", 300}};
  const std::string whole = post(s, "/v1/chat/completions", body)["choices"][0]["message"]["content"];
  body["stream"] = true;
  EXPECT_EQ(streamed_text(stream(s, "/v1/chat/completions", body), true), whole);
  // Schemas beyond the supported subset, and vocabularies that cannot write JSON, are 400s naming the reason.
  const json bad_schema = {{"type", "string"}, {"pattern", "a"}};
  const json bad_format = {{"type", "json_schema"}, {"json_schema", {{"name", "a"}, {"schema", bad_schema}}}};
  json e = post(s, "/v1/chat/completions",
                {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"response_format", bad_format}}, 400);
  EXPECT_EQ(e["error"]["param"], "response_format");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("pattern"), std::string::npos) << e.dump();
  LoadedModel m = tiny_model();
  m.tokenizer = make_char_tokenizer("abcdefghijklmnopqrstuvwxyz .,\n");
  Running c({}, std::move(m));
  e = post(c, "/v1/completions", {{"prompt", "a"}, {"response_format", {{"type", "json_object"}}}}, 400);
  EXPECT_EQ(e["error"]["param"], "response_format");
}

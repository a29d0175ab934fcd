// OpenAI's API shapes for `aigc serve`: request validation (every field's type and range, with the offending
// field named), the chat template, and the JSON of answers, stream chunks and errors. No HTTP here.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "aigc/generate.h"
#include "aigc/json_constraint.h"
#include "aigc/tokenizer.h"

namespace aigc::serve {

using json = nlohmann::json;

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string code = "",
           std::string type = "invalid_request_error");
  int status;
  std::string param, code, type;
};
json error_body(int status, const std::string& message, const std::string& type, const std::string& param = "",
                const std::string& code = "");
json error_body(const ApiError& e);

// JSON as text for the wire and the log. Any invalid UTF-8 that reached a string (a request's bytes echoed in an
// error message) becomes U+FFFD instead of throwing: no input can make an answer fail to serialize.
std::string json_text(const json& j);

struct Limits {
  std::string model;  // the served text model's id
  int ctx = 1024;     // context length (prompt + generated tokens)
  int max_tokens_cap = 4096;
  int max_n = 8;                   // choices per request
  int max_request_tokens = 16384;  // choices x max_tokens: the most tokens one request may ask to generate
  int max_jobs = 1 << 20;          // choices (prompts x n) one request may have: slots + queue
};

// A validated /v1/completions or /v1/chat/completions request.
struct TextRequest {
  std::vector<std::vector<int>> prompts;  // tokenized; one per prompt (chat: one)
  GenerateOptions gen;                    // max_tokens, sampling (seed fixed: given or random), stop strings
  int n = 1;                              // choices per prompt; choice k of a request samples with seed + k
  bool stream = false;
  bool chat = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  int logprobs = -1;           // -1: none; else log-probabilities with this many alternatives per token
  std::shared_ptr<const JsonSchema> json_schema;  // response_format json_object / json_schema
};

// The chat template ("aigc-plain", for models without chat tokens): an optional system text, then one line per
// turn, "User: ..." / "Assistant: ...", ending with "Assistant:" for the model to continue. Generation stops at
// "\nUser:" (added to the request's stop strings).
std::string chat_prompt(const json& messages);
// The prompt of a chat request: the tokenizer's own chat template when it has one (ChatML, Llama-3; the text
// spells the special tokens out), else chat_prompt's transcript. An unsupported template is a 400 naming it.
std::string chat_text(const json& messages, const Tokenizer& tok);
constexpr const char* kChatStop = "\nUser:";

TextRequest parse_text_request(const json& body, bool chat, const Tokenizer& tok, const Limits& limits);

// One finished choice, for the non-streamed answer.
struct Choice {
  std::string text, finish_reason;
  std::vector<TokenLogprob> logprobs;  // when asked for
  size_t text_offset = 0;              // completions' logprobs: bytes before the first token (the prompt's)
};
// The "logprobs" of a choice or a chunk in OpenAI's shape (chat: {"content": [...]}; completions: tokens,
// token_logprobs, top_logprobs, text_offset counted from `offset`, which advances past the tokens).
json logprobs_json(const TextRequest& r, const Tokenizer& tok, const std::vector<TokenLogprob>& lps, size_t& offset);
json completion_answer(const TextRequest& r, const Tokenizer& tok, const std::string& id, int64_t created,
                       const std::string& model, std::vector<Choice> choices, int prompt_tokens, int completion_tokens);
json usage_json(int prompt_tokens, int completion_tokens);
// One stream chunk: text for choice `index`, or (finish_reason non-empty) its end. Chat chunks carry a delta;
// role_only makes the first chat chunk ({"role": "assistant", "content": ""}).
// With stream_options.include_usage every chunk has "usage": null, and usage_chunk is the last one.
json completion_chunk(const TextRequest& r, const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::string& finish_reason, bool role_only = false,
                      const json& logprobs = nullptr);
json usage_chunk(const TextRequest& r, const std::string& id, int64_t created, const std::string& model,
                 int prompt_tokens, int completion_tokens);

// OpenAI finish reasons: "stop" (stop string or end of text) or "length".
std::string openai_finish_reason(const std::string& engine_reason);

std::string base64(const std::string& bytes);

}  // namespace aigc::serve

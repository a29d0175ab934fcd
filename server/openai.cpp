#include "openai.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "aigc/chat_template.h"
#include "aigc/error.h"

namespace aigc::serve {

ApiError::ApiError(int status, std::string message, std::string param, std::string code, std::string type)
    : std::runtime_error(std::move(message)),
      status(status),
      param(std::move(param)),
      code(std::move(code)),
      type(std::move(type)) {}

json error_body(int status, const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return {{"error", e}};
}

json error_body(const ApiError& e) { return error_body(e.status, e.what(), e.type, e.param, e.code); }

std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw ApiError(400, "'" + field + "' " + what, field);
}

// A number field within [lo, hi], or `def` when absent or null.
double number(const json& b, const char* f, double lo, double hi, double def) {
  if (!b.contains(f) || b[f].is_null()) return def;
  if (!b[f].is_number()) bad(f, "must be a number");
  const double v = b[f].get<double>();
  if (!(v >= lo && v <= hi)) bad(f, "must be between " + json(lo).dump() + " and " + json(hi).dump());
  return v;
}

int64_t integer(const json& b, const char* f, int64_t lo, int64_t hi, int64_t def) {
  if (!b.contains(f) || b[f].is_null()) return def;
  if (!b[f].is_number_integer()) bad(f, "must be an integer");
  // Unsigned values past int64's range arrive as huge unsigned numbers: compare as double to catch them.
  const double v = b[f].get<double>();
  if (v < double(lo) || v > double(hi)) bad(f, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return b[f].get<int64_t>();
}

bool boolean(const json& b, const char* f, bool def) {
  if (!b.contains(f) || b[f].is_null()) return def;
  if (!b[f].is_boolean()) bad(f, "must be true or false");
  return b[f].get<bool>();
}

std::vector<std::string> stop_strings(const json& b) {
  if (!b.contains("stop") || b["stop"].is_null()) return {};
  const json& s = b["stop"];
  if (s.is_string()) return {s.get<std::string>()};
  if (!s.is_array() || s.size() > 4) bad("stop", "must be a string or an array of at most 4 strings");
  std::vector<std::string> out;
  for (const json& x : s) {
    if (!x.is_string()) bad("stop", "must be a string or an array of at most 4 strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

// Text of a message's content: a string, or OpenAI's array of parts of which the "text" ones count.
std::string content_text(const json& m, size_t i) {
  const std::string f = "messages[" + std::to_string(i) + "].content";
  if (!m.contains("content") || m["content"].is_null()) return "";
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad(f, "must be a string or an array of content parts");
  std::string out;
  for (const json& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(f, "parts must be {\"type\": \"text\", \"text\": \"...\"} (this model reads text only)");
    out += part["text"].get<std::string>();
  }
  return out;
}

}  // namespace

std::string chat_prompt(const json& messages) {
  if (!messages.is_array() || messages.empty()) bad("messages", "must be a non-empty array");
  std::string system, turns;
  for (size_t i = 0; i < messages.size(); i++) {
    const json& m = messages[i];
    const std::string f = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bad(f + ".role", "must be a string");
    const std::string role = m["role"].get<std::string>(), text = content_text(m, i);
    if (role == "system" || role == "developer") {
      system += (system.empty() ? "" : "\n") + text;
    } else if (role == "user") {
      turns += "User: " + text + "\n";
    } else if (role == "assistant") {
      turns += "Assistant: " + text + "\n";
    } else if (role == "tool") {  // a tool's result, kept in the transcript as text
      turns += "Tool: " + text + "\n";
    } else {
      bad(f + ".role", "must be system, developer, user, assistant or tool (got '" + role + "')");
    }
  }
  return (system.empty() ? "" : system + "\n\n") + turns + "Assistant:";
}

std::string chat_text(const json& messages, const Tokenizer& tok) {
  if (tok.chat_template().empty()) return chat_prompt(messages);
  chat_prompt(messages);  // the same checks of roles and contents
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < messages.size(); i++)
    msgs.push_back({messages[i]["role"].get<std::string>(), content_text(messages[i], i)});
  try {
    return render_chat(tok, msgs, true);
  } catch (const Error& e) {
    throw ApiError(400, std::string("this model's chat template cannot be used: ") + e.what(), "messages",
                   "unsupported_chat_template");
  }
}

TextRequest parse_text_request(const json& b, bool chat, const Tokenizer& tok, const Limits& lim) {
  if (!b.is_object()) throw ApiError(400, "the request body must be a JSON object");
  TextRequest r;
  r.chat = chat;
  if (b.contains("model") && !b["model"].is_null()) {
    if (!b["model"].is_string()) bad("model", "must be a string");
    const std::string m = b["model"].get<std::string>();
    if (m != lim.model)
      throw ApiError(404, "the model '" + m + "' does not exist; this server has '" + lim.model + "'", "model",
                     "model_not_found");
  }
  // Prompts, as text.
  std::vector<std::string> texts;
  std::vector<std::vector<int>> given_ids;
  if (chat) {
    if (!b.contains("messages")) bad("messages", "is required");
    texts.push_back(chat_text(b["messages"], tok));
  } else {
    if (!b.contains("prompt")) bad("prompt", "is required");
    const json& p = b["prompt"];
    if (p.is_string()) {
      texts.push_back(p.get<std::string>());
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {  // one prompt as token ids
      std::vector<int> ids;
      for (const json& x : p) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.vocab_size())
          bad("prompt", "token ids must be integers in [0, " + std::to_string(tok.vocab_size()) + ")");
        ids.push_back(x.get<int>());
      }
      given_ids.push_back(ids);
    } else if (p.is_array() && !p.empty() && p.size() <= 16) {
      for (const json& x : p) {
        if (!x.is_string()) bad("prompt", "must be a string, an array of strings, or an array of token ids");
        texts.push_back(x.get<std::string>());
      }
    } else {
      bad("prompt", "must be a string, an array of 1-16 strings, or an array of token ids");
    }
  }
  for (const std::string& t : texts) {
    std::vector<int> ids;
    try {
      // A chat template's text carries its own special tokens; a plain prompt gets the tokenizer's (BOS).
      ids = chat && !tok.chat_template().empty() ? tok.encode(t) : tok.encode_prompt(t);
    } catch (const Error& e) {  // a character the vocabulary lacks: the client's text, not a server fault
      throw ApiError(400,
                     std::string(chat ? "'messages'" : "'prompt'") + " has text this model cannot read: " + e.what(),
                     chat ? "messages" : "prompt", "unsupported_character");
    }
    given_ids.push_back(std::move(ids));
  }
  for (const auto& ids : given_ids)
    if (int(ids.size()) >= lim.ctx)
      throw ApiError(400,
                     "the prompt has " + std::to_string(ids.size()) + " tokens; this model's context is " +
                         std::to_string(lim.ctx) + " tokens (prompt and completion together)",
                     chat ? "messages" : "prompt", "context_length_exceeded");
  r.prompts = std::move(given_ids);

  // Generation controls. max_tokens defaults to OpenAI's 16 for completions and to the rest of the context for chat.
  const int cap = std::min(lim.max_tokens_cap, lim.ctx);
  const char* mt = chat && b.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.n = int(integer(b, "n", 1, lim.max_n, 1));
  const int64_t choices = int64_t(r.n) * int64_t(r.prompts.size());
  if (choices > lim.max_jobs)
    bad("n", "x the number of prompts is " + std::to_string(choices) + "; this server takes at most " +
                 std::to_string(lim.max_jobs) + " choices per request (--parallel + --max-queue)");
  // Chat's default (the rest of the context) shrinks to fit the per-request budget; a value asked for does not.
  const int chat_default = int(std::max<int64_t>(1, std::min<int64_t>(cap, lim.max_request_tokens / choices)));
  r.gen.max_tokens = int(integer(b, mt, 1, cap, chat ? chat_default : std::min(16, cap)));
  SamplingOptions& s = r.gen.sampling;
  s.temperature = float(number(b, "temperature", 0.0, 2.0, s.temperature));
  s.top_p = float(number(b, "top_p", 0.0, 1.0, s.top_p));
  s.top_k = int(integer(b, "top_k", 0, 1 << 20, s.top_k));
  s.min_p = float(number(b, "min_p", 0.0, 1.0, s.min_p));
  s.repeat_penalty = float(number(b, "repeat_penalty", 0.01, 100.0, s.repeat_penalty));
  s.repeat_last_n = int(integer(b, "repeat_last_n", -1, 1 << 20, s.repeat_last_n));
  s.presence_penalty = float(number(b, "presence_penalty", -2.0, 2.0, 0.0));
  s.frequency_penalty = float(number(b, "frequency_penalty", -2.0, 2.0, 0.0));
  if (b.contains("seed") && !b["seed"].is_null()) {
    s.seed = uint64_t(integer(b, "seed", INT64_MIN, INT64_MAX, 0));
  } else {
    s.seed = std::random_device{}() * 0x9E3779B97F4A7C15ull + std::random_device{}();
  }
  r.gen.stop = stop_strings(b);
  if (chat && tok.chat_template().empty()) r.gen.stop.push_back(kChatStop);
  const int64_t work = choices * r.gen.max_tokens;
  if (work > lim.max_request_tokens)
    throw ApiError(400,
                   "this request asks for up to " + std::to_string(work) + " tokens (" + std::to_string(choices) +
                       " choices x " + mt + " " + std::to_string(r.gen.max_tokens) + "); this server allows " +
                       std::to_string(lim.max_request_tokens) + " per request: lower 'n' or '" + mt + "'",
                   mt, "request_too_large");
  r.stream = boolean(b, "stream", false);
  if (b.contains("stream_options") && !b["stream_options"].is_null()) {
    const json& so = b["stream_options"];
    if (!r.stream) bad("stream_options", "is only allowed with \"stream\": true");
    if (!so.is_object()) bad("stream_options", "must be an object such as {\"include_usage\": true}");
    r.include_usage = boolean(so, "include_usage", false);
  }
  if (chat) {
    if (boolean(b, "logprobs", false))
      r.logprobs = int(integer(b, "top_logprobs", 0, 20, 0));
    else if (b.contains("top_logprobs") && !b["top_logprobs"].is_null())
      bad("top_logprobs", "needs \"logprobs\": true");
  } else {
    r.logprobs = int(integer(b, "logprobs", 0, 5, -1));
  }
  // What this server cannot do is refused by name, never ignored.
  for (const char* f : {"tools", "tool_choice", "functions", "function_call"})
    if (b.contains(f) && !b[f].is_null() && !(b[f].is_array() && b[f].empty()))
      throw ApiError(400, std::string("'") + f + "' is not supported: this server's models do not call tools", f,
                     "unsupported_parameter");
  if (b.contains("audio") && !b["audio"].is_null())
    throw ApiError(400, "'audio' is not supported: this server's models write text only", "audio",
                   "unsupported_parameter");
  if (b.contains("modalities") && !b["modalities"].is_null() && b["modalities"] != json::array({"text"}))
    throw ApiError(400, "'modalities' must be [\"text\"]: this server's models write text only", "modalities",
                   "unsupported_parameter");
  if (b.contains("response_format") && !b["response_format"].is_null()) {
    const json& rf = b["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
      bad("response_format", "must be an object with a \"type\"");
    const std::string type = rf["type"].get<std::string>();
    try {
      if (type == "json_object") {
        r.json_schema = json_object_schema();
      } else if (type == "json_schema") {
        if (!rf.contains("json_schema") || !rf["json_schema"].is_object() || !rf["json_schema"].contains("schema"))
          bad("response_format", "of type \"json_schema\" needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
        r.json_schema = compile_json_schema(rf["json_schema"]["schema"]);
      } else if (type != "text") {
        bad("response_format",
            "must be of type \"text\", \"json_object\" or \"json_schema\" (got " + json_text(rf["type"]) + ")");
      }
      if (r.json_schema) check_vocabulary_can_write(*r.json_schema, tok);
    } catch (const Error& e) {
      throw ApiError(400, std::string("'response_format': ") + e.what(), "response_format", "unsupported_schema");
    }
  }
  if (b.contains("echo") && !b["echo"].is_null() && boolean(b, "echo", false))
    throw ApiError(400, "'echo' is not supported", "echo", "unsupported_parameter");
  if (b.contains("best_of") && !b["best_of"].is_null() && integer(b, "best_of", 1, lim.max_n, 1) != r.n)
    throw ApiError(400, "'best_of' is not supported (leave it out or equal to n)", "best_of", "unsupported_parameter");
  return r;
}

std::string openai_finish_reason(const std::string& engine_reason) {
  return engine_reason == "stop" ? "stop" : "length";
}

namespace {

// A token's text for logprobs: its bytes when they are UTF-8 by themselves, else "bytes:\\xNN..." (part of a
// character: JSON cannot carry the raw bytes, and U+FFFD would make different tokens look alike).
std::string token_text(const Tokenizer& tok, int id) {
  const std::string raw = tok.decode_token(id);
  Utf8StreamDecoder dec;
  if (dec.push(raw) + dec.flush() == raw) return raw;
  std::string out = "bytes:";
  char hex[8];
  for (char c : raw) {
    std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
    out += hex;
  }
  return out;
}

json token_bytes(const std::string& t) {
  json b = json::array();
  for (char c : t) b.push_back(int(static_cast<unsigned char>(c)));
  return b;
}

}  // namespace

json logprobs_json(const TextRequest& r, const Tokenizer& tok, const std::vector<TokenLogprob>& lps, size_t& offset) {
  if (r.logprobs < 0) return nullptr;
  if (r.chat) {
    json content = json::array();
    for (const TokenLogprob& lp : lps) {
      json top = json::array();
      for (const auto& [id, l] : lp.top)
        top.push_back({{"token", token_text(tok, id)}, {"logprob", l}, {"bytes", token_bytes(tok.decode_token(id))}});
      content.push_back({{"token", token_text(tok, lp.token)},
                         {"logprob", lp.logprob},
                         {"bytes", token_bytes(tok.decode_token(lp.token))},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    tokens.push_back(token_text(tok, lp.token)), token_logprobs.push_back(lp.logprob), offsets.push_back(offset);
    offset += tok.decode_token(lp.token).size();
    json top = json::object();
    for (const auto& [id, l] : lp.top) top[token_text(tok, id)] = l;
    top_logprobs.push_back(top);
  }
  return {
      {"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json completion_answer(const TextRequest& r, const Tokenizer& tok, const std::string& id, int64_t created,
                       const std::string& model, std::vector<Choice> choices, int prompt_tokens,
                       int completion_tokens) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); i++) {
    json c = {{"index", i},
              {"finish_reason", choices[i].finish_reason},
              {"logprobs", logprobs_json(r, tok, choices[i].logprobs, choices[i].text_offset)}};
    if (r.chat) {
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    } else {
      c["text"] = choices[i].text;
    }
    cs.push_back(c);
  }
  return {{"id", id},           {"object", r.chat ? "chat.completion" : "text_completion"},
          {"created", created}, {"model", model},
          {"choices", cs},      {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json completion_chunk(const TextRequest& r, const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::string& finish_reason, bool role_only, const json& logprobs) {
  json c = {{"index", index}, {"logprobs", logprobs}};
  c["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  if (r.chat) {
    c["delta"] = role_only               ? json{{"role", "assistant"}, {"content", ""}}
                 : finish_reason.empty() ? json{{"content", text}}
                                         : json::object();
  } else {
    c["text"] = text;
  }
  json chunk = {{"id", id},
                {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({c})}};
  if (r.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk(const TextRequest& r, const std::string& id, int64_t created, const std::string& model,
                 int prompt_tokens, int completion_tokens) {
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) v |= uint8_t(bytes[i + 2]);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? k[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? k[v & 63] : '=';
  }
  return out;
}

}  // namespace aigc::serve

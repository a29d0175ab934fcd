// The two common chat templates, recognised by their markers and rendered directly (aigc/chat_template.h).
#include "aigc/chat_template.h"

#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "aigc/error.h"
#include "tokenizer_internal.h"

namespace aigc {
namespace {

bool has(const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; }

// Python's str.isspace(), which Jinja's trim filter strips.
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e) {
    const size_t len = tok::utf8_len_at(s, b);
    if (!len || !py_space(tok::utf8_decode_valid(s, b, len))) break;
    b += len;
  }
  while (e > b) {
    size_t c = e - 1;
    while (c > b && (static_cast<unsigned char>(s[c]) & 0xC0) == 0x80) c--;
    const size_t len = tok::utf8_len_at(s, c);
    if (len != e - c || !py_space(tok::utf8_decode_valid(s, c, len))) break;
    e = c;
  }
  return s.substr(b, e - b);
}

// A Jinja string literal's escapes.
std::string unescape(std::string_view lit) {
  std::string out;
  for (size_t i = 0; i < lit.size(); i++) {
    if (lit[i] != '\\' || i + 1 == lit.size()) {
      out += lit[i];
      continue;
    }
    const char e = lit[++i];
    out += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
  }
  return out;
}

// The default system message of a ChatML template: '<|im_start|>system\n' TEXT '<|im_end|>' inside one string
// literal (no quote in between), as Qwen2's and SmolLM's templates write it for chats that bring none.
std::optional<std::string> chatml_default_system(const std::string& t) {
  for (std::string_view head : {std::string_view("<|im_start|>system\\n"), std::string_view("<|im_start|>system\n")}) {
    for (size_t pos = t.find(head); pos != std::string::npos; pos = t.find(head, pos + 1)) {
      const size_t body = pos + head.size(), end = t.find("<|im_end|>", body);
      if (end == std::string::npos) break;
      const std::string_view lit(t.data() + body, end - body);
      bool literal = !lit.empty();
      for (size_t i = 0; i < lit.size() && literal; i++) {
        if (lit[i] == '\\') {
          i++;
        } else if (lit[i] == '\'' || lit[i] == '"' || lit[i] == '{' || lit[i] == '}') {
          literal = false;
        }
      }
      if (literal) return unescape(lit);
    }
  }
  return std::nullopt;
}

// The text of the template's string literal that starts right after `marker`, up to its escaped newline.
std::optional<std::string> literal_after(const std::string& t, std::string_view marker) {
  const size_t at = t.find(marker);
  if (at == std::string::npos) return std::nullopt;
  const size_t b = at + marker.size(), e = t.find_first_of("\\\"'\n", b);
  if (e == std::string::npos) return std::nullopt;
  return t.substr(b, e - b);
}

// Llama-3.1's "Today Date": strftime_now("%d %b %Y") where the template asks for it (Llama-3.2), else the
// template's own date_string.
std::string llama31_date(const std::string& t) {
  if (has(t, "strftime_now")) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%d %b %Y", &tm);
    return buf;
  }
  for (std::string_view m : {std::string_view("date_string = \""), std::string_view("date_string = '")})
    if (auto d = literal_after(t, m)) return *d;
  return "26 Jul 2024";
}

}  // namespace

ChatFormat chat_format(const std::string& t) {
  const std::string supported = " (supported: ChatML, Llama-3)";
  AIGC_CHECK(!t.empty(), "chat template not supported: the template is empty" + supported);
  if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>") && has(t, "<|eot_id|>"))
    return has(t, "Cutting Knowledge Date: ") ? ChatFormat::kLlama31 : ChatFormat::kLlama3;
  if (has(t, "<|im_start|>") && has(t, "<|im_end|>")) return ChatFormat::kChatML;
  std::string head = t.substr(0, 60);
  for (char& c : head)
    if (c == '\n' || c == '\r') c = ' ';
  fail("chat template not supported: \"" + head + (t.size() > 60 ? "...\"" : "\"") +
       " has neither ChatML's <|im_start|>/<|im_end|> nor Llama-3's <|start_header_id|>/<|end_header_id|>/<|eot_id|>" +
       supported);
}

std::string render_chat(const std::string& chat_template, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt, const std::string& bos_token) {
  std::string out;
  const ChatFormat format = chat_format(chat_template);
  if (format == ChatFormat::kLlama31) {
    // Always a system block (knowledge cutoff, date, then the chat's own system message); tool results under an
    // "ipython" header, as a JSON string.
    size_t first = 0;
    std::string system;
    if (!messages.empty() && messages[0].role == "system") system = trim(messages[0].content), first = 1;
    out += bos_token + "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: " +
           literal_after(chat_template, "Cutting Knowledge Date: ").value_or("December 2023") +
           "\nToday Date: " + llama31_date(chat_template) + "\n\n" + system + "<|eot_id|>";
    for (size_t i = first; i < messages.size(); i++) {
      const ChatMessage& m = messages[i];
      if (m.role == "tool" || m.role == "ipython")  // a string is "iterable" to Jinja: the template's tojson
        out += "<|start_header_id|>ipython<|end_header_id|>\n\n" +
               nlohmann::json(m.content).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "<|eot_id|>";
      else
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
  }
  if (format == ChatFormat::kLlama3) {
    for (size_t i = 0; i < messages.size(); i++) {
      if (i == 0) out += bos_token;
      out +=
          "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + trim(messages[i].content) + "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    return out;
  }
  if (has(chat_template, "bos_token")) out += bos_token;
  if (!messages.empty() && messages[0].role != "system")
    if (auto sys = chatml_default_system(chat_template)) out += "<|im_start|>system\n" + *sys + "<|im_end|>\n";
  for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  const std::string t = tok.chat_template();
  AIGC_CHECK(!t.empty(), "chat template not supported: this '" + tok.kind() +
                             "' tokenizer has no chat template (supported: ChatML, Llama-3 from a Hugging Face "
                             "tokenizer_config.json)");
  const std::optional<int> bos = tok.bos_id();
  return render_chat(t, messages, add_generation_prompt, bos ? tok.decode_token(*bos) : std::string());
}

}  // namespace aigc

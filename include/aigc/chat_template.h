// Chat templates of Hugging Face tokenizers (tokenizer_config.json's Jinja "chat_template"), rendered without a
// Jinja engine: the template is recognised by its markers as one of the two common forms, and the messages are laid
// out as that form lays them out.
//  - ChatML (Qwen2, SmolLM, ...): "<|im_start|>" role "\n" content "<|im_end|>\n" per message; the generation
//    prompt is "<|im_start|>assistant\n". A template that writes a default system message when the first message
//    is not a system one ('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' in Qwen2's) gets it too,
//    and one that mentions bos_token starts with it.
//  - Llama-3: bos_token, then "<|start_header_id|>" role "<|end_header_id|>\n\n" content "<|eot_id|>" per message,
//    the content trimmed of surrounding whitespace (the template's `| trim`, Python's str.strip()); the generation
//    prompt is "<|start_header_id|>assistant<|end_header_id|>\n\n".
//    Llama-3.1 / 3.2 / 3.3's form (recognised by "Cutting Knowledge Date: ") always opens with a system block:
//    bos_token "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: "
//    date "\n\n" + the chat's own (trimmed) system message + "<|eot_id|>", the date being today's ("%d %b %Y", local
//    time) where the template calls strftime_now, else its date_string ("26 Jul 2024"); messages of role tool or
//    ipython go under an "ipython" header, their content written as a JSON string (the template's tojson: Jinja
//    counts a string as iterable). Tool definitions (the templates' tools branches) are not
//    supported: there is no way to pass them.
// Anything else throws aigc::Error "chat template not supported: ... (supported: ChatML, Llama-3)".
//
// The rendered text spells its special tokens out; encode it as it is (Tokenizer::encode splits on the added
// tokens), without prefix_ids(): Hugging Face's apply_chat_template(tokenize=True) adds no special tokens either.
#pragma once
#include <string>
#include <vector>

#include "aigc/tokenizer.h"

namespace aigc {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ... (written as given)
  std::string content;
};

enum class ChatFormat { kChatML, kLlama3, kLlama31 };

// Recognises the template's form; throws aigc::Error for the unsupported ones.
ChatFormat chat_format(const std::string& chat_template);

std::string render_chat(const std::string& chat_template, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt, const std::string& bos_token);

// With tok's own template (Tokenizer::chat_template()) and BOS text; throws aigc::Error when tok has no template.
std::string render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace aigc

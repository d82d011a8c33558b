// Chat templates: a conversation rendered to prompt text with a model's Jinja
// template, natively (the C API's zipmoe_chat_apply_template), giving exactly
// what Hugging Face transformers' apply_chat_template(messages, tokenize=False)
// gives, and what python/zipmoe/chat_template.py (jinja2) gives.
//
// The template runs in the environment transformers gives it:
// - Jinja with trim_blocks and lstrip_blocks, {% break %} / {% continue %}, and
//   {% generation %}...{% endgeneration %} (rendered as its body), in zipmoe's
//   own interpreter (text/jinja/template.h lists what it implements);
// - raise_exception(message), strftime_now(format) (the local time),
//   namespace(...), dict(...), range(...), and a tojson filter that is
//   json.dumps with ensure_ascii=False (indent, separators, sort_keys);
// - the variables messages, tools (none unless given), documents (none unless
//   given), add_generation_prompt, the model's named special tokens
//   (kSpecialTokenNames) and extra variables, which override a special token
//   of the same name;
// - messages as plain JSON data: keys whose value is null are dropped, and a
//   message's reasoning given as reasoning_content, thinking or reasoning is
//   also available as thinking and reasoning_content.
//
// Errors: ChatTemplate::create gives Status::Format for a template that does
// not parse and Status::Unsupported for a Jinja feature the interpreter does
// not implement (naming it); render() gives Status::InvalidArgument for a
// conversation the template rejects (raise_exception) or fails on, and for
// messages, tools or documents of the wrong shape. Templates are untrusted:
// nothing in them can reach anything but the data given, and the work and the
// output of one render are bounded (text/jinja/template.h).
//
// A ChatTemplate is immutable; render() may run on many threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/status.h"

namespace zipmoe::text {

namespace jinja {
class Template;
}

// The named special tokens transformers hands to templates (SPECIAL_TOKENS_ATTRIBUTES).
extern const char* const kSpecialTokenNames[7];

struct ChatRenderOptions {
  bool add_generation_prompt = false;
  const json::Value* tools = nullptr;      // an array of objects, or null/nullptr: none
  const json::Value* documents = nullptr;  // an array of objects, or null/nullptr: none
  const json::Value* variables = nullptr;  // an object of extra variables, or null/nullptr
};

class ChatTemplate {
 public:
  // Compiles `source` for a model whose named special tokens are
  // `special_tokens` (an object of kSpecialTokenNames -> string; other
  // members are ignored).
  static Status create(std::string_view source, const json::Value& special_tokens,
                       std::shared_ptr<const ChatTemplate>* out);

  // Renders `messages` (an array of objects) into *out.
  Status render(const json::Value& messages, const ChatRenderOptions& options, std::string* out) const;

  const std::string& source() const { return source_; }

 private:
  ChatTemplate() = default;
  std::string source_;
  json::Value special_tokens_;
  std::shared_ptr<const jinja::Template> template_;
};

}  // namespace zipmoe::text

// zipmoe.h: tokens, text and chat templates.
#include <cstring>
#include <string>
#include <vector>

#include "capi/api_support.h"
#include "capi/chat.h"
#include "capi/handles.h"
#include "zipmoe.h"

using namespace zipmoe;
using namespace zipmoe::capi;

namespace {

std::string_view text_argument(const char* text, std::size_t length, const char* what) {
  if (text == nullptr && length > 0) {
    throw InvalidArgumentError(std::string(what) + " is NULL but its length is " + std::to_string(length));
  }
  return text ? std::string_view(text, length) : std::string_view();
}

std::int32_t tokenize(const zipmoe_model* model, const char* text, std::size_t text_len, bool add_special,
                      bool parse_special, std::int32_t* tokens, std::int32_t capacity) {
  std::shared_ptr<ModelState> m = find_model(model);
  const std::string_view input = text_argument(text, text_len, "text");
  text::EncodeOptions options;
  options.add_special_tokens = add_special;
  options.parse_special = parse_special;
  std::vector<std::int32_t> ids;
  m->require_tokenizer().encode(input, options, &ids);
  return deliver(ids.data(), ids.size(), sizeof(std::int32_t), tokens, capacity, "tokens");
}

std::int32_t detokenize(const zipmoe_model* model, const std::int32_t* tokens, std::int32_t n_tokens,
                        bool skip_special, char* text, std::int32_t capacity) {
  std::shared_ptr<ModelState> m = find_model(model);
  if (n_tokens < 0) throw InvalidArgumentError("n_tokens is negative");
  if (tokens == nullptr && n_tokens > 0) throw InvalidArgumentError("tokens is NULL");
  const text::Tokenizer& tokenizer = m->require_tokenizer();
  for (std::int32_t i = 0; i < n_tokens; ++i) {
    if (tokens[i] < 0 || tokens[i] >= tokenizer.vocab_size()) {
      throw InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                 " is outside the vocabulary [0, " + std::to_string(tokenizer.vocab_size()) + ")");
    }
  }
  const std::string out = tokenizer.decode(tokens, static_cast<std::size_t>(n_tokens), skip_special);
  return deliver(out.data(), out.size(), 1, text, capacity, "text");
}

}  // namespace

extern "C" {

int32_t zipmoe_tokenize(const zipmoe_model* model, const char* text, size_t text_len, bool add_special,
                        int32_t* tokens, int32_t capacity) {
  return guarded_count("zipmoe_tokenize",
                       [&] { return tokenize(model, text, text_len, add_special, false, tokens, capacity); });
}

int32_t zipmoe_tokenize_special(const zipmoe_model* model, const char* text, size_t text_len, bool add_special,
                                bool parse_special, int32_t* tokens, int32_t capacity) {
  return guarded_count("zipmoe_tokenize_special",
                       [&] { return tokenize(model, text, text_len, add_special, parse_special, tokens, capacity); });
}

int32_t zipmoe_detokenize(const zipmoe_model* model, const int32_t* tokens, int32_t n_tokens, char* text,
                          int32_t capacity) {
  return guarded_count("zipmoe_detokenize",
                       [&] { return detokenize(model, tokens, n_tokens, false, text, capacity); });
}

int32_t zipmoe_detokenize_special(const zipmoe_model* model, const int32_t* tokens, int32_t n_tokens,
                                  bool skip_special, char* text, int32_t capacity) {
  return guarded_count("zipmoe_detokenize_special",
                       [&] { return detokenize(model, tokens, n_tokens, skip_special, text, capacity); });
}

zipmoe_chat_params zipmoe_chat_default_params(void) {
  zipmoe_chat_params params;
  std::memset(&params, 0, sizeof(params));
  params.add_generation_prompt = true;
  return params;
}

int32_t zipmoe_chat_apply_template(const zipmoe_model* model, const char* template_source,
                                   const zipmoe_chat_message* messages, size_t n_messages,
                                   const zipmoe_chat_params* params, char* text, int32_t capacity) {
  return guarded_count("zipmoe_chat_apply_template", [&] {
    const std::string out = render_chat(model, template_source, messages_from_array(messages, n_messages), params);
    return deliver(out.data(), out.size(), 1, text, capacity, "text");
  });
}

int32_t zipmoe_chat_apply_template_json(const zipmoe_model* model, const char* template_source,
                                        const char* messages_json, const zipmoe_chat_params* params, char* text,
                                        int32_t capacity) {
  return guarded_count("zipmoe_chat_apply_template_json", [&] {
    const std::string out = render_chat(model, template_source, messages_from_json(messages_json), params);
    return deliver(out.data(), out.size(), 1, text, capacity, "text");
  });
}

}  // extern "C"

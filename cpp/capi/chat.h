// Chat templates for the C API: the conversation given as C structs or JSON,
// rendered with the model's template or one given as source.
#pragma once

#include <cstddef>
#include <string>

#include "common/json.h"
#include "zipmoe.h"

namespace zipmoe::capi {

// messages[0, n) as a JSON array of {"role", "content"} objects (a NULL field
// is left out, as Python drops None values). InvalidArgumentError for NULL
// messages with n > 0, or text that is not UTF-8.
json::Value messages_from_array(const zipmoe_chat_message* messages, std::size_t n);
// The parsed `messages_json` (FormatError when it is not JSON).
json::Value messages_from_json(const char* messages_json);

// The prompt text of `messages`: rendered with template_source when not NULL
// (model may then be NULL), else with the model's template. params NULL: the
// defaults of zipmoe_chat_default_params().
std::string render_chat(const zipmoe_model* model, const char* template_source, const json::Value& messages,
                        const zipmoe_chat_params* params);

struct ModelState;
// The same with the model's own template.
std::string render_model_chat(const ModelState& model, const json::Value& messages, const zipmoe_chat_params* params);

}  // namespace zipmoe::capi

#include "capi/chat.h"

#include <cstring>
#include <memory>

#include "capi/api_support.h"
#include "capi/handles.h"
#include "text/chat_template.h"

namespace zipmoe::capi {

namespace {

json::Value parse_json_argument(const char* text, const char* what) {
  json::Value value;
  throw_if_error(json::parse(text, &value).with_context(what));
  return value;
}

}  // namespace

json::Value messages_from_array(const zipmoe_chat_message* messages, std::size_t n) {
  if (messages == nullptr && n > 0) throw InvalidArgumentError("messages is NULL");
  std::vector<json::Value> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<json::Value::Member> members;
    const std::string where = "message " + std::to_string(i);
    if (messages[i].role) {
      check_utf8(messages[i].role, (where + " role").c_str());
      members.emplace_back("role", json::Value::string(messages[i].role));
    }
    if (messages[i].content) {
      check_utf8(messages[i].content, (where + " content").c_str());
      members.emplace_back("content", json::Value::string(messages[i].content));
    }
    out.push_back(json::Value::object(std::move(members)));
  }
  return json::Value::array(std::move(out));
}

json::Value messages_from_json(const char* messages_json) {
  if (messages_json == nullptr) throw InvalidArgumentError("messages_json is NULL");
  return parse_json_argument(messages_json, "messages_json");
}

namespace {

// Parses the JSON arguments of params into *options (which points into the three values).
void render_options(const zipmoe_chat_params* params, json::Value* tools, json::Value* documents,
                    json::Value* variables, text::ChatRenderOptions* options) {
  zipmoe_chat_params p = zipmoe_chat_default_params();
  if (params) p = *params;
  options->add_generation_prompt = p.add_generation_prompt;
  if (p.tools_json) {
    *tools = parse_json_argument(p.tools_json, "params->tools_json");
    options->tools = tools;
  }
  if (p.documents_json) {
    *documents = parse_json_argument(p.documents_json, "params->documents_json");
    options->documents = documents;
  }
  if (p.variables_json) {
    *variables = parse_json_argument(p.variables_json, "params->variables_json");
    if (!variables->is_object()) throw InvalidArgumentError("params->variables_json is not a JSON object");
    options->variables = variables;
  }
}

std::string render(const text::ChatTemplate& chat_template, const json::Value& messages,
                   const zipmoe_chat_params* params) {
  json::Value tools, documents, variables;
  text::ChatRenderOptions options;
  render_options(params, &tools, &documents, &variables, &options);
  std::string out;
  throw_if_error(chat_template.render(messages, options, &out));
  return out;
}

}  // namespace

std::string render_chat(const zipmoe_model* model, const char* template_source, const json::Value& messages,
                        const zipmoe_chat_params* params) {
  if (template_source == nullptr) {
    if (model == nullptr) throw InvalidArgumentError("model and template_source are both NULL");
    return render_model_chat(*find_model(model), messages, params);
  }
  check_utf8(template_source, "template_source");
  json::Value special = json::Value::object({});
  if (model) special = find_model(model)->special_tokens;
  std::shared_ptr<const text::ChatTemplate> chat_template;
  throw_if_error(text::ChatTemplate::create(template_source, special, &chat_template));
  return render(*chat_template, messages, params);
}

std::string render_model_chat(const ModelState& model, const json::Value& messages, const zipmoe_chat_params* params) {
  return render(*model.chat_template(), messages, params);
}

}  // namespace zipmoe::capi

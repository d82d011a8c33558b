#include "text/chat_template.h"

#include <ctime>

#include "text/jinja/interpreter.h"
#include "text/jinja/template.h"

namespace zipmoe::text {

const char* const kSpecialTokenNames[7] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                           "pad_token", "cls_token", "mask_token"};

namespace {

using jinja::CallArguments;
using jinja::Interpreter;
using jinja::Value;

// The names the template's own arguments take (python/zipmoe/chat_template.py passes them explicitly).
constexpr const char* kArgumentNames[] = {"messages", "tools", "documents", "add_generation_prompt"};
// A message's reasoning, under any of the names templates read it by.
constexpr const char* kReasoningKeys[] = {"reasoning_content", "thinking", "reasoning"};

// A message as Python's _messages() gives it to the template: null members
// dropped, the reasoning also under "thinking" (first) and "reasoning_content" (last).
Status normalize_message(const json::Value& message, std::size_t index, Value* out) {
  if (!message.is_object()) {
    return Status::InvalidArgument("message " + std::to_string(index) + " is not an object: " +
                                   json::serialize(message));
  }
  std::vector<json::Value::Member> members;
  for (const auto& member : message.members()) {
    if (!member.second.is_null()) members.push_back(member);
  }
  const json::Value* reasoning = nullptr;
  for (const char* key : kReasoningKeys) {
    for (const auto& member : members) {
      if (!reasoning && member.first == key) reasoning = &member.second;
    }
  }
  if (reasoning) {
    // {"thinking": r, **message, "reasoning_content": r} in Python: "thinking" comes first (with the
    // message's own value when it has one), "reasoning_content" keeps its place or comes last.
    const json::Value copy = *reasoning;
    std::vector<json::Value::Member> ordered{{"thinking", copy}};
    for (auto& member : members) {
      if (member.first == "thinking") {
        ordered[0].second = std::move(member.second);
      } else {
        ordered.push_back(std::move(member));
      }
    }
    bool placed = false;
    for (auto& member : ordered) {
      if (member.first == "reasoning_content") {
        member.second = copy;
        placed = true;
      }
    }
    if (!placed) ordered.emplace_back("reasoning_content", copy);
    members = std::move(ordered);
  }
  *out = Value::from_json(json::Value::object(std::move(members)));
  return Status::Ok();
}

Status list_of_objects(const json::Value* value, const char* what, Value* out) {
  if (value == nullptr || value->is_null()) {
    *out = Value::none();
    return Status::Ok();
  }
  bool ok = value->is_array();
  if (ok) {
    for (const json::Value& item : value->items()) ok = ok && item.is_object();
  }
  if (!ok) return Status::InvalidArgument(std::string(what) + " must be a list of JSON objects");
  *out = Value::from_json(*value);
  return Status::Ok();
}

Status raise_exception(Interpreter& in, CallArguments& args, Value* out) {
  const std::string message = args.positional.empty() ? std::string() : args.positional[0].str();
  return Status::InvalidArgument(message);
}

Status strftime_now(Interpreter& in, CallArguments& args, Value* out) {
  std::vector<Value> a;
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, "strftime_now", {{"format", Value(), true}}, &a));
  if (!a[0].is_string()) return in.error("strftime_now: the format must be a string");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string text(256, '\0');
  const std::size_t n = a[0].as_string().empty() ? 0 : std::strftime(&text[0], text.size(), a[0].as_string().c_str(), &local);
  if (n == 0 && !a[0].as_string().empty()) return in.error("strftime_now: the formatted date is too long");
  text.resize(n);
  *out = Value::string(std::move(text));
  return Status::Ok();
}

}  // namespace

Status ChatTemplate::create(std::string_view source, const json::Value& special_tokens,
                            std::shared_ptr<const ChatTemplate>* out) {
  if (source.empty()) return Status::InvalidArgument("a chat template must be a non-empty string");
  std::shared_ptr<const jinja::Template> parsed;
  const Status status = jinja::Template::parse(source, &parsed);
  if (!status.ok()) {
    return status.code() == StatusCode::kFormat
               ? Status::Format("chat template does not parse: " + status.message())
               : Status(status.code(), "chat template: " + status.message());
  }
  std::shared_ptr<ChatTemplate> result(new ChatTemplate());
  result->source_ = std::string(source);
  std::vector<json::Value::Member> special;
  if (special_tokens.is_object()) {
    for (const char* name : kSpecialTokenNames) {
      const json::Value* value = special_tokens.find(name);
      if (value && value->is_string()) special.emplace_back(name, *value);
    }
  }
  result->special_tokens_ = json::Value::object(std::move(special));
  result->template_ = std::move(parsed);
  *out = std::move(result);
  return Status::Ok();
}

Status ChatTemplate::render(const json::Value& messages, const ChatRenderOptions& options, std::string* out) const {
  if (!messages.is_array()) {
    return Status::InvalidArgument("messages must be a list of {\"role\": ..., \"content\": ...} objects");
  }
  if (messages.items().empty()) {
    return Status::InvalidArgument("cannot render an empty conversation; give at least one message");
  }
  std::vector<jinja::Variable> variables;
  for (const auto& [name, value] : special_tokens_.members()) variables.push_back({name, Value::from_json(value)});
  if (options.variables && !options.variables->is_null()) {
    if (!options.variables->is_object()) return Status::InvalidArgument("the extra variables must be an object");
    for (const auto& [name, value] : options.variables->members()) {
      for (const char* argument : kArgumentNames) {
        if (name == argument) {
          return Status::InvalidArgument("'" + name + "' cannot be an extra variable (it is an argument of the "
                                         "template)");
        }
      }
      variables.push_back({name, Value::from_json(value)});
    }
  }
  jinja::ValueList normalized;
  for (std::size_t i = 0; i < messages.items().size(); ++i) {
    Value message;
    ZIPMOE_RETURN_IF_ERROR(normalize_message(messages.items()[i], i, &message));
    normalized.push_back(std::move(message));
  }
  Value tools, documents;
  ZIPMOE_RETURN_IF_ERROR(list_of_objects(options.tools, "tools", &tools));
  ZIPMOE_RETURN_IF_ERROR(list_of_objects(options.documents, "documents", &documents));
  variables.push_back({"messages", Value::list(std::move(normalized))});
  variables.push_back({"tools", tools});
  variables.push_back({"documents", documents});
  variables.push_back({"add_generation_prompt", Value::boolean(options.add_generation_prompt)});
  variables.push_back({"raise_exception", Value::callable("raise_exception", raise_exception)});
  variables.push_back({"strftime_now", Value::callable("strftime_now", strftime_now)});
  const Status status = template_->render(variables, out);
  if (!status.ok()) return Status(status.code(), "chat template: " + status.message());
  return Status::Ok();
}

}  // namespace zipmoe::text

// jinja2's builtins as text/jinja/template.h lists them: filters, tests, the
// methods of str, dict and list, the globals, and the Python operations they
// share with the interpreter (iteration, ordering, JSON). Internal to text/jinja.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/value.h"

namespace zipmoe::text::jinja {

enum class FilterStatus { kKnown, kUnsupported, kUnknown };
// Whether jinja2 has a filter of this name, and whether zipmoe implements it.
FilterStatus filter_status(const std::string& name);
bool is_test(const std::string& name);

Status apply_filter(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, Value* out);
Status apply_test(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, bool* out);

// obj.name as jinja2's sandbox resolves it: a method of str / dict / list, an
// attribute of a namespace or loop, a dict's item, or Undefined.
Status get_attribute(Interpreter& in, const Value& object, const std::string& name, Value* out);
// obj[key]: an item, else an attribute when key is a string, else Undefined.
Status get_item(Interpreter& in, const Value& object, const Value& key, Value* out);

// range, dict, namespace.
std::vector<Variable> standard_globals();

// Python's iter(): the items of a list or tuple, the keys of a dict, the
// characters of a string; nothing for Undefined; an error for the rest.
Status iterate(Interpreter& in, const Value& value, ValueList* out);
// Python's a < b (*less); an error for values Python does not order.
Status less_than(Interpreter& in, const Value& a, const Value& b, bool* less);
// Python's len() (Undefined: 0).
Status length_of(Interpreter& in, const Value& value, std::int64_t* length);

struct JsonFormat {
  bool indent = false;
  std::string indent_text;    // per level, when indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// json.dumps(value, ensure_ascii=False, ...).
Status to_json(Interpreter& in, const Value& value, const JsonFormat& format, std::string* out);

}  // namespace zipmoe::text::jinja

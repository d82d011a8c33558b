// The values a template computes with, with Python's semantics as Jinja gives
// them to templates: None, bools, 64-bit integers, doubles, strings (UTF-8;
// lengths, indexes and slices count code points), lists, tuples, dicts (keys
// in insertion order), Jinja's Undefined, namespace and loop objects, and
// callables (globals, macros, bound methods).
//
// Values are cheap to copy: strings and containers are shared. Containers are
// immutable once built, except a namespace's attributes (`{% set ns.x = ... %}`),
// as in jinja2's ImmutableSandboxedEnvironment.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace zipmoe::text::jinja {

class Value;
class Interpreter;
struct CallArguments;

enum class Kind : std::uint8_t {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kList,
  kTuple,
  kDict,
  kObject,    // a namespace or a loop: named attributes
  kCallable,
};

using ValueList = std::vector<Value>;

struct Dict {
  std::vector<std::pair<Value, Value>> items;  // insertion order
  const Value* find(const Value& key) const;
  void set(Value key, Value value);
};

struct Object {
  std::string type_name;  // "Namespace", "LoopContext"
  bool assignable = false;  // a namespace: `{% set ns.x = ... %}`
  std::vector<std::pair<std::string, Value>> attributes;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);
};

// A function a template can call. Returns a Status for errors (InvalidArgument
// for a runtime error of the template).
struct Callable {
  std::string name;
  std::function<Status(Interpreter&, CallArguments&, Value*)> call;
};

class Value {
 public:
  Value() = default;  // Undefined
  static Value undefined(std::string name = std::string());
  static Value none();
  static Value boolean(bool v);
  static Value integer(std::int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value list(ValueList items);
  static Value tuple(ValueList items);
  static Value dict(std::shared_ptr<Dict> dict);
  static Value object(std::shared_ptr<Object> object);
  static Value callable(std::string name, std::function<Status(Interpreter&, CallArguments&, Value*)> call);
  // JSON data: objects become dicts, integer literals ints, other numbers floats.
  static Value from_json(const json::Value& value);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_sequence() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return bool_; }
  std::int64_t as_int() const { return kind_ == Kind::kBool ? (bool_ ? 1 : 0) : int_; }
  double as_double() const;  // of a number (bools and ints included)
  const std::string& as_string() const { return *string_; }  // strings only
  // What an Undefined stands for, for messages ("'x' is undefined"); "" when unknown.
  const std::string& undefined_hint() const;
  const ValueList& items() const { return *list_; }
  const Dict& dict() const { return *dict_; }
  Object& object() const { return *object_; }
  const Callable& callable() const { return *callable_; }

  // Python's truth value (Undefined is false).
  bool truthy() const;
  // str(value) as Python prints it ("None", "True", "[1, 'a']", "1.5", ...); Undefined prints "".
  std::string str() const;
  // repr(value).
  std::string repr() const;
  // Python's ==: numbers by value (True == 1 == 1.0), lists and tuples never equal each other.
  bool equals(const Value& other) const;
  // Python's type name, for messages ("str", "int", "list", "dict", "NoneType", "Undefined").
  const char* type_name() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool bool_ = false;
  std::int64_t int_ = 0;
  double float_ = 0.0;
  std::shared_ptr<const std::string> string_;
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<const Dict> dict_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<const Callable> callable_;
};

// Python's float repr: the shortest text that reads back to the same double
// ("0.1", "1e+16", "1e-05", "2.0", "inf", "nan").
std::string float_repr(double value);

// Code point helpers over valid UTF-8.
std::size_t code_point_count(std::string_view text);
// The byte offset of each code point, and text.size() at the end.
std::vector<std::size_t> code_point_offsets(std::string_view text);
// Python's str.isspace() of one code point.
bool is_python_space(std::uint32_t code_point);

}  // namespace zipmoe::text::jinja

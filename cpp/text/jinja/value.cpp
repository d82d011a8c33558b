#include "text/jinja/value.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "text/unicode.h"

namespace zipmoe::text::jinja {

namespace {

const std::string& empty_string() {
  static const std::string empty;
  return empty;
}

// Python's str.isprintable() of one code point: not a control, format,
// surrogate, private-use, unassigned or separator character (the space excepted).
bool is_printable(std::uint32_t cp) {
  if (cp == ' ') return true;
  switch (unicode_category(cp)) {
    case UnicodeCategory::kCc:
    case UnicodeCategory::kCf:
    case UnicodeCategory::kCs:
    case UnicodeCategory::kCo:
    case UnicodeCategory::kCn:
    case UnicodeCategory::kZl:
    case UnicodeCategory::kZp:
    case UnicodeCategory::kZs:
      return false;
    default:
      return true;
  }
}

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  std::vector<std::uint32_t> units;
  std::vector<std::uint32_t> offsets;
  decode_utf8(s, &units, &offsets);
  for (std::size_t i = 0; i < units.size(); ++i) {
    const std::uint32_t cp = units[i];
    char escape[16];
    if (cp == static_cast<std::uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp >= kInvalidByteBase) {
      std::snprintf(escape, sizeof(escape), "\\x%02x", cp - kInvalidByteBase);
      out += escape;
    } else if (!is_printable(cp)) {
      if (cp < 0x100) {
        std::snprintf(escape, sizeof(escape), "\\x%02x", cp);
      } else if (cp < 0x10000) {
        std::snprintf(escape, sizeof(escape), "\\u%04x", cp);
      } else {
        std::snprintf(escape, sizeof(escape), "\\U%08x", cp);
      }
      out += escape;
    } else {
      out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    }
  }
  out += quote;
  return out;
}

// Values nested deeper than this print as "..." and compare unequal: a template
// can build such values, and recursing through them would exhaust the stack.
constexpr int kMaxNesting = 1000;

std::string repr_at(const Value& value, int depth);

std::string join_items(const ValueList& items, const char* open, const char* close, bool tuple, int depth) {
  std::string out = open;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += repr_at(items[i], depth + 1);
  }
  if (tuple && items.size() == 1) out += ",";
  return out + close;
}

std::string dict_repr(const Dict& dict, int depth) {
  std::string out = "{";
  for (std::size_t i = 0; i < dict.items.size(); ++i) {
    if (i) out += ", ";
    out += repr_at(dict.items[i].first, depth + 1) + ": " + repr_at(dict.items[i].second, depth + 1);
  }
  return out + "}";
}

std::string object_repr(const Object& object, int depth) {
  if (object.type_name == "LoopContext") {
    const Value* index = object.find("index");
    const Value* length = object.find("length");
    return "<LoopContext " + (index ? index->str() : std::string("?")) + "/" +
           (length ? length->str() : std::string("?")) + ">";
  }
  std::string out = "<" + object.type_name + " {";
  for (std::size_t i = 0; i < object.attributes.size(); ++i) {
    if (i) out += ", ";
    out += string_repr(object.attributes[i].first) + ": " + repr_at(object.attributes[i].second, depth + 1);
  }
  return out + "}>";
}

std::string repr_at(const Value& v, int depth) {
  if (depth > kMaxNesting) return "...";
  switch (v.kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return v.as_bool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(v.as_int());
    case Kind::kFloat:
      return float_repr(v.as_double());
    case Kind::kString:
      return string_repr(v.as_string());
    case Kind::kList:
      return join_items(v.items(), "[", "]", false, depth);
    case Kind::kTuple:
      return join_items(v.items(), "(", ")", true, depth);
    case Kind::kDict:
      return dict_repr(v.dict(), depth);
    case Kind::kObject:
      return object_repr(v.object(), depth);
    case Kind::kCallable:
      return "<function " + v.callable().name + ">";
  }
  return std::string();
}

bool equals_at(const Value& a, const Value& b, int depth) {
  if (depth > kMaxNesting) return false;
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.as_string() == b.as_string();
    case Kind::kList:
    case Kind::kTuple: {
      if (a.items().size() != b.items().size()) return false;
      for (std::size_t i = 0; i < a.items().size(); ++i) {
        if (!equals_at(a.items()[i], b.items()[i], depth + 1)) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (a.dict().items.size() != b.dict().items.size()) return false;
      for (const auto& [key, value] : a.dict().items) {
        const Value* found = b.dict().find(key);
        if (!found || !equals_at(value, *found, depth + 1)) return false;
      }
      return true;
    }
    case Kind::kObject:
      return &a.object() == &b.object();
    case Kind::kCallable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

}  // namespace

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (k.equals(key)) return &v;
  }
  return nullptr;
}

void Dict::set(Value key, Value value) {
  for (auto& item : items) {
    if (item.first.equals(key)) {
      item.second = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

const Value* Object::find(std::string_view name) const {
  for (const auto& [n, v] : attributes) {
    if (n == name) return &v;
  }
  return nullptr;
}

void Object::set(const std::string& name, Value value) {
  for (auto& attribute : attributes) {
    if (attribute.first == name) {
      attribute.second = std::move(value);
      return;
    }
  }
  attributes.emplace_back(name, std::move(value));
}

Value Value::undefined(std::string name) {
  Value v;
  v.kind_ = Kind::kUndefined;
  if (!name.empty()) v.string_ = std::make_shared<const std::string>(std::move(name));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.bool_ = b;
  return v;
}

Value Value::integer(std::int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.int_ = i;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.float_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.string_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::list(ValueList items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<const ValueList>(std::move(items));
  return v;
}

Value Value::tuple(ValueList items) {
  Value v = list(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::dict(std::shared_ptr<Dict> dict) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::move(dict);
  return v;
}

Value Value::object(std::shared_ptr<Object> object) {
  Value v;
  v.kind_ = Kind::kObject;
  v.object_ = std::move(object);
  return v;
}

Value Value::callable(std::string name, std::function<Status(Interpreter&, CallArguments&, Value*)> call) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(call)});
  return v;
}

Value Value::from_json(const json::Value& value) {
  switch (value.type()) {
    case json::Type::kNull:
      return none();
    case json::Type::kBool:
      return boolean(value.as_bool());
    case json::Type::kNumber:
      return value.is_integer() ? integer(value.as_int()) : number(value.as_number());
    case json::Type::kString:
      return string(value.as_string());
    case json::Type::kArray: {
      ValueList items;
      items.reserve(value.items().size());
      for (const json::Value& item : value.items()) items.push_back(from_json(item));
      return list(std::move(items));
    }
    case json::Type::kObject: {
      auto d = std::make_shared<Dict>();
      d->items.reserve(value.members().size());
      for (const auto& [key, member] : value.members()) d->items.emplace_back(string(key), from_json(member));
      return dict(std::move(d));
    }
  }
  return none();
}

const std::string& Value::undefined_hint() const { return string_ ? *string_ : empty_string(); }

double Value::as_double() const {
  switch (kind_) {
    case Kind::kBool:
      return bool_ ? 1.0 : 0.0;
    case Kind::kInt:
      return static_cast<double>(int_);
    case Kind::kFloat:
      return float_;
    default:
      return 0.0;
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return bool_;
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0.0;
    case Kind::kString:
      return !string_->empty();
    case Kind::kList:
    case Kind::kTuple:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->items.empty();
    case Kind::kObject:
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return std::string();
    case Kind::kString:
      return *string_;
    default:
      return repr();
  }
}

std::string Value::repr() const { return repr_at(*this, 0); }

bool Value::equals(const Value& other) const { return equals_at(*this, other, 0); }

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kTuple:
      return "tuple";
    case Kind::kDict:
      return "dict";
    case Kind::kObject:
      return object_->type_name.c_str();
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

std::string float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
  // The fewest significant digits that read back to the same double.
  char text[40];
  int precision = 1;
  for (; precision <= 17; ++precision) {
    std::snprintf(text, sizeof(text), "%.*e", precision - 1, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  // text is "-d.ddde+XX": split it into sign, digits and decimal exponent.
  std::string s(text);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const std::size_t e = s.find('e');
  const int exponent = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (std::size_t i = 0; i < e; ++i) {
    if (s[i] != '.') digits += s[i];
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int n = static_cast<int>(digits.size());
  std::string out;
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out = "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    } else if (exponent + 1 >= n) {
      out = digits + std::string(static_cast<std::size_t>(exponent + 1 - n), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<std::size_t>(exponent + 1)) + "." +
            digits.substr(static_cast<std::size_t>(exponent + 1));
    }
  } else {
    out = digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    char exp_text[16];
    std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp_text;
  }
  return sign + out;
}

std::size_t code_point_count(std::string_view text) {
  std::size_t n = 0;
  for (const char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::vector<std::size_t> code_point_offsets(std::string_view text) {
  std::vector<std::size_t> offsets;
  offsets.reserve(text.size() + 1);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(text.size());
  return offsets;
}

bool is_python_space(std::uint32_t code_point) {
  return is_whitespace(code_point) || (code_point >= 0x1C && code_point <= 0x1F);
}

}  // namespace zipmoe::text::jinja

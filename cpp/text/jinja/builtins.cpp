// jinja2's filters, tests, globals and the methods of str, dict and list, with
// Python's semantics (text/jinja/template.h lists what is implemented).
#include "text/jinja/builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "text/unicode.h"

namespace zipmoe::text::jinja {

namespace {

using Filter = Status (*)(Interpreter&, const Value&, CallArguments&, Value*);

// ---- helpers -----------------------------------------------------------------

std::vector<std::uint32_t> code_points(const std::string& s) {
  std::vector<std::uint32_t> units;
  decode_utf8(s, &units, nullptr);
  return units;
}

std::string from_code_points(const std::vector<std::uint32_t>& units, std::size_t begin, std::size_t end) {
  std::string out;
  for (std::size_t i = begin; i < end; ++i) append_utf8(units[i], &out);
  return out;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::string lower(std::string s) {
  for (char& c : s) c = ascii_lower(c);
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = ascii_upper(c);
  return s;
}

// Python's str.capitalize (ASCII letters): the first character upper case, the rest lower case.
std::string capitalize(const std::string& s) {
  std::string out = lower(s);
  if (!out.empty()) out[0] = ascii_upper(out[0]);
  return out;
}

bool is_space(std::uint32_t cp) { return is_python_space(cp); }

std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::vector<std::uint32_t> units = code_points(s);
  std::set<std::uint32_t> set;
  const bool whitespace = !chars.is_string();
  if (!whitespace) {
    for (std::uint32_t cp : code_points(chars.as_string())) set.insert(cp);
  }
  auto strippable = [&](std::uint32_t cp) { return whitespace ? is_space(cp) : set.count(cp) > 0; };
  std::size_t begin = 0, end = units.size();
  if (left) {
    while (begin < end && strippable(units[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strippable(units[end - 1])) --end;
  }
  return from_code_points(units, begin, end);
}

// Python's str.split(sep, maxsplit) (sep none: runs of whitespace).
ValueList split(const std::string& s, const Value& sep, std::int64_t maxsplit, bool from_right) {
  ValueList parts;
  if (sep.is_string()) {
    const std::string& d = sep.as_string();
    if (!from_right) {
      std::size_t start = 0;
      while (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit) {
        const std::size_t at = s.find(d, start);
        if (at == std::string::npos) break;
        parts.push_back(Value::string(s.substr(start, at - start)));
        start = at + d.size();
      }
      parts.push_back(Value::string(s.substr(start)));
    } else {
      std::size_t end = s.size();
      ValueList reversed;
      while (maxsplit < 0 || static_cast<std::int64_t>(reversed.size()) < maxsplit) {
        if (end < d.size()) break;
        const std::size_t at = s.rfind(d, end - d.size());
        if (at == std::string::npos) break;
        reversed.push_back(Value::string(s.substr(at + d.size(), end - at - d.size())));
        end = at;
      }
      parts.push_back(Value::string(s.substr(0, end)));
      parts.insert(parts.end(), reversed.rbegin(), reversed.rend());
    }
    return parts;
  }
  std::vector<std::uint32_t> units = code_points(s);
  if (from_right) std::reverse(units.begin(), units.end());
  std::size_t i = 0;
  const std::size_t n = units.size();
  ValueList found;
  while (i < n) {
    while (i < n && is_space(units[i])) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && static_cast<std::int64_t>(found.size()) == maxsplit) {
      std::size_t end = n;
      while (end > i && is_space(units[end - 1])) --end;
      std::vector<std::uint32_t> rest(units.begin() + static_cast<std::ptrdiff_t>(i),
                                      units.begin() + static_cast<std::ptrdiff_t>(end));
      if (from_right) std::reverse(rest.begin(), rest.end());
      found.push_back(Value::string(from_code_points(rest, 0, rest.size())));
      break;
    }
    const std::size_t start = i;
    while (i < n && !is_space(units[i])) ++i;
    std::vector<std::uint32_t> word(units.begin() + static_cast<std::ptrdiff_t>(start),
                                    units.begin() + static_cast<std::ptrdiff_t>(i));
    if (from_right) std::reverse(word.begin(), word.end());
    found.push_back(Value::string(from_code_points(word, 0, word.size())));
  }
  if (from_right) std::reverse(found.begin(), found.end());
  return found;
}

bool is_line_break(std::uint32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D || cp == 0x1E ||
         cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

// Python's str.splitlines(keepends).
ValueList splitlines(const std::string& s, bool keepends) {
  const std::vector<std::uint32_t> units = code_points(s);
  ValueList lines;
  std::size_t start = 0, i = 0;
  while (i < units.size()) {
    if (!is_line_break(units[i])) {
      ++i;
      continue;
    }
    std::size_t end = i + 1;
    if (units[i] == '\r' && end < units.size() && units[end] == '\n') ++end;
    lines.push_back(Value::string(from_code_points(units, start, keepends ? end : i)));
    start = i = end;
  }
  if (start < units.size()) lines.push_back(Value::string(from_code_points(units, start, units.size())));
  return lines;
}

std::string replace(const std::string& s, const std::string& old, const std::string& with, std::int64_t count) {
  if (old.empty()) {
    // Python inserts `with` between characters (and at both ends).
    const std::vector<std::size_t> offsets = code_point_offsets(s);
    std::string out;
    std::int64_t done = 0;
    for (std::size_t i = 0; i + 1 < offsets.size() + 1; ++i) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      if (i + 1 < offsets.size()) out.append(s, offsets[i], offsets[i + 1] - offsets[i]);
    }
    return out;
  }
  std::string out;
  std::size_t start = 0;
  std::int64_t done = 0;
  while (count < 0 || done < count) {
    const std::size_t at = s.find(old, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += with;
    start = at + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

// The code point index of a byte offset.
std::int64_t code_point_index(const std::string& s, std::size_t byte) {
  return static_cast<std::int64_t>(code_point_count(std::string_view(s).substr(0, byte)));
}

// Python's start/end arguments of find/startswith as byte offsets into s.
void byte_range(const std::string& s, const Value& start, const Value& end, std::size_t* first, std::size_t* last) {
  const std::vector<std::size_t> offsets = code_point_offsets(s);
  const auto n = static_cast<std::int64_t>(offsets.size() - 1);
  auto clamp = [&](const Value& v, std::int64_t fallback) {
    if (!(v.is_int() || v.is_bool())) return fallback;
    std::int64_t i = v.as_int();
    if (i < 0) i += n;
    return std::max<std::int64_t>(0, std::min(i, n));
  };
  const std::int64_t a = clamp(start, 0), b = clamp(end, n);
  *first = offsets[static_cast<std::size_t>(a)];
  *last = offsets[static_cast<std::size_t>(std::max(a, b))];
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

bool category_all(const std::string& s, bool (*accept)(std::uint32_t)) {
  const std::vector<std::uint32_t> units = code_points(s);
  if (units.empty()) return false;
  for (std::uint32_t cp : units) {
    if (!accept(cp)) return false;
  }
  return true;
}

bool is_digit_cp(std::uint32_t cp) { return unicode_category(cp) == UnicodeCategory::kNd; }
bool is_alpha_cp(std::uint32_t cp) { return is_letter(cp); }
bool is_alnum_cp(std::uint32_t cp) { return is_letter(cp) || is_number(cp); }
bool is_numeric_cp(std::uint32_t cp) { return is_number(cp); }

// str.islower(): some cased characters, all lower case.
bool cased_all(const std::string& s, bool want_lower) {
  bool cased = false;
  for (std::uint32_t cp : code_points(s)) {
    const UnicodeCategory c = unicode_category(cp);
    if (c == UnicodeCategory::kLu || c == UnicodeCategory::kLt) {
      if (want_lower) return false;
      cased = true;
    } else if (c == UnicodeCategory::kLl) {
      if (!want_lower) return false;
      cased = true;
    }
  }
  return cased;
}

// jinja2's title: each piece after a run of whitespace, '-', '(', '{', '[', '<' starts upper case.
std::string title(const std::string& s) {
  std::string out;
  bool start = true;
  for (char c : s) {
    const bool separator = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' ||
                           std::isspace(static_cast<unsigned char>(c));
    if (separator) {
      out += c;
      start = true;
    } else {
      out += start ? ascii_upper(c) : ascii_lower(c);
      start = false;
    }
  }
  return out;
}

// ---- Python operations ----------------------------------------------------------

Status require_string(Interpreter& in, const Value& v, const char* what) {
  if (v.is_undefined()) return in.undefined_error(v);
  if (!v.is_string()) return in.error(std::string(what) + " must be a string, not " + v.type_name());
  return Status::Ok();
}

Status require_int(Interpreter& in, const Value& v, const char* what) {
  if (v.is_undefined()) return in.undefined_error(v);
  if (!(v.is_int() || v.is_bool())) return in.error(std::string(what) + " must be an integer, not " + v.type_name());
  return Status::Ok();
}

// jinja2's make_attrgetter: "a.b.0" looked up part by part as items.
Status get_path(Interpreter& in, const Value& object, const std::string& path, Value* out) {
  Value v = object;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('.', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    Value key = Value::string(part);
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      key = Value::integer(std::strtoll(part.c_str(), nullptr, 10));
    }
    if (v.is_undefined()) return in.undefined_error(v);
    Value next;
    ZIPMOE_RETURN_IF_ERROR(get_item(in, v, key, &next));
    v = std::move(next);
    start = end + 1;
  }
  *out = std::move(v);
  return Status::Ok();
}

// A sort key: the value itself, lowered when it is a string and the comparison ignores case.
Value fold(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(lower(v.as_string()));
  return v;
}

// Stable sort of items by key(item) (Python's sorted), failing on values Python does not order.
Status sort_values(Interpreter& in, ValueList* items, const std::vector<Value>& keys, bool reverse) {
  std::vector<std::size_t> order(items->size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  Status failure;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (!failure.ok()) return false;
    bool less = false;
    const Status s = reverse ? less_than(in, keys[b], keys[a], &less) : less_than(in, keys[a], keys[b], &less);
    if (!s.ok()) failure = s;
    return less;
  });
  ZIPMOE_RETURN_IF_ERROR(failure);
  ValueList sorted;
  sorted.reserve(items->size());
  for (std::size_t i : order) sorted.push_back((*items)[i]);
  *items = std::move(sorted);
  return Status::Ok();
}

void json_string(const std::string& s, bool ensure_ascii, std::string* out) {
  *out += '"';
  std::vector<std::uint32_t> units;
  decode_utf8(s, &units, nullptr);
  char escape[16];
  for (std::uint32_t cp : units) {
    switch (cp) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
          if (cp >= 0x10000 && cp < 0x110000) {
            const std::uint32_t v = cp - 0x10000;
            std::snprintf(escape, sizeof(escape), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            std::snprintf(escape, sizeof(escape), "\\u%04x", cp & 0xFFFF);
          }
          *out += escape;
        } else {
          append_utf8(cp, out);
        }
    }
  }
  *out += '"';
}

struct JsonWriter {
  Interpreter& in;
  const JsonFormat& format;
  bool ensure_ascii;

  Status key_text(const Value& key, std::string* out) {
    switch (key.kind()) {
      case Kind::kString: json_string(key.as_string(), ensure_ascii, out); return Status::Ok();
      case Kind::kBool: *out += key.as_bool() ? "\"true\"" : "\"false\""; return Status::Ok();
      case Kind::kInt: *out += "\"" + std::to_string(key.as_int()) + "\""; return Status::Ok();
      case Kind::kFloat: {
        std::string number;
        ZIPMOE_RETURN_IF_ERROR(write(key, 0, &number));
        *out += "\"" + number + "\"";
        return Status::Ok();
      }
      case Kind::kNone: *out += "\"null\""; return Status::Ok();
      default:
        return in.error(std::string("keys must be str, int, float, bool or None, not ") + key.type_name());
    }
  }

  void newline(int level, std::string* out) const {
    *out += '\n';
    for (int i = 0; i < level; ++i) *out += format.indent_text;
  }

  Status write(const Value& v, int level, std::string* out) {
    if (level > 1000) return in.error("a value nested too deep for tojson");
    ZIPMOE_RETURN_IF_ERROR(in.check_size(out->size()));
    switch (v.kind()) {
      case Kind::kNone: *out += "null"; return Status::Ok();
      case Kind::kBool: *out += v.as_bool() ? "true" : "false"; return Status::Ok();
      case Kind::kInt: *out += std::to_string(v.as_int()); return Status::Ok();
      case Kind::kFloat: {
        const double d = v.as_double();
        if (std::isnan(d)) *out += "NaN";
        else if (std::isinf(d)) *out += d > 0 ? "Infinity" : "-Infinity";
        else *out += float_repr(d);
        return Status::Ok();
      }
      case Kind::kString: json_string(v.as_string(), ensure_ascii, out); return Status::Ok();
      case Kind::kList:
      case Kind::kTuple: {
        if (v.items().empty()) {
          *out += "[]";
          return Status::Ok();
        }
        *out += '[';
        for (std::size_t i = 0; i < v.items().size(); ++i) {
          if (i) *out += format.item_separator;
          if (format.indent) newline(level + 1, out);
          ZIPMOE_RETURN_IF_ERROR(write(v.items()[i], level + 1, out));
        }
        if (format.indent) newline(level, out);
        *out += ']';
        return Status::Ok();
      }
      case Kind::kDict: {
        if (v.dict().items.empty()) {
          *out += "{}";
          return Status::Ok();
        }
        ValueList keys;
        for (const auto& item : v.dict().items) keys.push_back(item.first);
        std::vector<std::size_t> order(keys.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        if (format.sort_keys) {
          ValueList indexes;
          for (std::size_t i = 0; i < order.size(); ++i) indexes.push_back(Value::integer(static_cast<std::int64_t>(i)));
          ZIPMOE_RETURN_IF_ERROR(sort_values(in, &indexes, keys, false));
          for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::size_t>(indexes[i].as_int());
        }
        *out += '{';
        for (std::size_t i = 0; i < order.size(); ++i) {
          if (i) *out += format.item_separator;
          if (format.indent) newline(level + 1, out);
          const auto& item = v.dict().items[order[i]];
          ZIPMOE_RETURN_IF_ERROR(key_text(item.first, out));
          *out += format.key_separator;
          ZIPMOE_RETURN_IF_ERROR(write(item.second, level + 1, out));
        }
        if (format.indent) newline(level, out);
        *out += '}';
        return Status::Ok();
      }
      default:
        return in.error(std::string("Object of type ") + v.type_name() + " is not JSON serializable");
    }
  }
};

// Python's printf-style "text % values" for %s, %r, %d, %i, %f, %%.
Status percent_format(Interpreter& in, const std::string& text, const ValueList& values, Value* out) {
  std::string result;
  std::size_t next = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      result += text[i];
      continue;
    }
    if (++i >= text.size()) return in.error("incomplete format");
    std::string spec;
    while (i < text.size() && std::strchr("0123456789.-+ #", text[i])) spec += text[i++];
    if (i >= text.size()) return in.error("incomplete format");
    const char conversion = text[i];
    if (conversion == '%') {
      result += '%';
      continue;
    }
    if (next >= values.size()) return in.error("not enough arguments for format string");
    const Value& v = values[next++];
    char buffer[512];
    switch (conversion) {
      case 's': result += v.str(); break;
      case 'r': result += v.repr(); break;
      case 'd':
      case 'i':
        if (!v.is_number()) return in.error(std::string("%d format: a real number is required, not ") + v.type_name());
        std::snprintf(buffer, sizeof(buffer), ("%" + spec + "lld").c_str(),
                      static_cast<long long>(v.is_float() ? std::trunc(v.as_double()) : v.as_double()));
        result += buffer;
        break;
      case 'f':
        if (!v.is_number()) return in.error(std::string("%f format: a real number is required, not ") + v.type_name());
        std::snprintf(buffer, sizeof(buffer), ("%" + spec + "f").c_str(), v.as_double());
        result += buffer;
        break;
      default:
        return in.error(std::string("the format conversion %") + conversion + " is not supported");
    }
    ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
  }
  if (next < values.size()) return in.error("not all arguments converted during string formatting");
  *out = Value::string(std::move(result));
  return Status::Ok();
}

// Python's str.format for {}, {0}, {name}, {{ and }} (no format specs).
Status brace_format(Interpreter& in, const std::string& text, const CallArguments& args, Value* out) {
  std::string result;
  std::size_t automatic = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '}' ) {
      if (i + 1 < text.size() && text[i + 1] == '}') {
        result += '}';
        ++i;
        continue;
      }
      return in.error("single '}' encountered in format string");
    }
    if (c != '{') {
      result += c;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '{') {
      result += '{';
      ++i;
      continue;
    }
    const std::size_t close = text.find('}', i);
    if (close == std::string::npos) return in.error("single '{' encountered in format string");
    std::string field = text.substr(i + 1, close - i - 1);
    i = close;
    bool use_repr = false;
    if (field.size() >= 2 && field[field.size() - 2] == '!') {
      use_repr = field.back() == 'r';
      field.resize(field.size() - 2);
    }
    if (field.find(':') != std::string::npos || field.find('.') != std::string::npos ||
        field.find('[') != std::string::npos) {
      return in.error("format specifications and field lookups in str.format are not supported");
    }
    const Value* v = nullptr;
    if (field.empty()) {
      if (automatic >= args.positional.size()) return in.error("replacement index out of range for str.format");
      v = &args.positional[automatic++];
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
      const std::size_t k = std::strtoul(field.c_str(), nullptr, 10);
      if (k >= args.positional.size()) return in.error("replacement index out of range for str.format");
      v = &args.positional[k];
    } else {
      for (const auto& [name, value] : args.keywords) {
        if (name == field) v = &value;
      }
      if (!v) return in.error("str.format: no argument named '" + field + "'");
    }
    result += use_repr ? v->repr() : v->str();
    ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
  }
  *out = Value::string(std::move(result));
  return Status::Ok();
}

// ---- methods ------------------------------------------------------------------

Value bound(const Value& self, const std::string& name,
            Status (*method)(Interpreter&, const Value&, const std::string&, CallArguments&, Value*)) {
  return Value::callable(name, [self, name, method](Interpreter& in, CallArguments& args, Value* out) {
    return method(in, self, name, args, out);
  });
}

Status string_method(Interpreter& in, const Value& self, const std::string& name, CallArguments& args, Value* out) {
  const std::string& s = self.as_string();
  std::vector<Value> a;
  if (name == "startswith" || name == "endswith") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"prefix", Value(), true}, {"start", Value::none()},
                                                        {"end", Value::none()}}, &a));
    std::size_t first, last;
    byte_range(s, a[1], a[2], &first, &last);
    const std::string_view range = std::string_view(s).substr(first, last - first);
    ValueList candidates = a[0].kind() == Kind::kTuple ? a[0].items() : ValueList{a[0]};
    bool result = false;
    for (const Value& c : candidates) {
      ZIPMOE_RETURN_IF_ERROR(require_string(in, c, (name + "() argument").c_str()));
      const std::string& p = c.as_string();
      if (p.size() <= range.size() &&
          (name == "startswith" ? range.compare(0, p.size(), p) == 0
                                : range.compare(range.size() - p.size(), p.size(), p) == 0)) {
        result = true;
      }
    }
    *out = Value::boolean(result);
    return Status::Ok();
  }
  if (name == "split" || name == "rsplit") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"sep", Value::none()}, {"maxsplit", Value::integer(-1)}}, &a));
    if (!a[0].is_none()) ZIPMOE_RETURN_IF_ERROR(require_string(in, a[0], "the separator"));
    if (a[0].is_string() && a[0].as_string().empty()) return in.error("empty separator");
    ZIPMOE_RETURN_IF_ERROR(require_int(in, a[1], "maxsplit"));
    *out = Value::list(split(s, a[0], a[1].as_int(), name == "rsplit"));
    return Status::Ok();
  }
  if (name == "splitlines") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"keepends", Value::boolean(false)}}, &a));
    *out = Value::list(splitlines(s, a[0].truthy()));
    return Status::Ok();
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"chars", Value::none()}}, &a));
    if (!a[0].is_none()) ZIPMOE_RETURN_IF_ERROR(require_string(in, a[0], "chars"));
    *out = Value::string(strip(s, a[0], name != "rstrip", name != "lstrip"));
    return Status::Ok();
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    *out = Value::string(name == "lower" ? lower(s) : name == "upper" ? upper(s) : name == "title" ? title(s)
                                                                                                   : capitalize(s));
    return Status::Ok();
  }
  if (name == "replace") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "replace", {{"old", Value(), true}, {"new", Value(), true},
                                                     {"count", Value::integer(-1)}}, &a));
    ZIPMOE_RETURN_IF_ERROR(require_string(in, a[0], "replace() argument 1"));
    ZIPMOE_RETURN_IF_ERROR(require_string(in, a[1], "replace() argument 2"));
    ZIPMOE_RETURN_IF_ERROR(require_int(in, a[2], "count"));
    std::string result = replace(s, a[0].as_string(), a[1].as_string(), a[2].as_int());
    ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
    *out = Value::string(std::move(result));
    return Status::Ok();
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"sub", Value(), true}, {"start", Value::none()},
                                                        {"end", Value::none()}}, &a));
    ZIPMOE_RETURN_IF_ERROR(require_string(in, a[0], (name + "() argument").c_str()));
    std::size_t first, last;
    byte_range(s, a[1], a[2], &first, &last);
    const std::string range = s.substr(first, last - first);
    const std::string& sub = a[0].as_string();
    if (name == "count") {
      std::int64_t n = 0;
      if (sub.empty()) {
        n = static_cast<std::int64_t>(code_point_count(range)) + 1;
      } else {
        for (std::size_t at = range.find(sub); at != std::string::npos; at = range.find(sub, at + sub.size())) ++n;
      }
      *out = Value::integer(n);
      return Status::Ok();
    }
    const bool reverse = name[0] == 'r';
    const std::size_t at = reverse ? range.rfind(sub) : range.find(sub);
    if (at == std::string::npos) {
      if (name == "index" || name == "rindex") return in.error("substring not found");
      *out = Value::integer(-1);
    } else {
      *out = Value::integer(code_point_index(s, first + at));
    }
    return Status::Ok();
  }
  if (name == "join") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "join", {{"iterable", Value(), true}}, &a));
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, a[0], &items));
    std::string result;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return in.error("sequence item " + std::to_string(i) + ": expected str instance, " +
                        items[i].type_name() + " found");
      }
      if (i) result += s;
      result += items[i].as_string();
      ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
    }
    *out = Value::string(std::move(result));
    return Status::Ok();
  }
  if (name == "format") return brace_format(in, s, args, out);
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
  bool result = false;
  if (name == "isdigit" || name == "isdecimal") result = category_all(s, is_digit_cp);
  else if (name == "isnumeric") result = category_all(s, is_numeric_cp);
  else if (name == "isalpha") result = category_all(s, is_alpha_cp);
  else if (name == "isalnum") result = category_all(s, is_alnum_cp);
  else if (name == "isspace") result = category_all(s, is_space);
  else if (name == "islower") result = cased_all(s, true);
  else if (name == "isupper") result = cased_all(s, false);
  *out = Value::boolean(result);
  return Status::Ok();
}

const std::set<std::string>& string_methods() {
  static const std::set<std::string> names = {
      "startswith", "endswith", "split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "lower", "upper",
      "title", "capitalize", "replace", "find", "rfind", "index", "rindex", "count", "join", "format", "isdigit",
      "isdecimal", "isnumeric", "isalpha", "isalnum", "isspace", "islower", "isupper"};
  return names;
}

ValueList dict_items(const Dict& d) {
  ValueList items;
  for (const auto& [k, v] : d.items) items.push_back(Value::tuple({k, v}));
  return items;
}

Status dict_method(Interpreter& in, const Value& self, const std::string& name, CallArguments& args, Value* out) {
  std::vector<Value> a;
  const Dict& d = self.dict();
  if (name == "get") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "get", {{"key", Value(), true}, {"default", Value::none()}}, &a));
    const Value* found = d.find(a[0]);
    *out = found ? *found : a[1];
    return Status::Ok();
  }
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
  if (name == "items") {
    *out = Value::list(dict_items(d));
  } else if (name == "keys" || name == "values") {
    ValueList items;
    for (const auto& [k, v] : d.items) items.push_back(name == "keys" ? k : v);
    *out = Value::list(std::move(items));
  } else {  // copy
    *out = self;
  }
  return Status::Ok();
}

Status list_method(Interpreter& in, const Value& self, const std::string& name, CallArguments& args, Value* out) {
  std::vector<Value> a;
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"value", Value(), true}}, &a));
  const ValueList& items = self.items();
  if (name == "count") {
    *out = Value::integer(std::count_if(items.begin(), items.end(), [&](const Value& v) { return v.equals(a[0]); }));
    return Status::Ok();
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].equals(a[0])) {
      *out = Value::integer(static_cast<std::int64_t>(i));
      return Status::Ok();
    }
  }
  return in.error(a[0].repr() + " is not in list");
}

Value no_attribute(const Value& object, const std::string& name) {
  return Value::undefined("'" + std::string(object.type_name()) + " object' has no attribute '" + name + "'");
}

Value unsafe(const Value& object, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + object.type_name() + "' object is unsafe");
}

// ---- filters --------------------------------------------------------------------

Status apply_attribute_or_test(Interpreter& in, const Value& item, const std::string* attribute, const std::string& test,
                               const CallArguments& test_args, bool* result) {
  Value subject = item;
  if (attribute) ZIPMOE_RETURN_IF_ERROR(get_path(in, item, *attribute, &subject));
  if (test.empty()) {
    *result = subject.truthy();
    return Status::Ok();
  }
  CallArguments args = test_args;
  return apply_test(in, test, subject, args, result);
}

// select, reject, selectattr, rejectattr.
Status select_filter(Interpreter& in, const Value& subject, CallArguments& args, bool by_attribute, bool keep,
                     Value* out) {
  ValueList items;
  ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
  std::size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty()) return in.error("selectattr/rejectattr need an attribute name");
    ZIPMOE_RETURN_IF_ERROR(require_string(in, args.positional[0], "the attribute"));
    attribute = args.positional[next++].as_string();
  }
  std::string test;
  if (next < args.positional.size()) {
    ZIPMOE_RETURN_IF_ERROR(require_string(in, args.positional[next], "the test name"));
    test = args.positional[next++].as_string();
    if (!is_test(test)) return in.error("no test named '" + test + "'");
  }
  CallArguments test_args;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end());
  test_args.keywords = args.keywords;
  ValueList kept;
  for (const Value& item : items) {
    bool result = false;
    ZIPMOE_RETURN_IF_ERROR(
        apply_attribute_or_test(in, item, by_attribute ? &attribute : nullptr, test, test_args, &result));
    if (result == keep) kept.push_back(item);
  }
  *out = Value::list(std::move(kept));
  return Status::Ok();
}

Status filter_map(Interpreter& in, const Value& subject, CallArguments& args, Value* out) {
  ValueList items;
  ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
  ValueList mapped;
  const Value* attribute = nullptr;
  Value fallback;
  bool has_default = false;
  for (const auto& [name, value] : args.keywords) {
    if (name == "attribute") attribute = &value;
    else if (name == "default") {
      fallback = value;
      has_default = true;
    }
  }
  if (attribute) {
    ZIPMOE_RETURN_IF_ERROR(require_string(in, *attribute, "map's attribute"));
    for (const Value& item : items) {
      Value v;
      ZIPMOE_RETURN_IF_ERROR(get_path(in, item, attribute->as_string(), &v));
      if (v.is_undefined() && has_default) v = fallback;
      mapped.push_back(std::move(v));
    }
  } else {
    if (args.positional.empty()) return in.error("map needs a filter name or attribute=");
    ZIPMOE_RETURN_IF_ERROR(require_string(in, args.positional[0], "the filter name"));
    const std::string filter = args.positional[0].as_string();
    if (filter_status(filter) != FilterStatus::kKnown) return in.error("no filter named '" + filter + "'");
    for (const Value& item : items) {
      CallArguments filter_args;
      filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
      filter_args.keywords = args.keywords;
      Value v;
      ZIPMOE_RETURN_IF_ERROR(apply_filter(in, filter, item, filter_args, &v));
      mapped.push_back(std::move(v));
    }
  }
  *out = Value::list(std::move(mapped));
  return Status::Ok();
}

Status filter_tojson(Interpreter& in, const Value& subject, CallArguments& args, Value* out) {
  std::vector<Value> a;
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, "tojson", {{"ensure_ascii", Value::boolean(false)}, {"indent", Value::none()},
                                                  {"separators", Value::none()}, {"sort_keys", Value::boolean(false)}},
                                 &a));
  JsonFormat format;
  if (!a[1].is_none()) {
    format.indent = true;
    if (a[1].is_string()) {
      format.indent_text = a[1].as_string();
    } else if (a[1].is_int() || a[1].is_bool()) {
      format.indent_text = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, a[1].as_int())), ' ');
    } else {
      return in.error(std::string("tojson: indent must be an integer or a string, not ") + a[1].type_name());
    }
    format.item_separator = ",";
  }
  if (!a[2].is_none()) {
    if (!a[2].is_sequence() || a[2].items().size() != 2 || !a[2].items()[0].is_string() ||
        !a[2].items()[1].is_string()) {
      return in.error("tojson: separators must be a pair of strings");
    }
    format.item_separator = a[2].items()[0].as_string();
    format.key_separator = a[2].items()[1].as_string();
  }
  format.sort_keys = a[3].truthy();
  std::string text;
  JsonWriter writer{in, format, a[0].truthy()};
  ZIPMOE_RETURN_IF_ERROR(writer.write(subject, 0, &text));
  *out = Value::string(std::move(text));
  return Status::Ok();
}

Status filter_sort_like(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args,
                        Value* out) {
  std::vector<Value> a;
  if (name == "sort") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "sort", {{"reverse", Value::boolean(false)},
                                                  {"case_sensitive", Value::boolean(false)},
                                                  {"attribute", Value::none()}}, &a));
  } else {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"case_sensitive", Value::boolean(false)},
                                                        {"attribute", Value::none()}}, &a));
    a.insert(a.begin(), Value::boolean(false));
  }
  const bool reverse = a[0].truthy(), case_sensitive = a[1].truthy();
  ValueList items;
  ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
  std::vector<Value> keys;
  for (const Value& item : items) {
    Value key = item;
    if (!a[2].is_none()) {
      if (a[2].is_string()) {
        ZIPMOE_RETURN_IF_ERROR(get_path(in, item, a[2].as_string(), &key));
      } else {
        ZIPMOE_RETURN_IF_ERROR(get_item(in, item, a[2], &key));
      }
    }
    keys.push_back(fold(key, case_sensitive));
  }
  if (name == "unique") {
    ValueList kept;
    std::vector<Value> seen;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.equals(keys[i]); })) {
        seen.push_back(keys[i]);
        kept.push_back(items[i]);
      }
    }
    *out = Value::list(std::move(kept));
    return Status::Ok();
  }
  if (name == "min" || name == "max") {
    if (items.empty()) {
      *out = Value::undefined("no " + std::string(name == "min" ? "smallest" : "largest") +
                              " item, the sequence was empty");
      return Status::Ok();
    }
    std::size_t best = 0;
    for (std::size_t i = 1; i < items.size(); ++i) {
      bool better = false;
      ZIPMOE_RETURN_IF_ERROR(name == "min" ? less_than(in, keys[i], keys[best], &better)
                                           : less_than(in, keys[best], keys[i], &better));
      if (better) best = i;
    }
    *out = items[best];
    return Status::Ok();
  }
  ZIPMOE_RETURN_IF_ERROR(sort_values(in, &items, keys, reverse));
  *out = Value::list(std::move(items));
  return Status::Ok();
}

Status filter_indent(Interpreter& in, const Value& subject, CallArguments& args, Value* out) {
  std::vector<Value> a;
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, "indent", {{"width", Value::integer(4)}, {"first", Value::boolean(false)},
                                                  {"blank", Value::boolean(false)}}, &a));
  const std::string indention = a[0].is_string() ? a[0].as_string()
                                                 : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, a[0].as_int())), ' ');
  const ValueList lines = splitlines(subject.str() + "\n", false);
  std::string result;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i].as_string();
    if (i) {
      result += '\n';
      if (a[2].truthy() || !line.empty()) result += indention;
    }
    result += line;
  }
  if (a[1].truthy()) result = indention + result;
  ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
  *out = Value::string(std::move(result));
  return Status::Ok();
}

// Python's int(text) for base 10 (surrounding whitespace and '_' between digits allowed).
bool parse_int(const std::string& text, std::int64_t* out) {
  std::string t = strip(text, Value::none(), true, true);
  std::string digits;
  std::size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) digits += t[i++];
  bool previous_digit = false;
  for (; i < t.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(t[i]))) {
      digits += t[i];
      previous_digit = true;
    } else if (t[i] == '_' && previous_digit && i + 1 < t.size() && std::isdigit(static_cast<unsigned char>(t[i + 1]))) {
      previous_digit = false;
    } else {
      return false;
    }
  }
  if (digits.empty() || digits == "+" || digits == "-") return false;
  errno = 0;
  *out = std::strtoll(digits.c_str(), nullptr, 10);
  return errno != ERANGE;
}

bool parse_float(const std::string& text, double* out) {
  const std::string t = strip(text, Value::none(), true, true);
  if (t.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(t.c_str(), &end);
  return end && *end == '\0' && t.find_first_of("xXpP") == std::string::npos;
}

Status filter_number(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, Value* out) {
  std::vector<Value> a;
  if (name == "int") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "int", {{"default", Value::integer(0)}, {"base", Value::integer(10)}}, &a));
    std::int64_t i = 0;
    double d = 0;
    if (subject.is_int() || subject.is_bool()) {
      *out = Value::integer(subject.as_int());
    } else if (subject.is_float() && std::isfinite(subject.as_double()) && std::fabs(subject.as_double()) < 9.2e18) {
      *out = Value::integer(static_cast<std::int64_t>(std::trunc(subject.as_double())));
    } else if (subject.is_string() && parse_int(subject.as_string(), &i)) {
      *out = Value::integer(i);
    } else if (subject.is_string() && parse_float(subject.as_string(), &d) && std::isfinite(d) &&
               std::fabs(d) < 9.2e18) {
      *out = Value::integer(static_cast<std::int64_t>(std::trunc(d)));
    } else {
      *out = a[0];
    }
    return Status::Ok();
  }
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, "float", {{"default", Value::number(0.0)}}, &a));
  double d = 0;
  if (subject.is_number()) *out = Value::number(subject.as_double());
  else if (subject.is_string() && parse_float(subject.as_string(), &d)) *out = Value::number(d);
  else *out = a[0];
  return Status::Ok();
}

Status filter(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, Value* out) {
  std::vector<Value> a;
  if (name == "tojson") return filter_tojson(in, subject, args, out);
  if (name == "default" || name == "d") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "default", {{"default_value", Value::string("")},
                                                     {"boolean", Value::boolean(false)}}, &a));
    *out = subject.is_undefined() || (a[1].truthy() && !subject.truthy()) ? a[0] : subject;
    return Status::Ok();
  }
  if (name == "length" || name == "count") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    std::int64_t n = 0;
    ZIPMOE_RETURN_IF_ERROR(length_of(in, subject, &n));
    *out = Value::integer(n);
    return Status::Ok();
  }
  if (name == "string") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "string", {}, &a));
    *out = Value::string(subject.str());
    return Status::Ok();
  }
  if (name == "list") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "list", {}, &a));
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    *out = Value::list(std::move(items));
    return Status::Ok();
  }
  if (name == "join") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "join", {{"d", Value::string("")}, {"attribute", Value::none()}}, &a));
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    const std::string separator = a[0].str();
    std::string result;
    for (std::size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (!a[1].is_none()) ZIPMOE_RETURN_IF_ERROR(get_path(in, items[i], a[1].str(), &item));
      if (i) result += separator;
      result += item.str();
      ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
    }
    *out = Value::string(std::move(result));
    return Status::Ok();
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    const std::string s = subject.str();
    *out = Value::string(name == "lower" ? lower(s) : name == "upper" ? upper(s) : name == "title" ? title(s)
                                                                                                   : capitalize(s));
    return Status::Ok();
  }
  if (name == "trim") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "trim", {{"chars", Value::none()}}, &a));
    *out = Value::string(strip(subject.str(), a[0], true, true));
    return Status::Ok();
  }
  if (name == "replace") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "replace", {{"old", Value(), true}, {"new", Value(), true},
                                                     {"count", Value::none()}}, &a));
    std::string result = replace(subject.str(), a[0].str(), a[1].str(), a[2].is_none() ? -1 : a[2].as_int());
    ZIPMOE_RETURN_IF_ERROR(in.check_size(result.size()));
    *out = Value::string(std::move(result));
    return Status::Ok();
  }
  if (name == "first" || name == "last") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    if (items.empty()) {
      *out = Value::undefined("no " + name + " item, the sequence was empty");
    } else {
      *out = name == "first" ? items.front() : items.back();
    }
    return Status::Ok();
  }
  if (name == "reverse") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "reverse", {}, &a));
    if (subject.is_string()) {
      std::vector<std::uint32_t> units = code_points(subject.as_string());
      std::reverse(units.begin(), units.end());
      *out = Value::string(from_code_points(units, 0, units.size()));
      return Status::Ok();
    }
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    std::reverse(items.begin(), items.end());
    *out = Value::list(std::move(items));
    return Status::Ok();
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    return filter_sort_like(in, name, subject, args, out);
  }
  if (name == "sum") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "sum", {{"attribute", Value::none()}, {"start", Value::integer(0)}}, &a));
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    Value total = a[1];
    for (const Value& item : items) {
      Value v = item;
      if (!a[0].is_none()) ZIPMOE_RETURN_IF_ERROR(get_path(in, item, a[0].str(), &v));
      if (!total.is_number() || !v.is_number()) {
        return in.error(std::string("unsupported operand type(s) for +: '") + total.type_name() + "' and '" +
                        v.type_name() + "'");
      }
      if (!total.is_float() && !v.is_float()) {
        std::int64_t r;
        if (__builtin_add_overflow(total.as_int(), v.as_int(), &r)) return in.error("integer overflow");
        total = Value::integer(r);
      } else {
        total = Value::number(total.as_double() + v.as_double());
      }
    }
    *out = total;
    return Status::Ok();
  }
  if (name == "items") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "items", {}, &a));
    if (subject.is_undefined()) {
      *out = Value::list({});
    } else if (subject.is_dict()) {
      *out = Value::list(dict_items(subject.dict()));
    } else {
      return in.error("can only get item pairs from a mapping");
    }
    return Status::Ok();
  }
  if (name == "dictsort") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "dictsort", {{"case_sensitive", Value::boolean(false)},
                                                      {"by", Value::string("key")}, {"reverse", Value::boolean(false)}},
                                   &a));
    if (!subject.is_dict()) return in.error("dictsort: the value is not a mapping");
    const bool by_value = a[1].is_string() && a[1].as_string() == "value";
    if (!by_value && !(a[1].is_string() && a[1].as_string() == "key")) {
      return in.error("dictsort: 'by' must be 'key' or 'value'");
    }
    ValueList items = dict_items(subject.dict());
    std::vector<Value> keys;
    for (const Value& item : items) keys.push_back(fold(item.items()[by_value ? 1 : 0], a[0].truthy()));
    ZIPMOE_RETURN_IF_ERROR(sort_values(in, &items, keys, a[2].truthy()));
    *out = Value::list(std::move(items));
    return Status::Ok();
  }
  if (name == "int" || name == "float") return filter_number(in, name, subject, args, out);
  if (name == "abs") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "abs", {}, &a));
    if (subject.is_int() || subject.is_bool()) {
      if (subject.as_int() == INT64_MIN) return in.error("integer overflow");
      *out = Value::integer(std::llabs(subject.as_int()));
    } else if (subject.is_float()) {
      *out = Value::number(std::fabs(subject.as_double()));
    } else {
      return in.error(std::string("bad operand type for abs(): '") + subject.type_name() + "'");
    }
    return Status::Ok();
  }
  if (name == "round") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "round", {{"precision", Value::integer(0)},
                                                   {"method", Value::string("common")}}, &a));
    const std::string method = a[1].str();
    if (method != "common" && method != "ceil" && method != "floor") {
      return in.error("method must be common, ceil or floor");
    }
    if (!subject.is_number()) return in.error(std::string("round: a number is required, not ") + subject.type_name());
    if (method == "common" && !subject.is_float()) {
      *out = Value::integer(subject.as_int());
      return Status::Ok();
    }
    const double scale = std::pow(10.0, static_cast<double>(a[0].as_int()));
    const double x = subject.as_double() * scale;
    const double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
    *out = Value::number(r / scale);
    return Status::Ok();
  }
  if (name == "center") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "center", {{"width", Value::integer(80)}}, &a));
    const std::string s = subject.str();
    const std::int64_t length = static_cast<std::int64_t>(code_point_count(s));
    const std::int64_t width = std::min<std::int64_t>(a[0].as_int(), static_cast<std::int64_t>(kMaxTextBytes));
    if (width <= length) {
      *out = Value::string(s);
      return Status::Ok();
    }
    const std::int64_t pad = width - length;
    // Python's str.center: the extra space goes left when the padding and the width are both odd.
    const std::int64_t left = pad / 2 + (pad & width & 1);
    *out = Value::string(std::string(static_cast<std::size_t>(left), ' ') + s +
                         std::string(static_cast<std::size_t>(pad - left), ' '));
    return Status::Ok();
  }
  if (name == "indent") return filter_indent(in, subject, args, out);
  if (name == "wordcount") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "wordcount", {}, &a));
    std::int64_t words = 0;
    bool in_word = false;
    for (std::uint32_t cp : code_points(subject.str())) {
      const bool word = is_letter(cp) || is_number(cp) || is_mark(cp) || cp == '_';
      if (word && !in_word) ++words;
      in_word = word;
    }
    *out = Value::integer(words);
    return Status::Ok();
  }
  if (name == "batch") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "batch", {{"linecount", Value(), true}, {"fill_with", Value::none()}}, &a));
    ZIPMOE_RETURN_IF_ERROR(require_int(in, a[0], "batch's linecount"));
    if (a[0].as_int() < 1) return in.error("batch's linecount must be >= 1");
    ValueList items;
    ZIPMOE_RETURN_IF_ERROR(iterate(in, subject, &items));
    ValueList batches, current;
    for (const Value& item : items) {
      current.push_back(item);
      if (static_cast<std::int64_t>(current.size()) == a[0].as_int()) {
        batches.push_back(Value::list(std::move(current)));
        current.clear();
      }
    }
    if (!current.empty()) {
      if (!a[1].is_none()) {
        while (static_cast<std::int64_t>(current.size()) < a[0].as_int()) current.push_back(a[1]);
      }
      batches.push_back(Value::list(std::move(current)));
    }
    *out = Value::list(std::move(batches));
    return Status::Ok();
  }
  if (name == "attr") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "attr", {{"name", Value(), true}}, &a));
    const std::string attribute = a[0].str();
    if (subject.is_dict() && (attribute == "items" || attribute == "keys" || attribute == "values" ||
                              attribute == "get" || attribute == "copy")) {
      return get_attribute(in, subject, attribute, out);
    }
    if (subject.is_dict()) {
      *out = no_attribute(subject, attribute);
      return Status::Ok();
    }
    if (subject.is_undefined()) {
      *out = subject;
      return Status::Ok();
    }
    return get_attribute(in, subject, attribute, out);
  }
  if (name == "escape" || name == "e" || name == "forceescape") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    *out = Value::string(html_escape(subject.str()));
    return Status::Ok();
  }
  if (name == "safe") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, "safe", {}, &a));
    *out = subject.is_undefined() ? Value::string("") : subject;
    return Status::Ok();
  }
  if (name == "format") {
    if (!args.keywords.empty()) return in.error("the format filter takes no keyword arguments here");
    return percent_format(in, subject.str(), args.positional, out);
  }
  if (name == "map") return filter_map(in, subject, args, out);
  if (name == "select") return select_filter(in, subject, args, false, true, out);
  if (name == "reject") return select_filter(in, subject, args, false, false, out);
  if (name == "selectattr") return select_filter(in, subject, args, true, true, out);
  if (name == "rejectattr") return select_filter(in, subject, args, true, false, out);
  return in.error("no filter named '" + name + "'");
}

const std::set<std::string>& implemented_filters() {
  static const std::set<std::string> names = {
      "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
      "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map",
      "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
      "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount"};
  return names;
}

const std::set<std::string>& unimplemented_filters() {
  static const std::set<std::string> names = {"filesizeformat", "groupby", "pprint", "random", "slice",
                                              "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr"};
  return names;
}

const std::set<std::string>& tests() {
  static const std::set<std::string> names = {
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter",
      "float", "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping",
      "ne", "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==",
      "!=", "<", "<=", ">", ">="};
  return names;
}

Status test(Interpreter& in, const std::string& name, const Value& v, CallArguments& args, bool* out) {
  std::vector<Value> a;
  static const std::map<std::string, std::string> kAliases = {
      {"==", "eq"}, {"equalto", "eq"}, {"!=", "ne"}, {"<", "lt"}, {"lessthan", "lt"}, {"<=", "le"},
      {">", "gt"}, {"greaterthan", "gt"}, {">=", "ge"}};
  const auto alias = kAliases.find(name);
  const std::string& n = alias == kAliases.end() ? name : alias->second;
  if (n == "eq" || n == "ne" || n == "lt" || n == "le" || n == "gt" || n == "ge" || n == "in" ||
      n == "divisibleby" || n == "sameas") {
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {{"other", Value(), true}}, &a));
    const Value& other = a[0];
    if (n == "eq") *out = v.equals(other);
    else if (n == "ne") *out = !v.equals(other);
    else if (n == "lt") return less_than(in, v, other, out);
    else if (n == "gt") return less_than(in, other, v, out);
    else if (n == "le" || n == "ge") {
      ZIPMOE_RETURN_IF_ERROR(n == "le" ? less_than(in, other, v, out) : less_than(in, v, other, out));
      *out = !*out;
    } else if (n == "in") {
      if (other.is_undefined()) {
        *out = false;
      } else if (other.is_string()) {
        if (!v.is_string()) {
          return in.error(std::string("'in <string>' requires string as left operand, not ") + v.type_name());
        }
        *out = other.as_string().find(v.as_string()) != std::string::npos;
      } else if (other.is_sequence()) {
        *out = std::any_of(other.items().begin(), other.items().end(), [&](const Value& x) { return x.equals(v); });
      } else if (other.is_dict()) {
        *out = other.dict().find(v) != nullptr;
      } else {
        return in.error(std::string("argument of type '") + other.type_name() + "' is not iterable");
      }
    } else if (n == "divisibleby") {
      if (!v.is_number() || !other.is_number()) return in.error("divisibleby needs numbers");
      if (other.as_double() == 0.0) return in.error("modulo by zero");
      *out = (v.is_float() || other.is_float()) ? std::fmod(v.as_double(), other.as_double()) == 0.0
                                                : v.as_int() % other.as_int() == 0;
    } else if (n == "sameas") {
      if (v.is_none() || other.is_none()) *out = v.is_none() && other.is_none();
      else if (v.is_bool() || other.is_bool()) *out = v.is_bool() && other.is_bool() && v.as_bool() == other.as_bool();
      else if (v.is_dict() && other.is_dict()) *out = &v.dict() == &other.dict();
      else if (v.is_object() && other.is_object()) *out = &v.object() == &other.object();
      else if (v.is_sequence() && other.is_sequence()) *out = &v.items() == &other.items();
      else *out = false;
    }
    return Status::Ok();
  }
  if (n == "filter" || n == "test") {
    // `'upper' is filter`: the subject names the filter or test
    ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
    if (n == "filter") *out = v.is_string() && filter_status(v.as_string()) == FilterStatus::kKnown;
    else *out = v.is_string() && is_test(v.as_string());
    return Status::Ok();
  }
  ZIPMOE_RETURN_IF_ERROR(in.bind(args, name.c_str(), {}, &a));
  if (n == "defined") *out = !v.is_undefined();
  else if (n == "undefined") *out = v.is_undefined();
  else if (n == "none") *out = v.is_none();
  else if (n == "boolean") *out = v.is_bool();
  else if (n == "false") *out = v.is_bool() && !v.as_bool();
  else if (n == "true") *out = v.is_bool() && v.as_bool();
  else if (n == "integer") *out = v.is_int();
  else if (n == "float") *out = v.is_float();
  else if (n == "number") *out = v.is_number();
  else if (n == "string") *out = v.is_string();
  else if (n == "mapping") *out = v.is_dict();
  else if (n == "iterable") *out = v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
  else if (n == "sequence") *out = v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
  else if (n == "callable") *out = v.is_callable();
  else if (n == "escaped") *out = false;
  else if (n == "lower" || n == "upper") *out = cased_all(v.str(), n == "lower");
  else if (n == "odd" || n == "even") {
    if (!v.is_number()) return in.error(std::string("unsupported operand type(s) for %: '") + v.type_name() + "' and 'int'");
    if (v.is_float()) {
      double r = std::fmod(v.as_double(), 2.0);
      if (r < 0) r += 2.0;
      *out = (r == 1.0) == (n == "odd");
    } else {
      const std::int64_t m = ((v.as_int() % 2) + 2) % 2;
      *out = (m == 1) == (n == "odd");
    }
  } else {
    return in.error("no test named '" + name + "'");
  }
  return Status::Ok();
}

// ---- globals --------------------------------------------------------------------

Status global_range(Interpreter& in, CallArguments& args, Value* out) {
  if (!args.keywords.empty()) return in.error("range() takes no keyword arguments");
  const std::size_t n = args.positional.size();
  if (n < 1 || n > 3) return in.error("range expected 1 to 3 arguments, got " + std::to_string(n));
  for (const Value& v : args.positional) {
    if (v.is_undefined()) return in.undefined_error(v);
    if (!(v.is_int() || v.is_bool())) {
      return in.error(std::string("'") + v.type_name() + "' object cannot be interpreted as an integer");
    }
  }
  const std::int64_t start = n == 1 ? 0 : args.positional[0].as_int();
  const std::int64_t stop = n == 1 ? args.positional[0].as_int() : args.positional[1].as_int();
  const std::int64_t step = n == 3 ? args.positional[2].as_int() : 1;
  if (step == 0) return in.error("range() arg 3 must not be zero");
  const long double count_ld = step > 0 ? (static_cast<long double>(stop) - start + step - 1) / step
                                        : (static_cast<long double>(start) - stop - step - 1) / -step;
  const std::int64_t count = count_ld > 0 ? static_cast<std::int64_t>(count_ld) : 0;
  if (count > static_cast<std::int64_t>(kMaxRange)) {
    return in.error("range too big: the sandbox blocks ranges larger than " + std::to_string(kMaxRange) + " items");
  }
  ValueList items;
  items.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) items.push_back(Value::integer(start + i * step));
  *out = Value::list(std::move(items));
  return Status::Ok();
}

Status global_dict(Interpreter& in, CallArguments& args, Value* out) {
  auto d = std::make_shared<Dict>();
  if (args.positional.size() > 1) return in.error("dict expected at most 1 argument");
  if (args.positional.size() == 1) {
    const Value& source = args.positional[0];
    if (source.is_dict()) {
      d->items = source.dict().items;
    } else {
      ValueList pairs;
      ZIPMOE_RETURN_IF_ERROR(iterate(in, source, &pairs));
      for (const Value& pair : pairs) {
        ValueList kv;
        ZIPMOE_RETURN_IF_ERROR(iterate(in, pair, &kv));
        if (kv.size() != 2) return in.error("dictionary update sequence element has the wrong length");
        d->set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [name, value] : args.keywords) d->set(Value::string(name), value);
  *out = Value::dict(std::move(d));
  return Status::Ok();
}

Status global_namespace(Interpreter& in, CallArguments& args, Value* out) {
  auto ns = std::make_shared<Object>();
  ns->type_name = "Namespace";
  ns->assignable = true;
  Value initial;
  if (!args.positional.empty()) {
    ZIPMOE_RETURN_IF_ERROR(global_dict(in, args, &initial));
  } else {
    CallArguments none;
    none.keywords = args.keywords;
    ZIPMOE_RETURN_IF_ERROR(global_dict(in, none, &initial));
  }
  for (const auto& [key, value] : initial.dict().items) {
    const std::string name = key.str();
    if (!name.empty() && name[0] == '_') {
      return in.error("a chat template cannot set the namespace attribute '" + name +
                      "' (underscore names are refused)");
    }
    ns->set(name, value);
  }
  *out = Value::object(std::move(ns));
  return Status::Ok();
}

}  // namespace

FilterStatus filter_status(const std::string& name) {
  if (implemented_filters().count(name)) return FilterStatus::kKnown;
  if (unimplemented_filters().count(name)) return FilterStatus::kUnsupported;
  return FilterStatus::kUnknown;
}

bool is_test(const std::string& name) { return tests().count(name) > 0; }

Status apply_filter(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, Value* out) {
  ZIPMOE_RETURN_IF_ERROR(in.step());
  return filter(in, name, subject, args, out);
}

Status apply_test(Interpreter& in, const std::string& name, const Value& subject, CallArguments& args, bool* out) {
  ZIPMOE_RETURN_IF_ERROR(in.step());
  return test(in, name, subject, args, out);
}

Status get_attribute(Interpreter& in, const Value& object, const std::string& name, Value* out) {
  if (object.is_undefined()) return in.undefined_error(object);
  if (name.size() >= 2 && name[0] == '_' && name[1] == '_') {
    *out = unsafe(object, name);
    return Status::Ok();
  }
  switch (object.kind()) {
    case Kind::kDict: {
      static const std::set<std::string> kMethods = {"get", "items", "keys", "values", "copy"};
      static const std::set<std::string> kUnsafe = {"clear", "pop", "popitem", "setdefault", "update", "fromkeys"};
      if (kMethods.count(name)) {
        *out = bound(object, name, dict_method);
      } else if (kUnsafe.count(name)) {
        *out = unsafe(object, name);
      } else if (const Value* found = object.dict().find(Value::string(name))) {
        *out = *found;
      } else {
        *out = no_attribute(object, name);
      }
      return Status::Ok();
    }
    case Kind::kString:
      *out = string_methods().count(name) ? bound(object, name, string_method) : no_attribute(object, name);
      return Status::Ok();
    case Kind::kList:
    case Kind::kTuple: {
      static const std::set<std::string> kUnsafe = {"append", "extend", "insert", "pop", "remove", "reverse",
                                                    "sort", "clear"};
      if (name == "index" || name == "count") {
        *out = bound(object, name, list_method);
      } else if (kUnsafe.count(name) && object.kind() == Kind::kList) {
        *out = unsafe(object, name);
      } else {
        *out = no_attribute(object, name);
      }
      return Status::Ok();
    }
    case Kind::kObject: {
      const Value* found = object.object().find(name);
      *out = found ? *found : no_attribute(object, name);
      return Status::Ok();
    }
    default:
      *out = no_attribute(object, name);
      return Status::Ok();
  }
}

Status get_item(Interpreter& in, const Value& object, const Value& key, Value* out) {
  if (object.is_undefined()) return in.undefined_error(object);
  if (object.is_dict()) {
    if (const Value* found = object.dict().find(key)) {
      *out = *found;
      return Status::Ok();
    }
  } else if ((object.is_sequence() || object.is_string()) && (key.is_int() || key.is_bool())) {
    std::int64_t i = key.as_int();
    if (object.is_string()) {
      const std::vector<std::size_t> offsets = code_point_offsets(object.as_string());
      const auto n = static_cast<std::int64_t>(offsets.size() - 1);
      if (i < 0) i += n;
      if (i >= 0 && i < n) {
        const auto k = static_cast<std::size_t>(i);
        *out = Value::string(object.as_string().substr(offsets[k], offsets[k + 1] - offsets[k]));
        return Status::Ok();
      }
    } else {
      const auto n = static_cast<std::int64_t>(object.items().size());
      if (i < 0) i += n;
      if (i >= 0 && i < n) {
        *out = object.items()[static_cast<std::size_t>(i)];
        return Status::Ok();
      }
    }
    *out = Value::undefined(std::string(object.type_name()) + " index out of range");
    return Status::Ok();
  }
  if (key.is_string()) return get_attribute(in, object, key.as_string(), out);
  *out = Value::undefined("'" + std::string(object.type_name()) + " object' has no item " + key.repr());
  return Status::Ok();
}

std::vector<Variable> standard_globals() {
  return {{"range", Value::callable("range", global_range)},
          {"dict", Value::callable("dict", global_dict)},
          {"namespace", Value::callable("namespace", global_namespace)}};
}

Status iterate(Interpreter& in, const Value& value, ValueList* out) {
  switch (value.kind()) {
    case Kind::kUndefined:
      out->clear();
      return Status::Ok();
    case Kind::kList:
    case Kind::kTuple:
      *out = value.items();
      return Status::Ok();
    case Kind::kDict:
      out->clear();
      for (const auto& item : value.dict().items) out->push_back(item.first);
      return Status::Ok();
    case Kind::kString: {
      out->clear();
      const std::string& s = value.as_string();
      const std::vector<std::size_t> offsets = code_point_offsets(s);
      for (std::size_t i = 0; i + 1 < offsets.size(); ++i) {
        out->push_back(Value::string(s.substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      return Status::Ok();
    }
    default:
      return in.error(std::string("'") + value.type_name() + "' object is not iterable");
  }
}

Status less_than(Interpreter& in, const Value& a, const Value& b, bool* less) {
  if (a.is_undefined()) return in.undefined_error(a);
  if (b.is_undefined()) return in.undefined_error(b);
  if (a.is_number() && b.is_number()) {
    *less = (!a.is_float() && !b.is_float()) ? a.as_int() < b.as_int() : a.as_double() < b.as_double();
    return Status::Ok();
  }
  if (a.is_string() && b.is_string()) {
    *less = a.as_string() < b.as_string();  // UTF-8 byte order is code point order
    return Status::Ok();
  }
  if (a.is_sequence() && a.kind() == b.kind()) {
    const ValueList& x = a.items();
    const ValueList& y = b.items();
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].equals(y[i])) continue;
      return less_than(in, x[i], y[i], less);
    }
    *less = x.size() < y.size();
    return Status::Ok();
  }
  return in.error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" +
                  b.type_name() + "'");
}

Status length_of(Interpreter& in, const Value& value, std::int64_t* length) {
  switch (value.kind()) {
    case Kind::kUndefined:
      *length = 0;
      return Status::Ok();
    case Kind::kString:
      *length = static_cast<std::int64_t>(code_point_count(value.as_string()));
      return Status::Ok();
    case Kind::kList:
    case Kind::kTuple:
      *length = static_cast<std::int64_t>(value.items().size());
      return Status::Ok();
    case Kind::kDict:
      *length = static_cast<std::int64_t>(value.dict().items.size());
      return Status::Ok();
    default:
      return in.error(std::string("object of type '") + value.type_name() + "' has no len()");
  }
}

Status to_json(Interpreter& in, const Value& value, const JsonFormat& format, std::string* out) {
  JsonWriter writer{in, format, false};
  return writer.write(value, 0, out);
}

}  // namespace zipmoe::text::jinja

#include "common/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

namespace zipmoe::json {

const char* type_name(Type type) {
  switch (type) {
    case Type::kNull: return "null";
    case Type::kBool: return "boolean";
    case Type::kNumber: return "number";
    case Type::kString: return "string";
    case Type::kArray: return "array";
    case Type::kObject: return "object";
  }
  return "unknown";
}

Value Value::boolean(bool v) {
  Value out;
  out.type_ = Type::kBool;
  out.bool_ = v;
  return out;
}

Value Value::number(double v) {
  Value out;
  out.type_ = Type::kNumber;
  out.number_ = v;
  return out;
}

Value Value::integer(std::int64_t v) {
  Value out;
  out.type_ = Type::kNumber;
  out.integer_ = true;
  out.int_ = v;
  out.number_ = static_cast<double>(v);
  return out;
}

Value Value::string(std::string v) {
  Value out;
  out.type_ = Type::kString;
  out.string_ = std::make_shared<const std::string>(std::move(v));
  return out;
}

Value Value::array(std::vector<Value> items) {
  Value out;
  out.type_ = Type::kArray;
  out.items_ = std::make_shared<const std::vector<Value>>(std::move(items));
  return out;
}

Value Value::object(std::vector<Member> members) {
  Value out;
  out.type_ = Type::kObject;
  out.members_ = std::make_shared<const std::vector<Member>>(std::move(members));
  return out;
}

const std::string& Value::as_string() const {
  static const std::string kEmpty;
  return type_ == Type::kString ? *string_ : kEmpty;
}

const std::vector<Value>& Value::items() const {
  static const std::vector<Value> kEmpty;
  return type_ == Type::kArray ? *items_ : kEmpty;
}

const std::vector<Value::Member>& Value::members() const {
  static const std::vector<Member> kEmpty;
  return type_ == Type::kObject ? *members_ : kEmpty;
}

const Value* Value::find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const Member& m : *members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Parser

namespace {

class Parser {
 public:
  Parser(std::string_view text, const ParseOptions& options) : text_(text), options_(options) {}

  Status run(Value* out) {
    skip_whitespace();
    if (pos_ == text_.size()) return error("empty document");
    ZIPMOE_RETURN_IF_ERROR(parse_value(out, /*build=*/true, /*depth=*/0));
    skip_whitespace();
    if (pos_ != text_.size()) return error("unexpected bytes after the JSON value");
    return Status::Ok();
  }

 private:
  Status error(const std::string& what) const {
    std::size_t line = 1, column = 1;
    const std::size_t end = std::min(pos_, text_.size());
    for (std::size_t i = 0; i < end; ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    return Status::Format("JSON: " + what + " at line " + std::to_string(line) + " column " +
                          std::to_string(column));
  }

  bool at_end() const { return pos_ >= text_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(text_[pos_]); }

  void skip_whitespace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  Status expect_literal(const char* literal) {
    const std::size_t n = std::strlen(literal);
    if (text_.size() - pos_ < n || text_.compare(pos_, n, literal) != 0) return error("invalid literal");
    pos_ += n;
    return Status::Ok();
  }

  Status parse_value(Value* out, bool build, std::size_t depth) {
    if (at_end()) return error("unexpected end of input");
    switch (peek()) {
      case '{': return parse_object(out, build, depth + 1);
      case '[': return parse_array(out, build, depth + 1);
      case '"': {
        std::string s;
        ZIPMOE_RETURN_IF_ERROR(parse_string(build ? &s : nullptr));
        if (build) *out = Value::string(std::move(s));
        return Status::Ok();
      }
      case 't':
        ZIPMOE_RETURN_IF_ERROR(expect_literal("true"));
        if (build) *out = Value::boolean(true);
        return Status::Ok();
      case 'f':
        ZIPMOE_RETURN_IF_ERROR(expect_literal("false"));
        if (build) *out = Value::boolean(false);
        return Status::Ok();
      case 'n':
        ZIPMOE_RETURN_IF_ERROR(expect_literal("null"));
        if (build) *out = Value();
        return Status::Ok();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number(out, build);
        return error("unexpected character");
    }
  }

  Status parse_object(Value* out, bool build, std::size_t depth) {
    if (depth > options_.max_depth) return error("nesting deeper than " + std::to_string(options_.max_depth));
    const bool top_level = depth == 1;
    ++pos_;  // '{'
    std::vector<Value::Member> members;
    std::vector<std::string> keys;  // for the duplicate check when members are not built
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      if (build) *out = Value::object({});
      return Status::Ok();
    }
    for (;;) {
      skip_whitespace();
      if (at_end() || peek() != '"') return error("expected a string key");
      std::string key;
      ZIPMOE_RETURN_IF_ERROR(parse_string(&key));
      skip_whitespace();
      if (at_end() || peek() != ':') return error("expected ':' after an object key");
      ++pos_;
      skip_whitespace();
      bool keep = build;
      if (build && top_level && !options_.keep_top_level.empty()) {
        keep = std::find(options_.keep_top_level.begin(), options_.keep_top_level.end(), key) !=
               options_.keep_top_level.end();
      }
      Value value;
      ZIPMOE_RETURN_IF_ERROR(parse_value(&value, keep, depth));
      if (keep) {
        members.emplace_back(key, std::move(value));
      }
      keys.push_back(std::move(key));
      skip_whitespace();
      if (at_end()) return error("unexpected end of input in an object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      return error("expected ',' or '}' in an object");
    }
    // Duplicate keys: sort a list of pointers so that the check stays O(n log n).
    if (keys.size() > 1) {
      std::vector<const std::string*> sorted;
      sorted.reserve(keys.size());
      for (const std::string& k : keys) sorted.push_back(&k);
      std::sort(sorted.begin(), sorted.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
      for (std::size_t i = 1; i < sorted.size(); ++i) {
        if (*sorted[i] == *sorted[i - 1]) return error("duplicate key \"" + *sorted[i] + "\" in an object");
      }
    }
    if (build) *out = Value::object(std::move(members));
    return Status::Ok();
  }

  Status parse_array(Value* out, bool build, std::size_t depth) {
    if (depth > options_.max_depth) return error("nesting deeper than " + std::to_string(options_.max_depth));
    ++pos_;  // '['
    std::vector<Value> items;
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      if (build) *out = Value::array({});
      return Status::Ok();
    }
    for (;;) {
      skip_whitespace();
      Value item;
      ZIPMOE_RETURN_IF_ERROR(parse_value(&item, build, depth));
      if (build) items.push_back(std::move(item));
      skip_whitespace();
      if (at_end()) return error("unexpected end of input in an array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        break;
      }
      return error("expected ',' or ']' in an array");
    }
    if (build) *out = Value::array(std::move(items));
    return Status::Ok();
  }

  static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  Status read_hex4(std::uint32_t* value) {
    if (text_.size() - pos_ < 4) return error("truncated \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const int d = hex_digit(static_cast<unsigned char>(text_[pos_ + i]));
      if (d < 0) return error("invalid \\u escape");
      v = v * 16 + static_cast<std::uint32_t>(d);
    }
    pos_ += 4;
    *value = v;
    return Status::Ok();
  }

  static void append_utf8(std::string* out, std::uint32_t cp) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Length of the valid UTF-8 sequence starting at pos_ (a lead byte >= 0x80), or 0.
  std::size_t utf8_sequence_length() const {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text_[pos_ + i]); };
    const std::size_t left = text_.size() - pos_;
    const unsigned char b0 = byte(0);
    auto continuation = [&](std::size_t i) { return i < left && (byte(i) & 0xC0) == 0x80; };
    if (b0 >= 0xC2 && b0 <= 0xDF) return continuation(1) ? 2 : 0;
    if (b0 >= 0xE0 && b0 <= 0xEF) {
      if (!continuation(1) || !continuation(2)) return 0;
      const unsigned char b1 = byte(1);
      if (b0 == 0xE0 && b1 < 0xA0) return 0;  // overlong
      if (b0 == 0xED && b1 >= 0xA0) return 0;  // UTF-16 surrogate
      return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
      if (!continuation(1) || !continuation(2) || !continuation(3)) return 0;
      const unsigned char b1 = byte(1);
      if (b0 == 0xF0 && b1 < 0x90) return 0;  // overlong
      if (b0 == 0xF4 && b1 >= 0x90) return 0;  // above U+10FFFF
      return 4;
    }
    return 0;
  }

  // Parses a string at pos_ ('"'); appends its decoded text to *out when out is not null.
  Status parse_string(std::string* out) {
    ++pos_;  // opening quote
    for (;;) {
      // Copy the run of plain ASCII in one go.
      const std::size_t run_start = pos_;
      while (pos_ < text_.size()) {
        const unsigned char c = peek();
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
        ++pos_;
      }
      if (out && pos_ > run_start) out->append(text_.data() + run_start, pos_ - run_start);
      if (at_end()) return error("unterminated string");
      const unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return Status::Ok();
      }
      if (c < 0x20) return error("unescaped control character in a string");
      if (c >= 0x80) {
        const std::size_t n = utf8_sequence_length();
        if (n == 0) return error("invalid UTF-8 in a string");
        if (out) out->append(text_.data() + pos_, n);
        pos_ += n;
        continue;
      }
      // Backslash escape.
      ++pos_;
      if (at_end()) return error("unterminated escape");
      const char e = static_cast<char>(peek());
      ++pos_;
      char simple = 0;
      switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': {
          std::uint32_t cp = 0;
          ZIPMOE_RETURN_IF_ERROR(read_hex4(&cp));
          if (cp >= 0xDC00 && cp <= 0xDFFF) return error("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.size() - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u') {
              return error("high surrogate not followed by a low surrogate");
            }
            pos_ += 2;
            std::uint32_t low = 0;
            ZIPMOE_RETURN_IF_ERROR(read_hex4(&low));
            if (low < 0xDC00 || low > 0xDFFF) return error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          if (out) append_utf8(out, cp);
          continue;
        }
        default: return error("invalid escape sequence");
      }
      if (out) out->push_back(simple);
    }
  }

  static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

  Status parse_number(Value* out, bool build) {
    const std::size_t start = pos_;
    bool integral = true;
    bool negative = false;
    if (peek() == '-') {
      negative = true;
      ++pos_;
    }
    if (at_end()) return error("truncated number");
    // Decimal magnitude of the mantissa (digits before the point, or minus the
    // zeros right after "0."), used only to tell underflow from overflow.
    long long magnitude = 0;
    bool zero_integer_part = false;
    if (peek() == '0') {
      zero_integer_part = true;
      ++pos_;
      if (!at_end() && is_digit(peek())) return error("leading zero in a number");
    } else if (is_digit(peek())) {
      while (!at_end() && is_digit(peek())) {
        ++pos_;
        ++magnitude;
      }
    } else {
      return error("invalid number");
    }
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (at_end() || !is_digit(peek())) return error("a decimal point must be followed by digits");
      bool leading = zero_integer_part;
      while (!at_end() && is_digit(peek())) {
        if (leading && peek() == '0') {
          --magnitude;
        } else {
          leading = false;
        }
        ++pos_;
      }
    }
    long long exponent = 0;
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      bool exponent_negative = false;
      if (!at_end() && (peek() == '+' || peek() == '-')) {
        exponent_negative = peek() == '-';
        ++pos_;
      }
      if (at_end() || !is_digit(peek())) return error("an exponent must have digits");
      while (!at_end() && is_digit(peek())) {
        if (exponent < 100000000) exponent = exponent * 10 + (peek() - '0');
        ++pos_;
      }
      if (exponent_negative) exponent = -exponent;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      std::int64_t v = 0;
      const auto r = std::from_chars(first, last, v);
      if (r.ec == std::errc() && r.ptr == last) {
        if (build) *out = Value::integer(v);
        return Status::Ok();
      }
      // Too large for an int64: a double like any other number.
    }
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range && magnitude + exponent < 0) {
      // Underflow: the nearest double is a zero.
      if (build) *out = Value::number(negative ? -0.0 : 0.0);
      return Status::Ok();
    }
    if (r.ec != std::errc() || r.ptr != last || !std::isfinite(d)) {
      pos_ = start;
      return error("number out of the range of a double");
    }
    if (build) *out = Value::number(d);
    return Status::Ok();
  }

  std::string_view text_;
  const ParseOptions& options_;
  std::size_t pos_ = 0;
};

void serialize_string(const std::string& s, std::string* out) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

void serialize_into(const Value& v, std::string* out) {
  switch (v.type()) {
    case Type::kNull: out->append("null"); return;
    case Type::kBool: out->append(v.as_bool() ? "true" : "false"); return;
    case Type::kNumber: {
      char buffer[64];
      if (v.is_integer()) {
        const auto r = std::to_chars(buffer, buffer + sizeof buffer, v.as_int());
        out->append(buffer, r.ptr);
        return;
      }
      const auto r = std::to_chars(buffer, buffer + sizeof buffer, v.as_number());
      std::string text(buffer, r.ptr);
      if (text.find_first_of(".eE") == std::string::npos) text += ".0";
      out->append(text);
      return;
    }
    case Type::kString: serialize_string(v.as_string(), out); return;
    case Type::kArray: {
      out->push_back('[');
      bool first = true;
      for (const Value& item : v.items()) {
        if (!first) out->push_back(',');
        first = false;
        serialize_into(item, out);
      }
      out->push_back(']');
      return;
    }
    case Type::kObject: {
      out->push_back('{');
      bool first = true;
      for (const Value::Member& m : v.members()) {
        if (!first) out->push_back(',');
        first = false;
        serialize_string(m.first, out);
        out->push_back(':');
        serialize_into(m.second, out);
      }
      out->push_back('}');
      return;
    }
  }
}

}  // namespace

Status parse(std::string_view text, Value* out, const ParseOptions& options) {
  Parser parser(text, options);
  Value result;
  ZIPMOE_RETURN_IF_ERROR(parser.run(&result));
  *out = std::move(result);
  return Status::Ok();
}

std::string serialize(const Value& value) {
  std::string out;
  serialize_into(value, &out);
  return out;
}

}  // namespace zipmoe::json

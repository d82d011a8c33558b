// A small, strict JSON (RFC 8259) parser and serializer for container metadata.
//
// Why our own: zipmoe vendors no third-party code, and the engine needs little
// from JSON (the architecture and the model config out of a container's
// metadata). What it does need is strictness and safety on untrusted bytes, which
// this file provides in a few hundred lines:
// - exactly the RFC 8259 grammar: no comments, trailing commas, single quotes,
//   NaN/Infinity, leading zeros, leading '+', control characters in strings, or
//   bytes after the value (whitespace excepted); text must be valid UTF-8 (no BOM)
//   and \u escapes must form valid code points (a lone surrogate is an error);
// - duplicate keys in one object are an error (their meaning is unspecified);
// - numbers out of the range of a double (1e400) are an error; an integer
//   literal that fits an int64 is also kept exactly as an int64;
// - nesting deeper than ParseOptions::max_depth is an error (no unbounded
//   recursion), and the work is linear in the input size.
// Every failure is a Status::Format naming the line and column; nothing throws
// or aborts on malformed input.
//
// Values are immutable after parsing. Objects keep their members in document
// order; lookup is linear (configs are small).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace zipmoe::json {

enum class Type : std::uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

// "null", "boolean", "number", "string", "array", "object".
const char* type_name(Type type);

class Value {
 public:
  using Member = std::pair<std::string, Value>;

  Value() = default;  // null
  static Value boolean(bool v);
  static Value number(double v);
  static Value integer(std::int64_t v);
  static Value string(std::string v);
  static Value array(std::vector<Value> items);
  static Value object(std::vector<Member> members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }
  // A number written as an integer literal (no fraction or exponent) that fits an int64.
  bool is_integer() const { return type_ == Type::kNumber && integer_; }

  // Accessors; each returns a neutral value (false, 0, "", empty) for another type.
  bool as_bool() const { return type_ == Type::kBool && bool_; }
  double as_number() const { return type_ == Type::kNumber ? number_ : 0.0; }
  std::int64_t as_int() const { return is_integer() ? int_ : 0; }
  const std::string& as_string() const;
  const std::vector<Value>& items() const;
  const std::vector<Member>& members() const;

  // Object member `key`, or nullptr (absent, or this is not an object).
  const Value* find(std::string_view key) const;

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  bool integer_ = false;
  double number_ = 0.0;
  std::int64_t int_ = 0;
  // String, array or object payload (shared: values are immutable, copies are cheap).
  std::shared_ptr<const std::string> string_;
  std::shared_ptr<const std::vector<Value>> items_;
  std::shared_ptr<const std::vector<Member>> members_;
};

struct ParseOptions {
  // Arrays and objects nested deeper than this are rejected.
  std::size_t max_depth = 256;
  // When not empty and the document is an object, only these top-level members
  // are kept in the result; the others are still fully validated but not built
  // (a container's metadata carries megabytes of tokenizer and source records
  // that the engine does not need).
  std::vector<std::string> keep_top_level;
};

// Parses `text` into *out. Status::Format with line and column on any error.
Status parse(std::string_view text, Value* out, const ParseOptions& options = ParseOptions());

// Compact JSON text of `value` (no spaces). Numbers round-trip exactly: integer
// literals as integers, other numbers in the shortest form that reads back to the
// same double (with ".0" added to integral values, so they stay floats).
std::string serialize(const Value& value);

}  // namespace zipmoe::json

// GGUF key/value metadata in parsed form: what format/gguf_reader.h reads from
// a file and what the tokenizer builder (text/) takes, so that text/ needs no
// file reader. GGUF value types (the numbers are the format's): 0 u8, 1 i8,
// 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64,
// 12 f64.
//
// Plain value types (no thread-safety concerns).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace zipmoe {

enum class GgufType : std::uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7,
  kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

const char* gguf_type_name(GgufType type);

// One value. Scalars: integers in `integer` (u64 above INT64_MAX are kept as
// their two's-complement int64), floats in `number`, bools in `integer` (0/1).
// Strings in `text`. Arrays: `item_type` and, by item kind, `strings`,
// `integers` or `numbers`; arrays of arrays keep only their count.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType item_type = GgufType::kUint8;
  std::int64_t integer = 0;
  double number = 0.0;
  std::string text;
  std::vector<std::string> strings;
  std::vector<std::int64_t> integers;
  std::vector<double> numbers;
  std::uint64_t array_count = 0;

  bool is_integer() const;  // an integer or bool scalar
  bool is_float() const { return type == GgufType::kFloat32 || type == GgufType::kFloat64; }
};

struct GgufMetadata {
  std::uint32_t version = 0;
  std::uint64_t tensor_count = 0;
  std::map<std::string, GgufValue> values;  // the kept keys

  const GgufValue* find(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? nullptr : &it->second;
  }
};

}  // namespace zipmoe

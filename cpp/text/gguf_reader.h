// A reader for the key/value section of GGUF files: what the tokenizer needs.
//
// GGUF (versions 2 and 3, little-endian): "GGUF", u32 version, u64 tensor
// count, u64 key/value count, then the key/value pairs: a string key, a u32
// value type, the value. Strings are a u64 byte length and the bytes; an array
// is a u32 item type, a u64 count and the items. Value types: 0 u8, 1 i8,
// 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64,
// 12 f64. The tensor infos and data that follow are not read.
//
// Every length and count is checked against the bytes left in the file before
// anything is allocated for it, so a corrupt or hostile file yields a
// Status::Format naming the file and key, never a crash or a huge allocation.
// Values of keys the caller does not keep are skipped (bounds-checked all the same).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace zipmoe::text {

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

// Which keys to keep (by name); nullptr keeps them all.
using GgufKeyFilter = std::function<bool(std::string_view key)>;

// Keeps "tokenizer.*" and "general.architecture".
bool is_tokenizer_key(std::string_view key);

// Reads the key/value section of the GGUF file at `path`.
Status read_gguf_metadata(const std::string& path, const GgufKeyFilter& keep, GgufMetadata* out);

// The same over bytes in memory; `name` is used in messages.
Status parse_gguf_metadata(const std::uint8_t* data, std::size_t size, const std::string& name,
                           const GgufKeyFilter& keep, GgufMetadata* out);

}  // namespace zipmoe::text

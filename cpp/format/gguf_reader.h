// The one C++ reader of GGUF files: their key/value section, into the parsed
// form of common/gguf_metadata.h (the tokenizer builds from it; the tensors are
// converted in Python).
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
#include <string>
#include <string_view>

#include "common/gguf_metadata.h"
#include "common/status.h"

namespace zipmoe::format {

// Which keys to keep (by name); nullptr keeps them all.
using GgufKeyFilter = std::function<bool(std::string_view key)>;

// Reads the key/value section of the GGUF file at `path`.
Status read_gguf_metadata(const std::string& path, const GgufKeyFilter& keep, GgufMetadata* out);

// The same over bytes in memory; `name` is used in messages.
Status parse_gguf_metadata(const std::uint8_t* data, std::size_t size, const std::string& name,
                           const GgufKeyFilter& keep, GgufMetadata* out);

}  // namespace zipmoe::format

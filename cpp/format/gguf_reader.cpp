#include "format/gguf_reader.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "common/file_io.h"

namespace zipmoe::format {

namespace {

constexpr std::uint64_t kMaxKeyLength = 1 << 16;
constexpr int kMaxArrayDepth = 8;
constexpr std::size_t kWindowSize = 1 << 20;

std::size_t fixed_size(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    default:
      return 0;  // string, array: variable
  }
}

bool valid_type(std::uint32_t type) { return type <= static_cast<std::uint32_t>(GgufType::kFloat64); }

// Sequential reads over a file (through a window) or over bytes in memory.
class Cursor {
 public:
  Cursor(const std::uint8_t* data, std::size_t size, std::string name)
      : name_(std::move(name)), size_(size), memory_(data) {}
  Cursor(const File* file, std::string name) : name_(std::move(name)), size_(file->size()), file_(file) {}

  std::uint64_t position() const { return position_; }
  std::uint64_t remaining() const { return size_ - position_; }
  const std::string& name() const { return name_; }

  Status error(const std::string& what) const {
    return Status::Format(name_ + ": corrupt GGUF: " + what + " (at byte " + std::to_string(position_) + ")");
  }

  // Makes the next n bytes readable at *p; a Format error when the file ends first.
  Status view(std::size_t n, const std::uint8_t** p, const std::string& what) {
    if (n > remaining()) return error(what + " runs past the end of the file");
    if (memory_) {
      *p = memory_ + position_;
    } else {
      if (position_ < window_start_ || position_ + n > window_start_ + window_.size()) {
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(
            std::max<std::size_t>(n, kWindowSize), remaining()));
        window_.resize(want);
        ZIPMOE_RETURN_IF_ERROR(file_->read_at(position_, window_.data(), want));
        window_start_ = position_;
      }
      *p = window_.data() + (position_ - window_start_);
    }
    position_ += n;
    return Status::Ok();
  }

  template <typename T>
  Status scalar(T* out, const std::string& what) {
    const std::uint8_t* p = nullptr;
    ZIPMOE_RETURN_IF_ERROR(view(sizeof(T), &p, what));
    std::memcpy(out, p, sizeof(T));
    return Status::Ok();
  }

  Status string(std::string* out, const std::string& what, std::uint64_t max_length = UINT64_MAX) {
    std::uint64_t length;
    ZIPMOE_RETURN_IF_ERROR(scalar(&length, what + " length"));
    if (length > remaining()) {
      return error(what + " length " + std::to_string(length) + " runs past the end of the file");
    }
    if (length > max_length) return error(what + " length " + std::to_string(length) + " is implausible");
    const std::uint8_t* p = nullptr;
    ZIPMOE_RETURN_IF_ERROR(view(static_cast<std::size_t>(length), &p, what));
    if (out) out->assign(reinterpret_cast<const char*>(p), static_cast<std::size_t>(length));
    return Status::Ok();
  }

  Status skip(std::uint64_t n, const std::string& what) {
    if (n > remaining()) return error(what + " runs past the end of the file");
    position_ += n;
    return Status::Ok();
  }

 private:
  std::string name_;
  std::uint64_t size_ = 0;
  std::uint64_t position_ = 0;
  const std::uint8_t* memory_ = nullptr;
  const File* file_ = nullptr;
  std::vector<std::uint8_t> window_;
  std::uint64_t window_start_ = 0;
};

Status read_scalar(Cursor* cursor, GgufType type, GgufValue* value, const std::string& what) {
  switch (type) {
    case GgufType::kUint8: {
      std::uint8_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kInt8: {
      std::int8_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kBool: {
      std::uint8_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      if (v > 1) return cursor->error(what + ": bool value " + std::to_string(v) + " is neither 0 nor 1");
      value->integer = v;
      break;
    }
    case GgufType::kUint16: {
      std::uint16_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kInt16: {
      std::int16_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kUint32: {
      std::uint32_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kInt32: {
      std::int32_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kUint64: {
      std::uint64_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = static_cast<std::int64_t>(v);
      break;
    }
    case GgufType::kInt64: {
      std::int64_t v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->integer = v;
      break;
    }
    case GgufType::kFloat32: {
      float v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->number = v;
      break;
    }
    case GgufType::kFloat64: {
      double v;
      ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&v, what));
      value->number = v;
      break;
    }
    default:
      return cursor->error(what + ": not a scalar type");
  }
  return Status::Ok();
}

// Reads (keep) or skips (!keep) one value of `type`.
Status read_value(Cursor* cursor, GgufType type, bool keep, int depth, GgufValue* value, const std::string& what) {
  value->type = type;
  if (type == GgufType::kString) return cursor->string(keep ? &value->text : nullptr, what);
  if (type != GgufType::kArray) {
    if (!keep) return cursor->skip(fixed_size(type), what);
    return read_scalar(cursor, type, value, what);
  }
  if (depth >= kMaxArrayDepth) return cursor->error(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  std::uint32_t item_type_raw;
  ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&item_type_raw, what + " item type"));
  if (!valid_type(item_type_raw)) {
    return cursor->error(what + ": unknown array item type " + std::to_string(item_type_raw));
  }
  const GgufType item_type = static_cast<GgufType>(item_type_raw);
  std::uint64_t count;
  ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&count, what + " item count"));
  // Every item takes at least one byte (strings and arrays at least 8 and 12).
  const std::uint64_t min_item = item_type == GgufType::kString  ? 8
                                 : item_type == GgufType::kArray ? 12
                                                                 : fixed_size(item_type);
  if (count > cursor->remaining() / min_item) {
    return cursor->error(what + ": array of " + std::to_string(count) + " items runs past the end of the file");
  }
  value->item_type = item_type;
  value->array_count = count;
  if (item_type == GgufType::kString) {
    if (keep) value->strings.resize(static_cast<std::size_t>(count));
    for (std::uint64_t i = 0; i < count; ++i) {
      ZIPMOE_RETURN_IF_ERROR(
          cursor->string(keep ? &value->strings[static_cast<std::size_t>(i)] : nullptr, what + " item"));
    }
    return Status::Ok();
  }
  if (item_type == GgufType::kArray) {
    GgufValue ignored;
    for (std::uint64_t i = 0; i < count; ++i) {
      ZIPMOE_RETURN_IF_ERROR(read_value(cursor, GgufType::kArray, false, depth + 1, &ignored, what + " item"));
    }
    return Status::Ok();
  }
  const std::size_t size = fixed_size(item_type);
  if (!keep) return cursor->skip(count * size, what);
  const bool is_float = item_type == GgufType::kFloat32 || item_type == GgufType::kFloat64;
  if (is_float) {
    value->numbers.resize(static_cast<std::size_t>(count));
  } else {
    value->integers.resize(static_cast<std::size_t>(count));
  }
  GgufValue item;
  for (std::uint64_t i = 0; i < count; ++i) {
    ZIPMOE_RETURN_IF_ERROR(read_scalar(cursor, item_type, &item, what + " item"));
    if (is_float) {
      value->numbers[static_cast<std::size_t>(i)] = item.number;
    } else {
      value->integers[static_cast<std::size_t>(i)] = item.integer;
    }
  }
  return Status::Ok();
}

Status parse(Cursor* cursor, const GgufKeyFilter& keep, GgufMetadata* out) {
  *out = GgufMetadata();
  const std::uint8_t* magic;
  if (cursor->remaining() < 4) return cursor->error("file of " + std::to_string(cursor->remaining()) + " bytes is too short");
  ZIPMOE_RETURN_IF_ERROR(cursor->view(4, &magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    return Status::Format(cursor->name() + ": not a GGUF file (the magic bytes are not \"GGUF\")");
  }
  ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&out->version, "version"));
  if (out->version != 2 && out->version != 3) {
    return Status::Format(cursor->name() + ": GGUF version " + std::to_string(out->version) +
                          " is not supported (versions 2 and 3 are)");
  }
  std::uint64_t kv_count;
  ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&out->tensor_count, "tensor count"));
  ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&kv_count, "key/value count"));
  // A key/value pair takes at least 13 bytes (key length, type, one value byte).
  if (kv_count > cursor->remaining() / 13) {
    return cursor->error("key/value count " + std::to_string(kv_count) + " runs past the end of the file");
  }
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    std::string key;
    ZIPMOE_RETURN_IF_ERROR(cursor->string(&key, "key " + std::to_string(i), kMaxKeyLength));
    std::uint32_t type_raw;
    ZIPMOE_RETURN_IF_ERROR(cursor->scalar(&type_raw, "type of " + key));
    if (!valid_type(type_raw)) return cursor->error("key " + key + " has unknown value type " + std::to_string(type_raw));
    const bool kept = !keep || keep(key);
    GgufValue value;
    ZIPMOE_RETURN_IF_ERROR(read_value(cursor, static_cast<GgufType>(type_raw), kept, 0, &value, "value of " + key));
    if (kept) {
      if (out->values.count(key)) return cursor->error("key " + key + " appears twice");
      out->values.emplace(std::move(key), std::move(value));
    }
  }
  return Status::Ok();
}

}  // namespace

Status read_gguf_metadata(const std::string& path, const GgufKeyFilter& keep, GgufMetadata* out) {
  std::unique_ptr<File> file;
  ZIPMOE_RETURN_IF_ERROR(File::open(path, false, &file));
  Cursor cursor(file.get(), path);
  return parse(&cursor, keep, out);
}

Status parse_gguf_metadata(const std::uint8_t* data, std::size_t size, const std::string& name,
                           const GgufKeyFilter& keep, GgufMetadata* out) {
  Cursor cursor(data, size, name);
  return parse(&cursor, keep, out);
}

}  // namespace zipmoe::format

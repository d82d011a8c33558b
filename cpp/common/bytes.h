// Little-endian loads and stores, and a bounds-checked reader for parsing
// untrusted headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace zipmoe {

inline std::uint16_t load_le16(const void* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;  // zipmoe builds only for little-endian targets (checked in CMake)
}
inline std::uint32_t load_le32(const void* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::uint64_t load_le64(const void* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline void store_le16(void* p, std::uint16_t v) { std::memcpy(p, &v, 2); }
inline void store_le32(void* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
inline void store_le64(void* p, std::uint64_t v) { std::memcpy(p, &v, 8); }

inline void append_le16(std::vector<std::uint8_t>* out, std::uint16_t v) {
  const std::size_t at = out->size();
  out->resize(at + 2);
  store_le16(out->data() + at, v);
}
inline void append_le32(std::vector<std::uint8_t>* out, std::uint32_t v) {
  const std::size_t at = out->size();
  out->resize(at + 4);
  store_le32(out->data() + at, v);
}
inline void append_le64(std::vector<std::uint8_t>* out, std::uint64_t v) {
  const std::size_t at = out->size();
  out->resize(at + 8);
  store_le64(out->data() + at, v);
}

// Reads fields from [data, data + size); every read checks the bounds first and
// returns false past the end (the reader then stays failed).
class ByteReader {
 public:
  ByteReader(const void* data, std::size_t size) : p_(static_cast<const std::uint8_t*>(data)), size_(size) {}

  bool u8(std::uint8_t* v) { return take(v, 1); }
  bool u16(std::uint16_t* v) { return take(v, 2); }
  bool u32(std::uint32_t* v) { return take(v, 4); }
  bool u64(std::uint64_t* v) { return take(v, 8); }
  // Points *v at the next n bytes.
  bool bytes(const std::uint8_t** v, std::size_t n) {
    if (!ok_ || n > size_ - pos_) return ok_ = false;
    *v = p_ + pos_;
    pos_ += n;
    return true;
  }
  bool skip(std::size_t n) {
    const std::uint8_t* ignored;
    return bytes(&ignored, n);
  }
  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return size_ - pos_; }
  bool ok() const { return ok_; }

 private:
  bool take(void* v, std::size_t n) {
    if (!ok_ || n > size_ - pos_) return ok_ = false;
    std::memcpy(v, p_ + pos_, n);
    pos_ += n;
    return true;
  }
  const std::uint8_t* p_;
  std::size_t size_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace zipmoe

// AlignedBuffer: a heap buffer whose start is aligned (for SIMD loads, and for
// O_DIRECT reads, which need kDirectIoAlignment), with no file I/O attached.
//
// Thread-safety: none (one owner).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace zipmoe {

// Offsets, lengths and buffer addresses of O_DIRECT reads are multiples of this
// (the logical block size of every common SSD and filesystem; also the page size).
constexpr std::size_t kDirectIoAlignment = 4096;

// Move-only. Contents are uninitialized after allocation.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size, std::size_t alignment = kDirectIoAlignment) { allocate(size, alignment); }
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Makes size() == size (bytes), reusing the allocation when it is large enough
  // and aligned to `alignment` (a power of two) or more. Status::Budget when
  // memory is exhausted (the buffer is then empty).
  Status try_allocate(std::size_t size, std::size_t alignment = kDirectIoAlignment);
  // The same, throwing std::bad_alloc when memory is exhausted.
  void allocate(std::size_t size, std::size_t alignment = kDirectIoAlignment);
  void release();

  std::uint8_t* data() { return data_; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::size_t alignment_ = 0;
};

}  // namespace zipmoe

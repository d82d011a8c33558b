// MemoryBlock: one buffer of the expert cache or its fetch pipeline (experts,
// planes, decode and fetch buffers), charged to the model's ledger as kExperts.
//
// Large blocks (decoded experts, planes, fetch buffers: megabytes) are mapped
// pages of their own and unmapped when freed, so that the process's resident
// size follows the ledger exactly: the heap would keep freed megabyte blocks of
// assorted sizes as fragments (and glibc raises its mmap threshold after the
// first frees), which a long generation with admissions and evictions turns into
// resident memory nobody accounts for. Small blocks (tiny test models) come from
// the heap with 64-byte alignment. charged_size() is what a block of a given
// size costs against the budget; the planner plans with it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/memory_ledger.h"
#include "common/status.h"

namespace zipmoe {

class MemoryBlock {
 public:
  // Blocks of at least this many bytes are page mappings.
  static constexpr std::size_t kMappedThreshold = std::size_t(64) << 10;
  static constexpr std::size_t kPageSize = 4096;

  // Bytes charged for a block of `size` bytes: whole pages when mapped, whole
  // 64-byte lines otherwise.
  static std::uint64_t charged_size(std::uint64_t size);

  MemoryBlock() = default;
  ~MemoryBlock() { release(); }
  MemoryBlock(MemoryBlock&& other) noexcept;
  MemoryBlock& operator=(MemoryBlock&& other) noexcept;
  MemoryBlock(const MemoryBlock&) = delete;
  MemoryBlock& operator=(const MemoryBlock&) = delete;

  // Reserves charged_size(size) in the ledger as kExperts (Status::Budget when
  // refused), then allocates. The start is aligned to 4096 bytes when mapped,
  // 64 otherwise (use a mapped size for O_DIRECT targets).
  Status allocate(MemoryLedger* ledger, std::size_t size);
  void release();

  std::uint8_t* data() { return data_; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::uint64_t charged() const { return charged_; }
  bool empty() const { return data_ == nullptr; }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t charged_ = 0;
  bool mapped_ = false;
  MemoryLedger* ledger_ = nullptr;
};

}  // namespace zipmoe

#include "common/memory_block.h"

#include <sys/mman.h>

#include <cstdlib>
#include <string>

namespace zipmoe {

std::uint64_t MemoryBlock::charged_size(std::uint64_t size) {
  if (size == 0) return 0;
  if (size >= kMappedThreshold) return (size + kPageSize - 1) / kPageSize * kPageSize;
  return (size + 63) / 64 * 64;
}

MemoryBlock::MemoryBlock(MemoryBlock&& other) noexcept
    : data_(other.data_), size_(other.size_), charged_(other.charged_), mapped_(other.mapped_),
      ledger_(other.ledger_) {
  other.data_ = nullptr;
  other.size_ = 0;
  other.charged_ = 0;
  other.ledger_ = nullptr;
}

MemoryBlock& MemoryBlock::operator=(MemoryBlock&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    size_ = other.size_;
    charged_ = other.charged_;
    mapped_ = other.mapped_;
    ledger_ = other.ledger_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.charged_ = 0;
    other.ledger_ = nullptr;
  }
  return *this;
}

Status MemoryBlock::allocate(MemoryLedger* ledger, std::size_t size) {
  release();
  if (size == 0) return Status::Ok();
  const std::uint64_t charge = charged_size(size);
  if (ledger) ZIPMOE_RETURN_IF_ERROR(ledger->reserve(MemoryCategory::kExperts, charge));
  void* p = nullptr;
  bool mapped = size >= kMappedThreshold;
  if (mapped) {
    p = ::mmap(nullptr, static_cast<std::size_t>(charge), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
               0);
    if (p == MAP_FAILED) p = nullptr;
  } else if (::posix_memalign(&p, 64, static_cast<std::size_t>(charge)) != 0) {
    p = nullptr;
  }
  if (p == nullptr) {
    if (ledger) ledger->remove(MemoryCategory::kExperts, charge);
    return Status::Budget("out of memory allocating " + std::to_string(size) + " bytes for the expert cache");
  }
  data_ = static_cast<std::uint8_t*>(p);
  size_ = size;
  charged_ = charge;
  mapped_ = mapped;
  ledger_ = ledger;
  return Status::Ok();
}

void MemoryBlock::release() {
  if (data_ == nullptr) return;
  if (mapped_) {
    ::munmap(data_, static_cast<std::size_t>(charged_));
  } else {
    std::free(data_);
  }
  if (ledger_) ledger_->remove(MemoryCategory::kExperts, charged_);
  data_ = nullptr;
  size_ = 0;
  charged_ = 0;
  ledger_ = nullptr;
}

}  // namespace zipmoe

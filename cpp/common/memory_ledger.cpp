#include "common/memory_ledger.h"

#include <new>
#include <string>

namespace zipmoe {

const char* memory_category_name(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::kDenseWeights: return "dense_weights";
    case MemoryCategory::kExperts: return "experts";
    case MemoryCategory::kKvCache: return "kv_cache";
    case MemoryCategory::kScratch: return "scratch";
  }
  return "unknown";
}

void MemoryLedger::note_peak(std::uint64_t total) {
  std::uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (total > peak && !peak_.compare_exchange_weak(peak, total, std::memory_order_relaxed)) {
  }
}

Status MemoryLedger::reserve(MemoryCategory category, std::uint64_t bytes) {
  const std::uint64_t limit = limit_.load(std::memory_order_relaxed);
  std::uint64_t total = total_.load(std::memory_order_relaxed);
  for (;;) {
    if (limit != 0 && (bytes > limit || total > limit - bytes)) {
      return Status::Budget("memory budget of " + std::to_string(limit) + " bytes exceeded: " +
                            std::to_string(bytes) + " more bytes of " + memory_category_name(category) +
                            " asked for while " + std::to_string(total) + " bytes are held");
    }
    if (total_.compare_exchange_weak(total, total + bytes, std::memory_order_relaxed)) break;
  }
  bytes_[static_cast<int>(category)].fetch_add(bytes, std::memory_order_relaxed);
  note_peak(total + bytes);
  return Status::Ok();
}

void MemoryLedger::add(MemoryCategory category, std::uint64_t bytes) {
  bytes_[static_cast<int>(category)].fetch_add(bytes, std::memory_order_relaxed);
  note_peak(total_.fetch_add(bytes, std::memory_order_relaxed) + bytes);
}

void MemoryLedger::remove(MemoryCategory category, std::uint64_t bytes) {
  bytes_[static_cast<int>(category)].fetch_sub(bytes, std::memory_order_relaxed);
  total_.fetch_sub(bytes, std::memory_order_relaxed);
}

std::uint64_t MemoryLedger::bytes(MemoryCategory category) const {
  return bytes_[static_cast<int>(category)].load(std::memory_order_relaxed);
}

std::uint64_t MemoryLedger::total() const { return total_.load(std::memory_order_relaxed); }

std::uint64_t MemoryLedger::peak() const { return peak_.load(std::memory_order_relaxed); }

// ---------------------------------------------------------------------------

LedgerBuffer::LedgerBuffer(LedgerBuffer&& other) noexcept
    : buffer_(std::move(other.buffer_)), ledger_(other.ledger_), category_(other.category_), charged_(other.charged_) {
  other.ledger_ = nullptr;
  other.charged_ = 0;
}

LedgerBuffer& LedgerBuffer::operator=(LedgerBuffer&& other) noexcept {
  if (this != &other) {
    release();
    buffer_ = std::move(other.buffer_);
    ledger_ = other.ledger_;
    category_ = other.category_;
    charged_ = other.charged_;
    other.ledger_ = nullptr;
    other.charged_ = 0;
  }
  return *this;
}

Status LedgerBuffer::allocate(MemoryLedger* ledger, MemoryCategory category, std::size_t size,
                              std::size_t alignment) {
  release();
  if (ledger) ZIPMOE_RETURN_IF_ERROR(ledger->reserve(category, size));
  if (!buffer_.try_allocate(size, alignment).ok()) {
    if (ledger) ledger->remove(category, size);
    return Status::Budget("out of memory allocating " + std::to_string(size) + " bytes of " +
                          memory_category_name(category));
  }
  ledger_ = ledger;
  category_ = category;
  charged_ = size;
  return Status::Ok();
}

void LedgerBuffer::release() {
  buffer_.release();
  if (ledger_ && charged_) ledger_->remove(category_, charged_);
  ledger_ = nullptr;
  charged_ = 0;
}

}  // namespace zipmoe

// MemoryLedger: every byte the engine holds, by category, in one place.
//
// The engine charges each buffer it allocates (dense weights, experts, KV cache,
// scratch) to the ledger of its model when the buffer is allocated and credits
// it back when the buffer is freed; a LedgerBuffer does both by itself. The
// ledger can also carry a limit: reserve() then refuses (Status::Budget) a
// charge that would take the total over it, which is where a memory budget is
// enforced (a limit of 0 means none).
//
// Thread-safety: every method may be called from any thread at any time.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "common/aligned_buffer.h"
#include "common/status.h"

namespace zipmoe {

enum class MemoryCategory : std::uint8_t {
  kDenseWeights = 0,  // attention, norms, embeddings, routers, shared experts (decoded)
  kExperts = 1,       // routed experts, in whatever form the provider keeps them
  kKvCache = 2,       // keys and values of every layer
  kScratch = 3,       // activations, matmul workspace, rope tables
};
constexpr int kNumMemoryCategories = 4;

// "dense_weights", "experts", "kv_cache", "scratch".
const char* memory_category_name(MemoryCategory category);

class MemoryLedger {
 public:
  MemoryLedger() = default;
  MemoryLedger(const MemoryLedger&) = delete;
  MemoryLedger& operator=(const MemoryLedger&) = delete;

  // Charges `bytes` to `category` if the total stays within the limit;
  // Status::Budget (naming the category, the request, and what is held) otherwise.
  Status reserve(MemoryCategory category, std::uint64_t bytes);
  // Charges unconditionally (memory already allocated by someone else).
  void add(MemoryCategory category, std::uint64_t bytes);
  // Credits back bytes charged before.
  void remove(MemoryCategory category, std::uint64_t bytes);

  std::uint64_t bytes(MemoryCategory category) const;
  std::uint64_t total() const;
  // The highest total seen so far.
  std::uint64_t peak() const;

  // 0: no limit.
  void set_limit(std::uint64_t bytes) { limit_.store(bytes, std::memory_order_relaxed); }
  std::uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }

 private:
  void note_peak(std::uint64_t total);

  std::array<std::atomic<std::uint64_t>, kNumMemoryCategories> bytes_{};
  std::atomic<std::uint64_t> total_{0};
  std::atomic<std::uint64_t> peak_{0};
  std::atomic<std::uint64_t> limit_{0};
};

// An aligned heap buffer charged to a ledger for as long as it is allocated.
// Move-only; a default-constructed one holds nothing and is charged nowhere.
class LedgerBuffer {
 public:
  LedgerBuffer() = default;
  ~LedgerBuffer() { release(); }
  LedgerBuffer(LedgerBuffer&& other) noexcept;
  LedgerBuffer& operator=(LedgerBuffer&& other) noexcept;
  LedgerBuffer(const LedgerBuffer&) = delete;
  LedgerBuffer& operator=(const LedgerBuffer&) = delete;

  // Reserves `size` bytes in the ledger (Status::Budget when refused), then
  // allocates them aligned to `alignment`. Frees what the buffer held first.
  Status allocate(MemoryLedger* ledger, MemoryCategory category, std::size_t size, std::size_t alignment = 64);
  void release();

  std::uint8_t* data() { return buffer_.data(); }
  const std::uint8_t* data() const { return buffer_.data(); }
  std::size_t size() const { return buffer_.size(); }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(buffer_.data());
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(buffer_.data());
  }

 private:
  AlignedBuffer buffer_;
  MemoryLedger* ledger_ = nullptr;
  MemoryCategory category_ = MemoryCategory::kScratch;
  std::uint64_t charged_ = 0;
};

}  // namespace zipmoe

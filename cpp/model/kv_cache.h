// KvCache: the keys and values of every layer for one sequence.
//
// Grouped attention keeps, per layer, K and V as [kv_heads][capacity][head_dim]
// (the kernels' default head-major layout). Latent attention (DeepSeek MLA)
// keeps one row per position, [kv_lora_rank normalized latent | rope key], and
// reads the values as the first kv_lora_rank components of the same rows.
// Sliding-window and chunked layers hold only window (chunk) + batch - 1 positions (the kernels
// index positions modulo the capacity). Elements are F32, BF16 or F16 (rounded
// to nearest-even when stored). The memory is charged to the ledger as kKvCache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/memory_ledger.h"
#include "common/status.h"
#include "kernels/kernel_types.h"
#include "model/config.h"

namespace zipmoe::model {

class KvCache {
 public:
  // Sizes the cache for `capacity` positions per full-attention layer and
  // forward steps of at most `batch` tokens.
  Status allocate(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype,
                  MemoryLedger* ledger);

  // The bytes allocate() charges to the ledger for these arguments, without
  // allocating anything (saturating at UINT64_MAX for absurd sizes).
  static std::uint64_t bytes_for(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype);

  const kernels::KvCacheView& layer(std::size_t i) const { return views_[i]; }
  std::size_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }
  std::uint64_t bytes() const { return bytes_; }

 private:
  std::vector<LedgerBuffer> buffers_;
  std::vector<kernels::KvCacheView> views_;
  std::size_t capacity_ = 0;
  DType dtype_ = DType::kF32;
  std::uint64_t bytes_ = 0;
};

}  // namespace zipmoe::model

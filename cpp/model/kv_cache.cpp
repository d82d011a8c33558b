#include "model/kv_cache.h"

#include <cstring>

#include "kernels/kernels.h"

namespace zipmoe::model {

namespace {

// Positions layer i keeps: sliding-window layers only window + batch - 1.
std::size_t layer_capacity(const ModelConfig& config, std::size_t i, std::size_t capacity, std::size_t batch) {
  const std::size_t window = config.layers[i].sliding_window;
  return window && window + batch - 1 < capacity ? window + batch - 1 : capacity;
}

std::uint64_t layer_bytes(const ModelConfig& config, std::size_t positions, DType dtype) {
  if (config.family->attention == AttentionKind::kLatent) {
    return std::uint64_t(positions) * (config.kv_lora_rank + config.qk_rope_head_dim) * dtype_size(dtype);
  }
  return kernels::kv_cache_bytes(dtype, config.num_kv_heads, config.head_dim, config.head_dim, positions);
}

}  // namespace

std::uint64_t KvCache::bytes_needed(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < config.num_layers; ++i) {
    total += layer_bytes(config, layer_capacity(config, i, capacity, batch), dtype);
  }
  return total;
}

Status KvCache::allocate(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype,
                         MemoryLedger* ledger) {
  buffers_.clear();
  views_.clear();
  bytes_ = 0;
  capacity_ = capacity;
  dtype_ = dtype;
  const bool latent = config.family->attention == AttentionKind::kLatent;
  buffers_.resize(config.num_layers);
  views_.resize(config.num_layers);
  for (std::size_t i = 0; i < config.num_layers; ++i) {
    const std::size_t positions = layer_capacity(config, i, capacity, batch);
    const std::size_t es = dtype_size(dtype);
    const std::size_t bytes = layer_bytes(config, positions, dtype);
    if (latent) {
      const std::size_t row = config.kv_lora_rank + config.qk_rope_head_dim;
      ZIPMOE_RETURN_IF_ERROR(buffers_[i].allocate(ledger, MemoryCategory::kKvCache, bytes));
      kernels::KvCacheView& v = views_[i];
      v.dtype = dtype;
      v.n_kv_heads = 1;
      v.k_dim = row;
      v.v_dim = config.kv_lora_rank;
      v.capacity = positions;
      v.k = buffers_[i].data();
      v.k_head_stride = positions * row;
      v.k_position_stride = row;
      v.v = v.k;  // values are the latent part of the key rows
      v.v_head_stride = v.k_head_stride;
      v.v_position_stride = row;
      bytes_ += bytes;
    } else {
      const std::size_t heads = config.num_kv_heads, dim = config.head_dim;
      ZIPMOE_RETURN_IF_ERROR(buffers_[i].allocate(ledger, MemoryCategory::kKvCache, bytes));
      std::uint8_t* k = buffers_[i].data();
      std::uint8_t* v = k + heads * positions * dim * es;
      views_[i] = kernels::make_kv_cache_view(dtype, heads, dim, dim, positions, k, v);
      bytes_ += bytes;
    }
  }
  return Status::Ok();
}

}  // namespace zipmoe::model

#include "model/kv_cache.h"

#include <cstring>
#include <limits>

#include "kernels/kernels.h"

namespace zipmoe::model {

namespace {

// Positions layer `layer` holds: sliding-window and chunked layers need only the
// window (chunk) and the tokens of one step.
std::size_t layer_capacity(const ModelConfig& config, std::size_t layer, std::size_t capacity, std::size_t batch) {
  const std::size_t window = config.layers[layer].attention_span();
  return window && window + batch - 1 < capacity ? window + batch - 1 : capacity;
}

// Elements of one position of one layer: the latent row, or K and V of every KV head.
std::uint64_t position_elements(const ModelConfig& config) {
  if (config.family->attention == AttentionKind::kLatent) return config.kv_lora_rank + config.qk_rope_head_dim;
  return std::uint64_t(2) * config.num_kv_heads * config.head_dim;
}

}  // namespace

std::uint64_t KvCache::bytes_for(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  auto times = [&](std::uint64_t a, std::uint64_t b) { return b && a > kMax / b ? kMax : a * b; };
  const std::uint64_t row = times(position_elements(config), dtype_size(dtype));
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < config.num_layers; ++i) {
    const std::uint64_t layer = times(row, layer_capacity(config, i, capacity, batch));
    total = layer > kMax - total ? kMax : total + layer;
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
    const std::size_t layer_capacity = model::layer_capacity(config, i, capacity, batch);
    const std::size_t es = dtype_size(dtype);
    if (latent) {
      const std::size_t row = config.kv_lora_rank + config.qk_rope_head_dim;
      const std::size_t bytes = layer_capacity * row * es;
      ZIPMOE_RETURN_IF_ERROR(buffers_[i].allocate(ledger, MemoryCategory::kKvCache, bytes));
      kernels::KvCacheView& v = views_[i];
      v.dtype = dtype;
      v.n_kv_heads = 1;
      v.k_dim = row;
      v.v_dim = config.kv_lora_rank;
      v.capacity = layer_capacity;
      v.k = buffers_[i].data();
      v.k_head_stride = layer_capacity * row;
      v.k_position_stride = row;
      v.v = v.k;  // values are the latent part of the key rows
      v.v_head_stride = v.k_head_stride;
      v.v_position_stride = row;
      bytes_ += bytes;
    } else {
      const std::size_t heads = config.num_kv_heads, dim = config.head_dim;
      const std::size_t bytes = kernels::kv_cache_bytes(dtype, heads, dim, dim, layer_capacity);
      ZIPMOE_RETURN_IF_ERROR(buffers_[i].allocate(ledger, MemoryCategory::kKvCache, bytes));
      std::uint8_t* k = buffers_[i].data();
      std::uint8_t* v = k + heads * layer_capacity * dim * es;
      views_[i] = kernels::make_kv_cache_view(dtype, heads, dim, dim, layer_capacity, k, v);
      bytes_ += bytes;
    }
  }
  return Status::Ok();
}

}  // namespace zipmoe::model

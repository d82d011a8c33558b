#include "model/sequence_state.h"

namespace zipmoe::model {

std::uint64_t SequenceState::bytes_needed(const ModelConfig& config, std::size_t capacity, std::size_t batch,
                                          DType dtype) {
  return KvCache::bytes_for(config, capacity, batch, dtype);
}

Status SequenceState::allocate(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype,
                               MemoryLedger* ledger) {
  tokens_.clear();
  tokens_.reserve(capacity);
  sliding_ = false;
  for (const LayerPlan& layer : config.layers) sliding_ |= layer.attention_span() != 0;
  return kv_.allocate(config, capacity, batch, dtype, ledger);
}

}  // namespace zipmoe::model

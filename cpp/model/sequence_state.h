// SequenceState: what one sequence of a context holds between forward steps.
//
// Today that is the KV cache of every layer (model/kv_cache.h) and the token ids
// it was filled from; a family with recurrent layers (linear attention, state
// space) keeps its per-sequence state here too, sized by bytes_needed() and
// charged to the ledger the same way, so that a context's budget check counts
// it. The forward pass reads and appends to it; the context (model/context_impl.h)
// owns one per sequence and keeps `tokens` in step with what the state holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/memory_ledger.h"
#include "common/status.h"
#include "model/config.h"
#include "model/kv_cache.h"

namespace zipmoe::model {

class SequenceState {
 public:
  // Bytes allocate() charges for `capacity` positions and steps of at most
  // `batch` tokens (the KV cache; recurrent state when a family has one).
  static std::uint64_t bytes_needed(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype);

  Status allocate(const ModelConfig& config, std::size_t capacity, std::size_t batch, DType dtype,
                  MemoryLedger* ledger);

  const KvCache& kv() const { return kv_; }
  std::size_t capacity() const { return kv_.capacity(); }
  std::uint64_t bytes() const { return kv_.bytes(); }

  // The tokens the state holds, in order: position() == tokens().size().
  std::size_t position() const { return tokens_.size(); }
  const std::vector<std::int32_t>& tokens() const { return tokens_; }
  // Records tokens[0, count) as held (after a step stored them).
  void append(const std::int32_t* tokens, std::size_t count) { tokens_.insert(tokens_.end(), tokens, tokens + count); }
  // Forgets every position from `position` on (position <= position()); see can_truncate_to().
  void truncate(std::size_t position) { tokens_.resize(position); }
  // Whether truncate(position) leaves a state the next step can continue from:
  // always for full attention; a sliding-window (or chunked) layer's ring of positions has
  // overwritten older ones, so there only the whole sequence (or none) can continue.
  bool can_truncate_to(std::size_t position) const {
    return position == 0 || position == this->position() || !sliding_;
  }

 private:
  KvCache kv_;
  std::vector<std::int32_t> tokens_;
  bool sliding_ = false;
};

}  // namespace zipmoe::model

// LoadPlan: what Model::load will read and hold, worked out from the
// container's index and config alone, before a weight is read or a buffer
// allocated.
//
// Binding. Every tensor of the container must be one the forward pass reads (a
// dense tensor of the family's table, weights.h; a routed expert projection of
// a MoE layer, cache/expert_layout.h) or one the family table lists as carried
// but unused (architecture.h); every tensor the config requires must be there.
// A container relabelled to another architecture (its metadata edited and its
// checksums recomputed) is refused with a FormatError naming the tensors that
// do not belong, instead of computing with them ignored.
//
// Memory. The bytes each category of the ledger will hold when load returns,
// computed by the functions that size the allocations themselves
// (DenseWeightStore::plan, the expert providers' sizes, KvCache::bytes_for,
// Forward::scratch_bytes), so that the plan and the ledger agree to the byte.
// With a memory budget the experts count at the expert cache's minimum working
// set (what is left of the budget goes to the cache); without one, all of them
// decoded. check_memory() refuses (BudgetError, every part itemized) a budget
// below that minimum, and a minimum beyond what the machine has available
// (common/system_memory.h), so that a load that cannot fit fails at once
// instead of being killed by the kernel halfway or touching gigabytes first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "common/system_memory.h"
#include "format/container_file.h"
#include "model/config.h"
#include "model/forward.h"

namespace zipmoe::model {

struct MemoryPlan {
  std::uint64_t dense_weights = 0;
  std::uint64_t experts = 0;  // streamed: the expert cache's minimum; resident: every expert decoded
  std::uint64_t kv_cache = 0;
  std::uint64_t scratch = 0;
  bool streamed = false;      // experts come through the expert cache (a memory budget was given)
  std::size_t experts_per_token = 0;
  std::size_t context = 0;    // positions the KV cache holds
  std::size_t batch = 0;      // most tokens per forward step

  // The least the load holds (saturating).
  std::uint64_t minimum() const;
  // "dense weights 3.7 MB (3692032 bytes), KV cache ... for 1024 positions, ...".
  std::string itemized() const;
};

// FormatError naming every tensor of `reader` that `config` neither reads nor
// lists as carried but unused (or the first missing one it needs).
Status bind_tensors(const format::ContainerFile& reader, const ModelConfig& config);

// The memory a load of `reader` holds: KV cache for `context` positions in
// `kv_dtype`, forward passes with `forward` (its batch included), experts
// streamed or resident. Checks what binding checks about the tensors it sizes.
Status plan_memory(const format::ContainerFile& reader, const ModelConfig& config, std::size_t context,
                   DType kv_dtype, const ForwardOptions& forward, bool streamed, MemoryPlan* out);

// BudgetError when `plan` does not fit `memory_budget` (0: none) or `available`
// (ignored when unknown). `path` names the model in the message.
Status check_memory(const MemoryPlan& plan, std::uint64_t memory_budget, const AvailableMemory& available,
                    const std::string& path);

// "3.69 MB (3692032 bytes)".
std::string human_bytes(std::uint64_t bytes);

}  // namespace zipmoe::model

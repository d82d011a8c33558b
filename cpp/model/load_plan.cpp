#include "model/load_plan.h"

#include <cstdio>
#include <limits>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/expert_layout.h"
#include "cache/resident_experts.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace zipmoe::model {

namespace {

// Names listed in a message before "and N more".
constexpr std::size_t kNamesShown = 8;

bool has_routed_experts(const ModelConfig& config) { return config.num_moe_layers() > 0 && config.num_experts > 0; }

// The decoder layer a tensor belongs to (its expert role, or its "blk.N." name), or -1.
std::int64_t layer_of(const TensorInfo& t) {
  if (t.role.is_expert()) return t.role.layer;
  const std::string& name = t.name;
  if (name.compare(0, 4, "blk.") != 0) return -1;
  std::int64_t layer = 0;
  std::size_t i = 4;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && i < 12; ++i) layer = layer * 10 + (name[i] - '0');
  return i > 4 && i < name.size() && name[i] == '.' ? layer : -1;
}

// Tensors the family table lists as carried but unused (architecture.h).
bool carried_unused(const ModelConfig& config, const TensorInfo& t) {
  const std::int64_t layer = layer_of(t);
  const auto first_mtp = static_cast<std::int64_t>(config.num_layers);
  return config.mtp_layers > 0 && layer >= first_mtp && layer < first_mtp + std::int64_t(config.mtp_layers);
}

Status find_experts(const format::ContainerFile& reader, const ModelConfig& config, cache::ExpertTable* table) {
  if (!has_routed_experts(config)) return Status::Ok();
  return cache::build_expert_table(reader, expert_shapes(config), table);
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a ? std::numeric_limits<std::uint64_t>::max() : a + b;
}

}  // namespace

std::string human_bytes(std::uint64_t bytes) {
  char text[64];
  const double b = double(bytes);
  if (b >= 1e9) {
    std::snprintf(text, sizeof(text), "%.2f GB", b / 1e9);
  } else if (b >= 1e6) {
    std::snprintf(text, sizeof(text), "%.1f MB", b / 1e6);
  } else {
    std::snprintf(text, sizeof(text), "%.1f kB", b / 1e3);
  }
  return std::string(text) + " (" + std::to_string(bytes) + " bytes)";
}

std::uint64_t MemoryPlan::minimum() const {
  return saturating_add(saturating_add(dense_weights, experts), saturating_add(kv_cache, scratch));
}

std::string MemoryPlan::itemized() const {
  std::string what = "dense weights " + human_bytes(dense_weights) + ", KV cache " + human_bytes(kv_cache) +
                     " for " + std::to_string(context) + " positions, scratch " + human_bytes(scratch) +
                     " for steps of " + std::to_string(batch) + " tokens";
  if (experts == 0) return what;
  if (streamed) {
    return what + ", and the expert cache's working set " + human_bytes(experts) + " (" +
           std::to_string(experts_per_token) + " decoded experts and one fetch buffer)";
  }
  return what + ", and every expert decoded " + human_bytes(experts) + " (no memory_budget: nothing is streamed)";
}

Status bind_tensors(const format::ContainerFile& reader, const ModelConfig& config) {
  DensePlan dense;
  ZIPMOE_RETURN_IF_ERROR(DenseWeightStore::plan(reader, config, &dense));
  cache::ExpertTable experts;
  ZIPMOE_RETURN_IF_ERROR(find_experts(reader, config, &experts));
  std::vector<bool> used(reader.tensors().size(), false);
  for (const TensorInfo* t : dense.tensors) used[t->index] = true;
  for (const cache::ExpertLayout& x : experts.experts) {
    for (int j = 0; j < cache::kProjections; ++j) used[x.projection(j).tensor->index] = true;
  }
  std::vector<const TensorInfo*> unused;
  for (const TensorInfo& t : reader.tensors()) {
    if (!used[t.index] && !carried_unused(config, t)) unused.push_back(&t);
  }
  if (unused.empty()) return Status::Ok();
  std::string names;
  for (std::size_t i = 0; i < unused.size() && i < kNamesShown; ++i) names += (i ? ", " : "") + unused[i]->name;
  if (unused.size() > kNamesShown) names += " and " + std::to_string(unused.size() - kNamesShown) + " more";
  return Status::Format(reader.path() + ": " + std::to_string(unused.size()) + " tensor" +
                        (unused.size() > 1 ? "s are" : " is") + " not part of a " + config.family->name +
                        " model with this config (" + names +
                        "): the container's architecture or config does not match its tensors");
}

Status plan_memory(const format::ContainerFile& reader, const ModelConfig& config, std::size_t context,
                   DType kv_dtype, const ForwardOptions& forward, bool streamed, MemoryPlan* out) {
  DensePlan dense;
  ZIPMOE_RETURN_IF_ERROR(DenseWeightStore::plan(reader, config, &dense));
  cache::ExpertTable experts;
  ZIPMOE_RETURN_IF_ERROR(find_experts(reader, config, &experts));
  MemoryPlan plan;
  plan.dense_weights = dense.ledger_bytes;
  if (!experts.experts.empty()) {
    plan.experts =
        streamed ? cache::minimum_cache_bytes(experts) : cache::ResidentExpertProvider::bytes_for(experts);
  }
  plan.kv_cache = KvCache::bytes_for(config, context, forward.batch, kv_dtype);
  plan.scratch = Forward::scratch_bytes(config, forward);
  plan.streamed = streamed;
  plan.experts_per_token = config.experts_per_token;
  plan.context = context;
  plan.batch = forward.batch;
  *out = plan;
  return Status::Ok();
}

Status check_memory(const MemoryPlan& plan, std::uint64_t memory_budget, const AvailableMemory& available,
                    const std::string& path) {
  const std::uint64_t minimum = plan.minimum();
  if (memory_budget > 0 && memory_budget < minimum) {
    return Status::Budget("memory_budget of " + human_bytes(memory_budget) + " is too small for " + path +
                          ": the minimum is " + human_bytes(minimum) + ": " + plan.itemized() +
                          " (a smaller max_context or batch lowers it)");
  }
  if (available.known && minimum > available.bytes) {
    // Streaming the experts is worth suggesting only where the rest would fit.
    const bool experts_in_the_way = !plan.streamed && minimum - plan.experts < available.bytes;
    const std::string remedy = experts_in_the_way
                                   ? "a memory_budget streams the experts; a smaller max_context or batch lowers it"
                                   : "a smaller max_context or batch lowers it";
    return Status::Budget("loading " + path + " needs " + human_bytes(minimum) + " but this machine has " +
                          human_bytes(available.bytes) + " available (" + available.source + "): " +
                          plan.itemized() + " (" + remedy + ")");
  }
  return Status::Ok();
}

}  // namespace zipmoe::model

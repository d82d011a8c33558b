#include "cache/resident_experts.h"

#include <algorithm>
#include <string>

#include "common/parallel.h"

namespace zipmoe::cache {

namespace {

constexpr std::size_t kProjectionAlignment = 64;

}  // namespace

std::uint64_t ResidentExpertProvider::bytes_for(const ExpertTable& table) {
  std::uint64_t bytes = 0;
  for (const ExpertLayout& x : table.experts) bytes += x.decoded_block_bytes;
  return bytes;
}

Status ResidentExpertProvider::create(const format::ContainerFile& reader, const ExpertShapes& shapes,
                                      ThreadPool* pool, MemoryLedger* ledger, Isa isa,
                                      std::unique_ptr<ResidentExpertProvider>* out) {
  // Find and check every projection before allocating anything.
  ExpertTable table;
  ZIPMOE_RETURN_IF_ERROR(build_expert_table(reader, shapes, &table));
  std::unique_ptr<ResidentExpertProvider> provider(new ResidentExpertProvider());
  provider->layers_.resize(shapes.num_layers);
  for (const ExpertLayout& x : table.experts) {
    std::vector<ResidentExpert>& slots = provider->layers_[x.layer];
    if (slots.empty()) slots.resize(table.num_experts);
    ResidentExpert& slot = slots[x.expert];
    ZIPMOE_RETURN_IF_ERROR(
        slot.buffer.allocate(ledger, MemoryCategory::kExperts, x.decoded_block_bytes, kProjectionAlignment));
    provider->bytes_ += x.decoded_block_bytes;
    slot.weights = expert_weights(x, slot.buffer.data());
  }

  // One expert per task: nested decode calls run inline on the task's thread, so
  // every core decodes a different expert (experts are many and alike in size).
  ResidentExpertProvider* self = provider.get();
  ZIPMOE_RETURN_IF_ERROR(parallel_for_status(pool, table.experts.size(), [&](std::size_t i) {
    const ExpertLayout& x = table.experts[i];
    std::uint8_t* block = self->layers_[x.layer][x.expert].buffer.data();
    for (int j = 0; j < kProjections; ++j) {
      const ProjectionLayout& p = x.projection(j);
      ZIPMOE_RETURN_IF_ERROR(reader.decode_tensor(*p.tensor, block + p.decoded_offset,
                                                  static_cast<std::size_t>(p.decoded_bytes), pool, isa));
    }
    return Status::Ok();
  }));
  *out = std::move(provider);
  return Status::Ok();
}

Status ResidentExpertProvider::acquire(ExpertRequest* request) {
  if (request->active) return Status::InvalidArgument("expert request acquired twice without release");
  if (request->layer >= layers_.size() || layers_[request->layer].empty()) {
    return Status::InvalidArgument("layer " + std::to_string(request->layer) + " has no routed experts");
  }
  const std::vector<ResidentExpert>& experts = layers_[request->layer];
  const std::size_t n = request->experts.size();
  if (requests_.size() != layers_.size()) requests_.assign(layers_.size(), 0);
  requests_[request->layer] += n;
  request->weights.resize(n);
  request->delivered.assign(n, 0);
  request->delivered_count = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (request->experts[i] >= experts.size()) {
      return Status::InvalidArgument("expert " + std::to_string(request->experts[i]) + " of layer " +
                                     std::to_string(request->layer) + " does not exist");
    }
  }
  request->active = true;
  return Status::Ok();
}

Status ResidentExpertProvider::wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) {
  *count = 0;
  if (!request->active) return Status::InvalidArgument("wait_ready on an expert request that is not acquired");
  const std::vector<ResidentExpert>& experts = layers_[request->layer];
  for (std::size_t i = 0; i < request->experts.size(); ++i) {
    if (request->delivered[i]) continue;
    request->weights[i] = experts[request->experts[i]].weights;
    request->delivered[i] = 1;
    ready[(*count)++] = static_cast<std::uint32_t>(i);
  }
  request->delivered_count += *count;
  return Status::Ok();
}

void ResidentExpertProvider::release(ExpertRequest* request) { request->active = false; }

void ResidentExpertProvider::collect_stats(ExpertCacheStats* out) const {
  out->enabled = false;
  for (std::size_t layer = 0; layer < layers_.size(); ++layer) {
    if (layers_[layer].empty()) continue;
    ExpertLayerStats s;
    s.layer = static_cast<std::uint32_t>(layer);
    s.requests = layer < requests_.size() ? requests_[layer] : 0;
    s.served_from[static_cast<int>(ExpertTier::kFull)] = s.requests;
    out->total.requests += s.requests;
    out->total.served_from[static_cast<int>(ExpertTier::kFull)] += s.requests;
    out->layers.push_back(s);
    out->experts_in[static_cast<int>(ExpertTier::kFull)] += layers_[layer].size();
  }
  out->tier_bytes[static_cast<int>(ExpertTier::kFull)] = bytes_;
  out->tier_capacity[static_cast<int>(ExpertTier::kFull)] = bytes_;
}

void ResidentExpertProvider::reset_stats() { std::fill(requests_.begin(), requests_.end(), 0); }

}  // namespace zipmoe::cache

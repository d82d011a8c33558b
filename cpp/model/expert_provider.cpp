#include "model/expert_provider.h"

#include <algorithm>
#include <string>

#include "model/status_util.h"

namespace zipmoe::model {

namespace {

constexpr std::size_t kProjectionAlignment = 64;

std::size_t aligned_size(std::size_t bytes) {
  return (bytes + kProjectionAlignment - 1) / kProjectionAlignment * kProjectionAlignment;
}

struct PendingExpert {
  std::uint32_t layer;
  std::uint32_t expert;
  const TensorInfo* tensors[3];  // gate, up, down
};

constexpr const char* kProjections[3] = {"gate", "up", "down"};

}  // namespace

Status ResidentExpertProvider::create(const ContainerReader& reader, const ModelConfig& config, ThreadPool* pool,
                                      MemoryLedger* ledger, std::optional<Isa> isa,
                                      std::unique_ptr<ResidentExpertProvider>* out) {
  std::unique_ptr<ResidentExpertProvider> provider(new ResidentExpertProvider());
  provider->layers_.resize(config.num_layers);
  const std::uint64_t hidden = config.hidden_size, inner = config.expert_intermediate_size;

  // Find and check every projection before allocating anything.
  std::vector<PendingExpert> pending;
  for (std::uint32_t layer = 0; layer < config.num_layers; ++layer) {
    if (!config.is_moe_layer(layer)) continue;
    for (std::uint32_t e = 0; e < config.num_experts; ++e) {
      PendingExpert p{layer, e, {nullptr, nullptr, nullptr}};
      for (int j = 0; j < 3; ++j) {
        const TensorInfo* t = reader.find_expert(layer, e, kProjections[j]);
        const std::string what = "expert " + std::to_string(e) + " of layer " + std::to_string(layer) + " (" +
                                 kProjections[j] + ")";
        if (!t) return Status::Format(reader.path() + ": " + what + " is missing from the container");
        const std::vector<std::uint64_t> want =
            j < 2 ? std::vector<std::uint64_t>{inner, hidden} : std::vector<std::uint64_t>{hidden, inner};
        if (t->shape != want) {
          return Status::Format(reader.path() + ": tensor " + t->name + " (" + what + ") has shape " +
                                shape_text(t->shape) + " but the config implies " + shape_text(want));
        }
        p.tensors[j] = t;
      }
      pending.push_back(p);
    }
  }

  for (const PendingExpert& p : pending) {
    std::size_t bytes = 0;
    for (const TensorInfo* t : p.tensors) bytes += aligned_size(t->decoded_bytes());
    std::vector<ResidentExpert>& slots = provider->layers_[p.layer];
    if (slots.empty()) slots.resize(config.num_experts);
    ResidentExpert& slot = slots[p.expert];
    ZIPMOE_RETURN_IF_ERROR(slot.buffer.allocate(ledger, MemoryCategory::kExperts, bytes, kProjectionAlignment));
    provider->bytes_ += bytes;
    std::size_t offset = 0;
    kernels::WeightMatrix* matrices[3] = {&slot.weights.gate, &slot.weights.up, &slot.weights.down};
    for (int j = 0; j < 3; ++j) {
      const TensorInfo* t = p.tensors[j];
      matrices[j]->data = slot.buffer.data() + offset;
      matrices[j]->dtype = t->dtype;
      matrices[j]->rows = static_cast<std::size_t>(t->shape[0]);
      matrices[j]->cols = static_cast<std::size_t>(t->shape[1]);
      offset += aligned_size(t->decoded_bytes());
    }
  }

  // One expert per task: nested decode calls run inline on the task's thread, so
  // every core decodes a different expert (experts are many and alike in size).
  ResidentExpertProvider* self = provider.get();
  Status status = capture_errors([&] {
    parallel_for(pool, pending.size(), [&](std::size_t i) {
      const PendingExpert& p = pending[i];
      ResidentExpert& slot = self->layers_[p.layer][p.expert];
      const kernels::WeightMatrix* matrices[3] = {&slot.weights.gate, &slot.weights.up, &slot.weights.down};
      for (int j = 0; j < 3; ++j) {
        reader.decode_tensor(*p.tensors[j], const_cast<void*>(matrices[j]->data),
                             static_cast<std::size_t>(p.tensors[j]->decoded_bytes()), pool, isa);
      }
    });
  });
  ZIPMOE_RETURN_IF_ERROR(status);
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

}  // namespace zipmoe::model

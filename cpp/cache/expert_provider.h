// ExpertProvider: where the forward pass gets the weights of routed experts, and
// ExpertShapes: what a provider knows of the model (the cache's vocabulary; the
// model layer fills both in, the cache never sees a ModelConfig).
//
// The forward pass never assumes that experts sit in one array: for each MoE
// layer it asks the provider for the experts its tokens were routed to (all of
// them at once, so that a provider can overlap their fetches), computes with each
// as soon as it is delivered, and releases them all when the layer is done (so
// that a cache may evict or reuse their memory from then on).
//
//   ExpertRequest request;                       // owned by the caller, reused
//   request.layer = 5; request.experts = {3, 17, 42};
//   provider.acquire(&request);                  // starts every fetch
//   while ((n = provider.wait_ready(&request, ready)) > 0)
//     compute with request.weights[ready[0..n)]  // in any delivery order
//   provider.release(&request);
//
// The weights of one delivery are valid until the next wait_ready() or
// release(): a cache with fewer decode buffers than a prompt step has experts
// reuses them group by group, so the caller finishes with each group before
// asking for the next.
//
// Results must not depend on the delivery order: the caller writes each expert's
// output to its own place and combines them in a fixed order afterwards.
//
// Implementations: ResidentExpertProvider (resident_experts.h: every expert
// decoded at load, every request ready at once) and ExpertCache
// (expert_cache.h: experts streamed from storage through tiers within a memory
// budget).
//
// Thread-safety: one request at a time per provider (the engine runs one forward
// pass at a time); prefetch() may be called between requests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/kernels.h"
#include "zipmoe/cache.h"

namespace zipmoe::cache {

// The routed experts of a model. Expert e of MoE layer moe_layers[m] has three
// projections, in HF semantics:
//   gate, up: [intermediate_size, hidden_size];  down: [hidden_size, intermediate_size]
struct ExpertShapes {
  std::size_t num_layers = 0;             // decoder layers, dense and MoE
  std::vector<std::uint32_t> moe_layers;  // the decoder layers that route to experts, ascending
  std::size_t num_experts = 0;            // routed experts per MoE layer
  std::size_t experts_per_token = 0;      // k: experts each token is routed to
  std::size_t hidden_size = 0;
  std::size_t intermediate_size = 0;      // of one expert
  // Bytes of weights a single-token step multiplies besides the routed experts
  // (attention, shared experts, routers, the output matrix): for the planner's
  // estimate of the compute time beside the experts; 0: unknown.
  std::uint64_t dense_bytes_per_token = 0;
};

// All projections of one routed expert, in HF semantics:
//   gate, up: [intermediate, hidden];  down: [hidden, intermediate]
// `coded`: the provider delivers the expert as it rests, coded (the matrices
// give shapes and dtypes, their data is null): the caller multiplies with its
// projections through ExpertProvider::multiply, which decodes them into the
// products tile by tile.
struct ExpertWeights {
  kernels::WeightMatrix gate;
  kernels::WeightMatrix up;
  kernels::WeightMatrix down;
  bool coded = false;
};

// The projections of an expert, as ExpertProvider::multiply names them.
enum class ExpertProjection : int { kGate = 0, kUp = 1, kDown = 2 };

// The experts of one MoE layer that a forward step needs. The caller fills
// `layer` and `experts` (distinct ids < num_experts) and keeps the object between
// steps: the provider sizes the other vectors once and reuses them.
struct ExpertRequest {
  std::uint32_t layer = 0;
  std::vector<std::uint32_t> experts;
  // Optional, for the provider's statistics and policies: how many of the step's
  // `tokens` tokens each of `experts` serves (empty: one each).
  std::vector<std::uint32_t> token_counts;
  std::size_t tokens = 1;

  // Filled by the provider. weights[i] is valid from the wait_ready() call that
  // delivered experts[i] until the next wait_ready() or release().
  std::vector<ExpertWeights> weights;
  std::vector<std::uint8_t> delivered;  // delivered[i] != 0 once experts[i] was handed out
  std::size_t delivered_count = 0;
  bool active = false;     // between acquire() and release()
  std::uint64_t ticket = 0;  // the provider's own bookkeeping
};

class ExpertProvider {
 public:
  virtual ~ExpertProvider() = default;

  // A hint that these experts of `layer` will probably be asked for soon (e.g. a
  // guess from the next layer's router); a provider may start fetching them.
  virtual void prefetch(std::uint32_t layer, const std::uint32_t* experts, std::size_t count) {
    (void)layer, (void)experts, (void)count;
  }

  // Starts making every expert of request->experts available. Status errors:
  // InvalidArgument for an expert or layer that does not exist, I/O or format
  // errors of a provider that reads storage.
  virtual Status acquire(ExpertRequest* request) = 0;

  // Blocks until at least one expert of the request that was not delivered yet
  // is ready, then delivers every ready one: fills their weights, writes their
  // indices into request->experts to ready[0, *count) (ready must hold
  // request->experts.size() entries). *count == 0 once everything was delivered.
  virtual Status wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) = 0;

  // Ends the request: the provider may evict its experts from now on.
  virtual void release(ExpertRequest* request) = 0;

  // For request->experts[index] delivered with weights.coded, while its
  // delivery is valid: job.y = job.x W^T (+ job.bias) with W its `projection`
  // (job.weight: that projection's matrix from request->weights, data null),
  // bit-identical to kernels::linear_batch with the decoded W and `precision`.
  virtual Status multiply(const ExpertRequest& request, std::size_t index, ExpertProjection projection,
                          const kernels::LinearJob& job, kernels::MatmulPrecision precision) {
    (void)request, (void)index, (void)projection, (void)job, (void)precision;
    return Status::Internal("this expert provider delivers no coded experts");
  }

  // Bytes of expert weights this provider holds now (also in the ledger).
  virtual std::uint64_t resident_bytes() const = 0;

  // Whether prefetch() hints are worth computing (a guess costs a router pass).
  virtual bool wants_prefetch() const { return false; }

  // Adds the provider's counters to *out (which the caller zeroed) / zeroes them.
  virtual void collect_stats(ExpertCacheStats* out) const { (void)out; }
  virtual void reset_stats() {}
};

}  // namespace zipmoe::cache

// Model::Impl: the engine behind zipmoe::Model (include/zipmoe/model.h), shared
// by the model object and every context made from it, and reached by the layers
// above the model (cpp/runtime, the faces) through Model::impl(). Its methods
// return a Status; the public classes turn them into exceptions.
//
// What it guards:
//   step_mutex   one forward step at a time (the forward pass's scratch, the
//                expert provider and its statistics, the routing profile), and
//                the expert cache's share of the budget;
//   contexts_mutex  making and freeing contexts (taken before step_mutex);
//   text_mutex   the tokenizer and the parsed metadata, built on first use.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/expert_provider.h"
#include "cache/routing_profile.h"
#include "common/json.h"
#include "common/memory_ledger.h"
#include "common/status.h"
#include "format/container_file.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/load_plan.h"
#include "model/weights.h"
#include "text/tokenizer.h"
#include "zipmoe/model.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe {

struct Model::Impl {
  // Declared first so that it outlives every buffer charged to it.
  MemoryLedger ledger;
  std::string path;
  Isa isa = Isa::kScalar;
  ModelOptions options;
  ModelInfo info;
  std::size_t batch = 0;  // most tokens per forward step
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<format::ContainerFile> reader;
  model::ModelConfig config;
  model::DenseWeightStore dense;
  model::ModelWeights weights;
  std::unique_ptr<cache::ExpertProvider> experts;
  cache::ExpertCache* expert_cache = nullptr;        // experts, when streamed
  std::unique_ptr<cache::RoutingProfile> routing;  // gathered online by the forward pass
  std::unique_ptr<cache::RoutingProfile> prior;    // ModelOptions::routing_profile
  model::Forward forward;
  mutable std::mutex step_mutex;
  std::uint64_t forward_ns = 0;  // wall time of forward steps since load or reset_stats (stats()); under step_mutex
  // Making and freeing contexts (a budget check and its allocation happen as one). Taken before step_mutex.
  std::mutex contexts_mutex;

  // The steps of Model::load, in order (then the default context is made, then
  // start_streaming gives the rest of the budget to the expert cache).
  Status load(const std::string& path, const ModelOptions& options);
  Status open();
  Status load_routing_profiles();
  // Before anything is read or allocated: the container's tensors are those of
  // its architecture, and what the load holds fits the budget and the machine.
  Status plan(std::size_t context);
  Status load_weights();
  Status init_forward(std::size_t context);
  Status start_streaming(std::size_t context);
  void describe(std::size_t context);

  // Experts come through the expert cache (a memory budget was given) or are all decoded at load.
  bool streams_experts() const { return options.memory_budget > 0; }
  // What the forward pass is built with (the same when planned and when allocated).
  model::ForwardOptions forward_options(std::size_t context) const;
  // What the ledger holds before the expert cache starts, with the cache's minimum.
  model::MemoryPlan held_memory(std::size_t context) const;

  // ---- contexts ----
  // The context's max_context for options.max_context (0: the model's), or InvalidArgument.
  Status context_positions(const ContextOptions& options, std::size_t* positions) const;
  // Bytes a context of `sequences` sequences of `positions` positions holds.
  std::uint64_t context_bytes(std::size_t positions, std::size_t sequences) const;
  // Makes room for `bytes` more outside the expert cache: under a budget,
  // shrinks the cache's share when the rest of the budget does not hold them;
  // Budget (itemized, naming `what`) when even the cache's working set would not
  // leave room, nothing changed. The caller holds contexts_mutex until it has
  // allocated them; takes step_mutex.
  Status make_room(std::uint64_t bytes, const std::string& what);
  // Gives what contexts freed back to the expert cache. Takes contexts_mutex, then step_mutex.
  void room_freed();
  // The same, for a caller that holds contexts_mutex.
  void give_back_locked();

  // ---- steps ----
  // One forward step (model::Forward::step) under step_mutex.
  Status step(const model::StepSegment* segments, std::size_t count, float* logits);

  // ---- text ----
  Status tokenizer(std::shared_ptr<const text::Tokenizer>* out);
  // The metadata's members the engine reads for text ("generation_config", "tokenizer").
  Status text_metadata(const json::Value** out);
  Status eos_token_ids(std::vector<std::int32_t>* out);

 private:
  // Bytes held outside the expert cache (dense weights, contexts, scratch).
  std::uint64_t bytes_outside_cache() const;

  std::mutex text_mutex_;
  bool text_metadata_parsed_ = false;
  Status text_metadata_status_;
  json::Value text_metadata_;
  bool tokenizer_built_ = false;
  Status tokenizer_status_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
};

}  // namespace zipmoe

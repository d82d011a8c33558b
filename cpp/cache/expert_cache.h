// ExpertCache: the tiered expert cache behind the engine's ExpertProvider
// interface (docs/CACHE.md has the full design and the math). It decides what
// is kept in which state; its fetch pipeline (sched/fetch_pipeline.h) reads and
// decodes what a request needs.
//
// Memory. Everything it holds is charged to the model's ledger as kExperts and
// stays within the budget given to start():
//   tiers        each expert rests FULL / COMPRESSED / SM / E / ABSENT (tiers.h);
//                the planner (planner.h) gives each state a byte capacity and the
//                initial residents, from a routing profile or a uniform prior
//   working set  the pipeline's S decode buffers of one decoded expert each
//                (S = k, 2k when the budget allows: k for the layer at hand, k
//                for decoding the next layer's guessed experts ahead) and G
//                staging buffers of one expert's padded chunks each (G = 1 ..
//                k + 2: the reader threads read ahead as far as they allow)
//
// A request (one MoE layer of one forward step) goes through these steps:
//   acquire   every requested expert is pinned; FULL ones are ready at once;
//             for the others the pipeline makes a fetch (or a request adopts
//             the prefetch under way) of the planes the expert's state lacks;
//             they read and decode in Johnson's order (sched/fetch_order.h):
//             first the fetches whose read is shorter than their decode, by
//             increasing read time (decode-only ones lead), then the others by
//             decreasing decode time
//   wait_ready  the calling (forward) thread delivers whatever is decoded, and
//             otherwise decodes (the pipeline picks the part: of a started
//             expert, then in the scheduled order, then of a guess for the next
//             layer) or waits for a read
//   release   unpins; the decode buffers of delivered experts are reused
// When a fetched expert has been decoded, the policy (policy.h) may admit it to
// a fuller state, displacing experts of lower key (which drop to a state their
// remaining bytes still form: COMPRESSED -> SM or E where there is room, others
// -> ABSENT); the chunks read for the fetch and the decode buffer itself are
// what the fuller state keeps, so an admission costs a copy at most.
//
// prefetch(layer, experts) (the forward pass's gate-ahead guess for the next MoE
// layer) starts fetches at prefetch priority; the next acquire adopts those it
// asked for and cancels the others (queued reads dropped, buffers freed).
//
// Results never depend on any of this: each expert is decoded bit-exactly from
// the same bytes whatever state, order or thread count, and the forward pass
// combines experts in a fixed order.
//
// Errors: a chunk that fails its checksum, a short read (file truncated) or an
// I/O error fails the request that needed it with that status (wait_ready
// returns it); the expert keeps its state and the cache stays usable.
//
// Thread-safety: one request at a time (the engine serializes forward passes);
// prefetch() and stats() may be called between requests; the reader threads
// are internal. The pipeline's one mutex guards the cache's state too; decoding
// runs without it (only the forward thread decodes).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "cache/coded_product.h"
#include "cache/expert_layout.h"
#include "cache/expert_provider.h"
#include "cache/machine_profile.h"
#include "cache/planner.h"
#include "cache/policy.h"
#include "cache/routing_profile.h"
#include "cache/tiers.h"
#include "common/memory_block.h"
#include "common/memory_ledger.h"
#include "format/container_file.h"
#include "sched/fetch_pipeline.h"
#include "zipmoe/cache.h"
#include "zipmoe/container.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe::cache {

struct CacheOptions {
  std::uint64_t budget = 0;  // bytes for every tier and buffer of the cache
  CachePolicy policy = CachePolicy::kAffinity;
  bool prefetch = true;
  std::uint8_t allowed_tiers = kAllExpertTiers;
  const RoutingProfile* prior = nullptr;  // routing frequencies for the planner and the policy; null: uniform
  IoMode io_mode = IoMode::kPread;
  double storage_bandwidth = 0;  // bytes/s; 0: measured
  double decode_throughput = 0;  // decoded bytes/s of one thread; 0: measured
  double read_latency = 80e-6;   // seconds per chunk read
  bool reorder_fetches = true;   // false: request order (a baseline)
  int io_threads = 2;            // reader threads of the I/O queue
};

// The smallest budget ExpertCache::start() accepts for experts laid out as
// `table`: experts_per_token decode buffers and one staging buffer.
std::uint64_t minimum_cache_bytes(const ExpertTable& table);

class ExpertCache final : public ExpertProvider {
 public:
  // Finds every expert in `reader` (FormatError status for a missing or
  // misshapen one). Allocates nothing: call start() next. All pointers must
  // outlive the cache.
  static Status create(const format::ContainerFile* reader, const ExpertShapes& shapes, ThreadPool* pool,
                       MemoryLedger* ledger, Isa isa, std::unique_ptr<ExpertCache>* out);
  ~ExpertCache() override;

  // The smallest budget start() accepts: experts_per_token decode buffers and
  // one staging buffer.
  std::uint64_t minimum_bytes() const;

  // Plans the states within options.budget, allocates the working set, reads
  // the planned residents from the container and starts the reader threads.
  Status start(const CacheOptions& options);

  // A new budget, between requests (the model moved memory to or from its
  // contexts): the states are planned again within it, and a smaller one
  // demotes the lowest-key experts at once (the states that grew fill as
  // fetched experts are admitted). Budget status when it is below the working
  // set, which stays as start() sized it (nothing changes then).
  Status set_budget(std::uint64_t budget);
  std::uint64_t budget() const { return options_.budget; }
  // The decode and staging buffers: the least budget the cache can run in once started.
  std::uint64_t working_set_bytes() const;

  // ExpertProvider
  void prefetch(std::uint32_t layer, const std::uint32_t* experts, std::size_t count) override;
  Status acquire(ExpertRequest* request) override;
  Status wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) override;
  void release(ExpertRequest* request) override;
  Status multiply(const ExpertRequest& request, std::size_t index, ExpertProjection projection,
                  const kernels::LinearJob& job, kernels::MatmulPrecision precision) override;
  std::uint64_t resident_bytes() const override;
  bool wants_prefetch() const override { return started_ && options_.prefetch; }
  void collect_stats(ExpertCacheStats* out) const override;
  void reset_stats() override;

  const ExpertTable& table() const { return table_; }
  // The state expert `id` rests in now (tests).
  ExpertTier tier_of(std::size_t id) const;

 private:
  using Lock = sched::FetchPipeline::Lock;

  struct ExpertSlot {
    ExpertTier tier = ExpertTier::kAbsent;
    MemoryBlock full;      // FULL: the decoded expert
    MemoryBlock exponent;  // COMPRESSED, E
    MemoryBlock sm;        // COMPRESSED, SM
    int pins = 0;          // requests using it
    sched::FetchId fetch = sched::kNoFetch;  // its latest fetch (see pinned())
  };

  ExpertCache() = default;

  // Set-up (start).
  void size_working_set(std::size_t* decode_buffers, std::size_t* staging_buffers) const;
  struct ProbeProducts {
    double plain_seconds = 0;  // the probe expert's single-token products over its decoded weights
    double coded_seconds = 0;  // the same, coded (0: not measured)
    double last_seconds = 0;
  };
  Status measure(CostModel* model);
  Status probe_machine(MachineSpeeds* speeds);
  Status probe_products(const ExpertLayout& x, ProbeProducts* out);
  double probe_merge(const ExpertLayout& x);
  TierPlan make_plan() const;
  void report_plan(const std::vector<ExpertTier>& tiers);
  void set_prior(const CacheOptions& options);
  Status fill_planned(const TierPlan& plan);
  Status load_resident(std::size_t expert, ExpertTier tier);

  // A request (all under the lock).
  void begin_step(const ExpertRequest& request, std::uint32_t moe_index);
  void start_fetches(const ExpertRequest& request, std::uint32_t moe_index);
  sched::FetchId new_fetch(std::size_t expert, sched::IoPriority priority);
  Status request_error(const ExpertRequest& request) const;
  void deliver_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count);
  Status make_progress(Lock& lock, const ExpertRequest& request);
  void recycle_delivered();
  // The timeline: the forward pass's time between the cache's calls.
  void enter();
  void leave(sched::TimelineKind kind);

  // Coded delivery (COMPRESSED experts multiplied through CodedProducts).
  Status size_coded_products();
  bool deliver_coded(std::size_t expert, std::uint32_t tokens, double key) const;
  bool could_enter_full(std::size_t expert, double key) const;

  // States (all under the lock).
  bool pinned(std::size_t expert) const;
  void admit(sched::FetchId fetch);
  bool admit_full(sched::FetchId fetch, std::size_t expert, double key);
  bool make_room(ExpertTier tier, std::size_t expert, double key, std::uint64_t need);
  void demote(std::size_t expert);
  Status move_to(std::size_t expert, ExpertTier tier, sched::FetchId fetch);
  Status copy_staged(std::size_t expert, int plane, sched::FetchId fetch, MemoryBlock* block);
  void drop_storage(std::size_t expert, bool keep_exponents, bool keep_sm);
  std::uint64_t bytes_in(std::size_t expert, ExpertTier tier) const;
  // Plans again from the routing frequencies seen so far and shrinks the states
  // whose capacity went down (their lowest-key experts move down at once; the
  // states that grew fill as fetched experts are admitted). A new plan replaces
  // the one in force only when clearly faster, unless the budget changed
  // (`budget_changed`): then the plan in force may no longer fit.
  void replan(bool budget_changed = false);

  const format::ContainerFile* reader_ = nullptr;
  ThreadPool* pool_ = nullptr;
  Isa isa_ = Isa::kScalar;
  CodedProducts products_;  // allocated when COMPRESSED experts may be delivered coded
  bool use_coded_ = false;  // ... and they are (measure())
  MemoryLedger* ledger_ = nullptr;
  ExpertTable table_;
  CacheOptions options_;
  CostModel cost_;
  bool started_ = false;
  std::unique_ptr<sched::FetchPipeline> pipeline_;  // its mutex guards everything below

  std::vector<ExpertSlot> experts_;
  std::vector<ExpertCosts> costs_;
  std::vector<ExpertCosts> raw_costs_;       // the same experts as a raw container would hold them
  bool raw_container_ = false;               // the experts are stored uncompressed
  std::uint64_t dense_bytes_per_token_ = 0;  // ExpertShapes
  MachineSpeeds speeds_;                     // measured (or cached) at load
  std::vector<ExpertTier> plan_in_force_;    // the plan the capacities come from
  PolicyRanker ranker_;
  std::uint64_t capacity_[kNumExpertTiers] = {0, 0, 0, 0, 0};
  std::uint64_t used_[kNumExpertTiers] = {0, 0, 0, 0, 0};

  // The request between acquire and release.
  ExpertRequest* request_ = nullptr;
  std::vector<sched::FetchId> request_fetch_;  // per request index: its fetch, or kNoFetch (FULL at acquire)
  std::vector<std::uint8_t> request_coded_;    // per request index: delivered coded (COMPRESSED, no fetch)
  std::vector<std::size_t> request_ids_;
  std::vector<sched::FetchId> pending_;        // the undelivered fetches, in request order
  std::vector<sched::FetchId> delivered_group_;  // fetches delivered by the last wait_ready
  std::int64_t last_layer_ = -1;
  std::uint64_t step_ = 0;

  // Statistics (the pipeline adds its reads and decodes).
  std::vector<ExpertLayerStats> layer_stats_;
  ExpertCacheStats counters_;
  double planned_seconds_ = 0;
  std::uint64_t tier_budget_ = 0;      // bytes the planner may give the states
  std::uint64_t working_set_ = 0;      // the pipeline's buffers as start() allocated them
  std::uint64_t next_replan_step_ = 0;  // 0: never
  std::uint64_t replans_ = 0;

  // Bytes read beyond the requests', and the timeline (stats()).
  std::uint64_t load_bytes_read_ = 0;
  std::uint64_t replan_dropped_bytes_ = 0;
  std::uint64_t replan_demotions_ = 0;
  std::uint64_t io_busy_at_reset_ = 0;
  PlannerReport planner_report_;
  std::chrono::steady_clock::time_point timeline_origin_{};
  std::chrono::steady_clock::time_point returned_at_{};  // when the cache last returned to the forward pass
  int returned_kind_ = -1;  // the sched::TimelineKind the forward pass spends until the next call; -1: none

  // What the forward pass spends besides the cache, for the next plan (not reset by reset_stats).
  std::uint64_t measured_other_ns_ = 0;   // CPU time between requests besides decoding and waiting
  std::uint64_t measured_other_samples_ = 0;
  std::chrono::steady_clock::time_point last_acquire_time_{};
  std::uint64_t request_busy_ns_ = 0;     // decoding and waiting within the current request
  bool last_request_single_token_ = false;
};

}  // namespace zipmoe::cache

// ExpertCache: the tiered expert cache and fetch pipeline behind the engine's
// ExpertProvider interface (docs/CACHE.md has the full design and the math).
//
// Memory. Everything it holds is charged to the model's ledger as kExperts and
// stays within the budget given to start():
//   tiers        each expert rests FULL / COMPRESSED / SM / E / ABSENT (tiers.h);
//                the planner (planner.h) gives each state a byte capacity and the
//                initial residents, from a routing profile or a uniform prior
//   decode buffers  S buffers of one decoded expert each (S = k, 2k when the
//                budget allows: k for the layer at hand, k for decoding the
//                next layer's guessed experts ahead)
//   fetch buffers   G staging buffers of one expert's padded chunks each
//                (G = 1 .. k + 2): the I/O thread reads ahead as far as they allow
//
// A request (one MoE layer of one forward step) goes through these steps:
//   acquire   every requested expert is pinned; FULL ones are ready at once;
//             for the others a fetch is made (or a prefetch of it adopted) and
//             the fetches are ordered by Johnson's rule (sched/fetch_order.h):
//             decode-only fetches first, then reads by increasing read time;
//             their chunk reads go to the I/O queue (sched/io_queue.h, two
//             reader threads) in that order as staging buffers allow
//   wait_ready  the calling (forward) thread delivers whatever is decoded, and
//             otherwise decodes: the next projection whose chunks are in RAM,
//             its segments spread over the engine's thread pool; when nothing
//             of the request can be decoded it decodes a prefetched expert of
//             the next layer into a spare buffer, or waits for a read
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
// are internal. One mutex guards all state; decoding runs without it (only the
// forward thread decodes, and a fetch being decoded is never cancelled).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "cache/expert_layout.h"
#include "cache/memory_block.h"
#include "cache/planner.h"
#include "cache/policy.h"
#include "cache/routing_profile.h"
#include "cache/tiers.h"
#include "cache/expert_provider.h"
#include "common/memory_ledger.h"
#include "format/container_file.h"
#include "sched/chunk_source.h"
#include "sched/io_queue.h"
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

class ExpertCache final : public ExpertProvider {
 public:
  // Finds every expert in `reader` (FormatError status for a missing or
  // misshapen one). Allocates nothing: call start() next. All pointers must
  // outlive the cache.
  static Status create(const format::ContainerFile* reader, const ExpertShapes& shapes, ThreadPool* pool,
                       MemoryLedger* ledger, Isa isa, std::unique_ptr<ExpertCache>* out);
  ~ExpertCache() override;

  // The smallest budget start() accepts: experts_per_token decode buffers and
  // one fetch buffer.
  std::uint64_t minimum_bytes() const;

  // Plans the states within options.budget, allocates the buffers, reads the
  // planned residents from the container and starts the I/O thread.
  Status start(const CacheOptions& options);

  // ExpertProvider
  void prefetch(std::uint32_t layer, const std::uint32_t* experts, std::size_t count) override;
  Status acquire(ExpertRequest* request) override;
  Status wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) override;
  void release(ExpertRequest* request) override;
  std::uint64_t resident_bytes() const override;
  bool wants_prefetch() const override { return started_ && options_.prefetch; }
  void collect_stats(ExpertCacheStats* out) const override;
  void reset_stats() override;

  const ExpertTable& table() const { return table_; }
  // The state expert `id` rests in now (tests).
  ExpertTier tier_of(std::size_t id) const;

 private:
  struct ExpertSlot {
    ExpertTier tier = ExpertTier::kAbsent;
    MemoryBlock exponent;  // COMPRESSED, E
    MemoryBlock sm;        // COMPRESSED, SM
    int decoded = -1;      // FULL: index into decoded_
    int pins = 0;
    int fetch = -1;        // the fetch under way, if any
  };

  struct Fetch {
    bool live = false;
    std::uint64_t tag = 0;
    std::size_t expert = 0;
    bool prefetch = false;    // no request has taken it (yet)
    bool cancelled = false;   // abandoned; freed when its reads in flight complete
    int request_index = -1;
    std::size_t order = 0;
    ExpertTier tier_at_start = ExpertTier::kAbsent;
    bool read_exponents = false;
    bool read_sm = false;
    bool submitted = false;   // reads handed to the I/O queue (or none needed)
    int staging = -1;
    int buffer = -1;          // decode buffer index into decoded_
    int reads_pending = 0;
    int chunks_ready[kProjections] = {0, 0, 0};
    bool decoded[kProjections] = {false, false, false};
    int decoded_count = 0;
    bool decoding = false;    // the forward thread decodes one of its projections (without the lock)
    bool admitted = false;    // admission decided (after the decode)
    bool delivered = false;
    Status error;
  };

  ExpertCache() = default;

  // Under mutex_.
  int new_fetch(std::size_t expert, bool prefetch);
  void free_fetch(int f);
  void cancel_fetch(int f);
  void submit_reads(int f);
  void start_waiting_fetches();
  int chunks_needed() const;
  int needed_chunks(const Fetch& fetch) const;
  bool projection_ready(const Fetch& fetch, int j) const;
  int take_decode_buffer(bool for_request);
  void return_decode_buffer(int buffer);
  void finish_fetch_decode(int f);
  void admit(int f);
  bool make_room(ExpertTier tier, std::size_t expert, double key, std::uint64_t need);
  void demote(std::size_t expert);
  Status move_to(std::size_t expert, ExpertTier tier, const Fetch* fetch);
  void drop_storage(std::size_t expert, bool keep_exponents, bool keep_sm);
  std::uint64_t bytes_in(std::size_t expert, ExpertTier tier) const;
  void recycle_delivered();
  void on_read_done(const sched::ReadRequest& read, const sched::ReadResult& result);

  // Decodes projection j of fetch f (called without mutex_).
  Status decode_projection(int f, int j, std::uint64_t* nanoseconds);
  Status fill_planned(const TierPlan& plan);
  // Plans again from the routing frequencies seen so far and shrinks the states
  // whose capacity went down (their lowest-key experts move down at once; the
  // states that grew fill as fetched experts are admitted).
  void replan();
  Status measure(CostModel* model);

  const format::ContainerFile* reader_ = nullptr;
  ThreadPool* pool_ = nullptr;
  MemoryLedger* ledger_ = nullptr;
  Isa isa_ = Isa::kScalar;
  ExpertTable table_;
  CacheOptions options_;
  CostModel cost_;
  bool started_ = false;

  std::unique_ptr<sched::ChunkSource> source_;
  std::unique_ptr<sched::IoQueue> io_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;

  std::vector<ExpertSlot> experts_;
  std::vector<ExpertCosts> costs_;
  PolicyRanker ranker_;
  std::uint64_t capacity_[kNumExpertTiers] = {0, 0, 0, 0, 0};
  std::uint64_t used_[kNumExpertTiers] = {0, 0, 0, 0, 0};

  std::vector<MemoryBlock> decoded_;     // FULL experts' blocks and decode buffers
  std::vector<int> decoded_owner_;       // -1 free, -2 a FULL expert, else the fetch holding it
  std::vector<int> free_decoded_;
  std::size_t decode_buffers_ = 0;       // S
  std::size_t full_count_ = 0;
  std::vector<MemoryBlock> staging_;
  std::vector<int> free_staging_;
  std::deque<int> waiting_demand_;       // fetches waiting for a staging buffer
  std::deque<int> waiting_prefetch_;

  std::vector<Fetch> fetches_;
  std::vector<int> free_fetches_;
  std::uint64_t next_tag_ = 1;

  // The request between acquire and release.
  ExpertRequest* request_ = nullptr;
  std::vector<int> request_fetch_;       // per request index: fetch, or -1 (FULL at acquire)
  std::vector<std::size_t> request_ids_;
  std::vector<int> delivered_group_;     // fetches delivered by the last wait_ready
  std::int64_t last_layer_ = -1;
  std::uint64_t step_ = 0;
  std::size_t max_prefetch_ = 0;

  // Statistics (under mutex_).
  std::vector<ExpertLayerStats> layer_stats_;
  ExpertCacheStats counters_;
  double planned_seconds_ = 0;
  std::uint64_t tier_budget_ = 0;      // bytes the planner may give the states
  std::uint64_t next_replan_step_ = 0;  // 0: never
  std::uint64_t replans_ = 0;

  // What the pipeline measures as it runs, for the next plan (not reset by reset_stats).
  std::uint64_t measured_decode_ns_ = 0;
  std::uint64_t measured_decoded_bytes_ = 0;
  // Reads of exponent chunks [0] and sign/mantissa chunks [1].
  std::uint64_t measured_read_ns_[2] = {0, 0};
  std::uint64_t measured_read_bytes_[2] = {0, 0};
  std::uint64_t measured_reads_[2] = {0, 0};
  std::uint64_t measured_other_ns_ = 0;   // CPU time between requests besides decoding and waiting
  std::uint64_t measured_other_samples_ = 0;
  std::chrono::steady_clock::time_point last_acquire_time_{};
  std::uint64_t request_busy_ns_ = 0;     // decoding and waiting within the current request
  bool last_request_single_token_ = false;
  // Share of guessed experts that the next request took (moving average). A
  // guess is decoded ahead only while this is high: decoding a wrong guess
  // delays the request at hand, whereas reading one only uses an idle drive.
  double prefetch_accuracy_ = 0.5;
  std::uint64_t prefetch_probe_ = 0;
};

}  // namespace zipmoe::cache

// zipmoe/cache.h - the vocabulary of the tiered expert cache: its policies, the
// states an expert rests in, and the counters it keeps (docs/CACHE.md).
//
// The cache itself is internal (cpp/cache); a Model owns one when it is loaded
// with a memory budget (ModelOptions in zipmoe/model.h) and reports these
// counters through Model::stats(). Everything here is a plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zipmoe/export.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// How the expert cache ranks experts when it admits and evicts (docs/CACHE.md).
enum class CachePolicy : std::uint8_t {
  kAffinity = 0,  // recency, with a bonus for experts the layer routes to often
  kLru = 1,       // least recently used
  kLfu = 2,       // least frequently used (profile prior + online counts)
};
// "affinity", "lru", "lfu".
const char* cache_policy_name(CachePolicy policy);
bool parse_cache_policy(const std::string& name, CachePolicy* policy);

// The state an expert rests in, from most to least held in RAM.
enum class ExpertTier : std::uint8_t {
  kFull = 0,        // decoded weights: ready
  kCompressed = 1,  // coded exponent planes and sign/mantissa planes: decode only
  kSm = 2,          // sign/mantissa planes: read the exponent chunks, decode
  kE = 3,           // coded exponent planes: read the sign/mantissa chunks, decode
  kAbsent = 4,      // nothing: read both, decode
};
constexpr int kNumExpertTiers = 5;
constexpr std::uint8_t expert_tier_bit(ExpertTier tier) { return std::uint8_t(1u << static_cast<int>(tier)); }
constexpr std::uint8_t kAllExpertTiers = 0x1f;
// "full", "compressed", "sm", "e", "absent".
const char* expert_tier_name(ExpertTier tier);
bool parse_expert_tier(const std::string& name, ExpertTier* tier);

// The expert cache's work, per MoE layer and in total (Model::stats()).
struct ExpertLayerStats {
  std::uint32_t layer = 0;          // decoder layer index (total: 0)
  std::uint64_t requests = 0;       // experts asked for by forward steps (one per expert per step)
  // requests by the state the expert was in when asked; served_from[kAbsent] are the misses
  std::uint64_t served_from[kNumExpertTiers] = {0, 0, 0, 0, 0};
  std::uint64_t prefetch_hits = 0;  // requests that found a prefetch of the expert under way or done
  std::uint64_t bytes_read = 0;     // stored bytes read from the container for requests (prefetches included)
  std::uint64_t prefetch_bytes_read = 0;  // of which by prefetches (used or not)
  std::uint64_t unused_bytes_read = 0;    // of which no request used: wrong guesses, cancelled or failed fetches
  std::uint64_t reread_bytes = 0;   // of which read again in the step that dropped an unused read of the expert
  std::uint64_t chunks_read = 0;
  std::uint64_t read_ns = 0;        // time the reader threads spent reading them (summed over the threads)
  std::uint64_t decoded_bytes = 0;  // bytes of expert weights decoded (fused decodes included)
  std::uint64_t unused_decoded_bytes = 0;  // of which no request used, or decoded again later
  std::uint64_t fused_decoded_bytes = 0;   // of which decoded tile by tile into the products (COMPRESSED hits)
  std::uint64_t decode_ns = 0;      // time the forward pass spent decoding (on the pool, wall clock)
  std::uint64_t stall_ns = 0;       // time the forward pass waited for experts with nothing to do
  std::uint64_t hits() const { return requests - served_from[static_cast<int>(ExpertTier::kAbsent)]; }
  std::uint64_t misses() const { return served_from[static_cast<int>(ExpertTier::kAbsent)]; }
};

// One interval of the expert cache's work (ExpertCacheStats::timeline).
struct FetchTimelineEvent {
  std::string kind;           // "read", "decode" (into a decode buffer), "stall" (waiting for a read),
                              // "compute" (products with delivered experts), "other" (the rest of the step),
                              // "fused" (a COMPRESSED expert's projection decoded into its product, within "compute")
  int thread = -1;            // "read": the reader thread; -1: the forward thread
  bool prefetch = false;      // "read", "decode": for a guess of the next layer
  std::uint32_t layer = 0;    // "read", "decode": the expert's decoder layer and id
  std::uint32_t expert = 0;
  int projection = -1;        // "read", "decode": 0 gate, 1 up, 2 down
  bool sm = false;            // "read": the sign/mantissa chunk (else the exponent chunk)
  double start = 0, end = 0;  // seconds since the timeline began (load, or reset_stats())
};

// What the planner measured and chose (ExpertCacheStats::planner).
struct PlannerReport {
  std::string source;                   // "measured" at this load, "cached" (an earlier load's figures), "given"
  double storage_bandwidth = 0;         // bytes/s of the probe reads (with read_latency per read)
  double read_latency = 0;              // seconds per chunk read
  double decode_throughput = 0;         // decoded bytes/s of all threads, into memory (misses, SM and E hits)
  double coded_decode_throughput = 0;   // decoded bytes/s of all threads within coded products (COMPRESSED
                                        // hits): their time beyond the product itself; 0: not used
  double matmul_throughput = 0;         // weight bytes/s of all threads, single-token products
  double merge_throughput = 0;          // bytes/s of all threads merging uncompressed planes (a raw
                                        // container's decode)
  double other_cpu_seconds = 0;         // the estimate of a layer's CPU time besides decoding, at load
  double seconds_per_token = 0;         // the plan's expected time per token (as planned_seconds_per_token)
  double raw_seconds_per_token = 0;     // the best plan's if the experts were stored uncompressed (0: not
                                        // estimated: an uncompressed container, or no measurement)
  bool compressed_slower_than_raw = false;  // the best plan is over 5% slower than raw bytes would be
  std::string choice;                   // one line: the states the plan fills, and what bounds a token
  std::string warning;                  // when compressed_slower_than_raw: one line naming the speeds
};

struct ExpertCacheStats {
  bool enabled = false;             // false: experts are resident (no budget); counts still kept
  std::vector<ExpertLayerStats> layers;  // MoE layers, in order
  ExpertLayerStats total;
  std::uint64_t experts_in[kNumExpertTiers] = {0, 0, 0, 0, 0};  // experts resting in each state now
  std::uint64_t tier_bytes[kNumExpertTiers] = {0, 0, 0, 0, 0};  // bytes held by each state now
  std::uint64_t tier_capacity[kNumExpertTiers] = {0, 0, 0, 0, 0};  // bytes the planner gave each state
  std::uint64_t working_set_bytes = 0;  // decode buffers and fetch (staging) buffers
  std::uint32_t decode_buffers = 0;
  std::uint32_t fetch_buffers = 0;
  std::uint64_t prefetches = 0;          // experts a prefetch started on
  std::uint64_t prefetches_used = 0;     // of which a request then took over
  std::uint64_t prefetches_cancelled = 0;
  std::uint64_t admissions = 0;          // experts moved to a fuller state after a fetch
  std::uint64_t evictions = 0;           // experts moved to an emptier state to make room
  std::uint64_t steps = 0;               // forward steps seen
  std::uint64_t replans = 0;             // times the planner re-split the budget from the routing seen
  double storage_bandwidth = 0;          // bytes/s the planner used
  double read_latency = 0;               // seconds per chunk read the planner used
  double other_cpu_seconds = 0;          // measured CPU time per layer besides decoding (single-token steps)
  double decode_throughput = 0;          // decoded bytes/s per thread the planner used
  double planned_seconds_per_token = 0;  // the planner's expected expert fetch time per token
  // Bytes read beyond the requests' (every byte read is in total.bytes_read, load_bytes_read, or here):
  std::uint64_t load_bytes_read = 0;     // read at load for the planned residents
  std::uint64_t replan_dropped_bytes = 0;  // bytes of states dropped by re-plans (since reset_stats)
  std::uint64_t replan_demotions = 0;    // experts a re-plan moved down
  double io_busy_seconds = 0;            // wall time with at least one read in progress (the drive busy)
  double forward_seconds = 0;            // wall time of forward steps (Model fills it): with decode and stall
                                         // seconds, the rest is compute
  PlannerReport planner;
  std::vector<FetchTimelineEvent> timeline;  // kept when ZIPMOE_TIMELINE=N (N events at most); else empty
};

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

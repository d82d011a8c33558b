// The tier planner: splits the expert part of the memory budget among the
// expert states so that the expected expert fetch time per token is smallest.
//
// Cost model (per expert, per request, by the state it rests in):
//   io(state)     = reads(state) * read_latency + read_bytes(state) / storage_bandwidth
//                   FULL, COMPRESSED: nothing; SM: its 3 exponent chunks; E: its 3 SM
//                   chunks; ABSENT: all 6
//   decode(state) = decoded_bytes / decode_throughput (all decode threads), 0 for FULL;
//                   COMPRESSED at the coded throughput when its experts are
//                   multiplied coded (decoded tile by tile into the products,
//                   coded_product.h), which saves the decoded copy's trip
//                   through memory
// One layer runs its reads on one I/O thread while the CPU decodes and computes,
// so with p_e the probability that a token routes to expert e, a layer costs
//   IO  = sum_e p_e io(state_e)
//   CPU = sum_e p_e decode(state_e) + C      (C: the layer's other CPU work,
//                                             attention and matrix products)
//   T   = max(IO, CPU) + min(IO, CPU) / k
// (the slower stage bounds the layer; the first read and the last decode of the
// k experts do not overlap, about 1/k of the other stage). The planner minimises
// sum over layers of T within the budget. Where the CPU is the bottleneck (few
// cores, fast storage) this favours FULL experts, which cost no decoding; where
// storage is, it favours the compressed states, which hold the most experts per
// byte.
//
// It is a greedy on marginal value: starting with every expert ABSENT, it
// repeatedly applies the move (one expert to a fuller allowed state) with the
// largest time saved per byte added that still fits, until none helps or fits.
// Since the expected time is linear in each expert's state for a fixed
// bottleneck, this is the classic density greedy of a knapsack, which the max()
// couples per layer (a move that only relieves a stage that is not the
// bottleneck saves only its 1/k share). The result is deterministic: ties go to
// the lower expert id and the fuller state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/tiers.h"

namespace zipmoe::cache {

struct CostModel {
  double storage_bytes_per_second = 1.5e9;
  double read_latency_seconds = 80e-6;
  double decode_bytes_per_second = 3e9;  // decoded output of all decode threads together
  double coded_decode_bytes_per_second = 0;  // COMPRESSED experts multiplied coded: their decoding's
                                             // rate (time beyond the plain product); 0: decoded whole
  double other_cpu_seconds = 0;          // C: CPU time of one layer besides decoding, per token
};

// What one expert costs in each state.
struct ExpertCosts {
  std::array<std::uint64_t, kNumExpertTiers> bytes{};       // RAM while resting in the state (charged bytes)
  std::array<std::uint32_t, kNumExpertTiers> reads{};       // chunk reads a request needs
  std::array<std::uint64_t, kNumExpertTiers> read_bytes{};  // bytes those reads transfer
  std::uint64_t decoded_bytes = 0;
  double probability = 0;  // chance that a token routes to the expert
  std::uint32_t group = 0;  // its MoE layer
};

struct TierPlan {
  std::vector<ExpertTier> tiers;                        // per expert
  std::array<std::uint64_t, kNumExpertTiers> capacity{};  // bytes of the experts planned in each state
  std::uint64_t bytes = 0;                               // sum of capacity
  double seconds_per_token = 0;        // expected expert fetch time per token with this plan
  double seconds_per_token_empty = 0;  // ... with every expert ABSENT
};

double expert_io_seconds(const ExpertCosts& expert, ExpertTier tier, const CostModel& model);
double expert_decode_seconds(const ExpertCosts& expert, ExpertTier tier, const CostModel& model);
// T of one layer from its expected IO and CPU seconds.
double layer_seconds(double io, double cpu, std::size_t experts_per_token);
// What experts resting in `tiers` (per expert) cost per token: the sum over
// layers of T, and of its parts.
struct PlanTotals {
  double seconds = 0;  // sum of T
  double io = 0;       // sum of IO (reads)
  double decode = 0;   // sum of the decoding part of CPU
  double other = 0;    // sum of C
};
PlanTotals plan_totals(const std::vector<ExpertCosts>& experts, const std::vector<ExpertTier>& tiers,
                       std::size_t num_groups, std::size_t experts_per_token, const CostModel& model);

// Plans the states of `experts` (groups numbered 0 .. num_groups-1) within
// `budget` bytes, using only the states in `allowed` (a mask of
// expert_tier_bit(); ABSENT is always allowed).
TierPlan plan_tiers(const std::vector<ExpertCosts>& experts, std::size_t num_groups, std::size_t experts_per_token,
                    std::uint8_t allowed, std::uint64_t budget, const CostModel& model);

}  // namespace zipmoe::cache

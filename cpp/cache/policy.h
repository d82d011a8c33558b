// Cache policies: how the expert cache ranks experts when it decides which one
// may take another's place in a state (docs/CACHE.md).
//
// Every expert has a key; a fetched expert enters a fuller state only by
// displacing experts of lower key. Time is counted in forward steps (all the
// layers of one step share a step number: an expert used by layer 0 and one used
// by layer 23 of the same token are equally recent). The routing frequency of
// an expert within its layer is
//   f = (W * p_prior + tokens routed to it) / (W + tokens through the layer)
// (p_prior from the routing profile given at load, else k / E; W pseudo-tokens
// of prior weight), and r = f * E / k its frequency relative to the layer's
// average expert (1 = average).
//   lru       key = last step used                      (r breaks ties)
//   lfu       key = r                                   (recency breaks ties)
//   affinity  key = last step used + horizon * r,  horizon = E / k steps
// Affinity is LRU in which an expert the layer routes to r times as often as
// average counts as used horizon * r steps later: the mean gap between two uses
// of an average expert is E / k steps, so a hot expert survives a few of its
// own gaps while a cold one leaves soon after its last use.
//
// Thread-safety: none (the cache's lock guards it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "zipmoe/cache.h"

namespace zipmoe::cache {

class PolicyRanker {
 public:
  PolicyRanker() = default;
  // prior[id]: routing probability per token of each expert (empty: k / E);
  // prior_weight: W, in tokens.
  PolicyRanker(CachePolicy policy, std::size_t num_groups, std::size_t num_experts, std::size_t experts_per_token,
               std::vector<double> prior, double prior_weight);

  // A step of group `group` went through `tokens` tokens.
  void record_tokens(std::size_t group, std::uint64_t tokens) { group_tokens_[group] += tokens; }
  // Expert `id` (of group id / num_experts) received `tokens` tokens at `step`.
  void record_use(std::size_t id, std::uint64_t step, std::uint64_t tokens);

  double relative_frequency(std::size_t id) const;
  // f above: the estimated chance that a token of its layer routes to expert `id`.
  double frequency(std::size_t id) const;
  // Higher: more worth keeping.
  double key(std::size_t id) const;
  std::uint64_t last_step(std::size_t id) const { return last_step_[id]; }
  CachePolicy policy() const { return policy_; }

 private:
  CachePolicy policy_ = CachePolicy::kAffinity;
  std::size_t num_experts_ = 1;
  double experts_per_token_ = 1;
  double prior_weight_ = 0;
  double horizon_ = 1;
  std::vector<double> prior_;
  std::vector<std::uint64_t> group_tokens_;
  std::vector<std::uint64_t> tokens_;
  std::vector<std::uint64_t> last_step_;
};

}  // namespace zipmoe::cache

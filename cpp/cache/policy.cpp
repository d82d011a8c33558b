#include "cache/policy.h"

#include <algorithm>

namespace zipmoe::cache {

PolicyRanker::PolicyRanker(CachePolicy policy, std::size_t num_groups, std::size_t num_experts,
                           std::size_t experts_per_token, std::vector<double> prior, double prior_weight)
    : policy_(policy),
      num_experts_(std::max<std::size_t>(num_experts, 1)),
      experts_per_token_(double(std::max<std::size_t>(experts_per_token, 1))),
      prior_weight_(prior_weight),
      prior_(std::move(prior)) {
  const std::size_t n = num_groups * num_experts_;
  if (prior_.size() != n) prior_.assign(n, experts_per_token_ / double(num_experts_));
  horizon_ = double(num_experts_) / experts_per_token_;
  group_tokens_.assign(num_groups, 0);
  tokens_.assign(n, 0);
  last_step_.assign(n, 0);
}

void PolicyRanker::record_use(std::size_t id, std::uint64_t step, std::uint64_t tokens) {
  tokens_[id] += tokens;
  last_step_[id] = std::max(last_step_[id], step);
}

double PolicyRanker::frequency(std::size_t id) const {
  const double seen = double(group_tokens_[id / num_experts_]);
  const double denominator = prior_weight_ + seen;
  return denominator > 0 ? (prior_weight_ * prior_[id] + double(tokens_[id])) / denominator : prior_[id];
}

double PolicyRanker::relative_frequency(std::size_t id) const {
  return frequency(id) * double(num_experts_) / experts_per_token_;
}

double PolicyRanker::key(std::size_t id) const {
  const double r = relative_frequency(id);
  const double last = double(last_step_[id]);
  switch (policy_) {
    case CachePolicy::kLru: return last + 1e-6 * std::min(r, 1e5);
    case CachePolicy::kLfu: return r + 1e-12 * last;
    case CachePolicy::kAffinity: return last + horizon_ * r;
  }
  return last;
}

}  // namespace zipmoe::cache

// Token sampling (include/zipmoe/sampler.h).
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "zipmoe/sampler.h"

namespace zipmoe {

namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t rotate_left(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

std::string float_text(float value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[32];
  std::snprintf(text, sizeof text, "%g", static_cast<double>(value));
  return text;
}

}  // namespace

void RandomGenerator::reseed(std::uint64_t seed) {
  std::uint64_t mix = seed;
  for (std::uint64_t& word : state_) word = splitmix64(mix);
}

std::uint64_t RandomGenerator::next() {
  const std::uint64_t result = rotate_left(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotate_left(state_[3], 45);
  return result;
}

double RandomGenerator::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

void validate_sampler_options(const SamplerOptions& o) {
  // Written as negated comparisons so that NaN fails every check.
  if (!(o.temperature >= 0.0f) || std::isinf(o.temperature)) {
    throw InvalidArgumentError("temperature must be a finite number >= 0 (0: greedy), not " +
                               float_text(o.temperature));
  }
  if (o.top_k < 0) throw InvalidArgumentError("top_k must be >= 0 (0: no limit), not " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    throw InvalidArgumentError("top_p must be in (0, 1] (1: off), not " + float_text(o.top_p));
  }
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) {
    throw InvalidArgumentError("min_p must be in [0, 1] (0: off), not " + float_text(o.min_p));
  }
  if (!(o.repetition_penalty > 0.0f) || std::isinf(o.repetition_penalty)) {
    throw InvalidArgumentError("repetition_penalty must be a finite number > 0 (1: off), not " +
                               float_text(o.repetition_penalty));
  }
  if (!std::isfinite(o.presence_penalty)) {
    throw InvalidArgumentError("presence_penalty must be finite (0: off), not " + float_text(o.presence_penalty));
  }
  if (!std::isfinite(o.frequency_penalty)) {
    throw InvalidArgumentError("frequency_penalty must be finite (0: off), not " + float_text(o.frequency_penalty));
  }
}

namespace runtime {

std::size_t first_invalid_logit(const float* logits, std::size_t vocab) {
  for (std::size_t i = 0; i < vocab; ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity()) return i;
  }
  return vocab;
}

void apply_penalties(float* logits, std::size_t vocab, const std::int32_t* window, std::size_t count,
                     float repetition_penalty, float presence_penalty, float frequency_penalty,
                     std::vector<std::uint32_t>& counts) {
  if (repetition_penalty == 1.0f && presence_penalty == 0.0f && frequency_penalty == 0.0f) return;
  if (counts.size() < vocab) counts.resize(vocab, 0);
  for (std::size_t i = 0; i < count; ++i) ++counts[static_cast<std::size_t>(window[i])];
  constexpr float kLargest = std::numeric_limits<float>::max();
  for (std::size_t i = 0; i < count; ++i) {
    const std::int32_t id = window[i];
    const std::uint32_t occurrences = counts[static_cast<std::size_t>(id)];
    if (occurrences == 0) continue;  // already penalized
    counts[static_cast<std::size_t>(id)] = 0;
    float v = logits[id];
    v = v > 0.0f ? v / repetition_penalty : v * repetition_penalty;
    v -= presence_penalty;
    if (frequency_penalty != 0.0f) v -= frequency_penalty * static_cast<float>(occurrences);
    // A tiny penalty can push a large logit past the float range; +inf would
    // make the softmax undefined, so the token just becomes the likeliest.
    logits[id] = std::min(v, kLargest);
  }
}

std::int32_t argmax_token(const float* logits, std::size_t vocab) {
  std::int32_t best = -1;
  float best_value = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < vocab; ++i) {
    if (logits[i] > best_value) {
      best_value = logits[i];
      best = static_cast<std::int32_t>(i);
    }
  }
  return best;
}

}  // namespace runtime

Sampler::Sampler(const SamplerOptions& options) : options_(options), random_(options.seed) {
  validate_sampler_options(options_);
}

void Sampler::reseed(std::uint64_t seed) {
  options_.seed = seed;
  random_.reseed(seed);
}

void Sampler::set_history(const std::int32_t* tokens, std::size_t count) {
  if (count && !tokens) throw InvalidArgumentError("history is null");
  history_.assign(tokens, tokens + count);
}

void Sampler::accept(std::int32_t token) { history_.push_back(token); }

std::int32_t Sampler::sample(const float* logits, std::size_t vocab) {
  return sample(logits, vocab, history_.data(), history_.size());
}

namespace {

constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

// The candidates of one draw: the tokens with a finite adjusted logit, their
// weights after the temperature, and as much of their ranking as the filters
// need. order[0, sorted) holds the best tokens in rank order (a strict total
// order, so that prefix is the same with any standard library); the rest is in
// no defined order and nothing depends on it.
class Candidates {
 public:
  Candidates(const float* adjusted, std::size_t vocab, std::int32_t best, float temperature,
             std::vector<std::int32_t>* order, std::vector<double>* weights)
      : adjusted_(adjusted),
        vocab_(vocab),
        best_(best),
        inverse_temperature_(1.0 / static_cast<double>(temperature)),
        top_(static_cast<double>(adjusted[best])),
        order_(*order),
        weights_(*weights),
        rank_{adjusted} {
    order_.clear();
    for (std::size_t i = 0; i < vocab; ++i) {
      if (adjusted[i] != kMinusInfinity) order_.push_back(static_cast<std::int32_t>(i));
    }
  }

  std::size_t finite() const { return order_.size(); }

  // The top_k best (all when top_k is 0 or larger than the candidates).
  std::size_t top_k(int top_k) {
    if (top_k <= 0 || static_cast<std::size_t>(top_k) >= finite()) return finite();
    sort_prefix(static_cast<std::size_t>(top_k));
    return static_cast<std::size_t>(top_k);
  }

  // min_p keeps a rank prefix too (its threshold is relative to the best
  // token, which renormalization does not change): count it, in any order.
  // Compared in the log domain (scaled logit >= log(min_p)) so that no
  // exponential is needed for the count.
  std::size_t min_p(float min_p, std::size_t top_k_kept) const {
    const double threshold = std::log(static_cast<double>(min_p));
    std::size_t above = 0;
    if (top_k_kept == finite()) {
      for (std::int32_t id : order_) above += scaled(id) >= threshold ? 1 : 0;
    } else {
      for (std::size_t i = 0; i < top_k_kept; ++i) above += scaled(order_[i]) >= threshold ? 1 : 0;
    }
    return std::max<std::size_t>(above, 1);
  }

  // top_p is relative to the mass of what top_k kept (before min_p, which
  // transformers applies after it); the nucleus is found ranking only as far as needed.
  std::size_t top_p(float top_p, std::size_t top_k_kept, std::size_t keep) {
    double kept_mass = 0.0;
    if (top_k_kept == finite()) {
      kept_mass = total_weight();
    } else {
      for (std::size_t i = 0; i < top_k_kept; ++i) kept_mass += weight(order_[i]);
    }
    const double target = static_cast<double>(top_p) * kept_mass;
    double mass = 0.0;
    std::size_t nucleus = 0;
    std::size_t want = std::min<std::size_t>(keep, 64);
    while (nucleus < keep) {
      sort_prefix(want);
      while (nucleus < want && mass < target) mass += weight(order_[nucleus++]);
      if (mass >= target || want == keep) break;
      want = std::min(keep, want * 8);
    }
    return std::max<std::size_t>(nucleus, 1);
  }

  // The token `uniform` (in [0, 1)) picks among the `keep` best.
  std::int32_t draw(double uniform, std::size_t keep) {
    if (keep == finite()) {
      // Nothing filtered: walk the ids in id order, without ranking them.
      const double target = uniform * total_weight();
      double mass = 0.0;
      std::int32_t last = best_;
      for (std::size_t i = 0; i < vocab_; ++i) {
        if (adjusted_[i] == kMinusInfinity) continue;
        mass += weights_[i];
        last = static_cast<std::int32_t>(i);
        if (mass > target) return last;
      }
      return last;  // rounding left the target at the very end
    }
    sort_prefix(keep);
    double kept = 0.0;
    for (std::size_t i = 0; i < keep; ++i) kept += weight(order_[i]);
    const double target = uniform * kept;
    double mass = 0.0;
    for (std::size_t i = 0; i < keep; ++i) {
      mass += weight(order_[i]);
      if (mass > target) return order_[i];
    }
    return order_[keep - 1];  // rounding left the target at the very end
  }

 private:
  // Unnormalized probability after the temperature (1 for the best token),
  // computed only for the tokens a step needs unless a step needs them all.
  // Subtracting before scaling leaves no multiply-add that a compiler could
  // fuse into an FMA on some targets only (aarch64 contracts by default),
  // which would change the weights from one platform to another.
  double scaled(std::int32_t id) const { return (static_cast<double>(adjusted_[id]) - top_) * inverse_temperature_; }
  double weight(std::int32_t id) const {
    return all_weights_ ? weights_[static_cast<std::size_t>(id)] : std::exp(scaled(id));
  }

  // Sum of the weights of every candidate, in id order; keeps them for the steps after.
  double total_weight() {
    weights_.resize(vocab_);
    double total = 0.0;
    for (std::size_t i = 0; i < vocab_; ++i) {
      if (adjusted_[i] == kMinusInfinity) continue;
      weights_[i] = std::exp(scaled(static_cast<std::int32_t>(i)));
      total += weights_[i];
    }
    all_weights_ = true;
    return total;
  }

  void sort_prefix(std::size_t count) {
    count = std::min(count, finite());
    if (count <= sorted_) return;
    const auto first = order_.begin() + static_cast<std::ptrdiff_t>(sorted_);
    const auto middle = order_.begin() + static_cast<std::ptrdiff_t>(count);
    if (count - sorted_ <= 1024) {
      std::partial_sort(first, middle, order_.end(), rank_);  // a heap: fastest for a few
    } else {
      if (middle != order_.end()) std::nth_element(first, middle, order_.end(), rank_);
      std::sort(first, middle, rank_);
    }
    sorted_ = count;
  }

  const float* adjusted_;
  std::size_t vocab_;
  std::int32_t best_;
  double inverse_temperature_;
  double top_;
  std::vector<std::int32_t>& order_;
  std::vector<double>& weights_;
  runtime::RankByLogit rank_;
  std::size_t sorted_ = 0;
  bool all_weights_ = false;
};

// Throws InvalidArgumentError for a row or history sample() cannot use.
void check_sample_inputs(const float* logits, std::size_t vocab, const std::int32_t* window,
                         std::size_t window_count) {
  if (vocab == 0) throw InvalidArgumentError("cannot sample from an empty logits row");
  if (vocab > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw InvalidArgumentError("vocabulary too large to sample from: " + std::to_string(vocab));
  }
  if (!logits || (window_count && !window)) throw InvalidArgumentError("logits or history is null");
  const std::size_t invalid = runtime::first_invalid_logit(logits, vocab);
  if (invalid != vocab) {
    throw InvalidArgumentError("logits[" + std::to_string(invalid) + "] is " + float_text(logits[invalid]) +
                               "; cannot sample (NaN or +inf logits usually mean the model's weights or "
                               "activations overflowed)");
  }
  for (std::size_t i = 0; i < window_count; ++i) {
    if (window[i] < 0 || static_cast<std::size_t>(window[i]) >= vocab) {
      throw InvalidArgumentError("history token " + std::to_string(window[i]) + " is outside [0, " +
                                 std::to_string(vocab) + ")");
    }
  }
}

}  // namespace

std::int32_t Sampler::sample(const float* logits, std::size_t vocab, const std::int32_t* history,
                             std::size_t history_count) {
  // The penalty window: the end of the history.
  const std::size_t window_count =
      options_.penalty_last_n ? std::min(options_.penalty_last_n, history_count) : history_count;
  const std::int32_t* window = history ? history + (history_count - window_count) : nullptr;
  check_sample_inputs(logits, vocab, window, window_count);

  adjusted_.assign(logits, logits + vocab);
  float* adjusted = adjusted_.data();
  runtime::apply_penalties(adjusted, vocab, window, window_count, options_.repetition_penalty,
                           options_.presence_penalty, options_.frequency_penalty, counts_);
  const std::int32_t best = runtime::argmax_token(adjusted, vocab);
  if (best < 0) throw InvalidArgumentError("every logit is -inf; there is no token to sample");
  if (options_.temperature == 0.0f || options_.top_k == 1) return best;

  Candidates candidates(adjusted, vocab, best, options_.temperature, &order_, &weights_);
  const std::size_t top_k_kept = candidates.top_k(options_.top_k);
  std::size_t keep = top_k_kept;
  if (options_.min_p > 0.0f) keep = candidates.min_p(options_.min_p, top_k_kept);
  if (options_.top_p < 1.0f) keep = candidates.top_p(options_.top_p, top_k_kept, keep);
  // One draw per sampled token, whatever was filtered, so that the stream
  // position depends only on how many tokens were sampled.
  return candidates.draw(random_.uniform(), keep);
}

TokenLogprobs token_logprobs(const float* logits, std::size_t vocab, std::int32_t token, std::size_t top_n) {
  check_sample_inputs(logits, vocab, nullptr, 0);
  if (token < 0 || static_cast<std::size_t>(token) >= vocab) {
    throw InvalidArgumentError("token " + std::to_string(token) + " is outside [0, " + std::to_string(vocab) + ")");
  }
  const std::int32_t best = runtime::argmax_token(logits, vocab);
  if (best < 0) throw InvalidArgumentError("every logit is -inf; there are no probabilities");
  // log p = (l - max) - log(sum exp(l - max)), summed in id order so that the value is reproducible;
  // subtracting the max first keeps huge logits from swallowing the log of the sum.
  const double top = static_cast<double>(logits[best]);
  double sum = 0.0;
  for (std::size_t i = 0; i < vocab; ++i) {
    if (logits[i] != kMinusInfinity) sum += std::exp(static_cast<double>(logits[i]) - top);
  }
  const double log_sum = std::log(sum);
  const auto logprob = [&](std::int32_t id) {
    return logits[id] == kMinusInfinity ? -std::numeric_limits<double>::infinity()
                                        : (static_cast<double>(logits[id]) - top) - log_sum;
  };
  TokenLogprobs out{{token, logprob(token)}, {}};
  const std::size_t count = std::min(top_n, vocab);
  if (count == 0) return out;
  std::vector<std::int32_t> ids(vocab);
  for (std::size_t i = 0; i < vocab; ++i) ids[i] = static_cast<std::int32_t>(i);
  const auto middle = ids.begin() + static_cast<std::ptrdiff_t>(count);
  std::partial_sort(ids.begin(), middle, ids.end(), runtime::RankByLogit{logits});
  out.top.reserve(count);
  for (auto it = ids.begin(); it != middle; ++it) out.top.push_back({*it, logprob(*it)});
  return out;
}

}  // namespace zipmoe

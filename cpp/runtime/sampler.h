// Building blocks of zipmoe::Sampler (include/zipmoe/sampler.h), exposed for
// the unit tests. Each works on a logits row the caller owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace zipmoe::runtime {

// Index of the first NaN or +inf in logits[0, vocab), or vocab when there is none.
std::size_t first_invalid_logit(const float* logits, std::size_t vocab);

// Applies the repetition, presence and frequency penalties to logits, once for
// each distinct id in window[0, count) (ids must be in [0, vocab)); the
// frequency penalty is scaled by the id's occurrences in the window. `counts`
// is scratch of at least vocab entries (grown when shorter), all zero on entry
// and on return.
void apply_penalties(float* logits, std::size_t vocab, const std::int32_t* window, std::size_t count,
                     float repetition_penalty, float presence_penalty, float frequency_penalty,
                     std::vector<std::uint32_t>& counts);

// The highest finite logit's id (the lowest id among equal ones), or -1 when
// every logit is -inf.
std::int32_t argmax_token(const float* logits, std::size_t vocab);

// Orders ids by logit, highest first, lower id first among equal logits.
struct RankByLogit {
  const float* logits;
  bool operator()(std::int32_t a, std::int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

}  // namespace zipmoe::runtime

// zipmoe/sampler.h - choosing the next token from a row of logits.
//
//   zipmoe::SamplerOptions options;
//   options.temperature = 0.7f; options.top_p = 0.9f; options.seed = 42;
//   zipmoe::Sampler sampler(options);
//   sampler.set_history(prompt.data(), prompt.size());   // what the penalties look at
//   std::int32_t next = sampler.sample(logits.data(), vocab);
//   sampler.accept(next);
//
// The pipeline, in the order Hugging Face transformers applies its logits
// processors and warpers (GenerationMixin with do_sample):
//   1. repetition_penalty (the CTRL rule, as transformers and llama.cpp apply
//      it): for every distinct token in the penalty window, a logit l > 0
//      becomes l / penalty, otherwise l * penalty;
//   2. presence_penalty and frequency_penalty (as llama.cpp's penalty_present
//      and penalty_freq, and OpenAI's fields of those names): minus
//      presence_penalty once per distinct token in the window, minus
//      frequency_penalty times the number of times it occurs there;
//   3. greedy when temperature == 0 or top_k == 1: the highest logit, the
//      lowest id among equal ones; no random number is drawn;
//   4. temperature: logits / temperature;
//   5. top_k: the k highest (0: off);
//   6. top_p (nucleus): the smallest set of the most probable tokens whose
//      probability, renormalized over what top_k kept, reaches top_p (1: off);
//   7. min_p: drop tokens whose probability is below min_p times the most
//      probable token's (0: off);
//   8. one draw from the softmax of what is left.
// Tokens are ranked by logit, then by id (lower first) among equal logits, so
// every step is a deterministic function of the logits. Note the order differs
// from llama.cpp's default chain, which applies the temperature last (after
// top_k/top_p/min_p); both agree when temperature is 1.
//
// Reproducibility: the random numbers come from the sampler's own
// xoshiro256** generator (seeded through splitmix64), not from the C++
// library, so a seed gives the same stream on every platform and compiler;
// candidates are ranked by a total order, and sums run in a fixed order in
// double precision with no fusable multiply-add. Given the same logits, the
// same seed picks the same tokens everywhere, with one caveat: probabilities
// use the C library's exp(), which is not correctly rounded everywhere, so a
// draw landing within an ulp of a boundary (odds about 1e-15 per token) could
// differ between C libraries. The logits themselves may differ in the last
// bits between ISA paths with Precision::kFast, never with kExact (see
// zipmoe/model.h).
//
// Errors: invalid options throw InvalidArgumentError from the constructor;
// logits with a NaN or +inf, or with no finite value, and history ids outside
// [0, vocab), throw InvalidArgumentError from sample() (nothing is drawn).
//
// Thread-safety: a Sampler is not shared between threads (it holds the
// generator's state and scratch space); use one per sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "zipmoe/error.h"
#include "zipmoe/export.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// xoshiro256** (Blackman and Vigna, 2018), a 64-bit generator with 256 bits
// of state; the state is filled from the seed by splitmix64, so any seed,
// 0 included, is good.
class RandomGenerator {
 public:
  explicit RandomGenerator(std::uint64_t seed = 0) { reseed(seed); }
  void reseed(std::uint64_t seed);
  std::uint64_t next();
  // Uniform in [0, 1): the top 53 bits of next() scaled by 2^-53.
  double uniform();

 private:
  std::uint64_t state_[4];
};

struct SamplerOptions {
  float temperature = 1.0f;         // >= 0; 0 means greedy
  int top_k = 0;                    // >= 0; 0: no limit
  float top_p = 1.0f;               // in (0, 1]; 1: off
  float min_p = 0.0f;               // in [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float presence_penalty = 0.0f;    // any finite value; 0: off (negative favours seen tokens)
  // Tokens of the history the penalties look at: the last penalty_last_n
  // (0: the whole history, as transformers does; llama.cpp's default is 64).
  std::size_t penalty_last_n = 0;
  std::uint64_t seed = 0;
  float frequency_penalty = 0.0f;   // any finite value; 0: off (last, so that positional initializers stay valid)
};

// Throws InvalidArgumentError naming the first option out of range.
void validate_sampler_options(const SamplerOptions& options);

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options = SamplerOptions());

  // The id chosen from logits[0, vocab), with the penalties looking at the
  // history given to set_history()/accept(). Does not add it to the history.
  std::int32_t sample(const float* logits, std::size_t vocab);
  // The same with an explicit history (the sampler's own history is ignored).
  std::int32_t sample(const float* logits, std::size_t vocab, const std::int32_t* history,
                      std::size_t history_count);

  void set_history(const std::int32_t* tokens, std::size_t count);
  void accept(std::int32_t token);
  const std::vector<std::int32_t>& history() const { return history_; }

  // Restarts the random stream (the history is kept).
  void reseed(std::uint64_t seed);
  const SamplerOptions& options() const { return options_; }

 private:
  SamplerOptions options_;
  RandomGenerator random_;
  std::vector<std::int32_t> history_;
  // Scratch reused between calls so that sampling allocates only when the vocabulary grows.
  std::vector<float> adjusted_;
  std::vector<double> weights_;
  std::vector<std::int32_t> order_;
  std::vector<std::uint32_t> counts_;
};

// Log-probabilities under the model's own distribution: the softmax of the raw
// logits row, before any penalty, temperature or filter (what OpenAI's and
// vLLM's `logprobs` report). Computed in double precision in id order, so the
// values are the same on every platform for the same logits.
struct TokenLogprob {
  std::int32_t token;
  double logprob;  // natural log; -inf for a token whose logit is -inf
};
struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // the min(top_n, vocab) likeliest, by logit then id (as the sampler ranks them)
};
// `token` is the id that was picked from logits[0, vocab). Throws
// InvalidArgumentError for a NaN or +inf logit, a row with no finite logit, or
// a token outside [0, vocab).
TokenLogprobs token_logprobs(const float* logits, std::size_t vocab, std::int32_t token, std::size_t top_n);

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

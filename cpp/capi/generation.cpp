#include "capi/generation.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <unordered_set>

#include "capi/api_support.h"
#include "text/tokenizer.h"

namespace zipmoe::capi {

namespace {

using Clock = std::chrono::steady_clock;

// Tokens per forward step of Model::eval, which the engine loads with its default
// batch (ModelOptions::batch 0: 256, at most the context): the most a context's
// batch may be.
constexpr std::int32_t kEngineBatch = 256;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::uint64_t random_seed() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

// Where the first stop string occurs in text[sent:] (hit), or else how much of
// text may be sent: all of it but the longest tail that could begin a stop
// string when `hold`. Nothing before `sent` can begin one: it would have been
// held back. Byte offsets; text and stops are whole UTF-8 characters, so this
// equals python/zipmoe/model.py's _find_stop on code points.
std::size_t find_stop(const std::string& text, std::size_t sent, const std::vector<std::string>& stops, bool hold,
                      bool* hit) {
  std::size_t first = std::string::npos;
  for (const std::string& s : stops) first = std::min(first, text.find(s, sent));
  *hit = first != std::string::npos;
  if (*hit) return first;
  if (!hold) return text.size();
  std::size_t keep = 0;
  for (const std::string& s : stops) {
    // candidate prefixes of s, longest first, ending on a character boundary
    for (std::size_t k = std::min(s.size() - 1, text.size() - sent); k > keep; --k) {
      if ((static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) continue;
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  return text.size() - keep;
}

struct GenerationStats {
  zipmoe_generation_stats* out;
  Clock::time_point prompt_done;
  void update(std::size_t generated) {
    out->generated_tokens = static_cast<std::int32_t>(generated);
    out->generation_seconds = since(prompt_done);
    out->generation_tokens_per_second = static_cast<double>(generated) / std::max(out->generation_seconds, 1e-9);
  }
};

}  // namespace

void open_sequence(ContextState& context, const zipmoe_context_params& p) {
  ModelState& model = *context.model;
  const std::size_t model_context = model.model.info().max_context;
  if (p.max_context < 0 || static_cast<std::size_t>(p.max_context) > model_context) {
    throw InvalidArgumentError("params->max_context must be in [0, " + std::to_string(model_context) +
                               "] (0: the model's), not " + std::to_string(p.max_context) +
                               " (until contexts hold their own KV cache, the model's is the limit)");
  }
  if (p.max_sequences != 1) {
    throw InvalidArgumentError("params->max_sequences must be 1 for now, not " + std::to_string(p.max_sequences) +
                               " (zipmoe_generate_batch runs its prompts one after another until several "
                               "sequences per context land)");
  }
  if (p.batch < 0 || p.batch > kEngineBatch) {
    throw InvalidArgumentError("params->batch must be in [0, " + std::to_string(kEngineBatch) + "] (0: " +
                               std::to_string(kEngineBatch) + "), not " + std::to_string(p.batch));
  }
  bool expected = false;
  if (!model.sequence_taken.compare_exchange_strong(expected, true)) {
    throw BusyError("the model already has a context; free it first (one context per model until zipmoe runs "
                    "several sequences per model)");
  }
  context.holds_sequence = true;
  context.max_context = p.max_context ? static_cast<std::size_t>(p.max_context) : model_context;
  context.batch = static_cast<std::size_t>(p.batch ? p.batch : kEngineBatch);
  context.max_sequences = p.max_sequences;
  model.model.reset();
}

void close_sequence(ContextState& context) noexcept {
  if (!context.holds_sequence) return;
  try {
    context.model->model.reset();
  } catch (...) {
    // reset() only takes a lock; nothing to report from a destructor anyway
  }
  context.holds_sequence = false;
  context.model->sequence_taken.store(false);
}

std::size_t sequence_position(const ContextState& context) { return context.model->model.position(); }

void reset_sequence(ContextState& context) { context.model->model.reset(); }

GenerationRequest resolve_request(const ModelState& model, const zipmoe_sampling_params* params) {
  using Sampling = ModelState::Sampling;
  const zipmoe_sampling_params p = params ? *params : zipmoe_sampling_default_params();
  GenerationRequest request;
  SamplerOptions& o = request.sampler;
  o.temperature = p.temperature < 0 ? static_cast<float>(model.sampling_default(Sampling::kTemperature))
                                    : p.temperature;
  o.top_k = p.top_k < 0 ? static_cast<int>(model.sampling_default(Sampling::kTopK)) : p.top_k;
  o.top_p = p.top_p < 0 ? static_cast<float>(model.sampling_default(Sampling::kTopP)) : p.top_p;
  o.min_p = p.min_p < 0 ? static_cast<float>(model.sampling_default(Sampling::kMinP)) : p.min_p;
  o.repetition_penalty = p.repetition_penalty < 0
                             ? static_cast<float>(model.sampling_default(Sampling::kRepetitionPenalty))
                             : p.repetition_penalty;
  o.presence_penalty = p.presence_penalty;
  o.frequency_penalty = p.frequency_penalty;
  if (p.penalty_last_n < 0) {
    throw InvalidArgumentError("penalty_last_n must be >= 0 (0: all), not " + std::to_string(p.penalty_last_n));
  }
  o.penalty_last_n = static_cast<std::size_t>(p.penalty_last_n);
  o.seed = p.seed == ZIPMOE_SEED_RANDOM ? random_seed() : p.seed;
  validate_sampler_options(o);
  if (p.n_stop < 0) throw InvalidArgumentError("n_stop is negative");
  if (p.n_stop > 0 && p.stop == nullptr) throw InvalidArgumentError("stop is NULL but n_stop is " +
                                                                    std::to_string(p.n_stop));
  for (std::int32_t i = 0; i < p.n_stop; ++i) {
    if (p.stop[i] == nullptr) throw InvalidArgumentError("stop[" + std::to_string(i) + "] is NULL");
    if (*p.stop[i] == '\0') throw InvalidArgumentError("a stop string cannot be empty");
    check_utf8(p.stop[i], ("stop[" + std::to_string(i) + "]").c_str());
    request.stops.emplace_back(p.stop[i]);
  }
  request.max_new_tokens = p.max_new_tokens;  // negative until resolve_prompt
  request.skip_special = p.skip_special;
  return request;
}

void resolve_prompt(const ContextState& context, std::vector<std::int32_t> prompt, GenerationRequest* request) {
  const std::size_t vocab = context.model->model.info().vocab_size;
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || static_cast<std::size_t>(prompt[i]) >= vocab) {
      throw InvalidArgumentError("token id " + std::to_string(prompt[i]) + " is outside [0, " +
                                 std::to_string(vocab) + ")");
    }
  }
  if (prompt.empty()) {
    throw InvalidArgumentError("the prompt has no tokens (an empty text and a vocabulary without BOS)");
  }
  if (prompt.size() >= context.max_context) {
    throw InvalidArgumentError("the prompt has " + std::to_string(prompt.size()) + " tokens; the context holds " +
                               std::to_string(context.max_context) + " (zipmoe_context_params.max_context)");
  }
  if (request->max_new_tokens < 0) {
    request->max_new_tokens = context.model->default_max_new_tokens(prompt.size());
  }
  request->prompt = std::move(prompt);
}

zipmoe_status evaluate(ContextState& context, const std::int32_t* tokens, std::size_t count, float* last_logits,
                       LastLogits mode) {
  Model& model = context.model->model;
  const std::size_t vocab = model.info().vocab_size;
  if (count == 0) throw InvalidArgumentError("no tokens given");
  if (tokens == nullptr) throw InvalidArgumentError("tokens is NULL");
  for (std::size_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab) {
      throw InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                 " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
  const std::size_t position = sequence_position(context);
  if (count > context.max_context - position) {
    throw InvalidArgumentError("context overflow: " + std::to_string(position) + " tokens held + " +
                               std::to_string(count) + " new > max_context " + std::to_string(context.max_context) +
                               " (zipmoe_context_reset, or a context with a larger max_context)");
  }
  // The engine's own steps, so that the logits are those of one eval() call.
  const std::size_t step = std::min(context.batch, context.model->model.info().max_context);
  context.scratch_logits.resize(vocab);
  for (std::size_t first = 0; first < count; first += step) {
    if (context.cancel.load()) return ZIPMOE_ERR_CANCELLED;
    const std::size_t n = std::min(step, count - first);
    const bool last = first + n == count;
    if (last && last_logits && mode == LastLogits::kWholeStep && n > 1) {
      std::vector<float> rows(n * vocab);
      model.eval(tokens + first, n, rows.data(), /*last_only=*/false);
      std::copy(rows.end() - static_cast<std::ptrdiff_t>(vocab), rows.end(), last_logits);
    } else {
      model.eval(tokens + first, n, last && last_logits ? last_logits : context.scratch_logits.data(),
                 /*last_only=*/true);
    }
  }
  return ZIPMOE_OK;
}

zipmoe_status generate(ContextState& context, const GenerationRequest& request,
                       const std::function<bool(std::string_view)>& on_piece, zipmoe_generation_stats* stats_out) {
  ModelState& model = *context.model;
  std::memset(stats_out, 0, sizeof(*stats_out));
  stats_out->prompt_tokens = static_cast<std::int32_t>(request.prompt.size());
  stats_out->seed = request.sampler.seed;
  stats_out->finish_reason = ZIPMOE_FINISH_NONE;
  const std::shared_ptr<const text::Tokenizer>& tokenizer = model.tokenizer;
  model.require_tokenizer();
  reset_sequence(context);
  if (request.max_new_tokens == 0) {
    stats_out->finish_reason = ZIPMOE_FINISH_LENGTH;
    return ZIPMOE_OK;
  }
  auto stop_with = [&](zipmoe_finish_reason reason) {
    stats_out->finish_reason = reason;
    reset_sequence(context);
  };
  const std::size_t vocab = model.model.info().vocab_size;
  std::vector<float> logits(vocab);
  Sampler sampler(request.sampler);
  text::StreamDecoder decoder(tokenizer, request.skip_special, /*at_start=*/false);
  const std::unordered_set<std::int32_t> eos(model.eos_ids.begin(), model.eos_ids.end());
  const std::vector<std::string>& stops = request.stops;
  std::string text;
  std::size_t sent = 0;  // text[0, sent) went to on_piece
  std::vector<std::int32_t> generated;
  try {
    const Clock::time_point start = Clock::now();
    if (evaluate(context, request.prompt.data(), request.prompt.size(), logits.data()) == ZIPMOE_ERR_CANCELLED) {
      stop_with(ZIPMOE_FINISH_CANCELLED);
      return ZIPMOE_ERR_CANCELLED;
    }
    GenerationStats stats{stats_out, Clock::now()};
    stats_out->prompt_seconds = std::chrono::duration<double>(stats.prompt_done - start).count();
    stats_out->prompt_tokens_per_second =
        static_cast<double>(request.prompt.size()) / std::max(stats_out->prompt_seconds, 1e-9);
    sampler.set_history(request.prompt.data(), request.prompt.size());
    zipmoe_finish_reason finish = ZIPMOE_FINISH_NONE;
    auto send = [&](std::size_t end) {
      if (end <= sent) return true;
      const bool go_on = !on_piece || on_piece(std::string_view(text).substr(sent, end - sent));
      sent = end;
      return go_on;
    };
    while (finish == ZIPMOE_FINISH_NONE) {
      const std::int32_t token = sampler.sample(logits.data(), vocab);
      sampler.accept(token);
      generated.push_back(token);
      stats.update(generated.size());
      if (eos.count(token)) {
        finish = ZIPMOE_FINISH_EOS;
        break;
      }
      if (token >= tokenizer->vocab_size()) {
        throw InvalidArgumentError("the model sampled token id " + std::to_string(token) +
                                   ", outside its tokenizer's vocabulary of " +
                                   std::to_string(tokenizer->vocab_size()));
      }
      text += decoder.feed(token);
      bool hit = false;
      const std::size_t end = find_stop(text, sent, stops, !stops.empty(), &hit);
      if (hit) {
        text.resize(end);
        finish = ZIPMOE_FINISH_STOP;
      }
      if (!send(end)) {
        stop_with(ZIPMOE_FINISH_CALLBACK);
        return ZIPMOE_OK;
      }
      if (hit) break;
      if (generated.size() >= static_cast<std::size_t>(request.max_new_tokens)) {
        finish = ZIPMOE_FINISH_LENGTH;
      } else if (request.prompt.size() + generated.size() >= context.max_context) {
        finish = ZIPMOE_FINISH_CONTEXT;
      } else if (evaluate(context, &token, 1, logits.data()) == ZIPMOE_ERR_CANCELLED) {
        stop_with(ZIPMOE_FINISH_CANCELLED);
        return ZIPMOE_ERR_CANCELLED;
      }
    }
    if (finish != ZIPMOE_FINISH_STOP) {
      text += decoder.flush();
      bool hit = false;
      const std::size_t end = find_stop(text, sent, stops, false, &hit);
      if (hit) finish = ZIPMOE_FINISH_STOP;
      if (!send(end)) finish = ZIPMOE_FINISH_CALLBACK;
    }
    stats.update(generated.size());
    stats_out->finish_reason = finish;
    return ZIPMOE_OK;
  } catch (...) {
    stop_with(ZIPMOE_FINISH_ERROR);
    throw;
  }
}

}  // namespace zipmoe::capi

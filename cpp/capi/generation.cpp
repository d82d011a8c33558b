#include "capi/generation.h"

#include <algorithm>
#include <random>
#include <stdexcept>

#include "capi/api_support.h"
#include "zipmoe/generate.h"

namespace zipmoe::capi {

namespace {

// Tokens per forward step of the engine, which the C API loads with its default
// batch (ModelOptions::batch 0: 256, at most the context): the most a context's
// batch may be.
constexpr std::int32_t kEngineBatch = 256;

std::uint64_t random_seed() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

Context& engine(const ContextState& context) {
  if (!context.engine) throw std::logic_error("the context holds no engine state");
  return *context.engine;
}

zipmoe_finish_reason finish_reason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return ZIPMOE_FINISH_NONE;
    case FinishReason::kEos: return ZIPMOE_FINISH_EOS;
    case FinishReason::kStop: return ZIPMOE_FINISH_STOP;
    case FinishReason::kLength: return ZIPMOE_FINISH_LENGTH;
    case FinishReason::kContext: return ZIPMOE_FINISH_CONTEXT;
    case FinishReason::kCancelled: return ZIPMOE_FINISH_CANCELLED;
  }
  return ZIPMOE_FINISH_NONE;
}

// The C statistics of a generation (the caller sets the finish reasons that
// only the C API knows: the callback, an error).
void copy_stats(const GenerationStats& in, zipmoe_generation_stats* out) {
  out->prompt_tokens = static_cast<std::int32_t>(in.prompt_tokens);
  out->generated_tokens = static_cast<std::int32_t>(in.generated_tokens);
  out->prompt_seconds = in.prompt_seconds;
  out->generation_seconds = in.generation_seconds;
  out->prompt_tokens_per_second = in.prompt_tokens_per_second;
  out->generation_tokens_per_second = in.generation_tokens_per_second;
  out->finish_reason = finish_reason(in.finish_reason);
  out->seed = in.seed;
}

GenerateOptions generate_options(const GenerationRequest& request) {
  GenerateOptions options;
  options.sampling = request.sampler;
  options.max_new_tokens = static_cast<std::size_t>(request.max_new_tokens);
  options.stop = request.stops;
  options.skip_special_tokens = request.skip_special;
  return options;
}

}  // namespace

void open_sequence(ContextState& context, const zipmoe_context_params& p) {
  ModelState& model = *context.model;
  const std::size_t model_context = model.model.info().max_context;
  if (p.max_context < 0 || static_cast<std::size_t>(p.max_context) > model_context) {
    throw InvalidArgumentError("params->max_context must be in [0, " + std::to_string(model_context) +
                               "] (0: the model's), not " + std::to_string(p.max_context));
  }
  if (p.max_sequences < 1 || static_cast<std::size_t>(p.max_sequences) > kMaxSequences) {
    throw InvalidArgumentError("params->max_sequences must be in [1, " + std::to_string(kMaxSequences) +
                               "], not " + std::to_string(p.max_sequences));
  }
  if (p.batch < 0 || p.batch > kEngineBatch) {
    throw InvalidArgumentError("params->batch must be in [0, " + std::to_string(kEngineBatch) + "] (0: " +
                               std::to_string(kEngineBatch) + "), not " + std::to_string(p.batch));
  }
  ContextOptions options;
  options.max_context = p.max_context ? static_cast<std::size_t>(p.max_context) : model_context;
  options.max_sequences = static_cast<std::size_t>(p.max_sequences);
  context.engine = std::make_unique<Context>(model.model.new_context(options));
  context.max_context = options.max_context;
  context.batch = static_cast<std::size_t>(p.batch ? p.batch : kEngineBatch);
  context.max_sequences = p.max_sequences;
}

void close_sequence(ContextState& context) noexcept { context.engine.reset(); }

std::size_t sequence_position(const ContextState& context) { return engine(context).position(0); }

void reset_sequence(ContextState& context) { engine(context).reset(); }

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
  Context& sequences = engine(context);
  const std::size_t vocab = context.model->model.info().vocab_size;
  if (count == 0) throw InvalidArgumentError("no tokens given");
  if (tokens == nullptr) throw InvalidArgumentError("tokens is NULL");
  for (std::size_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab) {
      throw InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                 " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
  const std::size_t position = sequences.position(0);
  if (count > context.max_context - position) {
    throw InvalidArgumentError("context overflow: " + std::to_string(position) + " tokens held + " +
                               std::to_string(count) + " new > max_context " + std::to_string(context.max_context) +
                               " (zipmoe_context_reset, or a context with a larger max_context)");
  }
  // The engine's own steps, so that the logits are those of one eval() call.
  const std::size_t step = std::min(context.batch, context.model->model.info().max_context);
  std::vector<float> scratch;
  for (std::size_t first = 0; first < count; first += step) {
    if (context.cancel.load()) return ZIPMOE_ERR_CANCELLED;
    const std::size_t n = std::min(step, count - first);
    const bool last = first + n == count;
    if (last && last_logits && mode == LastLogits::kWholeStep && n > 1) {
      scratch.resize(n * vocab);
      sequences.eval(tokens + first, n, scratch.data(), /*last_only=*/false, 0);
      std::copy(scratch.end() - static_cast<std::ptrdiff_t>(vocab), scratch.end(), last_logits);
    } else {
      scratch.resize(vocab);
      sequences.eval(tokens + first, n, last && last_logits ? last_logits : scratch.data(), /*last_only=*/true, 0);
    }
  }
  return ZIPMOE_OK;
}

zipmoe_status generate(ContextState& context, const GenerationRequest& request,
                       const std::function<bool(std::string_view)>& on_piece, zipmoe_generation_stats* stats) {
  *stats = zipmoe_generation_stats{};
  stats->prompt_tokens = static_cast<std::int32_t>(request.prompt.size());
  stats->seed = request.sampler.seed;
  Context& sequences = engine(context);
  context.model->require_tokenizer();
  sequences.reset();  // a fresh sequence, as documented (the loop would reuse a held prefix)
  Generation generation(sequences, request.prompt, generate_options(request));
  const KeepGoing keep_going = [&context] { return !context.cancel.load(); };
  bool stopped_by_callback = false;
  try {
    std::string piece;
    while (generation.next(&piece, keep_going)) {
      if (on_piece && !on_piece(piece)) {
        stopped_by_callback = true;
        if (!generation.done()) generation.cancel();
        break;
      }
      // A cancel request from the callback (or meanwhile) stops before the next forward step.
      if (context.cancel.load() && !generation.done()) {
        generation.cancel();
        break;
      }
    }
  } catch (...) {
    copy_stats(generation.stats(), stats);
    stats->finish_reason = ZIPMOE_FINISH_ERROR;
    throw;
  }
  copy_stats(generation.stats(), stats);
  if (stopped_by_callback) {
    stats->finish_reason = ZIPMOE_FINISH_CALLBACK;
    return ZIPMOE_OK;
  }
  return stats->finish_reason == ZIPMOE_FINISH_CANCELLED ? ZIPMOE_ERR_CANCELLED : ZIPMOE_OK;
}

zipmoe_status generate_batch(ContextState& context, const std::vector<GenerationRequest>& requests,
                             const std::function<bool(std::size_t, std::string_view)>& on_piece,
                             zipmoe_generation_stats* stats) {
  Context& sequences = engine(context);
  context.model->require_tokenizer();
  sequences.reset();  // every prompt from a fresh sequence, as documented
  BatchOptions batch;
  batch.step_tokens = context.batch;
  BatchScheduler scheduler(sequences, batch);
  for (const GenerationRequest& request : requests) scheduler.add(request.prompt, generate_options(request));
  std::vector<bool> stopped_by_callback(requests.size(), false);
  auto finish = [&](bool error) {
    for (std::size_t i = 0; i < requests.size(); ++i) {
      copy_stats(scheduler.stats(i), &stats[i]);
      if (stopped_by_callback[i]) {
        stats[i].finish_reason = ZIPMOE_FINISH_CALLBACK;
      } else if (error && stats[i].finish_reason == ZIPMOE_FINISH_NONE) {
        stats[i].finish_reason = ZIPMOE_FINISH_ERROR;
      }
    }
  };
  try {
    std::vector<BatchScheduler::Piece> pieces;
    while (!context.cancel.load()) {
      pieces.clear();
      if (!scheduler.step(&pieces)) break;
      for (const BatchScheduler::Piece& piece : pieces) {
        if (stopped_by_callback[piece.id] || !on_piece || on_piece(piece.id, piece.text)) continue;
        stopped_by_callback[piece.id] = true;
        if (!scheduler.done(piece.id)) scheduler.cancel(piece.id);
      }
    }
  } catch (...) {
    finish(/*error=*/true);
    throw;
  }
  bool cancelled = false;  // zipmoe_context_cancel ended a generation that was still running
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (scheduler.done(i)) continue;
    scheduler.cancel(i);
    cancelled = true;
  }
  finish(/*error=*/false);
  return cancelled ? ZIPMOE_ERR_CANCELLED : ZIPMOE_OK;
}

}  // namespace zipmoe::capi

// Everything of the C API that runs the engine: a context's own
// zipmoe::Context (Model::new_context), evaluation on it, and generation
// through the C++ generation loop (zipmoe/generate.h: Generation for one
// prompt, BatchScheduler for several), so that zipmoe_generate gives the same
// text as model.generate() in Python, which runs the same loop.
//
// This pair of files is the C API's one seam to the engine's sequences; no
// other file of cpp/capi touches a zipmoe::Context.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "capi/handles.h"
#include "zipmoe.h"
#include "zipmoe/sampler.h"

namespace zipmoe::capi {

// Checks `params` and gives `context` a zipmoe::Context of its own over the
// model's weights (context.model must be set): InvalidArgumentError for a
// value out of range, BudgetError when the memory budget cannot hold it.
// Any number of contexts may share a model.
void open_sequence(ContextState& context, const zipmoe_context_params& params);
// Frees the context's engine state (from ~ContextState; a no-op when none is held).
void close_sequence(ContextState& context) noexcept;
// Tokens sequence 0 of the context holds (the one zipmoe_eval appends to).
std::size_t sequence_position(const ContextState& context);
// Forgets every sequence of the context (position 0).
void reset_sequence(ContextState& context);

// One generation's settings, every default resolved.
struct GenerationRequest {
  std::vector<std::int32_t> prompt;
  SamplerOptions sampler;  // seed included
  std::int64_t max_new_tokens = 0;
  std::vector<std::string> stops;
  bool skip_special = true;
};

// The settings of `params` (NULL: the defaults) for `model`: the model's
// defaults filled in, every value checked (InvalidArgumentError), a random
// seed drawn for ZIPMOE_SEED_RANDOM. The prompt and max_new_tokens are left
// to resolve_prompt().
GenerationRequest resolve_request(const ModelState& model, const zipmoe_sampling_params* params);
// Sets the prompt (checked against the context) and, when the caller gave
// none, max_new_tokens from the model's defaults.
void resolve_prompt(const ContextState& context, std::vector<std::int32_t> prompt, GenerationRequest* request);

// How evaluate() computes the last token's logits.
enum class LastLogits {
  // As Python's eval(..., last_only=True), which generation uses: the output
  // projection of the last token alone.
  kLastRow,
  // As Python's logits(...)[-1]: the output projection of every token of the
  // last forward step (with precision "fast" a multi-row product can round
  // differently from a single row), in scratch of step x n_vocab floats.
  kWholeStep,
};

// Appends tokens to sequence 0 of the context in forward steps of the
// context's batch, checking the cancel flag between steps; writes the last token's
// logits to last_logits (n_vocab floats) when not NULL. Returns
// ZIPMOE_ERR_CANCELLED or ZIPMOE_OK; throws for other errors.
zipmoe_status evaluate(ContextState& context, const std::int32_t* tokens, std::size_t count, float* last_logits,
                       LastLogits mode = LastLogits::kLastRow);

// Resets the context and runs one generation (zipmoe::Generation) on its
// sequence 0; on_piece gets each piece and returns false to stop. Fills *stats
// (also when it throws). Returns ZIPMOE_OK or ZIPMOE_ERR_CANCELLED; throws for
// other errors (the context is reset then, as after a cancellation).
zipmoe_status generate(ContextState& context, const GenerationRequest& request,
                       const std::function<bool(std::string_view)>& on_piece, zipmoe_generation_stats* stats);

// Resets the context and runs the requests together (zipmoe::BatchScheduler:
// up to max_sequences at once, sharing each forward step); on_piece(i, piece)
// gets the pieces of request i and returns false to stop that one only.
// Fills stats[i] for each request. Returns ZIPMOE_OK or ZIPMOE_ERR_CANCELLED
// (every request still running is cancelled); throws for other errors.
zipmoe_status generate_batch(ContextState& context, const std::vector<GenerationRequest>& requests,
                             const std::function<bool(std::size_t, std::string_view)>& on_piece,
                             zipmoe_generation_stats* stats);

}  // namespace zipmoe::capi

// Everything of the C API that runs the engine: a context's hold on a
// sequence, evaluation, and the generation loop (tokenized prompt, sampler,
// EOS set, stop strings held back until they can no longer match, UTF-8-safe
// pieces, max_new_tokens, full context) as python/zipmoe/model.py runs it, so
// that zipmoe_generate gives the same text as model.generate().
//
// This pair of files is the C API's one seam to the model/context split (the
// "many sequences" work): today a context holds its model's single sequence
// (Model::eval / reset / position), so a model has one context at a time, and
// the loop below mirrors Python's. With the split, open_sequence() makes a
// zipmoe::Context of the context's own (Model::new_context), the other
// sequence functions call it, and generate() calls the C++ generation loop of
// cpp/runtime; no other file of cpp/capi touches the engine's sequence.
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

// Checks `params` against what the engine can hold and gives `context` its
// sequence (context.model must be set): InvalidArgumentError for a value out
// of range, BusyError while another context holds the model's sequence.
void open_sequence(ContextState& context, const zipmoe_context_params& params);
// Gives the sequence back, empty (from ~ContextState; a no-op when none is held).
void close_sequence(ContextState& context) noexcept;
// Tokens the context's sequence holds.
std::size_t sequence_position(const ContextState& context);
// Forgets the sequence (position 0).
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

// Appends tokens to the context's sequence in forward steps of the context's
// batch, checking the cancel flag between steps; writes the last token's
// logits to last_logits (n_vocab floats) when not NULL. Returns
// ZIPMOE_ERR_CANCELLED or ZIPMOE_OK; throws for other errors.
zipmoe_status evaluate(ContextState& context, const std::int32_t* tokens, std::size_t count, float* last_logits,
                       LastLogits mode = LastLogits::kLastRow);

// Resets the context and runs one generation; on_piece gets each piece and
// returns false to stop. Fills *stats (also when it throws). Returns
// ZIPMOE_OK or ZIPMOE_ERR_CANCELLED; throws for other errors (the context is
// reset then, as after a cancellation).
zipmoe_status generate(ContextState& context, const GenerationRequest& request,
                       const std::function<bool(std::string_view)>& on_piece, zipmoe_generation_stats* stats);

}  // namespace zipmoe::capi

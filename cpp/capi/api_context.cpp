// zipmoe.h: contexts, evaluation and generation.
//
// The engine behind a context (its zipmoe::Context, evaluation, the
// generation loop) is reached only through capi/generation.h.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "capi/api_support.h"
#include "capi/chat.h"
#include "capi/generation.h"
#include "capi/handles.h"
#include "zipmoe.h"

using namespace zipmoe;
using namespace zipmoe::capi;

namespace {

std::shared_ptr<ContextState> new_context(const std::shared_ptr<ModelState>& model, const zipmoe_context_params& p) {
  auto context = std::make_shared<ContextState>();
  context->model = model;
  open_sequence(*context, p);
  context->stats.resize(1);
  return context;
}

using PieceFunction = std::function<bool(std::string_view)>;

PieceFunction piece_function(zipmoe_piece_callback on_piece, void* user) {
  if (!on_piece) return nullptr;
  return [on_piece, user](std::string_view piece) { return on_piece(piece.data(), piece.size(), user); };
}

// Runs one generation of `prompt` on a context held by the caller.
zipmoe_status run_generation(ContextState& context, std::vector<std::int32_t> prompt, GenerationRequest request,
                             const PieceFunction& on_piece, zipmoe_generation_stats* stats) {
  resolve_prompt(context, std::move(prompt), &request);
  return generate(context, request, on_piece, stats);
}

std::vector<std::int32_t> tokenize_prompt(const ModelState& model, std::string_view text, bool add_special,
                                          bool parse_special) {
  text::EncodeOptions options;
  options.add_special_tokens = add_special;
  options.parse_special = parse_special;
  std::vector<std::int32_t> ids;
  model.require_tokenizer().encode(text, options, &ids);
  return ids;
}

std::vector<std::int32_t> token_prompt(const std::int32_t* tokens, std::int32_t n_tokens) {
  if (n_tokens < 0) throw InvalidArgumentError("n_tokens is negative");
  if (tokens == nullptr && n_tokens > 0) throw InvalidArgumentError("tokens is NULL");
  return std::vector<std::int32_t>(tokens, tokens + n_tokens);
}

// body(context) for the getters, or -1 (and the last error) for an invalid handle.
template <class Body>
std::int32_t context_value(const zipmoe_context* handle, const char* function, Body&& body) noexcept {
  std::int32_t result = -1;
  const zipmoe_status status = guarded(function, [&]() -> zipmoe_status {
    result = body(*find_context(handle));
    return ZIPMOE_OK;
  });
  return status == ZIPMOE_OK ? result : -1;
}

zipmoe_status cancelled(zipmoe_status status) {
  if (status == ZIPMOE_ERR_CANCELLED) fail(status, "cancelled by zipmoe_context_cancel");
  return status;
}

}  // namespace

extern "C" {

zipmoe_context_params zipmoe_context_default_params(void) {
  zipmoe_context_params params;
  std::memset(&params, 0, sizeof(params));
  params.max_sequences = 1;
  return params;
}

zipmoe_status zipmoe_context_new(zipmoe_model* model, const zipmoe_context_params* params, zipmoe_context** out) {
  return guarded("zipmoe_context_new", [&]() -> zipmoe_status {
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    *out = nullptr;
    std::shared_ptr<ModelState> m = find_model(model);
    *out = add_context(new_context(m, params ? *params : zipmoe_context_default_params()));
    return ZIPMOE_OK;
  });
}

void zipmoe_context_free(zipmoe_context* ctx) {
  guarded("zipmoe_context_free", [&]() -> zipmoe_status {
    if (ctx == nullptr) return ZIPMOE_OK;
    if (!remove_context(ctx)) {
      throw InvalidArgumentError("not a live zipmoe_context (freed twice, or never created): nothing freed");
    }
    return ZIPMOE_OK;
  });
}

int32_t zipmoe_context_position(const zipmoe_context* ctx) {
  return context_value(ctx, "zipmoe_context_position",
                       [](ContextState& c) { return static_cast<std::int32_t>(sequence_position(c)); });
}

int32_t zipmoe_context_n_ctx(const zipmoe_context* ctx) {
  return context_value(ctx, "zipmoe_context_n_ctx",
                       [](ContextState& c) { return static_cast<std::int32_t>(c.max_context); });
}

zipmoe_status zipmoe_eval(zipmoe_context* ctx, const int32_t* tokens, int32_t n_tokens, float* last_logits) {
  return guarded("zipmoe_eval", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    if (n_tokens < 1) throw InvalidArgumentError("n_tokens must be >= 1, not " + std::to_string(n_tokens));
    return cancelled(evaluate(*context, tokens, static_cast<std::size_t>(n_tokens), last_logits,
                              LastLogits::kWholeStep));
  });
}

zipmoe_status zipmoe_context_reset(zipmoe_context* ctx) {
  return guarded("zipmoe_context_reset", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    reset_sequence(*context);
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_context_cancel(zipmoe_context* ctx) {
  return guarded("zipmoe_context_cancel", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    if (context->busy.load()) context->cancel.store(true);
    return ZIPMOE_OK;
  });
}

zipmoe_sampling_params zipmoe_sampling_default_params(void) {
  zipmoe_sampling_params params;
  std::memset(&params, 0, sizeof(params));
  params.max_new_tokens = -1;
  params.temperature = -1.0f;
  params.top_k = -1;
  params.top_p = -1.0f;
  params.min_p = -1.0f;
  params.repetition_penalty = -1.0f;
  params.presence_penalty = 0.0f;
  params.frequency_penalty = 0.0f;
  params.penalty_last_n = 0;
  params.seed = ZIPMOE_SEED_RANDOM;
  params.stop = nullptr;
  params.n_stop = 0;
  params.add_special = true;
  params.skip_special = true;
  return params;
}

zipmoe_status zipmoe_model_sampling_defaults(const zipmoe_model* model, zipmoe_sampling_params* out) {
  return guarded("zipmoe_model_sampling_defaults", [&]() -> zipmoe_status {
    using Sampling = ModelState::Sampling;
    std::shared_ptr<ModelState> m = find_model(model);
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    zipmoe_sampling_params p = zipmoe_sampling_default_params();
    p.temperature = static_cast<float>(m->sampling_default(Sampling::kTemperature));
    p.top_k = static_cast<std::int32_t>(m->sampling_default(Sampling::kTopK));
    p.top_p = static_cast<float>(m->sampling_default(Sampling::kTopP));
    p.min_p = static_cast<float>(m->sampling_default(Sampling::kMinP));
    p.repetition_penalty = static_cast<float>(m->sampling_default(Sampling::kRepetitionPenalty));
    const std::int64_t max_new = m->default_max_new_tokens(0);
    p.max_new_tokens = max_new > INT32_MAX ? INT32_MAX : static_cast<std::int32_t>(max_new);
    *out = p;
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_generate(zipmoe_context* ctx, const char* prompt, size_t prompt_len,
                              const zipmoe_sampling_params* params, zipmoe_piece_callback on_piece, void* user) {
  return guarded("zipmoe_generate", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    if (prompt == nullptr && prompt_len > 0) throw InvalidArgumentError("prompt is NULL");
    GenerationRequest request = resolve_request(*context->model, params);
    const bool add_special = params ? params->add_special : true;
    std::vector<std::int32_t> ids = tokenize_prompt(
        *context->model, prompt ? std::string_view(prompt, prompt_len) : std::string_view(), add_special, false);
    context->stats.assign(1, zipmoe_generation_stats{});
    return cancelled(run_generation(*context, std::move(ids), std::move(request), piece_function(on_piece, user),
                                    &context->stats[0]));
  });
}

zipmoe_status zipmoe_generate_tokens(zipmoe_context* ctx, const int32_t* tokens, int32_t n_tokens,
                                     const zipmoe_sampling_params* params, zipmoe_piece_callback on_piece,
                                     void* user) {
  return guarded("zipmoe_generate_tokens", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    GenerationRequest request = resolve_request(*context->model, params);
    context->stats.assign(1, zipmoe_generation_stats{});
    return cancelled(run_generation(*context, token_prompt(tokens, n_tokens), std::move(request),
                                    piece_function(on_piece, user), &context->stats[0]));
  });
}

zipmoe_status zipmoe_generate_chat(zipmoe_context* ctx, const zipmoe_chat_message* messages, size_t n_messages,
                                   const zipmoe_sampling_params* params, zipmoe_piece_callback on_piece, void* user) {
  return guarded("zipmoe_generate_chat", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    GenerationRequest request = resolve_request(*context->model, params);
    zipmoe_chat_params chat = zipmoe_chat_default_params();
    chat.add_generation_prompt = true;
    const std::string text = render_model_chat(*context->model, messages_from_array(messages, n_messages), &chat);
    // As transformers tokenizes a rendered chat: the template wrote the special tokens itself.
    std::vector<std::int32_t> ids = tokenize_prompt(*context->model, text, false, true);
    context->stats.assign(1, zipmoe_generation_stats{});
    return cancelled(run_generation(*context, std::move(ids), std::move(request), piece_function(on_piece, user),
                                    &context->stats[0]));
  });
}

zipmoe_status zipmoe_generation_stats_get(const zipmoe_context* ctx, int32_t sequence,
                                          zipmoe_generation_stats* out) {
  return guarded("zipmoe_generation_stats_get", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    if (context->busy.load()) throw BusyError("the context is running a call; read its statistics afterwards");
    if (sequence < 0 || static_cast<std::size_t>(sequence) >= context->stats.size()) {
      throw InvalidArgumentError("sequence " + std::to_string(sequence) + " is outside [0, " +
                                 std::to_string(context->stats.size()) + ")");
    }
    *out = context->stats[static_cast<std::size_t>(sequence)];
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_generate_batch(zipmoe_context* ctx, const zipmoe_prompt* prompts, int32_t n_prompts,
                                    const zipmoe_sampling_params* params, zipmoe_batch_piece_callback on_piece,
                                    void* user) {
  return guarded("zipmoe_generate_batch", [&]() -> zipmoe_status {
    std::shared_ptr<ContextState> context = find_context(ctx);
    ContextUse use(context.get());
    if (n_prompts < 1) throw InvalidArgumentError("n_prompts must be >= 1, not " + std::to_string(n_prompts));
    if (prompts == nullptr) throw InvalidArgumentError("prompts is NULL");
    // One seed for every sequence: each gives the text it gives alone with that seed.
    GenerationRequest request = resolve_request(*context->model, params);
    const bool add_special = params ? params->add_special : true;
    std::vector<std::vector<std::int32_t>> ids(static_cast<std::size_t>(n_prompts));
    for (std::int32_t i = 0; i < n_prompts; ++i) {
      const zipmoe_prompt& p = prompts[i];
      if (p.tokens) {
        ids[i] = token_prompt(p.tokens, p.n_tokens);
      } else {
        if (p.text == nullptr && p.text_len > 0) {
          throw InvalidArgumentError("prompts[" + std::to_string(i) + "].text is NULL");
        }
        ids[i] = tokenize_prompt(*context->model, p.text ? std::string_view(p.text, p.text_len) : std::string_view(),
                                 add_special, false);
      }
    }
    std::vector<GenerationRequest> requests(ids.size(), request);
    for (std::size_t i = 0; i < ids.size(); ++i) resolve_prompt(*context, std::move(ids[i]), &requests[i]);
    context->stats.assign(requests.size(), zipmoe_generation_stats{});
    std::function<bool(std::size_t, std::string_view)> piece;
    if (on_piece) {
      piece = [on_piece, user](std::size_t i, std::string_view s) {
        return on_piece(static_cast<std::int32_t>(i), s.data(), s.size(), user);
      };
    }
    return cancelled(generate_batch(*context, requests, piece, context->stats.data()));
  });
}

}  // extern "C"

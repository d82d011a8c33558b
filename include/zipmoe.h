/* zipmoe.h - the C API of zipmoe: run Mixture-of-Experts language models stored
 * in .zmoe containers from C, C++ or any language with a C foreign-function
 * interface.
 *
 *   zipmoe_model* model = NULL;
 *   zipmoe_model_params mp = zipmoe_model_default_params();
 *   if (zipmoe_model_load("model.zmoe", &mp, &model) != ZIPMOE_OK) {
 *     fprintf(stderr, "%s\n", zipmoe_last_error());
 *     return 1;
 *   }
 *   zipmoe_context* ctx = NULL;
 *   zipmoe_context_params cp = zipmoe_context_default_params();
 *   zipmoe_context_new(model, &cp, &ctx);
 *   zipmoe_sampling_params sp = zipmoe_sampling_default_params();
 *   sp.max_new_tokens = 64;
 *   zipmoe_generate(ctx, "ROMEO.", 6, &sp, print_piece, NULL);
 *   zipmoe_context_free(ctx);
 *   zipmoe_model_free(model);
 *
 * C99 and C++ (extern "C"). docs/EMBEDDING.md explains building against an
 * install prefix or the Python wheel, and has a table of every function.
 *
 * Conventions that hold for every function unless its comment says otherwise:
 * - Errors. A function that can fail returns a zipmoe_status, or a sentinel
 *   value its comment names (a negative count, INT32_MIN, NULL). The message
 *   of the failure is then zipmoe_last_error() on the calling thread. No
 *   function throws, aborts or exits on bad input: NULL pointers, negative or
 *   too small sizes, freed or foreign handles, missing, truncated or corrupt
 *   files all give a status and a message. Calls that succeed leave the last
 *   error as it was.
 * - Handles. zipmoe_model and zipmoe_context are opaque and created only by
 *   zipmoe_model_load / zipmoe_context_new. Every call checks that a handle is
 *   one the library handed out and did not free yet (a freed or foreign
 *   pointer is ZIPMOE_ERR_INVALID_ARGUMENT, freeing one twice is reported, not
 *   a crash). For that the library keeps a table of live handles; it has no
 *   other process-wide state besides the thread-local last error.
 * - Ownership. The caller owns every buffer it passes; the library never
 *   keeps a pointer to one after the call returns (the user pointer of a
 *   callback is passed back during the call only). Strings the library
 *   returns (const char*) are owned by the library and live as long as the
 *   object named in the comment.
 * - Text is UTF-8. Lengths are in bytes and strings need not be
 *   NUL-terminated where a length is passed.
 * - Capacity convention (tokenize, detokenize, chat templates, ...): the
 *   function returns how many elements it wrote; when `capacity` is too small
 *   it writes nothing and returns -(the number needed), so a call with
 *   capacity 0 (and a NULL buffer) asks for the size; INT32_MIN on error.
 *   Output text is not NUL-terminated.
 * - Thread-safety. A model may be used from any number of threads at once.
 *   A context is used by one thread at a time: a second call on a context
 *   that is running one returns ZIPMOE_ERR_BUSY at once (never a mix of two
 *   sequences), except zipmoe_context_cancel, which is meant for another
 *   thread. Functions that take no handle are thread-safe.
 *
 * Stability: ZIPMOE_API_VERSION counts incompatible changes of this header
 * (a renamed or removed function, a changed signature, struct layout or
 * enum value). Within one API version functions may be added. The shared
 * library's soname carries the API version (libzipmoe.so.1), so a program is
 * never loaded against an incompatible library. Until zipmoe 1.0 a minor
 * release may raise the API version; the C++ headers in <zipmoe/...> carry
 * no such promise.
 */
#ifndef ZIPMOE_H
#define ZIPMOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The version of this header's API (see "Stability" above). */
#define ZIPMOE_API_VERSION 1

#if defined(_WIN32)
#if defined(ZIPMOE_BUILDING_LIBRARY)
#define ZIPMOE_API __declspec(dllexport)
#else
#define ZIPMOE_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define ZIPMOE_API __attribute__((visibility("default")))
#else
#define ZIPMOE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status, errors, version                                                   */

typedef enum {
  ZIPMOE_OK = 0,
  ZIPMOE_ERR_INVALID_ARGUMENT,   /* an argument outside what the function accepts (NULL, size, range, freed handle) */
  ZIPMOE_ERR_FORMAT,             /* malformed data: a file that is not a valid .zmoe container, a bad template */
  ZIPMOE_ERR_CHECKSUM,           /* stored and computed checksums disagree: the file was damaged */
  ZIPMOE_ERR_IO,                 /* the operating system refused a read (missing file, permissions, ...) */
  ZIPMOE_ERR_UNSUPPORTED_MODEL,  /* an architecture, tokenizer or template feature zipmoe cannot run */
  ZIPMOE_ERR_BUDGET,             /* a memory budget too small for what was asked (or memory exhausted) */
  ZIPMOE_ERR_CANCELLED,          /* zipmoe_context_cancel stopped the call */
  ZIPMOE_ERR_INTERNAL,           /* a bug in zipmoe: please report it with the message */
  ZIPMOE_ERR_BUSY                /* the context is in use by another call */
} zipmoe_status;

/* The message of this thread's last failed call ("" before any); never NULL.
 * Valid until the next failing call on this thread. */
ZIPMOE_API const char* zipmoe_last_error(void);

/* The status of this thread's last failed call (ZIPMOE_OK before any): what a
 * function that reports failure by a sentinel (INT32_MIN, -1, NULL) failed
 * with. Set together with zipmoe_last_error. */
ZIPMOE_API zipmoe_status zipmoe_last_status(void);

/* The name of a status, e.g. "ZIPMOE_ERR_FORMAT"; "ZIPMOE_ERR_UNKNOWN" for a value
 * outside the enum. Never NULL; static storage. */
ZIPMOE_API const char* zipmoe_status_name(zipmoe_status status);

/* The library's version, e.g. "0.1.0"; static storage. */
ZIPMOE_API const char* zipmoe_version(void);

/* The ZIPMOE_API_VERSION the library was built with (compare with the macro to
 * detect a header/library mismatch at run time). */
ZIPMOE_API int32_t zipmoe_api_version(void);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */

/* A model: weights, expert cache, tokenizer, chat template and generation
 * defaults, shared by every context created on it. */
typedef struct zipmoe_model zipmoe_model;
/* A context: the sequence state (KV cache, token history, sampler) of one
 * generation at a time on a model. */
typedef struct zipmoe_context zipmoe_context;

typedef struct {
  int32_t threads;            /* threads of the model's pool, the caller's included: 1 to 1024; 0: one per core */
  uint64_t memory_budget;     /* bytes the engine may hold in all; 0: no limit (every expert decoded at load) */
  const char* io;             /* how the container is read: "pread" (NULL), "direct" (O_DIRECT) or "mmap" */
  const char* cache_policy;   /* expert cache policy under a budget: "affinity" (NULL), "lru" or "lfu" */
  const char* precision;      /* "fast" (NULL) or "exact" (the same bits on every ISA path; include/zipmoe/model.h) */
  const char* isa;            /* kernel path: NULL (ZIPMOE_ISA or the best), "scalar", "avx2", "avx512", "neon" */
  const char* kv_cache_dtype; /* element type of the KV cache: "f32" (NULL), "bf16" or "f16" */
  const char* tiers;          /* expert states the cache may use, e.g. "full,sm"; NULL: all */
  const char* routing_profile;/* path of a routing profile JSON (zipmoe profile); NULL: none */
  bool prefetch;              /* prefetch the next layer's experts from a gate-ahead guess (true) */
  int32_t io_threads;         /* threads reading the container for the cache, 1 to 64; 0: 2 */
} zipmoe_model_params;

/* The defaults of every field (as documented above). */
ZIPMOE_API zipmoe_model_params zipmoe_model_default_params(void);

/* Opens the .zmoe container at `path` (a NUL-terminated file name), checks its
 * config and tensors, builds its tokenizer and decodes the weights (every
 * expert without a budget; with one, the cache streams experts from the file
 * while the model runs). params NULL: the defaults. On success *out receives a
 * new model, freed by zipmoe_model_free; on failure *out is set to NULL.
 * Errors: ZIPMOE_ERR_IO (no such file, unreadable), ZIPMOE_ERR_FORMAT /
 * ZIPMOE_ERR_CHECKSUM (not a container, damaged), ZIPMOE_ERR_UNSUPPORTED_MODEL,
 * ZIPMOE_ERR_BUDGET (a budget below the minimum, which the message states),
 * ZIPMOE_ERR_INVALID_ARGUMENT (a bad parameter, NULL path or out).
 * Thread-safe; takes seconds for large models. */
ZIPMOE_API zipmoe_status zipmoe_model_load(const char* path, const zipmoe_model_params* params, zipmoe_model** out);

/* Frees a model. NULL is a no-op. Contexts still open on it keep it alive
 * (it is released with the last of them), but the handle itself is invalid
 * from this call on. A pointer that is not a live model is reported through
 * zipmoe_last_error and otherwise ignored. */
ZIPMOE_API void zipmoe_model_free(zipmoe_model* model);

/* Model facts. Each returns -1 (and sets the last error) for a NULL or invalid handle. */
ZIPMOE_API int32_t zipmoe_model_n_vocab(const zipmoe_model* model);        /* token ids are [0, n_vocab) */
ZIPMOE_API int32_t zipmoe_model_n_layers(const zipmoe_model* model);
ZIPMOE_API int32_t zipmoe_model_n_moe_layers(const zipmoe_model* model);
ZIPMOE_API int32_t zipmoe_model_n_experts(const zipmoe_model* model);      /* routed experts per MoE layer; 0: dense */
ZIPMOE_API int32_t zipmoe_model_n_experts_used(const zipmoe_model* model); /* experts per token */
ZIPMOE_API int32_t zipmoe_model_n_embd(const zipmoe_model* model);         /* hidden size */
ZIPMOE_API int32_t zipmoe_model_n_ctx_train(const zipmoe_model* model);    /* max_position_embeddings */
ZIPMOE_API int32_t zipmoe_model_n_threads(const zipmoe_model* model);
ZIPMOE_API int32_t zipmoe_model_token_bos(const zipmoe_model* model);      /* -1 when the vocabulary has none */
ZIPMOE_API int32_t zipmoe_model_token_eos(const zipmoe_model* model);      /* the tokenizer's EOS; -1: none */

/* Strings owned by the model, valid until it is freed; NULL (and the last
 * error set) for an invalid handle. */
ZIPMOE_API const char* zipmoe_model_architecture(const zipmoe_model* model); /* HF model_type, e.g. "qwen3_moe" */
ZIPMOE_API const char* zipmoe_model_path(const zipmoe_model* model);
ZIPMOE_API const char* zipmoe_model_isa(const zipmoe_model* model);          /* kernel path, e.g. "avx512" */
ZIPMOE_API const char* zipmoe_model_config_json(const zipmoe_model* model);  /* the HF-style config, JSON */
/* The model's chat template (Jinja source), or NULL when it has none (then
 * the last error is left alone for a valid handle). */
ZIPMOE_API const char* zipmoe_model_chat_template(const zipmoe_model* model);

/* Every token id that ends a generation (generation_config's eos_token_id(s),
 * the config's and the tokenizer's EOS), ascending. Capacity convention. */
ZIPMOE_API int32_t zipmoe_model_eos_tokens(const zipmoe_model* model, int32_t* tokens, int32_t capacity);

/* Bytes held by category (one ledger counts every allocation). */
typedef struct {
  uint64_t dense_weights;     /* attention, norms, embeddings, routers, shared experts */
  uint64_t experts;           /* routed experts, every cache tier and fetch buffer */
  uint64_t kv_cache;
  uint64_t scratch;           /* activations, matmul workspace, rope tables */
  uint64_t total;
  uint64_t peak;              /* the highest total since load */
} zipmoe_memory_use;

/* Fills *out. Thread-safe (a snapshot). */
ZIPMOE_API zipmoe_status zipmoe_model_memory(const zipmoe_model* model, zipmoe_memory_use* out);

/* ------------------------------------------------------------------------ */
/* Expert cache statistics                                                   */

/* Expert states, the index of the arrays below. */
typedef enum {
  ZIPMOE_TIER_FULL = 0,        /* decoded weights */
  ZIPMOE_TIER_COMPRESSED = 1,  /* both planes in RAM: decode only */
  ZIPMOE_TIER_SM = 2,          /* sign/mantissa plane in RAM */
  ZIPMOE_TIER_E = 3,           /* coded exponent plane in RAM */
  ZIPMOE_TIER_ABSENT = 4       /* nothing: read both planes */
} zipmoe_expert_tier;
#define ZIPMOE_N_TIERS 5

/* What the expert cache did for one MoE layer, or for all of them. */
typedef struct {
  int32_t layer;                          /* decoder layer index (totals: -1) */
  uint64_t requests;                      /* experts asked for by forward steps (one per expert per step) */
  uint64_t served_from[ZIPMOE_N_TIERS];   /* requests by the state the expert was in; [ABSENT] are misses */
  uint64_t prefetch_hits;                 /* requests that found a prefetch of the expert under way or done */
  uint64_t bytes_read;                    /* bytes read from the container (prefetches included) */
  uint64_t prefetch_bytes_read;           /* of which by prefetches */
  uint64_t chunks_read;
  double read_seconds;                    /* time the reader threads spent reading (checksums: during the decode) */
  uint64_t decoded_bytes;                 /* bytes of expert weights decoded */
  double decode_seconds;                  /* thread time spent decoding */
  double stall_seconds;                   /* time the forward pass waited for experts with nothing to do */
} zipmoe_cache_layer_stats;

typedef struct {
  bool streaming;                         /* false: no budget, experts resident (every request a FULL hit) */
  zipmoe_cache_layer_stats total;
  uint64_t experts_in[ZIPMOE_N_TIERS];    /* experts resting in each state now */
  uint64_t tier_bytes[ZIPMOE_N_TIERS];    /* bytes held by each state now */
  uint64_t tier_capacity[ZIPMOE_N_TIERS]; /* bytes the planner gave each state */
  uint64_t working_set_bytes;             /* decode and fetch buffers */
  uint64_t prefetches;                    /* experts a prefetch started on */
  uint64_t prefetches_used;
  uint64_t prefetches_cancelled;
  uint64_t admissions;                    /* experts moved to a fuller state after a fetch */
  uint64_t evictions;                     /* experts moved to an emptier state to make room */
  uint64_t steps;                         /* forward steps seen */
  double storage_bandwidth;               /* bytes/s the planner used */
  double decode_throughput;               /* decoded bytes/s per thread the planner used */
} zipmoe_cache_stats;

/* The cache's counters since load (or the last reset), totalled over the MoE
 * layers. Thread-safe (a consistent snapshot). */
ZIPMOE_API zipmoe_status zipmoe_model_cache_stats(const zipmoe_model* model, zipmoe_cache_stats* out);
/* One MoE layer's counters: index in [0, zipmoe_model_n_moe_layers()). */
ZIPMOE_API zipmoe_status zipmoe_model_cache_layer_stats(const zipmoe_model* model, int32_t moe_layer_index,
                                                        zipmoe_cache_layer_stats* out);
/* Zeroes the counters (the cache's contents stay). */
ZIPMOE_API zipmoe_status zipmoe_model_reset_cache_stats(zipmoe_model* model);

/* ------------------------------------------------------------------------ */
/* Tokens and text                                                           */

/* The token ids of text[0, text_len) (any bytes; text may be NULL when
 * text_len is 0). add_special: add the BOS/EOS the model's tokenizer asks for.
 * Special tokens written in the text ("<|im_start|>") are encoded as plain
 * text, so user input cannot inject them. Capacity convention; INT32_MIN on
 * error. Thread-safe. */
ZIPMOE_API int32_t zipmoe_tokenize(const zipmoe_model* model, const char* text, size_t text_len, bool add_special,
                                   int32_t* tokens, int32_t capacity);

/* zipmoe_tokenize, and with parse_special also matching special tokens written
 * in the text as those tokens (for text the application rendered itself, such
 * as a chat template; Python's tokenize(..., parse_special=True)). */
ZIPMOE_API int32_t zipmoe_tokenize_special(const zipmoe_model* model, const char* text, size_t text_len,
                                           bool add_special, bool parse_special, int32_t* tokens, int32_t capacity);

/* The UTF-8 text of tokens[0, n_tokens) (bytes that do not form whole
 * characters become U+FFFD), special tokens included. Capacity convention:
 * bytes written, not NUL-terminated; INT32_MIN on error (an id outside
 * [0, n_vocab)). Thread-safe. */
ZIPMOE_API int32_t zipmoe_detokenize(const zipmoe_model* model, const int32_t* tokens, int32_t n_tokens, char* text,
                                     int32_t capacity);

/* zipmoe_detokenize, leaving special (control) tokens out when skip_special. */
ZIPMOE_API int32_t zipmoe_detokenize_special(const zipmoe_model* model, const int32_t* tokens, int32_t n_tokens,
                                             bool skip_special, char* text, int32_t capacity);

/* ------------------------------------------------------------------------ */
/* Chat templates                                                            */

/* One message of a conversation: NUL-terminated UTF-8 role ("system", "user",
 * "assistant", "tool", ...) and content. */
typedef struct {
  const char* role;
  const char* content;
} zipmoe_chat_message;

typedef struct {
  bool add_generation_prompt; /* end with the header that opens the assistant's reply (true) */
  const char* tools_json;     /* NULL, or a JSON array of tool schemas: the template's `tools` */
  const char* documents_json; /* NULL, or a JSON array of documents: the template's `documents` */
  /* NULL, or a JSON object of extra template variables, e.g. {"enable_thinking": false};
   * they override the model's special tokens of the same name (bos_token, ...). */
  const char* variables_json;
} zipmoe_chat_params;

ZIPMOE_API zipmoe_chat_params zipmoe_chat_default_params(void);

/* Renders messages[0, n_messages) with a chat template, exactly as Hugging Face
 * transformers' apply_chat_template(messages, tokenize=False) does: the
 * template gets messages, tools, documents, add_generation_prompt, the model's
 * named special tokens (bos_token, eos_token, ...) and the extra variables.
 * template_source: NULL for the model's own template; otherwise a Jinja source
 * used instead (then model may be NULL, and special tokens come only from
 * variables_json). params NULL: the defaults. Capacity convention for the
 * UTF-8 text (bytes, not NUL-terminated); INT32_MIN on error:
 * ZIPMOE_ERR_UNSUPPORTED_MODEL (no template, or a Jinja feature zipmoe's
 * template engine does not implement: docs/EMBEDDING.md lists what it does),
 * ZIPMOE_ERR_FORMAT (the template does not parse, or a *_json that is not
 * valid JSON), ZIPMOE_ERR_INVALID_ARGUMENT (the template rejected the
 * conversation with raise_exception, failed on it, or a message is NULL or
 * not UTF-8). The text can depend on the date (strftime_now). Thread-safe. */
ZIPMOE_API int32_t zipmoe_chat_apply_template(const zipmoe_model* model, const char* template_source,
                                              const zipmoe_chat_message* messages, size_t n_messages,
                                              const zipmoe_chat_params* params, char* text, int32_t capacity);

/* The same with the conversation as a JSON array of message objects, which may
 * carry more than role and content (tool_calls, reasoning_content, ...), as
 * transformers takes them. */
ZIPMOE_API int32_t zipmoe_chat_apply_template_json(const zipmoe_model* model, const char* template_source,
                                                   const char* messages_json, const zipmoe_chat_params* params,
                                                   char* text, int32_t capacity);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */

typedef struct {
  int32_t max_context;   /* positions of the context's KV cache; 0: the model's (min(n_ctx_train, 4096)) */
  int32_t max_sequences; /* sequences generated at once by zipmoe_generate_batch, each with its own
                          * KV cache; 1 .. 1024 (1) */
  int32_t batch;         /* most prompt tokens per forward step; 0: 256 */
} zipmoe_context_params;

ZIPMOE_API zipmoe_context_params zipmoe_context_default_params(void);

/* A new context on `model` (params NULL: the defaults); *out receives it, freed
 * by zipmoe_context_free (NULL on failure). The context keeps the model alive.
 * Any number of contexts may share a model, each used from its own thread:
 * they share the weights, the expert cache and the thread pool, and their
 * forward steps take turns on the pool. A context holds max_sequences KV
 * caches of max_context positions; under a memory budget that memory comes
 * out of the expert cache's share and goes back to it when the context is
 * freed. Errors: ZIPMOE_ERR_BUDGET (the context does not fit the model's
 * memory budget; the message itemizes it), ZIPMOE_ERR_INVALID_ARGUMENT
 * (max_context above the model's, max_sequences outside [1, 1024], batch
 * above 256). */
ZIPMOE_API zipmoe_status zipmoe_context_new(zipmoe_model* model, const zipmoe_context_params* params,
                                            zipmoe_context** out);

/* Frees a context (NULL: no-op; a pointer that is not a live context is
 * reported through zipmoe_last_error). Must not race with a call on it. */
ZIPMOE_API void zipmoe_context_free(zipmoe_context* ctx);

/* Tokens the context's sequence holds (the one zipmoe_eval appends to and
 * zipmoe_generate runs on); -1 for an invalid handle. */
ZIPMOE_API int32_t zipmoe_context_position(const zipmoe_context* ctx);
/* The context's max_context; -1 for an invalid handle. */
ZIPMOE_API int32_t zipmoe_context_n_ctx(const zipmoe_context* ctx);

/* Appends tokens[0, n_tokens) to the context's sequence (its KV cache is kept)
 * and, when last_logits is not NULL, writes the n_vocab logits of the last
 * token: bit-identical to Python's model.logits(tokens)[-1] for the same
 * tokens from a fresh sequence, in either precision. (For that the last
 * forward step computes the logits of all its tokens, as logits() does: a
 * multi-row product rounds differently from a single row with precision
 * "fast". That takes scratch of up to `batch` x n_vocab floats for the call.)
 * Errors: ZIPMOE_ERR_INVALID_ARGUMENT (n_tokens < 1, an id outside
 * [0, n_vocab), more tokens than the context has room for: nothing is run),
 * ZIPMOE_ERR_CANCELLED, and the read errors of a streamed expert. After an
 * error the sequence holds the tokens of the forward steps that completed
 * (zipmoe_context_position says how many). */
ZIPMOE_API zipmoe_status zipmoe_eval(zipmoe_context* ctx, const int32_t* tokens, int32_t n_tokens,
                                     float* last_logits);

/* Forgets every sequence of the context (position 0). */
ZIPMOE_API zipmoe_status zipmoe_context_reset(zipmoe_context* ctx);

/* Stops the call running on ctx from any thread: it returns ZIPMOE_ERR_CANCELLED
 * at its next token or forward step (the context stays usable; a generation
 * resets it). No effect when no call is running. Thread-safe, but not
 * async-signal-safe: from a signal handler, set a flag that the piece callback
 * reads instead (examples/chat.cpp does). */
ZIPMOE_API zipmoe_status zipmoe_context_cancel(zipmoe_context* ctx);

/* ------------------------------------------------------------------------ */
/* Generation                                                                */

/* A seed asking for a random one (reported in zipmoe_generation_stats.seed). */
#define ZIPMOE_SEED_RANDOM UINT64_MAX

typedef struct {
  /* Negative values (the defaults) mean "the model's default": its
   * generation_config.json as transformers reads it (do_sample false or
   * absent: greedy; top_k 50 unless given), or without one llama.cpp's
   * defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05). */
  int32_t max_new_tokens;   /* most tokens to sample; -1: generation_config's, else 256 */
  float temperature;        /* >= 0; 0: greedy */
  int32_t top_k;            /* >= 0; 0: off */
  float top_p;              /* (0, 1]; 1: off */
  float min_p;              /* [0, 1]; 0: off */
  float repetition_penalty; /* > 0; 1: off */
  float presence_penalty;   /* any finite value; 0 (default): off */
  float frequency_penalty;  /* any finite value, times the token's occurrences; 0 (default): off */
  int32_t penalty_last_n;   /* tokens the penalties look back at; 0 (default): prompt and output */
  uint64_t seed;            /* ZIPMOE_SEED_RANDOM (default): a random seed */
  /* Stop strings: the text ends before the first one generated (it is not
   * included, and no piece shows part of one). NULL/0: none. */
  const char* const* stop;
  int32_t n_stop;
  bool add_special;         /* tokenize a text prompt with the BOS/EOS the vocabulary asks for (true) */
  bool skip_special;        /* leave special tokens out of the text (true) */
} zipmoe_sampling_params;

/* The defaults above: the model's values are resolved when generating. */
ZIPMOE_API zipmoe_sampling_params zipmoe_sampling_default_params(void);

/* *out = the defaults with every "model's default" resolved for `model` (what
 * generation would use; seed stays ZIPMOE_SEED_RANDOM). ZIPMOE_ERR_FORMAT when
 * the model's generation_config.json holds an invalid value. */
ZIPMOE_API zipmoe_status zipmoe_model_sampling_defaults(const zipmoe_model* model, zipmoe_sampling_params* out);

/* Called with each piece of generated text: whole UTF-8 characters, not
 * NUL-terminated, valid during the call only. Return true to go on, false to
 * stop (the generation then returns ZIPMOE_OK with finish reason
 * ZIPMOE_FINISH_CALLBACK). Runs on the thread that called zipmoe_generate. */
typedef bool (*zipmoe_piece_callback)(const char* piece, size_t len, void* user);

/* Resets the context, tokenizes prompt[0, prompt_len) as Python's generate does
 * (with the vocabulary's BOS/EOS unless params->add_special is false) and
 * generates: the same text as model.generate(prompt, ...) in Python with the
 * same arguments, delivered through on_piece (may be NULL: run to the end
 * without seeing it). Generation ends at an EOS token, a stop string,
 * max_new_tokens, a full context, on_piece returning false, or
 * zipmoe_context_cancel (ZIPMOE_ERR_CANCELLED; the context is then reset).
 * params NULL: the defaults. Errors: ZIPMOE_ERR_INVALID_ARGUMENT (bad params,
 * an empty prompt, a prompt longer than the context: nothing generated),
 * ZIPMOE_ERR_FORMAT (an invalid default from the model's generation_config).
 * zipmoe_generation_stats then says what happened. */
ZIPMOE_API zipmoe_status zipmoe_generate(zipmoe_context* ctx, const char* prompt, size_t prompt_len,
                                         const zipmoe_sampling_params* params, zipmoe_piece_callback on_piece,
                                         void* user);

/* The same from prompt token ids (Python's generate with a list of ids). */
ZIPMOE_API zipmoe_status zipmoe_generate_tokens(zipmoe_context* ctx, const int32_t* tokens, int32_t n_tokens,
                                                const zipmoe_sampling_params* params,
                                                zipmoe_piece_callback on_piece, void* user);

/* The same for a conversation: the model's chat template renders it with
 * add_generation_prompt, and the text is tokenized as transformers tokenizes a
 * rendered chat (special tokens written by the template are parsed, no BOS/EOS
 * is added: params->add_special does not apply): Python's
 * model.generate(messages, ...). ZIPMOE_ERR_UNSUPPORTED_MODEL when the model
 * has no chat template. */
ZIPMOE_API zipmoe_status zipmoe_generate_chat(zipmoe_context* ctx, const zipmoe_chat_message* messages,
                                              size_t n_messages, const zipmoe_sampling_params* params,
                                              zipmoe_piece_callback on_piece, void* user);

/* Why a generation ended. */
typedef enum {
  ZIPMOE_FINISH_NONE = 0,  /* no generation yet, or it failed before sampling */
  ZIPMOE_FINISH_EOS,       /* an end-of-sequence token (zipmoe_model_eos_tokens) */
  ZIPMOE_FINISH_STOP,      /* a stop string */
  ZIPMOE_FINISH_LENGTH,    /* max_new_tokens */
  ZIPMOE_FINISH_CONTEXT,   /* the context is full */
  ZIPMOE_FINISH_CALLBACK,  /* the piece callback returned false */
  ZIPMOE_FINISH_CANCELLED, /* zipmoe_context_cancel */
  ZIPMOE_FINISH_ERROR      /* an error (the call's status says which) */
} zipmoe_finish_reason;

typedef struct {
  int32_t prompt_tokens;
  int32_t generated_tokens;        /* sampled tokens, an ending EOS included */
  double prompt_seconds;           /* evaluating the prompt */
  double generation_seconds;       /* sampling and evaluating the rest */
  double prompt_tokens_per_second;
  double generation_tokens_per_second;
  zipmoe_finish_reason finish_reason;
  uint64_t seed;                   /* the seed used (the random one drawn for ZIPMOE_SEED_RANDOM) */
} zipmoe_generation_stats;

/* What the last generation of sequence `sequence` on ctx did (0 for
 * zipmoe_generate; the prompt's index for zipmoe_generate_batch). */
ZIPMOE_API zipmoe_status zipmoe_generation_stats_get(const zipmoe_context* ctx, int32_t sequence,
                                                     zipmoe_generation_stats* out);

/* ------------------------------------------------------------------------ */
/* Batched generation                                                        */

/* One prompt of a batch: text (tokenized as zipmoe_generate does) when tokens
 * is NULL, otherwise token ids. */
typedef struct {
  const char* text;
  size_t text_len;
  const int32_t* tokens;
  int32_t n_tokens;
} zipmoe_prompt;

/* Called with each piece of sequence `index` (the prompt's position). Return
 * false to stop that sequence only (the others go on). */
typedef bool (*zipmoe_batch_piece_callback)(int32_t index, const char* piece, size_t len, void* user);

/* Generates a continuation of every prompt, up to the context's max_sequences
 * at once (more are queued, each starting when a sequence frees), in shared
 * forward steps: a step evaluates the next token of every running sequence
 * and chunks of the prompts starting, and fetches each routed expert once for
 * all of them. Resets the context first. Every sampling parameter applies to
 * each sequence, and a seed S gives every sequence the text zipmoe_generate
 * gives for its prompt with seed S: with precision "exact" always (the same
 * bits of every logit); with "fast" a multi-token step may round differently,
 * which can change a token where two candidates are nearly tied. Returns when
 * all are done; zipmoe_generation_stats_get(ctx, index) tells each one's end.
 * zipmoe_context_cancel cancels every sequence still running
 * (ZIPMOE_ERR_CANCELLED). Errors: those of zipmoe_generate, for any prompt
 * (every prompt is checked before anything runs). */
ZIPMOE_API zipmoe_status zipmoe_generate_batch(zipmoe_context* ctx, const zipmoe_prompt* prompts, int32_t n_prompts,
                                               const zipmoe_sampling_params* params,
                                               zipmoe_batch_piece_callback on_piece, void* user);

#ifdef __cplusplus
}
#endif

#endif /* ZIPMOE_H */

/* Tests of the C API (include/zipmoe.h), compiled as C99.
 *
 *   zipmoe_c_tests MODEL.zmoe SCRATCH_DIR
 *
 * Every function with good arguments, and the misuse a C caller can commit:
 * NULL pointers, wrong sizes, freed and foreign handles, freeing twice,
 * missing and damaged files, reentrant calls. Each misuse must give a status
 * and a message, never a crash. And several contexts on one model, from
 * several threads, each giving the text it gives alone. Exit status 0 when
 * every check passes. */
#define _POSIX_C_SOURCE 200809L /* pthreads under -std=c99 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zipmoe.h"

static int failures = 0;
static int checks = 0;

#define CHECK(condition)                                                              \
  do {                                                                                \
    ++checks;                                                                         \
    if (!(condition)) {                                                               \
      ++failures;                                                                     \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
              #condition, zipmoe_last_error());                                       \
    }                                                                                 \
  } while (0)

/* The call failed with `status` and left a message that contains `needle`. */
#define CHECK_FAILS(call, status, needle)                                                          \
  do {                                                                                             \
    zipmoe_status got_ = (call);                                                                   \
    ++checks;                                                                                      \
    if (got_ != (status) || zipmoe_last_status() != got_ || strstr(zipmoe_last_error(), (needle)) == NULL) {                       \
      ++failures;                                                                                  \
      fprintf(stderr, "%s:%d: %s gave %s (%s), expected %s with \"%s\"\n", __FILE__, __LINE__, #call, \
              zipmoe_status_name(got_), zipmoe_last_error(), zipmoe_status_name(status), (needle));  \
    }                                                                                              \
  } while (0)

static const char* model_path;
static const char* scratch_dir;

static void write_file(const char* path, const void* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
  fwrite(data, 1, size, f);
  fclose(f);
}

/* The first `size` bytes of the model (size 0: all of it), with byte `flip` inverted (when < size). */
static void copy_model(const char* path, size_t size, size_t flip) {
  FILE* f = fopen(model_path, "rb");
  char* data;
  size_t n;
  if (!f) {
    fprintf(stderr, "cannot read %s\n", model_path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (char*)malloc(n);
  if (fread(data, 1, n, f) != n) exit(2);
  fclose(f);
  if (size == 0 || size > n) size = n;
  if (flip < size) data[flip] = (char)~data[flip];
  write_file(path, data, size);
  free(data);
}

static void test_basics(void) {
  CHECK(zipmoe_last_error() != NULL);
  CHECK(strlen(zipmoe_version()) > 0);
  CHECK(zipmoe_api_version() == ZIPMOE_API_VERSION);
  CHECK(strcmp(zipmoe_status_name(ZIPMOE_OK), "ZIPMOE_OK") == 0);
  CHECK(strcmp(zipmoe_status_name(ZIPMOE_ERR_CANCELLED), "ZIPMOE_ERR_CANCELLED") == 0);
  CHECK(strcmp(zipmoe_status_name((zipmoe_status)1234), "ZIPMOE_ERR_UNKNOWN") == 0);
  CHECK(ZIPMOE_OK == 0 && ZIPMOE_ERR_INVALID_ARGUMENT == 1 && ZIPMOE_ERR_INTERNAL == 8);
  {
    zipmoe_model_params mp = zipmoe_model_default_params();
    zipmoe_context_params cp = zipmoe_context_default_params();
    zipmoe_sampling_params sp = zipmoe_sampling_default_params();
    zipmoe_chat_params chat = zipmoe_chat_default_params();
    CHECK(mp.threads == 0 && mp.memory_budget == 0 && mp.io == NULL && mp.prefetch);
    CHECK(cp.max_context == 0 && cp.max_sequences == 1 && cp.batch == 0);
    CHECK(sp.max_new_tokens < 0 && sp.temperature < 0 && sp.seed == ZIPMOE_SEED_RANDOM && sp.skip_special);
    CHECK(chat.add_generation_prompt && chat.tools_json == NULL);
  }
}

static void test_load_errors(void) {
  zipmoe_model* model = (zipmoe_model*)&model; /* must be reset to NULL on failure */
  zipmoe_model_params params = zipmoe_model_default_params();
  char path[1024];

  CHECK_FAILS(zipmoe_model_load(NULL, NULL, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "path is NULL");
  CHECK(model == NULL);
  CHECK_FAILS(zipmoe_model_load(model_path, NULL, NULL), ZIPMOE_ERR_INVALID_ARGUMENT, "out is NULL");
  CHECK_FAILS(zipmoe_model_load("", NULL, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "empty");
  snprintf(path, sizeof(path), "%s/no-such-model.zmoe", scratch_dir);
  CHECK_FAILS(zipmoe_model_load(path, NULL, &model), ZIPMOE_ERR_IO, "no-such-model.zmoe");
  CHECK(model == NULL);

  snprintf(path, sizeof(path), "%s/garbage.zmoe", scratch_dir);
  write_file(path, "this is not a container", 23);
  CHECK_FAILS(zipmoe_model_load(path, NULL, &model), ZIPMOE_ERR_FORMAT, "garbage.zmoe");
  snprintf(path, sizeof(path), "%s/truncated.zmoe", scratch_dir);
  copy_model(path, 100000, (size_t)-1);
  CHECK_FAILS(zipmoe_model_load(path, NULL, &model), ZIPMOE_ERR_FORMAT, "truncated");
  snprintf(path, sizeof(path), "%s/damaged.zmoe", scratch_dir);
  copy_model(path, 0, 4096 + 100); /* a byte of the first chunk */
  CHECK_FAILS(zipmoe_model_load(path, NULL, &model), ZIPMOE_ERR_CHECKSUM, "damaged.zmoe");
  CHECK(model == NULL);

  params.threads = -1;
  CHECK_FAILS(zipmoe_model_load(model_path, &params, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "threads");
  params = zipmoe_model_default_params();
  params.io = "bogus";
  CHECK_FAILS(zipmoe_model_load(model_path, &params, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "bogus");
  params = zipmoe_model_default_params();
  params.precision = "approximate";
  CHECK_FAILS(zipmoe_model_load(model_path, &params, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "precision");
  params = zipmoe_model_default_params();
  params.tiers = "full,plenty";
  CHECK_FAILS(zipmoe_model_load(model_path, &params, &model), ZIPMOE_ERR_INVALID_ARGUMENT, "plenty");
  params = zipmoe_model_default_params();
  params.memory_budget = 1000;
  CHECK_FAILS(zipmoe_model_load(model_path, &params, &model), ZIPMOE_ERR_BUDGET, "minimum");
  CHECK(model == NULL);
}

static void test_model_facts(zipmoe_model* model) {
  int32_t eos[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
  int32_t n;
  zipmoe_memory_use memory;
  zipmoe_cache_stats stats;
  zipmoe_cache_layer_stats layer;

  CHECK(zipmoe_model_n_vocab(model) > 0);
  CHECK(zipmoe_model_n_layers(model) > 0);
  CHECK(zipmoe_model_n_experts(model) > 0);
  CHECK(zipmoe_model_n_experts_used(model) > 0);
  CHECK(zipmoe_model_n_moe_layers(model) > 0);
  CHECK(zipmoe_model_n_embd(model) > 0);
  CHECK(zipmoe_model_n_ctx_train(model) > 0);
  CHECK(zipmoe_model_n_threads(model) == 2);
  CHECK(strcmp(zipmoe_model_architecture(model), "qwen3_moe") == 0);
  CHECK(strcmp(zipmoe_model_path(model), model_path) == 0);
  CHECK(strlen(zipmoe_model_isa(model)) > 0);
  CHECK(strstr(zipmoe_model_config_json(model), "num_experts") != NULL);
  CHECK(zipmoe_model_chat_template(model) != NULL);
  CHECK(zipmoe_model_token_eos(model) >= 0);

  n = zipmoe_model_eos_tokens(model, NULL, 0);
  CHECK(n < 0);
  CHECK(zipmoe_model_eos_tokens(model, eos, -n - 1) == n); /* too small: nothing written */
  CHECK(eos[0] == -7);
  CHECK(zipmoe_model_eos_tokens(model, eos, 8) == -n);
  CHECK(eos[0] >= 0 && eos[-n] == -7);
  CHECK(zipmoe_model_eos_tokens(model, NULL, 3) == INT32_MIN);
  CHECK(zipmoe_model_eos_tokens(model, eos, -1) == INT32_MIN);

  CHECK(zipmoe_model_memory(model, &memory) == ZIPMOE_OK);
  CHECK(memory.total > 0 && memory.dense_weights > 0 && memory.peak >= memory.total);
  CHECK_FAILS(zipmoe_model_memory(model, NULL), ZIPMOE_ERR_INVALID_ARGUMENT, "out");
  CHECK(zipmoe_model_cache_stats(model, &stats) == ZIPMOE_OK);
  CHECK(!stats.streaming && stats.total.layer == -1);
  CHECK(zipmoe_model_cache_layer_stats(model, 0, &layer) == ZIPMOE_OK);
  CHECK_FAILS(zipmoe_model_cache_layer_stats(model, zipmoe_model_n_moe_layers(model), &layer),
              ZIPMOE_ERR_INVALID_ARGUMENT, "moe_layer_index");
  CHECK(zipmoe_model_reset_cache_stats(model) == ZIPMOE_OK);
}

static void test_tokens(zipmoe_model* model) {
  const char* text = "ROMEO. But soft, what light through yonder window breaks?";
  int32_t tokens[256];
  char back[512];
  int32_t n, needed, i;

  n = zipmoe_tokenize(model, text, strlen(text), false, tokens, 256);
  CHECK(n > 5);
  needed = zipmoe_tokenize(model, text, strlen(text), false, NULL, 0);
  CHECK(needed == -n);
  tokens[0] = -7;
  CHECK(zipmoe_tokenize(model, text, strlen(text), false, tokens, n - 1) == -n);
  CHECK(tokens[0] == -7); /* nothing written */
  n = zipmoe_tokenize(model, text, strlen(text), false, tokens, 256);
  CHECK(zipmoe_detokenize(model, tokens, n, back, 512) == (int32_t)strlen(text));
  CHECK(memcmp(back, text, strlen(text)) == 0);
  CHECK(zipmoe_detokenize(model, tokens, n, NULL, 0) == -(int32_t)strlen(text));
  CHECK(zipmoe_detokenize(model, tokens, 0, back, 512) == 0);
  for (i = 0; i < n; ++i) CHECK(tokens[i] >= 0 && tokens[i] < zipmoe_model_n_vocab(model));

  /* a special token written in the text: plain text unless parse_special */
  n = zipmoe_tokenize_special(model, "<|im_start|>", 12, false, true, tokens, 256);
  CHECK(n == 1);
  CHECK(zipmoe_detokenize_special(model, tokens, 1, true, back, 512) == 0); /* skipped */
  CHECK(zipmoe_detokenize(model, tokens, 1, back, 512) == 12);
  CHECK(zipmoe_tokenize(model, "<|im_start|>", 12, false, tokens, 256) > 1);

  CHECK(zipmoe_tokenize(model, NULL, 0, false, tokens, 256) == 0);
  CHECK(zipmoe_tokenize(model, NULL, 5, false, tokens, 256) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "text is NULL") != NULL);
  CHECK(zipmoe_last_status() == ZIPMOE_ERR_INVALID_ARGUMENT);
  CHECK(zipmoe_tokenize(model, text, 4, false, NULL, 10) == INT32_MIN);
  CHECK(zipmoe_tokenize(model, text, 4, false, tokens, -1) == INT32_MIN);
  CHECK(zipmoe_tokenize(NULL, text, 4, false, tokens, 10) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "model is NULL") != NULL);
  /* bytes that are not UTF-8 are tokenized too (as byte tokens) and come back as U+FFFD */
  n = zipmoe_tokenize(model, "a\xff" "b", 3, false, tokens, 256);
  CHECK(n >= 3);
  CHECK(zipmoe_detokenize(model, tokens, n, back, 512) == 5 && memcmp(back, "a\xef\xbf\xbd" "b", 5) == 0);

  tokens[0] = zipmoe_model_n_vocab(model) + 5;
  CHECK(zipmoe_detokenize(model, tokens, 1, back, 512) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "outside the vocabulary") != NULL);
  tokens[0] = -1;
  CHECK(zipmoe_detokenize(model, tokens, 1, back, 512) == INT32_MIN);
  CHECK(zipmoe_detokenize(model, NULL, 2, back, 512) == INT32_MIN);
  CHECK(zipmoe_detokenize(model, tokens, -2, back, 512) == INT32_MIN);
}

static void test_chat_template(zipmoe_model* model) {
  zipmoe_chat_message messages[2];
  zipmoe_chat_params params = zipmoe_chat_default_params();
  char text[4096];
  int32_t n;
  const char* expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                         "<|im_start|>assistant\n";

  messages[0].role = "system";
  messages[0].content = "Be brief.";
  messages[1].role = "user";
  messages[1].content = "Hi!";
  n = zipmoe_chat_apply_template(model, NULL, messages, 2, NULL, text, sizeof(text));
  CHECK(n == (int32_t)strlen(expected) && memcmp(text, expected, (size_t)n) == 0);
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 2, NULL, NULL, 0) == -n);
  params.add_generation_prompt = false;
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 2, &params, text, sizeof(text)) == n - 22);

  n = zipmoe_chat_apply_template_json(model, NULL, "[{\"role\": \"user\", \"content\": \"Hi!\"}]", NULL, text,
                                      sizeof(text));
  CHECK(n > 0 && memcmp(text, "<|im_start|>user\nHi!", 20) == 0);

  /* a template of one's own; special tokens and extra variables through variables_json */
  params = zipmoe_chat_default_params();
  params.variables_json = "{\"bos_token\": \"<s>\", \"shout\": true}";
  n = zipmoe_chat_apply_template(NULL, "{{ bos_token }}{% for m in messages %}{{ m.content|upper if shout }}"
                                       "{% endfor %}", messages, 2, &params, text, sizeof(text));
  CHECK(n == 15 && memcmp(text, "<s>BE BRIEF.HI!", 15) == 0);

  CHECK(zipmoe_chat_apply_template(NULL, "{% for m in messages %}", messages, 2, NULL, text, 4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "does not parse") != NULL);
  CHECK(zipmoe_chat_apply_template(NULL, "{% include 'x' %}", messages, 2, NULL, text, 4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "not supported") != NULL);
  CHECK(zipmoe_chat_apply_template(NULL, "{{ raise_exception('no system messages') }}", messages, 2, NULL, text,
                                   4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "no system messages") != NULL);
  CHECK(zipmoe_chat_apply_template(NULL, "{{ messages[0].nope.deeper }}", messages, 2, NULL, text, 4096) ==
        INT32_MIN);
  CHECK(zipmoe_chat_apply_template(NULL, NULL, messages, 2, NULL, text, 4096) == INT32_MIN);
  CHECK(zipmoe_chat_apply_template(model, NULL, NULL, 2, NULL, text, 4096) == INT32_MIN);
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 0, NULL, text, 4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "empty conversation") != NULL);
  params = zipmoe_chat_default_params();
  params.tools_json = "[not json";
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 2, &params, text, 4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "tools_json") != NULL);
  params.tools_json = "{\"a\": 1}";
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 2, &params, text, 4096) == INT32_MIN);
  CHECK(zipmoe_chat_apply_template_json(model, NULL, "{\"role\": \"user\"}", NULL, text, 4096) == INT32_MIN);
  messages[1].content = "bad \xc3";
  CHECK(zipmoe_chat_apply_template(model, NULL, messages, 2, NULL, text, 4096) == INT32_MIN);
  CHECK(strstr(zipmoe_last_error(), "UTF-8") != NULL);
  /* a template that would loop for ever is stopped */
  CHECK(zipmoe_chat_apply_template(NULL, "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}"
                                         "{% endfor %}", messages, 1, NULL, text, 4096) == INT32_MIN);
}

struct collected {
  char text[8192];
  size_t length;
  int pieces;
  int stop_after;          /* return false after this many pieces (0: never) */
  zipmoe_context* cancel;  /* cancel this context from the callback */
  zipmoe_context* reenter; /* try a second call on this context from the callback */
  zipmoe_status reentered;
};

static bool collect(const char* piece, size_t length, void* user) {
  struct collected* c = (struct collected*)user;
  if (c->length + length < sizeof(c->text)) {
    memcpy(c->text + c->length, piece, length);
    c->length += length;
    c->text[c->length] = '\0';
  }
  ++c->pieces;
  if (c->cancel) zipmoe_context_cancel(c->cancel);
  if (c->reenter) c->reentered = zipmoe_context_reset(c->reenter);
  return c->stop_after == 0 || c->pieces < c->stop_after;
}

static bool collect_batch(int32_t index, const char* piece, size_t length, void* user) {
  struct collected* c = (struct collected*)user + index;
  return collect(piece, length, c);
}

static void test_contexts(zipmoe_model* model) {
  zipmoe_context* ctx = NULL;
  zipmoe_context* second = (zipmoe_context*)&second;
  zipmoe_context_params cp = zipmoe_context_default_params();
  zipmoe_sampling_params sp = zipmoe_sampling_default_params();
  zipmoe_generation_stats stats;
  static struct collected a, b, batch[2];
  static float logits[65536];
  int32_t tokens[64];
  int32_t n, vocab = zipmoe_model_n_vocab(model);
  const char* stop[1];
  zipmoe_prompt prompts[2];
  zipmoe_chat_message chat[1];

  cp.max_context = 1 << 30;
  CHECK_FAILS(zipmoe_context_new(model, &cp, &ctx), ZIPMOE_ERR_INVALID_ARGUMENT, "max_context");
  cp = zipmoe_context_default_params();
  cp.max_sequences = 0;
  CHECK_FAILS(zipmoe_context_new(model, &cp, &ctx), ZIPMOE_ERR_INVALID_ARGUMENT, "max_sequences");
  cp.max_sequences = 1025;
  CHECK_FAILS(zipmoe_context_new(model, &cp, &ctx), ZIPMOE_ERR_INVALID_ARGUMENT, "max_sequences");
  CHECK_FAILS(zipmoe_context_new(NULL, NULL, &ctx), ZIPMOE_ERR_INVALID_ARGUMENT, "model is NULL");
  CHECK_FAILS(zipmoe_context_new(model, NULL, NULL), ZIPMOE_ERR_INVALID_ARGUMENT, "out is NULL");
  CHECK(zipmoe_context_new(model, NULL, &ctx) == ZIPMOE_OK && ctx != NULL);
  /* a second context on the same model: its own sequence */
  CHECK(zipmoe_context_new(model, NULL, &second) == ZIPMOE_OK && second != NULL && second != ctx);
  CHECK(zipmoe_context_n_ctx(ctx) > 0);
  CHECK(zipmoe_context_position(ctx) == 0);
  CHECK_FAILS(zipmoe_generation_stats_get(ctx, 1, &stats), ZIPMOE_ERR_INVALID_ARGUMENT, "sequence");

  /* eval */
  n = zipmoe_tokenize(model, "ROMEO.", 6, true, tokens, 64);
  CHECK(n > 0);
  CHECK(vocab <= 65536);
  CHECK(zipmoe_eval(ctx, tokens, n, logits) == ZIPMOE_OK);
  CHECK(zipmoe_context_position(ctx) == n);
  CHECK(zipmoe_eval(ctx, tokens, 1, NULL) == ZIPMOE_OK);
  CHECK(zipmoe_context_position(ctx) == n + 1);
  CHECK_FAILS(zipmoe_eval(ctx, tokens, 0, logits), ZIPMOE_ERR_INVALID_ARGUMENT, "n_tokens");
  CHECK_FAILS(zipmoe_eval(ctx, NULL, 3, logits), ZIPMOE_ERR_INVALID_ARGUMENT, "tokens is NULL");
  tokens[0] = vocab;
  CHECK_FAILS(zipmoe_eval(ctx, tokens, 1, logits), ZIPMOE_ERR_INVALID_ARGUMENT, "outside");
  CHECK(zipmoe_context_position(ctx) == n + 1); /* nothing was run */
  CHECK(zipmoe_context_position(second) == 0);  /* the other context's sequence is untouched */
  zipmoe_context_free(second);
  CHECK(zipmoe_context_reset(ctx) == ZIPMOE_OK && zipmoe_context_position(ctx) == 0);

  /* greedy generation: deterministic, the same from text and from its tokens */
  sp.temperature = 0.0f;
  sp.max_new_tokens = 24;
  CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &a) == ZIPMOE_OK);
  CHECK(a.length > 0 && a.pieces > 0);
  CHECK(zipmoe_generation_stats_get(ctx, 0, &stats) == ZIPMOE_OK);
  CHECK(stats.generated_tokens > 0 && stats.generated_tokens <= 24 && stats.prompt_tokens > 0);
  CHECK(stats.finish_reason == ZIPMOE_FINISH_LENGTH || stats.finish_reason == ZIPMOE_FINISH_EOS);
  n = zipmoe_tokenize(model, "ROMEO.", 6, true, tokens, 64);
  CHECK(zipmoe_generate_tokens(ctx, tokens, n, &sp, collect, &b) == ZIPMOE_OK);
  CHECK(b.length == a.length && strcmp(a.text, b.text) == 0);
  CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, NULL, NULL) == ZIPMOE_OK); /* no callback: runs to the end */

  /* a stop string never shows */
  if (a.length > 4) {
    char stop_text[8];
    memcpy(stop_text, a.text + a.length / 2, 2);
    stop_text[2] = '\0';
    stop[0] = stop_text;
    sp.stop = stop;
    sp.n_stop = 1;
    memset(&b, 0, sizeof(b));
    CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b) == ZIPMOE_OK);
    CHECK(strstr(b.text, stop_text) == NULL && strncmp(a.text, b.text, b.length) == 0);
    CHECK(zipmoe_generation_stats_get(ctx, 0, &stats) == ZIPMOE_OK && stats.finish_reason == ZIPMOE_FINISH_STOP);
    sp.stop = NULL;
    sp.n_stop = 0;
  }

  /* the callback stops it; cancel from inside the run; a second call meanwhile is refused */
  memset(&b, 0, sizeof(b));
  b.stop_after = 2;
  CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b) == ZIPMOE_OK && b.pieces == 2);
  CHECK(zipmoe_generation_stats_get(ctx, 0, &stats) == ZIPMOE_OK && stats.finish_reason == ZIPMOE_FINISH_CALLBACK);
  memset(&b, 0, sizeof(b));
  b.cancel = ctx;
  b.reenter = ctx;
  CHECK_FAILS(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b), ZIPMOE_ERR_CANCELLED, "cancel");
  CHECK(b.pieces == 1 && b.reentered == ZIPMOE_ERR_BUSY);
  CHECK(zipmoe_generation_stats_get(ctx, 0, &stats) == ZIPMOE_OK && stats.finish_reason == ZIPMOE_FINISH_CANCELLED);
  CHECK(zipmoe_context_cancel(ctx) == ZIPMOE_OK); /* nothing running: no effect on the next call */
  memset(&b, 0, sizeof(b));
  CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b) == ZIPMOE_OK && strcmp(a.text, b.text) == 0);

  /* bad sampling parameters: nothing generated */
  sp.top_p = 0.0f;
  CHECK_FAILS(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "top_p");
  sp.top_p = -1.0f;
  sp.n_stop = 1;
  CHECK_FAILS(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "stop is NULL");
  stop[0] = "";
  sp.stop = stop;
  CHECK_FAILS(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "empty");
  sp.stop = NULL;
  sp.n_stop = 0;
  CHECK_FAILS(zipmoe_generate(ctx, NULL, 3, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "prompt is NULL");
  CHECK_FAILS(zipmoe_generate_tokens(ctx, tokens, 0, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "no tokens");
  tokens[0] = -3;
  CHECK_FAILS(zipmoe_generate_tokens(ctx, tokens, 1, &sp, collect, &b), ZIPMOE_ERR_INVALID_ARGUMENT, "outside");

  /* a conversation, and a batch whose sequences give what they give alone */
  chat[0].role = "user";
  chat[0].content = "Speak of love.";
  memset(&b, 0, sizeof(b));
  CHECK(zipmoe_generate_chat(ctx, chat, 1, &sp, collect, &b) == ZIPMOE_OK && b.length > 0);
  prompts[0].text = "ROMEO.";
  prompts[0].text_len = 6;
  prompts[0].tokens = NULL;
  prompts[1].text = NULL;
  prompts[1].text_len = 0;
  prompts[1].tokens = tokens;
  prompts[1].n_tokens = zipmoe_tokenize(model, "ROMEO.", 6, true, tokens, 64);
  memset(batch, 0, sizeof(batch));
  CHECK(zipmoe_generate_batch(ctx, prompts, 2, &sp, collect_batch, batch) == ZIPMOE_OK);
  /* two sequences in one step: with precision "fast" only "exact" promises the solo text (test_many_sequences) */
  CHECK(batch[0].length > 0 && strcmp(batch[0].text, batch[1].text) == 0);
  CHECK(zipmoe_generation_stats_get(ctx, 1, &stats) == ZIPMOE_OK && stats.generated_tokens > 0);
  CHECK_FAILS(zipmoe_generate_batch(ctx, prompts, 0, &sp, collect_batch, batch), ZIPMOE_ERR_INVALID_ARGUMENT,
              "n_prompts");

  /* a freed context gives its sequence back: the next one starts empty */
  CHECK(zipmoe_eval(ctx, tokens, 1, NULL) == ZIPMOE_OK && zipmoe_context_position(ctx) > 0);
  zipmoe_context_free(ctx);
  ctx = NULL;
  CHECK(zipmoe_context_new(model, NULL, &ctx) == ZIPMOE_OK && ctx != NULL);
  CHECK(zipmoe_context_position(ctx) == 0);

  /* freeing the model first: the context keeps it alive, the handle is gone */
  zipmoe_model_free(model);
  CHECK(zipmoe_model_n_vocab(model) == -1);
  CHECK(strstr(zipmoe_last_error(), "not a live zipmoe_model") != NULL);
  memset(&b, 0, sizeof(b));
  CHECK(zipmoe_generate(ctx, "ROMEO.", 6, &sp, collect, &b) == ZIPMOE_OK && strcmp(a.text, b.text) == 0);
  zipmoe_context_free(ctx);
  CHECK(zipmoe_context_position(ctx) == -1);
  CHECK(zipmoe_context_reset(ctx) == ZIPMOE_ERR_INVALID_ARGUMENT);
  zipmoe_context_free(ctx); /* twice: reported, nothing happens */
  CHECK(strstr(zipmoe_last_error(), "freed twice") != NULL);
  zipmoe_model_free(model);
  CHECK(strstr(zipmoe_last_error(), "freed twice") != NULL);
  zipmoe_context_free(NULL);
  zipmoe_model_free(NULL);
  zipmoe_model_free((zipmoe_model*)&failures); /* a pointer the library never handed out */
  CHECK(strstr(zipmoe_last_error(), "not a live zipmoe_model") != NULL);
}

/* ---- several contexts and sequences on one model (precision "exact") ---- */

static const char* const many_prompts[] = {"ROMEO.", "JULIET. O Romeo,", "First Citizen:", "KING", "Good morrow"};
#define N_MANY 5

static zipmoe_sampling_params seeded(void) {
  zipmoe_sampling_params sp = zipmoe_sampling_default_params();
  sp.temperature = 0.8f;
  sp.top_k = 40;
  sp.seed = 1234;
  sp.max_new_tokens = 20;
  return sp;
}

/* Each prompt's text on a context of its own, one after another. */
static void solo_texts(zipmoe_model* model, struct collected* solo) {
  zipmoe_context* ctx = NULL;
  zipmoe_sampling_params sp = seeded();
  int i;
  CHECK(zipmoe_context_new(model, NULL, &ctx) == ZIPMOE_OK);
  for (i = 0; i < N_MANY; ++i) {
    memset(&solo[i], 0, sizeof(solo[i]));
    CHECK(zipmoe_generate(ctx, many_prompts[i], strlen(many_prompts[i]), &sp, collect, &solo[i]) == ZIPMOE_OK);
    CHECK(solo[i].length > 0);
  }
  zipmoe_context_free(ctx);
}

struct threaded {
  zipmoe_context* ctx;
  int first; /* generates many_prompts[first], then [first + 2], ... */
  struct collected out[N_MANY];
  zipmoe_status status;
};

static void* generate_on_thread(void* arg) {
  struct threaded* t = (struct threaded*)arg;
  zipmoe_sampling_params sp = seeded();
  int i;
  t->status = ZIPMOE_OK;
  for (i = t->first; i < N_MANY && t->status == ZIPMOE_OK; i += 2) {
    t->status = zipmoe_generate(t->ctx, many_prompts[i], strlen(many_prompts[i]), &sp, collect, &t->out[i]);
  }
  return NULL;
}

/* Two contexts on one model, generating at the same time from two threads. */
static void test_contexts_on_threads(zipmoe_model* model, const struct collected* solo) {
  static struct threaded t[2];
  pthread_t threads[2];
  int i, k;
  memset(t, 0, sizeof(t));
  for (k = 0; k < 2; ++k) {
    t[k].first = k;
    CHECK(zipmoe_context_new(model, NULL, &t[k].ctx) == ZIPMOE_OK);
  }
  for (k = 0; k < 2; ++k) CHECK(pthread_create(&threads[k], NULL, generate_on_thread, &t[k]) == 0);
  for (k = 0; k < 2; ++k) CHECK(pthread_join(threads[k], NULL) == 0);
  for (k = 0; k < 2; ++k) {
    CHECK(t[k].status == ZIPMOE_OK);
    for (i = k; i < N_MANY; i += 2) CHECK(strcmp(t[k].out[i].text, solo[i].text) == 0);
    zipmoe_context_free(t[k].ctx);
  }
}

/* Interleaved evaluation on two contexts: each sees only its own tokens. */
static void test_contexts_keep_their_own_sequence(zipmoe_model* model) {
  static float alone[65536], interleaved[65536], other[65536];
  zipmoe_context *a = NULL, *b = NULL;
  int32_t tokens[64], noise[64];
  const int32_t n = zipmoe_tokenize(model, "JULIET. O Romeo, Romeo!", 23, true, tokens, 64);
  const int32_t m = zipmoe_tokenize(model, "First Citizen:", 14, true, noise, 64);
  CHECK(n > 2 && m > 0 && zipmoe_model_n_vocab(model) <= 65536);
  CHECK(zipmoe_context_new(model, NULL, &a) == ZIPMOE_OK && zipmoe_context_new(model, NULL, &b) == ZIPMOE_OK);
  CHECK(zipmoe_eval(a, tokens, n, alone) == ZIPMOE_OK);
  CHECK(zipmoe_context_reset(a) == ZIPMOE_OK);
  CHECK(zipmoe_eval(a, tokens, 2, NULL) == ZIPMOE_OK);
  CHECK(zipmoe_eval(b, noise, m, other) == ZIPMOE_OK);
  CHECK(zipmoe_eval(a, tokens + 2, n - 2, interleaved) == ZIPMOE_OK);
  CHECK(zipmoe_context_position(a) == n && zipmoe_context_position(b) == m);
  CHECK(memcmp(alone, interleaved, sizeof(float) * (size_t)zipmoe_model_n_vocab(model)) == 0);
  zipmoe_context_free(a);
  zipmoe_context_free(b);
}

/* zipmoe_generate_batch over more prompts than sequences: each the solo text. */
static void test_many_sequences(zipmoe_model* model, const struct collected* solo) {
  static struct collected batch[N_MANY];
  zipmoe_context* ctx = NULL;
  zipmoe_context_params cp = zipmoe_context_default_params();
  zipmoe_sampling_params sp = seeded();
  zipmoe_generation_stats stats;
  zipmoe_prompt prompts[N_MANY];
  int i;
  memset(prompts, 0, sizeof(prompts));
  for (i = 0; i < N_MANY; ++i) {
    prompts[i].text = many_prompts[i];
    prompts[i].text_len = strlen(many_prompts[i]);
  }
  cp.max_sequences = 3;
  CHECK(zipmoe_context_new(model, &cp, &ctx) == ZIPMOE_OK);
  memset(batch, 0, sizeof(batch));
  CHECK(zipmoe_generate_batch(ctx, prompts, N_MANY, &sp, collect_batch, batch) == ZIPMOE_OK);
  for (i = 0; i < N_MANY; ++i) {
    CHECK(strcmp(batch[i].text, solo[i].text) == 0);
    CHECK(zipmoe_generation_stats_get(ctx, i, &stats) == ZIPMOE_OK && stats.generated_tokens > 0 &&
          stats.seed == 1234);
  }
  /* one sequence stopped by its callback: the others go on to their solo text */
  memset(batch, 0, sizeof(batch));
  batch[1].stop_after = 1;
  CHECK(zipmoe_generate_batch(ctx, prompts, N_MANY, &sp, collect_batch, batch) == ZIPMOE_OK);
  CHECK(batch[1].pieces == 1);
  CHECK(zipmoe_generation_stats_get(ctx, 1, &stats) == ZIPMOE_OK && stats.finish_reason == ZIPMOE_FINISH_CALLBACK);
  for (i = 0; i < N_MANY; ++i) {
    if (i != 1) CHECK(strcmp(batch[i].text, solo[i].text) == 0);
  }
  /* cancelled from a callback: every sequence ends */
  memset(batch, 0, sizeof(batch));
  batch[0].cancel = ctx;
  CHECK_FAILS(zipmoe_generate_batch(ctx, prompts, N_MANY, &sp, collect_batch, batch), ZIPMOE_ERR_CANCELLED,
              "cancel");
  CHECK(zipmoe_generation_stats_get(ctx, N_MANY - 1, &stats) == ZIPMOE_OK &&
        stats.finish_reason == ZIPMOE_FINISH_CANCELLED);
  zipmoe_context_free(ctx);
}

static void test_many(void) {
  static struct collected solo[N_MANY];
  zipmoe_model* model = NULL;
  zipmoe_model_params params = zipmoe_model_default_params();
  params.threads = 2;
  params.precision = "exact";
  CHECK(zipmoe_model_load(model_path, &params, &model) == ZIPMOE_OK);
  if (model == NULL) return;
  solo_texts(model, solo);
  test_contexts_on_threads(model, solo);
  test_contexts_keep_their_own_sequence(model);
  test_many_sequences(model, solo);
  zipmoe_model_free(model);
}

int main(int argc, char** argv) {
  zipmoe_model* model = NULL;
  zipmoe_model_params params = zipmoe_model_default_params();
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.zmoe SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  model_path = argv[1];
  scratch_dir = argv[2];
  test_basics();
  test_load_errors();
  params.threads = 2;
  if (zipmoe_model_load(model_path, &params, &model) != ZIPMOE_OK) {
    fprintf(stderr, "cannot load %s: %s\n", model_path, zipmoe_last_error());
    return 1;
  }
  test_model_facts(model);
  test_tokens(model);
  test_chat_template(model);
  test_contexts(model); /* frees the model */
  test_many();
  printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}

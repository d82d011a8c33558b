/* simple.c - load a model, stream a continuation of a prompt, print statistics.
 *
 *   simple MODEL.zmoe [PROMPT [MAX_NEW_TOKENS [TEMPERATURE [SEED]]]]
 *
 * The generated text goes to stdout as it is produced (followed by a newline),
 * the statistics to stderr. TEMPERATURE 0 is greedy; without TEMPERATURE and
 * SEED the model's own sampling defaults and a random seed are used.
 * Build: see examples/CMakeLists.txt and docs/EMBEDDING.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zipmoe.h>

static bool print_piece(const char* piece, size_t length, void* user) {
  (void)user;
  fwrite(piece, 1, length, stdout);
  fflush(stdout);
  return true; /* false would stop the generation here */
}

static int fail(const char* what) {
  fprintf(stderr, "%s: %s\n", what, zipmoe_last_error());
  return 1;
}

int main(int argc, char** argv) {
  zipmoe_model* model = NULL;
  zipmoe_context* ctx = NULL;
  zipmoe_model_params model_params = zipmoe_model_default_params();
  zipmoe_sampling_params sampling = zipmoe_sampling_default_params();
  zipmoe_generation_stats stats;
  zipmoe_cache_stats cache;
  zipmoe_memory_use memory;
  const char* prompt = argc > 2 ? argv[2] : "Once upon a time";
  static const char* finish_names[] = {"none", "eos", "stop", "length", "context", "callback", "cancelled", "error"};
  int status = 0;

  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.zmoe [PROMPT [MAX_NEW_TOKENS [TEMPERATURE [SEED]]]]\n", argv[0]);
    return 2;
  }
  if (zipmoe_api_version() != ZIPMOE_API_VERSION) {
    fprintf(stderr, "libzipmoe has API version %d, this program was built for %d\n", (int)zipmoe_api_version(),
            ZIPMOE_API_VERSION);
    return 1;
  }
  if (argc > 3) sampling.max_new_tokens = atoi(argv[3]);
  if (argc > 4) sampling.temperature = (float)atof(argv[4]);
  if (argc > 5) sampling.seed = strtoull(argv[5], NULL, 10);

  if (zipmoe_model_load(argv[1], &model_params, &model) != ZIPMOE_OK) return fail("load");
  if (zipmoe_context_new(model, NULL, &ctx) != ZIPMOE_OK) {
    status = fail("context");
  } else if (zipmoe_generate(ctx, prompt, strlen(prompt), &sampling, print_piece, NULL) != ZIPMOE_OK) {
    status = fail("generate");
  } else {
    printf("\n");
    zipmoe_generation_stats_get(ctx, 0, &stats);
    zipmoe_model_cache_stats(model, &cache);
    zipmoe_model_memory(model, &memory);
    fprintf(stderr,
            "%s, %s: %d prompt tokens (%.1f tokens/s), %d generated (%.1f tokens/s), finished by %s, seed %llu\n",
            zipmoe_model_architecture(model), zipmoe_model_isa(model), (int)stats.prompt_tokens,
            stats.prompt_tokens_per_second, (int)stats.generated_tokens, stats.generation_tokens_per_second,
            finish_names[stats.finish_reason], (unsigned long long)stats.seed);
    fprintf(stderr, "experts: %llu requests, %llu misses, %.1f MB read; memory %.1f MB (peak %.1f MB)\n",
            (unsigned long long)cache.total.requests,
            (unsigned long long)cache.total.served_from[ZIPMOE_TIER_ABSENT], cache.total.bytes_read / 1e6,
            memory.total / 1e6, memory.peak / 1e6);
  }
  zipmoe_context_free(ctx);
  zipmoe_model_free(model);
  return status;
}

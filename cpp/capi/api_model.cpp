// zipmoe.h: status, version, models, cache statistics.
#include <cstring>
#include <limits>
#include <string>

#include "capi/api_support.h"
#include "capi/handles.h"
#include "common/cpu_features.h"
#include "zipmoe.h"
#include "zipmoe/thread_pool.h"

#ifndef ZIPMOE_VERSION
#define ZIPMOE_VERSION "0.0.0"
#endif

using namespace zipmoe;
using namespace zipmoe::capi;

namespace {

constexpr int kMaxIoThreads = 64;

std::string option_text(const char* value) { return value ? std::string(value) : std::string(); }

// The tiers named in "full,sm" (or "full+sm"), as a mask; ABSENT is always allowed.
std::uint8_t tier_mask(const std::string& names) {
  std::uint8_t mask = expert_tier_bit(ExpertTier::kAbsent);
  std::size_t start = 0;
  while (start <= names.size()) {
    std::size_t end = names.find_first_of(",+", start);
    if (end == std::string::npos) end = names.size();
    std::string name = names.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    if (!name.empty()) {
      ExpertTier tier;
      if (!parse_expert_tier(name, &tier)) {
        throw InvalidArgumentError("params->tiers: unknown expert tier '" + name +
                                   "' (use full, compressed, sm, e, absent)");
      }
      mask |= expert_tier_bit(tier);
    }
    start = end + 1;
  }
  return mask;
}

ModelOptions model_options(const zipmoe_model_params& p) {
  ModelOptions options;
  if (p.threads < 0 || p.threads > ThreadPool::kMaxThreads) {
    throw InvalidArgumentError("params->threads must be in [0, " + std::to_string(ThreadPool::kMaxThreads) +
                               "] (0: one per core), not " + std::to_string(p.threads));
  }
  options.threads = p.threads;
  if (p.memory_budget > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw InvalidArgumentError("params->memory_budget is too large (at most 2^63 - 1 bytes)");
  }
  options.memory_budget = p.memory_budget;
  if (p.io && !parse_io_mode(p.io, &options.io_mode)) {
    throw InvalidArgumentError("params->io: unknown I/O mode '" + option_text(p.io) + "' (use pread, direct, mmap)");
  }
  if (p.cache_policy && !parse_cache_policy(p.cache_policy, &options.cache_policy)) {
    throw InvalidArgumentError("params->cache_policy: unknown policy '" + option_text(p.cache_policy) +
                               "' (use affinity, lru, lfu)");
  }
  if (p.precision && !parse_precision(p.precision, &options.precision)) {
    throw InvalidArgumentError("params->precision: unknown precision '" + option_text(p.precision) +
                               "' (use fast, exact)");
  }
  if (p.isa) {
    Isa isa;
    if (!parse_isa(p.isa, &isa)) {
      throw InvalidArgumentError("params->isa: unknown instruction set '" + option_text(p.isa) +
                                 "' (use scalar, avx2, avx512, neon)");
    }
    throw_if_error(check_isa(isa));
    options.isa = isa;
  }
  if (p.kv_cache_dtype) {
    DType dtype;
    if (!parse_dtype(p.kv_cache_dtype, &dtype) || !is_float_dtype(dtype)) {
      throw InvalidArgumentError("params->kv_cache_dtype: '" + option_text(p.kv_cache_dtype) +
                                 "' is not a KV cache type (use f32, bf16, f16)");
    }
    options.kv_cache_dtype = dtype;
  }
  if (p.tiers) options.allowed_tiers = tier_mask(p.tiers);
  options.routing_profile = option_text(p.routing_profile);
  options.prefetch = p.prefetch;
  if (p.io_threads < 0 || p.io_threads > kMaxIoThreads) {
    throw InvalidArgumentError("params->io_threads must be in [0, 64] (0: 2), not " + std::to_string(p.io_threads));
  }
  options.io_threads = p.io_threads;
  return options;
}

// Runs body() on a checked model for the getters that return a value, or `failed`.
template <class T, class Body>
T model_value(const zipmoe_model* handle, const char* function, T failed, Body&& body) noexcept {
  T result = failed;
  const zipmoe_status status = guarded(function, [&]() -> zipmoe_status {
    result = body(*find_model(handle));
    return ZIPMOE_OK;
  });
  return status == ZIPMOE_OK ? result : failed;
}

std::int32_t count(std::size_t value) {
  return value > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())
             ? std::numeric_limits<std::int32_t>::max()
             : static_cast<std::int32_t>(value);
}

double seconds(std::uint64_t ns) { return static_cast<double>(ns) * 1e-9; }

zipmoe_cache_layer_stats layer_stats(const ExpertLayerStats& in, std::int32_t layer) {
  zipmoe_cache_layer_stats out;
  std::memset(&out, 0, sizeof(out));
  out.layer = layer;
  out.requests = in.requests;
  for (int t = 0; t < ZIPMOE_N_TIERS; ++t) out.served_from[t] = in.served_from[t];
  out.prefetch_hits = in.prefetch_hits;
  out.bytes_read = in.bytes_read;
  out.prefetch_bytes_read = in.prefetch_bytes_read;
  out.chunks_read = in.chunks_read;
  out.read_seconds = seconds(in.read_ns);
  out.decoded_bytes = in.decoded_bytes;
  out.decode_seconds = seconds(in.decode_ns);
  out.stall_seconds = seconds(in.stall_ns);
  return out;
}

}  // namespace

static_assert(ZIPMOE_N_TIERS == kNumExpertTiers, "zipmoe.h's tiers must match include/zipmoe/cache.h");
static_assert(ZIPMOE_TIER_ABSENT == static_cast<int>(ExpertTier::kAbsent), "tier order");

extern "C" {

const char* zipmoe_status_name(zipmoe_status status) {
  switch (status) {
    case ZIPMOE_OK:
      return "ZIPMOE_OK";
    case ZIPMOE_ERR_INVALID_ARGUMENT:
      return "ZIPMOE_ERR_INVALID_ARGUMENT";
    case ZIPMOE_ERR_FORMAT:
      return "ZIPMOE_ERR_FORMAT";
    case ZIPMOE_ERR_CHECKSUM:
      return "ZIPMOE_ERR_CHECKSUM";
    case ZIPMOE_ERR_IO:
      return "ZIPMOE_ERR_IO";
    case ZIPMOE_ERR_UNSUPPORTED_MODEL:
      return "ZIPMOE_ERR_UNSUPPORTED_MODEL";
    case ZIPMOE_ERR_BUDGET:
      return "ZIPMOE_ERR_BUDGET";
    case ZIPMOE_ERR_CANCELLED:
      return "ZIPMOE_ERR_CANCELLED";
    case ZIPMOE_ERR_INTERNAL:
      return "ZIPMOE_ERR_INTERNAL";
    case ZIPMOE_ERR_BUSY:
      return "ZIPMOE_ERR_BUSY";
  }
  return "ZIPMOE_ERR_UNKNOWN";
}

const char* zipmoe_version(void) { return ZIPMOE_VERSION; }

int32_t zipmoe_api_version(void) { return ZIPMOE_API_VERSION; }

zipmoe_model_params zipmoe_model_default_params(void) {
  zipmoe_model_params params;
  std::memset(&params, 0, sizeof(params));
  params.prefetch = true;
  return params;
}

zipmoe_status zipmoe_model_load(const char* path, const zipmoe_model_params* params, zipmoe_model** out) {
  return guarded("zipmoe_model_load", [&]() -> zipmoe_status {
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    *out = nullptr;
    if (path == nullptr) throw InvalidArgumentError("path is NULL");
    if (*path == '\0') throw InvalidArgumentError("path is empty");
    const zipmoe_model_params defaults = zipmoe_model_default_params();
    const ModelOptions options = model_options(params ? *params : defaults);
    *out = add_model(ModelState::load(path, options));
    return ZIPMOE_OK;
  });
}

void zipmoe_model_free(zipmoe_model* model) {
  guarded("zipmoe_model_free", [&]() -> zipmoe_status {
    if (model == nullptr) return ZIPMOE_OK;
    if (!remove_model(model)) {
      throw InvalidArgumentError("not a live zipmoe_model (freed twice, or never loaded): nothing freed");
    }
    return ZIPMOE_OK;
  });
}

int32_t zipmoe_model_n_vocab(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_vocab", -1, [](ModelState& m) { return count(m.model.info().vocab_size); });
}
int32_t zipmoe_model_n_layers(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_layers", -1, [](ModelState& m) { return count(m.model.info().num_layers); });
}
int32_t zipmoe_model_n_moe_layers(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_moe_layers", -1,
                     [](ModelState& m) { return count(m.model.info().num_moe_layers); });
}
int32_t zipmoe_model_n_experts(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_experts", -1,
                     [](ModelState& m) { return count(m.model.info().num_experts); });
}
int32_t zipmoe_model_n_experts_used(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_experts_used", -1,
                     [](ModelState& m) { return count(m.model.info().experts_per_token); });
}
int32_t zipmoe_model_n_embd(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_embd", -1, [](ModelState& m) { return count(m.model.info().hidden_size); });
}
int32_t zipmoe_model_n_ctx_train(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_ctx_train", -1,
                     [](ModelState& m) { return count(m.model.info().max_position_embeddings); });
}
int32_t zipmoe_model_n_threads(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_n_threads", -1, [](ModelState& m) { return m.model.num_threads(); });
}
int32_t zipmoe_model_token_bos(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_token_bos", -1,
                     [](ModelState& m) { return m.tokenizer ? m.tokenizer->bos_id() : -1; });
}
int32_t zipmoe_model_token_eos(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_token_eos", -1,
                     [](ModelState& m) { return m.tokenizer ? m.tokenizer->eos_id() : -1; });
}

const char* zipmoe_model_architecture(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_architecture", static_cast<const char*>(nullptr),
                     [](ModelState& m) { return m.architecture.c_str(); });
}
const char* zipmoe_model_path(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_path", static_cast<const char*>(nullptr),
                     [](ModelState& m) { return m.path.c_str(); });
}
const char* zipmoe_model_isa(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_isa", static_cast<const char*>(nullptr),
                     [](ModelState& m) { return m.isa.c_str(); });
}
const char* zipmoe_model_config_json(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_config_json", static_cast<const char*>(nullptr),
                     [](ModelState& m) { return m.config_json.c_str(); });
}
const char* zipmoe_model_chat_template(const zipmoe_model* model) {
  return model_value(model, "zipmoe_model_chat_template", static_cast<const char*>(nullptr), [](ModelState& m) {
    return m.has_chat_template ? m.chat_template_source.c_str() : static_cast<const char*>(nullptr);
  });
}

int32_t zipmoe_model_eos_tokens(const zipmoe_model* model, int32_t* tokens, int32_t capacity) {
  return guarded_count("zipmoe_model_eos_tokens", [&] {
    std::shared_ptr<ModelState> m = find_model(model);
    return deliver(m->eos_ids.data(), m->eos_ids.size(), sizeof(std::int32_t), tokens, capacity, "eos tokens");
  });
}

zipmoe_status zipmoe_model_memory(const zipmoe_model* model, zipmoe_memory_use* out) {
  return guarded("zipmoe_model_memory", [&]() -> zipmoe_status {
    std::shared_ptr<ModelState> m = find_model(model);
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    const MemoryUse use = m->model.memory();
    out->dense_weights = use.dense_weights;
    out->experts = use.experts;
    out->kv_cache = use.kv_cache;
    out->scratch = use.scratch;
    out->total = use.total;
    out->peak = use.peak;
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_model_cache_stats(const zipmoe_model* model, zipmoe_cache_stats* out) {
  return guarded("zipmoe_model_cache_stats", [&]() -> zipmoe_status {
    std::shared_ptr<ModelState> m = find_model(model);
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    const ExpertCacheStats stats = m->model.stats();
    std::memset(out, 0, sizeof(*out));
    out->streaming = stats.enabled;
    out->total = layer_stats(stats.total, -1);
    for (int t = 0; t < ZIPMOE_N_TIERS; ++t) {
      out->experts_in[t] = stats.experts_in[t];
      out->tier_bytes[t] = stats.tier_bytes[t];
      out->tier_capacity[t] = stats.tier_capacity[t];
    }
    out->working_set_bytes = stats.working_set_bytes;
    out->prefetches = stats.prefetches;
    out->prefetches_used = stats.prefetches_used;
    out->prefetches_cancelled = stats.prefetches_cancelled;
    out->admissions = stats.admissions;
    out->evictions = stats.evictions;
    out->steps = stats.steps;
    out->storage_bandwidth = stats.storage_bandwidth;
    out->decode_throughput = stats.decode_throughput;
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_model_cache_layer_stats(const zipmoe_model* model, int32_t moe_layer_index,
                                             zipmoe_cache_layer_stats* out) {
  return guarded("zipmoe_model_cache_layer_stats", [&]() -> zipmoe_status {
    std::shared_ptr<ModelState> m = find_model(model);
    if (out == nullptr) throw InvalidArgumentError("out is NULL");
    const ExpertCacheStats stats = m->model.stats();
    if (moe_layer_index < 0 || static_cast<std::size_t>(moe_layer_index) >= stats.layers.size()) {
      throw InvalidArgumentError("moe_layer_index " + std::to_string(moe_layer_index) + " is outside [0, " +
                                 std::to_string(stats.layers.size()) + ")");
    }
    const ExpertLayerStats& layer = stats.layers[static_cast<std::size_t>(moe_layer_index)];
    *out = layer_stats(layer, static_cast<std::int32_t>(layer.layer));
    return ZIPMOE_OK;
  });
}

zipmoe_status zipmoe_model_reset_cache_stats(zipmoe_model* model) {
  return guarded("zipmoe_model_reset_cache_stats", [&]() -> zipmoe_status {
    find_model(model)->model.reset_stats();
    return ZIPMOE_OK;
  });
}

}  // extern "C"

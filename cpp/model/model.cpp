// zipmoe::Model: load (config, dense weights, expert provider, KV cache,
// scratch) and the sequence API over the forward pass.
#include "zipmoe/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>

#include "cache/expert_cache.h"
#include "cache/resident_experts.h"
#include "cache/routing_profile.h"
#include "common/cpu_features.h"
#include "common/memory_ledger.h"
#include "common/system_memory.h"
#include "format/container_file.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/load_plan.h"
#include "model/weights.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe {

namespace {
constexpr std::size_t kDefaultContext = 4096;
constexpr std::size_t kDefaultBatch = 256;
constexpr std::size_t kMaxContext = std::size_t(1) << 24;

// Checks the options that do not depend on the container.
Status check_options(const ModelOptions& options) {
  if (options.isa) ZIPMOE_RETURN_IF_ERROR(check_isa(*options.isa));
  if (!is_float_dtype(options.kv_cache_dtype)) {
    return Status::InvalidArgument("kv_cache_dtype must be bf16, f16 or f32");
  }
  if (options.max_context > kMaxContext) {
    return Status::InvalidArgument("max_context " + std::to_string(options.max_context) + " is larger than " +
                                   std::to_string(kMaxContext));
  }
  if (options.allowed_tiers & ~kAllExpertTiers) return Status::InvalidArgument("allowed_tiers has unknown bits");
  if (options.io_threads < 0 || options.io_threads > 64) {
    return Status::InvalidArgument("io_threads must be in [0, 64]");
  }
  if (options.cache_policy != CachePolicy::kAffinity && options.cache_policy != CachePolicy::kLru &&
      options.cache_policy != CachePolicy::kLfu) {
    return Status::InvalidArgument("unknown cache policy");
  }
  if (!(options.storage_bandwidth >= 0) || !std::isfinite(options.storage_bandwidth) ||
      !(options.decode_throughput >= 0) || !std::isfinite(options.decode_throughput)) {
    return Status::InvalidArgument("storage_bandwidth and decode_throughput must be finite and >= 0");
  }
  return Status::Ok();
}

}  // namespace

struct Model::Impl {
  // Declared first so that it outlives every buffer charged to it.
  MemoryLedger ledger;
  std::string path;
  Isa isa = Isa::kScalar;
  ModelInfo info;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<format::ContainerFile> reader;
  model::ModelConfig config;
  model::DenseWeightStore dense;
  model::ModelWeights weights;
  std::unique_ptr<cache::ExpertProvider> experts;
  cache::ExpertCache* expert_cache = nullptr;        // experts, when streamed
  std::unique_ptr<cache::RoutingProfile> routing;  // gathered online by the forward pass
  std::unique_ptr<cache::RoutingProfile> prior;    // ModelOptions::routing_profile
  model::KvCache cache;
  model::Forward forward;
  std::size_t position = 0;
  std::uint64_t forward_ns = 0;  // wall time of forward steps since load or reset_stats (stats())
  mutable std::mutex mutex;

  // The steps of Model::load, in order.
  Status load(const std::string& path, const ModelOptions& options);
  Status open(const ModelOptions& options);
  Status load_routing_profiles(const ModelOptions& options);
  Status plan(const ModelOptions& options, std::size_t context, std::size_t batch);
  Status load_weights(const ModelOptions& options);
  Status allocate_sequence(const ModelOptions& options, std::size_t context, std::size_t batch);
  Status start_streaming(const ModelOptions& options, std::size_t context, std::size_t batch);
  void describe(std::size_t context);

  // Experts come through the expert cache (a memory budget was given) or are all decoded at load.
  static bool streams_experts(const ModelOptions& options) { return options.memory_budget > 0; }
  // What the forward pass is built with (the same when planned and when allocated).
  model::ForwardOptions forward_options(const ModelOptions& options, std::size_t batch) const;
  model::MemoryPlan held_memory(std::size_t context, std::size_t batch) const;

  Status run(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only);
};

Status Model::Impl::load(const std::string& model_path, const ModelOptions& options) {
  ZIPMOE_RETURN_IF_ERROR(check_options(options));
  path = model_path;
  if (options.isa) {
    isa = *options.isa;
  } else {
    ZIPMOE_RETURN_IF_ERROR(default_isa(&isa));
  }
  ZIPMOE_RETURN_IF_ERROR(open(options));
  ZIPMOE_RETURN_IF_ERROR(load_routing_profiles(options));
  const std::size_t context =
      options.max_context ? options.max_context : std::min(config.max_position_embeddings, kDefaultContext);
  const std::size_t batch = std::min(options.batch ? options.batch : kDefaultBatch, context);
  ZIPMOE_RETURN_IF_ERROR(plan(options, context, batch));
  pool = std::make_unique<ThreadPool>(options.threads);
  ZIPMOE_RETURN_IF_ERROR(load_weights(options));
  ZIPMOE_RETURN_IF_ERROR(allocate_sequence(options, context, batch));
  if (streams_experts(options)) ZIPMOE_RETURN_IF_ERROR(start_streaming(options, context, batch));
  describe(context);
  return Status::Ok();
}

// The container and its config.
Status Model::Impl::open(const ModelOptions& options) {
  ZIPMOE_RETURN_IF_ERROR(format::ContainerFile::open(path, options.io_mode, &reader));
  ZIPMOE_RETURN_IF_ERROR(model::parse_model_config(reader->metadata(), &config).with_context(path));
  for (const TensorInfo& t : reader->tensors()) {
    if (!is_float_dtype(t.dtype)) {
      return Status::Format(path + ": tensor '" + t.name + "' holds raw " + dtype_name(t.dtype) +
                            " bytes, not weights the engine can compute with");
    }
  }
  return Status::Ok();
}

// The profile gathered online, and the one the planner starts from (if given).
Status Model::Impl::load_routing_profiles(const ModelOptions& options) {
  const model::ModelConfig& c = config;
  const std::vector<std::uint32_t> moe_layers = model::expert_shapes(c).moe_layers;
  routing = std::make_unique<cache::RoutingProfile>(c.family->name, c.num_layers, moe_layers, c.num_experts,
                                                    c.experts_per_token);
  if (options.routing_profile.empty()) return Status::Ok();
  prior = std::make_unique<cache::RoutingProfile>();
  ZIPMOE_RETURN_IF_ERROR(cache::load_routing_profile(options.routing_profile, prior.get()));
  return prior->check_compatible(c.num_layers, moe_layers, c.num_experts).with_context(options.routing_profile);
}

// Before anything is read or allocated: the container's tensors are those of its
// architecture, and what the load will hold fits the budget and the machine.
Status Model::Impl::plan(const ModelOptions& options, std::size_t context, std::size_t batch) {
  ZIPMOE_RETURN_IF_ERROR(model::bind_tensors(*reader, config));
  model::MemoryPlan memory;
  ZIPMOE_RETURN_IF_ERROR(model::plan_memory(*reader, config, context, options.kv_cache_dtype,
                                            forward_options(options, batch), streams_experts(options), &memory));
  return model::check_memory(memory, options.memory_budget, available_memory(), path);
}

// Dense weights, decoded; routed experts decoded too, or a cache to stream them.
Status Model::Impl::load_weights(const ModelOptions& options) {
  ZIPMOE_RETURN_IF_ERROR(dense.load(*reader, config, pool.get(), &ledger, isa, &weights));
  if (config.num_moe_layers() == 0 || config.num_experts == 0) return Status::Ok();
  cache::ExpertShapes shapes = model::expert_shapes(config);
  // The embedding is read one row per token, unless the output matrix is the same one.
  const kernels::WeightMatrix& embedding = weights.embedding;
  const std::uint64_t table = std::uint64_t(embedding.rows) * embedding.cols * dtype_size(embedding.dtype);
  shapes.dense_bytes_per_token = dense.bytes() - (weights.output.data == embedding.data ? 0 : std::min(table, dense.bytes()));
  if (streams_experts(options)) {
    std::unique_ptr<cache::ExpertCache> streamed;
    ZIPMOE_RETURN_IF_ERROR(cache::ExpertCache::create(reader.get(), shapes, pool.get(), &ledger, isa, &streamed));
    expert_cache = streamed.get();
    experts = std::move(streamed);
    return Status::Ok();
  }
  std::unique_ptr<cache::ResidentExpertProvider> resident;
  ZIPMOE_RETURN_IF_ERROR(
      cache::ResidentExpertProvider::create(*reader, shapes, pool.get(), &ledger, isa, &resident));
  experts = std::move(resident);
  return Status::Ok();
}

// The KV cache and the forward pass's buffers.
Status Model::Impl::allocate_sequence(const ModelOptions& options, std::size_t context, std::size_t batch) {
  ZIPMOE_RETURN_IF_ERROR(cache.allocate(config, context, batch, options.kv_cache_dtype, &ledger));
  ZIPMOE_RETURN_IF_ERROR(
      forward.init(config, weights, experts.get(), &cache, pool.get(), &ledger, forward_options(options, batch)));
  forward.set_routing_profile(routing.get());
  return Status::Ok();
}

// Everything but the experts is allocated now: what is left of the budget goes
// to the expert cache, which needs at least its minimum (plan() checked that
// from the container; checked again from the ledger, which must agree).
Status Model::Impl::start_streaming(const ModelOptions& options, std::size_t context, std::size_t batch) {
  const std::uint64_t held = ledger.total();
  ZIPMOE_RETURN_IF_ERROR(
      model::check_memory(held_memory(context, batch), options.memory_budget, AvailableMemory(), path));
  ledger.set_limit(options.memory_budget);
  if (!expert_cache) return Status::Ok();
  cache::CacheOptions cache_options;
  cache_options.budget = options.memory_budget - held;
  cache_options.policy = options.cache_policy;
  cache_options.prefetch = options.prefetch;
  cache_options.allowed_tiers = options.allowed_tiers;
  cache_options.prior = prior.get();
  cache_options.io_mode = options.io_mode;
  cache_options.storage_bandwidth = options.storage_bandwidth;
  cache_options.decode_throughput = options.decode_throughput;
  cache_options.reorder_fetches = options.reorder_fetches;
  cache_options.io_threads = options.io_threads > 0 ? options.io_threads : 2;
  return expert_cache->start(cache_options);
}

// What the ledger holds before the expert cache starts, with the cache's minimum.
model::MemoryPlan Model::Impl::held_memory(std::size_t context, std::size_t batch) const {
  model::MemoryPlan held;
  held.dense_weights = ledger.bytes(MemoryCategory::kDenseWeights);
  held.kv_cache = ledger.bytes(MemoryCategory::kKvCache);
  held.scratch = ledger.bytes(MemoryCategory::kScratch);
  held.experts = expert_cache ? expert_cache->minimum_bytes() : 0;
  held.streamed = true;
  held.experts_per_token = config.experts_per_token;
  held.context = context;
  held.batch = batch;
  return held;
}

model::ForwardOptions Model::Impl::forward_options(const ModelOptions& options, std::size_t batch) const {
  model::ForwardOptions forward_options;
  forward_options.isa = isa;
  const bool exact = options.precision == Precision::kExact || config.family->exact_matmuls;
  forward_options.precision = exact ? kernels::MatmulPrecision::kExact : kernels::MatmulPrecision::kFast;
  forward_options.batch = batch;
  const bool streamed_experts = streams_experts(options) && config.num_moe_layers() > 0 && config.num_experts > 0;
  forward_options.gate_ahead = options.prefetch && streamed_experts;
  return forward_options;
}

void Model::Impl::describe(std::size_t context) {
  const model::ModelConfig& c = config;
  info.architecture = c.family->name;
  info.vocab_size = c.vocab_size;
  info.hidden_size = c.hidden_size;
  info.num_layers = c.num_layers;
  info.num_heads = c.num_heads;
  info.num_kv_heads = c.num_kv_heads;
  info.num_experts = c.num_experts;
  info.experts_per_token = c.experts_per_token;
  info.num_moe_layers = c.num_moe_layers();
  info.max_position_embeddings = c.max_position_embeddings;
  info.max_context = context;
  info.config_json = c.config_json;
}

Status Model::Impl::run(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only) {
  if (count == 0) return Status::InvalidArgument("eval: no tokens given");
  if (tokens == nullptr) return Status::InvalidArgument("eval: tokens is null");
  if (logits == nullptr) return Status::InvalidArgument("eval: logits is null");
  const std::size_t vocab = config.vocab_size;
  for (std::size_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab) {
      return Status::InvalidArgument("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                     " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
  if (count > info.max_context - position) {
    return Status::InvalidArgument("context overflow: " + std::to_string(position) + " tokens held + " +
                                   std::to_string(count) + " new > max_context " + std::to_string(info.max_context) +
                                   " (reset(), or load with a larger max_context)");
  }
  const std::size_t batch = forward.batch();
  for (std::size_t first = 0; first < count; first += batch) {
    const std::size_t n = std::min(batch, count - first);
    const bool last = first + n == count;
    float* out = last_only ? (last ? logits : nullptr) : logits + first * vocab;
    const auto started = std::chrono::steady_clock::now();
    const Status stepped = forward.step(tokens + first, n, position, out, !last_only);
    forward_ns += static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
    ZIPMOE_RETURN_IF_ERROR(stepped);
    position += n;
  }
  return Status::Ok();
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::string& path, const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  throw_if_error(impl->load(path, options));
  return Model(std::move(impl));
}

void Model::logits(const std::int32_t* tokens, std::size_t count, float* logits) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->position = 0;
  throw_if_error(impl_->run(tokens, count, logits, false));
}

std::vector<float> Model::logits(const std::vector<std::int32_t>& tokens) {
  std::vector<float> out(tokens.size() * impl_->config.vocab_size);
  logits(tokens.data(), tokens.size(), out.data());
  return out;
}

void Model::eval(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  throw_if_error(impl_->run(tokens, count, logits, last_only));
}

std::vector<float> Model::eval(const std::vector<std::int32_t>& tokens, bool last_only) {
  std::vector<float> out((last_only ? std::min<std::size_t>(tokens.size(), 1) : tokens.size()) *
                         impl_->config.vocab_size);
  eval(tokens.data(), tokens.size(), out.data(), last_only);
  return out;
}

void Model::reset() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->position = 0;
}

std::size_t Model::position() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->position;
}

const ModelInfo& Model::info() const { return impl_->info; }

ExpertCacheStats Model::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ExpertCacheStats out;
  if (impl_->experts) impl_->experts->collect_stats(&out);
  out.forward_seconds = double(impl_->forward_ns) * 1e-9;
  return out;
}

void Model::reset_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->experts) impl_->experts->reset_stats();
  impl_->forward_ns = 0;
}

std::string Model::routing_profile_json() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->routing->to_json();
}

MemoryUse Model::memory() const {
  const MemoryLedger& l = impl_->ledger;
  MemoryUse use;
  use.dense_weights = l.bytes(MemoryCategory::kDenseWeights);
  use.experts = l.bytes(MemoryCategory::kExperts);
  use.kv_cache = l.bytes(MemoryCategory::kKvCache);
  use.scratch = l.bytes(MemoryCategory::kScratch);
  use.total = l.total();
  use.peak = l.peak();
  return use;
}

int Model::num_threads() const { return impl_->pool->num_threads(); }
Isa Model::isa() const { return impl_->isa; }
const std::string& Model::path() const { return impl_->path; }

}  // namespace zipmoe

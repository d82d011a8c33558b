// zipmoe::Model: load (config, dense weights, expert provider, KV cache,
// scratch) and the sequence API over the forward pass.
#include "zipmoe/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>

#include "cache/expert_cache.h"
#include "cache/routing_profile.h"
#include "common/cpu_features.h"
#include "common/memory_ledger.h"
#include "model/config.h"
#include "model/expert_provider.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe {

namespace {
constexpr std::size_t kDefaultContext = 4096;
constexpr std::size_t kDefaultBatch = 256;
constexpr std::size_t kMaxContext = std::size_t(1) << 24;

std::string human_bytes(std::uint64_t bytes) {
  char text[64];
  const double b = double(bytes);
  if (b >= 1e9) {
    std::snprintf(text, sizeof(text), "%.2f GB", b / 1e9);
  } else if (b >= 1e6) {
    std::snprintf(text, sizeof(text), "%.1f MB", b / 1e6);
  } else {
    std::snprintf(text, sizeof(text), "%.1f kB", b / 1e3);
  }
  return std::string(text) + " (" + std::to_string(bytes) + " bytes)";
}

}  // namespace

struct Model::Impl {
  // Declared first so that it outlives every buffer charged to it.
  MemoryLedger ledger;
  std::string path;
  Isa isa = Isa::kScalar;
  ModelInfo info;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ContainerReader> reader;
  model::ModelConfig config;
  model::DenseWeightStore dense;
  model::ModelWeights weights;
  std::unique_ptr<model::ExpertProvider> experts;
  std::unique_ptr<cache::RoutingProfile> routing;  // gathered online by the forward pass
  std::unique_ptr<cache::RoutingProfile> prior;    // ModelOptions::routing_profile
  model::KvCache cache;
  model::Forward forward;
  std::size_t position = 0;
  mutable std::mutex mutex;

  void run(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only) {
    if (count == 0) throw InvalidArgumentError("eval: no tokens given");
    if (tokens == nullptr) throw InvalidArgumentError("eval: tokens is null");
    if (logits == nullptr) throw InvalidArgumentError("eval: logits is null");
    const std::size_t vocab = config.vocab_size;
    for (std::size_t i = 0; i < count; ++i) {
      if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab) {
        throw InvalidArgumentError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                   " is outside [0, " + std::to_string(vocab) + ")");
      }
    }
    if (count > info.max_context - position) {
      throw InvalidArgumentError("context overflow: " + std::to_string(position) + " tokens held + " +
                                 std::to_string(count) + " new > max_context " + std::to_string(info.max_context) +
                                 " (reset(), or load with a larger max_context)");
    }
    const std::size_t batch = forward.batch();
    for (std::size_t first = 0; first < count; first += batch) {
      const std::size_t n = std::min(batch, count - first);
      const bool last = first + n == count;
      float* out = last_only ? (last ? logits : nullptr) : logits + first * vocab;
      forward.step(tokens + first, n, position, out, !last_only);
      position += n;
    }
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::string& path, const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.path = path;
  if (options.isa) {
    throw_if_error(check_isa(*options.isa));
    m.isa = *options.isa;
  } else {
    m.isa = default_isa();
  }
  if (!is_float_dtype(options.kv_cache_dtype)) {
    throw InvalidArgumentError("kv_cache_dtype must be bf16, f16 or f32");
  }
  if (options.max_context > kMaxContext) {
    throw InvalidArgumentError("max_context " + std::to_string(options.max_context) + " is larger than " +
                               std::to_string(kMaxContext));
  }
  if (options.allowed_tiers & ~kAllExpertTiers) throw InvalidArgumentError("allowed_tiers has unknown bits");
  if (options.io_threads < 0 || options.io_threads > 64) throw InvalidArgumentError("io_threads must be in [0, 64]");
  if (options.cache_policy != CachePolicy::kAffinity && options.cache_policy != CachePolicy::kLru &&
      options.cache_policy != CachePolicy::kLfu) {
    throw InvalidArgumentError("unknown cache policy");
  }
  if (!(options.storage_bandwidth >= 0) || !std::isfinite(options.storage_bandwidth) ||
      !(options.decode_throughput >= 0) || !std::isfinite(options.decode_throughput)) {
    throw InvalidArgumentError("storage_bandwidth and decode_throughput must be finite and >= 0");
  }
  const bool streaming = options.memory_budget > 0;
  // Streaming in mmap mode maps the file in the cache (pages dropped after each
  // read); the dense weights are read once at load, through pread.
  const IoMode load_mode = streaming && options.io_mode == IoMode::kMmap ? IoMode::kPread : options.io_mode;
  m.reader = std::make_unique<ContainerReader>(ContainerReader::open(path, load_mode));
  throw_if_error(model::parse_model_config(m.reader->metadata(), &m.config).with_context(path));
  for (const TensorInfo& t : m.reader->tensors()) {
    if (!is_float_dtype(t.dtype)) {
      throw FormatError(path + ": tensor '" + t.name + "' holds raw " + dtype_name(t.dtype) +
                        " bytes, not weights the engine can compute with");
    }
  }
  const model::ModelConfig& c = m.config;
  std::vector<std::uint32_t> moe_layers;
  for (std::uint32_t layer = 0; layer < c.num_layers; ++layer) {
    if (c.is_moe_layer(layer)) moe_layers.push_back(layer);
  }
  m.routing = std::make_unique<cache::RoutingProfile>(c.family->name, c.num_layers, moe_layers, c.num_experts,
                                                      c.experts_per_token);
  if (!options.routing_profile.empty()) {
    m.prior = std::make_unique<cache::RoutingProfile>();
    throw_if_error(cache::load_routing_profile(options.routing_profile, m.prior.get()));
    throw_if_error(m.prior->check_compatible(c.num_layers, moe_layers, c.num_experts)
                       .with_context(options.routing_profile));
  }

  const std::size_t context =
      options.max_context ? options.max_context : std::min(c.max_position_embeddings, kDefaultContext);
  const std::size_t batch = std::min(options.batch ? options.batch : kDefaultBatch, context);
  m.pool = std::make_unique<ThreadPool>(options.threads);

  throw_if_error(m.dense.load(*m.reader, c, m.pool.get(), &m.ledger, m.isa, &m.weights));
  cache::ExpertCache* expert_cache = nullptr;
  if (c.num_moe_layers() > 0 && c.num_experts > 0) {
    if (streaming) {
      std::unique_ptr<cache::ExpertCache> cache;
      throw_if_error(cache::ExpertCache::create(m.reader.get(), c, m.pool.get(), &m.ledger, m.isa, &cache));
      expert_cache = cache.get();
      m.experts = std::move(cache);
    } else {
      std::unique_ptr<model::ResidentExpertProvider> resident;
      throw_if_error(
          model::ResidentExpertProvider::create(*m.reader, c, m.pool.get(), &m.ledger, m.isa, &resident));
      m.experts = std::move(resident);
    }
  }
  throw_if_error(m.cache.allocate(c, context, batch, options.kv_cache_dtype, &m.ledger));
  model::ForwardOptions forward_options;
  forward_options.isa = m.isa;
  const bool exact = options.precision == Precision::kExact || c.family->exact_matmuls;
  forward_options.precision = exact ? kernels::MatmulPrecision::kExact : kernels::MatmulPrecision::kFast;
  forward_options.batch = batch;
  forward_options.gate_ahead = streaming && options.prefetch && expert_cache != nullptr;
  throw_if_error(
      m.forward.init(c, m.weights, m.experts.get(), &m.cache, m.pool.get(), &m.ledger, forward_options));
  m.forward.set_routing_profile(m.routing.get());

  if (streaming) {
    // Everything but the experts is allocated now: what is left of the budget
    // goes to the expert cache, which needs at least its minimum.
    const std::uint64_t held = m.ledger.total();
    const std::uint64_t expert_minimum = expert_cache ? expert_cache->minimum_bytes() : 0;
    const std::uint64_t minimum = held + expert_minimum;
    if (options.memory_budget < minimum) {
      std::string what = "dense weights " + human_bytes(m.ledger.bytes(MemoryCategory::kDenseWeights)) +
                         ", KV cache " + human_bytes(m.ledger.bytes(MemoryCategory::kKvCache)) + " for " +
                         std::to_string(context) + " positions, scratch " +
                         human_bytes(m.ledger.bytes(MemoryCategory::kScratch)) + " for steps of " +
                         std::to_string(batch) + " tokens";
      if (expert_cache) {
        what += ", and the expert cache's working set " + human_bytes(expert_minimum) + " (" +
                std::to_string(c.experts_per_token) + " decoded experts and one fetch buffer)";
      }
      throw BudgetError("memory_budget of " + human_bytes(options.memory_budget) + " is too small for " + path +
                        ": the minimum is " + human_bytes(minimum) + ": " + what +
                        " (a smaller max_context or batch lowers it)");
    }
    m.ledger.set_limit(options.memory_budget);
    if (expert_cache) {
      cache::CacheOptions cache_options;
      cache_options.budget = options.memory_budget - held;
      cache_options.policy = options.cache_policy;
      cache_options.prefetch = options.prefetch;
      cache_options.allowed_tiers = options.allowed_tiers;
      cache_options.prior = m.prior.get();
      cache_options.io_mode = options.io_mode;
      cache_options.storage_bandwidth = options.storage_bandwidth;
      cache_options.decode_throughput = options.decode_throughput;
      cache_options.reorder_fetches = options.reorder_fetches;
      cache_options.io_threads = options.io_threads > 0 ? options.io_threads : 2;
      throw_if_error(expert_cache->start(cache_options));
    }
  }

  ModelInfo& info = m.info;
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
  return Model(std::move(impl));
}

void Model::logits(const std::int32_t* tokens, std::size_t count, float* logits) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->position = 0;
  impl_->run(tokens, count, logits, false);
}

std::vector<float> Model::logits(const std::vector<std::int32_t>& tokens) {
  std::vector<float> out(tokens.size() * impl_->config.vocab_size);
  logits(tokens.data(), tokens.size(), out.data());
  return out;
}

void Model::eval(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->run(tokens, count, logits, last_only);
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
  return out;
}

void Model::reset_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->experts) impl_->experts->reset_stats();
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

// zipmoe::Model: load (config, dense weights, expert provider, KV cache,
// scratch) and the sequence API over the forward pass.
#include "zipmoe/model.h"

#include <algorithm>
#include <mutex>
#include <string>

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
  if (!is_valid_dtype(static_cast<std::uint8_t>(options.kv_cache_dtype))) {
    throw InvalidArgumentError("kv_cache_dtype must be bf16, f16 or f32");
  }
  if (options.max_context > kMaxContext) {
    throw InvalidArgumentError("max_context " + std::to_string(options.max_context) + " is larger than " +
                               std::to_string(kMaxContext));
  }
  m.reader = std::make_unique<ContainerReader>(ContainerReader::open(path, options.io_mode));
  throw_if_error(model::parse_model_config(m.reader->metadata(), &m.config).with_context(path));
  const model::ModelConfig& c = m.config;

  const std::size_t context =
      options.max_context ? options.max_context : std::min(c.max_position_embeddings, kDefaultContext);
  const std::size_t batch = std::min(options.batch ? options.batch : kDefaultBatch, context);
  m.pool = std::make_unique<ThreadPool>(options.threads);

  throw_if_error(m.dense.load(*m.reader, c, m.pool.get(), &m.ledger, m.isa, &m.weights));
  if (c.num_moe_layers() > 0 && c.num_experts > 0) {
    std::unique_ptr<model::ResidentExpertProvider> resident;
    throw_if_error(model::ResidentExpertProvider::create(*m.reader, c, m.pool.get(), &m.ledger, m.isa, &resident));
    m.experts = std::move(resident);
  }
  throw_if_error(m.cache.allocate(c, context, batch, options.kv_cache_dtype, &m.ledger));
  model::ForwardOptions forward_options;
  forward_options.isa = m.isa;
  const bool exact = options.precision == Precision::kExact || c.family->exact_matmuls;
  forward_options.precision = exact ? kernels::MatmulPrecision::kExact : kernels::MatmulPrecision::kFast;
  forward_options.batch = batch;
  throw_if_error(
      m.forward.init(c, m.weights, m.experts.get(), &m.cache, m.pool.get(), &m.ledger, forward_options));

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

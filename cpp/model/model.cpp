// zipmoe::Model: load (config, dense weights, expert provider, scratch, the
// default context), the budget shared with contexts, the tokenizer, and the
// sequence API of the default context.
#include "zipmoe/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>

#include "cache/resident_experts.h"
#include "common/cpu_features.h"
#include "common/system_memory.h"
#include "model/context_impl.h"
#include "model/load_plan.h"
#include "model/model_impl.h"

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

Status Model::Impl::load(const std::string& model_path, const ModelOptions& model_options) {
  ZIPMOE_RETURN_IF_ERROR(check_options(model_options));
  options = model_options;
  path = model_path;
  if (options.isa) {
    isa = *options.isa;
  } else {
    ZIPMOE_RETURN_IF_ERROR(default_isa(&isa));
  }
  ZIPMOE_RETURN_IF_ERROR(open());
  ZIPMOE_RETURN_IF_ERROR(load_routing_profiles());
  const std::size_t context =
      options.max_context ? options.max_context : std::min(config.max_position_embeddings, kDefaultContext);
  batch = std::min(options.batch ? options.batch : kDefaultBatch, context);
  ZIPMOE_RETURN_IF_ERROR(plan(context));
  pool = std::make_unique<ThreadPool>(options.threads);
  ZIPMOE_RETURN_IF_ERROR(load_weights());
  describe(context);
  return init_forward(context);
}

// The container and its config.
Status Model::Impl::open() {
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
Status Model::Impl::load_routing_profiles() {
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
Status Model::Impl::plan(std::size_t context) {
  ZIPMOE_RETURN_IF_ERROR(model::bind_tensors(*reader, config));
  model::MemoryPlan memory;
  ZIPMOE_RETURN_IF_ERROR(model::plan_memory(*reader, config, context, options.kv_cache_dtype,
                                            forward_options(context), streams_experts(), &memory));
  memory.scratch += std::uint64_t(config.vocab_size) * sizeof(float);  // the default context's logits row
  return model::check_memory(memory, options.memory_budget, available_memory(), path);
}

// Dense weights, decoded; routed experts decoded too, or a cache to stream them.
Status Model::Impl::load_weights() {
  ZIPMOE_RETURN_IF_ERROR(dense.load(*reader, config, pool.get(), &ledger, isa, &weights));
  if (config.num_moe_layers() == 0 || config.num_experts == 0) return Status::Ok();
  cache::ExpertShapes shapes = model::expert_shapes(config);
  // The embedding is read one row per token, unless the output matrix is the same one.
  const kernels::WeightMatrix& embedding = weights.embedding;
  const std::uint64_t table = std::uint64_t(embedding.rows) * embedding.cols * dtype_size(embedding.dtype);
  shapes.dense_bytes_per_token = dense.bytes() - (weights.output.data == embedding.data ? 0 : std::min(table, dense.bytes()));
  if (streams_experts()) {
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

// The forward pass's buffers (shared by every context: steps take turns).
Status Model::Impl::init_forward(std::size_t context) {
  ZIPMOE_RETURN_IF_ERROR(forward.init(config, weights, experts.get(), pool.get(), &ledger, forward_options(context)));
  forward.set_routing_profile(routing.get());
  return Status::Ok();
}

// Everything but the experts is allocated now (the default context included):
// what is left of the budget goes to the expert cache, which needs at least its
// minimum (plan() checked that from the container; checked again from the
// ledger, which must agree).
Status Model::Impl::start_streaming(std::size_t context) {
  const std::uint64_t held = ledger.total();
  ZIPMOE_RETURN_IF_ERROR(
      model::check_memory(held_memory(context), options.memory_budget, AvailableMemory(), path));
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
model::MemoryPlan Model::Impl::held_memory(std::size_t context) const {
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

model::ForwardOptions Model::Impl::forward_options(std::size_t context) const {
  model::ForwardOptions forward_options;
  forward_options.isa = isa;
  const bool exact = options.precision == Precision::kExact || config.family->exact_matmuls;
  forward_options.precision = exact ? kernels::MatmulPrecision::kExact : kernels::MatmulPrecision::kFast;
  forward_options.batch = batch;
  forward_options.max_positions = context;
  const bool streamed_experts = streams_experts() && config.num_moe_layers() > 0 && config.num_experts > 0;
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

// ---------------------------------------------------------------------------
// Contexts and the budget

Status Model::Impl::context_positions(const ContextOptions& context, std::size_t* positions) const {
  if (context.max_sequences < 1 || context.max_sequences > kMaxSequences) {
    return Status::InvalidArgument("max_sequences must be in [1, " + std::to_string(kMaxSequences) + "], not " +
                                   std::to_string(context.max_sequences));
  }
  if (context.max_context > info.max_context) {
    return Status::InvalidArgument("max_context " + std::to_string(context.max_context) + " is larger than the " +
                                   std::to_string(info.max_context) + " positions " + path +
                                   " was loaded for (load with a larger max_context)");
  }
  *positions = context.max_context ? context.max_context : info.max_context;
  return Status::Ok();
}

std::uint64_t Model::Impl::context_bytes(std::size_t positions, std::size_t sequences) const {
  const std::uint64_t state = model::SequenceState::bytes_needed(config, positions, batch, options.kv_cache_dtype);
  return sequences * (state + std::uint64_t(config.vocab_size) * sizeof(float));
}

std::uint64_t Model::Impl::bytes_outside_cache() const {
  return ledger.total() - ledger.bytes(MemoryCategory::kExperts);
}

Status Model::Impl::make_room(std::uint64_t bytes, const std::string& what) {
  const std::uint64_t budget = options.memory_budget;
  if (budget == 0) return Status::Ok();
  const std::lock_guard<std::mutex> lock(step_mutex);
  const std::uint64_t outside = bytes_outside_cache();
  const std::uint64_t floor = expert_cache ? expert_cache->working_set_bytes() : 0;
  if (outside + floor > budget || bytes > budget - outside - floor) {
    std::string held = "dense weights " + model::human_bytes(ledger.bytes(MemoryCategory::kDenseWeights)) +
                       ", KV caches of the contexts " + model::human_bytes(ledger.bytes(MemoryCategory::kKvCache)) +
                       ", scratch " + model::human_bytes(ledger.bytes(MemoryCategory::kScratch));
    if (expert_cache) held += ", the expert cache's working set " + model::human_bytes(floor);
    const std::uint64_t left = outside + floor > budget ? 0 : budget - outside - floor;
    return Status::Budget(path + ": " + what + " needs " + model::human_bytes(bytes) + ", but the memory_budget of " +
                          model::human_bytes(budget) + " has " + model::human_bytes(left) + " left beyond " + held +
                          " (a smaller max_context or max_sequences, fewer contexts, or a larger memory_budget)");
  }
  if (expert_cache) return expert_cache->set_budget(budget - outside - bytes);
  return Status::Ok();
}

void Model::Impl::room_freed() {
  const std::lock_guard<std::mutex> contexts(contexts_mutex);
  give_back_locked();
}

void Model::Impl::give_back_locked() {
  if (options.memory_budget == 0 || expert_cache == nullptr) return;
  const std::lock_guard<std::mutex> lock(step_mutex);
  const std::uint64_t outside = bytes_outside_cache();
  // Only ever more than the cache had (the memory was just freed): cannot fail.
  if (outside < options.memory_budget) (void)expert_cache->set_budget(options.memory_budget - outside);
}

Status Model::Impl::step(const model::StepSegment* segments, std::size_t count, float* logits) {
  const std::lock_guard<std::mutex> lock(step_mutex);
  const auto started = std::chrono::steady_clock::now();
  const Status stepped = forward.step(segments, count, logits);
  forward_ns += static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
  return stepped;
}

// ---------------------------------------------------------------------------
// Text

Status Model::Impl::text_metadata(const json::Value** out) {
  const std::lock_guard<std::mutex> lock(text_mutex_);
  if (!text_metadata_parsed_) {
    json::ParseOptions parse;
    parse.keep_top_level = {"generation_config", "tokenizer"};
    text_metadata_status_ = json::parse(reader->metadata(), &text_metadata_, parse).with_context(path + ": metadata");
    text_metadata_parsed_ = true;
  }
  *out = &text_metadata_;
  return text_metadata_status_;
}

Status Model::Impl::tokenizer(std::shared_ptr<const text::Tokenizer>* out) {
  const json::Value* metadata = nullptr;
  ZIPMOE_RETURN_IF_ERROR(text_metadata(&metadata));
  const std::lock_guard<std::mutex> lock(text_mutex_);
  if (!tokenizer_built_) {
    const json::Value* record = metadata->find("tokenizer");
    const bool present = record && record->is_object() &&
                         ((record->find("tokenizer_json") && !record->find("tokenizer_json")->is_null()) ||
                          (record->find("gguf") && !record->find("gguf")->is_null()));
    if (!present) {
      tokenizer_status_ = Status::Unsupported(path + ": the container carries no tokenizer (convert the model "
                                              "from a folder with tokenizer.json, or from a GGUF file)");
    } else {
      tokenizer_status_ = text::Tokenizer::from_container_metadata(*record, path, &tokenizer_);
    }
    tokenizer_built_ = true;
  }
  *out = tokenizer_;
  return tokenizer_status_;
}

namespace {

// Adds the ids of an eos_token_id value (an int or a list of ints) in [0, vocab).
void add_eos_ids(const json::Value* value, std::size_t vocab, std::vector<std::int32_t>* out) {
  if (value == nullptr) return;
  auto add = [&](const json::Value& v) {
    if (v.is_integer() && v.as_int() >= 0 && static_cast<std::uint64_t>(v.as_int()) < vocab) {
      out->push_back(static_cast<std::int32_t>(v.as_int()));
    }
  };
  if (value->is_array()) {
    for (const json::Value& v : value->items()) add(v);
  } else {
    add(*value);
  }
}

}  // namespace

Status Model::Impl::eos_token_ids(std::vector<std::int32_t>* out) {
  out->clear();
  const json::Value* metadata = nullptr;
  ZIPMOE_RETURN_IF_ERROR(text_metadata(&metadata));
  const std::size_t vocab = config.vocab_size;
  const json::Value* generation = metadata->find("generation_config");
  if (generation && generation->is_object()) add_eos_ids(generation->find("eos_token_id"), vocab, out);
  json::Value hf_config;
  if (json::parse(config.config_json, &hf_config).ok()) add_eos_ids(hf_config.find("eos_token_id"), vocab, out);
  std::shared_ptr<const text::Tokenizer> t;
  if (tokenizer(&t).ok() && t->eos_id() >= 0 && static_cast<std::size_t>(t->eos_id()) < vocab) {
    out->push_back(t->eos_id());
  }
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// The public class

Model::Model(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
// The default context first: its memory goes back to a model that still exists.
Model::~Model() { default_context_.reset(); }
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Model Model::load(const std::string& path, const ModelOptions& options) {
  auto impl = std::make_shared<Impl>();
  throw_if_error(impl->load(path, options));
  ContextOptions context;
  context.max_context = impl->info.max_context;
  std::unique_ptr<Context::Impl> default_context;
  throw_if_error(Context::Impl::create(impl, context, true, &default_context));
  if (options.memory_budget > 0) {
    throw_if_error(impl->start_streaming(impl->info.max_context));
  }
  Model model(impl);
  model.default_context_.reset(new Context(std::move(default_context)));
  return model;
}

Context Model::new_context(const ContextOptions& options) {
  std::unique_ptr<Context::Impl> context;
  throw_if_error(Context::Impl::create(impl_, options, false, &context));
  return Context(std::move(context));
}

Context& Model::default_context() { return *default_context_; }

void Model::logits(const std::int32_t* tokens, std::size_t count, float* logits) {
  default_context_->logits(tokens, count, logits);
}

std::vector<float> Model::logits(const std::vector<std::int32_t>& tokens) { return default_context_->logits(tokens); }

void Model::eval(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only) {
  default_context_->eval(tokens, count, logits, last_only);
}

std::vector<float> Model::eval(const std::vector<std::int32_t>& tokens, bool last_only) {
  return default_context_->eval(tokens, last_only);
}

void Model::reset() { default_context_->reset(); }

std::size_t Model::position() const { return default_context_->position(); }

std::vector<std::int32_t> Model::tokenize(const std::string& text, bool add_special, bool parse_special) const {
  std::shared_ptr<const text::Tokenizer> t;
  throw_if_error(impl_->tokenizer(&t));
  text::EncodeOptions encode;
  encode.add_special_tokens = add_special;
  encode.parse_special = parse_special;
  std::vector<std::int32_t> ids;
  t->encode(text, encode, &ids);
  return ids;
}

std::string Model::detokenize(const std::int32_t* ids, std::size_t count, bool skip_special) const {
  std::shared_ptr<const text::Tokenizer> t;
  throw_if_error(impl_->tokenizer(&t));
  if (count && !ids) throw InvalidArgumentError("detokenize: ids is null");
  for (std::size_t i = 0; i < count; ++i) {
    if (ids[i] < 0 || ids[i] >= t->vocab_size()) {
      throw InvalidArgumentError("token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                                 " is outside the vocabulary [0, " + std::to_string(t->vocab_size()) + ")");
    }
  }
  return t->decode(ids, count, skip_special);
}

bool Model::has_tokenizer() const {
  std::shared_ptr<const text::Tokenizer> t;
  return impl_->tokenizer(&t).ok();
}

std::vector<std::int32_t> Model::eos_token_ids() const {
  std::vector<std::int32_t> ids;
  throw_if_error(impl_->eos_token_ids(&ids));
  return ids;
}

const std::string& Model::metadata_json() const { return impl_->reader->metadata(); }

const ModelInfo& Model::info() const { return impl_->info; }

ExpertCacheStats Model::stats() const {
  std::lock_guard<std::mutex> lock(impl_->step_mutex);
  ExpertCacheStats out;
  if (impl_->experts) impl_->experts->collect_stats(&out);
  out.forward_seconds = double(impl_->forward_ns) * 1e-9;
  return out;
}

void Model::reset_stats() {
  std::lock_guard<std::mutex> lock(impl_->step_mutex);
  if (impl_->experts) impl_->experts->reset_stats();
  impl_->forward_ns = 0;
}

std::string Model::routing_profile_json() const {
  std::lock_guard<std::mutex> lock(impl_->step_mutex);
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

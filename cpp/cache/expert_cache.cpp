#include "cache/expert_cache.h"

#include "codec/planes.h"
#include "common/checksum.h"
#include "kernels/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace zipmoe::cache {

namespace {

using Clock = std::chrono::steady_clock;
using sched::FetchId;
using sched::IoPriority;
using sched::kExponentPlane;
using sched::kNoFetch;
using sched::kSmPlane;

// An expert serving at most this many tokens of a step is multiplied coded
// (decoded tile by tile into its products) when it rests COMPRESSED; with more,
// its products are compute-bound and the decoded copy's round trip through
// memory costs little.
constexpr std::size_t kCodedMaxRows = 8;

// A re-plan replaces the plan in force only when it expects to save at least
// this share of a token's time (re-planning drops what states hold).
constexpr double kReplanGain = 0.03;

// The planner warns when its plan is expected to be this much slower than
// the same budget over an uncompressed container (the estimates' noise).
constexpr double kSlowerThanRaw = 1.05;

// Defaults when a figure is neither given nor measurable (tiny models).
constexpr double kDefaultStorageBandwidth = 1.5e9;
constexpr double kDefaultDecodeThroughput = 3e9;
// A measurement needs at least this much data to mean anything.
constexpr std::uint64_t kMeasureMinimumBytes = std::uint64_t(4) << 20;
constexpr std::uint64_t kMeasureMaximumBytes = std::uint64_t(32) << 20;
constexpr std::uint64_t kMeasureMinimumDecodeNs = 20000000;
constexpr int kMeasureDecodeRounds = 8;

// Storage figures from reads of small (exponent) and large (sign/mantissa)
// chunks: t = latency + bytes / bandwidth fitted through the two mean reads,
// or, when the sizes are too alike or the fit is implausible, the mean rate
// with the latency left as it was.
void fit_storage(const sched::PipelineMeasurements& m, CostModel* model) {
  const std::uint64_t* bytes = m.read_bytes;
  const std::uint64_t* nanoseconds = m.read_ns;
  const std::uint64_t* reads = m.reads;
  if (bytes[0] + bytes[1] < kMeasureMinimumBytes || nanoseconds[0] + nanoseconds[1] == 0) return;
  const double mean_rate = double(bytes[0] + bytes[1]) / (double(nanoseconds[0] + nanoseconds[1]) * 1e-9);
  if (reads[0] > 0 && reads[1] > 0) {
    const double small_bytes = double(bytes[0]) / double(reads[0]), large_bytes = double(bytes[1]) / double(reads[1]);
    const double small_seconds = double(nanoseconds[0]) * 1e-9 / double(reads[0]);
    const double large_seconds = double(nanoseconds[1]) * 1e-9 / double(reads[1]);
    if (large_bytes > 1.5 * small_bytes && large_seconds > small_seconds) {
      const double bandwidth = (large_bytes - small_bytes) / (large_seconds - small_seconds);
      const double latency = small_seconds - small_bytes / bandwidth;
      if (bandwidth > 1e7 && bandwidth < 1e11 && latency >= 0 && latency < 2e-3) {
        model->storage_bytes_per_second = bandwidth;
        model->read_latency_seconds = latency;
        return;
      }
    }
  }
  model->storage_bytes_per_second = mean_rate;
  model->read_latency_seconds = 0;
}

void add_counters(const sched::FetchCounters& c, ExpertLayerStats* s) {
  s->bytes_read += c.bytes_read;
  s->prefetch_bytes_read += c.prefetch_bytes_read;
  s->unused_bytes_read += c.unused_bytes_read;
  s->reread_bytes += c.reread_bytes;
  s->chunks_read += c.chunks_read;
  s->read_ns += c.read_ns;
  s->decoded_bytes += c.decoded_bytes;
  s->unused_decoded_bytes += c.unused_decoded_bytes;
  s->decode_ns += c.decode_ns;
}

void add_layer(const ExpertLayerStats& s, ExpertLayerStats* total) {
  total->requests += s.requests;
  for (int t = 0; t < kNumExpertTiers; ++t) total->served_from[t] += s.served_from[t];
  total->prefetch_hits += s.prefetch_hits;
  total->bytes_read += s.bytes_read;
  total->prefetch_bytes_read += s.prefetch_bytes_read;
  total->unused_bytes_read += s.unused_bytes_read;
  total->reread_bytes += s.reread_bytes;
  total->chunks_read += s.chunks_read;
  total->read_ns += s.read_ns;
  total->decoded_bytes += s.decoded_bytes;
  total->unused_decoded_bytes += s.unused_decoded_bytes;
  total->fused_decoded_bytes += s.fused_decoded_bytes;
  total->decode_ns += s.decode_ns;
  total->stall_ns += s.stall_ns;
}

// ZIPMOE_TIMELINE=N keeps the first N intervals of the pipeline's work for
// stats()["timeline"] (a diagnostic: docs/CACHE.md, "Where the time goes").
std::size_t timeline_events_from_environment() {
  const char* value = std::getenv("ZIPMOE_TIMELINE");
  if (value == nullptr || *value == 0) return 0;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(value, &end, 10);
  return end && *end == 0 ? static_cast<std::size_t>(std::min<unsigned long long>(n, 1u << 22)) : 0;
}

const char* timeline_kind_name(sched::TimelineKind kind) {
  switch (kind) {
    case sched::TimelineKind::kRead: return "read";
    case sched::TimelineKind::kDecode: return "decode";
    case sched::TimelineKind::kStall: return "stall";
    case sched::TimelineKind::kCompute: return "compute";
    case sched::TimelineKind::kOther: return "other";
    case sched::TimelineKind::kFused: return "fused";
  }
  return "other";
}

}  // namespace

// ---------------------------------------------------------------------------
// Set-up

Status ExpertCache::create(const format::ContainerFile* reader, const ExpertShapes& shapes, ThreadPool* pool,
                           MemoryLedger* ledger, Isa isa, std::unique_ptr<ExpertCache>* out) {
  std::unique_ptr<ExpertCache> cache(new ExpertCache());
  cache->reader_ = reader;
  cache->pool_ = pool;
  cache->isa_ = isa;
  cache->ledger_ = ledger;
  ZIPMOE_RETURN_IF_ERROR(build_expert_table(*reader, shapes, &cache->table_));
  cache->pipeline_ = std::make_unique<sched::FetchPipeline>(reader, pool, ledger, isa);
  const ExpertTable& t = cache->table_;
  cache->experts_.resize(t.experts.size());
  cache->costs_.resize(t.experts.size());
  for (std::size_t id = 0; id < t.experts.size(); ++id) {
    const ExpertLayout& x = t.experts[id];
    ExpertCosts& c = cache->costs_[id];
    const std::uint64_t exponent = MemoryBlock::charged_size(x.exponent_block_bytes);
    const std::uint64_t sm = MemoryBlock::charged_size(x.sm_block_bytes);
    c.bytes[tier_index(ExpertTier::kFull)] = MemoryBlock::charged_size(t.max_decoded_block);
    c.bytes[tier_index(ExpertTier::kCompressed)] = exponent + sm;
    c.bytes[tier_index(ExpertTier::kSm)] = sm;
    c.bytes[tier_index(ExpertTier::kE)] = exponent;
    c.reads[tier_index(ExpertTier::kSm)] = kProjections;
    c.reads[tier_index(ExpertTier::kE)] = kProjections;
    c.reads[tier_index(ExpertTier::kAbsent)] = 2 * kProjections;
    c.read_bytes[tier_index(ExpertTier::kSm)] = x.stored_exponent_bytes;
    c.read_bytes[tier_index(ExpertTier::kE)] = x.stored_sm_bytes;
    c.read_bytes[tier_index(ExpertTier::kAbsent)] = x.stored_exponent_bytes + x.stored_sm_bytes;
    c.decoded_bytes = x.decoded_bytes;
    c.group = x.moe_index;
  }
  cache->dense_bytes_per_token_ = shapes.dense_bytes_per_token;
  // The same experts stored uncompressed (a raw container): held FULL, or read
  // whole and merged; what the planner compares its plan with.
  cache->raw_costs_.resize(t.experts.size());
  for (std::size_t id = 0; id < t.experts.size(); ++id) {
    ExpertCosts& r = cache->raw_costs_[id];
    r.bytes[tier_index(ExpertTier::kFull)] = cache->costs_[id].bytes[tier_index(ExpertTier::kFull)];
    r.reads[tier_index(ExpertTier::kAbsent)] = 2 * kProjections;
    r.read_bytes[tier_index(ExpertTier::kAbsent)] = t.experts[id].decoded_bytes;
    r.decoded_bytes = t.experts[id].decoded_bytes;
    r.group = cache->costs_[id].group;
  }
  if (!t.experts.empty()) {
    const ProjectionLayout& p = t.experts[0].projection(0);
    cache->raw_container_ = reader->chunks()[p.tensor->exponent_chunk].codec == Codec::kRaw;
  }
  cache->layer_stats_.resize(t.moe_layers.size());
  for (std::size_t m = 0; m < t.moe_layers.size(); ++m) cache->layer_stats_[m].layer = t.moe_layers[m];
  *out = std::move(cache);
  return Status::Ok();
}

ExpertCache::~ExpertCache() {
  // The reader threads may be recording a read: stop them before the experts they name go.
  pipeline_.reset();
}

std::uint64_t minimum_cache_bytes(const ExpertTable& table) {
  const std::uint64_t k = std::max<std::size_t>(table.experts_per_token, 1);
  return k * MemoryBlock::charged_size(table.max_decoded_block) + MemoryBlock::charged_size(table.max_staging);
}

std::uint64_t ExpertCache::minimum_bytes() const { return minimum_cache_bytes(table_); }

// Working set: decode buffers and staging buffers, at most a quarter of the
// budget (the rest holds experts), never below the minimum. Two staging buffers
// beyond the minimum come first, even out of a small budget's experts: with one
// the drive idles while the cores decode the expert it just read (a fetch holds
// its buffer until decoded), with three both reader threads keep reading
// meanwhile. The few experts those bytes could hold save little: on the 6-layer
// Qwen1.5-MoE benchmark at a 25% budget (docs/BENCHMARKS.md) the cache's share
// is ~100 MB, and 2 more staging buffers instead of 26 MB of cached experts (7%
// hits) decoded no slower (2.15 against 2.11 tokens/s, one run each, with the
// drive the bottleneck in both).
void ExpertCache::size_working_set(std::size_t* decode_buffers, std::size_t* staging_buffers) const {
  const std::size_t k = std::max<std::size_t>(table_.experts_per_token, 1);
  const std::uint64_t decoded_size = MemoryBlock::charged_size(table_.max_decoded_block);
  const std::uint64_t staging_size = MemoryBlock::charged_size(table_.max_staging);
  const std::uint64_t pipelined = std::min(options_.budget, minimum_bytes() + 2 * staging_size);
  const std::uint64_t allowance = std::max(options_.budget / 4, pipelined);
  std::size_t buffers = k, staging = 1;
  while (staging < k + 2 && buffers * decoded_size + (staging + 1) * staging_size <= allowance) ++staging;
  while (buffers < 2 * k && (buffers + 1) * decoded_size + staging * staging_size <= allowance) ++buffers;
  *decode_buffers = buffers;
  *staging_buffers = staging;
}

Status ExpertCache::start(const CacheOptions& options) {
  if (started_) return Status::InvalidArgument("expert cache started twice");
  options_ = options;
  const std::uint64_t minimum = minimum_bytes();
  if (options.budget < minimum) {
    return Status::Budget("expert cache budget of " + std::to_string(options.budget) + " bytes is below its minimum of " +
                          std::to_string(minimum) + " bytes");
  }
  sched::PipelineOptions pipeline;
  size_working_set(&pipeline.decode_buffers, &pipeline.staging_buffers);
  pipeline.decoded_block_bytes = table_.max_decoded_block;
  pipeline.staging_bytes = table_.max_staging;
  pipeline.io_mode = options.io_mode;
  pipeline.groups = table_.moe_layers.size();
  pipeline.items_per_request = std::max<std::size_t>(table_.experts_per_token, 1);
  pipeline.items = table_.experts.size();
  pipeline.timeline_events = timeline_events_from_environment();
  ZIPMOE_RETURN_IF_ERROR(pipeline_->allocate(pipeline));
  const std::uint64_t working_set = pipeline_->working_set_bytes();
  tier_budget_ = options.budget - working_set;
  ZIPMOE_RETURN_IF_ERROR(size_coded_products());
  // The coded products' scratch, once allocated, is held as the pipeline's buffers are.
  working_set_ = working_set + products_.charged_bytes();

  cost_.read_latency_seconds = options.read_latency;
  ZIPMOE_RETURN_IF_ERROR(measure(&cost_));
  if (options.prior) {
    ZIPMOE_RETURN_IF_ERROR(
        options.prior->check_compatible(table_.moe_index_of_layer.size(), table_.moe_layers, table_.num_experts));
  }
  set_prior(options);

  // Without a profile the first plan assumes uniform routing; plans follow as the
  // routing seen online outweighs that guess (steps 8, 16, 32, ..., then every 512).
  next_replan_step_ = 8;
  const TierPlan plan = make_plan();
  for (int t = 0; t < kNumExpertTiers; ++t) capacity_[t] = plan.capacity[t];
  planned_seconds_ = plan.seconds_per_token;
  plan_in_force_ = plan.tiers;
  report_plan(plan_in_force_);
  ZIPMOE_RETURN_IF_ERROR(fill_planned(plan));

  pipeline_->start(options.io_threads);
  timeline_origin_ = Clock::now();
  started_ = true;
  return Status::Ok();
}

// The machine's speeds: from the profile an earlier load stored for this
// machine and file (machine_profile.h), else measured now by short probes and
// stored. Figures given in the options replace them (both given: nothing is
// measured, and the compute estimate starts at 0, as the tests rely on).
Status ExpertCache::measure(CostModel* model) {
  const int threads = pool_ ? pool_->num_threads() : 1;
  model->storage_bytes_per_second = options_.storage_bandwidth;
  model->decode_bytes_per_second = options_.decode_throughput * threads;
  if (table_.experts.empty()) return Status::Ok();
  const bool given = options_.storage_bandwidth > 0 && options_.decode_throughput > 0;
  MachineSpeeds speeds;
  if (!given) {
    const std::string key = machine_profile_key(*reader_, isa_, threads, options_.io_mode);
    const bool cached = load_machine_profile(key, &speeds);
    if (!cached) {
      ZIPMOE_RETURN_IF_ERROR(probe_machine(&speeds));
      save_machine_profile(key, speeds);
    }
    planner_report_.source = cached ? "cached" : "measured";
  } else {
    planner_report_.source = "given";
    speeds.storage_bandwidth = options_.storage_bandwidth;
    speeds.read_latency = options_.read_latency;
    speeds.decode_throughput = model->decode_bytes_per_second;
  }
  if (model->storage_bytes_per_second <= 0) {
    model->storage_bytes_per_second = speeds.storage_bandwidth;
    model->read_latency_seconds = speeds.read_latency;
  }
  if (model->decode_bytes_per_second <= 0) model->decode_bytes_per_second = speeds.decode_throughput;
  // COMPRESSED experts are multiplied coded where the probe found that cheaper
  // than decoding them whole (with given figures, always: at the decode rate).
  use_coded_ = products_.allocated() && (given || speeds.coded_decode_throughput > speeds.decode_throughput);
  if (use_coded_) {
    model->coded_decode_bytes_per_second = given ? model->decode_bytes_per_second : speeds.coded_decode_throughput;
  }
  // The rest of a layer's CPU time, until the running model measures it: its
  // share of the dense weights and k decoded experts, multiplied at the probe's rate.
  if (speeds.matmul_throughput > 0 && !table_.moe_layers.empty()) {
    const double layers = double(table_.moe_layers.size());
    const double expert_bytes = double(table_.experts[0].decoded_bytes);
    model->other_cpu_seconds =
        (double(dense_bytes_per_token_) / layers + double(table_.experts_per_token) * expert_bytes) /
        speeds.matmul_throughput;
  }
  speeds_ = speeds;
  planner_report_.storage_bandwidth = model->storage_bytes_per_second;
  planner_report_.read_latency = model->read_latency_seconds;
  planner_report_.decode_throughput = model->decode_bytes_per_second;
  planner_report_.coded_decode_throughput = model->coded_decode_bytes_per_second;
  planner_report_.matmul_throughput = speeds.matmul_throughput;
  planner_report_.merge_throughput = speeds.merge_throughput;
  planner_report_.other_cpu_seconds = model->other_cpu_seconds;
  return Status::Ok();
}

// The probes (about 0.1 s): reads of chunks spread over the model, and one
// expert decoded, multiplied (single-token products, over the decoded weights
// and coded), and its planes merged as an uncompressed container's would be.
Status ExpertCache::probe_machine(MachineSpeeds* speeds) {
  const int threads = pool_ ? pool_->num_threads() : 1;
  // Small exponent chunks and large sign/mantissa chunks, timed apart, give the
  // bandwidth and the cost of one read (t = latency + bytes / bandwidth).
  std::vector<const sched::FetchLayout*> sample;
  const std::size_t n = table_.experts.size();
  const std::size_t stride = std::max<std::size_t>(1, n / 16);
  for (std::size_t id = 0; id < n; id += stride) sample.push_back(&table_.experts[id].fetch);
  sched::PipelineMeasurements reads;
  ZIPMOE_RETURN_IF_ERROR(pipeline_->probe_reads(sample, kMeasureMaximumBytes, &reads));
  CostModel storage;
  storage.storage_bytes_per_second = kDefaultStorageBandwidth;
  storage.read_latency_seconds = options_.read_latency;
  fit_storage(reads, &storage);
  speeds->storage_bandwidth = storage.storage_bytes_per_second;
  speeds->read_latency = storage.read_latency_seconds;

  const ExpertLayout& x = table_.experts[n / 2];
  sched::PipelineMeasurements decodes;
  ZIPMOE_RETURN_IF_ERROR(pipeline_->probe_decode(x.fetch, kMeasureMinimumBytes, kMeasureMinimumDecodeNs,
                                                 kMeasureDecodeRounds, &decodes));
  speeds->decode_throughput = decodes.decoded_bytes >= kMeasureMinimumBytes && decodes.decode_ns > 0
                                  ? double(decodes.decoded_bytes) / (double(decodes.decode_ns) * 1e-9)
                                  : kDefaultDecodeThroughput * threads;
  const double decode_seconds = double(x.decoded_bytes) / speeds->decode_throughput;
  ProbeProducts products;
  ZIPMOE_RETURN_IF_ERROR(probe_products(x, &products));
  speeds->matmul_throughput = double(x.decoded_bytes) / std::max(products.plain_seconds, 1e-9);
  if (products.coded_seconds > 0) {
    // Decoding's share of a coded product: what it takes beyond the plain one
    // (at least a quarter of a decode into memory, whatever the noise).
    const double extra = std::max(products.coded_seconds - products.plain_seconds, 0.25 * decode_seconds);
    speeds->coded_decode_throughput = double(x.decoded_bytes) / extra;
  }
  speeds->merge_throughput = probe_merge(x) * threads;
  return Status::Ok();
}

// Single-token products with the probe expert's three projections: over its
// decoded weights (load_time_buffer) and, when coded products are set up,
// coded from its staged chunks; mean seconds of each over a few rounds.
Status ExpertCache::probe_products(const ExpertLayout& x, ProbeProducts* out) {
  const ExpertWeights w = expert_weights(x, pipeline_->load_time_buffer());
  const std::size_t H = w.gate.cols, I = w.gate.rows;
  std::vector<float> input(std::max(H, I), 0.5f), gate(I), up(I), down(H);
  for (std::size_t i = 0; i < input.size(); ++i) input[i] = float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  kernels::LinearJob jobs[kProjections];
  const kernels::WeightMatrix* matrices[kProjections] = {&w.gate, &w.up, &w.down};
  float* outputs[kProjections] = {gate.data(), up.data(), down.data()};
  for (int j = 0; j < kProjections; ++j) {
    jobs[j].x = input.data();
    jobs[j].m = 1;
    jobs[j].weight = *matrices[j];
    jobs[j].y = outputs[j];
  }
  kernels::Workspace workspace;
  auto timed = [&](auto&& run) -> Status {
    std::uint64_t total = 0;
    int rounds = 0;
    ZIPMOE_RETURN_IF_ERROR(run());  // warm-up
    while (rounds < kMeasureDecodeRounds && (rounds < 2 || total < kMeasureMinimumDecodeNs)) {
      const auto start = Clock::now();
      ZIPMOE_RETURN_IF_ERROR(run());
      total += static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
      ++rounds;
    }
    out->last_seconds = double(total) * 1e-9 / rounds;
    return Status::Ok();
  };
  ZIPMOE_RETURN_IF_ERROR(timed([&]() {
    kernels::linear_batch(isa_, jobs, kProjections, pool_, &workspace, kernels::MatmulPrecision::kFast);
    return Status::Ok();
  }));
  out->plain_seconds = out->last_seconds;
  if (!products_.allocated()) return Status::Ok();
  const std::uint8_t* staged = pipeline_->load_time_staging();
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    const std::uint32_t segment = coded_segment_symbols(staged + p.staging_offset[kExponentPlane],
                                                        static_cast<std::size_t>(p.stored_bytes[kExponentPlane]));
    if (!products_.limits().covers(*p.tensor, segment, 1)) return Status::Ok();
  }
  ZIPMOE_RETURN_IF_ERROR(timed([&]() -> Status {
    for (int j = 0; j < kProjections; ++j) {
      const ProjectionLayout& p = x.projection(j);
      kernels::LinearJob coded = jobs[j];
      coded.weight.data = nullptr;
      ZIPMOE_RETURN_IF_ERROR(products_.multiply(*reader_, *p.tensor, staged + p.staging_offset[kExponentPlane],
                                                staged + p.staging_offset[kSmPlane], coded,
                                                kernels::MatmulPrecision::kFast, isa_, pool_, nullptr));
    }
    return Status::Ok();
  }));
  out->coded_seconds = out->last_seconds;
  return Status::Ok();
}

// Bytes/s of one thread decoding the probe expert as an uncompressed
// container's decode does: both planes checksummed, then merged. Each
// projection's exponent symbols are taken back out of its decoded weights
// (untimed); the merge writes the same bits back into them. Timed over whole
// projections and for as long as the decode probe (short timed pieces miss
// the preemptions a busy machine adds to the decode probe's wall time, and
// made raw bytes look cheaper than they are).
double ExpertCache::probe_merge(const ExpertLayout& x) {
  std::uint8_t* decoded = pipeline_->load_time_buffer();
  const std::uint8_t* staged = pipeline_->load_time_staging();
  std::vector<std::uint8_t> symbols[kProjections];
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    const TensorInfo& t = *p.tensor;
    if (t.dtype == DType::kU8) continue;
    symbols[j].resize(static_cast<std::size_t>(t.num_elements));
    codec::split_planes(t.dtype, decoded + p.decoded_offset, symbols[j].size(), symbols[j].data(), nullptr);
  }
  std::uint64_t ns = 0, bytes = 0;
  std::uint32_t crc = 0;
  for (int round = 0; round < kMeasureDecodeRounds && (round < 2 || ns < kMeasureMinimumDecodeNs); ++round) {
    for (int j = 0; j < kProjections; ++j) {
      if (symbols[j].empty()) continue;
      const ProjectionLayout& p = x.projection(j);
      const TensorInfo& t = *p.tensor;
      const std::size_t n = symbols[j].size();
      const std::uint8_t* sm = staged + p.staging_offset[kSmPlane];
      const codec::MergeTarget target = codec::make_merge_target(t.dtype, sm, n, decoded + p.decoded_offset);
      const auto start = Clock::now();
      crc ^= crc32c(symbols[j].data(), n) ^ crc32c(sm, static_cast<std::size_t>(p.stored_bytes[kSmPlane]));
      codec::merge_into(isa_, target, 0, symbols[j].data(), n);
      ns += static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
      bytes += n * dtype_size(t.dtype);
    }
  }
  volatile std::uint32_t kept = crc;  // so that the checksums are computed
  (void)kept;
  return ns > 0 ? double(bytes) / (double(ns) * 1e-9) : kDefaultDecodeThroughput;
}

// Scratch for coded products, when COMPRESSED is allowed and the budget has
// room beside the working set (a small share of it: a decoded segment and a
// workspace per thread). Sized from the first expert's exponent planes (their
// headers give the segment size); an expert they do not cover is decoded
// whole instead.
Status ExpertCache::size_coded_products() {
  if (!tier_allowed(options_.allowed_tiers, ExpertTier::kCompressed) || table_.experts.empty()) return Status::Ok();
  const ExpertLayout& x = table_.experts[0];
  const bool exponents_only[sched::kPlanes] = {true, false};
  const std::uint8_t* staging = nullptr;
  ZIPMOE_RETURN_IF_ERROR(pipeline_->stage_now(x.fetch, exponents_only, &staging));
  CodedProductLimits limits;
  limits.threads = pool_ ? pool_->num_threads() : 1;
  limits.max_rows = kCodedMaxRows;
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    limits.cover(*p.tensor, coded_segment_symbols(staging + p.staging_offset[kExponentPlane],
                                                  static_cast<std::size_t>(p.stored_bytes[kExponentPlane])));
  }
  const std::uint64_t bytes = CodedProducts::bytes_for(limits, isa_);
  // Worth it only where it leaves the states most of their bytes.
  if (limits.segment_bytes == 0 || bytes > tier_budget_ / 8) return Status::Ok();
  ZIPMOE_RETURN_IF_ERROR(products_.allocate(ledger_, limits, isa_));
  tier_budget_ -= products_.charged_bytes();
  return Status::Ok();
}

// Whether a request for `expert` (COMPRESSED, serving `tokens` tokens) is
// delivered coded: not when the policy would move it to FULL (that needs its
// decoded copy), nor when the scratch does not cover it.
bool ExpertCache::deliver_coded(std::size_t expert, std::uint32_t tokens, double key) const {
  const ExpertSlot& slot = experts_[expert];
  if (!use_coded_ || slot.tier != ExpertTier::kCompressed || could_enter_full(expert, key)) return false;
  const ExpertLayout& x = table_.experts[expert];
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    const std::uint8_t* plane = slot.exponent.data() + p.rest_offset[kExponentPlane];
    const std::uint32_t segment = coded_segment_symbols(plane, static_cast<std::size_t>(p.stored_bytes[kExponentPlane]));
    if (!products_.limits().covers(*p.tensor, segment, tokens)) return false;
  }
  return true;
}

// admit()'s test for FULL without doing it: room there, or lower-key unpinned
// FULL experts enough to make it.
bool ExpertCache::could_enter_full(std::size_t expert, double key) const {
  const int t = tier_index(ExpertTier::kFull);
  if (!tier_allowed(options_.allowed_tiers, ExpertTier::kFull)) return false;
  const std::uint64_t need = bytes_in(expert, ExpertTier::kFull);
  if (need > capacity_[t]) return false;
  if (used_[t] + need <= capacity_[t]) return true;
  std::uint64_t freeable = 0;
  for (std::size_t id = 0; id < experts_.size(); ++id) {
    if (experts_[id].tier != ExpertTier::kFull || id == expert || pinned(id)) continue;
    if (ranker_.key(id) < key) freeable += bytes_in(id, ExpertTier::kFull);
  }
  return used_[t] - freeable + need <= capacity_[t];
}

// Routing probabilities: the profile's where it has seen tokens, else uniform.
void ExpertCache::set_prior(const CacheOptions& options) {
  const std::size_t groups = table_.moe_layers.size(), E = table_.num_experts;
  const std::size_t k = std::max<std::size_t>(table_.experts_per_token, 1);
  std::vector<double> prior(table_.experts.size(), double(k) / double(std::max<std::size_t>(E, 1)));
  double prior_weight = 16;
  if (options.prior) {
    for (std::size_t m = 0; m < groups; ++m) {
      for (std::size_t e = 0; e < E; ++e) prior[table_.id(m, e)] = options.prior->probability(m, e);
    }
    prior_weight = double(std::min<std::uint64_t>(std::max<std::uint64_t>(options.prior->total_tokens(), 16), 1024));
  }
  for (std::size_t id = 0; id < costs_.size(); ++id) costs_[id].probability = prior[id];
  ranker_ = PolicyRanker(options.policy, groups, E, k, prior, prior_weight);
}

Status ExpertCache::fill_planned(const TierPlan& plan) {
  for (std::size_t id = 0; id < plan.tiers.size(); ++id) {
    if (plan.tiers[id] != ExpertTier::kAbsent) ZIPMOE_RETURN_IF_ERROR(load_resident(id, plan.tiers[id]));
  }
  return Status::Ok();
}

// Reads (and for FULL decodes) expert `id` into the blocks of `tier` at load.
Status ExpertCache::load_resident(std::size_t id, ExpertTier tier) {
  const ExpertLayout& x = table_.experts[id];
  ExpertSlot& slot = experts_[id];
  const bool full = tier == ExpertTier::kFull;
  const bool read[sched::kPlanes] = {full || tier_holds_exponents(tier), full || tier_holds_sm(tier)};
  const std::uint8_t* staging = nullptr;
  ZIPMOE_RETURN_IF_ERROR(pipeline_->stage_now(x.fetch, read, &staging));
  load_bytes_read_ += (read[sched::kExponentPlane] ? x.stored_exponent_bytes : 0) +
                      (read[sched::kSmPlane] ? x.stored_sm_bytes : 0);
  if (full) {
    ZIPMOE_RETURN_IF_ERROR(slot.full.allocate(ledger_, table_.max_decoded_block));
    ZIPMOE_RETURN_IF_ERROR(pipeline_->decode_staged_now(x.fetch, slot.full.data()));
  } else {
    MemoryBlock* blocks[sched::kPlanes] = {&slot.exponent, &slot.sm};
    const std::size_t sizes[sched::kPlanes] = {x.exponent_block_bytes, x.sm_block_bytes};
    for (int plane = 0; plane < sched::kPlanes; ++plane) {
      if (!read[plane]) continue;
      ZIPMOE_RETURN_IF_ERROR(blocks[plane]->allocate(ledger_, sizes[plane]));
      for (int j = 0; j < kProjections; ++j) {
        const ProjectionLayout& p = x.projection(j);
        std::memcpy(blocks[plane]->data() + p.rest_offset[plane], staging + p.staging_offset[plane],
                    p.stored_bytes[plane]);
      }
    }
  }
  slot.tier = tier;
  used_[tier_index(tier)] += bytes_in(id, tier);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// States (all under the lock)

std::uint64_t ExpertCache::bytes_in(std::size_t expert, ExpertTier tier) const {
  return costs_[expert].bytes[tier_index(tier)];
}

ExpertTier ExpertCache::tier_of(std::size_t id) const {
  const Lock lock = pipeline_->lock();
  return experts_[id].tier;
}

// A request uses it, or a fetch of it is under way (and may read its blocks).
bool ExpertCache::pinned(std::size_t expert) const {
  return experts_[expert].pins > 0 || pipeline_->in_progress(experts_[expert].fetch);
}

void ExpertCache::drop_storage(std::size_t expert, bool keep_exponents, bool keep_sm) {
  ExpertSlot& slot = experts_[expert];
  if (!keep_exponents) slot.exponent.release();
  if (!keep_sm) slot.sm.release();
}

void ExpertCache::demote(std::size_t expert) {
  ExpertSlot& slot = experts_[expert];
  const ExpertTier from = slot.tier;
  used_[tier_index(from)] -= bytes_in(expert, from);
  ++counters_.evictions;
  ExpertTier to = ExpertTier::kAbsent;
  if (from == ExpertTier::kFull) {
    pipeline_->give_decode_buffer(std::move(slot.full));
  } else if (from == ExpertTier::kCompressed) {
    // Keep the part that still fits somewhere: no re-encoding, no copy.
    for (ExpertTier part : {ExpertTier::kSm, ExpertTier::kE}) {
      if (!tier_allowed(options_.allowed_tiers, part)) continue;
      if (used_[tier_index(part)] + bytes_in(expert, part) > capacity_[tier_index(part)]) continue;
      to = part;
      break;
    }
  }
  drop_storage(expert, tier_holds_exponents(to), tier_holds_sm(to));
  slot.tier = to;
  used_[tier_index(to)] += bytes_in(expert, to);
}

bool ExpertCache::make_room(ExpertTier tier, std::size_t expert, double key, std::uint64_t need) {
  const int t = tier_index(tier);
  if (need > capacity_[t]) return false;
  if (used_[t] + need <= capacity_[t]) return true;
  std::vector<std::pair<double, std::size_t>> candidates;
  for (std::size_t id = 0; id < experts_.size(); ++id) {
    if (experts_[id].tier != tier || id == expert || pinned(id)) continue;
    const double k = ranker_.key(id);
    if (k < key) candidates.emplace_back(k, id);
  }
  std::sort(candidates.begin(), candidates.end());
  std::uint64_t freed = 0;
  std::size_t count = 0;
  while (used_[t] - freed + need > capacity_[t] && count < candidates.size()) {
    freed += bytes_in(candidates[count].second, tier);
    ++count;
  }
  if (used_[t] - freed + need > capacity_[t]) return false;
  for (std::size_t i = 0; i < count; ++i) demote(candidates[i].second);
  return true;
}

// Copies the planes `plane` of `expert` that `fetch` read into a new block.
Status ExpertCache::copy_staged(std::size_t expert, int plane, FetchId fetch, MemoryBlock* block) {
  if (!pipeline_->read_plane(fetch, plane) || !pipeline_->staged(fetch, 0, plane)) {
    return Status::Internal(plane == kExponentPlane ? "admission without the exponent chunks at hand"
                                                    : "admission without the sign/mantissa chunks at hand");
  }
  const ExpertLayout& x = table_.experts[expert];
  ZIPMOE_RETURN_IF_ERROR(
      block->allocate(ledger_, plane == kExponentPlane ? x.exponent_block_bytes : x.sm_block_bytes));
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    std::memcpy(block->data() + p.rest_offset[plane], pipeline_->staged(fetch, j, plane), p.stored_bytes[plane]);
  }
  return Status::Ok();
}

// Moves `expert` to the compressed state `tier`, keeping what it holds and
// copying the planes it lacks from what `fetch` read.
Status ExpertCache::move_to(std::size_t expert, ExpertTier tier, FetchId fetch) {
  ExpertSlot& slot = experts_[expert];
  const ExpertTier from = slot.tier;
  const bool exponents = tier_holds_exponents(tier), sm = tier_holds_sm(tier);
  drop_storage(expert, exponents, sm);
  used_[tier_index(from)] -= bytes_in(expert, from);
  slot.tier = ExpertTier::kAbsent;
  Status status;
  if (exponents && slot.exponent.empty()) status = copy_staged(expert, kExponentPlane, fetch, &slot.exponent);
  if (status.ok() && sm && slot.sm.empty()) status = copy_staged(expert, kSmPlane, fetch, &slot.sm);
  if (!status.ok()) {
    drop_storage(expert, false, false);
    return status;
  }
  slot.tier = tier;
  used_[tier_index(tier)] += bytes_in(expert, tier);
  return Status::Ok();
}

// The fetch's decode buffer becomes the expert's FULL block, if room can be
// made and the pipeline still has a decode buffer to spare.
bool ExpertCache::admit_full(FetchId fetch, std::size_t id, double key) {
  MemoryBlock block = pipeline_->detach_decode_buffer(fetch);
  if (block.empty()) return false;
  // Detached first, so that the blocks of FULL experts it displaces become
  // decode buffers instead of being unmapped and mapped again. The cache must
  // still have S buffers to decode into, or a later request could wait for one
  // forever.
  const std::uint64_t need = bytes_in(id, ExpertTier::kFull);
  if (!make_room(ExpertTier::kFull, id, key, need) || !pipeline_->ensure_spare_decode_buffer()) {
    pipeline_->attach_decode_buffer(fetch, std::move(block));
    return false;
  }
  ExpertSlot& slot = experts_[id];
  drop_storage(id, false, false);
  used_[tier_index(slot.tier)] -= bytes_in(id, slot.tier);
  slot.tier = ExpertTier::kFull;
  slot.full = std::move(block);
  used_[tier_index(ExpertTier::kFull)] += need;
  return true;
}

void ExpertCache::admit(FetchId fetch) {
  const std::size_t id = pipeline_->item(fetch);
  const ExpertTier from = experts_[id].tier;
  const double key = ranker_.key(id);
  for (ExpertTier tier : kTiersFullestFirst) {
    if (tier == ExpertTier::kAbsent || tier == from) break;
    const int t = tier_index(tier);
    if (!tier_allowed(options_.allowed_tiers, tier) || capacity_[t] == 0) continue;
    const std::uint64_t need = bytes_in(id, tier);
    if (need <= bytes_in(id, from)) continue;
    if (tier == ExpertTier::kFull) {
      if (!admit_full(fetch, id, key)) continue;
    } else {
      if (!make_room(tier, id, key, need)) continue;
      // The budget may refuse (the ledger is shared): the expert stays where move_to left it.
      if (!move_to(id, tier, fetch).ok()) return;
    }
    ++counters_.admissions;
    return;
  }
}

std::uint64_t ExpertCache::working_set_bytes() const { return started_ ? working_set_ : minimum_bytes(); }

Status ExpertCache::set_budget(std::uint64_t budget) {
  if (!started_) return Status::InvalidArgument("expert cache not started");
  const Lock lock = pipeline_->lock();
  const std::uint64_t working_set = working_set_;
  if (budget < working_set) {
    return Status::Budget("expert cache budget of " + std::to_string(budget) + " bytes is below its working set of " +
                          std::to_string(working_set) + " bytes");
  }
  if (budget == options_.budget) return Status::Ok();
  options_.budget = budget;
  tier_budget_ = budget - working_set;
  if (tier_budget_ > 0) {
    replan(/*budget_changed=*/true);
    return Status::Ok();
  }
  // Nothing may rest in RAM any more.
  for (int t = 0; t < kNumExpertTiers; ++t) capacity_[t] = 0;
  for (std::size_t id = 0; id < experts_.size(); ++id) {
    if (experts_[id].tier != ExpertTier::kAbsent && !pinned(id)) demote(id);
  }
  return Status::Ok();
}

// A plan of the states from cost_ and the routing frequencies.
TierPlan ExpertCache::make_plan() const {
  const std::size_t groups = table_.moe_layers.size(), k = std::max<std::size_t>(table_.experts_per_token, 1);
  return plan_tiers(costs_, groups, k, options_.allowed_tiers, tier_budget_, cost_);
}

// The report of the plan in force (`tiers`): what it fills, what bounds a
// token, and how it compares with the best plan of the same budget over an
// uncompressed container (FULL experts, misses read whole and merged).
void ExpertCache::report_plan(const std::vector<ExpertTier>& tiers) {
  const std::size_t groups = table_.moe_layers.size(), k = std::max<std::size_t>(table_.experts_per_token, 1);
  const PlanTotals totals = plan_totals(costs_, tiers, groups, k, cost_);
  PlannerReport& r = planner_report_;
  r.seconds_per_token = totals.seconds;
  r.raw_seconds_per_token = 0;
  r.compressed_slower_than_raw = false;
  r.warning.clear();
  if (!raw_container_ && speeds_.merge_throughput > 0 && speeds_.decode_throughput > 0) {
    // Merging slows down with the machine as decoding does.
    CostModel raw = cost_;
    raw.decode_bytes_per_second = speeds_.merge_throughput * cost_.decode_bytes_per_second / speeds_.decode_throughput;
    raw.coded_decode_bytes_per_second = 0;
    for (std::size_t id = 0; id < raw_costs_.size(); ++id) raw_costs_[id].probability = costs_[id].probability;
    const std::uint8_t full =
        tier_allowed(options_.allowed_tiers, ExpertTier::kFull) ? expert_tier_bit(ExpertTier::kFull) : 0;
    const TierPlan raw_plan = plan_tiers(raw_costs_, groups, k, full, tier_budget_, raw);
    r.raw_seconds_per_token = raw_plan.seconds_per_token;
    r.compressed_slower_than_raw = totals.seconds > kSlowerThanRaw * raw_plan.seconds_per_token;
  }
  std::uint64_t count[kNumExpertTiers] = {0, 0, 0, 0, 0};
  for (ExpertTier t : tiers) ++count[tier_index(t)];
  char line[512];
  std::snprintf(line, sizeof(line),
                "full %llu, compressed %llu, sm %llu, e %llu of %zu experts; per token: reads %.3f s, decoding %.3f s, "
                "other compute %.3f s (%s-bound), %.3f s in all",
                static_cast<unsigned long long>(count[0]), static_cast<unsigned long long>(count[1]),
                static_cast<unsigned long long>(count[2]), static_cast<unsigned long long>(count[3]), tiers.size(),
                totals.io, totals.decode, totals.other, totals.io > totals.decode + totals.other ? "read" : "CPU",
                totals.seconds);
  r.choice = line;
  if (r.compressed_slower_than_raw) {
    std::snprintf(line, sizeof(line),
                  "on this machine (reads %.2f GB/s, decoding %.2f GB/s on %d threads, uncompressed planes merged at "
                  "%.2f GB/s) the expert cache expects %.3f s per token from this compressed container, %.3f s from "
                  "an uncompressed one (zipmoe convert --codec raw)",
                  cost_.storage_bytes_per_second * 1e-9, cost_.decode_bytes_per_second * 1e-9,
                  pool_ ? pool_->num_threads() : 1, speeds_.merge_throughput * 1e-9, totals.seconds,
                  r.raw_seconds_per_token);
    r.warning = line;
  }
}

void ExpertCache::replan(bool budget_changed) {
  if (tier_budget_ == 0) return;
  // The figures measured while running replace those of load time once there is enough of them.
  const sched::PipelineMeasurements& measured = pipeline_->measurements();
  if (options_.decode_throughput <= 0 && measured.decoded_bytes >= kMeasureMinimumBytes && measured.decode_ns > 0) {
    cost_.decode_bytes_per_second = double(measured.decoded_bytes) / (double(measured.decode_ns) * 1e-9);
  }
  if (options_.storage_bandwidth <= 0) fit_storage(measured, &cost_);
  if (measured_other_samples_ >= 8) {
    cost_.other_cpu_seconds = double(measured_other_ns_) * 1e-9 / double(measured_other_samples_);
  }
  for (std::size_t id = 0; id < costs_.size(); ++id) costs_[id].probability = ranker_.frequency(id);
  const std::size_t groups = table_.moe_layers.size(), k = std::max<std::size_t>(table_.experts_per_token, 1);
  const TierPlan plan = make_plan();
  // The plan in force, under the same figures: changing it drops what the
  // states hold and reads it again elsewhere, so a new plan must be clearly better.
  const double current = plan_totals(costs_, plan_in_force_, groups, k, cost_).seconds;
  if (!budget_changed && plan.seconds_per_token >= (1.0 - kReplanGain) * current) {
    planned_seconds_ = current;
    report_plan(plan_in_force_);
    return;
  }
  for (int t = 0; t < kNumExpertTiers; ++t) capacity_[t] = plan.capacity[t];
  planned_seconds_ = plan.seconds_per_token;
  plan_in_force_ = plan.tiers;
  report_plan(plan_in_force_);
  ++replans_;
  // Fullest states first, so that a COMPRESSED expert moving down can still find room as SM or E.
  for (ExpertTier tier : kTiersFullestFirst) {
    const int t = tier_index(tier);
    if (tier == ExpertTier::kAbsent || used_[t] <= capacity_[t]) continue;
    std::vector<std::pair<double, std::size_t>> members;
    for (std::size_t id = 0; id < experts_.size(); ++id) {
      if (experts_[id].tier == tier && !pinned(id)) members.emplace_back(ranker_.key(id), id);
    }
    std::sort(members.begin(), members.end());
    for (std::size_t i = 0; i < members.size() && used_[t] > capacity_[t]; ++i) {
      const std::size_t id = members[i].second;
      const std::uint64_t before = bytes_in(id, experts_[id].tier);
      demote(id);
      replan_dropped_bytes_ += before - bytes_in(id, experts_[id].tier);
      ++replan_demotions_;
    }
  }
}

// ---------------------------------------------------------------------------
// The timeline's intervals of the forward pass outside the cache

void ExpertCache::enter() {
  if (returned_kind_ < 0) return;
  sched::TimelineEvent event;
  event.kind = static_cast<sched::TimelineKind>(returned_kind_);
  event.thread = -1;
  event.start = returned_at_;
  event.end = Clock::now();
  pipeline_->record(event);
  returned_kind_ = -1;
}

void ExpertCache::leave(sched::TimelineKind kind) {
  returned_kind_ = static_cast<int>(kind);
  returned_at_ = Clock::now();
}

// ---------------------------------------------------------------------------
// The provider interface

void ExpertCache::prefetch(std::uint32_t layer, const std::uint32_t* experts, std::size_t count) {
  if (!wants_prefetch()) return;
  const Lock lock = pipeline_->lock();
  if (layer >= table_.moe_index_of_layer.size() || table_.moe_index_of_layer[layer] < 0) return;
  const std::uint32_t m = static_cast<std::uint32_t>(table_.moe_index_of_layer[layer]);
  std::size_t allowance = pipeline_->prefetch_allowance();
  if (allowance == 0) return;
  for (std::size_t i = 0; i < count && allowance > 0; ++i) {
    if (experts[i] >= table_.num_experts) continue;
    const std::size_t id = table_.id(m, experts[i]);
    ExpertSlot& slot = experts_[id];
    if (slot.tier == ExpertTier::kFull || pipeline_->in_progress(slot.fetch)) continue;
    slot.fetch = new_fetch(id, IoPriority::kPrefetch);
    --allowance;
    ++counters_.prefetches;
  }
  pipeline_->dispatch();
}

FetchId ExpertCache::new_fetch(std::size_t expert, IoPriority priority) {
  const ExpertSlot& slot = experts_[expert];
  const ExpertLayout& x = table_.experts[expert];
  sched::FetchSpec spec;
  spec.item = expert;
  spec.group = x.moe_index;
  spec.layout = &x.fetch;
  spec.read[kExponentPlane] = !tier_holds_exponents(slot.tier);
  spec.read[kSmPlane] = !tier_holds_sm(slot.tier);
  spec.rest[kExponentPlane] = slot.exponent.data();
  spec.rest[kSmPlane] = slot.sm.data();
  spec.priority = priority;
  return pipeline_->create(spec);
}

Status ExpertCache::acquire(ExpertRequest* request) {
  if (request->active) return Status::InvalidArgument("expert request acquired twice without release");
  if (!started_) return Status::Internal("expert cache used before start()");
  const std::uint32_t layer = request->layer;
  if (layer >= table_.moe_index_of_layer.size() || table_.moe_index_of_layer[layer] < 0) {
    return Status::InvalidArgument("layer " + std::to_string(layer) + " has no routed experts");
  }
  const std::uint32_t m = static_cast<std::uint32_t>(table_.moe_index_of_layer[layer]);
  std::vector<std::uint8_t> wanted(table_.num_experts, 0);
  for (std::uint32_t e : request->experts) {
    if (e >= table_.num_experts) {
      return Status::InvalidArgument("expert " + std::to_string(e) + " of layer " + std::to_string(layer) +
                                     " does not exist");
    }
    if (wanted[e]) return Status::InvalidArgument("expert " + std::to_string(e) + " requested twice");
    wanted[e] = 1;
  }
  const Lock lock = pipeline_->lock();
  enter();
  begin_step(*request, m);
  // Guesses the forward pass did not confirm are dropped.
  pipeline_->settle_guesses([&](std::size_t id) {
    const ExpertLayout& x = table_.experts[id];
    return x.moe_index == m && wanted[x.expert];
  });
  start_fetches(*request, m);
  const std::size_t n = request->experts.size();
  request->weights.resize(n);
  request->delivered.assign(n, 0);
  request->delivered_count = 0;
  request->active = true;
  request_ = request;
  delivered_group_.clear();
  leave(sched::TimelineKind::kOther);
  return Status::Ok();
}

// Counts the step (all the layers of a forward step share one), re-plans when
// due, and measures the time the forward pass spends besides the cache.
void ExpertCache::begin_step(const ExpertRequest& request, std::uint32_t moe_index) {
  const auto now = Clock::now();
  const bool same_step = static_cast<std::int64_t>(request.layer) > last_layer_ && step_ > 0;
  if (same_step && last_request_single_token_ && request.tokens == 1) {
    // One layer of a single-token step: what the forward pass spent besides us.
    const std::uint64_t cycle = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_acquire_time_).count());
    if (cycle > request_busy_ns_) {
      measured_other_ns_ += cycle - request_busy_ns_;
      ++measured_other_samples_;
    }
  }
  last_acquire_time_ = now;
  request_busy_ns_ = 0;
  last_request_single_token_ = request.tokens == 1;
  if (!same_step) {
    ++step_;
    if (next_replan_step_ && step_ >= next_replan_step_) {
      replan();
      next_replan_step_ = step_ < 512 ? 2 * step_ : step_ + 512;
    }
  }
  last_layer_ = request.layer;
  counters_.steps = step_;
  pipeline_->set_epoch(step_);
  ranker_.record_tokens(moe_index, request.tokens);
}

// Pins every requested expert; a prefetch of it under way is adopted, any
// other that is not FULL gets a fetch; the new fetches go in Johnson's order.
void ExpertCache::start_fetches(const ExpertRequest& request, std::uint32_t moe_index) {
  const std::size_t n = request.experts.size();
  ExpertLayerStats& stats = layer_stats_[moe_index];
  request_fetch_.assign(n, kNoFetch);
  request_ids_.resize(n);
  request_coded_.assign(n, 0);
  std::vector<FetchId> fresh;
  std::vector<sched::FetchJob> jobs;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t id = table_.id(moe_index, request.experts[i]);
    request_ids_[i] = id;
    const std::uint32_t tokens = i < request.token_counts.size() ? request.token_counts[i] : 1;
    ranker_.record_use(id, step_, tokens);
    ExpertSlot& slot = experts_[id];
    ++slot.pins;
    ++stats.requests;
    ++stats.served_from[tier_index(slot.tier)];
    if (pipeline_->in_progress(slot.fetch)) {
      ++stats.prefetch_hits;
      ++counters_.prefetches_used;
      if (!pipeline_->error(slot.fetch).ok()) {
        pipeline_->cancel(slot.fetch);  // fetched again below, and reported if it fails again
      } else {
        request_fetch_[i] = slot.fetch;
        if (pipeline_->adopt(slot.fetch)) {
          admit(slot.fetch);
          pipeline_->finish(slot.fetch);
        }
        continue;
      }
    }
    if (slot.tier == ExpertTier::kFull) continue;
    if (deliver_coded(id, tokens, ranker_.key(id))) {
      request_coded_[i] = 1;
      continue;
    }
    jobs.push_back(
        {expert_io_seconds(costs_[id], slot.tier, cost_), expert_decode_seconds(costs_[id], slot.tier, cost_)});
    slot.fetch = new_fetch(id, IoPriority::kDemand);
    request_fetch_[i] = slot.fetch;
    fresh.push_back(slot.fetch);
  }
  pipeline_->schedule(fresh, jobs, options_.reorder_fetches);
}

Status ExpertCache::request_error(const ExpertRequest& request) const {
  for (std::size_t i = 0; i < request_fetch_.size(); ++i) {
    if (request.delivered[i]) continue;
    const Status& error = pipeline_->error(request_fetch_[i]);
    if (!error.ok()) return error;
  }
  return Status::Ok();
}

// Delivers every undelivered expert that is ready: FULL at acquire, or decoded.
void ExpertCache::deliver_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) {
  for (std::size_t i = 0; i < request->experts.size(); ++i) {
    if (request->delivered[i]) continue;
    const FetchId fetch = request_fetch_[i];
    const std::size_t id = request_ids_[i];
    const std::uint8_t* block = experts_[id].full.data();  // FULL at acquire, or admitted to FULL
    if (request_coded_[i]) block = nullptr;
    if (fetch != kNoFetch) {
      if (pipeline_->state(fetch) != sched::FetchState::kDecoded) continue;
      if (const std::uint8_t* decoded = pipeline_->decoded(fetch)) block = decoded;
      delivered_group_.push_back(fetch);
    }
    request->weights[i] = expert_weights(table_.experts[id], block);
    request->weights[i].coded = request_coded_[i] != 0;
    request->delivered[i] = 1;
    ready[(*count)++] = static_cast<std::uint32_t>(i);
  }
}

// One step towards the request's next delivery: decodes one part (of its
// experts, or of a guess), or waits for a read.
Status ExpertCache::make_progress(Lock& lock, const ExpertRequest& request) {
  pending_.clear();
  for (std::size_t i = 0; i < request_fetch_.size(); ++i) {
    if (!request.delivered[i] && request_fetch_[i] != kNoFetch) pending_.push_back(request_fetch_[i]);
  }
  sched::DecodeJob job;
  const sched::FetchPipeline::Work work = pipeline_->next_decode(pending_, &job);
  if (work == sched::FetchPipeline::Work::kFound) {
    bool completed = false;
    request_busy_ns_ += pipeline_->decode(lock, job, &completed);
    if (completed) {
      admit(job.fetch);
      pipeline_->finish(job.fetch);
    }
    return Status::Ok();
  }
  if (work == sched::FetchPipeline::Work::kStarved && !pipeline_->decode_buffer_held()) {
    // Nothing holds a decode buffer that it will give back: waiting would never end.
    return Status::Budget("expert cache: no decode buffer left within the memory budget");
  }
  const std::uint64_t waited = pipeline_->wait(lock);
  layer_stats_[static_cast<std::size_t>(table_.moe_index_of_layer[request.layer])].stall_ns += waited;
  request_busy_ns_ += waited;
  return Status::Ok();
}

void ExpertCache::recycle_delivered() {
  for (FetchId fetch : delivered_group_) pipeline_->free(fetch);
  delivered_group_.clear();
  pipeline_->dispatch();
}

Status ExpertCache::wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) {
  *count = 0;
  if (!request->active || request != request_) {
    return Status::InvalidArgument("wait_ready on an expert request that is not acquired");
  }
  Lock lock = pipeline_->lock();
  enter();
  recycle_delivered();
  for (;;) {
    ZIPMOE_RETURN_IF_ERROR(request_error(*request));
    deliver_ready(request, ready, count);
    if (*count > 0) {
      request->delivered_count += *count;
      leave(sched::TimelineKind::kCompute);
      return Status::Ok();
    }
    if (request->delivered_count == request->experts.size()) return Status::Ok();
    ZIPMOE_RETURN_IF_ERROR(make_progress(lock, *request));
  }
}

void ExpertCache::release(ExpertRequest* request) {
  const Lock lock = pipeline_->lock();
  enter();
  recycle_delivered();
  for (FetchId fetch : request_fetch_) pipeline_->cancel(fetch);  // the undelivered ones
  for (std::size_t id : request_ids_) --experts_[id].pins;
  request_fetch_.clear();
  request_ids_.clear();
  request_ = nullptr;
  request->active = false;
  leave(sched::TimelineKind::kOther);
}

Status ExpertCache::multiply(const ExpertRequest& request, std::size_t index, ExpertProjection projection,
                             const kernels::LinearJob& job, kernels::MatmulPrecision precision) {
  const int j = static_cast<int>(projection);
  if (&request != request_ || index >= request_coded_.size() || !request_coded_[index] || !request.delivered[index] ||
      j < 0 || j >= kProjections) {
    return Status::InvalidArgument("multiply: that expert of the request was not delivered coded");
  }
  // The expert is pinned: its blocks stay put, and only this thread could move them.
  const std::size_t id = request_ids_[index];
  const ExpertSlot& slot = experts_[id];
  const ExpertLayout& x = table_.experts[id];
  const ProjectionLayout& p = x.projection(j);
  std::uint64_t decode_ns = 0;
  const auto start = Clock::now();
  const Status status = products_.multiply(*reader_, *p.tensor, slot.exponent.data() + p.rest_offset[kExponentPlane],
                                           slot.sm.data() + p.rest_offset[kSmPlane], job, precision, isa_, pool_,
                                           &decode_ns);
  const Lock lock = pipeline_->lock();
  sched::TimelineEvent event;
  event.kind = sched::TimelineKind::kFused;
  event.thread = -1;
  event.part = static_cast<std::int8_t>(j);
  event.group = x.moe_index;
  event.item = id;
  event.start = start;
  event.end = Clock::now();
  pipeline_->record(event);
  ExpertLayerStats& stats = layer_stats_[x.moe_index];
  stats.decoded_bytes += p.decoded_bytes;
  stats.fused_decoded_bytes += p.decoded_bytes;
  // Thread time over the pool's threads: the wall time the decoding took of the product.
  stats.decode_ns += decode_ns / static_cast<std::uint64_t>(std::max(1, pool_ ? pool_->num_threads() : 1));
  return status;
}

std::uint64_t ExpertCache::resident_bytes() const {
  const Lock lock = pipeline_->lock();
  std::uint64_t bytes = pipeline_->working_set_bytes();
  for (int t = 0; t < kNumExpertTiers; ++t) bytes += used_[t];
  return bytes;
}

void ExpertCache::collect_stats(ExpertCacheStats* out) const {
  const Lock lock = pipeline_->lock();
  out->enabled = true;
  out->layers = layer_stats_;
  ExpertLayerStats total;
  for (std::size_t m = 0; m < out->layers.size(); ++m) {
    add_counters(pipeline_->counters(m), &out->layers[m]);
    add_layer(out->layers[m], &total);
  }
  out->total = total;
  for (int t = 0; t < kNumExpertTiers; ++t) {
    out->experts_in[t] = 0;
    out->tier_bytes[t] = used_[t];
    out->tier_capacity[t] = capacity_[t];
  }
  for (const ExpertSlot& slot : experts_) ++out->experts_in[tier_index(slot.tier)];
  out->working_set_bytes = pipeline_->working_set_bytes();
  out->decode_buffers = static_cast<std::uint32_t>(pipeline_->decode_buffers());
  out->fetch_buffers = static_cast<std::uint32_t>(pipeline_->staging_buffers());
  out->prefetches = counters_.prefetches;
  out->prefetches_used = counters_.prefetches_used;
  out->prefetches_cancelled = pipeline_->prefetches_cancelled();
  out->admissions = counters_.admissions;
  out->evictions = counters_.evictions;
  out->steps = step_;
  out->replans = replans_;
  out->read_latency = cost_.read_latency_seconds;
  out->other_cpu_seconds = cost_.other_cpu_seconds;
  out->storage_bandwidth = cost_.storage_bytes_per_second;
  out->decode_throughput = cost_.decode_bytes_per_second / std::max(1, pool_ ? pool_->num_threads() : 1);
  out->planned_seconds_per_token = planned_seconds_;
  out->load_bytes_read = load_bytes_read_;
  out->replan_dropped_bytes = replan_dropped_bytes_;
  out->replan_demotions = replan_demotions_;
  out->io_busy_seconds = double(pipeline_->io_busy_ns() - io_busy_at_reset_) * 1e-9;
  out->planner = planner_report_;
  out->planner.seconds_per_token = planned_seconds_;
  out->timeline.clear();
  for (const sched::TimelineEvent& e : pipeline_->timeline()) {
    FetchTimelineEvent event;
    event.kind = timeline_kind_name(e.kind);
    event.thread = e.thread;
    event.prefetch = e.prefetch;
    if (e.kind == sched::TimelineKind::kRead || e.kind == sched::TimelineKind::kDecode ||
        e.kind == sched::TimelineKind::kFused) {
      const ExpertLayout& x = table_.experts[e.item];
      event.layer = x.layer;
      event.expert = x.expert;
      event.projection = e.part;
      event.sm = e.sm;
    }
    event.start = std::chrono::duration<double>(e.start - timeline_origin_).count();
    event.end = std::chrono::duration<double>(e.end - timeline_origin_).count();
    out->timeline.push_back(std::move(event));
  }
}

void ExpertCache::reset_stats() {
  const Lock lock = pipeline_->lock();
  for (ExpertLayerStats& s : layer_stats_) {
    const std::uint32_t layer = s.layer;
    s = ExpertLayerStats();
    s.layer = layer;
  }
  pipeline_->reset_counters();
  pipeline_->reset_prefetches_cancelled();
  counters_.prefetches = counters_.prefetches_used = 0;
  counters_.admissions = counters_.evictions = 0;
  replan_dropped_bytes_ = replan_demotions_ = 0;
  io_busy_at_reset_ = pipeline_->io_busy_ns();
  pipeline_->clear_timeline();
  timeline_origin_ = Clock::now();
}

}  // namespace zipmoe::cache

#include "cache/expert_cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "sched/fetch_order.h"

namespace zipmoe::cache {

namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t nanoseconds_since(Clock::time_point start) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

constexpr std::uint32_t kCookiePrefetch = 0x80;
constexpr std::uint32_t kCookieSm = 0x40;

// Defaults when a figure is neither given nor measurable (tiny models).
constexpr double kDefaultStorageBandwidth = 1.5e9;
constexpr double kDefaultDecodeThroughput = 3e9;
// A measurement needs at least this much data to mean anything.
constexpr std::uint64_t kMeasureMinimumBytes = std::uint64_t(4) << 20;
constexpr std::uint64_t kMeasureMaximumBytes = std::uint64_t(32) << 20;

// Storage figures from reads of small (exponent) and large (sign/mantissa)
// chunks: t = latency + bytes / bandwidth fitted through the two mean reads,
// or, when the sizes are too alike or the fit is implausible, the mean rate
// with the latency left as it was.
void fit_storage(const std::uint64_t bytes[2], const std::uint64_t nanoseconds[2], const std::uint64_t reads[2],
                 CostModel* model) {
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

}  // namespace

// ---------------------------------------------------------------------------
// Set-up

Status ExpertCache::create(const format::ContainerFile* reader, const ExpertShapes& shapes, ThreadPool* pool,
                           MemoryLedger* ledger, Isa isa, std::unique_ptr<ExpertCache>* out) {
  std::unique_ptr<ExpertCache> cache(new ExpertCache());
  cache->reader_ = reader;
  cache->pool_ = pool;
  cache->ledger_ = ledger;
  cache->isa_ = isa;
  ZIPMOE_RETURN_IF_ERROR(build_expert_table(*reader, shapes, &cache->table_));
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
  cache->layer_stats_.resize(t.moe_layers.size());
  for (std::size_t m = 0; m < t.moe_layers.size(); ++m) cache->layer_stats_[m].layer = t.moe_layers[m];
  *out = std::move(cache);
  return Status::Ok();
}

ExpertCache::~ExpertCache() {
  // The I/O thread may be inside on_read_done(): stop it before anything it touches goes.
  io_.reset();
}

std::uint64_t ExpertCache::minimum_bytes() const {
  const std::uint64_t k = std::max<std::size_t>(table_.experts_per_token, 1);
  return k * MemoryBlock::charged_size(table_.max_decoded_block) + MemoryBlock::charged_size(table_.max_staging);
}

Status ExpertCache::start(const CacheOptions& options) {
  if (started_) return Status::InvalidArgument("expert cache started twice");
  options_ = options;
  const std::uint64_t minimum = minimum_bytes();
  if (options.budget < minimum) {
    return Status::Budget("expert cache budget of " + std::to_string(options.budget) + " bytes is below its minimum of " +
                          std::to_string(minimum) + " bytes");
  }
  ZIPMOE_RETURN_IF_ERROR(sched::ChunkSource::open(reader_, options.io_mode, &source_));

  // Working set: decode buffers and fetch buffers, at most a quarter of the
  // budget (the rest holds experts), never below the minimum. Two fetch buffers
  // beyond the minimum come first, even out of a small budget's experts: with one
  // the drive idles while the cores decode the expert it just read (a fetch holds
  // its buffer until decoded), with three both reader threads keep reading
  // meanwhile. The few experts those bytes could hold save little: on the 6-layer
  // Qwen1.5-MoE benchmark at a 25% budget (docs/BENCHMARKS.md) the cache's share
  // is ~100 MB, and 2 more fetch buffers instead of 26 MB of cached experts (7%
  // hits) decoded no slower (2.15 against 2.11 tokens/s, one run each, with the
  // drive the bottleneck in both).
  const std::size_t k = std::max<std::size_t>(table_.experts_per_token, 1);
  const std::uint64_t decoded_size = MemoryBlock::charged_size(table_.max_decoded_block);
  const std::uint64_t staging_size = MemoryBlock::charged_size(table_.max_staging);
  const std::uint64_t pipelined = std::min(options.budget, minimum + 2 * staging_size);
  const std::uint64_t allowance = std::max(options.budget / 4, pipelined);
  std::size_t buffers = k, staging = 1;
  while (staging < k + 2 && buffers * decoded_size + (staging + 1) * staging_size <= allowance) ++staging;
  while (buffers < 2 * k && (buffers + 1) * decoded_size + staging * staging_size <= allowance) ++buffers;
  const std::uint64_t working_set = buffers * decoded_size + staging * staging_size;

  decode_buffers_ = buffers;
  decoded_.resize(buffers);
  decoded_owner_.assign(buffers, -1);
  for (std::size_t b = 0; b < buffers; ++b) {
    ZIPMOE_RETURN_IF_ERROR(decoded_[b].allocate(ledger_, table_.max_decoded_block));
    free_decoded_.push_back(static_cast<int>(buffers - 1 - b));
  }
  staging_.resize(staging);
  for (std::size_t s = 0; s < staging; ++s) {
    ZIPMOE_RETURN_IF_ERROR(staging_[s].allocate(ledger_, table_.max_staging));
    free_staging_.push_back(static_cast<int>(staging - 1 - s));
  }

  cost_.read_latency_seconds = options.read_latency;
  ZIPMOE_RETURN_IF_ERROR(measure(&cost_));

  // Routing probabilities: the profile's where it has seen tokens, else uniform.
  const std::size_t groups = table_.moe_layers.size(), E = table_.num_experts;
  std::vector<double> prior(table_.experts.size(), double(k) / double(std::max<std::size_t>(E, 1)));
  double prior_weight = 16;
  if (options.prior) {
    ZIPMOE_RETURN_IF_ERROR(options.prior->check_compatible(table_.moe_index_of_layer.size(), table_.moe_layers, E));
    for (std::size_t m = 0; m < groups; ++m) {
      for (std::size_t e = 0; e < E; ++e) prior[table_.id(m, e)] = options.prior->probability(m, e);
    }
    prior_weight = double(std::min<std::uint64_t>(std::max<std::uint64_t>(options.prior->total_tokens(), 16), 1024));
  }
  for (std::size_t id = 0; id < costs_.size(); ++id) costs_[id].probability = prior[id];
  ranker_ = PolicyRanker(options.policy, groups, E, k, prior, prior_weight);

  tier_budget_ = options.budget - working_set;
  // Without a profile the first plan assumes uniform routing; plans follow as the
  // routing seen online outweighs that guess (steps 8, 16, 32, ..., then every 512).
  next_replan_step_ = 8;
  const TierPlan plan = plan_tiers(costs_, groups, k, options.allowed_tiers, tier_budget_, cost_);
  for (int t = 0; t < kNumExpertTiers; ++t) capacity_[t] = plan.capacity[t];
  planned_seconds_ = plan.seconds_per_token;
  ZIPMOE_RETURN_IF_ERROR(fill_planned(plan));

  max_prefetch_ = k + staging;
  io_ = std::make_unique<sched::IoQueue>(
      source_.get(), [this](const sched::ReadRequest& read, const sched::ReadResult& result) { on_read_done(read, result); },
      std::max(options.io_threads, 1));
  started_ = true;
  return Status::Ok();
}

Status ExpertCache::measure(CostModel* model) {
  const int threads = pool_ ? pool_->num_threads() : 1;
  model->storage_bytes_per_second = options_.storage_bandwidth;
  model->decode_bytes_per_second = options_.decode_throughput * threads;
  if (table_.experts.empty()) return Status::Ok();
  std::uint8_t* buffer = staging_[0].data();
  const std::size_t buffer_size = staging_[0].size();

  if (model->storage_bytes_per_second <= 0) {
    // The chunks of experts spread over the model, the reads misses make: small
    // exponent chunks and large sign/mantissa chunks, timed apart, give the
    // bandwidth and the cost of one read (t = latency + bytes / bandwidth).
    std::uint64_t bytes[2] = {0, 0}, nanoseconds[2] = {0, 0}, reads[2] = {0, 0};
    const std::size_t n = table_.experts.size();
    const std::size_t stride = std::max<std::size_t>(1, n / 16);
    for (std::size_t id = 0; id < n && bytes[0] + bytes[1] < kMeasureMaximumBytes; id += stride) {
      const ExpertLayout& x = table_.experts[id];
      for (const ProjectionLayout& p : x.projections) {
        for (int kind = 0; kind < 2; ++kind) {
          const auto start = Clock::now();
          ZIPMOE_RETURN_IF_ERROR(source_->read(kind ? p.sm_chunk : p.exponent_chunk, buffer, buffer_size));
          nanoseconds[kind] += nanoseconds_since(start);
          bytes[kind] += kind ? p.sm_bytes : p.exponent_bytes;
          ++reads[kind];
        }
      }
    }
    model->storage_bytes_per_second = kDefaultStorageBandwidth;
    fit_storage(bytes, nanoseconds, reads, model);
  }
  if (model->decode_bytes_per_second <= 0) {
    const ExpertLayout& x = table_.experts[0];
    for (const ProjectionLayout& p : x.projections) {
      ZIPMOE_RETURN_IF_ERROR(source_->read(p.exponent_chunk, buffer + p.staging_exponent_offset, p.staging_exponent_size));
      ZIPMOE_RETURN_IF_ERROR(source_->read(p.sm_chunk, buffer + p.staging_sm_offset, p.staging_sm_size));
    }
    std::uint8_t* out = decoded_[0].data();
    std::uint64_t bytes = 0, nanoseconds = 0;
    for (int round = 0; round < 8 && (bytes < kMeasureMinimumBytes || nanoseconds < 20000000); ++round) {
      const auto start = Clock::now();
      for (const ProjectionLayout& p : x.projections) {
        ZIPMOE_RETURN_IF_ERROR(reader_->decode_chunks(*p.tensor, buffer + p.staging_exponent_offset, p.exponent_bytes,
                                                      buffer + p.staging_sm_offset, p.sm_bytes,
                                                      out + p.decoded_offset, p.decoded_bytes, pool_, isa_));
      }
      nanoseconds += nanoseconds_since(start);
      bytes += x.decoded_bytes;
    }
    model->decode_bytes_per_second = bytes >= kMeasureMinimumBytes && nanoseconds > 0
                                         ? double(bytes) / (double(nanoseconds) * 1e-9)
                                         : kDefaultDecodeThroughput * threads;
  }
  return Status::Ok();
}

Status ExpertCache::fill_planned(const TierPlan& plan) {
  std::uint8_t* staging = staging_[0].data();
  const std::size_t staging_size = staging_[0].size();
  (void)staging_size;
  for (std::size_t id = 0; id < plan.tiers.size(); ++id) {
    const ExpertTier tier = plan.tiers[id];
    if (tier == ExpertTier::kAbsent) continue;
    const ExpertLayout& x = table_.experts[id];
    ExpertSlot& slot = experts_[id];
    const bool full = tier == ExpertTier::kFull;
    const bool exponents = full || tier_holds_exponents(tier);
    const bool sm = full || tier_holds_sm(tier);
    for (const ProjectionLayout& p : x.projections) {
      if (exponents) ZIPMOE_RETURN_IF_ERROR(source_->read(p.exponent_chunk, staging + p.staging_exponent_offset, p.staging_exponent_size));
      if (sm) ZIPMOE_RETURN_IF_ERROR(source_->read(p.sm_chunk, staging + p.staging_sm_offset, p.staging_sm_size));
    }
    if (full) {
      const int b = static_cast<int>(decoded_.size());
      decoded_.emplace_back();
      decoded_owner_.push_back(-2);
      ZIPMOE_RETURN_IF_ERROR(decoded_[b].allocate(ledger_, table_.max_decoded_block));
      for (const ProjectionLayout& p : x.projections) {
        ZIPMOE_RETURN_IF_ERROR(reader_->decode_chunks(*p.tensor, staging + p.staging_exponent_offset,
                                                      p.exponent_bytes, staging + p.staging_sm_offset, p.sm_bytes,
                                                      decoded_[b].data() + p.decoded_offset, p.decoded_bytes, pool_,
                                                      isa_));
      }
      slot.decoded = b;
      ++full_count_;
    } else {
      if (exponents) {
        ZIPMOE_RETURN_IF_ERROR(slot.exponent.allocate(ledger_, x.exponent_block_bytes));
        for (const ProjectionLayout& p : x.projections) {
          std::memcpy(slot.exponent.data() + p.exponent_offset, staging + p.staging_exponent_offset, p.exponent_bytes);
        }
      }
      if (sm) {
        ZIPMOE_RETURN_IF_ERROR(slot.sm.allocate(ledger_, x.sm_block_bytes));
        for (const ProjectionLayout& p : x.projections) {
          std::memcpy(slot.sm.data() + p.sm_offset, staging + p.staging_sm_offset, p.sm_bytes);
        }
      }
    }
    slot.tier = tier;
    used_[tier_index(tier)] += bytes_in(id, tier);
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Bookkeeping (all under mutex_)

std::uint64_t ExpertCache::bytes_in(std::size_t expert, ExpertTier tier) const {
  return costs_[expert].bytes[tier_index(tier)];
}

ExpertTier ExpertCache::tier_of(std::size_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return experts_[id].tier;
}

int ExpertCache::new_fetch(std::size_t expert, bool prefetch) {
  int f;
  if (!free_fetches_.empty()) {
    f = free_fetches_.back();
    free_fetches_.pop_back();
  } else {
    f = static_cast<int>(fetches_.size());
    fetches_.emplace_back();
  }
  Fetch& fe = fetches_[f];
  fe = Fetch();
  fe.live = true;
  fe.tag = (next_tag_++ << 32) | static_cast<std::uint32_t>(f);
  fe.expert = expert;
  fe.prefetch = prefetch;
  ExpertSlot& slot = experts_[expert];
  fe.tier_at_start = slot.tier;
  fe.read_exponents = !tier_holds_exponents(slot.tier);
  fe.read_sm = !tier_holds_sm(slot.tier);
  fe.submitted = !fe.read_exponents && !fe.read_sm;
  slot.fetch = f;
  ++slot.pins;
  return f;
}

void ExpertCache::free_fetch(int f) {
  Fetch& fe = fetches_[f];
  if (!fe.live) return;
  if (fe.buffer >= 0) return_decode_buffer(fe.buffer);
  fe.buffer = -1;
  if (fe.staging >= 0) {
    free_staging_.push_back(fe.staging);
    fe.staging = -1;
  }
  ExpertSlot& slot = experts_[fe.expert];
  if (slot.fetch == f) slot.fetch = -1;
  --slot.pins;
  fe.live = false;
  free_fetches_.push_back(f);
}

void ExpertCache::cancel_fetch(int f) {
  Fetch& fe = fetches_[f];
  if (!fe.live) return;
  if (fe.prefetch && !fe.cancelled) ++counters_.prefetches_cancelled;
  if (fe.submitted && fe.reads_pending > 0 && io_) fe.reads_pending -= static_cast<int>(io_->cancel(fe.tag));
  if (fe.buffer >= 0) {
    return_decode_buffer(fe.buffer);
    fe.buffer = -1;
  }
  // Whoever waits on it must not take it for the expert's fetch any more.
  ExpertSlot& slot = experts_[fe.expert];
  if (slot.fetch == f) slot.fetch = -1;
  if (fe.reads_pending == 0) {
    free_fetch(f);
    start_waiting_fetches();
  } else {
    fe.cancelled = true;  // on_read_done frees it with its staging buffer
  }
}

void ExpertCache::submit_reads(int f) {
  Fetch& fe = fetches_[f];
  const ExpertLayout& x = table_.experts[fe.expert];
  std::uint8_t* base = staging_[fe.staging].data();
  const sched::IoPriority priority = fe.prefetch ? sched::IoPriority::kPrefetch : sched::IoPriority::kDemand;
  const std::uint32_t prefetch_bit = fe.prefetch ? kCookiePrefetch : 0;
  fe.submitted = true;
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projections[j];
    if (fe.read_exponents) {
      ++fe.reads_pending;
      io_->submit({p.exponent_chunk, base + p.staging_exponent_offset, p.staging_exponent_size, fe.tag,
                   std::uint32_t(j) | prefetch_bit},
                  priority);
    }
    if (fe.read_sm) {
      ++fe.reads_pending;
      io_->submit(
          {p.sm_chunk, base + p.staging_sm_offset, p.staging_sm_size, fe.tag, std::uint32_t(j) | kCookieSm | prefetch_bit},
          priority);
    }
  }
}

void ExpertCache::start_waiting_fetches() {
  auto pop_live = [&](std::deque<int>& queue) -> int {
    while (!queue.empty()) {
      const int f = queue.front();
      queue.pop_front();
      if (f >= 0 && static_cast<std::size_t>(f) < fetches_.size()) {
        const Fetch& fe = fetches_[f];
        if (fe.live && !fe.cancelled && !fe.submitted && fe.staging < 0) return f;
      }
    }
    return -1;
  };
  for (;;) {
    if (free_staging_.empty()) {
      // A request never waits behind a guess: take the buffer of a prefetch.
      bool demand_waits = false;
      for (int f : waiting_demand_) {
        const Fetch& fe = fetches_[f];
        demand_waits |= fe.live && !fe.cancelled && !fe.submitted && fe.staging < 0;
      }
      if (!demand_waits) return;
      bool reclaiming = false;
      int victim = -1;
      for (std::size_t f = 0; f < fetches_.size(); ++f) {
        const Fetch& fe = fetches_[f];
        if (!fe.live || fe.staging < 0) continue;
        if (fe.cancelled) {
          reclaiming = true;
        } else if (fe.prefetch && !fe.decoding) {
          victim = static_cast<int>(f);
        }
      }
      if (reclaiming || victim < 0) return;
      cancel_fetch(victim);  // frees the buffer now, or when its reads in flight complete
      if (free_staging_.empty()) return;
    }
    int f = pop_live(waiting_demand_);
    if (f < 0) f = pop_live(waiting_prefetch_);
    if (f < 0) return;
    fetches_[f].staging = free_staging_.back();
    free_staging_.pop_back();
    submit_reads(f);
  }
}

int ExpertCache::needed_chunks(const Fetch& fe) const { return (fe.read_exponents ? 1 : 0) + (fe.read_sm ? 1 : 0); }

bool ExpertCache::projection_ready(const Fetch& fe, int j) const {
  return fe.live && !fe.cancelled && fe.error.ok() && !fe.decoded[j] && fe.submitted &&
         fe.chunks_ready[j] == needed_chunks(fe);
}

int ExpertCache::take_decode_buffer(bool for_request) {
  if (!free_decoded_.empty()) {
    const int b = free_decoded_.back();
    free_decoded_.pop_back();
    return b;
  }
  std::size_t allocated = 0;
  int empty = -1;
  for (std::size_t b = 0; b < decoded_.size(); ++b) {
    if (decoded_[b].empty()) {
      if (empty < 0) empty = static_cast<int>(b);
    } else {
      ++allocated;
    }
  }
  if (allocated < decode_buffers_ + full_count_) {
    if (empty < 0) {
      empty = static_cast<int>(decoded_.size());
      decoded_.emplace_back();
      decoded_owner_.push_back(-1);
    }
    if (decoded_[empty].allocate(ledger_, table_.max_decoded_block).ok()) return empty;
  }
  if (!for_request) return -1;
  // Take the buffer of a guess (decoded ahead for the next layer).
  for (std::size_t f = 0; f < fetches_.size(); ++f) {
    Fetch& fe = fetches_[f];
    if (!fe.live || !fe.prefetch || fe.buffer < 0 || fe.decoding) continue;
    const int b = fe.buffer;
    fe.buffer = -1;
    fe.decoded_count = 0;
    for (bool& d : fe.decoded) d = false;
    return b;
  }
  return -1;
}

void ExpertCache::return_decode_buffer(int b) {
  decoded_owner_[b] = -1;
  std::size_t allocated = 0;
  for (const MemoryBlock& block : decoded_) allocated += block.empty() ? 0 : 1;
  if (allocated > decode_buffers_ + full_count_) {
    decoded_[b].release();
  } else {
    free_decoded_.push_back(b);
  }
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
    const int b = slot.decoded;
    slot.decoded = -1;
    --full_count_;
    return_decode_buffer(b);
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
    const ExpertSlot& slot = experts_[id];
    if (slot.tier != tier || slot.pins > 0 || id == expert) continue;
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

Status ExpertCache::move_to(std::size_t expert, ExpertTier tier, const Fetch* fetch) {
  ExpertSlot& slot = experts_[expert];
  const ExpertLayout& x = table_.experts[expert];
  const ExpertTier from = slot.tier;
  const bool exponents = tier_holds_exponents(tier), sm = tier_holds_sm(tier);
  drop_storage(expert, exponents, sm);
  used_[tier_index(from)] -= bytes_in(expert, from);
  slot.tier = ExpertTier::kAbsent;
  const std::uint8_t* staging = fetch && fetch->staging >= 0 ? staging_[fetch->staging].data() : nullptr;
  Status status;
  if (exponents && slot.exponent.empty()) {
    if (!staging || !fetch->read_exponents) {
      status = Status::Internal("admission without the exponent chunks at hand");
    } else {
      status = slot.exponent.allocate(ledger_, x.exponent_block_bytes);
      if (status.ok()) {
        for (const ProjectionLayout& p : x.projections) {
          std::memcpy(slot.exponent.data() + p.exponent_offset, staging + p.staging_exponent_offset, p.exponent_bytes);
        }
      }
    }
  }
  if (status.ok() && sm && slot.sm.empty()) {
    if (!staging || !fetch->read_sm) {
      status = Status::Internal("admission without the sign/mantissa chunks at hand");
    } else {
      status = slot.sm.allocate(ledger_, x.sm_block_bytes);
      if (status.ok()) {
        for (const ProjectionLayout& p : x.projections) {
          std::memcpy(slot.sm.data() + p.sm_offset, staging + p.staging_sm_offset, p.sm_bytes);
        }
      }
    }
  }
  if (!status.ok()) {
    drop_storage(expert, false, false);
    return status;
  }
  slot.tier = tier;
  used_[tier_index(tier)] += bytes_in(expert, tier);
  return Status::Ok();
}

void ExpertCache::admit(int f) {
  Fetch& fe = fetches_[f];
  fe.admitted = true;
  if (!fe.error.ok()) return;
  const std::size_t id = fe.expert;
  ExpertSlot& slot = experts_[id];
  const ExpertTier from = slot.tier;
  const double key = ranker_.key(id);
  for (ExpertTier tier : kTiersFullestFirst) {
    if (tier == ExpertTier::kAbsent || tier == from) break;
    const int t = tier_index(tier);
    if (!tier_allowed(options_.allowed_tiers, tier) || capacity_[t] == 0) continue;
    const std::uint64_t need = bytes_in(id, tier);
    if (need <= bytes_in(id, from)) continue;
    if (tier == ExpertTier::kFull && fe.buffer < 0) continue;
    // Counted first, so that the buffers of FULL experts it displaces become
    // decode buffers instead of being unmapped and mapped again.
    if (tier == ExpertTier::kFull) ++full_count_;
    if (!make_room(tier, id, key, need)) {
      if (tier == ExpertTier::kFull) --full_count_;
      continue;
    }
    if (tier == ExpertTier::kFull && free_decoded_.empty()) {
      // The decode buffer becomes the expert's: the cache must still have S
      // buffers to decode into, or a later request could wait for one forever.
      const int replacement = take_decode_buffer(false);
      if (replacement < 0) {
        --full_count_;
        continue;
      }
      free_decoded_.push_back(replacement);
    }
    if (tier == ExpertTier::kFull) {
      drop_storage(id, false, false);
      used_[tier_index(from)] -= bytes_in(id, from);
      slot.tier = ExpertTier::kFull;
      slot.decoded = fe.buffer;
      decoded_owner_[fe.buffer] = -2;
      fe.buffer = -1;
      used_[t] += need;
    } else if (!move_to(id, tier, &fe).ok()) {
      return;  // the budget refused (the ledger is shared): the expert stays where move_to left it
    }
    ++counters_.admissions;
    return;
  }
}

void ExpertCache::replan() {
  if (tier_budget_ == 0) return;
  // The figures measured while running replace those of load time once there is enough of them.
  if (options_.decode_throughput <= 0 && measured_decoded_bytes_ >= kMeasureMinimumBytes && measured_decode_ns_ > 0) {
    cost_.decode_bytes_per_second = double(measured_decoded_bytes_) / (double(measured_decode_ns_) * 1e-9);
  }
  if (options_.storage_bandwidth <= 0) fit_storage(measured_read_bytes_, measured_read_ns_, measured_reads_, &cost_);
  if (measured_other_samples_ >= 8) {
    cost_.other_cpu_seconds = double(measured_other_ns_) * 1e-9 / double(measured_other_samples_);
  }
  for (std::size_t id = 0; id < costs_.size(); ++id) costs_[id].probability = ranker_.frequency(id);
  const TierPlan plan = plan_tiers(costs_, table_.moe_layers.size(), std::max<std::size_t>(table_.experts_per_token, 1),
                                   options_.allowed_tiers, tier_budget_, cost_);
  for (int t = 0; t < kNumExpertTiers; ++t) capacity_[t] = plan.capacity[t];
  planned_seconds_ = plan.seconds_per_token;
  ++replans_;
  // Fullest states first, so that a COMPRESSED expert moving down can still find room as SM or E.
  for (ExpertTier tier : kTiersFullestFirst) {
    const int t = tier_index(tier);
    if (tier == ExpertTier::kAbsent || used_[t] <= capacity_[t]) continue;
    std::vector<std::pair<double, std::size_t>> members;
    for (std::size_t id = 0; id < experts_.size(); ++id) {
      if (experts_[id].tier == tier && experts_[id].pins == 0) members.emplace_back(ranker_.key(id), id);
    }
    std::sort(members.begin(), members.end());
    for (std::size_t i = 0; i < members.size() && used_[t] > capacity_[t]; ++i) demote(members[i].second);
  }
}

void ExpertCache::finish_fetch_decode(int f) {
  Fetch& fe = fetches_[f];
  if (fe.prefetch || !fe.error.ok()) return;  // a guess is admitted when a request takes it over
  admit(f);
  if (fe.staging >= 0) {
    free_staging_.push_back(fe.staging);
    fe.staging = -1;
    start_waiting_fetches();
  }
}

void ExpertCache::recycle_delivered() {
  for (int f : delivered_group_) free_fetch(f);
  delivered_group_.clear();
  start_waiting_fetches();
}

void ExpertCache::on_read_done(const sched::ReadRequest& read, const sched::ReadResult& result) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int f = static_cast<int>(read.tag & 0xffffffffu);
  if (f < 0 || static_cast<std::size_t>(f) >= fetches_.size()) return;
  Fetch& fe = fetches_[f];
  if (!fe.live || fe.tag != read.tag) return;
  --fe.reads_pending;
  ExpertLayerStats& stats = layer_stats_[table_.experts[fe.expert].moe_index];
  if (result.status.ok()) {
    const int kind = (read.cookie & kCookieSm) ? 1 : 0;
    measured_read_ns_[kind] += result.nanoseconds;
    measured_read_bytes_[kind] += result.bytes;
    ++measured_reads_[kind];
  }
  stats.bytes_read += result.bytes;
  stats.read_ns += result.nanoseconds;
  stats.chunks_read += result.status.ok() ? 1 : 0;
  if (read.cookie & kCookiePrefetch) stats.prefetch_bytes_read += result.bytes;
  if (!result.status.ok()) {
    if (fe.error.ok()) fe.error = result.status;
  } else {
    ++fe.chunks_ready[read.cookie & 0x3f];
  }
  if (fe.cancelled && fe.reads_pending == 0) {
    free_fetch(f);
    start_waiting_fetches();
  }
  changed_.notify_all();
}

// ---------------------------------------------------------------------------
// The provider interface

void ExpertCache::prefetch(std::uint32_t layer, const std::uint32_t* experts, std::size_t count) {
  if (!wants_prefetch()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (layer >= table_.moe_index_of_layer.size() || table_.moe_index_of_layer[layer] < 0) return;
  const std::uint32_t m = static_cast<std::uint32_t>(table_.moe_index_of_layer[layer]);
  std::size_t live = 0;
  for (const Fetch& fe : fetches_) live += fe.live && fe.prefetch && !fe.cancelled ? 1 : 0;
  // Guesses that are often wrong cost reads and checksums for nothing: take
  // fewer of them (the first ones, which the most tokens chose), never none, so
  // that the accuracy keeps being measured.
  std::size_t limit = max_prefetch_;
  if (prefetch_accuracy_ < 0.5) {
    const double k = double(std::max<std::size_t>(table_.experts_per_token, 1));
    limit = std::min(limit, static_cast<std::size_t>(std::max(1.0, std::ceil(2.0 * k * prefetch_accuracy_))));
  }
  // Nearly always wrong (random weights, or a layer that reshuffles the hidden
  // state): one guess every few layers keeps the accuracy measured.
  if (prefetch_accuracy_ < 0.25 && ++prefetch_probe_ % 8 != 0) return;
  std::size_t started = 0;
  for (std::size_t i = 0; i < count && live < max_prefetch_ && started < limit; ++i) {
    if (experts[i] >= table_.num_experts) continue;
    const std::size_t id = table_.id(m, experts[i]);
    const ExpertSlot& slot = experts_[id];
    if (slot.tier == ExpertTier::kFull || slot.fetch >= 0) continue;
    const int f = new_fetch(id, true);
    ++live;
    ++started;
    ++counters_.prefetches;
    if (!fetches_[f].submitted) waiting_prefetch_.push_back(f);
  }
  start_waiting_fetches();
}

Status ExpertCache::acquire(ExpertRequest* request) {
  if (request->active) return Status::InvalidArgument("expert request acquired twice without release");
  if (!started_) return Status::Internal("expert cache used before start()");
  const std::uint32_t layer = request->layer;
  if (layer >= table_.moe_index_of_layer.size() || table_.moe_index_of_layer[layer] < 0) {
    return Status::InvalidArgument("layer " + std::to_string(layer) + " has no routed experts");
  }
  const std::uint32_t m = static_cast<std::uint32_t>(table_.moe_index_of_layer[layer]);
  const std::size_t n = request->experts.size();
  std::vector<std::uint8_t> wanted(table_.num_experts, 0);
  for (std::uint32_t e : request->experts) {
    if (e >= table_.num_experts) {
      return Status::InvalidArgument("expert " + std::to_string(e) + " of layer " + std::to_string(layer) +
                                     " does not exist");
    }
    if (wanted[e]) return Status::InvalidArgument("expert " + std::to_string(e) + " requested twice");
    wanted[e] = 1;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = Clock::now();
  const bool same_step = static_cast<std::int64_t>(layer) > last_layer_ && step_ > 0;
  if (same_step && last_request_single_token_ && request->tokens == 1) {
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
  last_request_single_token_ = request->tokens == 1;
  if (!same_step) {
    ++step_;
    if (next_replan_step_ && step_ >= next_replan_step_) {
      replan();
      next_replan_step_ = step_ < 512 ? 2 * step_ : step_ + 512;
    }
  }
  last_layer_ = layer;
  counters_.steps = step_;
  ranker_.record_tokens(m, request->tokens);

  // Guesses the forward pass did not confirm are dropped.
  std::size_t guessed = 0, confirmed = 0;
  for (std::size_t f = 0; f < fetches_.size(); ++f) {
    const Fetch& fe = fetches_[f];
    if (!fe.live || !fe.prefetch || fe.cancelled) continue;
    const ExpertLayout& x = table_.experts[fe.expert];
    const bool right = x.moe_index == m && wanted[x.expert];
    ++guessed;
    confirmed += right ? 1 : 0;
    if (!right) cancel_fetch(static_cast<int>(f));
  }
  if (guessed > 0) prefetch_accuracy_ = 0.8 * prefetch_accuracy_ + 0.2 * double(confirmed) / double(guessed);

  ExpertLayerStats& stats = layer_stats_[m];
  request_fetch_.assign(n, -1);
  request_ids_.resize(n);
  std::vector<int> fresh;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t id = table_.id(m, request->experts[i]);
    request_ids_[i] = id;
    const std::uint32_t tokens = i < request->token_counts.size() ? request->token_counts[i] : 1;
    ranker_.record_use(id, step_, tokens);
    ExpertSlot& slot = experts_[id];
    ++slot.pins;
    ++stats.requests;
    ++stats.served_from[tier_index(slot.tier)];
    if (slot.fetch >= 0) {
      const int f = slot.fetch;
      Fetch& fe = fetches_[f];
      ++stats.prefetch_hits;
      ++counters_.prefetches_used;
      if (!fe.error.ok()) {
        cancel_fetch(f);  // retried below, and reported if it fails again
      } else {
        fe.prefetch = false;
        fe.request_index = static_cast<int>(i);
        fe.order = 0;
        request_fetch_[i] = f;
        if (fe.submitted) {
          if (fe.reads_pending > 0) io_->promote(fe.tag);
        } else {
          waiting_demand_.push_front(f);
        }
        if (fe.decoded_count == kProjections) finish_fetch_decode(f);
        continue;
      }
    }
    if (slot.tier == ExpertTier::kFull) continue;
    const int f = new_fetch(id, false);
    fetches_[f].request_index = static_cast<int>(i);
    request_fetch_[i] = f;
    fresh.push_back(f);
  }

  // Johnson's order over the new fetches (sched/fetch_order.h).
  std::vector<sched::FetchJob> jobs(fresh.size());
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    const Fetch& fe = fetches_[fresh[i]];
    jobs[i].io_seconds = expert_io_seconds(costs_[fe.expert], fe.tier_at_start, cost_);
    jobs[i].decode_seconds = expert_decode_seconds(costs_[fe.expert], fe.tier_at_start, cost_);
  }
  std::vector<std::size_t> order(jobs.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (options_.reorder_fetches) order = sched::johnson_order(jobs);
  for (std::size_t position = 0; position < order.size(); ++position) {
    const int f = fresh[order[position]];
    fetches_[f].order = position + 1;
    if (!fetches_[f].submitted) waiting_demand_.push_back(f);
  }
  start_waiting_fetches();

  request->weights.resize(n);
  request->delivered.assign(n, 0);
  request->delivered_count = 0;
  request->active = true;
  request_ = request;
  delivered_group_.clear();
  return Status::Ok();
}

Status ExpertCache::decode_projection(int f, int j, std::uint64_t* nanoseconds) {
  const Fetch& fe = fetches_[f];
  const ExpertLayout& x = table_.experts[fe.expert];
  const ExpertSlot& slot = experts_[fe.expert];
  const ProjectionLayout& p = x.projections[j];
  const std::uint8_t* staging = fe.staging >= 0 ? staging_[fe.staging].data() : nullptr;
  const std::uint8_t* exponent =
      fe.read_exponents ? staging + p.staging_exponent_offset : slot.exponent.data() + p.exponent_offset;
  const std::uint8_t* sm = fe.read_sm ? staging + p.staging_sm_offset : slot.sm.data() + p.sm_offset;
  std::uint8_t* out = decoded_[fe.buffer].data() + p.decoded_offset;
  const auto start = Clock::now();
  const Status status =
      reader_->decode_chunks(*p.tensor, exponent, p.exponent_bytes, sm, p.sm_bytes, out, p.decoded_bytes, pool_, isa_);
  *nanoseconds = nanoseconds_since(start);
  return status;
}

Status ExpertCache::wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) {
  *count = 0;
  if (!request->active || request != request_) {
    return Status::InvalidArgument("wait_ready on an expert request that is not acquired");
  }
  std::unique_lock<std::mutex> lock(mutex_);
  recycle_delivered();
  const std::size_t n = request->experts.size();
  ExpertLayerStats& stats = layer_stats_[static_cast<std::size_t>(table_.moe_index_of_layer[request->layer])];
  for (;;) {
    for (std::size_t i = 0; i < n; ++i) {
      const int f = request_fetch_[i];
      if (f >= 0 && !request->delivered[i] && !fetches_[f].error.ok()) return fetches_[f].error;
    }
    // Deliver whatever is ready.
    for (std::size_t i = 0; i < n; ++i) {
      if (request->delivered[i]) continue;
      const int f = request_fetch_[i];
      const std::size_t id = request_ids_[i];
      if (f < 0) {
        request->weights[i] = expert_weights(table_.experts[id], decoded_[experts_[id].decoded].data());
      } else {
        const Fetch& fe = fetches_[f];
        if (fe.decoded_count < kProjections || !fe.admitted) continue;
        const int b = fe.buffer >= 0 ? fe.buffer : experts_[id].decoded;
        request->weights[i] = expert_weights(table_.experts[id], decoded_[b].data());
        delivered_group_.push_back(f);
      }
      request->delivered[i] = 1;
      ready[(*count)++] = static_cast<std::uint32_t>(i);
    }
    if (*count > 0) {
      request->delivered_count += *count;
      return Status::Ok();
    }
    if (request->delivered_count == n) return Status::Ok();

    // Find decoding work: a started expert first, then the next in the
    // scheduled order, then a guess for the next layer (into a spare buffer).
    int pick = -1, pick_projection = -1;
    bool pick_has_buffer = false;
    std::size_t lacking_buffers = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const int f = request_fetch_[i];
      if (f < 0 || request->delivered[i]) continue;
      const Fetch& fe = fetches_[f];
      if (fe.buffer < 0 && fe.decoded_count < kProjections) ++lacking_buffers;
      for (int j = 0; j < kProjections; ++j) {
        if (!projection_ready(fe, j)) continue;
        const bool has_buffer = fe.buffer >= 0;
        if (pick < 0 || (has_buffer && !pick_has_buffer) ||
            (has_buffer == pick_has_buffer && fe.order < fetches_[pick].order)) {
          pick = f;
          pick_projection = j;
          pick_has_buffer = has_buffer;
        }
        break;
      }
    }
    bool starved = false;
    if (pick >= 0 && fetches_[pick].buffer < 0) {
      const int b = take_decode_buffer(true);
      if (b < 0) {
        pick = -1;
        starved = true;
      } else {
        fetches_[pick].buffer = b;
        decoded_owner_[b] = pick;
      }
    }
    if (pick < 0 && prefetch_accuracy_ >= 0.5) {
      for (std::size_t f = 0; f < fetches_.size() && pick < 0; ++f) {
        Fetch& fe = fetches_[f];
        if (!fe.live || !fe.prefetch) continue;
        for (int j = 0; j < kProjections; ++j) {
          if (!projection_ready(fe, j)) continue;
          if (fe.buffer < 0) {
            if (free_decoded_.size() <= lacking_buffers) break;
            const int b = take_decode_buffer(false);
            if (b < 0) break;
            fe.buffer = b;
            decoded_owner_[b] = static_cast<int>(f);
          }
          pick = static_cast<int>(f);
          pick_projection = j;
          break;
        }
      }
    }
    if (pick >= 0) {
      const std::size_t layer_index = table_.experts[fetches_[pick].expert].moe_index;
      std::uint64_t nanoseconds = 0;
      fetches_[pick].decoding = true;
      lock.unlock();
      const Status status = decode_projection(pick, pick_projection, &nanoseconds);
      lock.lock();
      Fetch& fe = fetches_[pick];
      fe.decoding = false;
      ExpertLayerStats& decode_stats = layer_stats_[layer_index];
      const std::uint64_t decoded = table_.experts[fe.expert].projections[pick_projection].decoded_bytes;
      decode_stats.decode_ns += nanoseconds;
      decode_stats.decoded_bytes += decoded;
      measured_decode_ns_ += nanoseconds;
      measured_decoded_bytes_ += decoded;
      request_busy_ns_ += nanoseconds;
      if (!fe.live) continue;
      if (!status.ok()) {
        if (fe.error.ok()) fe.error = status;
        if (fe.prefetch) cancel_fetch(pick);
        continue;
      }
      fe.decoded[pick_projection] = true;
      if (++fe.decoded_count == kProjections) finish_fetch_decode(pick);
      continue;
    }
    if (starved) {
      // Nothing holds a decode buffer that it will give back: waiting would never end.
      bool holder = false;
      for (const Fetch& fe : fetches_) holder |= fe.live && fe.buffer >= 0;
      if (!holder) return Status::Budget("expert cache: no decode buffer left within the memory budget");
    }
    const auto start = Clock::now();
    changed_.wait(lock);
    const std::uint64_t waited = nanoseconds_since(start);
    stats.stall_ns += waited;
    request_busy_ns_ += waited;
  }
}

void ExpertCache::release(ExpertRequest* request) {
  std::lock_guard<std::mutex> lock(mutex_);
  recycle_delivered();
  for (std::size_t i = 0; i < request_fetch_.size(); ++i) {
    const int f = request_fetch_[i];
    if (f >= 0 && fetches_[f].live && fetches_[f].request_index == static_cast<int>(i) && !fetches_[f].prefetch) {
      cancel_fetch(f);
    }
  }
  for (std::size_t id : request_ids_) --experts_[id].pins;
  request_fetch_.clear();
  request_ids_.clear();
  request_ = nullptr;
  request->active = false;
}

std::uint64_t ExpertCache::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::uint64_t bytes = 0;
  for (int t = 0; t < kNumExpertTiers; ++t) bytes += used_[t];
  for (const MemoryBlock& b : decoded_) bytes += b.charged();
  for (const MemoryBlock& b : staging_) bytes += b.charged();
  return bytes - used_[tier_index(ExpertTier::kFull)];  // FULL blocks are among decoded_
}

void ExpertCache::collect_stats(ExpertCacheStats* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  out->enabled = true;
  out->layers = layer_stats_;
  ExpertLayerStats total;
  for (const ExpertLayerStats& s : layer_stats_) {
    total.requests += s.requests;
    for (int t = 0; t < kNumExpertTiers; ++t) total.served_from[t] += s.served_from[t];
    total.prefetch_hits += s.prefetch_hits;
    total.bytes_read += s.bytes_read;
    total.prefetch_bytes_read += s.prefetch_bytes_read;
    total.chunks_read += s.chunks_read;
    total.read_ns += s.read_ns;
    total.decoded_bytes += s.decoded_bytes;
    total.decode_ns += s.decode_ns;
    total.stall_ns += s.stall_ns;
  }
  out->total = total;
  for (int t = 0; t < kNumExpertTiers; ++t) {
    out->experts_in[t] = 0;
    out->tier_bytes[t] = used_[t];
    out->tier_capacity[t] = capacity_[t];
  }
  for (const ExpertSlot& slot : experts_) ++out->experts_in[tier_index(slot.tier)];
  std::uint64_t working = 0;
  for (const MemoryBlock& b : decoded_) working += b.charged();
  working -= used_[tier_index(ExpertTier::kFull)];
  for (const MemoryBlock& b : staging_) working += b.charged();
  out->working_set_bytes = working;
  out->decode_buffers = static_cast<std::uint32_t>(decode_buffers_);
  out->fetch_buffers = static_cast<std::uint32_t>(staging_.size());
  out->prefetches = counters_.prefetches;
  out->prefetches_used = counters_.prefetches_used;
  out->prefetches_cancelled = counters_.prefetches_cancelled;
  out->admissions = counters_.admissions;
  out->evictions = counters_.evictions;
  out->steps = step_;
  out->replans = replans_;
  out->read_latency = cost_.read_latency_seconds;
  out->other_cpu_seconds = cost_.other_cpu_seconds;
  out->storage_bandwidth = cost_.storage_bytes_per_second;
  out->decode_throughput = cost_.decode_bytes_per_second / std::max(1, pool_ ? pool_->num_threads() : 1);
  out->planned_seconds_per_token = planned_seconds_;
}

void ExpertCache::reset_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (ExpertLayerStats& s : layer_stats_) {
    const std::uint32_t layer = s.layer;
    s = ExpertLayerStats();
    s.layer = layer;
  }
  counters_.prefetches = counters_.prefetches_used = counters_.prefetches_cancelled = 0;
  counters_.admissions = counters_.evictions = 0;
}

}  // namespace zipmoe::cache

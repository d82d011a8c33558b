#include "sched/fetch_pipeline.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace zipmoe::sched {

namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t nanoseconds_since(Clock::time_point start) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
}

// A read's cookie: the part, the plane, and whether a prefetch asked for it.
constexpr std::uint32_t kCookiePrefetch = 0x80;
constexpr std::uint32_t kCookieSm = 0x40;
constexpr std::uint32_t kCookiePart = 0x3f;

int record_of(FetchId id) { return static_cast<int>(id & 0xffffffffu); }

// Releases a lock for a scope and takes it back at its end, however it ends.
class Unlocked {
 public:
  explicit Unlocked(FetchPipeline::Lock& lock) : lock_(lock) { lock_.unlock(); }
  ~Unlocked() { lock_.lock(); }
  Unlocked(const Unlocked&) = delete;
  Unlocked& operator=(const Unlocked&) = delete;

 private:
  FetchPipeline::Lock& lock_;
};

}  // namespace

FetchPipeline::FetchPipeline(const format::ContainerFile* file, ThreadPool* pool, MemoryLedger* ledger, Isa isa)
    : file_(file), pool_(pool), ledger_(ledger), isa_(isa) {}

FetchPipeline::~FetchPipeline() {
  // The reader threads may be inside on_read_done(): stop them before anything they touch goes.
  io_.reset();
}

// ---------------------------------------------------------------------------
// Load time

Status FetchPipeline::allocate(const PipelineOptions& options) {
  options_ = options;
  ZIPMOE_RETURN_IF_ERROR(ChunkSource::open(file_, options.io_mode, &source_));
  counters_.assign(options.groups, FetchCounters());
  dropped_epoch_.assign(options.items, 0);
  timeline_.reserve(std::min<std::size_t>(options.timeline_events, 1 << 16));
  decode_.resize(options.decode_buffers);
  for (std::size_t b = 0; b < options.decode_buffers; ++b) {
    ZIPMOE_RETURN_IF_ERROR(decode_[b].allocate(ledger_, options.decoded_block_bytes));
    free_decode_.push_back(static_cast<int>(options.decode_buffers - 1 - b));
    ++decode_held_;
  }
  staging_.resize(options.staging_buffers);
  for (std::size_t s = 0; s < options.staging_buffers; ++s) {
    ZIPMOE_RETURN_IF_ERROR(staging_[s].allocate(ledger_, options.staging_bytes));
    free_staging_.push_back(static_cast<int>(options.staging_buffers - 1 - s));
  }
  return Status::Ok();
}

Status FetchPipeline::probe_reads(const std::vector<const FetchLayout*>& sample, std::uint64_t max_bytes,
                                  PipelineMeasurements* out) {
  std::uint8_t* buffer = staging_[0].data();
  const std::size_t buffer_size = staging_[0].size();
  for (const FetchLayout* layout : sample) {
    if (out->read_bytes[kExponentPlane] + out->read_bytes[kSmPlane] >= max_bytes) break;
    for (int j = 0; j < layout->part_count; ++j) {
      const PartLayout& p = layout->parts[j];
      for (int plane = 0; plane < kPlanes; ++plane) {
        const auto start = Clock::now();
        ZIPMOE_RETURN_IF_ERROR(source_->read(p.chunk[plane], buffer, buffer_size, false));  // timed alone
        out->read_ns[plane] += nanoseconds_since(start);
        out->read_bytes[plane] += p.stored_bytes[plane];
        ++out->reads[plane];
      }
    }
  }
  return Status::Ok();
}

Status FetchPipeline::probe_decode(const FetchLayout& layout, std::uint64_t min_bytes, std::uint64_t min_ns,
                                   int max_rounds, PipelineMeasurements* out) {
  const bool both[kPlanes] = {true, true};
  const std::uint8_t* staged = nullptr;
  ZIPMOE_RETURN_IF_ERROR(stage_now(layout, both, &staged, false));  // checked by each decode, as streamed chunks are
  std::uint64_t decoded_bytes = 0;
  for (int j = 0; j < layout.part_count; ++j) decoded_bytes += layout.parts[j].decoded_bytes;
  // Untimed first: the decode buffer's pages are touched for the first time
  // (faults and zeroing the running cache never pays again), and the decoder's
  // tables and the pool's threads warm up.
  ZIPMOE_RETURN_IF_ERROR(decode_staged_now(layout, decode_[0].data()));
  for (int round = 0; round < max_rounds && (out->decoded_bytes < min_bytes || out->decode_ns < min_ns); ++round) {
    const auto start = Clock::now();
    ZIPMOE_RETURN_IF_ERROR(decode_staged_now(layout, decode_[0].data()));
    out->decode_ns += nanoseconds_since(start);
    out->decoded_bytes += decoded_bytes;
  }
  return Status::Ok();
}

Status FetchPipeline::stage_now(const FetchLayout& layout, const bool read[kPlanes], const std::uint8_t** staging,
                                bool verify) {
  std::uint8_t* base = staging_[0].data();
  for (int j = 0; j < layout.part_count; ++j) {
    const PartLayout& p = layout.parts[j];
    for (int plane = 0; plane < kPlanes; ++plane) {
      if (!read[plane]) continue;
      ZIPMOE_RETURN_IF_ERROR(
          source_->read(p.chunk[plane], base + p.staging_offset[plane], p.staging_size[plane], verify));
    }
  }
  *staging = base;
  return Status::Ok();
}

Status FetchPipeline::decode_staged_now(const FetchLayout& layout, std::uint8_t* out) {
  const std::uint8_t* base = staging_[0].data();
  for (int j = 0; j < layout.part_count; ++j) {
    const PartLayout& p = layout.parts[j];
    ZIPMOE_RETURN_IF_ERROR(file_->decode_chunks_verified(
        *p.tensor, base + p.staging_offset[kExponentPlane], p.stored_bytes[kExponentPlane],
        base + p.staging_offset[kSmPlane], p.stored_bytes[kSmPlane], out + p.decoded_offset, p.decoded_bytes, pool_,
        isa_));
  }
  return Status::Ok();
}

void FetchPipeline::start(int io_threads) {
  io_ = std::make_unique<IoQueue>(
      source_.get(), [this](const ReadRequest& read, const ReadResult& result) { on_read_done(read, result); },
      std::max(io_threads, 1));
}

// ---------------------------------------------------------------------------
// Records

FetchPipeline::Fetch* FetchPipeline::find(FetchId id) {
  return const_cast<Fetch*>(static_cast<const FetchPipeline*>(this)->find(id));
}

const FetchPipeline::Fetch* FetchPipeline::find(FetchId id) const {
  const int f = record_of(id);
  if (id == kNoFetch || f < 0 || static_cast<std::size_t>(f) >= fetches_.size()) return nullptr;
  const Fetch& fetch = fetches_[f];
  return fetch.id == id && fetch.state != FetchState::kFree ? &fetch : nullptr;
}

bool FetchPipeline::in_progress(FetchId id) const {
  const Fetch* fetch = find(id);
  return fetch && fetch->state != FetchState::kCancelled;
}

FetchState FetchPipeline::state(FetchId id) const {
  const Fetch* fetch = find(id);
  return fetch ? fetch->state : FetchState::kFree;
}

const Status& FetchPipeline::error(FetchId id) const {
  static const Status kOk;
  const Fetch* fetch = find(id);
  return fetch ? fetch->error : kOk;
}

std::size_t FetchPipeline::item(FetchId id) const { return find(id)->spec.item; }

bool FetchPipeline::read_plane(FetchId id, int plane) const { return find(id)->spec.read[plane]; }

const std::uint8_t* FetchPipeline::staged(FetchId id, int part, int plane) const {
  const Fetch* fetch = find(id);
  if (!fetch || fetch->staging < 0 || !fetch->spec.read[plane]) return nullptr;
  return staging_[fetch->staging].data() + fetch->spec.layout->parts[part].staging_offset[plane];
}

const std::uint8_t* FetchPipeline::decoded(FetchId id) const {
  const Fetch* fetch = find(id);
  return fetch && fetch->buffer >= 0 ? decode_[fetch->buffer].data() : nullptr;
}

int FetchPipeline::planes_read(const Fetch& fetch) const {
  return (fetch.spec.read[kExponentPlane] ? 1 : 0) + (fetch.spec.read[kSmPlane] ? 1 : 0);
}

int FetchPipeline::readable_part(const Fetch& fetch) const {
  if (fetch.state != FetchState::kActive) return -1;
  for (int j = 0; j < fetch.spec.layout->part_count; ++j) {
    if (fetch.parts[j] == PartState::kReadable) return j;
  }
  return -1;
}

FetchId FetchPipeline::create(const FetchSpec& spec) {
  int f;
  if (!free_records_.empty()) {
    f = free_records_.back();
    free_records_.pop_back();
  } else {
    f = static_cast<int>(fetches_.size());
    fetches_.emplace_back();
  }
  Fetch& fetch = fetches_[f];
  fetch = Fetch();
  fetch.id = (FetchId(next_generation_++) << 32) | static_cast<std::uint32_t>(f);
  if (next_generation_ == 0) next_generation_ = 1;  // no id is kNoFetch
  fetch.spec = spec;
  if (planes_read(fetch) == 0) {
    // Every plane is at rest: decode only.
    fetch.state = FetchState::kActive;
    for (int j = 0; j < spec.layout->part_count; ++j) fetch.parts[j] = PartState::kReadable;
  } else {
    fetch.state = FetchState::kQueued;
    if (spec.priority == IoPriority::kPrefetch) waiting_prefetch_.push_back(fetch.id);
  }
  return fetch.id;
}

void FetchPipeline::schedule(const std::vector<FetchId>& fetches, const std::vector<FetchJob>& jobs, bool reorder) {
  std::vector<std::size_t> order(fetches.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  if (reorder) order = johnson_order(jobs);
  for (std::size_t position = 0; position < order.size(); ++position) {
    Fetch* fetch = find(fetches[order[position]]);
    fetch->order = position + 1;
    if (fetch->state == FetchState::kQueued) waiting_demand_.push_back(fetch->id);
  }
  dispatch();
}

bool FetchPipeline::adopt(FetchId id) {
  Fetch* fetch = find(id);
  fetch->spec.priority = IoPriority::kDemand;
  fetch->order = 0;
  if (fetch->state == FetchState::kQueued) {
    waiting_demand_.push_front(id);
  } else if (fetch->reads_pending > 0) {
    io_->promote(id);
  }
  fetch->used = fetch->state == FetchState::kDecoded;
  return fetch->used;
}

void FetchPipeline::cancel(FetchId id) {
  Fetch* fetch = find(id);
  if (!fetch || fetch->state == FetchState::kCancelled) return;
  cancel_record(fetch);
  dispatch();
}

void FetchPipeline::cancel_record(Fetch* fetch) {
  if (fetch->spec.priority == IoPriority::kPrefetch) ++prefetches_cancelled_;
  if (fetch->reads_pending > 0) fetch->reads_pending -= static_cast<int>(io_->cancel(fetch->id));
  if (fetch->buffer >= 0) {
    return_decode_buffer(fetch->buffer);
    fetch->buffer = -1;
  }
  if (fetch->reads_pending == 0) {
    free_record(fetch);
  } else {
    fetch->state = FetchState::kCancelled;  // on_read_done frees it with its staging buffer
  }
}

void FetchPipeline::finish(FetchId id) {
  Fetch* fetch = find(id);
  if (!fetch || fetch->staging < 0) return;
  release_staging(fetch);
  dispatch();
}

void FetchPipeline::free(FetchId id) {
  if (Fetch* fetch = find(id)) free_record(fetch);
}

void FetchPipeline::free_record(Fetch* fetch) {
  if (!fetch->used) {
    // Read or decoded for nothing: a wrong guess, a cancelled or failed fetch.
    FetchCounters& counters = counters_[fetch->spec.group];
    counters.unused_bytes_read += fetch->bytes_read;
    counters.unused_decoded_bytes += fetch->bytes_decoded;
    if (fetch->bytes_read > 0 && fetch->spec.item < dropped_epoch_.size()) {
      dropped_epoch_[fetch->spec.item] = epoch_ + 1;
    }
  }
  if (fetch->buffer >= 0) return_decode_buffer(fetch->buffer);
  fetch->buffer = -1;
  release_staging(fetch);
  fetch->state = FetchState::kFree;
  free_records_.push_back(record_of(fetch->id));
}

void FetchPipeline::release_staging(Fetch* fetch) {
  if (fetch->staging < 0) return;
  free_staging_.push_back(fetch->staging);
  fetch->staging = -1;
}

void FetchPipeline::fail(Fetch* fetch, const Status& status) {
  if (fetch->error.ok()) fetch->error = status;
  if (fetch->state == FetchState::kActive || fetch->state == FetchState::kDecoded) fetch->state = FetchState::kFailed;
}

// ---------------------------------------------------------------------------
// Reads

void FetchPipeline::dispatch() {
  for (;;) {
    if (free_staging_.empty() && !(demand_waits_for_staging() && reclaim_staging())) return;
    Fetch* fetch = pop_queued(&waiting_demand_);
    if (!fetch) fetch = pop_queued(&waiting_prefetch_);
    if (!fetch) return;
    fetch->staging = free_staging_.back();
    free_staging_.pop_back();
    submit_reads(fetch);
  }
}

bool FetchPipeline::demand_waits_for_staging() const {
  for (FetchId id : waiting_demand_) {
    const Fetch* fetch = find(id);
    if (fetch && fetch->state == FetchState::kQueued) return true;
  }
  return false;
}

// A request never waits behind a guess: cancels a prefetch holding a staging
// buffer. True when a buffer is free now (a cancelled fetch with reads in
// flight gives its buffer back later: then nothing more is taken meanwhile).
bool FetchPipeline::reclaim_staging() {
  Fetch* victim = nullptr;
  for (Fetch& fetch : fetches_) {
    if (fetch.state == FetchState::kFree || fetch.staging < 0) continue;
    if (fetch.state == FetchState::kCancelled) return false;
    const bool decoding = std::find(fetch.parts, fetch.parts + kMaxParts, PartState::kDecoding) !=
                          fetch.parts + kMaxParts;
    if (fetch.spec.priority == IoPriority::kPrefetch && !decoding) victim = &fetch;
  }
  if (!victim) return false;
  cancel_record(victim);
  return !free_staging_.empty();
}

FetchPipeline::Fetch* FetchPipeline::pop_queued(std::deque<FetchId>* queue) {
  while (!queue->empty()) {
    Fetch* fetch = find(queue->front());
    queue->pop_front();
    if (fetch && fetch->state == FetchState::kQueued) return fetch;
  }
  return nullptr;
}

void FetchPipeline::submit_reads(Fetch* fetch) {
  const FetchSpec& spec = fetch->spec;
  std::uint8_t* base = staging_[fetch->staging].data();
  const std::uint32_t prefetch_bit = spec.priority == IoPriority::kPrefetch ? kCookiePrefetch : 0;
  fetch->state = FetchState::kActive;
  fetch->reread = spec.item < dropped_epoch_.size() && dropped_epoch_[spec.item] == epoch_ + 1;
  for (int j = 0; j < spec.layout->part_count; ++j) {
    const PartLayout& p = spec.layout->parts[j];
    for (int plane = 0; plane < kPlanes; ++plane) {
      if (!spec.read[plane]) continue;
      ++fetch->reads_pending;
      const std::uint32_t cookie = std::uint32_t(j) | (plane == kSmPlane ? kCookieSm : 0) | prefetch_bit;
      // Unverified: decode() checks the chunk while it decodes it, on the cores that decode.
      io_->submit({p.chunk[plane], base + p.staging_offset[plane], p.staging_size[plane], fetch->id, cookie, false},
                  spec.priority);
    }
  }
}

void FetchPipeline::on_read_done(const ReadRequest& read, const ReadResult& result) {
  const Lock lock(mutex_);
  Fetch* fetch = find(read.tag);
  if (!fetch) return;
  --fetch->reads_pending;
  const int plane = (read.cookie & kCookieSm) ? kSmPlane : kExponentPlane;
  FetchCounters& counters = counters_[fetch->spec.group];
  counters.bytes_read += result.bytes;
  counters.read_ns += result.nanoseconds;
  if (read.cookie & kCookiePrefetch) counters.prefetch_bytes_read += result.bytes;
  if (fetch->reread) counters.reread_bytes += result.bytes;
  fetch->bytes_read += result.bytes;
  if (options_.timeline_events > 0) {
    TimelineEvent event;
    event.kind = TimelineKind::kRead;
    event.thread = static_cast<std::int16_t>(result.thread);
    event.prefetch = (read.cookie & kCookiePrefetch) != 0;
    event.part = static_cast<std::int8_t>(read.cookie & kCookiePart);
    event.sm = plane == kSmPlane;
    event.group = fetch->spec.group;
    event.item = fetch->spec.item;
    event.start = result.start;
    event.end = result.start + std::chrono::nanoseconds(result.nanoseconds);
    record(event);
  }
  if (result.status.ok()) {
    ++counters.chunks_read;
    measured_.read_ns[plane] += result.nanoseconds;
    measured_.read_bytes[plane] += result.bytes;
    ++measured_.reads[plane];
    const int part = static_cast<int>(read.cookie & kCookiePart);
    if (++fetch->chunks_ready[part] == planes_read(*fetch) && fetch->parts[part] == PartState::kReading) {
      fetch->parts[part] = PartState::kReadable;
    }
  } else {
    fail(fetch, result.status);
  }
  if (fetch->state == FetchState::kCancelled && fetch->reads_pending == 0) {
    free_record(fetch);
    dispatch();
  }
  changed_.notify_all();
}

// ---------------------------------------------------------------------------
// Decoding

int FetchPipeline::take_decode_buffer(bool for_demand) {
  if (!free_decode_.empty()) {
    const int b = free_decode_.back();
    free_decode_.pop_back();
    return b;
  }
  if (decode_held_ < options_.decode_buffers) {
    auto empty = std::find_if(decode_.begin(), decode_.end(), [](const MemoryBlock& b) { return b.empty(); });
    if (empty == decode_.end()) empty = decode_.insert(decode_.end(), MemoryBlock());
    if (empty->allocate(ledger_, options_.decoded_block_bytes).ok()) {
      ++decode_held_;
      return static_cast<int>(empty - decode_.begin());
    }
  }
  if (!for_demand) return -1;
  // Take the buffer of a guess (decoded ahead for the next request); it decodes again later.
  for (Fetch& fetch : fetches_) {
    if (fetch.state == FetchState::kFree || fetch.spec.priority != IoPriority::kPrefetch || fetch.buffer < 0) continue;
    if (std::find(fetch.parts, fetch.parts + kMaxParts, PartState::kDecoding) != fetch.parts + kMaxParts) continue;
    const int b = fetch.buffer;
    fetch.buffer = -1;
    fetch.decoded_parts = 0;
    counters_[fetch.spec.group].unused_decoded_bytes += fetch.bytes_decoded;  // decoded again later
    fetch.bytes_decoded = 0;
    for (int j = 0; j < fetch.spec.layout->part_count; ++j) {
      if (fetch.parts[j] == PartState::kDecoded) fetch.parts[j] = PartState::kReadable;
    }
    if (fetch.state == FetchState::kDecoded) fetch.state = FetchState::kActive;
    return b;
  }
  return -1;
}

void FetchPipeline::return_decode_buffer(int b) {
  if (decode_held_ > options_.decode_buffers) {
    decode_[b].release();
    --decode_held_;
  } else {
    free_decode_.push_back(b);
  }
}

FetchPipeline::Work FetchPipeline::next_decode(const std::vector<FetchId>& demand, DecodeJob* job) {
  // A demand fetch's part: of one holding a decode buffer first (it completes
  // sooner), then by schedule order.
  Fetch* pick = nullptr;
  int part = -1;
  std::size_t lacking = 0;  // demand fetches still to decode that hold no buffer
  for (FetchId id : demand) {
    Fetch* fetch = find(id);
    if (!fetch) continue;
    if (fetch->buffer < 0 && fetch->decoded_parts < fetch->spec.layout->part_count) ++lacking;
    const int j = readable_part(*fetch);
    if (j < 0) continue;
    const bool has_buffer = fetch->buffer >= 0;
    const bool pick_has_buffer = pick && pick->buffer >= 0;
    if (!pick || (has_buffer && !pick_has_buffer) || (has_buffer == pick_has_buffer && fetch->order < pick->order)) {
      pick = fetch;
      part = j;
    }
  }
  bool starved = false;
  if (pick && pick->buffer < 0) {
    const int b = take_decode_buffer(true);
    if (b < 0) {
      pick = nullptr;
      starved = true;
    } else {
      pick->buffer = b;
    }
  }
  if (!pick && guess_accuracy_ >= 0.5) {
    const int f = pick_guess_to_decode(lacking, &part);
    if (f >= 0) pick = &fetches_[f];
  }
  if (!pick) return starved ? Work::kStarved : Work::kNone;
  job->fetch = pick->id;
  job->part = part;
  return Work::kFound;
}

// A readable part of a guess, with a decode buffer to spare for it (one the
// demand fetches `lacking` one will not need); -1 when there is none.
int FetchPipeline::pick_guess_to_decode(std::size_t lacking, int* part) {
  for (std::size_t f = 0; f < fetches_.size(); ++f) {
    Fetch& fetch = fetches_[f];
    if (fetch.spec.priority != IoPriority::kPrefetch) continue;
    const int j = readable_part(fetch);
    if (j < 0) continue;
    if (fetch.buffer < 0) {
      if (free_decode_.size() <= lacking) continue;
      const int b = take_decode_buffer(false);
      if (b < 0) continue;
      fetch.buffer = b;
    }
    *part = j;
    return static_cast<int>(f);
  }
  return -1;
}

std::uint64_t FetchPipeline::decode(Lock& lock, const DecodeJob& job, bool* completed) {
  *completed = false;
  const int f = record_of(job.fetch);
  const int j = job.part;
  Fetch& fetch = fetches_[f];
  const FetchSpec& spec = fetch.spec;
  const PartLayout& p = spec.layout->parts[j];
  const std::uint8_t* planes[kPlanes];
  for (int plane = 0; plane < kPlanes; ++plane) {
    planes[plane] = spec.read[plane] ? staging_[fetch.staging].data() + p.staging_offset[plane]
                                     : spec.rest[plane] + p.rest_offset[plane];
  }
  std::uint8_t* out = decode_[fetch.buffer].data() + p.decoded_offset;
  // Records are only created by this thread, and a part being decoded is never
  // taken away: `fetch` stays valid while the lock is released. Should the
  // decoder throw, the part is readable again once the lock is back.
  fetch.parts[j] = PartState::kDecoding;
  struct PartGuard {
    PartState* state;
    ~PartGuard() {
      if (*state == PartState::kDecoding) *state = PartState::kReadable;
    }
  } guard{&fetch.parts[j]};
  Status status;
  const auto start = Clock::now();
  {
    const Unlocked unlocked(lock);
    // Planes read for this fetch are unverified: checked during the decode. The
    // others rest in the owner's blocks, which hold only checked bytes.
    const auto decode_chunks = planes_read(fetch) > 0 ? &format::ContainerFile::decode_chunks_verified
                                                      : &format::ContainerFile::decode_chunks;
    status = (file_->*decode_chunks)(*p.tensor, planes[kExponentPlane], p.stored_bytes[kExponentPlane],
                                     planes[kSmPlane], p.stored_bytes[kSmPlane], out, p.decoded_bytes, pool_, isa_);
  }
  const std::uint64_t nanoseconds = nanoseconds_since(start);
  if (options_.timeline_events > 0) {
    TimelineEvent event;
    event.kind = TimelineKind::kDecode;
    event.thread = -1;
    event.prefetch = spec.priority == IoPriority::kPrefetch;
    event.part = static_cast<std::int8_t>(j);
    event.group = spec.group;
    event.item = spec.item;
    event.start = start;
    event.end = start + std::chrono::nanoseconds(nanoseconds);
    record(event);
  }
  FetchCounters& counters = counters_[spec.group];
  counters.decode_ns += nanoseconds;
  counters.decoded_bytes += p.decoded_bytes;
  measured_.decode_ns += nanoseconds;
  measured_.decoded_bytes += p.decoded_bytes;
  if (fetch.id != job.fetch || fetch.state == FetchState::kCancelled) return nanoseconds;
  if (!status.ok()) {
    fetch.parts[j] = PartState::kReadable;
    fail(&fetch, status);
    if (spec.priority == IoPriority::kPrefetch) {
      cancel_record(&fetch);
      dispatch();
    }
    return nanoseconds;
  }
  fetch.parts[j] = PartState::kDecoded;
  fetch.bytes_decoded += p.decoded_bytes;
  if (++fetch.decoded_parts == spec.layout->part_count) {
    fetch.state = FetchState::kDecoded;
    *completed = spec.priority == IoPriority::kDemand;
    fetch.used = *completed;
  }
  return nanoseconds;
}

std::uint64_t FetchPipeline::wait(Lock& lock) {
  const auto start = Clock::now();
  changed_.wait(lock);
  const std::uint64_t waited = nanoseconds_since(start);
  if (options_.timeline_events > 0) {
    TimelineEvent event;
    event.kind = TimelineKind::kStall;
    event.thread = -1;
    event.start = start;
    event.end = start + std::chrono::nanoseconds(waited);
    record(event);
  }
  return waited;
}

bool FetchPipeline::decode_buffer_held() const {
  for (const Fetch& fetch : fetches_) {
    if (fetch.state != FetchState::kFree && fetch.buffer >= 0) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// The FULL tier's blocks

MemoryBlock FetchPipeline::detach_decode_buffer(FetchId id) {
  Fetch* fetch = find(id);
  if (!fetch || fetch->buffer < 0) return MemoryBlock();
  MemoryBlock block = std::move(decode_[fetch->buffer]);
  fetch->buffer = -1;
  --decode_held_;
  return block;
}

void FetchPipeline::attach_decode_buffer(FetchId id, MemoryBlock block) {
  Fetch* fetch = find(id);
  auto empty = std::find_if(decode_.begin(), decode_.end(), [](const MemoryBlock& b) { return b.empty(); });
  if (empty == decode_.end()) empty = decode_.insert(decode_.end(), MemoryBlock());
  *empty = std::move(block);
  ++decode_held_;
  fetch->buffer = static_cast<int>(empty - decode_.begin());
}

void FetchPipeline::give_decode_buffer(MemoryBlock block) {
  if (decode_held_ >= options_.decode_buffers) return;  // `block` is freed on return
  auto empty = std::find_if(decode_.begin(), decode_.end(), [](const MemoryBlock& b) { return b.empty(); });
  if (empty == decode_.end()) empty = decode_.insert(decode_.end(), MemoryBlock());
  *empty = std::move(block);
  ++decode_held_;
  free_decode_.push_back(static_cast<int>(empty - decode_.begin()));
}

bool FetchPipeline::ensure_spare_decode_buffer() {
  if (!free_decode_.empty()) return true;
  const int b = take_decode_buffer(false);
  if (b < 0) return false;
  free_decode_.push_back(b);
  return true;
}

// ---------------------------------------------------------------------------
// Guesses

void FetchPipeline::settle_guesses(const std::function<bool(std::size_t item)>& confirmed) {
  std::size_t guessed = 0, right = 0;
  for (Fetch& fetch : fetches_) {
    if (fetch.state == FetchState::kFree || fetch.state == FetchState::kCancelled) continue;
    if (fetch.spec.priority != IoPriority::kPrefetch) continue;
    ++guessed;
    if (confirmed(fetch.spec.item)) {
      ++right;
    } else {
      cancel_record(&fetch);
      dispatch();
    }
  }
  if (guessed > 0) guess_accuracy_ = 0.8 * guess_accuracy_ + 0.2 * double(right) / double(guessed);
}

std::size_t FetchPipeline::prefetch_allowance() {
  const std::size_t most = options_.items_per_request + staging_.size();
  std::size_t live = 0;
  for (const Fetch& fetch : fetches_) {
    const bool guess = fetch.spec.priority == IoPriority::kPrefetch;
    live += guess && fetch.state != FetchState::kFree && fetch.state != FetchState::kCancelled ? 1 : 0;
  }
  // Guesses that are often wrong cost reads and checksums for nothing: take
  // fewer of them (the first ones, which the most tokens chose), never none, so
  // that the accuracy keeps being measured.
  std::size_t limit = most;
  if (guess_accuracy_ < 0.5) {
    const double k = double(std::max<std::size_t>(options_.items_per_request, 1));
    limit = std::min(limit, static_cast<std::size_t>(std::max(1.0, std::ceil(2.0 * k * guess_accuracy_))));
  }
  // Nearly always wrong (random weights, or a layer that reshuffles the hidden
  // state): one guess every few requests keeps the accuracy measured.
  if (guess_accuracy_ < 0.25 && ++guess_probe_ % 8 != 0) return 0;
  return live >= most ? 0 : std::min(limit, most - live);
}

// ---------------------------------------------------------------------------
// Counters

void FetchPipeline::reset_counters() { std::fill(counters_.begin(), counters_.end(), FetchCounters()); }

void FetchPipeline::record(const TimelineEvent& event) {
  if (timeline_.size() < options_.timeline_events) timeline_.push_back(event);
}

std::uint64_t FetchPipeline::working_set_bytes() const {
  std::uint64_t bytes = 0;
  for (const MemoryBlock& b : decode_) bytes += b.charged();
  for (const MemoryBlock& b : staging_) bytes += b.charged();
  return bytes;
}

}  // namespace zipmoe::sched

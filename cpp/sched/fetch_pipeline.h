// FetchPipeline: brings what the expert cache asks for from the container into
// RAM and decodes it, overlapping storage reads with decoding (docs/CACHE.md,
// section 5). The cache decides what is kept in which state; the pipeline
// decides what is read and decoded when, and says when a fetch is ready.
//
// A fetch is one item of the owner (an expert) laid out as a FetchLayout: up to
// kMaxParts parts (projections), each one tensor stored as two chunks, its coded
// exponent plane and its raw sign/mantissa plane. Some planes are read from the
// container; the others are at rest in the owner's memory (FetchSpec::rest).
// A fetch goes through these states:
//
//   kQueued ──(a staging buffer is free: reads submitted)──► kActive
//   kActive ──(every part read, then decoded)──────────────► kDecoded
//   kActive ──(a read or a decode failed)──────────────────► kFailed
//   any ──(cancel)─► kCancelled ──(its reads in flight completed)──► kFree
//   kDecoded, kFailed ──(free, or cancel)──────────────────► kFree
//
// A fetch that reads nothing starts kActive. Within kActive each part is
// kReading until its chunks are in RAM, then kReadable, kDecoding, kDecoded.
//
// Buffers (the working set, charged to the ledger): G staging buffers, each
// holding one fetch's padded chunks from submission until the owner calls
// finish(); S decode buffers, each holding one fetch's decoded parts until it
// is freed, unless the owner detaches it (a FULL expert keeps its decode buffer
// as its block, and gives a block back when it leaves FULL).
//
// Priorities: a demand fetch (a request waits for it) never waits behind a
// prefetch: its reads go first, it takes a prefetch's staging buffer when none
// is free, and a prefetch's decode buffer when none can be allocated. Demand
// fetches read and decode in the order schedule() gives them (Johnson's rule,
// fetch_order.h); prefetches are decoded ahead only while guesses have been
// right (at least half of them, a moving average over requests).
//
// Thread-safety: the owner calls every method with lock() held, except the
// load-time ones (allocate, probe_*, stage_now, decode_staged_now: before
// start()). decode() releases the lock while it decodes; one thread (the
// owner's forward thread) creates fetches and decodes. The reader threads take
// the lock to record each completed read.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/memory_block.h"
#include "common/memory_ledger.h"
#include "common/status.h"
#include "format/container_file.h"
#include "sched/chunk_source.h"
#include "sched/fetch_order.h"
#include "sched/io_queue.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::sched {

constexpr int kMaxParts = 3;
// The two planes of a part, as arrays index them.
constexpr int kExponentPlane = 0;
constexpr int kSmPlane = 1;
constexpr int kPlanes = 2;

// Where one part's planes are: in the container, in a staging buffer once read,
// in the owner's resting blocks, and where the part decodes to.
struct PartLayout {
  const TensorInfo* tensor = nullptr;
  std::uint32_t chunk[kPlanes] = {0, 0};
  std::uint64_t stored_bytes[kPlanes] = {0, 0};  // what a read transfers
  std::size_t staging_offset[kPlanes] = {0, 0};  // 4096-aligned, in a staging buffer
  std::size_t staging_size[kPlanes] = {0, 0};    // padded (the container's chunk_buffer_size)
  std::size_t rest_offset[kPlanes] = {0, 0};     // in the owner's block of that plane
  std::uint64_t decoded_bytes = 0;
  std::size_t decoded_offset = 0;                // in the decoded block
};

struct FetchLayout {
  std::array<PartLayout, kMaxParts> parts;
  int part_count = 0;
};

// A fetch's handle: generation << 32 | record. A handle outlives its fetch
// safely (in_progress() is then false and cancel() does nothing).
using FetchId = std::uint64_t;
constexpr FetchId kNoFetch = 0;

enum class FetchState : std::uint8_t { kFree, kQueued, kActive, kDecoded, kFailed, kCancelled };
enum class PartState : std::uint8_t { kReading, kReadable, kDecoding, kDecoded };

struct FetchSpec {
  std::size_t item = 0;       // the owner's name for it (an expert id)
  std::uint32_t group = 0;    // the counters it adds to (a MoE layer)
  const FetchLayout* layout = nullptr;  // must outlive the fetch
  bool read[kPlanes] = {true, true};    // planes to read; the others are at rest
  const std::uint8_t* rest[kPlanes] = {nullptr, nullptr};  // the owner's blocks of the planes not read
  IoPriority priority = IoPriority::kDemand;
};

// What the pipeline did for one group (a MoE layer) since reset_counters().
struct FetchCounters {
  std::uint64_t bytes_read = 0;           // stored bytes of chunks read (failed reads included)
  std::uint64_t prefetch_bytes_read = 0;  // of which for prefetches
  std::uint64_t unused_bytes_read = 0;    // of which for fetches no request used (wrong guesses, failures)
  std::uint64_t reread_bytes = 0;         // of which for an item whose unused read was dropped in the same epoch
  std::uint64_t chunks_read = 0;          // reads that succeeded
  std::uint64_t read_ns = 0;              // reader threads' time
  std::uint64_t decoded_bytes = 0;
  std::uint64_t unused_decoded_bytes = 0;  // of which for fetches no request used, or decoded again later
  std::uint64_t decode_ns = 0;
};

// One interval of the pipeline's work, for a timeline (FetchPipeline::record).
enum class TimelineKind : std::uint8_t { kRead, kDecode, kStall, kCompute, kOther, kFused };
struct TimelineEvent {
  TimelineKind kind = TimelineKind::kRead;
  std::int16_t thread = 0;  // kRead: the reader thread; others: the forward thread (-1)
  bool prefetch = false;    // kRead, kDecode: for a prefetch
  std::int8_t part = -1;    // kRead, kDecode: the part (kRead: plane = kSmPlane when sm)
  bool sm = false;
  std::uint32_t group = 0;
  std::uint64_t item = 0;
  std::chrono::steady_clock::time_point start{}, end{};
};

// Timings the planner fits its cost model to (never reset): reads of exponent
// chunks [kExponentPlane] and of sign/mantissa chunks [kSmPlane], and decodes.
struct PipelineMeasurements {
  std::uint64_t read_ns[kPlanes] = {0, 0};
  std::uint64_t read_bytes[kPlanes] = {0, 0};
  std::uint64_t reads[kPlanes] = {0, 0};
  std::uint64_t decode_ns = 0;
  std::uint64_t decoded_bytes = 0;
};

struct PipelineOptions {
  std::size_t decode_buffers = 1;      // S
  std::size_t staging_buffers = 1;     // G
  std::size_t decoded_block_bytes = 0;  // a decode buffer: the largest decoded item
  std::size_t staging_bytes = 0;        // a staging buffer: the largest item's padded chunks
  IoMode io_mode = IoMode::kPread;
  std::size_t groups = 0;               // counter groups
  std::size_t items_per_request = 1;    // k: how many items a request usually asks for (prefetch limits)
  std::size_t items = 0;                // the owner's items are 0 .. items-1 (re-read accounting)
  std::size_t timeline_events = 0;      // keep up to this many TimelineEvents (0: none)
};

struct DecodeJob {
  FetchId fetch = kNoFetch;
  int part = 0;
};

class FetchPipeline {
 public:
  using Lock = std::unique_lock<std::mutex>;

  // Reads through `file` and decodes on `pool` with `isa`; buffers are charged
  // to `ledger`. Nothing is allocated or started yet. All must outlive this.
  FetchPipeline(const format::ContainerFile* file, ThreadPool* pool, MemoryLedger* ledger, Isa isa);
  // Stops the reader threads (reads in flight complete), then frees everything.
  ~FetchPipeline();
  FetchPipeline(const FetchPipeline&) = delete;
  FetchPipeline& operator=(const FetchPipeline&) = delete;

  // --- Load time, before start() (no lock needed) ---------------------------

  // Opens the chunk source and allocates the S decode and G staging buffers.
  Status allocate(const PipelineOptions& options);
  // Reads both planes of every part of each layout in turn until `max_bytes`
  // are read, timing exponent and sign/mantissa reads apart (into *out).
  Status probe_reads(const std::vector<const FetchLayout*>& sample, std::uint64_t max_bytes,
                     PipelineMeasurements* out);
  // Decodes `layout` from its stored planes up to `max_rounds` times, until
  // `min_bytes` and `min_ns` are reached (into out->decode_*). Its planes stay
  // in the first staging buffer and its decoded parts in load_time_buffer().
  Status probe_decode(const FetchLayout& layout, std::uint64_t min_bytes, std::uint64_t min_ns, int max_rounds,
                      PipelineMeasurements* out);
  // Reads the planes `read` selects of every part of `layout` into the first
  // staging buffer, whose start it returns in *staging; verified unless
  // !verify (then only decode_staged_now() may use them).
  Status stage_now(const FetchLayout& layout, const bool read[kPlanes], const std::uint8_t** staging,
                   bool verify = true);
  // Decodes every part of `layout` from both planes stage_now() read into `out`
  // (a decoded block), checking their checksums on the way.
  Status decode_staged_now(const FetchLayout& layout, std::uint8_t* out);
  // The first decode buffer, for load-time work (probes) before start().
  std::uint8_t* load_time_buffer() { return decode_.empty() ? nullptr : decode_[0].data(); }
  const std::uint8_t* load_time_staging() const { return staging_.empty() ? nullptr : staging_[0].data(); }
  // Starts `io_threads` reader threads: fetches may be created from now on.
  void start(int io_threads);

  // --- Running, under lock() --------------------------------------------------

  Lock lock() const { return Lock(mutex_); }

  // A new fetch: kQueued (prefetches join the prefetch queue; demand fetches
  // wait for schedule()), or kActive when it reads nothing.
  FetchId create(const FetchSpec& spec);
  // Queues the demand fetches `fetches` (their costs in `jobs`, same order) in
  // Johnson's order (or as given when !reorder), then dispatches.
  void schedule(const std::vector<FetchId>& fetches, const std::vector<FetchJob>& jobs, bool reorder);
  // A request takes over prefetch `id`: it becomes a demand fetch first in
  // line (queued reads promoted). True when it is already kDecoded.
  bool adopt(FetchId id);
  // Abandons the fetch (its queued reads dropped, its buffers freed; reads in
  // flight are waited for in kCancelled), then dispatches.
  void cancel(FetchId id);
  // A decoded demand fetch's owner is done with its staged chunks: the staging
  // buffer goes to the next queued fetch.
  void finish(FetchId id);
  // Frees a fetch the owner is done with (kDecoded or kFailed).
  void free(FetchId id);
  // Gives free staging buffers to queued fetches, demand first, and submits
  // their reads; a demand fetch takes a prefetch's buffer when none is free.
  void dispatch();

  // Not kFree, kCancelled, or a stale handle.
  bool in_progress(FetchId id) const;
  FetchState state(FetchId id) const;
  // The failure of a kFailed fetch (OK otherwise).
  const Status& error(FetchId id) const;
  std::size_t item(FetchId id) const;
  // Whether the fetch read plane `plane`, and where the staged copy of part
  // `part`'s plane is (until finish()).
  bool read_plane(FetchId id, int plane) const;
  const std::uint8_t* staged(FetchId id, int part, int plane) const;
  // The decode buffer holding the fetch's decoded parts (null if it has none).
  const std::uint8_t* decoded(FetchId id) const;

  // Decoding. next_decode() picks the next part to decode: of the demand
  // fetches `demand` (those of the request at hand, in its order), a started
  // one first, then in schedule order; else a part of a prefetch, when guesses
  // have been right, into a spare decode buffer. kStarved: a demand part is
  // readable but no decode buffer can be had.
  enum class Work : std::uint8_t { kFound, kNone, kStarved };
  Work next_decode(const std::vector<FetchId>& demand, DecodeJob* job);
  // Decodes job's part without the lock. A failure makes the fetch kFailed (a
  // prefetch is cancelled). *completed: a demand fetch became kDecoded (the
  // owner decides where it rests, then calls finish()). Returns the time spent.
  std::uint64_t decode(Lock& lock, const DecodeJob& job, bool* completed);
  // Waits until a read completes; returns the time waited.
  std::uint64_t wait(Lock& lock);
  // Whether any fetch holds a decode buffer it will give back.
  bool decode_buffer_held() const;

  // The FULL tier's blocks. detach moves a fetch's decode buffer out of the
  // working set (null block if it has none); attach puts it back; give returns
  // a block leaving FULL (kept as a decode buffer while fewer than S are, else
  // freed); ensure_spare makes sure a decode buffer is free (allocating one
  // within S and the ledger), false if none can be.
  MemoryBlock detach_decode_buffer(FetchId id);
  void attach_decode_buffer(FetchId id, MemoryBlock block);
  void give_decode_buffer(MemoryBlock block);
  bool ensure_spare_decode_buffer();

  // Guesses (prefetches). settle_guesses() ends the guesses made for the
  // request now starting: those `confirmed` does not accept are cancelled, and
  // the share of right ones updates the accuracy. prefetch_allowance() is how
  // many new guesses may start now: fewer, down to one every few requests,
  // while guesses are mostly wrong.
  void settle_guesses(const std::function<bool(std::size_t item)>& confirmed);
  std::size_t prefetch_allowance();

  // Counters and measurements.
  const FetchCounters& counters(std::size_t group) const { return counters_[group]; }
  void reset_counters();
  // The owner's clock for re-read accounting (a forward step): a read of an item
  // whose unused read was dropped in the same epoch counts as reread_bytes.
  void set_epoch(std::uint64_t epoch) { epoch_ = epoch; }
  // Wall time the drive was busy (any read in progress) since start().
  std::uint64_t io_busy_ns() const { return io_ ? io_->busy_nanoseconds() : 0; }
  // The timeline (PipelineOptions::timeline_events, the first ones kept): the
  // owner adds its own intervals.
  void record(const TimelineEvent& event);
  const std::vector<TimelineEvent>& timeline() const { return timeline_; }
  void clear_timeline() { timeline_.clear(); }
  const PipelineMeasurements& measurements() const { return measured_; }
  std::uint64_t prefetches_cancelled() const { return prefetches_cancelled_; }
  void reset_prefetches_cancelled() { prefetches_cancelled_ = 0; }
  // Bytes of the decode and staging buffers held now.
  std::uint64_t working_set_bytes() const;
  std::size_t decode_buffers() const { return options_.decode_buffers; }
  std::size_t staging_buffers() const { return staging_.size(); }

 private:
  struct Fetch {
    FetchState state = FetchState::kFree;
    FetchId id = kNoFetch;
    FetchSpec spec;
    std::size_t order = 0;   // in the request's schedule; 0: an adopted prefetch (first)
    int staging = -1;        // index into staging_
    int buffer = -1;         // index into decode_
    int reads_pending = 0;
    int chunks_ready[kMaxParts] = {0, 0, 0};
    PartState parts[kMaxParts] = {PartState::kReading, PartState::kReading, PartState::kReading};
    int decoded_parts = 0;
    Status error;
    std::uint64_t bytes_read = 0;     // by its reads so far (in flight ones added as they complete)
    std::uint64_t bytes_decoded = 0;  // into its decode buffer, still there
    bool used = false;                // a request took it over and it completed
    bool reread = false;              // its item's unused read was dropped in this epoch
  };

  // A live record of `id`, or null for a stale handle.
  Fetch* find(FetchId id);
  const Fetch* find(FetchId id) const;
  int planes_read(const Fetch& fetch) const;
  int readable_part(const Fetch& fetch) const;
  void submit_reads(Fetch* fetch);
  void cancel_record(Fetch* fetch);
  void free_record(Fetch* fetch);
  void release_staging(Fetch* fetch);
  void fail(Fetch* fetch, const Status& status);
  bool demand_waits_for_staging() const;
  bool reclaim_staging();
  Fetch* pop_queued(std::deque<FetchId>* queue);
  // A free decode buffer, or one allocated within S, or (for a demand fetch) a
  // prefetch's; -1 when there is none.
  int take_decode_buffer(bool for_demand);
  void return_decode_buffer(int buffer);
  int pick_guess_to_decode(std::size_t lacking, int* part);
  void on_read_done(const ReadRequest& read, const ReadResult& result);

  const format::ContainerFile* file_;
  ThreadPool* pool_;
  MemoryLedger* ledger_;
  Isa isa_;
  PipelineOptions options_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;

  std::unique_ptr<ChunkSource> source_;
  std::unique_ptr<IoQueue> io_;  // stopped first by the destructor: its threads touch everything

  std::vector<Fetch> fetches_;
  std::vector<int> free_records_;
  std::uint32_t next_generation_ = 1;
  std::deque<FetchId> waiting_demand_;
  std::deque<FetchId> waiting_prefetch_;

  std::vector<MemoryBlock> staging_;
  std::vector<int> free_staging_;
  std::vector<MemoryBlock> decode_;      // empty blocks are unused slots
  std::vector<int> free_decode_;
  std::size_t decode_held_ = 0;          // non-empty blocks of decode_ (free or held by fetches)

  // Share of guessed items that the next request took (moving average). A guess
  // is decoded ahead only while this is high: decoding a wrong guess delays the
  // request at hand, whereas reading one only uses an idle drive.
  double guess_accuracy_ = 0.5;
  std::uint64_t guess_probe_ = 0;

  std::vector<FetchCounters> counters_;
  std::uint64_t epoch_ = 0;
  std::vector<std::uint64_t> dropped_epoch_;  // per item: epoch + 1 of its last unused read, 0: none
  std::vector<TimelineEvent> timeline_;
  PipelineMeasurements measured_;
  std::uint64_t prefetches_cancelled_ = 0;
};

}  // namespace zipmoe::sched

// IoQueue: the fetch scheduler's I/O stage.
//
// Reads are dispatched in one order, demand reads (a request is waiting for
// them) before prefetch reads, first in first out within each class: the owner
// submits them in the order it wants the drive to follow (fetch_order.h).
// `threads` reader threads (default 2) take the next read as soon as they are
// free, so that the drive has a second read queued while a reader waits for a
// core: with decoding and matrix products keeping every core busy, a single
// reader spends as long waiting to be scheduled after each read as the read
// itself takes (measured here: O_DIRECT 512 KiB reads fell from 0.91 to
// 0.43 GB/s with two busy processes on two cores). With O_DIRECT a read costs
// no CPU beyond its checksum, and none when the owner checks the chunk while
// decoding it (ReadRequest::verify).
//
// The owner may cancel queued reads of a tag (a prefetch that guessed wrong) or
// promote them to demand reads (a prefetch that a request took over). A read
// already in progress always completes and reports.
//
// Thread-safety: submit, cancel and promote may be called from any thread; the
// completion callback runs on the I/O thread with no lock of the queue held
// (it may call submit/cancel/promote).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "sched/chunk_source.h"

namespace zipmoe::sched {

enum class IoPriority : std::uint8_t { kDemand = 0, kPrefetch = 1 };

struct ReadRequest {
  std::uint32_t chunk = 0;
  std::uint8_t* buffer = nullptr;  // at least the reader's chunk_buffer_size(chunk) bytes
  std::size_t buffer_size = 0;
  std::uint64_t tag = 0;     // the owner's name for a group of reads
  std::uint32_t cookie = 0;  // the owner's data, returned with the completion
  bool verify = true;        // false: the owner checks the chunk while decoding it (ChunkSource::read)
};

struct ReadResult {
  Status status;
  std::uint64_t bytes = 0;   // stored bytes read
  std::uint64_t nanoseconds = 0;
  std::chrono::steady_clock::time_point start{};  // when the read began
  int thread = 0;            // which reader thread read it
};

class IoQueue {
 public:
  using Completion = std::function<void(const ReadRequest&, const ReadResult&)>;

  // Starts `threads` (>= 1) reader threads. `source` must outlive the queue.
  IoQueue(const ChunkSource* source, Completion on_done, int threads = 2);
  // Drops queued reads (their completion is never called), waits for the reads
  // in progress (whose completions are called) and joins the threads.
  ~IoQueue();
  IoQueue(const IoQueue&) = delete;
  IoQueue& operator=(const IoQueue&) = delete;

  void submit(const ReadRequest& read, IoPriority priority);
  // Removes the queued reads of `tag`; returns how many (never completed).
  std::size_t cancel(std::uint64_t tag);
  // Moves the queued prefetch reads of `tag` behind the demand reads, in order.
  void promote(std::uint64_t tag);

  std::size_t queued() const;
  // Reads completed since start.
  std::uint64_t completed() const;
  // Wall time, since start, during which at least one read was in progress:
  // how long the drive was busy, whatever the number of reader threads.
  std::uint64_t busy_nanoseconds() const;

 private:
  void run(int thread);

  const ChunkSource* source_;
  Completion on_done_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<ReadRequest> demand_;
  std::deque<ReadRequest> prefetch_;
  bool stopping_ = false;
  std::uint64_t completed_ = 0;
  int in_flight_ = 0;
  std::chrono::steady_clock::time_point busy_since_{};
  std::uint64_t busy_ns_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace zipmoe::sched

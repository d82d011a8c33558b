#include "sched/io_queue.h"

#include <algorithm>
#include <chrono>

namespace zipmoe::sched {

IoQueue::IoQueue(const ChunkSource* source, Completion on_done, int threads)
    : source_(source), on_done_(std::move(on_done)) {
  for (int t = 0; t < std::max(threads, 1); ++t) threads_.emplace_back([this, t] { run(t); });
}

IoQueue::~IoQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    demand_.clear();
    prefetch_.clear();
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void IoQueue::submit(const ReadRequest& read, IoPriority priority) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    (priority == IoPriority::kDemand ? demand_ : prefetch_).push_back(read);
  }
  wake_.notify_one();
}

std::size_t IoQueue::cancel(std::uint64_t tag) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t removed = 0;
  for (std::deque<ReadRequest>* q : {&demand_, &prefetch_}) {
    const auto end = std::remove_if(q->begin(), q->end(), [&](const ReadRequest& r) { return r.tag == tag; });
    removed += static_cast<std::size_t>(q->end() - end);
    q->erase(end, q->end());
  }
  return removed;
}

void IoQueue::promote(std::uint64_t tag) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto keep = std::stable_partition(prefetch_.begin(), prefetch_.end(),
                                    [&](const ReadRequest& r) { return r.tag != tag; });
  demand_.insert(demand_.end(), keep, prefetch_.end());
  prefetch_.erase(keep, prefetch_.end());
}

std::size_t IoQueue::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return demand_.size() + prefetch_.size();
}

std::uint64_t IoQueue::completed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_;
}

std::uint64_t IoQueue::busy_nanoseconds() const {
  using namespace std::chrono;
  std::lock_guard<std::mutex> lock(mutex_);
  std::uint64_t busy = busy_ns_;
  if (in_flight_ > 0) busy += static_cast<std::uint64_t>(duration_cast<nanoseconds>(steady_clock::now() - busy_since_).count());
  return busy;
}

void IoQueue::run(int thread) {
  using namespace std::chrono;
  for (;;) {
    ReadRequest read;
    ReadResult result;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !demand_.empty() || !prefetch_.empty(); });
      if (stopping_) return;
      std::deque<ReadRequest>& q = demand_.empty() ? prefetch_ : demand_;
      read = q.front();
      q.pop_front();
      result.start = steady_clock::now();
      if (in_flight_++ == 0) busy_since_ = result.start;
    }
    result.thread = thread;
    result.status = source_->read(read.chunk, read.buffer, read.buffer_size, read.verify);
    const auto end = steady_clock::now();
    result.nanoseconds = static_cast<std::uint64_t>(duration_cast<nanoseconds>(end - result.start).count());
    if (result.status.ok()) result.bytes = source_->reader().chunks()[read.chunk].stored_size;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++completed_;
      if (--in_flight_ == 0) busy_ns_ += static_cast<std::uint64_t>(duration_cast<nanoseconds>(end - busy_since_).count());
    }
    on_done_(read, result);
  }
}

}  // namespace zipmoe::sched

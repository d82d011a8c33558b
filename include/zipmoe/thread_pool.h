// zipmoe/thread_pool.h - the worker pool that every parallel zipmoe call runs on.
//
// The pool belongs to the caller: codecs, the container and the engine take a
// ThreadPool* and never create threads of their own. Results never depend on the
// number of threads: work is cut into fixed pieces first, then the pieces are
// handed out.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "zipmoe/export.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

class ThreadPool {
 public:
  // The most threads a pool may have. A fixed number rather than a multiple of
  // the cores, so that a setting valid on one machine is valid on every one; far
  // beyond any useful count, yet well inside the operating system's limits.
  static constexpr int kMaxThreads = 1024;

  // A pool of `num_threads` threads in all, the calling thread included
  // (num_threads - 1 workers are started). num_threads <= 0 means one per
  // hardware thread (at most kMaxThreads). Throws InvalidArgumentError when
  // num_threads > kMaxThreads, and Error when the system refuses to start a
  // thread (a process, thread or memory limit); then every worker already
  // started has been stopped and joined.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;

  // Runs fn(i) for every i in [0, n) on the pool's threads and the caller's, and
  // returns when all have finished. The order in which indices run is unspecified.
  // If some calls throw, the exception of the lowest index is rethrown after all
  // calls have finished. Thread-safe: concurrent callers are served one after the
  // other; a call made from inside fn runs inline on that thread.
  void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs fn(i) for i in [0, n) on `pool`, or inline in index order when pool is null.
void parallel_for(ThreadPool* pool, std::size_t n, const std::function<void(std::size_t)>& fn);

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

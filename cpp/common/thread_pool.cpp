#include "zipmoe/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace zipmoe {

namespace {
// Set while a thread runs a task of some pool, so that nested parallel_for calls
// run inline instead of deadlocking on the pool they are already inside.
thread_local bool t_inside_pool_task = false;
}  // namespace

struct ThreadPool::Impl {
  int num_threads = 1;
  std::vector<std::thread> workers;

  std::mutex call_mutex;  // one parallel_for at a time

  std::mutex mutex;
  std::condition_variable work_ready;
  std::condition_variable work_done;
  bool stopping = false;
  unsigned long long generation = 0;

  // The job in flight.
  const std::function<void(std::size_t)>* fn = nullptr;
  std::size_t count = 0;
  std::atomic<std::size_t> next{0};
  int active_workers = 0;

  std::mutex error_mutex;
  std::size_t error_index = 0;
  std::exception_ptr error;

  void run_tasks() {
    const bool was_inside = t_inside_pool_task;
    t_inside_pool_task = true;
    for (;;) {
      std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= count) break;
      try {
        (*fn)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error || i < error_index) {
          error = std::current_exception();
          error_index = i;
        }
      }
    }
    t_inside_pool_task = was_inside;
  }

  void worker_loop() {
    unsigned long long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        work_ready.wait(lock, [&] { return stopping || generation != seen; });
        if (stopping) return;
        seen = generation;
      }
      run_tasks();
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (--active_workers == 0) work_done.notify_one();
      }
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  impl_->num_threads = num_threads;
  impl_->workers.reserve(num_threads - 1);
  for (int t = 1; t < num_threads; ++t) {
    impl_->workers.emplace_back([this] { impl_->worker_loop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_ready.notify_all();
  for (auto& w : impl_->workers) w.join();
}

int ThreadPool::num_threads() const { return impl_->num_threads; }

void ThreadPool::parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  if (n == 1 || impl_->workers.empty() || t_inside_pool_task) {
    // Inline, but with the same error semantics as the pooled path: every index
    // runs, the lowest failing index's exception is rethrown.
    std::exception_ptr error;
    for (std::size_t i = 0; i < n; ++i) {
      try {
        fn(i);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
  std::lock_guard<std::mutex> call_lock(impl_->call_mutex);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->fn = &fn;
    impl_->count = n;
    impl_->next.store(0, std::memory_order_relaxed);
    impl_->error = nullptr;
    impl_->error_index = 0;
    impl_->active_workers = static_cast<int>(impl_->workers.size());
    ++impl_->generation;
  }
  impl_->work_ready.notify_all();
  impl_->run_tasks();
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(impl_->mutex);
    impl_->work_done.wait(lock, [&] { return impl_->active_workers == 0; });
    impl_->fn = nullptr;
    error = impl_->error;
    impl_->error = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

void parallel_for(ThreadPool* pool, std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (pool) {
    pool->parallel_for(n, fn);
    return;
  }
  std::exception_ptr error;
  for (std::size_t i = 0; i < n; ++i) {
    try {
      fn(i);
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace zipmoe

#include "zipmoe/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "zipmoe/error.h"

namespace zipmoe {

namespace {
// Set while a thread runs a task of some pool, so that nested parallel_for calls
// run inline instead of deadlocking on the pool they are already inside.
thread_local bool t_inside_pool_task = false;

// Briefly spinning before sleeping matters for batch-1 decoding: a token runs
// dozens of short parallel sections, and a condition-variable wake-up costs tens
// of microseconds each time. The spin is bounded (about 20-50 us) so that idle
// pools and oversubscribed machines do not burn a core.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

}  // namespace

struct ThreadPool::Impl {
  int num_threads = 1;
  std::vector<std::thread> workers;

  std::mutex call_mutex;  // one parallel_for at a time

  // Sleeping and waking: both counters change under `mutex` (so that waiters
  // checking them under the mutex never miss a notification) but are atomics so
  // that spinners can read them without it.
  std::mutex mutex;
  std::condition_variable work_ready;
  std::condition_variable work_done;
  std::atomic<bool> stopping{false};
  std::atomic<unsigned long long> generation{0};
  std::atomic<int> active_workers{0};

  // The job in flight: written by the caller before `generation` is bumped
  // (release), read by workers after they see the new generation (acquire).
  const std::function<void(std::size_t)>* fn = nullptr;
  std::size_t count = 0;
  std::atomic<std::size_t> next{0};

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
      unsigned long long current = generation.load(std::memory_order_acquire);
      for (int spin = 0; current == seen && spin < kSpinIterations && !stopping.load(std::memory_order_relaxed);
           ++spin) {
        cpu_relax();
        current = generation.load(std::memory_order_acquire);
      }
      if (current == seen) {
        std::unique_lock<std::mutex> lock(mutex);
        work_ready.wait(lock, [&] {
          return stopping.load(std::memory_order_relaxed) || generation.load(std::memory_order_acquire) != seen;
        });
        current = generation.load(std::memory_order_acquire);
      }
      if (stopping.load(std::memory_order_acquire)) return;
      seen = current;
      run_tasks();
      if (active_workers.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex);
        work_done.notify_one();
      }
    }
  }

  // Tells every worker started so far to leave and joins it.
  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping.store(true, std::memory_order_release);
    }
    work_ready.notify_all();
    for (auto& w : workers) w.join();
    workers.clear();
  }
};

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  if (num_threads > kMaxThreads) {
    throw InvalidArgumentError("threads must be at most " + std::to_string(kMaxThreads) + ", not " +
                               std::to_string(num_threads));
  }
  if (num_threads <= 0) {
    num_threads = static_cast<int>(std::min<unsigned>(std::max(1u, std::thread::hardware_concurrency()),
                                                      static_cast<unsigned>(kMaxThreads)));
  }
  Impl* impl = impl_.get();
  impl->num_threads = num_threads;
  // A thread that cannot start must not leave the others running: joinable
  // threads destroyed by the unwinding would terminate the process.
  try {
    impl->workers.reserve(num_threads - 1);
    for (int t = 1; t < num_threads; ++t) impl->workers.emplace_back([impl] { impl->worker_loop(); });
  } catch (const std::system_error& e) {
    const std::size_t started = impl->workers.size();
    impl->stop_workers();
    throw Error("cannot start thread " + std::to_string(started + 2) + " of " + std::to_string(num_threads) +
                ": " + e.code().message() + " (a limit on threads, processes or memory was reached: use fewer "
                "threads)");
  } catch (...) {
    impl->stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { impl_->stop_workers(); }

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
  Impl& p = *impl_;
  p.fn = &fn;
  p.count = n;
  p.next.store(0, std::memory_order_relaxed);
  p.error = nullptr;
  p.error_index = 0;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.active_workers.store(static_cast<int>(p.workers.size()), std::memory_order_relaxed);
    p.generation.fetch_add(1, std::memory_order_release);
  }
  p.work_ready.notify_all();
  p.run_tasks();
  for (int spin = 0; spin < kSpinIterations && p.active_workers.load(std::memory_order_acquire) != 0; ++spin) {
    cpu_relax();
  }
  if (p.active_workers.load(std::memory_order_acquire) != 0) {
    std::unique_lock<std::mutex> lock(p.mutex);
    p.work_done.wait(lock, [&] { return p.active_workers.load(std::memory_order_acquire) == 0; });
  }
  p.fn = nullptr;
  std::exception_ptr error = p.error;
  p.error = nullptr;
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

// parallel_for over work that reports a Status instead of throwing.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "common/status.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe {

// Runs fn(i) -> Status for every i in [0, n) on `pool` (null: the calling
// thread) and returns the failure of the lowest index, or OK. Every call runs,
// whatever fails, so that the outcome does not depend on the thread count.
template <typename Fn>
Status parallel_for_status(ThreadPool* pool, std::size_t n, Fn&& fn) {
  std::vector<Status> statuses(n);
  parallel_for(pool, n, [&](std::size_t i) { statuses[i] = fn(i); });
  for (Status& status : statuses) {
    if (!status.ok()) return std::move(status);
  }
  return Status::Ok();
}

}  // namespace zipmoe

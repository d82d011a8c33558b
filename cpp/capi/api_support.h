// What every function of the C API shares: the thread-local last error, the
// mapping of statuses and exceptions to zipmoe_status, the table of live
// handles, and the capacity convention of functions that fill caller buffers.
//
// Every exported function body runs inside guarded(), so that no exception
// ever crosses the C boundary: a zipmoe::Error becomes the status of its class,
// std::bad_alloc ZIPMOE_ERR_BUDGET, anything else ZIPMOE_ERR_INTERNAL.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"
#include "zipmoe.h"

namespace zipmoe::capi {

// This thread's last error message (zipmoe_last_error).
std::string& last_error_text();
// This thread's last error status (zipmoe_last_status).
zipmoe_status& last_error_status();

// The C status of a core status code.
zipmoe_status status_of(StatusCode code);

// Records `message` as this thread's last error and returns `status`.
zipmoe_status fail(zipmoe_status status, const std::string& message);
// The same for a core Status (which must not be OK).
zipmoe_status fail(const Status& status);
// The status of the exception being handled (call only inside a catch block),
// recorded as the last error with `function` as its context.
zipmoe_status fail_current_exception(const char* function);

// Runs body() (returning zipmoe_status) and turns any exception into a status.
template <class Body>
zipmoe_status guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return fail_current_exception(function);
  }
}

// For functions that return a count under the capacity convention (zipmoe.h):
// INT32_MIN on any failure.
template <class Body>
std::int32_t guarded_count(const char* function, Body&& body) noexcept {
  std::int32_t result = INT32_MIN;
  const zipmoe_status status = guarded(function, [&]() -> zipmoe_status {
    result = body();
    return ZIPMOE_OK;
  });
  return status == ZIPMOE_OK ? result : INT32_MIN;
}

// The capacity convention: copies `count` elements to `out` when they fit in
// `capacity` and returns count; otherwise writes nothing and returns -count.
// Throws InvalidArgumentError for a negative capacity, a NULL buffer with a
// positive capacity, or a count beyond INT32_MAX.
std::int32_t deliver(const void* data, std::size_t count, std::size_t element_size, void* out, std::int32_t capacity,
                     const char* what);

// The live handles of one kind. A handle is the address of its state object;
// the table owns the state, and find() hands out shared ownership for the
// duration of a call, so that freeing a handle while another thread is inside
// a call on it cannot destroy the state under that call.
template <class State>
class HandleTable {
 public:
  void* add(std::shared_ptr<State> state) {
    void* handle = state.get();
    std::lock_guard<std::mutex> lock(mutex_);
    live_.emplace(handle, std::move(state));
    return handle;
  }
  std::shared_ptr<State> find(const void* handle) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(handle);
    return it == live_.end() ? nullptr : it->second;
  }
  std::shared_ptr<State> remove(const void* handle) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(handle);
    if (it == live_.end()) return nullptr;
    std::shared_ptr<State> state = std::move(it->second);
    live_.erase(it);
    return state;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<const void*, std::shared_ptr<State>> live_;
};

// Checks that `text` is valid UTF-8 (InvalidArgumentError naming `what` otherwise).
void check_utf8(std::string_view text, const char* what);

}  // namespace zipmoe::capi

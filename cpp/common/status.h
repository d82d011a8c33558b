// Status: the error value of everything inside the core.
//
// Internal functions return a Status instead of throwing, from the decoders and
// parsers up through the container reader, the fetch scheduler, the expert
// cache and the forward pass, so that a corrupt input costs one branch and
// callers can add context (file, tensor, chunk) on the way up. The public C++
// API (the implementations of include/zipmoe/*.h) and the bindings turn a
// Status into the zipmoe::Error subclass of its code with throw_if_error(): the
// one place where a Status becomes an exception (docs/ARCHITECTURE.md, "Errors").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "zipmoe/error.h"

namespace zipmoe {

enum class StatusCode : int {
  kOk = 0,
  kFormat,           // malformed data
  kChecksum,         // checksum mismatch
  kInvalidArgument,  // caller passed something unacceptable
  kIo,               // the OS refused a read/write
  kUnsupported,      // unsupported model / feature
  kBudget,           // memory budget too small
  kInternal,         // a bug in zipmoe
  kBusy,             // what was asked is in use by another call (a context held elsewhere)
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message)
      : state_(code == StatusCode::kOk ? nullptr
                                       : std::make_shared<State>(State{code, std::move(message)})) {}

  static Status Ok() { return Status(); }
  static Status Format(std::string m) { return Status(StatusCode::kFormat, std::move(m)); }
  static Status Checksum(std::string m) { return Status(StatusCode::kChecksum, std::move(m)); }
  static Status InvalidArgument(std::string m) {
    return Status(StatusCode::kInvalidArgument, std::move(m));
  }
  static Status Io(std::string m) { return Status(StatusCode::kIo, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(StatusCode::kUnsupported, std::move(m)); }
  static Status Budget(std::string m) { return Status(StatusCode::kBudget, std::move(m)); }
  static Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
  static Status Busy(std::string m) { return Status(StatusCode::kBusy, std::move(m)); }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  const std::string& message() const {
    static const std::string kEmpty;
    return state_ ? state_->message : kEmpty;
  }

  // Returns a copy whose message is "<context>: <message>" (no-op when OK).
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code(), context + ": " + message());
  }

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const State> state_;
};

// Throws the zipmoe::Error subclass matching the status code (no-op when OK):
// kFormat FormatError, kChecksum ChecksumError, kInvalidArgument
// InvalidArgumentError, kIo IoError, kUnsupported UnsupportedModelError,
// kBudget BudgetError, kInternal Error ("internal error: ..."), kBusy BusyError.
void throw_if_error(const Status& status);

// A tensor shape as error messages print it: "[2048, 1408]".
std::string shape_text(const std::vector<std::uint64_t>& shape);

}  // namespace zipmoe

#define ZIPMOE_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::zipmoe::Status _zs = (expr);          \
    if (!_zs.ok()) return _zs;              \
  } while (0)

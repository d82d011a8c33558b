// Bridges between the public API's exceptions and internal Status values.
#pragma once

#include <new>
#include <string>
#include <utility>

#include "common/status.h"
#include "zipmoe/error.h"

namespace zipmoe {

// Runs fn() and turns a zipmoe::Error (or bad_alloc) it throws into the matching
// Status, so that code returning Status can call the throwing public API.
template <typename Fn>
Status capture_errors(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return Status::Ok();
  } catch (const ChecksumError& e) {
    return Status::Checksum(e.what());
  } catch (const FormatError& e) {
    return Status::Format(e.what());
  } catch (const InvalidArgumentError& e) {
    return Status::InvalidArgument(e.what());
  } catch (const IoError& e) {
    return Status::Io(e.what());
  } catch (const UnsupportedModelError& e) {
    return Status::Unsupported(e.what());
  } catch (const BudgetError& e) {
    return Status::Budget(e.what());
  } catch (const Error& e) {
    return Status::Internal(e.what());
  } catch (const std::bad_alloc&) {
    return Status::Budget("out of memory");
  }
}

}  // namespace zipmoe

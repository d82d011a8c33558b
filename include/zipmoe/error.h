// zipmoe/error.h - the exceptions of zipmoe's public C++ API.
//
// Every public C++ entry point reports failure by throwing one of these. Anything
// driven by outside data (files, blobs, requests) fails with FormatError,
// ChecksumError or IoError and never aborts the process. The Python bindings map
// each class to the Python exception of the same name (zipmoe.FormatError, ...),
// all subclasses of zipmoe.ZipMoEError.
#pragma once

#include <stdexcept>
#include <string>

#include "zipmoe/export.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// Base class of every zipmoe error.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Malformed input: wrong magic, unknown version, out-of-range sizes, offsets or
// counts, corrupt code tables or streams. The message names the file, tensor and
// chunk when they are known.
class FormatError : public Error {
 public:
  using Error::Error;
};

// Stored and computed checksums disagree: the data was damaged after it was written.
class ChecksumError : public FormatError {
 public:
  using FormatError::FormatError;
};

// An argument outside what the function accepts (bad dtype, shape, codec name, ...).
class InvalidArgumentError : public Error {
 public:
  using Error::Error;
};

// The operating system refused a read or write (missing file, full disk, ...).
class IoError : public Error {
 public:
  using Error::Error;
};

// A model, architecture or tensor type that zipmoe cannot handle.
class UnsupportedModelError : public Error {
 public:
  using Error::Error;
};

// A memory budget too small for what was asked.
class BudgetError : public Error {
 public:
  using Error::Error;
};

// What was asked needs something another call is using: a second use of a
// model's sequence while a generation (a streamed one, between its pieces) or
// a call from another thread holds it. Retrying once that use has ended works.
class BusyError : public Error {
 public:
  using Error::Error;
};

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

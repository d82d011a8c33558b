#include "capi/api_support.h"

#include <cstring>
#include <exception>
#include <new>
#include <vector>

#include "text/unicode.h"
#include "zipmoe/error.h"

namespace zipmoe::capi {

std::string& last_error_text() {
  thread_local std::string text;
  return text;
}

zipmoe_status status_of(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return ZIPMOE_OK;
    case StatusCode::kFormat:
      return ZIPMOE_ERR_FORMAT;
    case StatusCode::kChecksum:
      return ZIPMOE_ERR_CHECKSUM;
    case StatusCode::kInvalidArgument:
      return ZIPMOE_ERR_INVALID_ARGUMENT;
    case StatusCode::kIo:
      return ZIPMOE_ERR_IO;
    case StatusCode::kUnsupported:
      return ZIPMOE_ERR_UNSUPPORTED_MODEL;
    case StatusCode::kBudget:
      return ZIPMOE_ERR_BUDGET;
    case StatusCode::kInternal:
      return ZIPMOE_ERR_INTERNAL;
  }
  return ZIPMOE_ERR_INTERNAL;
}

zipmoe_status& last_error_status() {
  thread_local zipmoe_status status = ZIPMOE_OK;
  return status;
}

zipmoe_status fail(zipmoe_status status, const std::string& message) {
  last_error_status() = status;
  // Assigning can itself run out of memory; the status still goes back.
  try {
    last_error_text() = message;
  } catch (...) {
    last_error_text().clear();
  }
  return status;
}

zipmoe_status fail(const Status& status) { return fail(status_of(status.code()), status.message()); }

zipmoe_status fail_current_exception(const char* function) {
  const std::string where = std::string(function) + ": ";
  try {
    throw;
  } catch (const BusyError& e) {
    return fail(ZIPMOE_ERR_BUSY, where + e.what());
  } catch (const ChecksumError& e) {
    return fail(ZIPMOE_ERR_CHECKSUM, where + e.what());
  } catch (const FormatError& e) {
    return fail(ZIPMOE_ERR_FORMAT, where + e.what());
  } catch (const InvalidArgumentError& e) {
    return fail(ZIPMOE_ERR_INVALID_ARGUMENT, where + e.what());
  } catch (const IoError& e) {
    return fail(ZIPMOE_ERR_IO, where + e.what());
  } catch (const UnsupportedModelError& e) {
    return fail(ZIPMOE_ERR_UNSUPPORTED_MODEL, where + e.what());
  } catch (const BudgetError& e) {
    return fail(ZIPMOE_ERR_BUDGET, where + e.what());
  } catch (const Error& e) {
    return fail(ZIPMOE_ERR_INTERNAL, where + e.what());
  } catch (const std::bad_alloc&) {
    return fail(ZIPMOE_ERR_BUDGET, where + "out of memory (the system refused an allocation)");
  } catch (const std::exception& e) {
    return fail(ZIPMOE_ERR_INTERNAL, where + "internal error: " + e.what());
  } catch (...) {
    return fail(ZIPMOE_ERR_INTERNAL, where + "internal error: an unknown exception (from a callback?)");
  }
}

std::int32_t deliver(const void* data, std::size_t count, std::size_t element_size, void* out, std::int32_t capacity,
                     const char* what) {
  if (capacity < 0) throw InvalidArgumentError(std::string(what) + ": capacity is negative");
  if (out == nullptr && capacity > 0) {
    throw InvalidArgumentError(std::string(what) + ": the output buffer is NULL but capacity is " +
                               std::to_string(capacity));
  }
  if (count > static_cast<std::size_t>(INT32_MAX)) {
    throw InvalidArgumentError(std::string(what) + ": the result (" + std::to_string(count) +
                               " elements) is larger than an int32_t can count");
  }
  const auto n = static_cast<std::int32_t>(count);
  if (n > capacity) return -n;
  if (n > 0) std::memcpy(out, data, count * element_size);
  return n;
}

void check_utf8(std::string_view text, const char* what) {
  std::vector<std::uint32_t> units;
  std::vector<std::uint32_t> offsets;
  text::decode_utf8(text, &units, &offsets);
  for (std::size_t i = 0; i < units.size(); ++i) {
    if (units[i] >= text::kInvalidByteBase) {
      throw InvalidArgumentError(std::string(what) + " is not valid UTF-8 (byte " + std::to_string(offsets[i]) +
                                 ")");
    }
  }
}

}  // namespace zipmoe::capi

extern "C" const char* zipmoe_last_error(void) { return zipmoe::capi::last_error_text().c_str(); }

extern "C" zipmoe_status zipmoe_last_status(void) { return zipmoe::capi::last_error_status(); }

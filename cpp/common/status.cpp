#include "common/status.h"

namespace zipmoe {

void throw_if_error(const Status& status) {
  if (status.ok()) return;
  const std::string& m = status.message();
  switch (status.code()) {
    case StatusCode::kOk:
      return;
    case StatusCode::kFormat:
      throw FormatError(m);
    case StatusCode::kChecksum:
      throw ChecksumError(m);
    case StatusCode::kInvalidArgument:
      throw InvalidArgumentError(m);
    case StatusCode::kIo:
      throw IoError(m);
    case StatusCode::kUnsupported:
      throw UnsupportedModelError(m);
    case StatusCode::kBudget:
      throw BudgetError(m);
    case StatusCode::kInternal:
      throw Error("internal error: " + m);
    case StatusCode::kBusy:
      throw BusyError(m);
  }
  throw Error(m);
}

std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

}  // namespace zipmoe

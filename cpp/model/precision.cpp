#include <string>

#include "zipmoe/model.h"

namespace zipmoe {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFast: return "fast";
    case Precision::kExact: return "exact";
  }
  return "unknown";
}

bool parse_precision(const std::string& name, Precision* precision) {
  for (Precision p : {Precision::kFast, Precision::kExact}) {
    if (name == precision_name(p)) {
      *precision = p;
      return true;
    }
  }
  return false;
}

}  // namespace zipmoe

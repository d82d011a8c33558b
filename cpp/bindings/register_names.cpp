// The core's name tables (zipmoe._core.names(), canonical_name()), so that the
// Python package asks for them instead of listing them again (python/zipmoe/_names.py).
#include <pybind11/stl.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "zipmoe/container.h"
#include "zipmoe/error.h"
#include "zipmoe/model.h"
#include "zipmoe/types.h"

namespace zipmoe::bindings {

namespace {

struct NameTable {
  const char* kind;
  std::vector<std::string> names;  // in the order of the enumeration's values
  std::function<std::optional<std::string>(const std::string&)> canonical;  // nullopt: names nothing
};

// The table of an 8-bit enumeration from its name and parse functions: its named
// values are those whose name parses back to them (the name functions answer
// "unknown" for the rest).
template <typename Enum>
NameTable table(const char* kind, const char* (*name)(Enum), bool (*parse)(const std::string&, Enum*)) {
  NameTable t{kind, {}, nullptr};
  for (int value = 0; value < 256; ++value) {
    const Enum e = static_cast<Enum>(value);
    Enum parsed;
    if (parse(name(e), &parsed) && parsed == e) t.names.emplace_back(name(e));
  }
  t.canonical = [name, parse](const std::string& text) -> std::optional<std::string> {
    Enum e;
    if (!parse(text, &e)) return std::nullopt;
    return std::string(name(e));
  };
  return t;
}

const std::vector<NameTable>& tables() {
  static const std::vector<NameTable> all = {
      table("dtype", dtype_name, parse_dtype),
      table("codec", codec_name, parse_codec),
      table("isa", isa_name, parse_isa),
      table("io_mode", io_mode_name, parse_io_mode),
      table("cache_policy", cache_policy_name, parse_cache_policy),
      table("expert_tier", expert_tier_name, parse_expert_tier),
      table("precision", precision_name, parse_precision),
  };
  return all;
}

}  // namespace

void register_names(py::module_& m) {
  m.def(
      "names",
      [] {
        std::map<std::string, std::vector<std::string>> out;
        for (const NameTable& t : tables()) out[t.kind] = t.names;
        return out;
      },
      "The names the core knows, by kind (dtype, codec, isa, io_mode, cache_policy, expert_tier, precision), each "
      "list in the order of the core's values. isa: every path the core has (available_isas(): this CPU's).");
  m.def(
      "canonical_name",
      [](const std::string& kind, const std::string& text) -> std::optional<std::string> {
        for (const NameTable& t : tables()) {
          if (kind == t.kind) return t.canonical(text);
        }
        throw InvalidArgumentError("no name table '" + kind + "'");
      },
      py::arg("kind"), py::arg("text"),
      "The core's name for `text` as a `kind` of names() (resolving the aliases and case the core accepts, e.g. "
      "'bfloat16' -> 'bf16'), or None when it names nothing.");
}

}  // namespace zipmoe::bindings

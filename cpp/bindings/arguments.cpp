#include "bindings/arguments.h"

#include <vector>

#include "common/cpu_features.h"
#include "common/status.h"

namespace zipmoe::bindings {

namespace {

// "a, b or c"
std::string choices(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " or " : ", ";
    out += names[i];
  }
  return out;
}

[[noreturn]] void unknown(const char* what, const std::string& name, const std::vector<std::string>& names) {
  throw InvalidArgumentError(std::string("unknown ") + what + " '" + name + "' (use " + choices(names) + ")");
}

}  // namespace

DType dtype_argument(const std::string& name, const char* what) {
  DType dtype;
  if (parse_dtype(name, &dtype)) return dtype;
  unknown(what, name, {dtype_name(DType::kBF16), dtype_name(DType::kF16), dtype_name(DType::kF32)});
}

std::optional<Isa> isa_argument(const std::optional<std::string>& name) {
  if (!name) return std::nullopt;
  Isa isa;
  if (!parse_isa(*name, &isa)) {
    std::vector<std::string> names;
    for (int i = 0; i < kNumIsas; ++i) names.emplace_back(isa_name(static_cast<Isa>(i)));
    unknown("isa", *name, names);
  }
  throw_if_error(check_isa(isa));
  return isa;
}

Codec codec_argument(const std::string& name) {
  Codec codec;
  if (parse_codec(name, &codec) && codec != Codec::kConstant) return codec;
  std::vector<std::string> names;
  for (Codec c : {Codec::kAuto, Codec::kHuffman, Codec::kRans, Codec::kRaw, Codec::kLz4hc}) {
    names.emplace_back(codec_name(c));
  }
  unknown("codec", name, names);
}

IoMode io_mode_argument(const std::string& name) {
  IoMode mode;
  if (parse_io_mode(name, &mode)) return mode;
  std::vector<std::string> names;
  for (IoMode m : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) names.emplace_back(io_mode_name(m));
  unknown("io mode", name, names);
}

}  // namespace zipmoe::bindings

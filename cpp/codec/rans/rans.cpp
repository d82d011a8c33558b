// Placeholder registration until the rans coder lands: never chosen by kAuto.
#include <limits>

#include "codec/coder.h"

namespace zipmoe::codec {

namespace {
Status build_table(const Histogram&, std::vector<std::uint8_t>*) { return Status::Unsupported("rans coder not built"); }
std::uint64_t estimate(const std::uint8_t*, std::size_t, const Histogram&, std::size_t) {
  return std::numeric_limits<std::uint64_t>::max();
}
Status encode_segment(const std::uint8_t*, std::size_t, const std::uint8_t*, std::size_t, std::vector<std::uint8_t>*) {
  return Status::Unsupported("rans coder not built");
}
Status prepare(const std::uint8_t*, std::size_t, std::unique_ptr<DecoderTables>*) {
  return Status::Unsupported("rans coder not built");
}
}  // namespace

const Coder& rans_coder() {
  static const Coder coder{Codec::kRans, build_table, estimate, encode_segment, prepare, {}};
  return coder;
}

}  // namespace zipmoe::codec

// Placeholder registration until the huffman coder lands: never chosen by kAuto.
#include <limits>

#include "codec/coder.h"

namespace zipmoe::codec {

namespace {
Status build_table(const Histogram&, std::vector<std::uint8_t>*) { return Status::Unsupported("huffman coder not built"); }
std::uint64_t estimate(const std::uint8_t*, std::size_t, const Histogram&, std::size_t) {
  return std::numeric_limits<std::uint64_t>::max();
}
Status encode_segment(const std::uint8_t*, std::size_t, const std::uint8_t*, std::size_t, std::vector<std::uint8_t>*) {
  return Status::Unsupported("huffman coder not built");
}
Status prepare(const std::uint8_t*, std::size_t, std::unique_ptr<DecoderTables>*) {
  return Status::Unsupported("huffman coder not built");
}
}  // namespace

const Coder& huffman_coder() {
  static const Coder coder{Codec::kHuffman, build_table, estimate, encode_segment, prepare, {}};
  return coder;
}

}  // namespace zipmoe::codec

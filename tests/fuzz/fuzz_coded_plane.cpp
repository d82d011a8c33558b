// Fuzzes the coded-plane parser and every coder's decoder directly (no checksum
// in front), into bare symbols and into merged BF16/F32 elements, on every ISA;
// merged targets also through the checksumming decoders.
#include <cstdint>
#include <vector>

#include "codec/coded_plane.h"
#include "common/cpu_features.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::uint8_t* plane_bytes = data + 1;
  const std::size_t plane_size = size - 1;
  zipmoe::codec::CodedPlane plane;
  if (!zipmoe::codec::CodedPlane::parse(plane_bytes, plane_size, &plane).ok()) return 0;
  const std::uint64_t n = plane.num_symbols();
  if (n > (std::uint64_t(16) << 20)) return 0;
  const int mode = control % 3;  // symbols, bf16, f32
  std::vector<std::uint8_t> sm(n * 3, 0x5a);
  std::vector<std::uint8_t> out(n * (mode == 0 ? 1 : mode == 1 ? 2 : 4));
  zipmoe::codec::MergeTarget target =
      mode == 0 ? zipmoe::codec::make_symbol_target(out.data())
                : zipmoe::codec::make_merge_target(mode == 1 ? zipmoe::DType::kBF16 : zipmoe::DType::kF32, sm.data(),
                                                   n, out.data());
  for (zipmoe::Isa isa : zipmoe::supported_isas()) {
    (void)plane.decode(target, nullptr, isa);
    if (mode != 0) {
      zipmoe::codec::CodedPlane::Checksums sums;
      (void)plane.decode_checksummed(target, nullptr, isa, &sums);
    }
  }
  return 0;
}

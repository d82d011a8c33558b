// Reference plane merge: the definition every SIMD variant must match bit for bit.
#include <cstring>

#include "codec/planes.h"

namespace zipmoe::codec::scalar {

void merge16(const std::uint8_t* symbols, const std::uint8_t* sm, std::uint16_t* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned s = sm[i];
    out[i] = static_cast<std::uint16_t>(((s & 0x80u) << 8) | (unsigned(symbols[i]) << 7) | (s & 0x7fu));
  }
}

void merge32(const std::uint8_t* symbols, const std::uint8_t* sm_hi, const std::uint8_t* sm_lo, std::uint32_t* out,
             std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t s = sm_hi[i];
    const std::uint32_t lo = std::uint32_t(sm_lo[2 * i]) | (std::uint32_t(sm_lo[2 * i + 1]) << 8);
    out[i] = ((s & 0x80u) << 24) | (std::uint32_t(symbols[i]) << 23) | ((s & 0x7fu) << 16) | lo;
  }
}

#include "codec/planes_merge_into.inc"

}  // namespace zipmoe::codec::scalar

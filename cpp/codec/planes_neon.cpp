#include <arm_neon.h>

#include <cstring>

#include "codec/planes.h"

namespace zipmoe::codec::neon {

namespace {
inline uint16x8_t merge16_vec(uint8x8_t sym8, uint8x8_t sm8) {
  const uint16x8_t sym = vmovl_u8(sym8);
  const uint16x8_t sm = vmovl_u8(sm8);
  const uint16x8_t sign = vshlq_n_u16(vandq_u16(sm, vdupq_n_u16(0x80)), 8);
  const uint16x8_t mant = vandq_u16(sm, vdupq_n_u16(0x7f));
  return vorrq_u16(vorrq_u16(sign, vshlq_n_u16(sym, 7)), mant);
}
}  // namespace

// Byte-wise, as a bit select per byte: an element's low byte is symbol bit 0 over
// the 7 mantissa bits, its high byte the sign over symbol bits 7..1, and st2
// interleaves the two into little-endian elements (5 instructions per 16).
void merge16(const std::uint8_t* symbols, const std::uint8_t* sm, std::uint16_t* out, std::size_t n) {
  const uint8x16_t top_bit = vdupq_n_u8(0x80);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint8x16_t s = vld1q_u8(symbols + i);
    const uint8x16_t m = vld1q_u8(sm + i);
    uint8x16x2_t bytes;
    bytes.val[0] = vbslq_u8(top_bit, vshlq_n_u8(s, 7), m);
    bytes.val[1] = vbslq_u8(top_bit, m, vshrq_n_u8(s, 1));
    vst2q_u8(reinterpret_cast<std::uint8_t*>(out + i), bytes);
  }
  scalar::merge16(symbols + i, sm + i, out + i, n - i);
}

void merge32(const std::uint8_t* symbols, const std::uint8_t* sm_hi, const std::uint8_t* sm_lo, std::uint32_t* out,
             std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint16x8_t hi = merge16_vec(vld1_u8(symbols + i), vld1_u8(sm_hi + i));
    uint16x8_t lo;
    std::memcpy(&lo, sm_lo + 2 * i, 16);  // little-endian words
    const uint16x8x2_t z = vzipq_u16(lo, hi);
    vst1q_u32(out + i, vreinterpretq_u32_u16(z.val[0]));
    vst1q_u32(out + i + 4, vreinterpretq_u32_u16(z.val[1]));
  }
  scalar::merge32(symbols + i, sm_hi + i, sm_lo + 2 * i, out + i, n - i);
}

#include "codec/planes_merge_into.inc"

}  // namespace zipmoe::codec::neon

#include <immintrin.h>

#include <cstring>

#include "codec/planes.h"

namespace zipmoe::codec::avx2 {

namespace {
// 16 symbols + 16 SM bytes -> 16 merged 16-bit elements (merge32's high halves).
inline __m256i merge16_vec(__m128i sym8, __m128i sm8) {
  const __m256i sym = _mm256_cvtepu8_epi16(sym8);
  const __m256i sm = _mm256_cvtepu8_epi16(sm8);
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(sm, _mm256_set1_epi16(0x80)), 8);
  const __m256i mant = _mm256_and_si256(sm, _mm256_set1_epi16(0x7f));
  return _mm256_or_si256(_mm256_or_si256(sign, _mm256_slli_epi16(sym, 7)), mant);
}

// (a & mask) | (b & ~mask), bit by bit.
inline __m256i select_bits(__m256i mask, __m256i a, __m256i b) {
  return _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256(a, b), mask), b);
}
}  // namespace

// Byte-wise: an element's low byte is symbol bit 0 over the 7 mantissa bits, its
// high byte the sign over symbol bits 7..1; one byte interleave makes the elements.
// The 16-bit shifts move bits across byte boundaries, but the select keeps only
// the bits that came from the right byte. AVX2 has no cross-lane byte interleave:
// pre-permuting the 64-bit quarters makes the in-lane unpacks come out in order.
void merge16(const std::uint8_t* symbols, const std::uint8_t* sm, std::uint16_t* out, std::size_t n) {
  const __m256i top_bit = _mm256_set1_epi8(static_cast<char>(0x80));
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(symbols + i));
    const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sm + i));
    const __m256i low = select_bits(top_bit, _mm256_slli_epi16(s, 7), m);
    const __m256i high = select_bits(top_bit, m, _mm256_srli_epi16(s, 1));
    // Quarters 0, 2, 1, 3: lane 0 holds elements 0-7 and 16-23, lane 1 8-15 and 24-31.
    const __m256i low_q = _mm256_permute4x64_epi64(low, 0xD8);
    const __m256i high_q = _mm256_permute4x64_epi64(high, 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_unpacklo_epi8(low_q, high_q));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 16), _mm256_unpackhi_epi8(low_q, high_q));
  }
  scalar::merge16(symbols + i, sm + i, out + i, n - i);
}

void merge32(const std::uint8_t* symbols, const std::uint8_t* sm_hi, const std::uint8_t* sm_lo, std::uint32_t* out,
             std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i hi = merge16_vec(_mm_loadu_si128(reinterpret_cast<const __m128i*>(symbols + i)),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(sm_hi + i)));
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sm_lo + 2 * i));
    // Interleave low and high halves: unpack works within 128-bit lanes, so the
    // two halves come out as elements {0-3,8-11} and {4-7,12-15}; permute back.
    const __m256i a = _mm256_unpacklo_epi16(lo, hi);
    const __m256i b = _mm256_unpackhi_epi16(lo, hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 8), _mm256_permute2x128_si256(a, b, 0x31));
  }
  scalar::merge32(symbols + i, sm_hi + i, sm_lo + 2 * i, out + i, n - i);
}

#include "codec/planes_merge_into.inc"

}  // namespace zipmoe::codec::avx2

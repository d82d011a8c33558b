#include <immintrin.h>

#include <cstring>

#include "codec/planes.h"

// GCC 12 flags the deliberately undefined pass-through operand inside its own
// permute and extract intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace zipmoe::codec::avx512 {

namespace {
// 32 symbols + 32 SM bytes -> 32 merged 16-bit elements.
inline __m512i merge16_vec(__m256i sym8, __m256i sm8) {
  const __m512i sym = _mm512_cvtepu8_epi16(sym8);
  const __m512i sm = _mm512_cvtepu8_epi16(sm8);
  // (sm & 0x80) << 8 | sym << 7 | (sm & 0x7f) as one ternary-logic select:
  // bits 6..0 from sm, bits 14..7 from sym<<7, bit 15 from sm<<8.
  const __m512i sign = _mm512_slli_epi16(sm, 8);
  const __m512i body = _mm512_ternarylogic_epi32(_mm512_slli_epi16(sym, 7), sm, _mm512_set1_epi16(0x7f), 0xD8);
  return _mm512_ternarylogic_epi32(body, sign, _mm512_set1_epi16(int16_t(0x8000)), 0xD8);
}
}  // namespace

// Byte-wise, as on AVX2: an element's low byte is symbol bit 0 over the 7 mantissa
// bits, its high byte the sign over symbol bits 7..1 (one ternary-logic select
// each); the in-lane byte unpacks come out in element order once the 64-bit
// quarters are permuted to 0, 4, 1, 5, 2, 6, 3, 7.
void merge16(const std::uint8_t* symbols, const std::uint8_t* sm, std::uint16_t* out, std::size_t n) {
  const __m512i top_bit = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i quarters = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i s = _mm512_loadu_si512(symbols + i);
    const __m512i m = _mm512_loadu_si512(sm + i);
    // 0xE4: bits of the first operand where the mask (third) is set, of the second elsewhere.
    const __m512i low = _mm512_ternarylogic_epi32(_mm512_slli_epi16(s, 7), m, top_bit, 0xE4);
    const __m512i high = _mm512_ternarylogic_epi32(m, _mm512_srli_epi16(s, 1), top_bit, 0xE4);
    const __m512i low_q = _mm512_permutexvar_epi64(quarters, low);
    const __m512i high_q = _mm512_permutexvar_epi64(quarters, high);
    _mm512_storeu_si512(out + i, _mm512_unpacklo_epi8(low_q, high_q));
    _mm512_storeu_si512(out + i + 32, _mm512_unpackhi_epi8(low_q, high_q));
  }
  if (i < n) {
    // Masked tail: same arithmetic, no scalar loop.
    const std::size_t rem = n - i;
    const __mmask64 bytes = rem >= 64 ? ~__mmask64(0) : ((__mmask64(1) << rem) - 1);
    const __m512i s = _mm512_maskz_loadu_epi8(bytes, symbols + i);
    const __m512i m = _mm512_maskz_loadu_epi8(bytes, sm + i);
    const __mmask32 lo_mask = static_cast<__mmask32>(bytes);
    const __mmask32 hi_mask = static_cast<__mmask32>(bytes >> 32);
    _mm512_mask_storeu_epi16(out + i, lo_mask, merge16_vec(_mm512_castsi512_si256(s), _mm512_castsi512_si256(m)));
    if (hi_mask) {
      _mm512_mask_storeu_epi16(out + i + 32, hi_mask,
                               merge16_vec(_mm512_extracti64x4_epi64(s, 1), _mm512_extracti64x4_epi64(m, 1)));
    }
  }
}

void merge32(const std::uint8_t* symbols, const std::uint8_t* sm_hi, const std::uint8_t* sm_lo, std::uint32_t* out,
             std::size_t n) {
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i hi = merge16_vec(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(symbols + i)),
                                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sm_hi + i)));
    const __m512i lo = _mm512_loadu_si512(sm_lo + 2 * i);
    // 16-bit unpacks interleave within 128-bit lanes; a 64-bit permute restores order.
    const __m512i a = _mm512_unpacklo_epi16(lo, hi);  // lanes hold elements {0-3, 8-11, 16-19, 24-27}
    const __m512i b = _mm512_unpackhi_epi16(lo, hi);  // {4-7, 12-15, 20-23, 28-31}
    const __m512i first = _mm512_permutex2var_epi64(a, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), b);
    const __m512i second = _mm512_permutex2var_epi64(a, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), b);
    _mm512_storeu_si512(out + i, first);
    _mm512_storeu_si512(out + i + 16, second);
  }
  scalar::merge32(symbols + i, sm_hi + i, sm_lo + 2 * i, out + i, n - i);
}

#include "codec/planes_merge_into.inc"

}  // namespace zipmoe::codec::avx512

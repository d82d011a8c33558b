// AVX-512 rANS decoder: the 64 lanes as four vectors of 16.
//
// A slot's symbol is found with register permutes over the 32 alias buckets
// (three vpermt2d per vector) rather than a gather: gathers run at well under one
// element per cycle on current cores and would bound the decoder. Slots of the
// escape item, if any, are gathered from the full slot table; planes whose escape
// item is large use the gather decoder throughout. Renormalization words reach the
// lanes that need them by vpexpandd.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "codec/rans/rans.h"
#include "common/checksum.h"

// GCC 12 flags the deliberately undefined pass-through operand inside its own
// gather and down-convert intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace zipmoe::codec::avx512 {

namespace {

// Above this escape frequency (out of 4096) a vector of 16 lanes would need the
// gather fallback more often than not, and the plain gather decoder is faster.
constexpr std::uint32_t kBucketEscapeLimit = 64;

// Keeps the compiler from folding a load into the instruction that consumes it:
// the folded forms of vpmovzxwd and vpmovdb cost two to three times the register forms.
template <typename Vector>
inline Vector in_register(Vector v) {
#if defined(__GNUC__)
  __asm__("" : "+v"(v));
#endif
  return v;
}

// Lanes below 2^16 take the next words, in lane order.
inline const std::uint8_t* renormalize(__m512i* x, const std::uint8_t* words) {
  const __mmask16 reads = _mm512_cmplt_epu32_mask(*x, _mm512_set1_epi32(kRansStateLow));
  const __m256i raw = in_register(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words)));
  const __m512i next = _mm512_maskz_expand_epi32(reads, _mm512_cvtepu16_epi32(raw));
  *x = _mm512_or_si512(_mm512_mask_slli_epi32(*x, reads, *x, 16), next);
  return words + 2 * _mm_popcnt_u32(reads);
}

constexpr int kVectors = int(kRansLanes / 16);

// The symbols of 32 entries (two vectors), in lane order.
inline void store_symbols(__m512i entry_low, __m512i entry_high, std::uint8_t* out) {
  const __m128i low = _mm512_cvtepi32_epi8(_mm512_srli_epi32(entry_low, kRansEntrySymbolShift));
  const __m128i high = _mm512_cvtepi32_epi8(_mm512_srli_epi32(entry_high, kRansEntrySymbolShift));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1));
}

// x = f * (x >> 12) + bias, for entries laid out like slot entries.
inline __m512i advance(__m512i x, __m512i entry, __m512i bias) {
  const __m512i freq = _mm512_srli_epi32(entry, kRansEntryFreqShift);
  return _mm512_add_epi32(_mm512_mullo_epi32(freq, _mm512_srli_epi32(x, kRansScaleBits)), bias);
}

class GatherLanes {
 public:
  GatherLanes(const RansDecoderTables& tables, const std::uint32_t* states) : slots_(tables.slots) {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) x_[v] = _mm512_loadu_si512(states + 16 * v);
  }

  const std::uint8_t* step(const std::uint8_t* words, std::uint8_t* out) {
    const __m512i slot_mask = _mm512_set1_epi32(kRansScale - 1);
    __m512i entry[kVectors];
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) entry[v] = _mm512_i32gather_epi32(_mm512_and_si512(x_[v], slot_mask), slots_, 4);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; v += 2) store_symbols(entry[v], entry[v + 1], out + 16 * v);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) x_[v] = advance(x_[v], entry[v], _mm512_and_si512(entry[v], slot_mask));
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) words = renormalize(&x_[v], words);
    return words;
  }

  void store(std::uint32_t* states) const {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_si512(states + 16 * v, x_[v]);
  }

 private:
  const std::uint32_t* slots_;
  __m512i x_[kVectors];  // lanes 16v .. 16v+15
};

template <bool kHasEscape>
class BucketLanes {
 public:
  BucketLanes(const RansDecoderTables& tables, const std::uint32_t* states)
      : slots_(tables.slots),
        primary_{_mm512_load_si512(tables.bucket_primary), _mm512_load_si512(tables.bucket_primary + 16)},
        alias_{_mm512_load_si512(tables.bucket_alias), _mm512_load_si512(tables.bucket_alias + 16)},
        divide_{_mm512_load_si512(tables.bucket_divide), _mm512_load_si512(tables.bucket_divide + 16)} {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) x_[v] = _mm512_loadu_si512(states + 16 * v);
  }

  const std::uint8_t* step(const std::uint8_t* words, std::uint8_t* out) {
    __m512i entry[kVectors];
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) x_[v] = decode(x_[v], &entry[v]);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; v += 2) store_symbols(entry[v], entry[v + 1], out + 16 * v);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) words = renormalize(&x_[v], words);
    return words;
  }

  void store(std::uint32_t* states) const {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_si512(states + 16 * v, x_[v]);
  }

 private:
  __m512i decode(__m512i x, __m512i* entry_out) const {
    // vpermt2d reads the low 5 bits of each index: the bucket, bits 7..11 of x.
    const __m512i bucket = _mm512_srli_epi32(x, kRansBucketSlotBits);
    const __m512i primary = _mm512_permutex2var_epi32(primary_[0], bucket, primary_[1]);
    const __m512i alias = _mm512_permutex2var_epi32(alias_[0], bucket, alias_[1]);
    const __m512i divide = _mm512_permutex2var_epi32(divide_[0], bucket, divide_[1]);
    const __m512i offset = _mm512_and_si512(x, _mm512_set1_epi32(kRansBucketSlots - 1));
    const __mmask16 in_alias = _mm512_cmpge_epu32_mask(offset, divide);
    __m512i entry = _mm512_mask_blend_epi32(in_alias, primary, alias);
    __m512i offset_in_part = _mm512_mask_sub_epi32(offset, in_alias, offset, divide);
    if (kHasEscape) {
      const __mmask16 escaped = _mm512_cmplt_epu32_mask(entry, _mm512_set1_epi32(1u << kRansEntryFreqShift));
      if (escaped) {
        const __m512i slot = _mm512_and_si512(x, _mm512_set1_epi32(kRansScale - 1));
        entry = _mm512_mask_i32gather_epi32(entry, escaped, slot, slots_, 4);
        offset_in_part = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~escaped), offset_in_part);
      }
    }
    *entry_out = entry;
    const __m512i bias =
        _mm512_add_epi32(offset_in_part, _mm512_and_si512(entry, _mm512_set1_epi32(kRansEntryBiasMask)));
    return advance(x, entry, bias);
  }

  const std::uint32_t* slots_;
  __m512i primary_[2], alias_[2], divide_[2];  // buckets 0..15 and 16..31
  __m512i x_[kVectors];                        // lanes 16v .. 16v+15
};

}  // namespace

#include "codec/rans/rans_decode_driver.inc"

namespace {

Status decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                      std::size_t count, const MergeTarget& target, SegmentChecksums* checksums) {
  const auto& rans = static_cast<const RansDecoderTables&>(tables);
  if (rans.escape_frequency == 0) return decode_lanes<BucketLanes<false>>(rans, payload, payload_size, count, target, checksums);
  if (rans.escape_frequency <= kBucketEscapeLimit) {
    return decode_lanes<BucketLanes<true>>(rans, payload, payload_size, count, target, checksums);
  }
  return decode_lanes<GatherLanes>(rans, payload, payload_size, count, target, checksums);
}

}  // namespace

Status rans_decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                           std::size_t count, const MergeTarget& target) {
  return decode_segment(tables, payload, payload_size, count, target, nullptr);
}

Status rans_decode_segment_checksummed(const DecoderTables& tables, const std::uint8_t* payload,
                                       std::size_t payload_size, std::size_t count, const MergeTarget& target,
                                       SegmentChecksums* checksums) {
  return decode_segment(tables, payload, payload_size, count, target, checksums);
}

}  // namespace zipmoe::codec::avx512

// AVX2 rANS decoder: the 64 lanes as eight vectors of 8; table lookups by gather,
// renormalization words spread to the lanes that need them by a permutation
// looked up from the lane mask.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "codec/rans/rans.h"
#include "common/checksum.h"

namespace zipmoe::codec::avx2 {

namespace {

// For each 8-lane mask, byte i is the index among the loaded words of the word
// lane i takes: the number of reading lanes before it.
constexpr std::array<std::uint64_t, 256> make_spread_table() {
  std::array<std::uint64_t, 256> table{};
  for (unsigned mask = 0; mask < 256; ++mask) {
    std::uint64_t packed = 0;
    unsigned taken = 0;
    for (unsigned lane = 0; lane < 8; ++lane) {
      if (mask & (1u << lane)) packed |= std::uint64_t(taken++) << (8 * lane);
    }
    table[mask] = packed;
  }
  return table;
}
alignas(64) constexpr std::array<std::uint64_t, 256> kSpread = make_spread_table();

constexpr int kVectors = int(kRansLanes / 8);

class GatherLanes {
 public:
  GatherLanes(const RansDecoderTables& tables, const std::uint32_t* states)
      : slots_(reinterpret_cast<const int*>(tables.slots)) {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) {
      x_[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(states + 8 * v));
    }
  }

  const std::uint8_t* step(const std::uint8_t* words, std::uint8_t* out) {
    const __m256i slot_mask = _mm256_set1_epi32(kRansScale - 1);
    __m256i entry[kVectors];
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) {
      entry[v] = _mm256_i32gather_epi32(slots_, _mm256_and_si256(x_[v], slot_mask), 4);
    }
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) {
      const __m256i freq = _mm256_srli_epi32(entry[v], kRansEntryFreqShift);
      const __m256i bias = _mm256_and_si256(entry[v], slot_mask);
      x_[v] = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srli_epi32(x_[v], kRansScaleBits)), bias);
    }
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; v += 4) store_symbols(entry + v, out + 8 * v);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) words = renormalize(&x_[v], words);
    return words;
  }

  void store(std::uint32_t* states) const {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(states + 8 * v), x_[v]);
  }

 private:
  // The symbols of 32 entries (four vectors), in lane order.
  static void store_symbols(const __m256i* entry, std::uint8_t* out) {
    const __m256i byte_mask = _mm256_set1_epi32(0xff);
    const __m256i symbol[4] = {
        _mm256_srli_epi32(entry[0], kRansEntrySymbolShift), _mm256_srli_epi32(entry[1], kRansEntrySymbolShift),
        _mm256_srli_epi32(entry[2], kRansEntrySymbolShift), _mm256_srli_epi32(entry[3], kRansEntrySymbolShift)};
    // Packs interleave 128-bit halves: dwords come out as lanes 0-3, 8-11, 16-19,
    // 24-27, 4-7, 12-15, 20-23, 28-31; the permutation restores lane order.
    const __m256i p01 =
        _mm256_packus_epi32(_mm256_and_si256(symbol[0], byte_mask), _mm256_and_si256(symbol[1], byte_mask));
    const __m256i p23 =
        _mm256_packus_epi32(_mm256_and_si256(symbol[2], byte_mask), _mm256_and_si256(symbol[3], byte_mask));
    const __m256i bytes = _mm256_packus_epi16(p01, p23);
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
  }

  static const std::uint8_t* renormalize(__m256i* x, const std::uint8_t* words) {
    const __m256i reads = _mm256_cmpeq_epi32(_mm256_srli_epi32(*x, 16), _mm256_setzero_si256());
    const unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(reads)));
    const __m256i next = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words)));
    const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kSpread[mask])));
    const __m256i spread = _mm256_permutevar8x32_epi32(next, index);
    *x = _mm256_blendv_epi8(*x, _mm256_or_si256(_mm256_slli_epi32(*x, 16), spread), reads);
    return words + 2 * _mm_popcnt_u32(mask);
  }

  const int* slots_;
  __m256i x_[kVectors];  // lanes 8v .. 8v+7
};

}  // namespace

#include "codec/rans/rans_decode_driver.inc"

namespace {

Status decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                      std::size_t count, const MergeTarget& target, SegmentChecksums* checksums) {
  return decode_lanes<GatherLanes>(static_cast<const RansDecoderTables&>(tables), payload, payload_size, count, target, checksums);
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

}  // namespace zipmoe::codec::avx2

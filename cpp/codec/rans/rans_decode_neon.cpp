// NEON rANS decoder: the 64 lanes as sixteen vectors of 4. NEON has no gather, so
// table entries are loaded lane by lane (ld1 {v.s}[i]); the arithmetic is one
// multiply-accumulate per vector, and renormalization words are spread to the
// lanes that need them by a byte table lookup chosen from the lane mask.
#include <arm_neon.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "codec/rans/rans.h"
#include "common/checksum.h"

namespace zipmoe::codec::neon {

namespace {

// For each 4-lane mask: the tbl indices that put the k-th loaded 16-bit word into
// the low half of the k-th reading lane, zero elsewhere (index 0xff reads zero).
struct SpreadTable {
  alignas(16) std::uint8_t bytes[16][16];
};
constexpr SpreadTable make_spread_table() {
  SpreadTable table{};
  for (unsigned mask = 0; mask < 16; ++mask) {
    unsigned taken = 0;
    for (unsigned lane = 0; lane < 4; ++lane) {
      const bool reads = mask & (1u << lane);
      table.bytes[mask][4 * lane + 0] = reads ? std::uint8_t(2 * taken) : 0xff;
      table.bytes[mask][4 * lane + 1] = reads ? std::uint8_t(2 * taken + 1) : 0xff;
      table.bytes[mask][4 * lane + 2] = 0xff;
      table.bytes[mask][4 * lane + 3] = 0xff;
      taken += reads;
    }
  }
  return table;
}
constexpr SpreadTable kSpread = make_spread_table();

constexpr int kVectors = int(kRansLanes / 4);

class NeonLanes {
 public:
  NeonLanes(const RansDecoderTables& tables, const std::uint32_t* states) : slots_(tables.slots) {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) x_[v] = vld1q_u32(states + 4 * v);
  }

  const std::uint8_t* step(const std::uint8_t* words, std::uint8_t* out) {
    const std::uint32_t* slots = slots_;
    const uint32x4_t slot_mask = vdupq_n_u32(kRansScale - 1);
    uint32x4_t entry[kVectors];
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) {
      const uint32x4_t slot = vandq_u32(x_[v], slot_mask);
      uint32x4_t e = vld1q_dup_u32(slots + vgetq_lane_u32(slot, 0));
      e = vld1q_lane_u32(slots + vgetq_lane_u32(slot, 1), e, 1);
      e = vld1q_lane_u32(slots + vgetq_lane_u32(slot, 2), e, 2);
      e = vld1q_lane_u32(slots + vgetq_lane_u32(slot, 3), e, 3);
      entry[v] = e;
    }
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) {
      const uint32x4_t freq = vshrq_n_u32(entry[v], kRansEntryFreqShift);
      const uint32x4_t bias = vandq_u32(entry[v], slot_mask);
      x_[v] = vmlaq_u32(bias, freq, vshrq_n_u32(x_[v], kRansScaleBits));
    }
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; v += 4) store_symbols(entry + v, out + 4 * v);
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) words = renormalize(&x_[v], words);
    return words;
  }

  void store(std::uint32_t* states) const {
    ZIPMOE_RANS_UNROLL
    for (int v = 0; v < kVectors; ++v) vst1q_u32(states + 4 * v, x_[v]);
  }

 private:
  // The symbols of 16 entries, in lane order: narrowing shifts keep bits 12..19.
  static void store_symbols(const uint32x4_t* entry, std::uint8_t* out) {
    const uint16x8_t a =
        vcombine_u16(vshrn_n_u32(entry[0], kRansEntrySymbolShift), vshrn_n_u32(entry[1], kRansEntrySymbolShift));
    const uint16x8_t b =
        vcombine_u16(vshrn_n_u32(entry[2], kRansEntrySymbolShift), vshrn_n_u32(entry[3], kRansEntrySymbolShift));
    vst1q_u8(out, vcombine_u8(vmovn_u16(a), vmovn_u16(b)));
  }

  static const std::uint8_t* renormalize(uint32x4_t* x, const std::uint8_t* words) {
    static const std::uint32_t kLaneBits[4] = {1, 2, 4, 8};
    const uint32x4_t reads = vcltq_u32(*x, vdupq_n_u32(kRansStateLow));
    const unsigned mask = vaddvq_u32(vandq_u32(reads, vld1q_u32(kLaneBits)));
    const unsigned taken = static_cast<unsigned>(-vaddvq_s32(vreinterpretq_s32_u32(reads)));
    const uint8x16_t next = vcombine_u8(vld1_u8(words), vdup_n_u8(0));
    const uint32x4_t spread = vreinterpretq_u32_u8(vqtbl1q_u8(next, vld1q_u8(kSpread.bytes[mask])));
    *x = vorrq_u32(vbslq_u32(reads, vshlq_n_u32(*x, 16), *x), spread);
    return words + 2 * taken;
  }

  const std::uint32_t* slots_;
  uint32x4_t x_[kVectors];  // lanes 4v .. 4v+3
};

}  // namespace

#include "codec/rans/rans_decode_driver.inc"

namespace {

Status decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                      std::size_t count, const MergeTarget& target, SegmentChecksums* checksums) {
  return decode_lanes<NeonLanes>(static_cast<const RansDecoderTables&>(tables), payload, payload_size, count, target, checksums);
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

}  // namespace zipmoe::codec::neon

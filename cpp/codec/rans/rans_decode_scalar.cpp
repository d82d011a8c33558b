// Reference rANS decoder: the definition every SIMD variant must match byte for
// byte, and the checked final step they all share.
#include <algorithm>
#include <cstring>

#include "codec/rans/rans.h"
#include "common/checksum.h"
#include "common/bytes.h"

// GCC's SLP vectorizer packs pieces of the unrolled lanes into SSE registers and
// shuttles them back, which halves the speed of this loop.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-slp-vectorize")
#endif

namespace zipmoe::codec {

Status rans_finish_segment(const std::uint32_t* slots, std::uint32_t* states, const std::uint8_t* words,
                           const std::uint8_t* words_end, std::size_t partial_lanes, std::uint8_t* symbols_out) {
  for (std::size_t lane = 0; lane < partial_lanes; ++lane) {
    std::uint32_t x = states[lane];
    const std::uint32_t entry = slots[x & (kRansScale - 1)];
    symbols_out[lane] = static_cast<std::uint8_t>(entry >> kRansEntrySymbolShift);
    x = (entry >> kRansEntryFreqShift) * (x >> kRansScaleBits) + (entry & kRansEntryBiasMask);
    if (x < kRansStateLow) {
      if (words_end - words < 2) return Status::Format("rans payload is truncated (a lane needs more words)");
      x = (x << 16) | load_le16(words);
      words += 2;
    }
    states[lane] = x;
  }
  if (words != words_end) {
    return Status::Format("rans payload has " + std::to_string((words_end - words) / 2) +
                          " words left over after the last symbol");
  }
  for (std::size_t lane = 0; lane < kRansLanes; ++lane) {
    if (states[lane] != kRansStateLow) {
      return Status::Format("rans lane " + std::to_string(lane) + " ends in state " + std::to_string(states[lane]) +
                            ", not the initial state (corrupt payload)");
    }
  }
  return Status::Ok();
}

namespace scalar {

namespace {

// GCC sinks a load that only one side of a select uses into a branch, and that
// branch would mispredict on about one lane in six; an empty asm pins the load in
// place so that the select becomes a conditional move.
inline std::uint32_t keep_in_register(std::uint32_t value) {
#if defined(__GNUC__)
  __asm__("" : "+r"(value));
#endif
  return value;
}

class ScalarLanes {
 public:
  ScalarLanes(const RansDecoderTables& tables, const std::uint32_t* states) : slots_(tables.slots) {
    std::memcpy(x_, states, sizeof(x_));
  }

  const std::uint8_t* step(const std::uint8_t* words, std::uint8_t* out) {
    std::size_t taken = 0;  // words read so far in this step
    ZIPMOE_RANS_UNROLL
    for (std::size_t lane = 0; lane < kRansLanes; ++lane) {
      std::uint32_t x = x_[lane];
      const std::uint32_t entry = slots_[x & (kRansScale - 1)];
      out[lane] = static_cast<std::uint8_t>(entry >> kRansEntrySymbolShift);
      x = (entry >> kRansEntryFreqShift) * (x >> kRansScaleBits) + (entry & kRansEntryBiasMask);
      // Branch-free: whether a lane reads is a coin toss the predictor cannot learn.
      const std::uint32_t word = keep_in_register(load_le16(words + 2 * taken));
      const std::uint32_t reads = x < kRansStateLow;
      const std::uint32_t refilled = (x << 16) | word;
      taken += reads;
      x = reads ? refilled : x;
      x_[lane] = x;
    }
    return words + 2 * taken;
  }

  void store(std::uint32_t* states) const { std::memcpy(states, x_, sizeof(x_)); }

 private:
  const std::uint32_t* slots_;
  std::uint32_t x_[kRansLanes];
};

}  // namespace

#include "codec/rans/rans_decode_driver.inc"

namespace {

Status decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                      std::size_t count, const MergeTarget& target, SegmentChecksums* checksums) {
  return decode_lanes<ScalarLanes>(static_cast<const RansDecoderTables&>(tables), payload, payload_size, count, target, checksums);
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

}  // namespace scalar
}  // namespace zipmoe::codec

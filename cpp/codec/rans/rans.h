// Static rANS coder of exponent planes: internal declarations and the format.
//
// One frequency table per coded plane; 64 interleaved rANS lanes per segment.
// Every ISA decodes the same bytes: the lane count is part of the format, not a
// property of the SIMD width (scalar 64, AVX2 8x8, AVX-512 4x16, NEON 16x4).
// Why 64 and not 32: each vector of lanes is one dependency chain whose step
// (lookup, multiply, compare, expand) takes about 45 cycles; with 32 lanes an
// AVX-512 core has two chains and waits on latency (measured 1.9 cycles/symbol),
// with 64 it has four and is bound by throughput (1.35 cycles/symbol). The cost is
// 128 more bytes of final states per segment: 0.3% of a default 128 Ki-symbol
// segment of 2.5-bit exponents, under 0.1% of the BF16 tensor.
//
// Parameters
//   alphabet          256 symbols (bytes)
//   scale             M = 2^12: normalized frequencies f[s] sum to exactly 4096,
//                     every coded symbol has 1 <= f[s] <= 4095
//   state             32-bit, kept in [2^16, 2^32) between symbols
//   renormalization   16-bit words; at most one word per symbol per lane
//   lanes             64; symbol i of a segment belongs to lane i % 64
//
// Code table (the coded plane's `table` field; little-endian)
//   offset  size  field
//   0       1     R: number of runs of present symbols, 1..128
//   1       2R    runs in ascending order, two bytes each: first symbol, length - 1.
//                 A run ends at or before symbol 255, and the next run starts at
//                 least two symbols after the previous one's start + length - 1
//                 (runs are maximal: never adjacent, never overlapping).
//   1+2R    ...   one frequency per present symbol, in ascending symbol order:
//                   f < 128:  one byte f
//                   f >= 128: two bytes 0x80 | (f & 0x7f), f >> 7 (second byte 1..31)
//                 (the shortest form is required). There are at least two present
//                 symbols, every f is in [1, 4095], the f sum to 4096, and the table
//                 ends right after the last frequency.
//
// Segment payload (count = symbols of the segment, from the coded plane framing)
//   offset     size    field
//   0          4*N     N = min(count, 64): final encoder state of lanes 0..N-1, u32,
//                      each in [2^16, 2^32). Lanes N..63 hold no symbols.
//   4*N        2*W     W renormalization words, u16, in the order the decoder reads them
//   (the payload ends with the last word: payload size = 4*N + 2*W exactly)
//
// Slot layout (derived from the frequencies by encoder and decoder alike). The
// 4096 slots are 32 buckets of 128; every bucket holds at most two "items": its
// primary (the first d[b] slots) and its alias (the other 128 - d[b]). Items:
//   - K <= 32 present symbols: one item per symbol, in ascending symbol order.
//   - K > 32: the K - 31 symbols of smallest frequency (ties: smaller symbol
//     first) form one "escape" item whose frequency is their sum; the other 31
//     symbols are items in ascending symbol order, then the escape item.
//   Items are padded with zero-frequency items to 32; item b is the primary of bucket b.
// Buckets are assigned by this exact procedure (C = 128, rem[i] = item frequency):
//   small = items with rem < C, large = the others, both in ascending item order
//   while small and large are both non-empty:
//     s = pop front of small; l = front of large
//     d[s] = rem[s]; alias[s] = l; rem[l] -= C - rem[s]
//     if rem[l] < C: pop l from large, push it to the back of small
//   then small is empty and every item left in large has rem = C: d = C (the
//   bucket is all primary)
// Bucket b is slots [128b, 128b + d[b]) of item b, then slots of item alias[b].
// Each symbol's slots, in ascending slot order, carry biases 0, 1, ..., f[s] - 1.
// The escape item's slots, in ascending order, go to the escape symbols in
// ascending symbol order, f[s] consecutive slots each. (Buckets let a vector
// decoder find a slot's symbol with register permutes instead of gathers.)
//
// Decoding (the definition of the format): every lane starts from its stored state.
// Steps t = 0, 1, ... decode symbols 64t .. 64t+63 (the last step only the lanes whose
// symbol index is below count). Within a step, lanes are visited in order 0..63; lane
// l with state x:
//   slot   = x & 4095;   (s, bias) = the symbol and bias of that slot
//   x      = f[s] * (x >> 12) + bias                  (symbol 64t + l is s)
//   if x < 2^16: x = (x << 16) | next word
// After the last step every word has been read and every lane's state is 2^16 (the
// encoder's initial state); anything else is a corrupt payload.
//
// Encoding runs the inverse in reverse order (last step first, lane 63 down to 0),
// from states 2^16: if x >= f[s] << 20, emit x & 0xffff and x >>= 16; then
// x = (x / f[s]) * 4096 + (the slot of s with bias x % f[s]). Emitted words are
// stored in reverse emission order, so a vector decoder reads them in lane order
// within each step.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "codec/coder.h"
#include "codec/planes.h"
#include "common/status.h"

namespace zipmoe::codec {

constexpr int kRansScaleBits = 12;
constexpr std::uint32_t kRansScale = 1u << kRansScaleBits;
constexpr std::uint32_t kRansStateLow = 1u << 16;  // states live in [kRansStateLow, 2^32)
constexpr std::size_t kRansLanes = 64;
// A step reads at most one 16-bit word per lane.
constexpr std::size_t kRansMaxStepBytes = 2 * kRansLanes;
// Symbols decoded into an L1-resident block between two merges (2048 measured
// fastest on Zen 4: the block, its sign/mantissa bytes and output stay in L1).
constexpr std::size_t kRansBlockSymbols = 2048;
static_assert(kRansBlockSymbols % kRansLanes == 0, "blocks hold whole steps");

// Decoder slot table entry: bias in bits 0..11, symbol in bits 12..19, f[symbol]
// in bits 20..31 (f <= 4095 fits in 12 bits).
constexpr std::uint32_t kRansEntryBiasMask = 0xfffu;
constexpr int kRansEntrySymbolShift = 12;
constexpr int kRansEntryFreqShift = 20;

constexpr std::size_t kRansBuckets = 32;
constexpr int kRansBucketSlotBits = 7;
constexpr std::uint32_t kRansBucketSlots = 1u << kRansBucketSlotBits;

struct RansDecoderTables final : DecoderTables {
  // Defined out of line so that the vtable and destructor live in a baseline-ISA object.
  ~RansDecoderTables() override;
  alignas(64) std::uint32_t slots[kRansScale];
  // Per bucket, entries laid out like slot entries whose bias field holds the bias
  // of the part's first slot (offset within the part added by the decoder); f = 0
  // marks an escape part, whose slots must be looked up in `slots`.
  alignas(64) std::uint32_t bucket_primary[kRansBuckets];
  alignas(64) std::uint32_t bucket_alias[kRansBuckets];
  alignas(64) std::uint32_t bucket_divide[kRansBuckets];  // d[b]: primary slots of bucket b
  // Sum of the frequencies in the escape item (0 when K <= 32).
  std::uint32_t escape_frequency = 0;
};

// Normalized frequencies of a serialized table (untrusted bytes; FormatError when
// malformed). f[s] = 0 for symbols the table cannot code.
Status rans_parse_table(const std::uint8_t* table, std::size_t table_size, std::array<std::uint32_t, 256>* f);

// One segment's payload split into its parts; unused lanes hold kRansStateLow.
struct RansSegment {
  std::uint32_t states[kRansLanes];
  const std::uint8_t* words;
  const std::uint8_t* words_end;
};

// Validates a segment's size against its symbol count and loads the lane states.
Status rans_open_segment(const std::uint8_t* payload, std::size_t payload_size, std::size_t count,
                         RansSegment* segment);

// Decodes the last, partial step (lanes 0..partial_lanes-1, every word read
// bounds-checked) into symbols_out, then checks that the words are exhausted and
// every state is back at kRansStateLow. Shared by all ISA decoders.
Status rans_finish_segment(const std::uint32_t* slots, std::uint32_t* states, const std::uint8_t* words,
                           const std::uint8_t* words_end, std::size_t partial_lanes, std::uint8_t* symbols_out);

// Full unrolling of the per-lane and per-vector loops keeps lane states in registers.
#if defined(__clang__)
#define ZIPMOE_RANS_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ZIPMOE_RANS_UNROLL _Pragma("GCC unroll 64")
#else
#define ZIPMOE_RANS_UNROLL
#endif

#define ZIPMOE_DECLARE_RANS_DECODER(ns)                                                                  \
  namespace ns {                                                                                         \
  Status rans_decode_segment(const DecoderTables& tables, const std::uint8_t* payload,                   \
                             std::size_t payload_size, std::size_t count, const MergeTarget& target);    \
  Status rans_decode_segment_checksummed(const DecoderTables& tables, const std::uint8_t* payload,       \
                                         std::size_t payload_size, std::size_t count,                    \
                                         const MergeTarget& target, SegmentChecksums* checksums);        \
  }

ZIPMOE_DECLARE_RANS_DECODER(scalar)
#if defined(ZIPMOE_ARCH_X86)
ZIPMOE_DECLARE_RANS_DECODER(avx2)
ZIPMOE_DECLARE_RANS_DECODER(avx512)
#endif
#if defined(ZIPMOE_ARCH_ARM64)
ZIPMOE_DECLARE_RANS_DECODER(neon)
#endif

}  // namespace zipmoe::codec

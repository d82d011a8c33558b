// Canonical, length-limited Huffman coding of exponent planes: the on-disk
// format, and the declarations shared by the encoder (huffman.cpp) and the
// per-ISA segment decoders (huffman_decode_<isa>.cpp).
//
// ---------------------------------------------------------------------------
// Code table (the coded plane's `table`, T bytes; all fields are bytes)
//   offset  size        field
//   0       1           first_symbol   lowest symbol that has a code
//   1       1           last_symbol    highest symbol that has a code (>= first_symbol)
//   2       ceil(K/2)   code lengths of symbols first_symbol..last_symbol (K of them),
//                       4 bits each, low nibble first: symbol first_symbol is the low
//                       nibble of byte 2, first_symbol+1 its high nibble, and so on.
//                       0 means "no code"; otherwise 1..11. When K is odd the final
//                       high nibble is 0.
//   T = 2 + ceil(K/2) exactly (at most 130 bytes).
// Rules a decoder enforces: every length <= 11; symbols first_symbol and
// last_symbol have a code; the lengths form a complete prefix code (Kraft sum
// of 2^-length equal to 1), so there are at least two codes and every bit string
// decodes. Only lengths are stored: codes are canonical. Sort the coded symbols
// by (length, symbol value); the first gets the all-zero code of its length;
// each next one gets the previous code plus one, shifted left by the difference
// in length (the DEFLATE convention, codes read most significant bit first).
//
// ---------------------------------------------------------------------------
// Segment payload (one per segment of n symbols, P bytes)
//   offset  size  field
//   0       4     u32 LE  bytes of stream 0
//   4       4     u32 LE  bytes of stream 1
//   8       4     u32 LE  bytes of stream 2
//   12      B0    stream 0
//   12+B0   B1    stream 1
//   ...     B2    stream 2
//   ...     B3    stream 3: the rest of the payload, B3 = P - 12 - B0 - B1 - B2 >= 0
// The segment's symbols are cut into 4 consecutive runs: with q = n / 4 and
// r = n % 4, stream k codes q + (k < r ? 1 : 0) symbols, stream 0 the first run.
// A stream is the codes of its symbols in order, packed LSB-first: the first
// bit of a code (its most significant bit) goes to the lowest free bit of the
// current byte, bytes fill from bit 0 to bit 7. The last byte is padded with
// zero bits, and a stream has exactly ceil(total code bits / 8) bytes (0 for
// an empty run). Decoders reject a stream that ends inside a code, one with
// bytes left over, non-zero padding bits, and stream sizes that exceed P - 12.
//
// Why four streams: the decoder advances four independent bit readers in
// lockstep, which hides the latency of each table lookup behind the others.
// Why 11 bits: the 2048-window lookup (16 KiB of entries, 2 KiB of bit counts)
// stays in L1 beside the block buffers, and every code fits one lookup, so the
// decoder has no escape path. On the exponents of N(0, 0.02) BF16 weights the
// limit costs 0.0075 bits per symbol over an unlimited Huffman code (0.07% of
// the compressed tensor); a 12-bit limit would win back 0.004 bits at the price
// of a 32 KiB table (all of L1) or an escape test in every lookup.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/coder.h"
#include "codec/planes.h"

namespace zipmoe::codec {

constexpr int kHuffmanMaxCodeLength = 11;
constexpr int kHuffmanStreams = 4;
constexpr std::size_t kHuffmanSegmentHeaderBytes = 4 * (kHuffmanStreams - 1);
constexpr unsigned kHuffmanWindowBits = kHuffmanMaxCodeLength;
constexpr std::uint32_t kHuffmanWindowMask = (1u << kHuffmanWindowBits) - 1;

// A multi-symbol lookup entry, stored to the output as it is (the bytes past
// the symbols are overwritten by the next store):
//   bytes 0..6  up to 7 decoded symbols, the first in byte 0 (unused bytes 0)
//   byte 7      number of symbols (1..7)
// The bits the symbols take live in a separate byte array: the decoder's
// critical path is then load -> shift, with no unpacking in between.
constexpr unsigned kHuffmanMaxSymbolsPerEntry = 7;
constexpr unsigned kHuffmanEntryCountShift = 56;

// Decoding tables built from a validated code table. Plain data: the ISA
// kernels read it and nothing else.
struct HuffmanLookup {
  // For every 11-bit window (the next stream bits, first bit lowest): the run of
  // whole codes it starts with, and the bits that run takes (1..11).
  alignas(64) std::uint64_t multi[1u << kHuffmanWindowBits];
  alignas(64) std::uint8_t multi_bits[1u << kHuffmanWindowBits];
  // For every window: its first symbol (low byte) and that code's length (high byte).
  alignas(64) std::uint16_t single[1u << kHuffmanWindowBits];
};

// One segment's streams, already split and checked against the payload size.
struct HuffmanStreams {
  const std::uint8_t* begin[kHuffmanStreams];
  const std::uint8_t* end[kHuffmanStreams];
  std::size_t count[kHuffmanStreams];  // symbols the stream codes
  std::size_t first[kHuffmanStreams];  // index of its first symbol in the segment
};

// Why a kernel rejected a segment (the scalar wrapper in huffman.cpp turns this
// into a Status: ISA files construct no Status, see ARCHITECTURE.md on ODR).
enum class HuffmanFailureKind : int { kNone = 0, kTruncated, kTrailingBytes, kNonZeroPadding };
struct HuffmanFailure {
  HuffmanFailureKind kind;
  int stream;
  std::uint64_t bits_used;     // bits decoded when the failure was found
  std::uint64_t stream_bytes;  // the stream's size
};

// The CRC-32Cs of a checksummed decode, one per stream: of the stream's bytes,
// and of the SM high bytes of the elements the stream's symbols merge with.
struct HuffmanChecksums {
  std::uint32_t stream[kHuffmanStreams];
  std::uint32_t sm_high[kHuffmanStreams];
};

// Decodes the four streams of one segment and merges them into target
// (positioned at the segment's first element). Returns false and fills *failure
// on malformed data. Reads only inside [begin[k], end[k]) and writes only
// elements [0, sum of counts) of the target. With `checksums` (null: none; the
// target must merge) it also checksums each block of stream bytes and SM bytes
// as the block is merged, while they are in L1.
#define ZIPMOE_DECLARE_HUFFMAN_KERNEL(ns)                                                                      \
  namespace ns {                                                                                               \
  bool huffman_decode_streams(const HuffmanLookup& lookup, const HuffmanStreams& streams,                     \
                              const MergeTarget& target, HuffmanFailure* failure, HuffmanChecksums* checksums); \
  }

ZIPMOE_DECLARE_HUFFMAN_KERNEL(scalar)
#if defined(ZIPMOE_ARCH_X86)
ZIPMOE_DECLARE_HUFFMAN_KERNEL(avx2)
ZIPMOE_DECLARE_HUFFMAN_KERNEL(avx512)
#endif
#if defined(ZIPMOE_ARCH_ARM64)
ZIPMOE_DECLARE_HUFFMAN_KERNEL(neon)
#endif

// Code lengths (0 = no code) of an optimal prefix code with lengths at most
// max_length for `histogram` (package-merge). Symbols with a non-zero count get
// a code; when only one does, a second symbol gets one too so the code is
// complete. Exposed for tests. A max_length too small for the number of
// symbols is raised to the smallest that fits.
void huffman_code_lengths(const Histogram& histogram, int max_length, std::uint8_t lengths[256]);

// Parses and validates a serialized code table (the rules above).
Status huffman_parse_table(const std::uint8_t* table, std::size_t table_size, std::uint8_t lengths[256]);

}  // namespace zipmoe::codec

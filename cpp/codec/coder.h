// The interface every exponent coder implements, and the registry of coders.
//
// A coder turns a plane of 8-bit symbols into a table plus independently
// decodable segment payloads (framing, segmentation and threading live in
// coded_plane.h; a coder only sees one segment at a time). Encoding is
// ISA-independent; decoding has one function per ISA, all bit-identical to the
// scalar reference. Decoders take untrusted bytes: on any malformed input they
// return a FormatError status, never read or write out of bounds, and always
// terminate.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "codec/planes.h"
#include "common/cpu_features.h"
#include "common/status.h"
#include "zipmoe/types.h"

namespace zipmoe::codec {

using Histogram = std::array<std::uint64_t, 256>;

// Decoding state built once per coded plane from its serialized table
// (lookup tables etc.). Immutable after construction; shared by all threads.
class DecoderTables {
 public:
  virtual ~DecoderTables() = default;
};

// Decodes `count` symbols from one segment payload and writes them through
// `target` (already positioned at the segment's first element). Must detect
// any inconsistency between payload and count (truncation, trailing garbage,
// invalid codes) and return FormatError.
using DecodeSegmentFn = Status (*)(const DecoderTables& tables, const std::uint8_t* payload,
                                   std::size_t payload_size, std::size_t count, const MergeTarget& target);

// The CRC-32Cs of what a checksummed segment decode read: its payload, and the SM
// high bytes (the first SM plane byte of each element) its symbols merged with.
struct SegmentChecksums {
  std::uint32_t payload = 0;
  std::uint32_t sm_high = 0;
};

// A DecodeSegmentFn that also fills *checksums (never null; the target merges).
// Decoders that have one checksum the bytes while they are in cache for the
// decode anyway, instead of in a pass of their own over memory.
using DecodeChecksummedFn = Status (*)(const DecoderTables& tables, const std::uint8_t* payload,
                                       std::size_t payload_size, std::size_t count, const MergeTarget& target,
                                       SegmentChecksums* checksums);

struct Coder {
  Codec id;

  // Serializes a code table for symbols drawn from `histogram` (at least two
  // distinct symbols present). The table must be able to code every symbol whose
  // count is non-zero.
  Status (*build_table)(const Histogram& histogram, std::vector<std::uint8_t>* table);

  // Expected payload bytes for `histogram` split into `num_segments` segments,
  // used by Codec::kAuto to choose between coders without encoding twice.
  std::uint64_t (*estimate_payload_bytes)(const std::uint8_t* table, std::size_t table_size,
                                          const Histogram& histogram, std::size_t num_segments);

  // Appends the payload of one segment of n symbols to `payload`.
  Status (*encode_segment)(const std::uint8_t* table, std::size_t table_size, const std::uint8_t* symbols,
                           std::size_t n, std::vector<std::uint8_t>* payload);

  // Parses and validates a serialized table (untrusted bytes).
  Status (*prepare_decoder)(const std::uint8_t* table, std::size_t table_size,
                            std::unique_ptr<DecoderTables>* tables);

  // Segment decoders indexed by Isa; nullptr where a coder has no variant for
  // an ISA (the scalar one is used then).
  std::array<DecodeSegmentFn, kNumIsas> decode;

  // Checksumming variants, indexed by Isa; all nullptr where a coder has none
  // (CodedPlane then checksums in a pass of its own before decoding).
  std::array<DecodeChecksummedFn, kNumIsas> decode_checksummed;
};

// The coder registered for `id` (kHuffman, kRans, and kLz4hc in builds with
// liblz4), or nullptr.
const Coder* find_coder(Codec id);

// Registration functions, one per coder family (defined in huffman/, rans/ and
// lz4hc/; lz4hc_coder() exists only where ZIPMOE_HAVE_LZ4 is defined).
const Coder& huffman_coder();
const Coder& rans_coder();
const Coder& lz4hc_coder();

}  // namespace zipmoe::codec

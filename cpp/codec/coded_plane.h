// A coded plane: one exponent-symbol plane, entropy-coded, self-contained.
//
// Layout (little-endian; docs/FORMAT.md is the normative description):
//   offset  size  field
//   0       1     codec            0 raw, 1 huffman, 2 rans, 3 constant
//   1       1     version          1
//   2       2     reserved         0
//   4       4     segment_symbols  symbols per segment (the last may be shorter), > 0
//   8       8     num_symbols
//   16      4     table_size       bytes of the coder's table
//   20      4     num_segments     ceil(num_symbols / segment_symbols)
//   24      T     table
//   24+T    4*S   payload size of each segment
//   ...           segment payloads, in order; the plane ends with the last one
//
// Segments are independent: any thread can decode any segment given the table,
// which is how L threads share one tensor. Raw: table empty, payload = symbols.
// Constant: table = the one symbol, payloads empty.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "codec/coder.h"
#include "codec/planes.h"
#include "common/status.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::codec {

constexpr std::uint8_t kCodedPlaneVersion = 1;
constexpr std::size_t kCodedPlaneHeaderSize = 24;
// 128 Ki symbols: enough segments for 2-16 threads on an expert tensor
// (a 2048 x 1408 projection has 22), few enough that per-segment headers and
// rANS final states stay around 0.1% of the output.
constexpr std::uint32_t kDefaultSegmentSymbols = 1u << 17;
constexpr std::uint32_t kMaxSegmentSymbols = 1u << 26;

Histogram compute_histogram(const std::uint8_t* symbols, std::size_t n);
// Order-0 entropy in bits per symbol.
double entropy_bits(const Histogram& histogram);

struct EncodeOptions {
  Codec codec = Codec::kAuto;  // kAuto: the smallest; huffman/rans: that coder unless raw/constant is smaller
  std::uint32_t segment_symbols = kDefaultSegmentSymbols;
};

struct PlaneEncodeResult {
  Codec codec = Codec::kRaw;  // the codec actually used
  Histogram histogram{};
};

// Encodes n symbols into a coded plane appended to *out.
Status encode_plane(const std::uint8_t* symbols, std::size_t n, const EncodeOptions& options, ThreadPool* pool,
                    std::vector<std::uint8_t>* out, PlaneEncodeResult* result = nullptr);

// A parsed, validated view of a coded plane. Does not own the bytes: they must
// outlive it. Cheap to copy (decoder tables are shared). Thread-safe for decoding.
class CodedPlane {
 public:
  CodedPlane() = default;

  // Validates the framing and the coder's table. Errors are FormatError.
  static Status parse(const std::uint8_t* data, std::size_t size, CodedPlane* out);

  Codec codec() const { return codec_; }
  std::uint64_t num_symbols() const { return num_symbols_; }
  std::uint32_t segment_symbols() const { return segment_symbols_; }
  std::size_t num_segments() const { return segment_offsets_.empty() ? 0 : segment_offsets_.size() - 1; }
  std::size_t table_size() const { return table_size_; }
  std::size_t size_bytes() const { return size_; }
  // Symbols in segment s.
  std::size_t segment_count(std::size_t s) const;

  // Decodes segment s into `plane_target` (a target for the whole plane: element 0
  // is the plane's first symbol).
  Status decode_segment(std::size_t s, const MergeTarget& plane_target, Isa isa) const;
  // Decodes segment s into `segment_target`, whose element 0 is the segment's
  // first symbol (e.g. a small buffer that holds one decoded segment).
  Status decode_segment_at(std::size_t s, const MergeTarget& segment_target, Isa isa) const;
  // Decodes every segment, in parallel on `pool` (inline when null).
  Status decode(const MergeTarget& plane_target, ThreadPool* pool, Isa isa) const;

  // CRC-32Cs of the two planes a merging decode reads.
  struct Checksums {
    std::uint32_t coded_plane = 0;  // every byte of the coded plane
    std::uint32_t sm_plane = 0;     // the SM plane: the high bytes, then (F32) the low words
  };
  // Decodes like decode() and checksums both planes on the way: the thread that
  // decodes a segment first checksums that segment's payload and SM bytes, which
  // also brings them into its cache, and the pieces are combined at the end. So
  // the checksum costs no pass of its own over memory and runs on every thread.
  // The target must merge (not bare symbols) and cover the whole plane with its SM
  // plane laid out as make_merge_target lays it. On error *sums is unspecified.
  Status decode_checksummed(const MergeTarget& plane_target, ThreadPool* pool, Isa isa, Checksums* sums) const;

 private:
  struct SegmentSums {
    SegmentChecksums coded;    // payload and SM high bytes
    std::uint32_t sm_low = 0;  // F32: the SM low words
  };
  // decode_segment_at() with checksums when `sums` is not null.
  Status decode_one(std::size_t s, const MergeTarget& segment_target, Isa isa, SegmentSums* sums) const;
  // decode() and decode_checksummed(); `sums` null: no checksums.
  Status decode_all(const MergeTarget& plane_target, ThreadPool* pool, Isa isa, SegmentSums* sums) const;
  std::size_t payload_size(std::size_t s) const {
    return static_cast<std::size_t>(segment_offsets_[s + 1] - segment_offsets_[s]);
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  Codec codec_ = Codec::kRaw;
  std::uint64_t num_symbols_ = 0;
  std::uint32_t segment_symbols_ = 1;
  std::size_t table_size_ = 0;
  const std::uint8_t* table_ = nullptr;
  std::vector<std::uint64_t> segment_offsets_;  // into data_, num_segments + 1 entries
  std::shared_ptr<const DecoderTables> tables_;
  const Coder* coder_ = nullptr;
};

}  // namespace zipmoe::codec

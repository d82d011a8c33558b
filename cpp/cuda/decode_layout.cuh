// Plain-data descriptors that the host planner (decode_plan.h) writes and the
// decoding kernels read: one batch of coded planes, cut into the units of work
// each kernel takes (a Huffman segment per block, up to kRansWarpsPerBlock rANS
// segments per block, slices of raw/constant planes). Every offset and size in
// here was validated on the host against the plane's bytes; the kernels still
// check everything the payload *content* decides (code boundaries, words
// consumed, final states) and report it through the per-plane error word.
#pragma once

#include <cstdint>
#include <type_traits>

namespace zipmoe::cuda {

// What a kernel writes for element i of a plane.
enum OutputKind : std::uint32_t {
  kOutputSymbols = 0,  // the bare symbol (uint8)
  kOutputMerge16 = 1,  // BF16/F16: merge16 of planes.h
  kOutputMerge32 = 2,  // F32: merge32 of planes.h
};

struct PlaneArgs {
  const std::uint8_t* data;   // the coded plane (device)
  const std::uint8_t* sm_hi;  // SM bytes of element 0 (merge kinds)
  const std::uint8_t* sm_lo;  // F32: the low 16-bit words (2 bytes per element)
  void* out;                  // element 0 of the output
  std::uint64_t num_symbols;
  std::uint64_t table_word;  // the plane's decode table: 8-byte words from BatchArgs::tables + table_word
  std::uint32_t output_kind;
  std::uint32_t reserved;
};

// ---------------------------------------------------------------------------
// Huffman (format: cpp/codec/huffman/huffman.h)

constexpr unsigned kHuffmanStreamsPerSegment = 4;
constexpr unsigned kHuffmanLookupBits = 11;
constexpr std::uint32_t kHuffmanLookupMask = (1u << kHuffmanLookupBits) - 1;
constexpr unsigned kHuffmanLookupEntries = 1u << kHuffmanLookupBits;
// Decode table entry (one 64-bit word per 11-bit window, first stream bit lowest):
//   bits 0..47   up to 6 symbols whose codes lie whole inside the window, first in bits 0..7
//   bits 48..51  length of the first code (1..11)
//   bits 52..55  bits taken by all those codes (1..11)
//   bits 56..59  number of those symbols (1..6)
constexpr unsigned kHuffmanEntryMaxSymbols = 6;
constexpr unsigned kHuffmanEntryFirstLengthShift = 48;
constexpr unsigned kHuffmanEntryTotalBitsShift = 52;
constexpr unsigned kHuffmanEntryCountShift = 56;

// Streams are cut into chunks of this many bits, decoded in parallel: each chunk
// is first decoded from its first bit as if a code started there (Huffman codes
// resynchronize within a few codes), then the true code boundary entering the
// chunk is propagated and the chunk's symbol count corrected (see huffman_device.cuh).
constexpr std::uint32_t kHuffmanChunkBits = 1024;
// Code starts within the first 64 bits of a chunk are remembered for the correction.
constexpr std::uint32_t kHuffmanSyncWindowBits = 64;
constexpr unsigned kHuffmanBlockThreads = 128;

struct HuffmanSegmentArgs {
  std::uint32_t plane;
  std::uint32_t reserved;
  std::uint64_t segment;           // index in its plane (error reports)
  std::uint64_t first_element;     // the plane element of the segment's first symbol
  std::uint64_t chunk_first;       // first chunk of stream 0 in BatchArgs::huffman_chunks; the others follow
  std::uint64_t stream_offset[kHuffmanStreamsPerSegment];  // byte offset in the plane
  std::uint32_t stream_bytes[kHuffmanStreamsPerSegment];
  std::uint32_t stream_count[kHuffmanStreamsPerSegment];   // symbols
  std::uint32_t stream_chunks[kHuffmanStreamsPerSegment];  // ceil(bits / kHuffmanChunkBits)
  std::uint32_t reserved2;
};

// Scratch of one chunk (device memory, written and read by one block).
struct HuffmanChunkState {
  std::uint64_t sync_map;        // bit i: the speculative pass found a code starting at chunk bit i
  std::uint32_t guess_count;     // symbols the speculative pass found in the chunk
  std::uint32_t guess_exit;      // stream bit where the speculative pass left the chunk
  std::uint32_t start;           // stream bit of the first code starting in the chunk
  std::uint32_t count;           // codes starting in the chunk (from `start`)
  std::uint32_t exit;            // stream bit of the first code starting after the chunk
  std::uint32_t first_symbol;    // index in the stream of the chunk's first symbol
};

// ---------------------------------------------------------------------------
// rANS (format: cpp/codec/rans/rans.h). The decode table is the CPU decoder's
// slot table, 4096 32-bit entries packed two per table word.

constexpr unsigned kRansWarpsPerBlock = 4;
constexpr unsigned kRansTableEntries = 4096;

struct RansSegmentArgs {
  std::uint32_t plane;
  std::uint32_t count;          // symbols
  std::uint64_t segment;        // index in its plane
  std::uint64_t first_element;
  std::uint64_t payload_offset; // byte offset in the plane
  std::uint32_t payload_bytes;
  std::uint32_t lanes_used;     // min(count, lanes)
};

struct RansBlockArgs {
  std::uint32_t plane;
  std::uint32_t first_segment;  // index into BatchArgs::rans_segments
  std::uint32_t num_segments;   // 1..kRansWarpsPerBlock, all of this plane
  std::uint32_t reserved;
};

// ---------------------------------------------------------------------------
// Raw and constant planes: elementwise, in slices.

constexpr std::uint64_t kFillSliceElements = 1u << 16;
constexpr unsigned kFillBlockThreads = 256;

struct FillSliceArgs {
  std::uint32_t plane;
  std::uint32_t constant;        // 0x100 | symbol for a constant plane, 0 for raw
  std::uint64_t first_element;
  std::uint64_t count;
  std::uint64_t symbols_offset;  // raw: byte offset of the plane's symbol 0
};

// ---------------------------------------------------------------------------
// Error word of a plane: the minimum over all errors found of
//   segment << 16 | detail << 8 | kind
// (~0 when none); the host turns it into a FormatError.

enum DecodeErrorKind : std::uint32_t {
  kErrorNone = 0,
  kErrorHuffmanTruncated = 1,      // detail: stream
  kErrorHuffmanTrailingBytes = 2,  // detail: stream
  kErrorHuffmanPadding = 3,        // detail: stream
  kErrorRansTruncated = 4,
  kErrorRansLeftover = 5,
  kErrorRansFinalState = 6,        // detail: lane
  kErrorRansInitialState = 7,      // detail: lane
};

constexpr unsigned long long kNoDecodeError = ~0ull;

struct BatchArgs {
  const PlaneArgs* planes;
  const std::uint64_t* tables;
  const HuffmanSegmentArgs* huffman_segments;
  HuffmanChunkState* huffman_chunks;
  const RansSegmentArgs* rans_segments;
  const RansBlockArgs* rans_blocks;
  const FillSliceArgs* fill_slices;
  unsigned long long* errors;  // one per plane
};

// Host and device read these through one memcpy'd block of bytes.
static_assert(std::is_trivially_copyable<PlaneArgs>::value && sizeof(PlaneArgs) % 8 == 0, "PlaneArgs layout");
static_assert(std::is_trivially_copyable<HuffmanSegmentArgs>::value && sizeof(HuffmanSegmentArgs) % 8 == 0,
              "HuffmanSegmentArgs layout");
static_assert(std::is_trivially_copyable<RansSegmentArgs>::value && sizeof(RansSegmentArgs) % 8 == 0,
              "RansSegmentArgs layout");
static_assert(std::is_trivially_copyable<RansBlockArgs>::value && sizeof(RansBlockArgs) % 8 == 0,
              "RansBlockArgs layout");
static_assert(std::is_trivially_copyable<FillSliceArgs>::value && sizeof(FillSliceArgs) % 8 == 0,
              "FillSliceArgs layout");

}  // namespace zipmoe::cuda

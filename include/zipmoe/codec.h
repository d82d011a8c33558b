// zipmoe/codec.h - lossless compression of one BF16/F16/F32 tensor into a
// self-describing blob, and its exact inverse.
//
// Blob layout (little-endian; normative text in docs/FORMAT.md):
//   "ZMOB" | u16 version=1 | u8 dtype | u8 ndim | u64 shape[ndim]
//   | u64 coded_plane_size | u64 sm_plane_size | coded exponent plane | sign/mantissa plane
//   | u32 crc32c of every preceding byte
//
// Thread-safety: all functions are reentrant; the ThreadPool is the caller's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "zipmoe/error.h"
#include "zipmoe/export.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

struct CompressOptions {
  // kAuto picks the smallest of huffman/rans/raw per tensor; huffman or rans use
  // that coder unless raw (or constant, for a single repeated exponent) is smaller.
  Codec codec = Codec::kAuto;
  // Symbols per independently decodable segment; 0 means the default (131072).
  std::uint32_t segment_symbols = 0;
};

// Compresses `num_elements` elements of `dtype` (bit patterns, native byte order)
// whose logical shape is `shape` (product must equal num_elements; at most 8 dims).
// Throws InvalidArgumentError on bad arguments.
std::vector<std::uint8_t> compress(const void* elements, DType dtype, const std::vector<std::uint64_t>& shape,
                                   const CompressOptions& options = {}, ThreadPool* pool = nullptr);

struct BlobInfo {
  DType dtype = DType::kBF16;
  std::vector<std::uint64_t> shape;
  std::uint64_t num_elements = 0;
  Codec codec = Codec::kRaw;          // codec of the exponent plane
  std::uint64_t coded_plane_bytes = 0;
  std::uint64_t sm_plane_bytes = 0;
  std::uint64_t total_bytes = 0;
  std::uint32_t num_segments = 0;
};

// Parses and validates a blob's framing (not its checksum). Throws FormatError.
BlobInfo read_blob_info(const void* blob, std::size_t size);

// Decodes a blob into `out` (exactly num_elements * dtype_size bytes). Verifies the
// checksum as it decodes (each piece is checksummed just before it is decoded, on
// the thread that decodes it): throws ChecksumError on mismatch, FormatError on
// malformed data, InvalidArgumentError when out_size is wrong. After a throw the
// contents of `out` are unspecified. `isa` forces an instruction-set path
// (default: the process default, see ZIPMOE_ISA).
void decompress(const void* blob, std::size_t size, void* out, std::size_t out_size, ThreadPool* pool = nullptr,
                std::optional<Isa> isa = std::nullopt);

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

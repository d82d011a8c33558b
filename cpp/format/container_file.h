// ContainerFile: the core's reader of .zmoe containers, with Status errors.
//
// The public ContainerReader (zipmoe/container.h) wraps one and turns its
// statuses into exceptions; everything inside the core (the engine, the expert
// cache, the fetch scheduler) uses this class, so that a damaged file travels up
// as a Status to the public API, which throws once. The file layout, what open()
// validates and what each read verifies are described in zipmoe/container.h.
//
// Errors name the file, and the tensor and chunk where one is involved: kFormat
// (malformed, or truncated), kChecksum (damaged), kIo (the OS refused),
// kInvalidArgument (a buffer too small, an unknown chunk or tensor).
//
// Thread-safety: immutable after open(); every const method may be called from
// any number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "codec/coded_plane.h"
#include "common/file_io.h"
#include "common/status.h"
#include "format/layout.h"
#include "zipmoe/container.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::format {

class ContainerFile {
 public:
  // Opens and validates `path` (header, sections, index, chunk table, metadata).
  static Status open(const std::string& path, IoMode mode, std::unique_ptr<ContainerFile>* out);
  ContainerFile(const ContainerFile&) = delete;
  ContainerFile& operator=(const ContainerFile&) = delete;

  const std::string& path() const { return path_; }
  IoMode io_mode() const { return mode_; }
  // kDirect mode: true when reads really bypass the page cache.
  bool direct_io_active() const { return mode_ == IoMode::kDirect && file_->direct_active(); }
  std::uint16_t version_major() const { return header_.major; }
  std::uint16_t version_minor() const { return header_.minor; }
  std::uint64_t file_size() const { return header_.file_size; }
  const std::string& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<ChunkInfo>& chunks() const { return chunks_; }

  // nullptr when absent (hash maps built at open).
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo* find_expert(std::uint32_t layer, std::uint32_t expert, std::string_view projection) const;

  // The stored size of `chunk` rounded up to kContainerAlignment: what a buffer
  // given to read_chunk() must hold. `chunk` must exist.
  std::size_t chunk_buffer_size(std::uint32_t chunk) const;
  // Reads the stored bytes of `chunk` into buffer[0, stored_size) and verifies
  // their CRC-32C. In kDirect mode a buffer aligned to kContainerAlignment is
  // read with O_DIRECT; an unaligned one through pread.
  Status read_chunk(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const;
  // read_chunk() without the checksum: for a caller that decodes the chunk with
  // decode_chunks_verified(), which checks it during the decode. Until then the
  // bytes may be damaged; nothing decoded from them may be used before that
  // call succeeds.
  Status read_chunk_unverified(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const;
  // Verifies the CRC-32C of chunk `chunk` (must exist) whose stored bytes are at
  // `bytes` (ChecksumError naming the file, tensor and chunk).
  Status verify_chunk(std::uint32_t chunk, const void* bytes) const;

  // Decodes `tensor` (one of tensors()) from its two chunks' stored bytes, as
  // read_chunk() gave them (checksums are not verified again; structure is),
  // into `out` (exactly tensor.decoded_bytes()) on `pool` with the `isa` path
  // (which this CPU must run). Bit-exact on every ISA and thread count.
  Status decode_chunks(const TensorInfo& tensor, const void* exponent_chunk, std::size_t exponent_size,
                       const void* sm_chunk, std::size_t sm_size, void* out, std::size_t out_size, ThreadPool* pool,
                       Isa isa) const;
  // decode_chunks() for chunks read by read_chunk_unverified(): the CRC-32Cs of
  // both chunks are computed during the decode (by the threads that decode,
  // while the bytes are in their caches) and compared at the end. A damaged chunk
  // is a ChecksumError, also when the damage makes the coded plane malformed;
  // `out` is then unspecified and must not be used.
  Status decode_chunks_verified(const TensorInfo& tensor, const void* exponent_chunk, std::size_t exponent_size,
                                const void* sm_chunk, std::size_t sm_size, void* out, std::size_t out_size,
                                ThreadPool* pool, Isa isa) const;
  // The structural checks of decode_chunks() (sizes, codec, framing, symbol
  // count) and the parsed exponent plane of `tensor` from its exponent chunk's
  // stored bytes, which must outlive *plane: for a caller that decodes segment
  // by segment (CodedPlane::decode_segment_at) from chunks already checked.
  Status parse_chunks(const TensorInfo& tensor, const void* exponent_chunk, std::size_t exponent_size,
                      std::size_t sm_size, codec::CodedPlane* plane) const;
  // Reads both chunks and decodes the tensor into `out` (exactly
  // decoded_bytes()) with decode_chunks_verified(). In kMmap mode the chunks are
  // decoded in place, from mappings of their pages made for the call and
  // removed after it.
  Status decode_tensor(const TensorInfo& tensor, void* out, std::size_t out_size, ThreadPool* pool, Isa isa) const;

 private:
  ContainerFile() = default;
  Status open_and_validate();
  Status read_section(const char* what, const Section& section, std::vector<std::uint8_t>* out) const;
  Status index_tensors();
  Status fail(const std::string& message) const { return Status::Format(path_ + ": " + message); }
  // "<path>: tensor 'x': chunk 3 (exponent plane)"
  std::string where(const TensorInfo& tensor, const ChunkInfo& chunk) const;
  Status verify_crc(const ChunkInfo& chunk, const std::uint8_t* bytes) const;
  Status check_crc(const ChunkInfo& chunk, std::uint32_t computed) const;
  Status read_chunk_bytes(const ChunkInfo& chunk, std::uint8_t* buffer, std::size_t buffer_size, bool verify) const;
  // The checks of decode_chunks, and the parsed exponent plane.
  Status prepare_decode(const TensorInfo& tensor, const std::uint8_t* exponent, std::size_t exponent_size,
                        std::size_t sm_size, std::size_t out_size, codec::CodedPlane* plane) const;
  Status check_decoded_size(const TensorInfo& tensor, std::size_t out_size) const;
  // ChecksumError for whichever of the two chunks is damaged, else `failure`.
  Status damaged_or(const TensorInfo& tensor, const void* exponent_chunk, const void* sm_chunk,
                    Status failure) const;
  Status check_tensor(const TensorInfo& tensor, const char* call) const;

  std::string path_;
  IoMode mode_ = IoMode::kPread;
  std::unique_ptr<File> file_;
  Header header_;
  std::string metadata_;
  std::vector<TensorInfo> tensors_;
  std::vector<ChunkInfo> chunks_;
  std::unordered_map<std::string_view, std::uint32_t> by_name_;  // views into tensors_[i].name
  std::unordered_multimap<std::uint64_t, std::uint32_t> by_expert_;
};

}  // namespace zipmoe::format

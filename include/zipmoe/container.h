// zipmoe/container.h - the .zmoe container: a whole model in one file, every
// tensor losslessly compressed, each expert projection loadable plane by plane.
//
// File layout, version 1 (little-endian; docs/FORMAT.md is the normative text):
//
//   [0, 4096)        header page: magic "ZMOE\r\n\x1a\n", u16 major = 1, u16 minor,
//                    section offsets/sizes, counts, CRC-32C of each section, and
//                    the CRC-32C of the header itself in its last 4 bytes
//   [4096, ...)      chunks, each at a multiple of 4096, zero padding in between:
//                    for every tensor its coded exponent plane (the bytes of
//                    codec::encode_plane) and its raw sign/mantissa plane
//   then, each at a multiple of 4096:
//     tensor index   one variable-length entry per tensor: name, dtype, shape,
//                    role (dense, or expert with layer, expert id, projection),
//                    the indices of its two chunks, its exponent entropy
//     chunk table    40 bytes per chunk: kind, codec, owning tensor, offset,
//                    stored size, decoded size, CRC-32C of the stored bytes
//     metadata       UTF-8 JSON (architecture, tokenizer, ...), opaque to C++
//   the file ends at a multiple of 4096.
//
// A writer streams chunks as tensors arrive, then writes index, chunk table and
// metadata, and rewrites the header page last; the file appears under its name
// only once complete. A reader validates header, sections and every count,
// offset and size against the file at open, before allocating anything they
// size; chunk checksums are verified on every read. Because chunks are aligned
// and the file ends on a page boundary, any chunk can be read with O_DIRECT.
//
// Thread-safety: a ContainerReader is immutable after open(); all its const
// methods may be called from any number of threads at once. A ContainerWriter
// is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "zipmoe/error.h"
#include "zipmoe/export.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// The version this build writes: 1.0, or 1.1 for a file that holds a U8 tensor
// (a dtype that readers of 1.0 reject as unknown, so they never misread it).
// Readers accept every minor version of their major version.
constexpr std::uint16_t kContainerMajorVersion = 1;
constexpr std::uint16_t kContainerMinorVersion = 0;
constexpr std::uint16_t kContainerMinorVersionWithBytes = 1;
// Chunk, section and file-size granularity (bytes).
constexpr std::size_t kContainerAlignment = 4096;
constexpr std::size_t kMaxTensorNameBytes = 1024;
constexpr std::size_t kMaxProjectionBytes = 64;
constexpr std::size_t kMaxTensorDims = 8;

// How a reader fetches chunk bytes from storage.
enum class IoMode : std::uint8_t {
  kPread = 0,   // pread() through the page cache
  kDirect = 1,  // O_DIRECT, bypassing the page cache (pread where the filesystem refuses it)
  kMmap = 2,    // read-only mappings of the chunks read, each removed once its bytes are used
};
// "pread", "direct", "mmap".
const char* io_mode_name(IoMode mode);
bool parse_io_mode(const std::string& name, IoMode* mode);

enum class RoleKind : std::uint8_t { kDense = 0, kExpert = 1 };

// What a tensor is to the engine: a dense weight (attention, norms, embeddings,
// shared experts...) or one projection of one routed expert.
struct TensorRole {
  RoleKind kind = RoleKind::kDense;
  std::uint32_t layer = 0;  // expert only
  std::uint32_t expert = 0;  // expert only
  std::string projection;   // expert only: "gate", "up", "down", or any 1-64 byte UTF-8 name

  static TensorRole dense() { return TensorRole(); }
  static TensorRole expert_projection(std::uint32_t layer, std::uint32_t expert, std::string projection) {
    TensorRole role;
    role.kind = RoleKind::kExpert;
    role.layer = layer;
    role.expert = expert;
    role.projection = std::move(projection);
    return role;
  }
  bool is_expert() const { return kind == RoleKind::kExpert; }
};

enum class ChunkKind : std::uint8_t {
  kExponentPlane = 1,      // a coded plane (cpp/codec/coded_plane.h)
  kSignMantissaPlane = 2,  // the raw sign/mantissa plane (cpp/codec/planes.h)
};
// "exponent plane", "sign/mantissa plane".
const char* chunk_kind_name(ChunkKind kind);

struct ChunkInfo {
  std::uint32_t index = 0;   // position in ContainerReader::chunks()
  ChunkKind kind = ChunkKind::kExponentPlane;
  Codec codec = Codec::kRaw;  // exponent plane: its coder; sign/mantissa plane: kRaw (stored as is)
  std::uint32_t tensor = 0;  // the owning tensor's position in tensors()
  std::uint64_t offset = 0;  // file offset, a multiple of kContainerAlignment
  std::uint64_t stored_size = 0;   // bytes in the file, padding excluded
  std::uint64_t decoded_size = 0;  // exponent plane: symbols (= elements); sign/mantissa: = stored_size
  std::uint32_t crc32c = 0;        // CRC-32C of the stored bytes
};

struct TensorInfo {
  std::uint32_t index = 0;  // position in ContainerReader::tensors()
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<std::uint64_t> shape;  // at most kMaxTensorDims; {} is a scalar
  std::uint64_t num_elements = 0;
  TensorRole role;
  std::uint32_t exponent_chunk = 0;  // indices into ContainerReader::chunks()
  std::uint32_t sm_chunk = 0;
  float exponent_entropy = 0.0f;  // order-0 entropy of the exponent plane, bits per element, in [0, 8]

  // Bytes of the decoded tensor.
  std::uint64_t decoded_bytes() const { return num_elements * dtype_size(dtype); }
};

struct ContainerWriterOptions {
  // Symbols per independently decodable segment of each exponent plane; 0 means
  // the codec default (131072).
  std::uint32_t segment_symbols = 0;
};

// Writes a container one tensor at a time; besides the caller's data, it holds
// the planes of one tensor (about 1.5 times its size). Nothing appears at
// `path` until finish() succeeds: after an exception, discard() or destruction
// without finish(), the temporary file is removed and whatever was at `path`
// is left untouched.
class ContainerWriter {
 public:
  // Creates "<path>.tmp-<random>" beside `path`. metadata_json must be UTF-8
  // (its JSON syntax is the caller's business). Throws IoError, InvalidArgumentError.
  ContainerWriter(const std::string& path, std::string metadata_json,
                  const ContainerWriterOptions& options = ContainerWriterOptions());
  ~ContainerWriter();
  ContainerWriter(ContainerWriter&&) noexcept;
  ContainerWriter& operator=(ContainerWriter&&) noexcept;
  ContainerWriter(const ContainerWriter&) = delete;
  ContainerWriter& operator=(const ContainerWriter&) = delete;

  // Replaces the metadata written by finish().
  void set_metadata(std::string metadata_json);

  // Splits `data` (num_elements of `dtype`, native byte order, shape's product
  // elements) into planes, encodes the exponent plane with `codec` on `pool`,
  // and appends both chunks. Throws InvalidArgumentError for an empty, overlong
  // or duplicate name, a duplicate expert (layer, expert, projection), a bad
  // dtype, shape or codec; IoError when writing fails (the writer is then
  // unusable and finish() throws).
  void add_tensor(const std::string& name, const void* data, DType dtype, const std::vector<std::uint64_t>& shape,
                  const TensorRole& role = TensorRole(), Codec codec = Codec::kAuto, ThreadPool* pool = nullptr);

  // Writes index, chunk table, metadata and header, makes the file durable
  // (fsync) and renames it to `path`. Throws IoError; InvalidArgumentError when
  // called twice or after a failure.
  void finish();
  // Abandons the file (no-op after finish()).
  void discard();

  const std::string& path() const;
  std::size_t num_tensors() const;
  // Bytes written to the temporary file so far.
  std::uint64_t bytes_written() const;
  bool finished() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a container. Errors name the file, and the tensor and chunk where one is
// involved: FormatError (malformed), ChecksumError (damaged), IoError.
class ContainerReader {
 public:
  // Opens and validates `path`: header checksum, version, section bounds and
  // checksums, every index and chunk-table entry, metadata UTF-8. Chunk bytes
  // are not read. An unknown major version is a FormatError naming the
  // versions this build reads.
  static ContainerReader open(const std::string& path, IoMode mode = IoMode::kPread);
  ~ContainerReader();
  ContainerReader(ContainerReader&&) noexcept;
  ContainerReader& operator=(ContainerReader&&) noexcept;
  ContainerReader(const ContainerReader&) = delete;
  ContainerReader& operator=(const ContainerReader&) = delete;

  const std::string& path() const;
  IoMode io_mode() const;
  // kDirect mode: true when reads really bypass the page cache.
  bool direct_io_active() const;
  std::uint16_t version_major() const;
  std::uint16_t version_minor() const;
  std::uint64_t file_size() const;

  // The metadata JSON text (UTF-8, as written).
  const std::string& metadata() const;
  const std::vector<TensorInfo>& tensors() const;
  const std::vector<ChunkInfo>& chunks() const;

  // nullptr when absent. O(1) average (hash maps built at open).
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo* find_expert(std::uint32_t layer, std::uint32_t expert, std::string_view projection) const;

  // Bytes a buffer given to read_chunk() must hold: the chunk's stored size
  // rounded up to kContainerAlignment (room for a whole-block direct read).
  std::size_t chunk_buffer_size(std::uint32_t chunk) const;
  // Reads the stored bytes of `chunk` into buffer[0, stored_size) and verifies
  // their CRC-32C (ChecksumError naming file, tensor and chunk). buffer_size must
  // be at least chunk_buffer_size(chunk) (InvalidArgumentError otherwise); bytes
  // past stored_size may be overwritten. In kDirect mode a buffer aligned to
  // kContainerAlignment is read with O_DIRECT; an unaligned one through pread.
  void read_chunk(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const;

  // Decodes `tensor` from its two chunks' stored bytes, as read_chunk() gave
  // them (checksums are not verified again; structure is), into `out`
  // (exactly tensor.decoded_bytes()). Bit-exact on every ISA and thread count.
  void decode_chunks(const TensorInfo& tensor, const void* exponent_chunk, std::size_t exponent_size,
                     const void* sm_chunk, std::size_t sm_size, void* out, std::size_t out_size,
                     ThreadPool* pool = nullptr, std::optional<Isa> isa = std::nullopt) const;

  // Reads both chunks and decodes the tensor into `out` (exactly
  // decoded_bytes()), verifying the checksums during the decode: a damaged chunk
  // throws ChecksumError and leaves `out` unspecified. In kMmap mode the chunks
  // are decoded in place (from mappings of their pages, removed when the call
  // returns).
  void decode_tensor(const TensorInfo& tensor, void* out, std::size_t out_size, ThreadPool* pool = nullptr,
                     std::optional<Isa> isa = std::nullopt) const;
  // By name; InvalidArgumentError when no tensor has it.
  void decode_tensor(std::string_view name, void* out, std::size_t out_size, ThreadPool* pool = nullptr,
                     std::optional<Isa> isa = std::nullopt) const;

 private:
  struct Impl;
  explicit ContainerReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

// The byte layout of .zmoe version 1: serialization and validating parsers for
// the header page, the tensor index and the chunk table. docs/FORMAT.md is the
// normative description; field offsets below are its tables.
//
// Parsers take untrusted bytes: every count is checked against the bytes that
// must hold it before anything is allocated, every offset and size against the
// file, and they return Status::Format with a message naming the section, entry
// and field (callers prefix the file name).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "zipmoe/container.h"

namespace zipmoe::format {

constexpr std::array<std::uint8_t, 8> kMagic = {'Z', 'M', 'O', 'E', 0x0D, 0x0A, 0x1A, 0x0A};
constexpr std::size_t kHeaderSize = 4096;
// The header checksum covers bytes [0, kHeaderChecksumOffset) and sits after them.
constexpr std::size_t kHeaderChecksumOffset = kHeaderSize - 4;

// Header field offsets.
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffMajor = 8;
constexpr std::size_t kOffMinor = 10;
constexpr std::size_t kOffHeaderSize = 12;
constexpr std::size_t kOffAlignment = 16;
constexpr std::size_t kOffFileSize = 24;
constexpr std::size_t kOffTensorCount = 32;
constexpr std::size_t kOffChunkCount = 40;
constexpr std::size_t kOffIndexOffset = 48;
constexpr std::size_t kOffIndexSize = 56;
constexpr std::size_t kOffChunkTableOffset = 64;
constexpr std::size_t kOffChunkTableSize = 72;
constexpr std::size_t kOffMetadataOffset = 80;
constexpr std::size_t kOffMetadataSize = 88;
constexpr std::size_t kOffIndexCrc = 96;
constexpr std::size_t kOffChunkTableCrc = 100;
constexpr std::size_t kOffMetadataCrc = 104;

constexpr std::size_t kChunkEntrySize = 40;
constexpr std::size_t kIndexEntryFixedSize = 32;
// An entry holds at least its fixed part and a one-byte name.
constexpr std::size_t kIndexEntryMinSize = kIndexEntryFixedSize + 1;

// Element counts beyond this cannot be a real tensor (16 Ti elements).
constexpr std::uint64_t kMaxElements = std::uint64_t(1) << 44;
// Metadata beyond this is not a model description (tokenizers are tens of MB).
constexpr std::uint64_t kMaxMetadataBytes = std::uint64_t(1) << 30;

struct Section {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint32_t crc32c = 0;
};

struct Header {
  std::uint16_t major = kContainerMajorVersion;
  std::uint16_t minor = kContainerMinorVersion;
  std::uint32_t alignment = kContainerAlignment;
  std::uint64_t file_size = 0;
  std::uint64_t tensor_count = 0;
  std::uint64_t chunk_count = 0;
  Section index;
  Section chunk_table;
  Section metadata;
};

// Writes the header page (kHeaderSize bytes), checksum included.
void serialize_header(const Header& header, std::uint8_t* page);

// Parses the header page of a file of `actual_file_size` bytes: magic, version
// (before the checksum, since another major version may lay its page out
// differently), checksum, then every field against the file size.
Status parse_header(const std::uint8_t* page, std::uint64_t actual_file_size, Header* header);

void append_index_entry(const TensorInfo& tensor, std::vector<std::uint8_t>* out);
void append_chunk_entry(const ChunkInfo& chunk, std::vector<std::uint8_t>* out);

// Parses exactly `count` entries filling all of [data, data + size).
Status parse_index(const std::uint8_t* data, std::size_t size, std::uint64_t count, std::vector<TensorInfo>* tensors);
// `data_end` is where the chunk region ends (the index offset).
Status parse_chunk_table(const std::uint8_t* data, std::size_t size, std::uint64_t count, std::uint32_t alignment,
                         std::uint64_t data_end, std::vector<ChunkInfo>* chunks);
// Cross-checks tensors and chunks: each tensor owns exactly its two chunks, of
// the right kinds, with sizes that fit its element count and dtype.
Status check_tensor_chunks(const std::vector<TensorInfo>& tensors, const std::vector<ChunkInfo>& chunks);

bool is_valid_utf8(const std::uint8_t* data, std::size_t size);
// A valid tensor name (non-empty, bounded, UTF-8, no NUL); the reason otherwise.
Status check_name(const std::string& name, std::size_t max_bytes, const char* what);

// Names used in messages: "tensor 'x'", "chunk 3 (exponent plane)".
std::string describe_tensor(const TensorInfo& tensor);
std::string describe_chunk(const ChunkInfo& chunk);

}  // namespace zipmoe::format

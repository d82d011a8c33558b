#include "format/layout.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "common/checksum.h"
#include "common/file_io.h"

namespace zipmoe::format {

namespace {

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

std::string str(std::uint64_t v) { return std::to_string(v); }

bool is_power_of_two(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The largest entry: fixed part, 8 dims, longest name and projection.
constexpr std::uint64_t kIndexEntryMaxSize =
    kIndexEntryFixedSize + 8 * kMaxTensorDims + kMaxTensorNameBytes + kMaxProjectionBytes;

// Bounds shared by the three trailing sections: inside the file, past the
// header, on the alignment grid.
Status check_section(const char* what, const Section& s, const Header& h) {
  if (s.offset % h.alignment != 0) {
    return Status::Format(std::string(what) + " offset " + str(s.offset) + " is not a multiple of " +
                          str(h.alignment));
  }
  if (s.offset < kHeaderSize || s.offset > h.file_size || s.size > h.file_size - s.offset) {
    return Status::Format(std::string(what) + " [" + str(s.offset) + ", +" + str(s.size) +
                          ") lies outside the file of " + str(h.file_size) + " bytes");
  }
  return Status::Ok();
}

}  // namespace

bool is_valid_utf8(const std::uint8_t* data, std::size_t size) {
  std::size_t i = 0;
  while (i < size) {
    const std::uint8_t c = data[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length;
    std::uint32_t code;
    std::uint32_t minimum;
    if ((c & 0xE0) == 0xC0) {
      length = 2, code = c & 0x1F, minimum = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, code = c & 0x0F, minimum = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, code = c & 0x07, minimum = 0x10000;
    } else {
      return false;
    }
    if (length > size - i) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const std::uint8_t next = data[i + k];
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if (code < minimum || (code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) return false;
    i += length;
  }
  return true;
}

Status check_name(const std::string& name, std::size_t max_bytes, const char* what) {
  if (name.empty()) return Status::InvalidArgument(std::string(what) + " is empty");
  if (name.size() > max_bytes) {
    return Status::InvalidArgument(std::string(what) + " is " + str(name.size()) + " bytes long (at most " +
                                   str(max_bytes) + ")");
  }
  if (name.find('\0') != std::string::npos) return Status::InvalidArgument(std::string(what) + " contains a NUL byte");
  if (!is_valid_utf8(reinterpret_cast<const std::uint8_t*>(name.data()), name.size())) {
    return Status::InvalidArgument(std::string(what) + " is not valid UTF-8");
  }
  return Status::Ok();
}

std::string describe_tensor(const TensorInfo& tensor) {
  return "tensor '" + tensor.name + "' (#" + str(tensor.index) + ")";
}

std::string describe_chunk(const ChunkInfo& chunk) {
  return "chunk " + str(chunk.index) + " (" + chunk_kind_name(chunk.kind) + ")";
}

// ---------------------------------------------------------------------------
// Header

void serialize_header(const Header& h, std::uint8_t* page) {
  std::memset(page, 0, kHeaderSize);
  std::memcpy(page + kOffMagic, kMagic.data(), kMagic.size());
  store_le16(page + kOffMajor, h.major);
  store_le16(page + kOffMinor, h.minor);
  store_le32(page + kOffHeaderSize, static_cast<std::uint32_t>(kHeaderSize));
  store_le32(page + kOffAlignment, h.alignment);
  store_le64(page + kOffFileSize, h.file_size);
  store_le64(page + kOffTensorCount, h.tensor_count);
  store_le64(page + kOffChunkCount, h.chunk_count);
  store_le64(page + kOffIndexOffset, h.index.offset);
  store_le64(page + kOffIndexSize, h.index.size);
  store_le64(page + kOffChunkTableOffset, h.chunk_table.offset);
  store_le64(page + kOffChunkTableSize, h.chunk_table.size);
  store_le64(page + kOffMetadataOffset, h.metadata.offset);
  store_le64(page + kOffMetadataSize, h.metadata.size);
  store_le32(page + kOffIndexCrc, h.index.crc32c);
  store_le32(page + kOffChunkTableCrc, h.chunk_table.crc32c);
  store_le32(page + kOffMetadataCrc, h.metadata.crc32c);
  store_le32(page + kHeaderChecksumOffset, crc32c(page, kHeaderChecksumOffset));
}

Status parse_header(const std::uint8_t* page, std::uint64_t actual_file_size, Header* out) {
  if (std::memcmp(page + kOffMagic, kMagic.data(), kMagic.size()) != 0) {
    return Status::Format("not a zipmoe container (bad magic)");
  }
  Header h;
  h.major = load_le16(page + kOffMajor);
  h.minor = load_le16(page + kOffMinor);
  if (h.major != kContainerMajorVersion) {
    return Status::Format("container format version " + str(h.major) + "." + str(h.minor) +
                          " is not supported (this build reads version " + str(kContainerMajorVersion) +
                          ".x, x any minor version)");
  }
  const std::uint32_t stored_crc = load_le32(page + kHeaderChecksumOffset);
  const std::uint32_t computed_crc = crc32c(page, kHeaderChecksumOffset);
  if (stored_crc != computed_crc) {
    return Status::Checksum("header checksum mismatch (stored " + hex32(stored_crc) + ", computed " +
                            hex32(computed_crc) + "): the header page is damaged");
  }
  const std::uint32_t header_size = load_le32(page + kOffHeaderSize);
  if (header_size != kHeaderSize) {
    return Status::Format("header size " + str(header_size) + " is not " + str(kHeaderSize));
  }
  h.alignment = load_le32(page + kOffAlignment);
  if (!is_power_of_two(h.alignment) || h.alignment < kContainerAlignment || h.alignment > (1u << 30)) {
    return Status::Format("chunk alignment " + str(h.alignment) + " is not a power of two in [4096, 2^30]");
  }
  h.file_size = load_le64(page + kOffFileSize);
  if (h.file_size != actual_file_size) {
    return Status::Format("header records a file of " + str(h.file_size) + " bytes but the file has " +
                          str(actual_file_size) + (actual_file_size < h.file_size ? " (truncated)" : " (extended)"));
  }
  if (h.file_size % kDirectIoAlignment != 0) {
    return Status::Format("file size " + str(h.file_size) + " is not a multiple of " + str(kDirectIoAlignment));
  }
  h.tensor_count = load_le64(page + kOffTensorCount);
  h.chunk_count = load_le64(page + kOffChunkCount);
  h.index = {load_le64(page + kOffIndexOffset), load_le64(page + kOffIndexSize), load_le32(page + kOffIndexCrc)};
  h.chunk_table = {load_le64(page + kOffChunkTableOffset), load_le64(page + kOffChunkTableSize),
                   load_le32(page + kOffChunkTableCrc)};
  h.metadata = {load_le64(page + kOffMetadataOffset), load_le64(page + kOffMetadataSize),
                load_le32(page + kOffMetadataCrc)};

  ZIPMOE_RETURN_IF_ERROR(check_section("tensor index", h.index, h));
  ZIPMOE_RETURN_IF_ERROR(check_section("chunk table", h.chunk_table, h));
  ZIPMOE_RETURN_IF_ERROR(check_section("metadata", h.metadata, h));
  if (h.index.size > h.chunk_table.offset - h.index.offset || h.chunk_table.offset < h.index.offset) {
    return Status::Format("tensor index [" + str(h.index.offset) + ", +" + str(h.index.size) +
                          ") does not end before the chunk table at " + str(h.chunk_table.offset));
  }
  if (h.chunk_table.size > h.metadata.offset - h.chunk_table.offset || h.metadata.offset < h.chunk_table.offset) {
    return Status::Format("chunk table [" + str(h.chunk_table.offset) + ", +" + str(h.chunk_table.size) +
                          ") does not end before the metadata at " + str(h.metadata.offset));
  }
  if (h.tensor_count > 0xFFFFFFFFu / 2) {
    return Status::Format("tensor count " + str(h.tensor_count) + " is absurd");
  }
  if (h.chunk_count != 2 * h.tensor_count) {
    return Status::Format("chunk count " + str(h.chunk_count) + " is not twice the tensor count " +
                          str(h.tensor_count));
  }
  if (h.chunk_table.size != h.chunk_count * kChunkEntrySize) {
    return Status::Format("chunk table is " + str(h.chunk_table.size) + " bytes, expected " +
                          str(h.chunk_count * kChunkEntrySize) + " for " + str(h.chunk_count) + " chunks");
  }
  if (h.index.size < h.tensor_count * kIndexEntryMinSize || h.index.size > h.tensor_count * kIndexEntryMaxSize) {
    return Status::Format("tensor index is " + str(h.index.size) + " bytes, impossible for " + str(h.tensor_count) +
                          " tensors");
  }
  if (h.metadata.size > kMaxMetadataBytes) {
    return Status::Format("metadata is " + str(h.metadata.size) + " bytes (at most " + str(kMaxMetadataBytes) + ")");
  }
  *out = h;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Tensor index

void append_index_entry(const TensorInfo& t, std::vector<std::uint8_t>* out) {
  const bool expert = t.role.is_expert();
  append_le16(out, static_cast<std::uint16_t>(t.name.size()));
  out->push_back(static_cast<std::uint8_t>(t.dtype));
  out->push_back(static_cast<std::uint8_t>(t.shape.size()));
  out->push_back(static_cast<std::uint8_t>(t.role.kind));
  out->push_back(static_cast<std::uint8_t>(expert ? t.role.projection.size() : 0));
  append_le16(out, 0);
  append_le32(out, expert ? t.role.layer : 0);
  append_le32(out, expert ? t.role.expert : 0);
  append_le32(out, t.exponent_chunk);
  append_le32(out, t.sm_chunk);
  std::uint32_t entropy_bits;
  std::memcpy(&entropy_bits, &t.exponent_entropy, 4);
  append_le32(out, entropy_bits);
  append_le32(out, 0);
  for (std::uint64_t d : t.shape) append_le64(out, d);
  out->insert(out->end(), t.name.begin(), t.name.end());
  if (expert) out->insert(out->end(), t.role.projection.begin(), t.role.projection.end());
}

Status parse_index(const std::uint8_t* data, std::size_t size, std::uint64_t count,
                   std::vector<TensorInfo>* tensors) {
  // The caller has checked count * kIndexEntryMinSize <= size, which bounds this allocation.
  if (count > size / kIndexEntryMinSize) return Status::Format("tensor index is too small for its tensor count");
  std::vector<TensorInfo> out(static_cast<std::size_t>(count));
  ByteReader r(data, size);
  for (std::uint64_t i = 0; i < count; ++i) {
    TensorInfo& t = out[static_cast<std::size_t>(i)];
    t.index = static_cast<std::uint32_t>(i);
    const std::string where = "tensor index entry " + str(i);
    std::uint16_t name_bytes = 0, reserved16 = 0;
    std::uint8_t dtype = 0, ndim = 0, role = 0, projection_bytes = 0;
    std::uint32_t layer = 0, expert = 0, entropy_bits = 0, reserved32 = 0;
    if (!(r.u16(&name_bytes) && r.u8(&dtype) && r.u8(&ndim) && r.u8(&role) && r.u8(&projection_bytes) &&
          r.u16(&reserved16) && r.u32(&layer) && r.u32(&expert) && r.u32(&t.exponent_chunk) && r.u32(&t.sm_chunk) &&
          r.u32(&entropy_bits) && r.u32(&reserved32))) {
      return Status::Format(where + " is truncated");
    }
    if (name_bytes == 0 || name_bytes > kMaxTensorNameBytes) {
      return Status::Format(where + ": name length " + str(name_bytes) + " is outside [1, " +
                            str(kMaxTensorNameBytes) + "]");
    }
    if (!is_valid_dtype(dtype)) return Status::Format(where + ": unknown dtype id " + str(dtype));
    t.dtype = static_cast<DType>(dtype);
    if (ndim > kMaxTensorDims) {
      return Status::Format(where + ": " + str(ndim) + " dimensions (at most " + str(kMaxTensorDims) + ")");
    }
    if (role == static_cast<std::uint8_t>(RoleKind::kDense)) {
      if (projection_bytes != 0 || layer != 0 || expert != 0) {
        return Status::Format(where + ": a dense tensor has an expert layer, id or projection");
      }
    } else if (role == static_cast<std::uint8_t>(RoleKind::kExpert)) {
      if (projection_bytes == 0 || projection_bytes > kMaxProjectionBytes) {
        return Status::Format(where + ": projection name length " + str(projection_bytes) + " is outside [1, " +
                              str(kMaxProjectionBytes) + "]");
      }
      t.role.kind = RoleKind::kExpert;
      t.role.layer = layer;
      t.role.expert = expert;
    } else {
      return Status::Format(where + ": unknown role " + str(role));
    }
    std::memcpy(&t.exponent_entropy, &entropy_bits, 4);
    if (!(t.exponent_entropy >= 0.0f && t.exponent_entropy <= 8.0f)) {  // also rejects NaN
      return Status::Format(where + ": exponent entropy is not in [0, 8] bits");
    }
    t.shape.resize(ndim);
    std::uint64_t elements = 1;
    for (std::uint8_t d = 0; d < ndim; ++d) {
      if (!r.u64(&t.shape[d])) return Status::Format(where + " is truncated in its shape");
      if (t.shape[d] != 0 && elements > kMaxElements / t.shape[d]) {
        return Status::Format(where + ": shape has more than 2^44 elements");
      }
      elements *= t.shape[d];
    }
    t.num_elements = elements;
    const std::uint8_t* name = nullptr;
    if (!r.bytes(&name, name_bytes)) return Status::Format(where + " is truncated in its name");
    t.name.assign(reinterpret_cast<const char*>(name), name_bytes);
    Status name_ok = check_name(t.name, kMaxTensorNameBytes, "name");
    if (!name_ok.ok()) return Status::Format(where + ": " + name_ok.message());
    if (t.role.is_expert()) {
      const std::uint8_t* projection = nullptr;
      if (!r.bytes(&projection, projection_bytes)) return Status::Format(where + " is truncated in its projection");
      t.role.projection.assign(reinterpret_cast<const char*>(projection), projection_bytes);
      Status projection_ok = check_name(t.role.projection, kMaxProjectionBytes, "projection name");
      if (!projection_ok.ok()) return Status::Format(describe_tensor(t) + ": " + projection_ok.message());
    }
  }
  if (r.remaining() != 0) {
    return Status::Format("tensor index has " + str(r.remaining()) + " bytes after its last entry");
  }
  *tensors = std::move(out);
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Chunk table

void append_chunk_entry(const ChunkInfo& c, std::vector<std::uint8_t>* out) {
  out->push_back(static_cast<std::uint8_t>(c.kind));
  out->push_back(static_cast<std::uint8_t>(c.codec));
  append_le16(out, 0);
  append_le32(out, c.tensor);
  append_le64(out, c.offset);
  append_le64(out, c.stored_size);
  append_le64(out, c.decoded_size);
  append_le32(out, c.crc32c);
  append_le32(out, 0);
}

Status parse_chunk_table(const std::uint8_t* data, std::size_t size, std::uint64_t count, std::uint32_t alignment,
                         std::uint64_t data_end, std::vector<ChunkInfo>* chunks) {
  if (count != size / kChunkEntrySize || size % kChunkEntrySize != 0) {
    return Status::Format("chunk table size does not match its chunk count");
  }
  std::vector<ChunkInfo> out(static_cast<std::size_t>(count));
  // Chunks follow the header page in file order without overlapping.
  std::uint64_t earliest = round_up(kHeaderSize, alignment);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint8_t* e = data + i * kChunkEntrySize;
    ChunkInfo& c = out[i];
    c.index = static_cast<std::uint32_t>(i);
    const std::string where = "chunk " + str(i);
    const std::uint8_t kind = e[0];
    const std::uint8_t codec = e[1];
    if (kind != static_cast<std::uint8_t>(ChunkKind::kExponentPlane) &&
        kind != static_cast<std::uint8_t>(ChunkKind::kSignMantissaPlane)) {
      return Status::Format(where + ": unknown chunk kind " + str(kind));
    }
    c.kind = static_cast<ChunkKind>(kind);
    if (c.kind == ChunkKind::kExponentPlane) {
      if (codec != static_cast<std::uint8_t>(Codec::kRaw) && codec != static_cast<std::uint8_t>(Codec::kHuffman) &&
          codec != static_cast<std::uint8_t>(Codec::kRans) && codec != static_cast<std::uint8_t>(Codec::kConstant) &&
          codec != static_cast<std::uint8_t>(Codec::kLz4hc)) {
        return Status::Format(describe_chunk(c) + ": unknown codec id " + str(codec));
      }
    } else if (codec != static_cast<std::uint8_t>(Codec::kRaw)) {
      return Status::Format(describe_chunk(c) + ": codec id " + str(codec) +
                            " (a sign/mantissa plane is stored raw, id 0)");
    }
    c.codec = static_cast<Codec>(codec);
    c.tensor = load_le32(e + 4);
    c.offset = load_le64(e + 8);
    c.stored_size = load_le64(e + 16);
    c.decoded_size = load_le64(e + 24);
    c.crc32c = load_le32(e + 32);
    if (c.offset % alignment != 0) {
      return Status::Format(describe_chunk(c) + ": offset " + str(c.offset) + " is not a multiple of " +
                            str(alignment));
    }
    if (c.offset < earliest) {
      return Status::Format(describe_chunk(c) + ": offset " + str(c.offset) +
                            " overlaps the header or the previous chunk (chunks must be in file order)");
    }
    if (c.offset > data_end || c.stored_size > data_end - c.offset) {
      return Status::Format(describe_chunk(c) + " [" + str(c.offset) + ", +" + str(c.stored_size) +
                            ") runs past the chunk region, which ends at " + str(data_end));
    }
    earliest = round_up(c.offset + c.stored_size, alignment);
    if (c.kind == ChunkKind::kSignMantissaPlane && c.decoded_size != c.stored_size) {
      return Status::Format(describe_chunk(c) + ": decoded size " + str(c.decoded_size) +
                            " differs from its stored size " + str(c.stored_size));
    }
  }
  *chunks = std::move(out);
  return Status::Ok();
}

Status check_tensor_chunks(const std::vector<TensorInfo>& tensors, const std::vector<ChunkInfo>& chunks) {
  if (chunks.size() != 2 * tensors.size()) return Status::Format("chunk count is not twice the tensor count");
  for (const ChunkInfo& c : chunks) {
    if (c.tensor >= tensors.size()) {
      return Status::Format(describe_chunk(c) + ": owner tensor " + str(c.tensor) + " does not exist (" +
                            str(tensors.size()) + " tensors)");
    }
  }
  // Each tensor names two chunks that name it back; with 2T chunks this makes
  // the tensor -> chunk mapping a bijection (no shared or orphan chunks).
  for (const TensorInfo& t : tensors) {
    const struct {
      std::uint32_t chunk;
      ChunkKind kind;
    } refs[2] = {{t.exponent_chunk, ChunkKind::kExponentPlane}, {t.sm_chunk, ChunkKind::kSignMantissaPlane}};
    for (const auto& ref : refs) {
      if (ref.chunk >= chunks.size()) {
        return Status::Format(describe_tensor(t) + ": " + chunk_kind_name(ref.kind) + " chunk " + str(ref.chunk) +
                              " does not exist (" + str(chunks.size()) + " chunks)");
      }
      const ChunkInfo& c = chunks[ref.chunk];
      if (c.kind != ref.kind) {
        return Status::Format(describe_tensor(t) + ": " + describe_chunk(c) + " is not its " +
                              chunk_kind_name(ref.kind));
      }
      if (c.tensor != t.index) {
        return Status::Format(describe_tensor(t) + ": " + describe_chunk(c) + " belongs to tensor " + str(c.tensor));
      }
    }
    const ChunkInfo& exponent = chunks[t.exponent_chunk];
    const ChunkInfo& sm = chunks[t.sm_chunk];
    if (exponent.decoded_size != t.num_elements) {
      return Status::Format(describe_tensor(t) + ": " + describe_chunk(exponent) + " decodes to " +
                            str(exponent.decoded_size) + " symbols for " + str(t.num_elements) + " elements");
    }
    if (exponent.stored_size < codec::kCodedPlaneHeaderSize) {
      return Status::Format(describe_tensor(t) + ": " + describe_chunk(exponent) + " is " +
                            str(exponent.stored_size) + " bytes, shorter than a coded plane header");
    }
    const std::uint64_t sm_expected = t.num_elements * codec::sm_bytes_per_element(t.dtype);
    if (sm.stored_size != sm_expected) {
      return Status::Format(describe_tensor(t) + ": " + describe_chunk(sm) + " is " + str(sm.stored_size) +
                            " bytes, expected " + str(sm_expected) + " for " + str(t.num_elements) + " " +
                            dtype_name(t.dtype) + " elements");
    }
  }
  return Status::Ok();
}

}  // namespace zipmoe::format

// ContainerFile: opens, validates and reads .zmoe files (layout in format/layout.h).
#include "format/container_file.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/aligned_buffer.h"
#include "common/checksum.h"

namespace zipmoe::format {

namespace {

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// Experts are looked up by (layer, expert); the few projections of one expert
// ("gate", "up", "down") are told apart by comparing names.
std::uint64_t expert_key(std::uint32_t layer, std::uint32_t expert) { return (std::uint64_t(layer) << 32) | expert; }

}  // namespace

Status ContainerFile::open(const std::string& path, IoMode mode, std::unique_ptr<ContainerFile>* out) {
  if (mode != IoMode::kPread && mode != IoMode::kDirect && mode != IoMode::kMmap) {
    return Status::InvalidArgument("invalid io mode");
  }
  std::unique_ptr<ContainerFile> file(new ContainerFile());
  file->path_ = path;
  file->mode_ = mode;
  ZIPMOE_RETURN_IF_ERROR(file->open_and_validate());
  *out = std::move(file);
  return Status::Ok();
}

Status ContainerFile::read_section(const char* what, const Section& section, std::vector<std::uint8_t>* out) const {
  out->resize(static_cast<std::size_t>(section.size));
  ZIPMOE_RETURN_IF_ERROR(file_->read_at(section.offset, out->data(), out->size()));
  const std::uint32_t computed = crc32c(out->data(), out->size());
  if (computed != section.crc32c) {
    return Status::Checksum(path_ + ": " + what + " checksum mismatch (stored " + hex32(section.crc32c) +
                            ", computed " + hex32(computed) + "): the " + what + " is damaged");
  }
  return Status::Ok();
}

Status ContainerFile::open_and_validate() {
  ZIPMOE_RETURN_IF_ERROR(File::open(path_, mode_ == IoMode::kDirect, &file_));
  const std::uint64_t size = file_->size();
  if (size < kMagic.size()) {
    return fail("not a zipmoe container (" + std::to_string(size) + " bytes, too short for a header)");
  }
  std::vector<std::uint8_t> page(kHeaderSize, 0);
  ZIPMOE_RETURN_IF_ERROR(file_->read_at(0, page.data(), std::min<std::uint64_t>(size, page.size())));
  if (size < kHeaderSize) {
    // Report a foreign file as such rather than as a truncated container.
    if (std::memcmp(page.data(), kMagic.data(), kMagic.size()) != 0) return fail("not a zipmoe container (bad magic)");
    return fail("truncated: " + std::to_string(size) + " bytes, shorter than the 4096-byte header");
  }
  ZIPMOE_RETURN_IF_ERROR(parse_header(page.data(), size, &header_).with_context(path_));

  std::vector<std::uint8_t> bytes;
  ZIPMOE_RETURN_IF_ERROR(read_section("chunk table", header_.chunk_table, &bytes));
  ZIPMOE_RETURN_IF_ERROR(parse_chunk_table(bytes.data(), bytes.size(), header_.chunk_count, header_.alignment,
                                           header_.index.offset, &chunks_)
                             .with_context(path_));
  ZIPMOE_RETURN_IF_ERROR(read_section("tensor index", header_.index, &bytes));
  ZIPMOE_RETURN_IF_ERROR(parse_index(bytes.data(), bytes.size(), header_.tensor_count, &tensors_).with_context(path_));
  ZIPMOE_RETURN_IF_ERROR(check_tensor_chunks(tensors_, chunks_).with_context(path_));
  ZIPMOE_RETURN_IF_ERROR(read_section("metadata", header_.metadata, &bytes));
  if (!is_valid_utf8(bytes.data(), bytes.size())) return fail("metadata is not valid UTF-8");
  metadata_.assign(bytes.begin(), bytes.end());
  ZIPMOE_RETURN_IF_ERROR(index_tensors());
  return Status::Ok();
}

Status ContainerFile::index_tensors() {
  by_name_.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) {
    if (!by_name_.emplace(t.name, t.index).second) {
      return fail("tensor name '" + t.name + "' appears twice (entries " + std::to_string(by_name_[t.name]) +
                  " and " + std::to_string(t.index) + ")");
    }
    if (!t.role.is_expert()) continue;
    if (const TensorInfo* other = find_expert(t.role.layer, t.role.expert, t.role.projection)) {
      return fail("layer " + std::to_string(t.role.layer) + " expert " + std::to_string(t.role.expert) +
                  " projection '" + t.role.projection + "' appears twice (" + describe_tensor(*other) + " and " +
                  describe_tensor(t) + ")");
    }
    by_expert_.emplace(expert_key(t.role.layer, t.role.expert), t.index);
  }
  return Status::Ok();
}

const TensorInfo* ContainerFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo* ContainerFile::find_expert(std::uint32_t layer, std::uint32_t expert,
                                             std::string_view projection) const {
  auto range = by_expert_.equal_range(expert_key(layer, expert));
  for (auto it = range.first; it != range.second; ++it) {
    const TensorInfo& t = tensors_[it->second];
    if (t.role.layer == layer && t.role.expert == expert && t.role.projection == projection) return &t;
  }
  return nullptr;
}

std::string ContainerFile::where(const TensorInfo& t, const ChunkInfo& c) const {
  return path_ + ": " + describe_tensor(t) + ": " + describe_chunk(c);
}

Status ContainerFile::verify_crc(const ChunkInfo& c, const std::uint8_t* bytes) const {
  return check_crc(c, crc32c(bytes, static_cast<std::size_t>(c.stored_size)));
}

Status ContainerFile::check_crc(const ChunkInfo& c, std::uint32_t computed) const {
  if (computed != c.crc32c) {
    return Status::Checksum(where(tensors_[c.tensor], c) + ": checksum mismatch (stored " + hex32(c.crc32c) +
                            ", computed " + hex32(computed) + "): the chunk is damaged");
  }
  return Status::Ok();
}

std::size_t ContainerFile::chunk_buffer_size(std::uint32_t chunk) const {
  return static_cast<std::size_t>(round_up(chunks_[chunk].stored_size, kContainerAlignment));
}

Status ContainerFile::read_chunk(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const {
  if (chunk >= chunks_.size()) {
    return Status::InvalidArgument(path_ + ": chunk " + std::to_string(chunk) + " does not exist");
  }
  return read_chunk_bytes(chunks_[chunk], static_cast<std::uint8_t*>(buffer), buffer_size, true);
}

Status ContainerFile::read_chunk_unverified(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const {
  if (chunk >= chunks_.size()) {
    return Status::InvalidArgument(path_ + ": chunk " + std::to_string(chunk) + " does not exist");
  }
  return read_chunk_bytes(chunks_[chunk], static_cast<std::uint8_t*>(buffer), buffer_size, false);
}

Status ContainerFile::verify_chunk(std::uint32_t chunk, const void* bytes) const {
  return verify_crc(chunks_[chunk], static_cast<const std::uint8_t*>(bytes));
}

Status ContainerFile::read_chunk_bytes(const ChunkInfo& c, std::uint8_t* buffer, std::size_t buffer_size,
                                       bool verify) const {
  const std::size_t padded = static_cast<std::size_t>(round_up(c.stored_size, kContainerAlignment));
  if (buffer_size < padded) {
    return Status::InvalidArgument(where(tensors_[c.tensor], c) + ": buffer of " + std::to_string(buffer_size) +
                                   " bytes is smaller than chunk_buffer_size() = " + std::to_string(padded));
  }
  Status st;
  if (mode_ == IoMode::kMmap) {
    st = file_->copy_mapped(c.offset, buffer, static_cast<std::size_t>(c.stored_size));
  } else if (mode_ == IoMode::kDirect && reinterpret_cast<std::uintptr_t>(buffer) % kContainerAlignment == 0) {
    // The whole padded range lies in the file: it ends on a page boundary.
    st = file_->read_direct(c.offset, buffer, padded);
  } else {
    st = file_->read_at(c.offset, buffer, static_cast<std::size_t>(c.stored_size));
  }
  if (!st.ok()) {
    return Status(st.code(), describe_tensor(tensors_[c.tensor]) + ": " + describe_chunk(c) + ": " + st.message());
  }
  return verify ? verify_crc(c, buffer) : Status::Ok();
}

Status ContainerFile::check_tensor(const TensorInfo& tensor, const char* call) const {
  if (tensor.index >= tensors_.size() || &tensors_[tensor.index] != &tensor) {
    return Status::InvalidArgument(path_ + ": " + call + " needs a TensorInfo of this reader");
  }
  return Status::Ok();
}

Status ContainerFile::check_decoded_size(const TensorInfo& t, std::size_t out_size) const {
  if (out_size != t.decoded_bytes()) {
    return Status::InvalidArgument(path_ + ": " + describe_tensor(t) + ": output buffer has " +
                                   std::to_string(out_size) + " bytes, the tensor needs " +
                                   std::to_string(t.decoded_bytes()));
  }
  return Status::Ok();
}

Status ContainerFile::prepare_decode(const TensorInfo& t, const std::uint8_t* exponent, std::size_t exponent_size,
                                     std::size_t sm_size, std::size_t out_size, codec::CodedPlane* plane) const {
  ZIPMOE_RETURN_IF_ERROR(check_tensor(t, "decode_chunks"));
  ZIPMOE_RETURN_IF_ERROR(check_decoded_size(t, out_size));
  return parse_chunks(t, exponent, exponent_size, sm_size, plane);
}

Status ContainerFile::parse_chunks(const TensorInfo& t, const void* exponent_chunk, std::size_t exponent_size,
                                   std::size_t sm_size, codec::CodedPlane* plane) const {
  ZIPMOE_RETURN_IF_ERROR(check_tensor(t, "parse_chunks"));
  const auto* exponent = static_cast<const std::uint8_t*>(exponent_chunk);
  const ChunkInfo& ec = chunks_[t.exponent_chunk];
  const ChunkInfo& sc = chunks_[t.sm_chunk];
  if (exponent_size != ec.stored_size || sm_size != sc.stored_size) {
    return Status::InvalidArgument(path_ + ": " + describe_tensor(t) + ": chunk sizes " +
                                   std::to_string(exponent_size) + " and " + std::to_string(sm_size) +
                                   " differ from the stored " + std::to_string(ec.stored_size) + " and " +
                                   std::to_string(sc.stored_size));
  }
  if (exponent_size > 0 && exponent[0] != static_cast<std::uint8_t>(ec.codec)) {
    return Status::Format(where(t, ec) + ": coded plane says codec " + std::to_string(exponent[0]) +
                          ", the chunk table says " + codec_name(ec.codec));
  }
  ZIPMOE_RETURN_IF_ERROR(codec::CodedPlane::parse(exponent, exponent_size, plane).with_context(where(t, ec)));
  if (plane->num_symbols() != t.num_elements) {
    return Status::Format(where(t, ec) + ": holds " + std::to_string(plane->num_symbols()) + " symbols for " +
                          std::to_string(t.num_elements) + " elements");
  }
  return Status::Ok();
}

Status ContainerFile::decode_chunks(const TensorInfo& t, const void* exponent_chunk, std::size_t exponent_size,
                                    const void* sm_chunk, std::size_t sm_size, void* out, std::size_t out_size,
                                    ThreadPool* pool, Isa isa) const {
  codec::CodedPlane plane;
  ZIPMOE_RETURN_IF_ERROR(
      prepare_decode(t, static_cast<const std::uint8_t*>(exponent_chunk), exponent_size, sm_size, out_size, &plane));
  const codec::MergeTarget target = codec::make_merge_target(t.dtype, static_cast<const std::uint8_t*>(sm_chunk),
                                                             static_cast<std::size_t>(t.num_elements), out);
  return plane.decode(target, pool, isa).with_context(where(t, chunks_[t.exponent_chunk]));
}

Status ContainerFile::damaged_or(const TensorInfo& t, const void* exponent_chunk, const void* sm_chunk,
                                 Status failure) const {
  if (t.index < tensors_.size() && &tensors_[t.index] == &t) {
    ZIPMOE_RETURN_IF_ERROR(verify_crc(chunks_[t.exponent_chunk], static_cast<const std::uint8_t*>(exponent_chunk)));
    ZIPMOE_RETURN_IF_ERROR(verify_crc(chunks_[t.sm_chunk], static_cast<const std::uint8_t*>(sm_chunk)));
  }
  return failure;
}

Status ContainerFile::decode_chunks_verified(const TensorInfo& t, const void* exponent_chunk,
                                             std::size_t exponent_size, const void* sm_chunk, std::size_t sm_size,
                                             void* out, std::size_t out_size, ThreadPool* pool, Isa isa) const {
  const auto* exponent = static_cast<const std::uint8_t*>(exponent_chunk);
  const auto* sm = static_cast<const std::uint8_t*>(sm_chunk);
  codec::CodedPlane plane;
  // A damaged chunk may make the plane malformed: reported as the damage it is.
  Status status = prepare_decode(t, exponent, exponent_size, sm_size, out_size, &plane);
  if (!status.ok()) return status.code() == StatusCode::kInvalidArgument ? status : damaged_or(t, exponent, sm, status);
  const ChunkInfo& ec = chunks_[t.exponent_chunk];
  const ChunkInfo& sc = chunks_[t.sm_chunk];
  const codec::MergeTarget target =
      codec::make_merge_target(t.dtype, sm, static_cast<std::size_t>(t.num_elements), out);
  if (!target.merge) {
    // Raw bytes (U8) have no plane to merge with: checked in a pass of their own, then decoded.
    ZIPMOE_RETURN_IF_ERROR(verify_crc(ec, exponent));
    ZIPMOE_RETURN_IF_ERROR(verify_crc(sc, sm));
    return plane.decode(target, pool, isa).with_context(where(t, ec));
  }
  codec::CodedPlane::Checksums sums;
  status = plane.decode_checksummed(target, pool, isa, &sums);
  if (!status.ok()) return damaged_or(t, exponent, sm, status.with_context(where(t, ec)));
  ZIPMOE_RETURN_IF_ERROR(check_crc(ec, sums.coded_plane));
  return check_crc(sc, sums.sm_plane);
}

Status ContainerFile::decode_tensor(const TensorInfo& tensor, void* out, std::size_t out_size, ThreadPool* pool,
                                    Isa isa) const {
  ZIPMOE_RETURN_IF_ERROR(check_tensor(tensor, "decode_tensor"));
  if (out_size != tensor.decoded_bytes()) {
    return Status::InvalidArgument(path_ + ": " + describe_tensor(tensor) + ": output buffer has " +
                                   std::to_string(out_size) + " bytes, the tensor needs " +
                                   std::to_string(tensor.decoded_bytes()));
  }
  const ChunkInfo& ec = chunks_[tensor.exponent_chunk];
  const ChunkInfo& sc = chunks_[tensor.sm_chunk];
  // Every mode reads both planes into buffers first (in mmap mode through
  // File::copy_mapped, which turns a file truncated under the read into an error;
  // decoding on the pool straight from mapped pages would meet a SIGBUS instead).
  AlignedBuffer exponent_buffer, sm_buffer;
  ZIPMOE_RETURN_IF_ERROR(exponent_buffer.try_allocate(chunk_buffer_size(ec.index), kContainerAlignment));
  ZIPMOE_RETURN_IF_ERROR(sm_buffer.try_allocate(chunk_buffer_size(sc.index), kContainerAlignment));
  ZIPMOE_RETURN_IF_ERROR(read_chunk_bytes(ec, exponent_buffer.data(), exponent_buffer.size(), false));
  ZIPMOE_RETURN_IF_ERROR(read_chunk_bytes(sc, sm_buffer.data(), sm_buffer.size(), false));
  const std::uint8_t* exponent = exponent_buffer.data();
  const std::uint8_t* sm = sm_buffer.data();
  // The checksums are verified during the decode.
  return decode_chunks_verified(tensor, exponent, static_cast<std::size_t>(ec.stored_size), sm,
                                static_cast<std::size_t>(sc.stored_size), out, out_size, pool, isa);
}

}  // namespace zipmoe::format

// ContainerReader: opens, validates and reads .zmoe files (layout in format/layout.h).
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/checksum.h"
#include "common/cpu_features.h"
#include "common/file_io.h"
#include "format/layout.h"
#include "zipmoe/container.h"

namespace zipmoe {

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

const char* io_mode_name(IoMode mode) {
  switch (mode) {
    case IoMode::kPread: return "pread";
    case IoMode::kDirect: return "direct";
    case IoMode::kMmap: return "mmap";
  }
  return "unknown";
}

bool parse_io_mode(const std::string& name, IoMode* mode) {
  for (IoMode m : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    if (name == io_mode_name(m)) {
      *mode = m;
      return true;
    }
  }
  return false;
}

const char* chunk_kind_name(ChunkKind kind) {
  switch (kind) {
    case ChunkKind::kExponentPlane: return "exponent plane";
    case ChunkKind::kSignMantissaPlane: return "sign/mantissa plane";
  }
  return "unknown";
}

struct ContainerReader::Impl {
  std::string path;
  IoMode mode = IoMode::kPread;
  std::unique_ptr<File> file;
  const std::uint8_t* mapping = nullptr;  // kMmap only
  format::Header header;
  std::string metadata;
  std::vector<TensorInfo> tensors;
  std::vector<ChunkInfo> chunks;
  std::unordered_map<std::string_view, std::uint32_t> by_name;  // views into tensors[i].name
  std::unordered_multimap<std::uint64_t, std::uint32_t> by_expert;

  Status fail(const std::string& message) const { return Status::Format(path + ": " + message); }

  // Reads a trailing section whole and checks its checksum.
  Status read_section(const char* what, const format::Section& section, std::vector<std::uint8_t>* out) const {
    out->resize(static_cast<std::size_t>(section.size));
    ZIPMOE_RETURN_IF_ERROR(file->read_at(section.offset, out->data(), out->size()));
    const std::uint32_t computed = crc32c(out->data(), out->size());
    if (computed != section.crc32c) {
      return Status::Checksum(path + ": " + what + " checksum mismatch (stored " + hex32(section.crc32c) +
                              ", computed " + hex32(computed) + "): the " + what + " is damaged");
    }
    return Status::Ok();
  }

  Status open() {
    std::unique_ptr<File> f;
    ZIPMOE_RETURN_IF_ERROR(File::open(path, mode == IoMode::kDirect, &f));
    file = std::move(f);
    const std::uint64_t size = file->size();
    if (size < format::kMagic.size()) {
      return fail("not a zipmoe container (" + std::to_string(size) + " bytes, too short for a header)");
    }
    std::vector<std::uint8_t> page(format::kHeaderSize, 0);
    ZIPMOE_RETURN_IF_ERROR(file->read_at(0, page.data(), std::min<std::uint64_t>(size, page.size())));
    if (size < format::kHeaderSize) {
      // Report a foreign file as such rather than as a truncated container.
      if (std::memcmp(page.data(), format::kMagic.data(), format::kMagic.size()) != 0) {
        return fail("not a zipmoe container (bad magic)");
      }
      return fail("truncated: " + std::to_string(size) + " bytes, shorter than the 4096-byte header");
    }
    ZIPMOE_RETURN_IF_ERROR(format::parse_header(page.data(), size, &header).with_context(path));

    std::vector<std::uint8_t> bytes;
    ZIPMOE_RETURN_IF_ERROR(read_section("chunk table", header.chunk_table, &bytes));
    ZIPMOE_RETURN_IF_ERROR(format::parse_chunk_table(bytes.data(), bytes.size(), header.chunk_count,
                                                     header.alignment, header.index.offset, &chunks)
                               .with_context(path));
    ZIPMOE_RETURN_IF_ERROR(read_section("tensor index", header.index, &bytes));
    ZIPMOE_RETURN_IF_ERROR(
        format::parse_index(bytes.data(), bytes.size(), header.tensor_count, &tensors).with_context(path));
    ZIPMOE_RETURN_IF_ERROR(format::check_tensor_chunks(tensors, chunks).with_context(path));
    ZIPMOE_RETURN_IF_ERROR(read_section("metadata", header.metadata, &bytes));
    if (!format::is_valid_utf8(bytes.data(), bytes.size())) return fail("metadata is not valid UTF-8");
    metadata.assign(bytes.begin(), bytes.end());

    by_name.reserve(tensors.size());
    for (const TensorInfo& t : tensors) {
      if (!by_name.emplace(t.name, t.index).second) {
        return fail("tensor name '" + t.name + "' appears twice (entries " +
                    std::to_string(by_name[t.name]) + " and " + std::to_string(t.index) + ")");
      }
      if (!t.role.is_expert()) continue;
      if (const TensorInfo* other = lookup_expert(t.role.layer, t.role.expert, t.role.projection)) {
        return fail("layer " + std::to_string(t.role.layer) + " expert " + std::to_string(t.role.expert) +
                    " projection '" + t.role.projection + "' appears twice (" + format::describe_tensor(*other) +
                    " and " + format::describe_tensor(t) + ")");
      }
      by_expert.emplace(expert_key(t.role.layer, t.role.expert), t.index);
    }

    if (mode == IoMode::kMmap) ZIPMOE_RETURN_IF_ERROR(file->map(&mapping));
    return Status::Ok();
  }

  const TensorInfo* lookup_expert(std::uint32_t layer, std::uint32_t expert, std::string_view projection) const {
    auto range = by_expert.equal_range(expert_key(layer, expert));
    for (auto it = range.first; it != range.second; ++it) {
      const TensorInfo& t = tensors[it->second];
      if (t.role.layer == layer && t.role.expert == expert && t.role.projection == projection) return &t;
    }
    return nullptr;
  }

  std::string where(const TensorInfo& t, const ChunkInfo& c) const {
    return path + ": " + format::describe_tensor(t) + ": " + format::describe_chunk(c);
  }

  Status verify_crc(const ChunkInfo& c, const std::uint8_t* bytes) const {
    const std::uint32_t computed = crc32c(bytes, static_cast<std::size_t>(c.stored_size));
    if (computed != c.crc32c) {
      return Status::Checksum(where(tensors[c.tensor], c) + ": checksum mismatch (stored " + hex32(c.crc32c) +
                              ", computed " + hex32(computed) + "): the chunk is damaged");
    }
    return Status::Ok();
  }

  Status read_chunk(const ChunkInfo& c, std::uint8_t* buffer, std::size_t buffer_size) const {
    const std::size_t padded = static_cast<std::size_t>(round_up(c.stored_size, kContainerAlignment));
    if (buffer_size < padded) {
      return Status::InvalidArgument(where(tensors[c.tensor], c) + ": buffer of " + std::to_string(buffer_size) +
                                     " bytes is smaller than chunk_buffer_size() = " + std::to_string(padded));
    }
    Status st;
    if (mapping != nullptr) {
      if (c.stored_size) std::memcpy(buffer, mapping + c.offset, static_cast<std::size_t>(c.stored_size));
    } else if (mode == IoMode::kDirect && reinterpret_cast<std::uintptr_t>(buffer) % kContainerAlignment == 0) {
      // The whole padded range lies in the file: it ends on a page boundary.
      st = file->read_direct(c.offset, buffer, padded);
    } else {
      st = file->read_at(c.offset, buffer, static_cast<std::size_t>(c.stored_size));
    }
    if (!st.ok()) return Status(st.code(), format::describe_tensor(tensors[c.tensor]) + ": " +
                                               format::describe_chunk(c) + ": " + st.message());
    return verify_crc(c, buffer);
  }

  Status decode(const TensorInfo& t, const std::uint8_t* exponent, std::size_t exponent_size, const std::uint8_t* sm,
                std::size_t sm_size, void* out, std::size_t out_size, ThreadPool* pool, Isa isa) const {
    const ChunkInfo& ec = chunks[t.exponent_chunk];
    const ChunkInfo& sc = chunks[t.sm_chunk];
    if (exponent_size != ec.stored_size || sm_size != sc.stored_size) {
      return Status::InvalidArgument(path + ": " + format::describe_tensor(t) + ": chunk sizes " +
                                     std::to_string(exponent_size) + " and " + std::to_string(sm_size) +
                                     " differ from the stored " + std::to_string(ec.stored_size) + " and " +
                                     std::to_string(sc.stored_size));
    }
    if (out_size != t.decoded_bytes()) {
      return Status::InvalidArgument(path + ": " + format::describe_tensor(t) + ": output buffer has " +
                                     std::to_string(out_size) + " bytes, the tensor needs " +
                                     std::to_string(t.decoded_bytes()));
    }
    if (exponent_size > 0 && exponent[0] != static_cast<std::uint8_t>(ec.codec)) {
      return Status::Format(where(t, ec) + ": coded plane says codec " + std::to_string(exponent[0]) +
                            ", the chunk table says " + codec_name(ec.codec));
    }
    codec::CodedPlane plane;
    ZIPMOE_RETURN_IF_ERROR(codec::CodedPlane::parse(exponent, exponent_size, &plane).with_context(where(t, ec)));
    if (plane.num_symbols() != t.num_elements) {
      return Status::Format(where(t, ec) + ": holds " + std::to_string(plane.num_symbols()) + " symbols for " +
                            std::to_string(t.num_elements) + " elements");
    }
    const codec::MergeTarget target =
        codec::make_merge_target(t.dtype, sm, static_cast<std::size_t>(t.num_elements), out);
    return plane.decode(target, pool, isa).with_context(where(t, ec));
  }
};

ContainerReader::ContainerReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ContainerReader::~ContainerReader() = default;
ContainerReader::ContainerReader(ContainerReader&&) noexcept = default;
ContainerReader& ContainerReader::operator=(ContainerReader&&) noexcept = default;

ContainerReader ContainerReader::open(const std::string& path, IoMode mode) {
  if (mode != IoMode::kPread && mode != IoMode::kDirect && mode != IoMode::kMmap) {
    throw InvalidArgumentError("invalid io mode");
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->mode = mode;
  throw_if_error(impl->open());
  return ContainerReader(std::move(impl));
}

const std::string& ContainerReader::path() const { return impl_->path; }
IoMode ContainerReader::io_mode() const { return impl_->mode; }
bool ContainerReader::direct_io_active() const {
  return impl_->mode == IoMode::kDirect && impl_->file->direct_active();
}
std::uint16_t ContainerReader::version_major() const { return impl_->header.major; }
std::uint16_t ContainerReader::version_minor() const { return impl_->header.minor; }
std::uint64_t ContainerReader::file_size() const { return impl_->header.file_size; }
const std::string& ContainerReader::metadata() const { return impl_->metadata; }
const std::vector<TensorInfo>& ContainerReader::tensors() const { return impl_->tensors; }
const std::vector<ChunkInfo>& ContainerReader::chunks() const { return impl_->chunks; }

const TensorInfo* ContainerReader::find(std::string_view name) const {
  auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->tensors[it->second];
}

const TensorInfo* ContainerReader::find_expert(std::uint32_t layer, std::uint32_t expert,
                                               std::string_view projection) const {
  return impl_->lookup_expert(layer, expert, projection);
}

std::size_t ContainerReader::chunk_buffer_size(std::uint32_t chunk) const {
  if (chunk >= impl_->chunks.size()) {
    throw InvalidArgumentError(impl_->path + ": chunk " + std::to_string(chunk) + " does not exist");
  }
  return static_cast<std::size_t>(round_up(impl_->chunks[chunk].stored_size, kContainerAlignment));
}

void ContainerReader::read_chunk(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const {
  if (chunk >= impl_->chunks.size()) {
    throw InvalidArgumentError(impl_->path + ": chunk " + std::to_string(chunk) + " does not exist");
  }
  throw_if_error(impl_->read_chunk(impl_->chunks[chunk], static_cast<std::uint8_t*>(buffer), buffer_size));
}

namespace {
Isa resolve_isa(std::optional<Isa> isa) {
  const Isa path = isa ? *isa : default_isa();
  throw_if_error(check_isa(path));
  return path;
}
}  // namespace

void ContainerReader::decode_chunks(const TensorInfo& tensor, const void* exponent_chunk, std::size_t exponent_size,
                                    const void* sm_chunk, std::size_t sm_size, void* out, std::size_t out_size,
                                    ThreadPool* pool, std::optional<Isa> isa) const {
  const Isa path = resolve_isa(isa);
  if (tensor.index >= impl_->tensors.size() || &impl_->tensors[tensor.index] != &tensor) {
    throw InvalidArgumentError(impl_->path + ": decode_chunks needs a TensorInfo of this reader");
  }
  throw_if_error(impl_->decode(tensor, static_cast<const std::uint8_t*>(exponent_chunk), exponent_size,
                               static_cast<const std::uint8_t*>(sm_chunk), sm_size, out, out_size, pool, path));
}

void ContainerReader::decode_tensor(const TensorInfo& tensor, void* out, std::size_t out_size, ThreadPool* pool,
                                    std::optional<Isa> isa) const {
  const Isa path = resolve_isa(isa);
  const Impl& r = *impl_;
  if (tensor.index >= r.tensors.size() || &r.tensors[tensor.index] != &tensor) {
    throw InvalidArgumentError(r.path + ": decode_tensor needs a TensorInfo of this reader");
  }
  if (out_size != tensor.decoded_bytes()) {
    throw InvalidArgumentError(r.path + ": " + format::describe_tensor(tensor) + ": output buffer has " +
                               std::to_string(out_size) + " bytes, the tensor needs " +
                               std::to_string(tensor.decoded_bytes()));
  }
  const ChunkInfo& ec = r.chunks[tensor.exponent_chunk];
  const ChunkInfo& sc = r.chunks[tensor.sm_chunk];
  const std::uint8_t* exponent = nullptr;
  const std::uint8_t* sm = nullptr;
  AlignedBuffer exponent_buffer, sm_buffer;
  if (r.mapping != nullptr) {
    // Decoding straight from the page cache avoids a copy of both planes.
    exponent = r.mapping + ec.offset;
    sm = r.mapping + sc.offset;
    throw_if_error(r.verify_crc(ec, exponent));
    throw_if_error(r.verify_crc(sc, sm));
  } else {
    exponent_buffer.allocate(chunk_buffer_size(ec.index), kContainerAlignment);
    sm_buffer.allocate(chunk_buffer_size(sc.index), kContainerAlignment);
    throw_if_error(r.read_chunk(ec, exponent_buffer.data(), exponent_buffer.size()));
    throw_if_error(r.read_chunk(sc, sm_buffer.data(), sm_buffer.size()));
    exponent = exponent_buffer.data();
    sm = sm_buffer.data();
  }
  throw_if_error(r.decode(tensor, exponent, static_cast<std::size_t>(ec.stored_size), sm,
                          static_cast<std::size_t>(sc.stored_size), out, out_size, pool, path));
}

void ContainerReader::decode_tensor(std::string_view name, void* out, std::size_t out_size, ThreadPool* pool,
                                    std::optional<Isa> isa) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw InvalidArgumentError(impl_->path + ": no tensor named '" + std::string(name) + "'");
  decode_tensor(*t, out, out_size, pool, isa);
}

}  // namespace zipmoe

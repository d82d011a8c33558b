#include "sched/chunk_source.h"

#include <cstdio>

#include "common/checksum.h"
#include "format/layout.h"

namespace zipmoe::sched {

namespace {

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

Status ChunkSource::open(const format::ContainerFile* reader, IoMode mode, std::unique_ptr<ChunkSource>* out) {
  std::unique_ptr<ChunkSource> source(new ChunkSource());
  source->reader_ = reader;
  source->mode_ = mode;
  if (mode == IoMode::kMmap) {
    ZIPMOE_RETURN_IF_ERROR(File::open(reader->path(), false, &source->file_));
    if (source->file_->size() < reader->file_size()) {
      return Status::Format(reader->path() + ": file truncated: " + std::to_string(source->file_->size()) +
                            " bytes, the container has " + std::to_string(reader->file_size()));
    }
  }
  *out = std::move(source);
  return Status::Ok();
}

Status ChunkSource::read(std::uint32_t chunk, std::uint8_t* buffer, std::size_t buffer_size, bool verify) const {
  if (mode_ != IoMode::kMmap) {
    return verify ? reader_->read_chunk(chunk, buffer, buffer_size)
                  : reader_->read_chunk_unverified(chunk, buffer, buffer_size);
  }
  const std::vector<ChunkInfo>& chunks = reader_->chunks();
  if (chunk >= chunks.size()) return Status::InvalidArgument(reader_->path() + ": chunk " + std::to_string(chunk) + " does not exist");
  const ChunkInfo& c = chunks[chunk];
  const TensorInfo& t = reader_->tensors()[c.tensor];
  const std::string where = format::describe_tensor(t) + ": " + format::describe_chunk(c);
  if (buffer_size < c.stored_size) return Status::InvalidArgument(reader_->path() + ": " + where + ": buffer too small");
  const Status copied = file_->copy_mapped(c.offset, buffer, static_cast<std::size_t>(c.stored_size));
  if (!copied.ok()) return Status(copied.code(), where + ": " + copied.message());
  if (!verify) return Status::Ok();
  const std::uint32_t computed = crc32c(buffer, static_cast<std::size_t>(c.stored_size));
  if (computed != c.crc32c) {
    return Status::Checksum(reader_->path() + ": " + where + ": checksum mismatch (stored " + hex32(c.crc32c) +
                            ", computed " + hex32(computed) + "): the chunk is damaged");
  }
  return Status::Ok();
}

}  // namespace zipmoe::sched

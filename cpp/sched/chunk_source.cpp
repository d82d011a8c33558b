#include "sched/chunk_source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

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
    const std::string& path = reader->path();
    int fd;
    do {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return Status::Io(path + ": cannot open: " + std::strerror(errno));
    source->fd_ = fd;
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::Io(path + ": cannot stat: " + std::strerror(errno));
    if (static_cast<std::uint64_t>(st.st_size) < reader->file_size()) {
      return Status::Format(path + ": file truncated: " + std::to_string(st.st_size) + " bytes, the container has " +
                            std::to_string(reader->file_size()));
    }
    source->map_size_ = static_cast<std::size_t>(reader->file_size());
    if (source->map_size_ > 0) {
      void* p = ::mmap(nullptr, source->map_size_, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) return Status::Io(path + ": cannot map: " + std::strerror(errno));
      source->map_ = static_cast<const std::uint8_t*>(p);
      ::madvise(const_cast<std::uint8_t*>(source->map_), source->map_size_, MADV_RANDOM);
    }
  }
  *out = std::move(source);
  return Status::Ok();
}

ChunkSource::~ChunkSource() {
  if (map_) ::munmap(const_cast<std::uint8_t*>(map_), map_size_);
  if (fd_ >= 0) ::close(fd_);
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
  const std::string where = reader_->path() + ": " + format::describe_tensor(t) + ": " + format::describe_chunk(c);
  if (buffer_size < c.stored_size) return Status::InvalidArgument(where + ": buffer too small");
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::Io(where + ": cannot stat the file: " + std::strerror(errno));
  const std::uint64_t end = c.offset + c.stored_size;
  if (static_cast<std::uint64_t>(st.st_size) < end) {
    return Status::Format(where + ": file truncated: it ends at byte " + std::to_string(st.st_size) +
                          ", the chunk at " + std::to_string(end));
  }
  if (c.stored_size) std::memcpy(buffer, map_ + c.offset, static_cast<std::size_t>(c.stored_size));
  // Drop the file pages from this process (they stay in the page cache).
  const std::uint64_t first = c.offset / 4096 * 4096;
  const std::uint64_t last = std::min<std::uint64_t>((end + 4095) / 4096 * 4096, map_size_);
  if (last > first) ::madvise(const_cast<std::uint8_t*>(map_) + first, static_cast<std::size_t>(last - first), MADV_DONTNEED);
  if (!verify) return Status::Ok();
  const std::uint32_t computed = crc32c(buffer, static_cast<std::size_t>(c.stored_size));
  if (computed != c.crc32c) {
    return Status::Checksum(where + ": checksum mismatch (stored " + hex32(c.crc32c) + ", computed " + hex32(computed) +
                            "): the chunk is damaged");
  }
  return Status::Ok();
}

}  // namespace zipmoe::sched

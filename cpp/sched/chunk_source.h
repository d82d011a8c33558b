// ChunkSource: reads container chunks for the fetch scheduler, verifying each
// chunk's CRC-32C (or leaving that to the decode), and never throws: every failure is a Status naming the file,
// tensor and chunk (ChecksumError for damaged bytes, FormatError for a file that
// got shorter, IoError when the OS refuses).
//
//   pread, direct  through ContainerFile::read_chunk (O_DIRECT reads need the
//                  4096-aligned, padded buffers the scheduler hands out)
//   mmap           copied out of mappings of the chunk's pages, at most
//                  kMappedCopyWindow (256 KiB) at a time per reader thread, each
//                  unmapped right after its copy (File::copy_mapped), so that
//                  mapped file pages never build up in the resident size the
//                  memory budget promises; the file's size is checked before
//                  each mapping so that a file truncated under a running model
//                  is an error rather than SIGBUS (a truncation racing with the
//                  copy itself still faults: prefer pread or direct for files
//                  that may change).
//
// Thread-safety: read() may be called from any number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/file_io.h"
#include "common/status.h"
#include "format/container_file.h"
#include "zipmoe/container.h"

namespace zipmoe::sched {

class ChunkSource {
 public:
  // `reader` must outlive the source; `mode` is how chunks are read (the
  // reader's own mode does not matter for kMmap).
  static Status open(const format::ContainerFile* reader, IoMode mode, std::unique_ptr<ChunkSource>* out);
  ChunkSource(const ChunkSource&) = delete;
  ChunkSource& operator=(const ChunkSource&) = delete;

  // Reads chunk `chunk` into buffer[0, stored_size) (buffer_size >= the
  // reader's chunk_buffer_size(chunk); 4096-aligned buffers read with O_DIRECT
  // in direct mode) and verifies its checksum, unless `verify` is false: then
  // the caller verifies it while it decodes (ContainerFile::decode_chunks_verified)
  // and uses nothing decoded from it before that succeeds.
  Status read(std::uint32_t chunk, std::uint8_t* buffer, std::size_t buffer_size, bool verify = true) const;

  IoMode mode() const { return mode_; }
  const format::ContainerFile& reader() const { return *reader_; }

 private:
  ChunkSource() = default;
  const format::ContainerFile* reader_ = nullptr;
  IoMode mode_ = IoMode::kPread;
  std::unique_ptr<File> file_;  // kMmap: the file, opened again (the reader's may be opened for O_DIRECT)
};

}  // namespace zipmoe::sched

// File I/O for containers: full positional reads, O_DIRECT reads into aligned
// buffers, read-only mappings of parts of a file, and output files that appear
// atomically.
//
// Every failure is a Status naming the path: kIo with strerror() when the
// operating system refuses, kFormat when a file ends before the bytes a read
// asked for (a truncated file), kInvalidArgument for misaligned direct reads.
// Reads are const and thread-safe (pread never moves a shared file position).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/aligned_buffer.h"
#include "common/status.h"

namespace zipmoe {

inline std::uint64_t round_up(std::uint64_t value, std::uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

class MappedRange;

// A file opened for reading. Not copyable or movable (readers share it by pointer).
class File {
 public:
  // Opens `path` read-only. With `direct`, also opens an O_DIRECT descriptor for
  // read_direct(); a filesystem that refuses O_DIRECT (EINVAL) is not an error:
  // read_direct() then reads through the page cache (direct_active() is false).
  static Status open(const std::string& path, bool direct, std::unique_ptr<File>* out);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  // Size in bytes when the file was opened.
  std::uint64_t size() const { return size_; }

  // Reads exactly `size` bytes at `offset` (retrying interrupted and partial
  // reads). A file that ends first is a kFormat "truncated" error.
  Status read_at(std::uint64_t offset, void* buffer, std::size_t size) const;

  // Like read_at, bypassing the page cache. offset, size and buffer must be
  // multiples of kDirectIoAlignment (kInvalidArgument otherwise). Falls back to
  // read_at, for good, when the filesystem refuses direct reads.
  Status read_direct(std::uint64_t offset, void* buffer, std::size_t size) const;
  // True while direct reads really bypass the page cache.
  bool direct_active() const { return direct_fd_ >= 0 && !direct_refused_.load(std::memory_order_relaxed); }

  // Maps bytes [offset, offset + size) read-only into *out (see MappedRange).
  // The file's size is checked first: a range beyond its end (a file truncated
  // since it was opened) is a kFormat "truncated" error instead of a SIGBUS. A
  // truncation racing with the use of the mapping still raises SIGBUS.
  Status map_range(std::uint64_t offset, std::size_t size, MappedRange* out) const;

  // Like read_at, through mappings of at most kMappedCopyWindow bytes, each
  // unmapped before the next is made: at most that much of the file is mapped
  // by one call at any time. A file truncated during the copy is a kFormat
  // "truncated" error, not a SIGBUS: the copy runs under a SIGBUS handler that
  // the first call installs for the process (chained to the previous one, which
  // still gets every SIGBUS raised outside such a copy).
  Status copy_mapped(std::uint64_t offset, void* buffer, std::size_t size) const;

 private:
  File() = default;
  std::string path_;
  int fd_ = -1;
  int direct_fd_ = -1;
  mutable std::atomic<bool> direct_refused_{false};
  std::uint64_t size_ = 0;
};

// memcpy from pages of a file mapping; false (nothing else happens) if a page
// vanished during the copy because the file was truncated (SIGBUS). Installs a
// process-wide SIGBUS handler on first use, chained to the one it replaces.
bool copy_from_mapping(void* dst, const void* src, std::size_t size);

// File::copy_mapped maps this many bytes at a time (plus the partial pages at
// either end): with the default two reader threads of the fetch pipeline, 0.5 MiB
// of file pages at most are mapped at once.
constexpr std::size_t kMappedCopyWindow = std::size_t(256) << 10;

// A read-only, shared mapping of part of a file, unmapped when destroyed.
// Only the pages that hold the range are mapped, and the kernel never maps a
// page outside a mapping (its fault-around, which maps the cached pages near a
// faulting one, stops at the mapping's ends), so once the MappedRange is gone
// none of the file's pages count in this process's resident size. (Dropping
// pages from one mapping of the whole file with madvise cannot promise that:
// fault-around maps neighbouring pages that no madvise covered.)
// Move-only; the File it came from must outlive it.
class MappedRange {
 public:
  MappedRange() = default;
  ~MappedRange() { release(); }
  MappedRange(MappedRange&& other) noexcept;
  MappedRange& operator=(MappedRange&& other) noexcept;
  MappedRange(const MappedRange&) = delete;
  MappedRange& operator=(const MappedRange&) = delete;

  // The first byte of the range (nullptr for an empty one).
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  void release();

 private:
  friend class File;
  void* base_ = nullptr;  // page-aligned start of the mapping
  std::size_t mapped_ = 0;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// An output file that appears at its path only when complete. Bytes go to an
// unnamed file in path's directory (O_TMPFILE) where the filesystem allows it,
// else to "<path>.zipmoe-tmp-<pid>-<random>" (same directory, so the final
// rename stays within one filesystem); commit() makes them durable, names the
// file and renames it over `path`; without commit() the file is removed
// (discard() or destruction). The writer holds a flock on the file while it
// lives, so that a temporary left by a killed process (its pid gone, its lock
// free) can be told from one being written (docs/FORMAT.md, "Writing").
class AtomicOutputFile {
 public:
  enum class Naming { kUnnamedWhereSupported, kNamed };
  static Status create(const std::string& path, std::unique_ptr<AtomicOutputFile>* out,
                       Naming naming = Naming::kUnnamedWhereSupported);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  const std::string& path() const { return path_; }
  // The temporary file's name; empty while it has none (O_TMPFILE).
  const std::string& temp_path() const { return temp_path_; }
  // Bytes appended so far (the offset of the next append()).
  std::uint64_t position() const { return position_; }

  Status append(const void* data, std::size_t size);
  Status append_zeros(std::uint64_t count);
  // Appends zeros up to the next multiple of `alignment`.
  Status pad_to(std::uint64_t alignment);
  // Overwrites bytes already written (e.g. a header written last).
  Status write_at(std::uint64_t offset, const void* data, std::size_t size);

  // fsync, close, rename over path(), fsync of the directory. After a failure
  // the temporary file is removed and the target is left as it was.
  Status commit();
  // Closes and removes the temporary file (no-op after commit()).
  void discard();
  bool open() const { return fd_ >= 0; }

 private:
  AtomicOutputFile() = default;
  bool open_unnamed();
  Status open_named();
  Status link_unnamed();
  std::string written_name() const;  // for messages
  Status io_error(const char* what, int error) const;
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  std::uint64_t position_ = 0;
};

// "<path>: <what>: <strerror(error)>".
Status io_status(const std::string& path, const std::string& what, int error);

}  // namespace zipmoe

#include "common/file_io.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <utility>

namespace zipmoe {

namespace {

// Linux transfers at most this much per read/write call; asking for less keeps
// every call's result meaningful on all kernels.
constexpr std::size_t kMaxTransfer = std::size_t(1) << 30;

bool is_aligned(std::uint64_t value) { return value % kDirectIoAlignment == 0; }

// What a path that is not a regular file is, for error messages.
const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

std::string directory_of(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string random_suffix() {
  // Unique enough to avoid collisions between concurrent writers; O_EXCL
  // catches the rest.
  static thread_local std::mt19937_64 rng(std::random_device{}() ^
                                          (std::uint64_t(::getpid()) << 32) ^
                                          reinterpret_cast<std::uintptr_t>(&rng));
  static const char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string s(10, '0');
  for (char& c : s) c = kDigits[rng() % 36];
  return s;
}

// The name of a temporary output beside `path`: a later run recognizes it by the
// marker and tells a dead writer's from a live one's by the pid and the flock.
std::string temporary_name(const std::string& path) {
  return path + ".zipmoe-tmp-" + std::to_string(::getpid()) + "-" + random_suffix();
}

std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Status pread_full(int fd, const std::string& path, std::uint64_t offset, void* buffer, std::size_t size) {
  std::uint8_t* p = static_cast<std::uint8_t*>(buffer);
  std::size_t done = 0;
  while (done < size) {
    const std::size_t want = std::min(size - done, kMaxTransfer);
    const ssize_t got = ::pread(fd, p + done, want, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return io_status(path, "read of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                                 " failed",
                       errno);
    }
    if (got == 0) {
      return Status::Format(path + ": file truncated: needed " + std::to_string(size) + " bytes at offset " +
                            std::to_string(offset) + " but it ends after " + std::to_string(offset + done));
    }
    done += static_cast<std::size_t>(got);
  }
  return Status::Ok();
}

Status write_full(int fd, const std::string& path, const void* data, std::size_t size, std::int64_t offset) {
  const std::uint8_t* p = static_cast<const std::uint8_t*>(data);
  std::size_t done = 0;
  while (done < size) {
    const std::size_t want = std::min(size - done, kMaxTransfer);
    const ssize_t put = offset < 0 ? ::write(fd, p + done, want)
                                   : ::pwrite(fd, p + done, want, static_cast<off_t>(offset + done));
    if (put < 0) {
      if (errno == EINTR) continue;
      return io_status(path, "write failed", errno);
    }
    if (put == 0) return io_status(path, "write made no progress", EIO);
    done += static_cast<std::size_t>(put);
  }
  return Status::Ok();
}


// ---------------------------------------------------------------------------
// Copies out of a mapping that survive the file shrinking under them.
//
// A page of a mapped file that was truncated after the mapping was made raises
// SIGBUS when touched. The size check of map_range cannot close that race, so
// copy_mapped copies under a SIGBUS handler (installed on first use, chained to
// the one it replaces) that jumps back to the copy of the faulting thread, which
// then reports the file as truncated. A SIGBUS outside such a copy goes to the
// previous handler, or ends the process as it would have.

// volatile: the compiler must not drop the store before the copy as dead (it
// knows memcpy does not read it; the signal handler does).
thread_local sigjmp_buf* volatile t_copy_jump = nullptr;
struct sigaction g_previous_sigbus;
std::once_flag g_sigbus_once;

void on_sigbus(int signal_number, siginfo_t* info, void* context) {
  if (t_copy_jump != nullptr) siglongjmp(*t_copy_jump, 1);
  const struct sigaction& previous = g_previous_sigbus;
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(signal_number);
    return;
  }
  ::signal(SIGBUS, SIG_DFL);
  ::raise(SIGBUS);
}

void install_sigbus_handler() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = on_sigbus;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &g_previous_sigbus);
}


}  // namespace

bool copy_from_mapping(void* dst, const void* src, std::size_t size) {
  std::call_once(g_sigbus_once, install_sigbus_handler);
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    t_copy_jump = nullptr;
    return false;
  }
  t_copy_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(dst, src, size);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_copy_jump = nullptr;
  return true;
}

Status io_status(const std::string& path, const std::string& what, int error) {
  return Status::Io(path + ": " + what + ": " + std::strerror(error));
}

// ---------------------------------------------------------------------------
// File

Status File::open(const std::string& path, bool direct, std::unique_ptr<File>* out) {
  std::unique_ptr<File> file(new File());
  file->path_ = path;
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
  // forever; the type is checked before anything is read.
  do {
    file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  } while (file->fd_ < 0 && errno == EINTR);
  if (file->fd_ < 0) return io_status(path, "cannot open", errno);
  struct stat st;
  if (::fstat(file->fd_, &st) != 0) return io_status(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) return Status::Io(path + ": not a regular file (" + file_kind(st.st_mode) + ")");
  const int flags = ::fcntl(file->fd_, F_GETFL);
  if (flags < 0 || ::fcntl(file->fd_, F_SETFL, flags & ~O_NONBLOCK) != 0) return io_status(path, "cannot make reads blocking", errno);
  file->size_ = static_cast<std::uint64_t>(st.st_size);
#ifdef O_DIRECT
  if (direct) {
    do {
      file->direct_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    } while (file->direct_fd_ < 0 && errno == EINTR);
    // EINVAL: the filesystem does not do direct I/O; reads go through the page cache.
    if (file->direct_fd_ < 0 && errno != EINVAL) return io_status(path, "cannot open for direct I/O", errno);
  }
#endif
  *out = std::move(file);
  return Status::Ok();
}

File::~File() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

Status File::read_at(std::uint64_t offset, void* buffer, std::size_t size) const {
  if (size == 0) return Status::Ok();
  return pread_full(fd_, path_, offset, buffer, size);
}

Status File::read_direct(std::uint64_t offset, void* buffer, std::size_t size) const {
  if (!is_aligned(offset) || !is_aligned(size) || !is_aligned(reinterpret_cast<std::uintptr_t>(buffer))) {
    return Status::InvalidArgument(path_ + ": direct read needs offset, size and buffer aligned to " +
                                   std::to_string(kDirectIoAlignment) + " bytes (offset " + std::to_string(offset) +
                                   ", size " + std::to_string(size) + ")");
  }
  if (!direct_active()) return read_at(offset, buffer, size);
  std::uint8_t* p = static_cast<std::uint8_t*>(buffer);
  std::size_t done = 0;
  while (done < size) {
    const std::size_t want = std::min(size - done, kMaxTransfer);
    const ssize_t got = ::pread(direct_fd_, p + done, want, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL) {
        // Some filesystems accept O_DIRECT at open but refuse the reads.
        direct_refused_.store(true, std::memory_order_relaxed);
        return read_at(offset + done, p + done, size - done);
      }
      return io_status(path_, "direct read of " + std::to_string(size) + " bytes at offset " +
                                  std::to_string(offset) + " failed",
                       errno);
    }
    if (got == 0) {
      return Status::Format(path_ + ": file truncated: needed " + std::to_string(size) + " bytes at offset " +
                            std::to_string(offset) + " but it ends after " + std::to_string(offset + done));
    }
    done += static_cast<std::size_t>(got);
    // A partial direct read may end off the block grid; finish it buffered.
    if (done < size && !is_aligned(done)) return read_at(offset + done, p + done, size - done);
  }
  return Status::Ok();
}

Status File::map_range(std::uint64_t offset, std::size_t size, MappedRange* out) const {
  out->release();
  if (size == 0) return Status::Ok();
  struct stat st;
  if (::fstat(fd_, &st) != 0) return io_status(path_, "cannot stat", errno);
  if (static_cast<std::uint64_t>(st.st_size) < offset + size) {
    return Status::Format(path_ + ": file truncated: it ends at byte " + std::to_string(st.st_size) +
                          ", the read needs bytes up to " + std::to_string(offset + size));
  }
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t first = offset / page * page;
  const std::size_t length = static_cast<std::size_t>(offset + size - first);
  int flags = MAP_SHARED;
#ifdef MAP_POPULATE
  flags |= MAP_POPULATE;  // every page mapped in one call rather than one fault per few pages
#endif
  void* p = ::mmap(nullptr, length, PROT_READ, flags, fd_, static_cast<off_t>(first));
  if (p == MAP_FAILED) return io_status(path_, "cannot map " + std::to_string(size) + " bytes at offset " +
                                                   std::to_string(offset), errno);
  out->base_ = p;
  out->mapped_ = length;
  out->data_ = static_cast<const std::uint8_t*>(p) + (offset - first);
  out->size_ = size;
  return Status::Ok();
}

Status File::copy_mapped(std::uint64_t offset, void* buffer, std::size_t size) const {
  std::uint8_t* dst = static_cast<std::uint8_t*>(buffer);
  MappedRange window;
  for (std::size_t done = 0; done < size; done += window.size()) {
    ZIPMOE_RETURN_IF_ERROR(map_range(offset + done, std::min(size - done, kMappedCopyWindow), &window));
    if (!copy_from_mapping(dst + done, window.data(), window.size())) {
      return Status::Format(path_ + ": file truncated while being read: the bytes at offset " +
                            std::to_string(offset + done) + " vanished from the mapping");
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// MappedRange

MappedRange::MappedRange(MappedRange&& other) noexcept
    : base_(other.base_), mapped_(other.mapped_), data_(other.data_), size_(other.size_) {
  other.base_ = nullptr;
  other.mapped_ = 0;
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedRange& MappedRange::operator=(MappedRange&& other) noexcept {
  if (this != &other) {
    release();
    std::swap(base_, other.base_);
    std::swap(mapped_, other.mapped_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  return *this;
}

void MappedRange::release() {
  if (base_ != nullptr) ::munmap(base_, mapped_);
  base_ = nullptr;
  mapped_ = 0;
  data_ = nullptr;
  size_ = 0;
}

// ---------------------------------------------------------------------------
// AtomicOutputFile

Status AtomicOutputFile::create(const std::string& path, std::unique_ptr<AtomicOutputFile>* out, Naming naming) {
  if (path.empty()) return Status::InvalidArgument("output path is empty");
  std::unique_ptr<AtomicOutputFile> file(new AtomicOutputFile());
  file->path_ = path;
  if (naming == Naming::kNamed || !file->open_unnamed()) ZIPMOE_RETURN_IF_ERROR(file->open_named());
  // Only a later run's sweep of stale temporaries looks at the lock; a filesystem without flock loses nothing else.
  ::flock(file->fd_, LOCK_EX | LOCK_NB);
  *out = std::move(file);
  return Status::Ok();
}

bool AtomicOutputFile::open_unnamed() {
#ifdef O_TMPFILE
  const int fd = ::open(directory_of(path_).c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
  if (fd < 0) return false;  // no O_TMPFILE here (or no permission: open_named() reports that)
  // commit() names the file through /proc.
  if (::access(proc_fd_path(fd).c_str(), F_OK) != 0) {
    ::close(fd);
    return false;
  }
  fd_ = fd;
  return true;
#else
  return false;
#endif
}

Status AtomicOutputFile::open_named() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_path_ = temporary_name(path_);
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return Status::Ok();
    if (errno != EEXIST && errno != EINTR) {
      const int error = errno;
      temp_path_.clear();
      return io_status(path_, "cannot create it in " + directory_of(path_), error);
    }
  }
  temp_path_.clear();
  return io_status(path_, "cannot create a unique temporary file beside it", EEXIST);
}

// linkat cannot replace a file: the unnamed file is linked under a temporary name
// that commit() then renames over the target.
Status AtomicOutputFile::link_unnamed() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string name = temporary_name(path_);
    if (::linkat(AT_FDCWD, proc_fd_path(fd_).c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      temp_path_ = name;
      return Status::Ok();
    }
    if (errno != EEXIST && errno != EINTR) return io_status(path_, "cannot name the written file", errno);
  }
  return io_status(path_, "cannot name the written file", EEXIST);
}

AtomicOutputFile::~AtomicOutputFile() { discard(); }

std::string AtomicOutputFile::written_name() const {
  return temp_path_.empty() ? path_ + " (being written)" : temp_path_;
}

Status AtomicOutputFile::io_error(const char* what, int error) const { return io_status(written_name(), what, error); }

Status AtomicOutputFile::append(const void* data, std::size_t size) {
  if (fd_ < 0) return Status::InvalidArgument(path_ + ": output file is already closed");
  ZIPMOE_RETURN_IF_ERROR(write_full(fd_, written_name(), data, size, -1));
  position_ += size;
  return Status::Ok();
}

Status AtomicOutputFile::append_zeros(std::uint64_t count) {
  static const std::uint8_t kZeros[kDirectIoAlignment] = {};
  while (count > 0) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(count, sizeof(kZeros)));
    ZIPMOE_RETURN_IF_ERROR(append(kZeros, n));
    count -= n;
  }
  return Status::Ok();
}

Status AtomicOutputFile::pad_to(std::uint64_t alignment) {
  return append_zeros(round_up(position_, alignment) - position_);
}

Status AtomicOutputFile::write_at(std::uint64_t offset, const void* data, std::size_t size) {
  if (fd_ < 0) return Status::InvalidArgument(path_ + ": output file is already closed");
  if (offset + size > position_) {
    return Status::InvalidArgument(path_ + ": write_at past the bytes written so far");
  }
  return write_full(fd_, written_name(), data, size, static_cast<std::int64_t>(offset));
}

Status AtomicOutputFile::commit() {
  if (fd_ < 0) return Status::InvalidArgument(path_ + ": output file is already closed");
  Status status;
  if (::fsync(fd_) != 0) status = io_error("fsync failed", errno);
  if (status.ok() && temp_path_.empty()) status = link_unnamed();
  if (status.ok()) {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) status = io_error("close failed", errno);
  }
  if (status.ok() && ::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    status = io_status(path_, "cannot rename " + temp_path_ + " into place", errno);
  }
  if (!status.ok()) {
    discard();
    return status;
  }
  temp_path_.clear();
  // The rename is durable only once the directory entry is.
  const std::string dir = directory_of(path_);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    const int rc = ::fsync(dir_fd);
    const int error = errno;
    ::close(dir_fd);
    // Some filesystems cannot fsync a directory (EINVAL); the data itself is safe.
    if (rc != 0 && error != EINVAL && error != EROFS) return io_status(dir, "fsync of directory failed", error);
  }
  return Status::Ok();
}

void AtomicOutputFile::discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

}  // namespace zipmoe

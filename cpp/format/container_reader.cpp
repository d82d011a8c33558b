// ContainerReader: the public face of format::ContainerFile (container_file.h),
// which does the work and reports a Status that is thrown here.
#include "common/cpu_features.h"
#include "format/container_file.h"
#include "zipmoe/container.h"

namespace zipmoe {

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
  std::unique_ptr<format::ContainerFile> file;
};

ContainerReader::ContainerReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ContainerReader::~ContainerReader() = default;
ContainerReader::ContainerReader(ContainerReader&&) noexcept = default;
ContainerReader& ContainerReader::operator=(ContainerReader&&) noexcept = default;

ContainerReader ContainerReader::open(const std::string& path, IoMode mode) {
  auto impl = std::make_unique<Impl>();
  throw_if_error(format::ContainerFile::open(path, mode, &impl->file));
  return ContainerReader(std::move(impl));
}

const std::string& ContainerReader::path() const { return impl_->file->path(); }
IoMode ContainerReader::io_mode() const { return impl_->file->io_mode(); }
bool ContainerReader::direct_io_active() const { return impl_->file->direct_io_active(); }
std::uint16_t ContainerReader::version_major() const { return impl_->file->version_major(); }
std::uint16_t ContainerReader::version_minor() const { return impl_->file->version_minor(); }
std::uint64_t ContainerReader::file_size() const { return impl_->file->file_size(); }
const std::string& ContainerReader::metadata() const { return impl_->file->metadata(); }
const std::vector<TensorInfo>& ContainerReader::tensors() const { return impl_->file->tensors(); }
const std::vector<ChunkInfo>& ContainerReader::chunks() const { return impl_->file->chunks(); }

const TensorInfo* ContainerReader::find(std::string_view name) const { return impl_->file->find(name); }

const TensorInfo* ContainerReader::find_expert(std::uint32_t layer, std::uint32_t expert,
                                               std::string_view projection) const {
  return impl_->file->find_expert(layer, expert, projection);
}

std::size_t ContainerReader::chunk_buffer_size(std::uint32_t chunk) const {
  if (chunk >= impl_->file->chunks().size()) {
    throw InvalidArgumentError(path() + ": chunk " + std::to_string(chunk) + " does not exist");
  }
  return impl_->file->chunk_buffer_size(chunk);
}

void ContainerReader::read_chunk(std::uint32_t chunk, void* buffer, std::size_t buffer_size) const {
  throw_if_error(impl_->file->read_chunk(chunk, buffer, buffer_size));
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
  throw_if_error(
      impl_->file->decode_chunks(tensor, exponent_chunk, exponent_size, sm_chunk, sm_size, out, out_size, pool, path));
}

void ContainerReader::decode_tensor(const TensorInfo& tensor, void* out, std::size_t out_size, ThreadPool* pool,
                                    std::optional<Isa> isa) const {
  const Isa path = resolve_isa(isa);
  throw_if_error(impl_->file->decode_tensor(tensor, out, out_size, pool, path));
}

void ContainerReader::decode_tensor(std::string_view name, void* out, std::size_t out_size, ThreadPool* pool,
                                    std::optional<Isa> isa) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw InvalidArgumentError(path() + ": no tensor named '" + std::string(name) + "'");
  decode_tensor(*t, out, out_size, pool, isa);
}

}  // namespace zipmoe

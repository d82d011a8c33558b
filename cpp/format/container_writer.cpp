// ContainerWriter: streams tensors into a .zmoe file (layout in format/layout.h).
#include <cstring>
#include <unordered_set>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/checksum.h"
#include "common/file_io.h"
#include "format/layout.h"
#include "zipmoe/container.h"

namespace zipmoe {

using format::kHeaderSize;

namespace {

std::string expert_key(const TensorRole& role) {
  return std::to_string(role.layer) + '/' + std::to_string(role.expert) + '/' + role.projection;
}

}  // namespace

struct ContainerWriter::Impl {
  std::string path;
  std::string metadata;
  ContainerWriterOptions options;
  std::unique_ptr<AtomicOutputFile> file;
  std::vector<TensorInfo> tensors;
  std::vector<ChunkInfo> chunks;
  std::unordered_set<std::string> names;
  std::unordered_set<std::string> expert_keys;
  bool finished = false;
  // Set when a write failed midway: the file's tail is unknown, so nothing more may be added.
  bool broken = false;
  bool holds_bytes = false;  // a U8 tensor was added: the file is version 1.1

  void check_usable(const char* call) const {
    if (finished) throw InvalidArgumentError(path + ": " + call + " after finish()");
    if (!file || !file->open()) throw InvalidArgumentError(path + ": " + call + " on a discarded writer");
    if (broken) throw InvalidArgumentError(path + ": " + call + " after a failed write");
  }

  // Writes one chunk at the next aligned offset and records it.
  Status write_chunk(ChunkKind kind, Codec codec, std::uint32_t tensor, const std::uint8_t* bytes, std::size_t size,
                     std::uint64_t decoded_size, std::uint32_t* index) {
    ZIPMOE_RETURN_IF_ERROR(file->pad_to(kContainerAlignment));
    ChunkInfo c;
    c.index = static_cast<std::uint32_t>(chunks.size());
    c.kind = kind;
    c.codec = codec;
    c.tensor = tensor;
    c.offset = file->position();
    c.stored_size = size;
    c.decoded_size = decoded_size;
    c.crc32c = crc32c(bytes, size);
    ZIPMOE_RETURN_IF_ERROR(file->append(bytes, size));
    *index = c.index;
    chunks.push_back(c);
    return Status::Ok();
  }

  // Appends a section at the next aligned offset.
  Status write_section(const std::vector<std::uint8_t>& bytes, format::Section* section) {
    ZIPMOE_RETURN_IF_ERROR(file->pad_to(kContainerAlignment));
    section->offset = file->position();
    section->size = bytes.size();
    section->crc32c = crc32c(bytes.data(), bytes.size());
    return file->append(bytes.data(), bytes.size());
  }
};

ContainerWriter::ContainerWriter(const std::string& path, std::string metadata_json,
                                 const ContainerWriterOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->options = options;
  if (options.segment_symbols > codec::kMaxSegmentSymbols) {
    throw InvalidArgumentError("segment_symbols must be at most " + std::to_string(codec::kMaxSegmentSymbols));
  }
  set_metadata(std::move(metadata_json));
  throw_if_error(AtomicOutputFile::create(path, &impl_->file));
  // The header page is written last, once the sections it points at exist.
  Status st = impl_->file->append_zeros(kHeaderSize);
  if (!st.ok()) {
    impl_->file->discard();
    throw_if_error(st);
  }
}

ContainerWriter::~ContainerWriter() = default;  // AtomicOutputFile removes an uncommitted file
ContainerWriter::ContainerWriter(ContainerWriter&&) noexcept = default;
ContainerWriter& ContainerWriter::operator=(ContainerWriter&&) noexcept = default;

void ContainerWriter::set_metadata(std::string metadata_json) {
  if (!format::is_valid_utf8(reinterpret_cast<const std::uint8_t*>(metadata_json.data()), metadata_json.size())) {
    throw InvalidArgumentError(impl_->path + ": metadata is not valid UTF-8");
  }
  if (metadata_json.size() > format::kMaxMetadataBytes) {
    throw InvalidArgumentError(impl_->path + ": metadata is larger than 1 GiB");
  }
  impl_->metadata = std::move(metadata_json);
}

void ContainerWriter::add_tensor(const std::string& name, const void* data, DType dtype,
                                 const std::vector<std::uint64_t>& shape, const TensorRole& role, Codec codec,
                                 ThreadPool* pool) {
  Impl& w = *impl_;
  w.check_usable("add_tensor");
  const std::string where = w.path + ": tensor '" + name + "'";
  {
    Status st = format::check_name(name, kMaxTensorNameBytes, "tensor name");
    if (!st.ok()) throw InvalidArgumentError(w.path + ": " + st.message());
  }
  if (w.names.count(name)) throw InvalidArgumentError(where + " was already added");
  if (!is_valid_dtype(static_cast<std::uint8_t>(dtype))) throw InvalidArgumentError(where + ": invalid dtype");
  if (shape.size() > kMaxTensorDims) {
    throw InvalidArgumentError(where + ": " + std::to_string(shape.size()) + " dimensions (at most 8)");
  }
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) {
    if (d != 0 && n > format::kMaxElements / d) throw InvalidArgumentError(where + ": shape is too large");
    n *= d;
  }
  if (n > 0 && data == nullptr) throw InvalidArgumentError(where + ": null data");
  if (codec != Codec::kAuto && codec != Codec::kRaw && codec != Codec::kHuffman && codec != Codec::kRans &&
      codec != Codec::kLz4hc) {
    throw InvalidArgumentError(where + ": codec '" + codec_name(codec) + "' cannot be requested");
  }
  if (role.kind != RoleKind::kDense && role.kind != RoleKind::kExpert) {
    throw InvalidArgumentError(where + ": invalid role");
  }
  if (role.is_expert()) {
    Status st = format::check_name(role.projection, kMaxProjectionBytes, "projection name");
    if (!st.ok()) throw InvalidArgumentError(where + ": " + st.message());
    if (w.expert_keys.count(expert_key(role))) {
      throw InvalidArgumentError(where + ": layer " + std::to_string(role.layer) + " expert " +
                                 std::to_string(role.expert) + " projection '" + role.projection +
                                 "' was already added");
    }
  }
  if (w.tensors.size() >= 0xFFFFFFFFu / 2) throw InvalidArgumentError(w.path + ": too many tensors");

  const std::size_t count = static_cast<std::size_t>(n);
  std::vector<std::uint8_t> symbols(count);
  std::vector<std::uint8_t> sm(count * codec::sm_bytes_per_element(dtype));
  if (count) codec::split_planes(dtype, data, count, symbols.data(), sm.data());

  codec::EncodeOptions encode;
  encode.codec = codec;
  if (w.options.segment_symbols) encode.segment_symbols = w.options.segment_symbols;
  std::vector<std::uint8_t> plane;
  codec::PlaneEncodeResult encoded;
  {
    Status st = codec::encode_plane(symbols.data(), count, encode, pool, &plane, &encoded);
    if (!st.ok()) throw_if_error(st.with_context(where));
  }
  std::vector<std::uint8_t>().swap(symbols);  // keep the peak at about one tensor's worth of planes

  TensorInfo t;
  t.index = static_cast<std::uint32_t>(w.tensors.size());
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.num_elements = n;
  t.role = role.is_expert() ? role : TensorRole::dense();
  t.exponent_entropy = static_cast<float>(codec::entropy_bits(encoded.histogram));
  if (!(t.exponent_entropy >= 0.0f)) t.exponent_entropy = 0.0f;
  if (t.exponent_entropy > 8.0f) t.exponent_entropy = 8.0f;

  Status st = w.write_chunk(ChunkKind::kExponentPlane, encoded.codec, t.index, plane.data(), plane.size(), n,
                            &t.exponent_chunk);
  if (st.ok()) {
    st = w.write_chunk(ChunkKind::kSignMantissaPlane, Codec::kRaw, t.index, sm.data(), sm.size(), sm.size(),
                       &t.sm_chunk);
  }
  if (!st.ok()) {
    w.broken = true;
    throw_if_error(st.with_context("tensor '" + name + "'"));
  }
  w.names.insert(name);
  if (role.is_expert()) w.expert_keys.insert(expert_key(role));
  if (dtype == DType::kU8) w.holds_bytes = true;
  w.tensors.push_back(std::move(t));
}

void ContainerWriter::finish() {
  Impl& w = *impl_;
  w.check_usable("finish");
  format::Header header;
  if (w.holds_bytes) header.minor = kContainerMinorVersionWithBytes;
  header.tensor_count = w.tensors.size();
  header.chunk_count = w.chunks.size();

  std::vector<std::uint8_t> bytes;
  for (const TensorInfo& t : w.tensors) format::append_index_entry(t, &bytes);
  Status st = w.write_section(bytes, &header.index);
  if (st.ok()) {
    bytes.clear();
    for (const ChunkInfo& c : w.chunks) format::append_chunk_entry(c, &bytes);
    st = w.write_section(bytes, &header.chunk_table);
  }
  if (st.ok()) {
    bytes.assign(w.metadata.begin(), w.metadata.end());
    st = w.write_section(bytes, &header.metadata);
  }
  // Ending on a page boundary lets O_DIRECT read the last section whole.
  if (st.ok()) st = w.file->pad_to(kDirectIoAlignment);
  if (st.ok()) {
    header.file_size = w.file->position();
    std::vector<std::uint8_t> page(kHeaderSize);
    format::serialize_header(header, page.data());
    st = w.file->write_at(0, page.data(), page.size());
  }
  if (st.ok()) st = w.file->commit();
  if (!st.ok()) {
    w.broken = true;
    w.file->discard();
    throw_if_error(st);
  }
  w.finished = true;
}

void ContainerWriter::discard() {
  if (impl_ && impl_->file && !impl_->finished) impl_->file->discard();
}

const std::string& ContainerWriter::path() const { return impl_->path; }
std::size_t ContainerWriter::num_tensors() const { return impl_->tensors.size(); }
std::uint64_t ContainerWriter::bytes_written() const { return impl_->file ? impl_->file->position() : 0; }
bool ContainerWriter::finished() const { return impl_->finished; }

}  // namespace zipmoe

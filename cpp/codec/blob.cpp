#include <cstring>
#include <memory>
#include <string>

#include "codec/blob.h"
#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "common/checksum.h"
#include "common/cpu_features.h"
#include "zipmoe/codec.h"

namespace zipmoe {

namespace {

constexpr char kBlobMagic[4] = {'Z', 'M', 'O', 'B'};
constexpr std::uint16_t kBlobVersion = 1;
constexpr int kMaxDims = 8;
// Element counts beyond this cannot be a real tensor; rejecting them early keeps
// a corrupt header from turning into a huge allocation.
constexpr std::uint64_t kMaxElements = std::uint64_t(1) << 44;

struct ParsedBlob {
  BlobInfo info;
  const std::uint8_t* coded_plane = nullptr;
  const std::uint8_t* sm_plane = nullptr;
};

Status parse_blob(const void* data, std::size_t size, ParsedBlob* out) {
  ByteReader r(data, size);
  const std::uint8_t* magic = nullptr;
  if (!r.bytes(&magic, 4) || std::memcmp(magic, kBlobMagic, 4) != 0) {
    return Status::Format("not a zipmoe blob (bad magic)");
  }
  std::uint16_t version = 0;
  std::uint8_t dtype = 0, ndim = 0;
  if (!(r.u16(&version) && r.u8(&dtype) && r.u8(&ndim))) return Status::Format("blob truncated in its header");
  if (version != kBlobVersion) {
    return Status::Format("blob version " + std::to_string(version) + " is not supported (this build reads " +
                          std::to_string(kBlobVersion) + ")");
  }
  if (!is_valid_dtype(dtype)) return Status::Format("blob has unknown dtype id " + std::to_string(dtype));
  if (ndim > kMaxDims) return Status::Format("blob has " + std::to_string(ndim) + " dimensions (at most 8)");
  BlobInfo& info = out->info;
  info.dtype = static_cast<DType>(dtype);
  info.shape.resize(ndim);
  std::uint64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    if (!r.u64(&info.shape[d])) return Status::Format("blob truncated in its shape");
    if (info.shape[d] != 0 && n > kMaxElements / info.shape[d]) return Status::Format("blob shape is absurdly large");
    n *= info.shape[d];
  }
  info.num_elements = n;
  if (!(r.u64(&info.coded_plane_bytes) && r.u64(&info.sm_plane_bytes))) {
    return Status::Format("blob truncated in its header");
  }
  if (info.sm_plane_bytes != n * codec::sm_bytes_per_element(info.dtype)) {
    return Status::Format("blob sign/mantissa plane is " + std::to_string(info.sm_plane_bytes) + " bytes, expected " +
                          std::to_string(n * codec::sm_bytes_per_element(info.dtype)));
  }
  if (info.coded_plane_bytes > r.remaining() || info.sm_plane_bytes > r.remaining() - info.coded_plane_bytes ||
      r.remaining() - info.coded_plane_bytes - info.sm_plane_bytes != 4) {
    return Status::Format("blob size " + std::to_string(size) + " does not match its header (truncated or padded)");
  }
  (void)r.bytes(&out->coded_plane, info.coded_plane_bytes);
  (void)r.bytes(&out->sm_plane, info.sm_plane_bytes);
  info.total_bytes = size;
  if (info.coded_plane_bytes < codec::kCodedPlaneHeaderSize) return Status::Format("blob coded plane is truncated");
  info.codec = static_cast<Codec>(out->coded_plane[0]);
  info.num_segments = load_le32(out->coded_plane + 20);
  return Status::Ok();
}

}  // namespace

std::vector<std::uint8_t> compress(const void* elements, DType dtype, const std::vector<std::uint64_t>& shape,
                                   const CompressOptions& options, ThreadPool* pool) {
  if (!is_valid_dtype(static_cast<std::uint8_t>(dtype))) throw InvalidArgumentError("compress: invalid dtype");
  if (shape.size() > kMaxDims) throw InvalidArgumentError("compress: at most 8 dimensions are supported");
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) {
    if (d != 0 && n > kMaxElements / d) throw InvalidArgumentError("compress: shape too large");
    n *= d;
  }
  if (n > 0 && elements == nullptr) throw InvalidArgumentError("compress: null data");
  const std::size_t count = static_cast<std::size_t>(n);
  const std::size_t sm_bytes = count * codec::sm_bytes_per_element(dtype);

  // The coded plane is appended straight into the blob and the SM plane split
  // into its tail: no intermediate copies of tensor-sized buffers.
  std::unique_ptr<std::uint8_t[]> symbols(new std::uint8_t[count ? count : 1]);
  codec::split_planes(dtype, elements, count, symbols.get(), nullptr);

  codec::EncodeOptions encode;
  encode.codec = options.codec;
  if (options.segment_symbols) encode.segment_symbols = options.segment_symbols;

  std::vector<std::uint8_t> blob;
  blob.reserve(4 + 4 + 8 * shape.size() + 16 + count / 2 + sm_bytes + 4);
  for (char c : kBlobMagic) blob.push_back(static_cast<std::uint8_t>(c));
  append_le16(&blob, kBlobVersion);
  blob.push_back(static_cast<std::uint8_t>(dtype));
  blob.push_back(static_cast<std::uint8_t>(shape.size()));
  for (std::uint64_t d : shape) append_le64(&blob, d);
  const std::size_t sizes_at = blob.size();
  append_le64(&blob, 0);  // coded plane size, patched below
  append_le64(&blob, sm_bytes);
  const std::size_t plane_at = blob.size();
  throw_if_error(codec::encode_plane(symbols.get(), count, encode, pool, &blob));
  symbols.reset();
  store_le64(blob.data() + sizes_at, blob.size() - plane_at);
  const std::size_t sm_at = blob.size();
  blob.resize(sm_at + sm_bytes + 4);
  codec::split_planes(dtype, elements, count, nullptr, blob.data() + sm_at);
  store_le32(blob.data() + sm_at + sm_bytes, crc32c(blob.data(), sm_at + sm_bytes));
  return blob;
}

Status codec::read_blob_info(const void* blob, std::size_t size, BlobInfo* out) {
  ParsedBlob parsed;
  ZIPMOE_RETURN_IF_ERROR(parse_blob(blob, size, &parsed));
  *out = std::move(parsed.info);
  return Status::Ok();
}

BlobInfo read_blob_info(const void* blob, std::size_t size) {
  BlobInfo info;
  throw_if_error(codec::read_blob_info(blob, size, &info));
  return info;
}

void decompress(const void* blob, std::size_t size, void* out, std::size_t out_size, ThreadPool* pool,
                std::optional<Isa> isa) {
  const Isa path = isa ? *isa : default_isa();
  throw_if_error(check_isa(path));
  ParsedBlob parsed;
  throw_if_error(parse_blob(blob, size, &parsed));
  const BlobInfo& info = parsed.info;
  const std::uint64_t out_bytes = info.num_elements * dtype_size(info.dtype);
  if (out_size != out_bytes) {
    throw InvalidArgumentError("decompress: output buffer has " + std::to_string(out_size) + " bytes, the blob holds " +
                               std::to_string(out_bytes));
  }
  const std::uint32_t stored = load_le32(static_cast<const std::uint8_t*>(blob) + size - 4);
  const auto checksum_error = [&](std::uint32_t computed) {
    throw ChecksumError("blob checksum mismatch (stored " + std::to_string(stored) + ", computed " +
                        std::to_string(computed) + "): the data is corrupted");
  };
  // The checksum is verified during the decode (see decode_checksummed), so a
  // malformed plane is found first; it is reported as the corruption it is when
  // the checksum of the whole blob does not match either.
  const auto fail = [&](const Status& status) {
    const std::uint32_t computed = crc32c(blob, size - 4);
    if (computed != stored) checksum_error(computed);
    throw_if_error(status);
  };
  codec::CodedPlane plane;
  Status status = codec::CodedPlane::parse(parsed.coded_plane, info.coded_plane_bytes, &plane);
  if (!status.ok()) fail(status.with_context("blob exponent plane"));
  if (plane.num_symbols() != info.num_elements) {
    fail(Status::Format("blob exponent plane holds " + std::to_string(plane.num_symbols()) + " symbols for " +
                        std::to_string(info.num_elements) + " elements"));
  }
  const codec::MergeTarget target =
      codec::make_merge_target(info.dtype, parsed.sm_plane, static_cast<std::size_t>(info.num_elements), out);
  if (!target.merge) {
    // Raw bytes (U8: no sign/mantissa plane to merge) are rare, small tensors of
    // --generic containers: checked in one pass, then decoded.
    const std::uint32_t computed = crc32c(blob, size - 4);
    if (computed != stored) checksum_error(computed);
    throw_if_error(plane.decode(target, pool, path).with_context("blob exponent plane"));
    return;
  }
  codec::CodedPlane::Checksums sums;
  status = plane.decode_checksummed(target, pool, path, &sums);
  if (!status.ok()) fail(status.with_context("blob exponent plane"));
  const std::size_t header_bytes = static_cast<std::size_t>(parsed.coded_plane - static_cast<const std::uint8_t*>(blob));
  std::uint32_t computed = crc32c(blob, header_bytes);
  computed = crc32c_combine(computed, sums.coded_plane, info.coded_plane_bytes);
  computed = crc32c_combine(computed, sums.sm_plane, info.sm_plane_bytes);
  if (computed != stored) checksum_error(computed);
}

}  // namespace zipmoe

// Host side of GPU decoding: device discovery, plan preparation, batch upload
// and launch, error collection, device buffers, and the blob helper.
#include "cuda/cuda_decode.h"

#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec/blob.h"
#include "common/bytes.h"
#include "common/checksum.h"
#include "cuda/decode_kernels.h"
#include "cuda/decode_plan.h"
#include "zipmoe/codec.h"

namespace zipmoe::cuda {

namespace {

Status cuda_error(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return Status::Ok();
  const std::string message = std::string("CUDA ") + what + ": " + cudaGetErrorString(error);
  if (error == cudaErrorMemoryAllocation) return Status::Budget(message);
  return Status::Internal(message);
}

#define ZIPMOE_CUDA_RETURN_IF_ERROR(call, what) ZIPMOE_RETURN_IF_ERROR(cuda_error((call), what))

// Device memory that grows, never shrinks, and is freed with its owner.
template <class T>
struct DeviceArray {
  T* data = nullptr;
  std::size_t capacity = 0;  // elements
  ~DeviceArray() {
    if (data) cudaFree(data);
  }
  Status reserve(std::size_t count) {
    if (count <= capacity) return Status::Ok();
    if (data) cudaFree(data);
    data = nullptr;
    capacity = 0;
    const std::size_t grown = count + count / 4;
    ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&data), grown * sizeof(T)), "device allocation");
    capacity = grown;
    return Status::Ok();
  }
};

// Page-locked host memory, so that copies are asynchronous.
template <class T>
struct PinnedArray {
  T* data = nullptr;
  std::size_t capacity = 0;
  ~PinnedArray() {
    if (data) cudaFreeHost(data);
  }
  Status reserve(std::size_t count) {
    if (count <= capacity) return Status::Ok();
    if (data) cudaFreeHost(data);
    data = nullptr;
    capacity = 0;
    const std::size_t grown = count + count / 4;
    ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&data), grown * sizeof(T)),
                                "pinned host allocation");
    capacity = grown;
    return Status::Ok();
  }
};

}  // namespace

bool cuda_available() {
  static const bool available = [] {
    int devices = 0;
    const cudaError_t error = cudaGetDeviceCount(&devices);
    if (error != cudaSuccess) {
      (void)cudaGetLastError();  // leaves no sticky error behind for later calls
      return false;
    }
    return devices > 0;
  }();
  return available;
}

// ---------------------------------------------------------------------------
// PreparedPlane

PreparedPlane::PreparedPlane() = default;
PreparedPlane::~PreparedPlane() = default;
PreparedPlane::PreparedPlane(const PreparedPlane&) = default;
PreparedPlane& PreparedPlane::operator=(const PreparedPlane&) = default;

Status PreparedPlane::prepare(const std::uint8_t* plane, std::size_t size, PreparedPlane* out) {
  auto plan = std::make_shared<PlanePlan>();
  ZIPMOE_RETURN_IF_ERROR(plan_plane(plane, size, plan.get()));
  out->plan_ = std::move(plan);
  return Status::Ok();
}

Codec PreparedPlane::codec() const { return plan_ ? plan_->codec : Codec::kRaw; }
std::uint64_t PreparedPlane::num_symbols() const { return plan_ ? plan_->num_symbols : 0; }
std::uint64_t PreparedPlane::plane_bytes() const { return plan_ ? plan_->plane_bytes : 0; }

// ---------------------------------------------------------------------------
// Decoder

struct Decoder::Impl {
  DeviceArray<std::uint8_t> descriptors;
  DeviceArray<HuffmanChunkState> chunks;
  DeviceArray<unsigned long long> errors;
  PinnedArray<std::uint8_t> staged_descriptors;
  PinnedArray<unsigned long long> staged_errors;
  BatchLayout layout;  // of the staged batch
  cudaEvent_t done = nullptr;
  bool staged = false;
  bool pending = false;
  std::size_t pending_planes = 0;

  ~Impl() {
    if (done) {
      cudaEventSynchronize(done);  // no buffer is freed under a running kernel
      cudaEventDestroy(done);
    }
  }
};

Decoder::Decoder() : impl_(std::make_unique<Impl>()) {}
Decoder::~Decoder() = default;

Status Decoder::stage(const DecodeJob* jobs, std::size_t count) {
  Impl& d = *impl_;
  if (d.pending) return Status::InvalidArgument("Decoder: wait() for the previous batch first");
  d.staged = false;
  if (count > 0 && jobs == nullptr) return Status::InvalidArgument("Decoder::stage: null jobs");
  std::vector<BatchItem> items(count);
  for (std::size_t i = 0; i < count; ++i) {
    const DecodeJob& job = jobs[i];
    if (job.plane == nullptr || !job.plane->prepared()) {
      return Status::InvalidArgument("GPU decode job " + std::to_string(i) + " has no prepared plane");
    }
    if (!is_valid_dtype(static_cast<std::uint8_t>(job.dtype))) {
      return Status::InvalidArgument("GPU decode job " + std::to_string(i) + " has an invalid dtype");
    }
    if (job.plane->num_symbols() > 0 &&
        (job.device_plane == nullptr || job.device_out == nullptr || (!job.symbols_only && !job.device_sm))) {
      return Status::InvalidArgument("GPU decode job " + std::to_string(i) + " has a null device pointer");
    }
    items[i].plan = &job.plane->plan();
    items[i].device_plane = job.device_plane;
    items[i].device_sm = job.device_sm;
    items[i].device_out = job.device_out;
    items[i].output_kind = job.symbols_only ? kOutputSymbols : output_kind_for(job.dtype);
  }
  ZIPMOE_RETURN_IF_ERROR(build_batch(items.data(), items.size(), &d.layout));
  if (count > 0) {
    ZIPMOE_RETURN_IF_ERROR(d.staged_descriptors.reserve(d.layout.bytes.size()));
    ZIPMOE_RETURN_IF_ERROR(d.descriptors.reserve(d.layout.bytes.size()));
    ZIPMOE_RETURN_IF_ERROR(d.chunks.reserve(d.layout.num_huffman_chunks > 0 ? d.layout.num_huffman_chunks : 1));
    ZIPMOE_RETURN_IF_ERROR(d.errors.reserve(count));
    ZIPMOE_RETURN_IF_ERROR(d.staged_errors.reserve(count));
    if (!d.done) ZIPMOE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&d.done, cudaEventDisableTiming), "event");
    std::memcpy(d.staged_descriptors.data, d.layout.bytes.data(), d.layout.bytes.size());
  }
  d.staged = true;
  return Status::Ok();
}

Status Decoder::launch(Stream stream) {
  Impl& d = *impl_;
  if (!d.staged) return Status::InvalidArgument("Decoder::launch: nothing staged");
  d.staged = false;
  const std::size_t count = d.layout.num_planes;
  if (count == 0) return Status::Ok();
  const BatchLayout& layout = d.layout;
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.descriptors.data, d.staged_descriptors.data, layout.bytes.size(),
                                              cudaMemcpyHostToDevice, stream),
                              "descriptor upload");
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d.errors.data, 0xff, count * sizeof(unsigned long long), stream),
                              "error word reset");
  const BatchArgs args = layout.args(d.descriptors.data, d.chunks.data, d.errors.data);
  ZIPMOE_CUDA_RETURN_IF_ERROR(launch_decode_kernels(args, layout.num_huffman_segments, layout.num_rans_blocks,
                                                    layout.num_fill_slices, stream),
                              "kernel launch");
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d.staged_errors.data, d.errors.data,
                                              count * sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream),
                              "error word download");
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaEventRecord(d.done, stream), "event record");
  d.pending = true;
  d.pending_planes = count;
  return Status::Ok();
}

Status Decoder::wait() {
  Impl& d = *impl_;
  if (!d.pending) return Status::Ok();
  d.pending = false;
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(d.done), "decode");
  for (std::size_t i = 0; i < d.pending_planes; ++i) {
    const Status st = decode_error_status(d.staged_errors.data[i]);
    if (!st.ok()) return st.with_context("GPU decode of plane " + std::to_string(i));
  }
  return Status::Ok();
}

Status cuda_decode_plane(const std::uint8_t* plane, std::size_t size, const std::uint8_t* device_plane,
                         const std::uint8_t* device_sm, DType dtype, void* device_out, Stream stream) {
  PreparedPlane prepared;
  ZIPMOE_RETURN_IF_ERROR(PreparedPlane::prepare(plane, size, &prepared));
  DecodeJob job;
  job.plane = &prepared;
  job.device_plane = device_plane;
  job.device_sm = device_sm;
  job.dtype = dtype;
  job.device_out = device_out;
  Decoder decoder;
  return decoder.decode(&job, 1, stream);
}

// ---------------------------------------------------------------------------
// DeviceBuffer

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

Status DeviceBuffer::allocate(std::size_t bytes, DeviceBuffer* out) {
  DeviceBuffer buffer;
  ZIPMOE_CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer.data_, bytes > 0 ? bytes : 1), "device allocation");
  buffer.size_ = bytes;
  *out = std::move(buffer);
  return Status::Ok();
}

Status DeviceBuffer::upload(const void* host, std::size_t bytes, std::size_t offset) {
  if (offset > size_ || bytes > size_ - offset) return Status::InvalidArgument("DeviceBuffer::upload out of range");
  if (bytes == 0) return Status::Ok();
  ZIPMOE_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(static_cast<std::uint8_t*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice), "upload");
  return Status::Ok();
}

Status DeviceBuffer::download(void* host, std::size_t bytes, std::size_t offset) const {
  if (offset > size_ || bytes > size_ - offset) return Status::InvalidArgument("DeviceBuffer::download out of range");
  if (bytes == 0) return Status::Ok();
  ZIPMOE_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(host, static_cast<const std::uint8_t*>(data_) + offset, bytes, cudaMemcpyDeviceToHost), "download");
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Blobs

Status cuda_decompress_blob(const void* blob, std::size_t size, void* out, std::size_t out_size) {
  BlobInfo info;
  ZIPMOE_RETURN_IF_ERROR(codec::read_blob_info(blob, size, &info));
  const auto* bytes = static_cast<const std::uint8_t*>(blob);
  const std::uint32_t stored = load_le32(bytes + size - 4);
  const std::uint32_t computed = crc32c(blob, size - 4);
  if (stored != computed) {
    return Status::Checksum("blob checksum mismatch (stored " + std::to_string(stored) + ", computed " +
                            std::to_string(computed) + "): the data is corrupted");
  }
  const std::uint64_t out_bytes = info.num_elements * dtype_size(info.dtype);
  if (out_size != out_bytes) {
    return Status::InvalidArgument("cuda_decompress_blob: output buffer has " + std::to_string(out_size) +
                                   " bytes, the blob holds " + std::to_string(out_bytes));
  }
  // Blob layout (zipmoe/codec.h): 8-byte header, the shape, two sizes, then the planes.
  const std::size_t plane_at = 8 + 8 * info.shape.size() + 16;
  const std::uint8_t* plane = bytes + plane_at;
  const std::uint8_t* sm = plane + info.coded_plane_bytes;
  PreparedPlane prepared;
  ZIPMOE_RETURN_IF_ERROR(PreparedPlane::prepare(plane, info.coded_plane_bytes, &prepared)
                             .with_context("blob exponent plane"));
  if (prepared.num_symbols() != info.num_elements) {
    return Status::Format("blob exponent plane holds " + std::to_string(prepared.num_symbols()) + " symbols for " +
                          std::to_string(info.num_elements) + " elements");
  }
  if (info.num_elements == 0) return Status::Ok();
  DeviceBuffer device_plane, device_sm, device_out;
  ZIPMOE_RETURN_IF_ERROR(DeviceBuffer::allocate(info.coded_plane_bytes, &device_plane));
  ZIPMOE_RETURN_IF_ERROR(device_plane.upload(plane, info.coded_plane_bytes));
  ZIPMOE_RETURN_IF_ERROR(DeviceBuffer::allocate(info.sm_plane_bytes, &device_sm));
  ZIPMOE_RETURN_IF_ERROR(device_sm.upload(sm, info.sm_plane_bytes));
  ZIPMOE_RETURN_IF_ERROR(DeviceBuffer::allocate(out_size, &device_out));
  DecodeJob job;
  job.plane = &prepared;
  job.device_plane = static_cast<const std::uint8_t*>(device_plane.data());
  job.device_sm = static_cast<const std::uint8_t*>(device_sm.data());
  job.dtype = info.dtype;
  job.device_out = device_out.data();
  Decoder decoder;
  ZIPMOE_RETURN_IF_ERROR(decoder.decode(&job, 1).with_context("blob exponent plane"));
  return device_out.download(out, out_size);
}

}  // namespace zipmoe::cuda

// GPU decoding of coded exponent planes, fused with the merge: the device writes
// the final BF16/F16/F32 elements from a coded plane and an SM plane that are
// both in device memory. Built only when CUDA is found (library zipmoe_cuda,
// macro ZIPMOE_HAVE_CUDA); the CPU core never depends on it. This header needs
// no CUDA headers.
//
// Design (the kernels are in decode_kernels.cu; their bodies in *_device.cuh,
// which the host test tests/cpp/test_cuda_logic.cpp runs on an emulated GPU):
//
//   Planning (host, decode_plan.h). PreparedPlane::prepare validates a plane with
//   the CPU parsers (framing, code table, every segment's header: the same
//   FormatErrors as the CPU decoder) and builds its device decode table and
//   per-segment descriptors, once per plane. Decoder::enqueue lays out a batch
//   of planes as one descriptor block, uploads it with one copy, and launches
//   at most three kernels for the whole batch; a batch of experts is one call.
//
//   Huffman: one block of 128 threads per segment; the 11-bit lookup table
//   (2048 entries of up to 6 symbols each) in shared memory. The four streams
//   of a segment are cut into 1024-bit chunks decoded in parallel: each chunk is
//   first decoded from its first bit as if a code started there (Huffman codes
//   resynchronize within a few codes), then corrected from the previous chunk's
//   exit using the code starts it recorded, then linked in order by one thread
//   per stream, which also assigns each chunk its output position; a last pass
//   decodes every chunk from its true start and writes merged elements. About
//   two decodes of the data per segment, with a chunk per thread.
//
//   rANS: one warp per segment (4 per block, sharing the 16 KiB slot table in
//   shared memory). Thread t runs lanes t, t+32, ... of the format's interleaved
//   lanes; a ballot per 32 lanes says which lanes renormalize, a popcount gives
//   each lane its word, words come from a 128-word register window (coalesced
//   loads issued two shifts ahead, handed out by shuffles). Outputs of a step are
//   consecutive elements: coalesced stores.
//
//   Raw and constant planes: an elementwise kernel.
//
//   Errors: every check the CPU decoder makes on payload content is made on the
//   device (truncation, trailing bytes, padding, words left over, final rANS
//   states) and recorded as the minimum error word per plane; Decoder::wait()
//   turns it into a FormatError naming the segment. No device-side trap or
//   assert; no read outside a plane's bytes whatever they hold.
//
// Exactness: the output is bit-identical to the CPU scalar decoder for every
// plane the CPU accepts, and the GPU rejects exactly the planes the CPU rejects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "zipmoe/types.h"

struct CUstream_st;

namespace zipmoe::cuda {

// cudaStream_t; nullptr is the legacy default stream.
using Stream = CUstream_st*;

// Whether a CUDA device is usable by this process (driver present, one device at
// least). Cheap after the first call.
bool cuda_available();

struct PlanePlan;

// The host-side decode plan of one coded plane: validated, with its device
// table and segment descriptors. Immutable and cheap to copy; thread-safe.
class PreparedPlane {
 public:
  PreparedPlane();
  ~PreparedPlane();
  PreparedPlane(const PreparedPlane&);
  PreparedPlane& operator=(const PreparedPlane&);

  // Validates `plane` (size bytes: a coded plane, coded_plane.h) and plans its
  // decode. Errors are FormatError statuses, as from the CPU decoder.
  static Status prepare(const std::uint8_t* plane, std::size_t size, PreparedPlane* out);

  bool prepared() const { return plan_ != nullptr; }
  Codec codec() const;
  std::uint64_t num_symbols() const;
  std::uint64_t plane_bytes() const;
  const PlanePlan& plan() const { return *plan_; }

 private:
  std::shared_ptr<const PlanePlan> plan_;
};

// One plane to decode: the device copy must hold exactly the bytes that were
// prepared. The SM plane is sm_bytes_per_element(dtype) * n bytes (n for
// BF16/F16; for F32, n high bytes then n little-endian 16-bit words) and the
// output n elements of dtype, or n bytes of bare symbols with symbols_only.
struct DecodeJob {
  const PreparedPlane* plane = nullptr;
  const std::uint8_t* device_plane = nullptr;
  const std::uint8_t* device_sm = nullptr;
  DType dtype = DType::kBF16;
  void* device_out = nullptr;
  bool symbols_only = false;
};

// Launches batches of plane decodes on a stream. Owns device scratch that grows
// to the largest batch seen and pinned staging memory. Not thread-safe: one per
// thread or stream.
class Decoder {
 public:
  Decoder();
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Uploads the batch's descriptors and launches its kernels on `stream`;
  // returns without waiting for them. Call wait() before the next enqueue (the
  // batch's staging memory is reused; an enqueue while one is pending is an
  // InvalidArgument error). Planes, SM planes and outputs must stay allocated
  // until wait() returns. Errors here are argument or CUDA errors; data errors
  // come from wait().
  Status enqueue(const DecodeJob* jobs, std::size_t count, Stream stream = nullptr) {
    Status st = stage(jobs, count);
    if (!st.ok()) return st;
    return launch(stream);
  }
  // enqueue() in two halves: stage() does the host work (checks the jobs, lays
  // out and stages the descriptors), launch() the device work (descriptor
  // upload, kernels, error words) on `stream`.
  Status stage(const DecodeJob* jobs, std::size_t count);
  Status launch(Stream stream = nullptr);
  // Waits for the last enqueued batch. A FormatError names the first plane (in
  // job order) whose data the device rejected.
  Status wait();
  Status decode(const DecodeJob* jobs, std::size_t count, Stream stream = nullptr) {
    Status st = enqueue(jobs, count, stream);
    if (!st.ok()) return st;
    return wait();
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One plane, synchronously (prepares, launches and waits).
Status cuda_decode_plane(const std::uint8_t* plane, std::size_t size, const std::uint8_t* device_plane,
                         const std::uint8_t* device_sm, DType dtype, void* device_out, Stream stream = nullptr);

// Device memory owned by the holder (cudaMalloc/cudaFree), for tests, tools and
// bindings that have no CUDA headers.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static Status allocate(std::size_t bytes, DeviceBuffer* out);
  Status upload(const void* host, std::size_t bytes, std::size_t offset = 0);
  Status download(void* host, std::size_t bytes, std::size_t offset = 0) const;
  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// Decodes a whole tensor blob (zipmoe/codec.h) on the GPU into host memory
// (out_size must be num_elements * dtype_size): checksum, upload, decode,
// download. For tests and tools; the serving path keeps planes on the device.
Status cuda_decompress_blob(const void* blob, std::size_t size, void* out, std::size_t out_size);

}  // namespace zipmoe::cuda

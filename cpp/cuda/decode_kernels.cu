// The decoding kernels: one launch per kind of work in a batch, each block
// running one block function of the *_device.cuh headers (the same code the
// host test runs on its emulated GPU).
#include "cuda/decode_kernels.h"

#include <algorithm>
#include <cstdint>

#include "cuda/huffman_device.cuh"
#include "cuda/merge_device.cuh"
#include "cuda/rans_device.cuh"

namespace zipmoe::cuda {

namespace {

__global__ void __launch_bounds__(kHuffmanBlockThreads)
    huffman_segments_kernel(const BatchArgs batch, std::uint64_t first_job) {
  __shared__ HuffmanShared shared;
  huffman_decode_segment(batch, first_job + blockIdx.x, shared, threadIdx.x);
}

__global__ void __launch_bounds__(kRansWarpsPerBlock * kWarpSize)
    rans_blocks_kernel(const BatchArgs batch, std::uint64_t first_job) {
  __shared__ RansShared shared;
  rans_decode_block(batch, first_job + blockIdx.x, shared, threadIdx.x);
}

__global__ void __launch_bounds__(kFillBlockThreads) fill_slices_kernel(const BatchArgs batch, std::uint64_t first_job) {
  fill_slice(batch, first_job + blockIdx.x, threadIdx.x);
}

// Grids are launched in pieces that stay far below the limit of gridDim.x.
constexpr std::size_t kMaxBlocksPerLaunch = std::size_t(1) << 30;

}  // namespace

cudaError_t launch_decode_kernels(const BatchArgs& batch, std::size_t huffman_segments, std::size_t rans_blocks,
                                  std::size_t fill_slices, cudaStream_t stream) {
  for (std::size_t first = 0; first < huffman_segments; first += kMaxBlocksPerLaunch) {
    const unsigned blocks = static_cast<unsigned>(std::min(kMaxBlocksPerLaunch, huffman_segments - first));
    huffman_segments_kernel<<<blocks, kHuffmanBlockThreads, 0, stream>>>(batch, first);
  }
  for (std::size_t first = 0; first < rans_blocks; first += kMaxBlocksPerLaunch) {
    const unsigned blocks = static_cast<unsigned>(std::min(kMaxBlocksPerLaunch, rans_blocks - first));
    rans_blocks_kernel<<<blocks, kRansWarpsPerBlock * kWarpSize, 0, stream>>>(batch, first);
  }
  for (std::size_t first = 0; first < fill_slices; first += kMaxBlocksPerLaunch) {
    const unsigned blocks = static_cast<unsigned>(std::min(kMaxBlocksPerLaunch, fill_slices - first));
    fill_slices_kernel<<<blocks, kFillBlockThreads, 0, stream>>>(batch, first);
  }
  return cudaGetLastError();
}

}  // namespace zipmoe::cuda

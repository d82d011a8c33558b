// Launch of the decoding kernels of one batch (decode_kernels.cu); used by
// cuda_decode.cu. The kernels are thin wrappers around the block functions of
// huffman_device.cuh, rans_device.cuh and merge_device.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "cuda/decode_layout.cuh"

namespace zipmoe::cuda {

// Launches the Huffman, rANS and raw/constant kernels for a batch whose
// descriptors (device memory) `batch` points at. Asynchronous on `stream`.
cudaError_t launch_decode_kernels(const BatchArgs& batch, std::size_t huffman_segments, std::size_t rans_blocks,
                                  std::size_t fill_slices, cudaStream_t stream);

}  // namespace zipmoe::cuda

// The thin layer that lets the decoding logic of cpp/cuda compile both as CUDA
// (nvcc, for the kernels) and as plain C++ (g++, for the host test that runs the
// very same functions on an emulated GPU: tests/cpp/test_cuda_logic.cpp).
//
//   ZIPMOE_HD      pure per-thread code (bit reading, table lookups, merging):
//                  __host__ __device__ under nvcc, plain inline under g++.
//   ZIPMOE_SIMT    code that talks to other threads through the primitives
//                  below: __device__ under nvcc, plain inline under g++.
//
// The primitives are used with every thread of the warp (or block) converged,
// as the *_sync intrinsics require. Under g++ they are declared here and defined
// by whoever runs the code: the SIMT emulator of the host test. No other
// translation unit compiles these headers without nvcc.
#pragma once

#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cstring>
#endif

#if defined(__CUDACC__)
#define ZIPMOE_HD __host__ __device__ __forceinline__
#define ZIPMOE_SIMT __device__ __forceinline__
#else
#define ZIPMOE_HD inline
#define ZIPMOE_SIMT inline
#endif

namespace zipmoe::cuda {

constexpr unsigned kWarpSize = 32;

// A 4-byte-aligned little-endian load (the caller guarantees the alignment).
ZIPMOE_HD std::uint32_t load_aligned_u32(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const std::uint32_t*>(p);
#else
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}

ZIPMOE_HD unsigned popcount32(std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<unsigned>(__popc(v));
#else
  return static_cast<unsigned>(__builtin_popcount(v));
#endif
}

ZIPMOE_HD unsigned popcount64(std::uint64_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<unsigned>(__popcll(static_cast<unsigned long long>(v)));
#else
  return static_cast<unsigned>(__builtin_popcountll(v));
#endif
}

// Index of the lowest set bit (v != 0).
ZIPMOE_HD unsigned lowest_set_bit(std::uint32_t v) {
#if defined(__CUDA_ARCH__)
  return static_cast<unsigned>(__ffs(static_cast<int>(v)) - 1);
#else
  return static_cast<unsigned>(__builtin_ctz(v));
#endif
}

namespace simt {

#if defined(__CUDACC__)
__device__ __forceinline__ std::uint32_t warp_ballot(bool predicate) { return __ballot_sync(0xffffffffu, predicate); }
__device__ __forceinline__ std::uint32_t warp_shuffle(std::uint32_t value, unsigned source_lane) {
  return __shfl_sync(0xffffffffu, value, static_cast<int>(source_lane));
}
__device__ __forceinline__ void block_barrier() { __syncthreads(); }
__device__ __forceinline__ void atomic_min_u64(unsigned long long* address, unsigned long long value) {
  atomicMin(address, value);
}
#else
// Bit l of the result is lane l's predicate (all 32 lanes of the caller's warp).
std::uint32_t warp_ballot(bool predicate);
// The value passed by lane source_lane (0..31) of the caller's warp.
std::uint32_t warp_shuffle(std::uint32_t value, unsigned source_lane);
// Waits until every thread of the block has arrived; memory written before is then visible.
void block_barrier();
void atomic_min_u64(unsigned long long* address, unsigned long long value);
#endif

}  // namespace simt
}  // namespace zipmoe::cuda

// The per-ISA kernel interface behind kernels.h (internal).
//
// kernels.cpp validates arguments, cuts work into thread-independent pieces and
// calls one KernelTable; each ISA file (kernels_scalar.cpp, kernels_avx2.cpp, ...)
// fills one. Only plain types and declarations live here: ISA files include it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernel_types.h"

namespace zipmoe::kernels {

// How a linear layer's input rows are converted before the dot products. Each
// prepared row holds k_padded elements, zero past K.
enum class InputLayout : std::uint8_t {
  kF32 = 0,         // as given
  // Each chunk of 2W floats (W = vector width) stored as its W even-indexed
  // elements then its W odd-indexed ones: a vector of 2W BF16 weights widens to
  // its even and odd halves with one shift and one mask (no lane permutes).
  kF32EvenOdd = 1,
  kBF16 = 2,        // rounded to BF16 (round-to-nearest-even), for vdpbf16ps
};

// A block of a linear layer: rows [0, m) of prepared input times weight rows
// [0, n), written to y.
struct LinearTile {
  const void* x = nullptr;       // prepared row 0
  std::size_t x_stride = 0;      // elements of the prepared type between rows
  std::size_t m = 0;
  const void* w = nullptr;       // weight row 0 of the block (rows are k elements apart)
  DType w_dtype = DType::kF32;
  std::size_t k = 0;
  std::size_t n = 0;
  const void* bias = nullptr;    // bias element of weight row 0, or null
  DType bias_dtype = DType::kF32;
  float* y = nullptr;            // y[i][j] at y + i * ldy + j
  std::size_t ldy = 0;
  bool accumulate = false;
  // kExact: the canonical order (canonical.h); kFast: the path's own order.
  MatmulPrecision precision = MatmulPrecision::kFast;
};

// Query heads [head_begin, head_end) (all reading kv head kv_head) of queries
// [query_begin, query_end).
struct AttentionTask {
  const float* q = nullptr;
  std::size_t ldq = 0;
  float* out = nullptr;
  std::size_t ldo = 0;
  std::size_t first_position = 0;
  std::size_t query_begin = 0;
  std::size_t query_end = 0;
  std::size_t kv_head = 0;
  std::size_t head_begin = 0;
  std::size_t head_end = 0;
  const KvCacheView* cache = nullptr;
  const AttentionParams* params = nullptr;
  // kExact: the canonical order (canonical.h); kFast: the path's own order.
  MatmulPrecision precision = MatmulPrecision::kFast;
};

// At most this many query heads per attention task (they share K/V loads).
constexpr std::size_t kAttentionMaxHeadsPerTask = 8;
// Keys per step of the running-maximum softmax.
constexpr std::size_t kAttentionKeyBlock = 64;

struct KernelTable {
  // Linear layers: prepared rows are padded to a multiple of k_chunk elements.
  std::size_t k_chunk;
  InputLayout (*input_layout)(DType weight_dtype);
  void (*prepare_input)(InputLayout layout, const float* x, std::size_t k, std::size_t k_padded, void* out);
  void (*linear_tile)(const LinearTile& tile);

  // One row each.
  void (*rms_norm)(const float* x, std::size_t n, const void* weight, DType weight_dtype, float eps, float* y);
  void (*layer_norm)(const float* x, std::size_t n, const void* weight, DType weight_dtype, const void* bias,
                     DType bias_dtype, float eps, float* y);
  void (*softmax)(const float* x, std::size_t n, float* y);

  void (*silu_mul)(const float* gate, const float* up, float* out, std::size_t n);
  void (*swiglu_oai)(const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit);
  void (*sigmoid)(const float* x, float* out, std::size_t n);
  void (*add)(const float* a, const float* b, float* out, std::size_t n);
  void (*scale)(const float* x, float factor, float* out, std::size_t n);
  void (*add_scaled)(const float* x, float factor, float* out, std::size_t n);

  // One token: `heads` heads head_stride apart.
  void (*rope)(RopeStyle style, float* x, std::size_t heads, std::size_t head_stride, std::size_t rotary_dim,
               const float* cos_sin);

  void (*attention)(const AttentionTask& task);
};

#define ZIPMOE_DECLARE_KERNEL_TABLE(ns) \
  namespace ns {                        \
  const KernelTable& kernel_table();    \
  }

ZIPMOE_DECLARE_KERNEL_TABLE(scalar)
#if defined(ZIPMOE_ARCH_X86)
ZIPMOE_DECLARE_KERNEL_TABLE(avx2)
ZIPMOE_DECLARE_KERNEL_TABLE(avx512)
// vdpbf16ps tiles for BF16 weights (MatmulPrecision::kFast), used with the avx512
// table when the CPU has AVX512_BF16. Input layout kBF16, padded to
// kBf16DotChunk elements.
namespace avx512bf16 {
constexpr std::size_t kBf16DotChunk = 32;
void prepare_input(InputLayout layout, const float* x, std::size_t k, std::size_t k_padded, void* out);
void linear_tile(const LinearTile& tile);
}  // namespace avx512bf16
#endif
#if defined(ZIPMOE_ARCH_ARM64)
ZIPMOE_DECLARE_KERNEL_TABLE(neon)
#endif

}  // namespace zipmoe::kernels

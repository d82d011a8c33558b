// Plain types shared by the kernel API (kernels.h) and the per-ISA kernel files.
// Kept free of inline functions so that ISA-specific files can include it without
// risking an ISA-compiled copy of an inline function being linked into the
// generic path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "zipmoe/types.h"

namespace zipmoe::kernels {

// ---------------------------------------------------------------------------
// Views of stored tensors

// rows x cols elements of `dtype`, row-major and packed (row r starts at element
// r * cols). Rows are output features, columns input features, as in
// torch.nn.Linear.weight.
struct WeightMatrix {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::size_t rows = 0;
  std::size_t cols = 0;
};

// `size` elements of `dtype`; data == nullptr means "absent" (e.g. no bias).
struct WeightVector {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::size_t size = 0;
};

// How linear layers and attention sum (the other kernels have one order only).
enum class MatmulPrecision : std::uint8_t {
  // F32 activations, products and sums, in the canonical order of
  // kernels/canonical.h that every Isa path implements exactly: the same bits on
  // scalar, AVX2, AVX-512 and NEON, for any thread count and any number of rows
  // in a call. On AVX-512 this is also the fastest order (one 16-wide accumulator
  // holds the 16 canonical lanes); AVX2 keeps them in 2 accumulators, NEON in 4,
  // the scalar path in 16 floats with std::fma.
  kExact = 0,
  // F32 activations, products and sums in each path's fastest order (one
  // accumulator of the path's vector width; the scalar path sums in sequence): the
  // same bits for any thread count on one path, within rounding of kExact across
  // paths. In addition, with BF16 weights, M >= 2 and a CPU with AVX512_BF16
  // (Isa::kAvx512 only), x is rounded to BF16 (round-to-nearest-even) and the
  // products are summed by vdpbf16ps (pairs of exact BF16 x BF16 products added in
  // F32; BF16 subnormals in x or W count as zero), about 1.8x faster. Each x
  // element then carries a relative error of at most 2^-9, so a dot product's
  // error is at most about 2^-9 * sum |x_k w_k| and typically far less (random
  // signs): over K = 2048 the tests measure at most 1.7e-4 * sum |x_k w_k|.
  // llama.cpp makes the same trade for BF16 weights (it rounds activations to BF16
  // for its BF16 dot products, M = 1 included). M = 1 (decode) never rounds x:
  // it is memory-bound, so the F32 products cost nothing.
  kFast = 1,
};

enum class RopeStyle : std::uint8_t {
  // Rotate halves (transformers' rotate_half; Llama, Qwen, Mixtral, OLMoE,
  // gpt-oss, ...): pairs (x[i], x[i + h]).
  kNeox = 0,
  // Adjacent pairs (x[2i], x[2i + 1]) (GPT-J; DeepSeek-V2's complex multiply and
  // DeepSeek-V3 with rope_interleave). Results stay in pair order, whereas
  // transformers' DeepSeek-V3 path writes them de-interleaved; q and k are
  // permuted alike, so attention scores are the same.
  kInterleaved = 1,
};

// One layer's KV cache. Element (kv head h, position p, component d) of K is at
//   k + h * k_head_stride + (p % capacity) * k_position_stride + d
// (V likewise), in `dtype` (F32, or BF16/F16 to halve its memory; values are
// rounded to nearest-even when stored and widened exactly when read). Strides are
// in elements. The default layout (make_kv_cache_view) is head-major,
// [n_kv_heads][capacity][dim], so that attention streams each head's keys
// contiguously. Positions wrap around `capacity`: a full-attention layer gets
// capacity >= its longest context; a sliding-window layer needs only
// capacity >= window + (queries per call) - 1.
// V may alias K (absorbed MLA, where V is the first v_dim components of the
// latent K): v = k with the same strides.
struct KvCacheView {
  DType dtype = DType::kF32;
  std::size_t n_kv_heads = 0;
  std::size_t k_dim = 0;
  std::size_t v_dim = 0;
  std::size_t capacity = 0;  // positions held
  void* k = nullptr;
  std::size_t k_head_stride = 0;
  std::size_t k_position_stride = 0;
  void* v = nullptr;
  std::size_t v_head_stride = 0;
  std::size_t v_position_stride = 0;
};

struct AttentionParams {
  std::size_t n_heads = 0;   // query heads; a multiple of the cache's n_kv_heads
  float scale = 1.0f;        // multiplies q . k (e.g. 1 / sqrt(k_dim), times DeepSeek's mscale^2)
  // 0: full causal attention. W > 0: query at position p sees positions
  // p - W + 1 .. p (W keys, as transformers' sliding_window; gpt-oss's sliding layers).
  std::size_t sliding_window = 0;
  // 0: no chunks. C > 0: query at position p sees only positions floor(p / C) * C
  // .. p (Llama 4's chunked attention); combines with sliding_window (the later
  // start wins).
  std::size_t chunk_size = 0;
  // Null, or n_heads F32 logits (gpt-oss "sinks"): head h's softmax denominator
  // gains exp(sinks[h] - max), the sink taking no value. Not multiplied by scale.
  const float* sinks = nullptr;
};

// The first key position a query at `position` sees: the start of its sliding
// window or of its attention chunk, whichever is later.
inline std::size_t attention_first_key(const AttentionParams& p, std::size_t position) {
  std::size_t first = p.sliding_window && position + 1 > p.sliding_window ? position + 1 - p.sliding_window : 0;
  if (p.chunk_size) {
    const std::size_t chunk_start = position / p.chunk_size * p.chunk_size;
    if (chunk_start > first) first = chunk_start;
  }
  return first;
}

}  // namespace zipmoe::kernels

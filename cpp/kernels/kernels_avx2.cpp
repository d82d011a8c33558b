// AVX2 + FMA + F16C kernels: 8 floats per vector; tails through masked float
// loads or a zero-padded copy (16-bit elements have no masked load here).
#include <immintrin.h>
#include <math.h>

#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/canonical.h"
#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

namespace zipmoe::kernels::avx2 {

namespace {

struct V {
  using F = __m256;
  static constexpr std::size_t kWidth = 8;

  static __m256i lane_mask(std::size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  static F rounded(F v) {
    __asm__("" : "+x"(v));
    return v;
  }
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_partial(const float* p, std::size_t n) { return _mm256_maskload_ps(p, lane_mask(n)); }
  static void store_partial(float* p, F v, std::size_t n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static float hsum(F v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  // hsum of four vectors at once, through exactly the same additions as hsum.
  static void hsum4(F a, F b, F c, F d, float* out) {
    const F ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    const F cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    // Per 128-bit half: [x0 + x2, x1 + x3] of a and c (low half), b and d (high half).
    const F s = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const F r = _mm256_add_ps(_mm256_shuffle_ps(s, s, _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm256_shuffle_ps(s, s, _MM_SHUFFLE(3, 1, 3, 1)));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, r);
    out[0] = lanes[0];
    out[1] = lanes[4];
    out[2] = lanes[1];
    out[3] = lanes[5];
  }
  static float hmax(F v) {
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static F round(F v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n as two factors 2^(n/2) and 2^(n - n/2), each a normal float for |n| <= 250.
  static F pow2_scale(F p, F n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256i rest = _mm256_sub_epi32(ni, half);
    const __m256i bias = _mm256_set1_epi32(127);
    const F a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
    const F b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, a), b);
  }
  static F zero_where_less(F v, F x, F threshold) {
    return _mm256_and_ps(v, _mm256_cmp_ps(x, threshold, _CMP_GE_OQ));
  }

  template <DType D>
  static constexpr std::size_t dtype_bytes() {
    return D == DType::kF32 ? 4 : 2;
  }

  template <DType D>
  static F load_f32(const void* p) {
    if constexpr (D == DType::kF32) {
      return _mm256_loadu_ps(static_cast<const float*>(p));
    } else {
      const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
      if constexpr (D == DType::kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      else return _mm256_cvtph_ps(h);
    }
  }
  template <DType D>
  static F load_f32_partial(const void* p, std::size_t n) {
    if constexpr (D == DType::kF32) {
      return load_partial(static_cast<const float*>(p), n);
    } else {
      alignas(16) std::uint16_t buffer[8] = {};
      std::memcpy(buffer, p, n * 2);
      return load_f32<D>(buffer);
    }
  }

  // 16 weights: BF16 splits into even/odd elements; F16 and F32 stay in order.
  template <DType D>
  static void load_chunk(const void* p, F& a, F& b) {
    if constexpr (D == DType::kBF16) {
      const __m256i v = _mm256_loadu_si256(static_cast<const __m256i*>(p));
      a = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      b = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
    } else {
      a = load_f32<D>(p);
      b = load_f32<D>(static_cast<const std::uint8_t*>(p) + 8 * dtype_bytes<D>());
    }
  }
  template <DType D>
  static void load_chunk_partial(const void* p, std::size_t n, F& a, F& b) {
    alignas(32) std::uint8_t buffer[16 * 4] = {};
    std::memcpy(buffer, p, n * dtype_bytes<D>());
    load_chunk<D>(buffer, a, b);
  }

  static InputLayout input_layout(DType d) {
    return d == DType::kBF16 ? InputLayout::kF32EvenOdd : InputLayout::kF32;
  }
};

// 16 registers: 3 x 2 outputs take 6 accumulators + 4 widened weights + 2 inputs.
constexpr int kLinearMR = 3;
constexpr int kLinearNR = 2;
// 8 rows for M = 1 (8 accumulators; each widened weight is consumed at once):
// measured faster than 4 or 6 on Zen 4.
constexpr int kMatvecNR = 8;
// kExact keeps each output's 16 canonical lanes in 2 accumulators. The same tiles
// as kFast, with twice the accumulators (some spill), measured faster than
// smaller tiles that fit the 16 registers: 3 x 2 outputs for M > 1 (4% more
// GFLOP/s than 2 x 2), 8 rows for M = 1 (10% more GB/s than 4). Attention keeps
// 8 heads per pass as well: as fast as kFast, where 4 heads per pass (reading K
// and V twice) was 30% slower.
constexpr int kExactLinearMR = 3;
constexpr int kExactLinearNR = 2;
constexpr int kExactMatvecNR = 8;
constexpr int kExactAttentionHeads = 8;

constexpr bool kAttentionWideTiles = false;

#include "kernels/kernels_simd.inc"

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::avx2

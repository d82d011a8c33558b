// AVX-512 (F/BW/VL/DQ) kernels: 16 floats per vector, masked loads for tails.
#include <immintrin.h>
#include <math.h>

#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/canonical.h"
#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

// GCC 12's AVX-512 headers build _mm512_castps512_ps256 and friends on a
// self-initialized "undefined" vector, which its own uninitialized-variable
// analysis then reports (GCC bug 105593); the code is fine.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace zipmoe::kernels::avx512 {

namespace {

struct V {
  using F = __m512;
  static constexpr std::size_t kWidth = 16;

  static __mmask16 mask16(std::size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static __mmask32 mask32(std::size_t n) {
    return n >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << n) - 1u);
  }

  static F rounded(F v) {
    __asm__("" : "+v"(v));
    return v;
  }
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_partial(const float* p, std::size_t n) { return _mm512_maskz_loadu_ps(mask16(n), p); }
  static void store_partial(float* p, F v, std::size_t n) { _mm512_mask_storeu_ps(p, mask16(n), v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  // (The extract intrinsics trip GCC 12's uninitialized-variable warning.)
  static __m256 upper_half(F v) { return _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xee)); }
  // A fixed tree (halves, then quarters, ...), the same for every caller.
  static float hsum(F v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), upper_half(v));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  // hsum of four vectors at once, through exactly the same additions as hsum.
  static void hsum4(F a, F b, F c, F d, float* out) {
    const F ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
    const F cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
    const F q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
    const F q2 = _mm512_add_ps(q, _mm512_shuffle_ps(q, q, _MM_SHUFFLE(3, 2, 3, 2)));
    const F r = _mm512_add_ps(q2, _mm512_movehdup_ps(q2));
    const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(lanes, r)));
  }
  static float hmax(F v) {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), upper_half(v));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static F round(F v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F pow2_scale(F p, F n) { return _mm512_scalef_ps(p, n); }
  static F zero_where_less(F v, F x, F threshold) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, threshold, _CMP_GE_OQ), v);
  }

  static F widen_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

  template <DType D>
  static F load_f32(const void* p) {
    if constexpr (D == DType::kF32) {
      return _mm512_loadu_ps(p);
    } else {
      const __m256i h = _mm256_loadu_si256(static_cast<const __m256i*>(p));
      if constexpr (D == DType::kBF16) return widen_bf16(h);
      else return _mm512_cvtph_ps(h);
    }
  }
  template <DType D>
  static F load_f32_partial(const void* p, std::size_t n) {
    if constexpr (D == DType::kF32) {
      return _mm512_maskz_loadu_ps(mask16(n), p);
    } else {
      const __m256i h = _mm256_maskz_loadu_epi16(mask16(n), p);
      if constexpr (D == DType::kBF16) return widen_bf16(h);
      else return _mm512_cvtph_ps(h);
    }
  }

  // 32 weights: BF16 splits into even/odd elements (shift / mask, no permutes);
  // F16 and F32 stay in order.
  template <DType D>
  static void load_chunk(const void* p, F& a, F& b) {
    if constexpr (D == DType::kBF16) {
      const __m512i v = _mm512_loadu_si512(p);
      a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    } else if constexpr (D == DType::kF16) {
      const __m256i* h = static_cast<const __m256i*>(p);
      a = _mm512_cvtph_ps(_mm256_loadu_si256(h));
      b = _mm512_cvtph_ps(_mm256_loadu_si256(h + 1));
    } else {
      const float* f = static_cast<const float*>(p);
      a = _mm512_loadu_ps(f);
      b = _mm512_loadu_ps(f + 16);
    }
  }
  template <DType D>
  static void load_chunk_partial(const void* p, std::size_t n, F& a, F& b) {
    if constexpr (D == DType::kBF16) {
      const __m512i v = _mm512_maskz_loadu_epi16(mask32(n), p);
      a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    } else {
      const std::size_t first = n < 16 ? n : 16;
      a = load_f32_partial<D>(p, first);
      b = n > 16 ? load_f32_partial<D>(static_cast<const std::uint8_t*>(p) + 16 * dtype_bytes<D>(), n - 16)
                 : _mm512_setzero_ps();
    }
  }
  template <DType D>
  static constexpr std::size_t dtype_bytes() {
    return D == DType::kF32 ? 4 : 2;
  }

  static InputLayout input_layout(DType d) {
    return d == DType::kBF16 ? InputLayout::kF32EvenOdd : InputLayout::kF32;
  }
};

// 4 x 4 outputs: 16 accumulators + 8 widened weights + 2 inputs of 32 registers.
constexpr int kLinearMR = 4;
constexpr int kLinearNR = 4;
// 8 weight rows streamed at once for M = 1.
constexpr int kMatvecNR = 8;
// One 16-wide accumulator holds an output's 16 canonical lanes: kExact and kFast
// run the same kernels (kFast differs only by vdpbf16ps, avx512bf16).
constexpr int kExactLinearMR = kLinearMR;
constexpr int kExactLinearNR = kLinearNR;
constexpr int kExactMatvecNR = kMatvecNR;
constexpr int kExactAttentionHeads = 8;

constexpr bool kAttentionWideTiles = true;

#include "kernels/kernels_simd.inc"

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::avx512

// AVX512_BF16 linear tiles (MatmulPrecision::kFast with BF16 weights, M >= 2):
// inputs rounded to BF16 once, then vdpbf16ps multiplies 32 BF16 pairs and adds
// them into 16 F32 lanes per instruction, with no widening of the weights.
#include <immintrin.h>

#include <cstring>

#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

// GCC 12's AVX-512 headers build _mm512_castps512_ps256 and friends on a
// self-initialized "undefined" vector, which its own uninitialized-variable
// analysis then reports (GCC bug 105593); the code is fine.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace zipmoe::kernels::avx512bf16 {

namespace {

__m256 upper_half(__m512 v) { return _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xee)); }

// The same tree as the avx512 kernels' V::hsum.
float hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), upper_half(v));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// Four hsums at once through exactly the same additions.
void hsum4(__m512 a, __m512 b, __m512 c, __m512 d, float* out) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
  const __m512 q2 = _mm512_add_ps(q, _mm512_shuffle_ps(q, q, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = _mm512_add_ps(q2, _mm512_movehdup_ps(q2));
  const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(lanes, r)));
}

inline __m512 dot_pairs(__m512 acc, __m512i x, __m512i w) {
  return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)w);
}

// sums[i * NR + j] = dot(x row i, w row j); one accumulator per output, so the
// order depends only on K.
template <int MR, int NR>
void micro(const std::uint16_t* x, std::size_t x_stride, const std::uint16_t* w, std::size_t k, float* sums) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const std::size_t full = k / kBf16DotChunk, rest = k % kBf16DotChunk;
  for (std::size_t c = 0; c < full; ++c) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_loadu_si512(w + j * k + c * kBf16DotChunk);
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(x + i * x_stride + c * kBf16DotChunk);
      for (int j = 0; j < NR; ++j) acc[i][j] = dot_pairs(acc[i][j], xv, wv[j]);
    }
  }
  if (rest) {
    const __mmask32 mask = static_cast<__mmask32>((1u << rest) - 1u);
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_epi16(mask, w + j * k + full * kBf16DotChunk);
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(x + i * x_stride + full * kBf16DotChunk);
      for (int j = 0; j < NR; ++j) acc[i][j] = dot_pairs(acc[i][j], xv, wv[j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    int j = 0;
    for (; j + 4 <= NR; j += 4) hsum4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3], sums + i * NR + j);
    for (; j < NR; ++j) sums[i * NR + j] = hsum(acc[i][j]);
  }
}

// 4 x 6 outputs: 24 accumulators + 6 weight vectors + 1 input of 32 registers
// (measured: 4x6 > 6x4 > 8x3 > 4x4 on Zen 4, about 190 vs 165 GFLOP/s per core).
constexpr int kMR = 4;
constexpr int kNR = 6;

using MicroFn = void (*)(const std::uint16_t*, std::size_t, const std::uint16_t*, std::size_t, float*);

template <int MR, int NR = 1>
MicroFn pick_nr(std::size_t nr) {
  if constexpr (NR > kNR) {
    return nullptr;
  } else {
    return nr == NR ? &micro<MR, NR> : pick_nr<MR, NR + 1>(nr);
  }
}

template <int MR = 1>
MicroFn pick(std::size_t mr, std::size_t nr) {
  if constexpr (MR > kMR) {
    return nullptr;
  } else {
    return mr == MR ? pick_nr<MR>(nr) : pick<MR + 1>(mr, nr);
  }
}

}  // namespace

void prepare_input(InputLayout, const float* x, std::size_t k, std::size_t k_padded, void* out) {
  std::uint16_t* o = static_cast<std::uint16_t*>(out);
  for (std::size_t i = 0; i < k; ++i) o[i] = f32_to_bf16(x[i]);
  for (std::size_t i = k; i < k_padded; ++i) o[i] = 0;
}

void linear_tile(const LinearTile& t) {
  const std::uint16_t* w = static_cast<const std::uint16_t*>(t.w);
  const std::uint16_t* x = static_cast<const std::uint16_t*>(t.x);
  float sums[kMR * kNR];
  for (std::size_t n0 = 0; n0 < t.n; n0 += kNR) {
    const std::size_t nr = t.n - n0 < kNR ? t.n - n0 : kNR;
    for (std::size_t m0 = 0; m0 < t.m; m0 += kMR) {
      const std::size_t mr = t.m - m0 < kMR ? t.m - m0 : kMR;
      pick(mr, nr)(x + m0 * t.x_stride, t.x_stride, w + n0 * t.k, t.k, sums);
      for (std::size_t i = 0; i < mr; ++i) {
        float* y = t.y + (m0 + i) * t.ldy + n0;
        for (std::size_t j = 0; j < nr; ++j) {
          float v = sums[i * nr + j];
          if (t.bias) v += element_as_f32(t.bias, t.bias_dtype, n0 + j);
          y[j] = t.accumulate ? y[j] + v : v;
        }
      }
    }
  }
}

}  // namespace zipmoe::kernels::avx512bf16

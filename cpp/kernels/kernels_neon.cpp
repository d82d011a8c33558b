// AArch64 Advanced SIMD kernels: 4 floats per vector; tails through a
// zero-padded copy. BF16 widens with a shift-long (SHLL) or, for linear-layer
// weights, a shift and a mask; F16 with FCVTL.
#include <arm_neon.h>
#include <math.h>

#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/canonical.h"
#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

namespace zipmoe::kernels::neon {

namespace {

struct V {
  using F = float32x4_t;
  static constexpr std::size_t kWidth = 4;

  static F rounded(F v) {
    __asm__("" : "+w"(v));
    return v;
  }
  static F zero() { return vdupq_n_f32(0.0f); }
  static F set1(float v) { return vdupq_n_f32(v); }
  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_partial(const float* p, std::size_t n) {
    float buffer[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(buffer, p, n * sizeof(float));
    return vld1q_f32(buffer);
  }
  static void store_partial(float* p, F v, std::size_t n) {
    float buffer[4];
    vst1q_f32(buffer, v);
    std::memcpy(p, buffer, n * sizeof(float));
  }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static F max(F a, F b) { return vmaxq_f32(a, b); }
  static F min(F a, F b) { return vminq_f32(a, b); }
  // (v0 + v2) + (v1 + v3): the halving of canonical.h, as on the x86 paths.
  static float hsum(F v) {
    const float32x2_t h = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(h, h), 0);
  }
  // [a0 + a2, a1 + a3, b0 + b2, b1 + b3]
  static F halves(F a, F b) {
    return vaddq_f32(vcombine_f32(vget_low_f32(a), vget_low_f32(b)), vcombine_f32(vget_high_f32(a), vget_high_f32(b)));
  }
  // Four hsums through the same additions: the halves of a and b (and of c and d)
  // are added side by side, then pairwise.
  static void hsum4(F a, F b, F c, F d, float* out) {
    vst1q_f32(out, vpaddq_f32(halves(a, b), halves(c, d)));
  }
  static float hmax(F v) { return vmaxvq_f32(v); }
  static F round(F v) { return vrndnq_f32(v); }
  static F pow2_scale(F p, F n) {
    const int32x4_t ni = vcvtq_s32_f32(n);
    const int32x4_t half = vshrq_n_s32(ni, 1);
    const int32x4_t rest = vsubq_s32(ni, half);
    const int32x4_t bias = vdupq_n_s32(127);
    const F a = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(half, bias), 23));
    const F b = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(rest, bias), 23));
    return vmulq_f32(vmulq_f32(p, a), b);
  }
  static F zero_where_less(F v, F x, F threshold) { return vbslq_f32(vcgeq_f32(x, threshold), v, zero()); }

  template <DType D>
  static constexpr std::size_t dtype_bytes() {
    return D == DType::kF32 ? 4 : 2;
  }

  template <DType D>
  static F load_f32(const void* p) {
    if constexpr (D == DType::kF32) {
      return vld1q_f32(static_cast<const float*>(p));
    } else {
      const uint16x4_t h = vld1_u16(static_cast<const std::uint16_t*>(p));
      if constexpr (D == DType::kBF16) return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
      else return vcvt_f32_f16(vreinterpret_f16_u16(h));
    }
  }
  template <DType D>
  static F load_f32_partial(const void* p, std::size_t n) {
    alignas(16) std::uint8_t buffer[16] = {};
    std::memcpy(buffer, p, n * dtype_bytes<D>());
    return load_f32<D>(buffer);
  }

  // 8 weights: BF16 splits into even/odd elements (a shift and a mask of the
  // 32-bit pairs, as on x86); F16 and F32 stay in order.
  template <DType D>
  static void load_chunk(const void* p, F& a, F& b) {
    if constexpr (D == DType::kF32) {
      const float* f = static_cast<const float*>(p);
      a = vld1q_f32(f);
      b = vld1q_f32(f + 4);
    } else if constexpr (D == DType::kBF16) {
      const uint32x4_t pairs = vld1q_u32(static_cast<const std::uint32_t*>(p));
      a = vreinterpretq_f32_u32(vshlq_n_u32(pairs, 16));
      b = vreinterpretq_f32_u32(vandq_u32(pairs, vdupq_n_u32(0xffff0000u)));
    } else {
      const float16x8_t f = vreinterpretq_f16_u16(vld1q_u16(static_cast<const std::uint16_t*>(p)));
      a = vcvt_f32_f16(vget_low_f16(f));
      b = vcvt_high_f32_f16(f);
    }
  }
  template <DType D>
  static void load_chunk_partial(const void* p, std::size_t n, F& a, F& b) {
    alignas(16) std::uint8_t buffer[8 * 4] = {};
    std::memcpy(buffer, p, n * dtype_bytes<D>());
    load_chunk<D>(buffer, a, b);
  }

  static InputLayout input_layout(DType d) {
    return d == DType::kBF16 ? InputLayout::kF32EvenOdd : InputLayout::kF32;
  }
};

// 32 registers: 4 x 4 outputs take 16 accumulators + 8 widened weights + 2 inputs.
constexpr int kLinearMR = 4;
constexpr int kLinearNR = 4;
constexpr int kMatvecNR = 8;
// kExact keeps each output's 16 canonical lanes in 4 accumulators: 2 x 2 outputs
// take 16 of them, M = 1 steps 4 rows, attention 4 heads per pass (16).
constexpr int kExactLinearMR = 2;
constexpr int kExactLinearNR = 2;
constexpr int kExactMatvecNR = 4;
constexpr int kExactAttentionHeads = 4;

constexpr bool kAttentionWideTiles = true;

#include "kernels/kernels_simd.inc"

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::neon

// AArch64 Advanced SIMD kernels: 4 floats per vector; tails through a
// zero-padded copy. BF16 widens with a shift-long (SHLL), F16 with FCVTL.
#include <arm_neon.h>
#include <math.h>

#include <cstring>

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
  // (v0 + v1) + (v2 + v3), spelled out so that hsum4 provably matches it.
  static float hsum(F v) {
    const F p = vpaddq_f32(v, v);
    return vgetq_lane_f32(vpaddq_f32(p, p), 0);
  }
  static void hsum4(F a, F b, F c, F d, float* out) { vst1q_f32(out, vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d))); }
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

  // 8 weights, in order.
  template <DType D>
  static void load_chunk(const void* p, F& a, F& b) {
    if constexpr (D == DType::kF32) {
      const float* f = static_cast<const float*>(p);
      a = vld1q_f32(f);
      b = vld1q_f32(f + 4);
    } else {
      const uint16x8_t h = vld1q_u16(static_cast<const std::uint16_t*>(p));
      if constexpr (D == DType::kBF16) {
        a = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        b = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
      } else {
        const float16x8_t f = vreinterpretq_f16_u16(h);
        a = vcvt_f32_f16(vget_low_f16(f));
        b = vcvt_high_f32_f16(f);
      }
    }
  }
  template <DType D>
  static void load_chunk_partial(const void* p, std::size_t n, F& a, F& b) {
    alignas(16) std::uint8_t buffer[8 * 4] = {};
    std::memcpy(buffer, p, n * dtype_bytes<D>());
    load_chunk<D>(buffer, a, b);
  }

  static InputLayout input_layout(DType) { return InputLayout::kF32; }
};

// 32 registers: 4 x 4 outputs take 16 accumulators + 8 widened weights + 2 inputs.
constexpr int kLinearMR = 4;
constexpr int kLinearNR = 4;
constexpr int kMatvecNR = 8;

constexpr bool kAttentionWideTiles = true;

#include "kernels/kernels_simd.inc"

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::neon

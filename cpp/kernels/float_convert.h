// Scalar BF16/F16 <-> F32 conversions shared by every kernel variant.
//
// Everything here has internal linkage (anonymous namespace) because ISA-specific
// files include it: an external inline function compiled with AVX-512 flags could
// otherwise be the copy the linker keeps for the generic path.
#pragma once

#include <cstdint>
#include <cstring>

#include "zipmoe/types.h"

namespace zipmoe::kernels {
namespace {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

// IEEE binary16 to binary32, exact for every input (subnormals included; NaN
// payloads kept in the top mantissa bits).
inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in binary32.
    return bits_float(float_bits(static_cast<float>(mantissa) * 5.9604644775390625e-8f) | sign);
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Round-to-nearest-even; NaN stays NaN and becomes quiet.
inline std::uint16_t f32_to_bf16(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Round-to-nearest-even; overflow gives inf, NaN stays NaN and becomes quiet.
inline std::uint16_t f32_to_f16(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {
    // Result is subnormal (or rounds up to the smallest normal): count units of
    // 2^-24 exactly, then round half to even by hand.
    if (magnitude <= 0x33000000u) return static_cast<std::uint16_t>(sign);  // <= 2^-25 rounds to 0
    const std::uint32_t exponent = magnitude >> 23;                        // 102 .. 112
    const std::uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - exponent;                            // 14 .. 24
    std::uint32_t units = significand >> shift;
    const std::uint32_t rest = significand & ((1u << shift) - 1);
    const std::uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (units & 1u))) ++units;
    return static_cast<std::uint16_t>(sign | units);
  }
  std::uint32_t h = (magnitude >> 13) - (112u << 10);
  const std::uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<std::uint16_t>(sign | h);
}

// `v` as rounded to float, hidden from the optimizer: GCC contracts a * b + c
// into an FMA wherever the target has one (its default for C++), which would make
// products that must round separately (RoPE, add_scaled) depend on the ISA.
inline float separately_rounded(float v) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__("" : "+x"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}

// One element of a stored tensor as F32.
inline float element_as_f32(const void* data, DType dtype, std::size_t index) {
  switch (dtype) {
    case DType::kBF16: return bf16_to_f32(static_cast<const std::uint16_t*>(data)[index]);
    case DType::kF16: return f16_to_f32(static_cast<const std::uint16_t*>(data)[index]);
    default: return static_cast<const float*>(data)[index];
  }
}

inline void convert_row_to_f32(DType dtype, const void* src, float* out, std::size_t n) {
  if (dtype == DType::kF32) {
    std::memcpy(out, src, n * sizeof(float));
  } else if (dtype == DType::kBF16) {
    const std::uint16_t* s = static_cast<const std::uint16_t*>(src);
    for (std::size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(s[i]);
  } else {
    const std::uint16_t* s = static_cast<const std::uint16_t*>(src);
    for (std::size_t i = 0; i < n; ++i) out[i] = f16_to_f32(s[i]);
  }
}

inline void convert_row_from_f32(DType dtype, const float* src, void* out, std::size_t n) {
  if (dtype == DType::kF32) {
    std::memmove(out, src, n * sizeof(float));
  } else if (dtype == DType::kBF16) {
    std::uint16_t* o = static_cast<std::uint16_t*>(out);
    for (std::size_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
  } else {
    std::uint16_t* o = static_cast<std::uint16_t*>(out);
    for (std::size_t i = 0; i < n; ++i) o[i] = f32_to_f16(src[i]);
  }
}

}  // namespace
}  // namespace zipmoe::kernels

// Deterministic test inputs shared by the C++ tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "zipmoe/types.h"

namespace ztest {

inline std::uint16_t f32_to_bf16_rne(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40);  // quiet NaN
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

// n elements of `dtype` (as raw bytes) drawn from N(0, sigma), with every kind of
// special value sprinkled in when `specials` is set: NaNs with payloads, +-inf,
// subnormals, +-0, the largest and smallest normals.
inline std::vector<std::uint8_t> make_weights(zipmoe::DType dtype, std::size_t n, std::uint32_t seed,
                                              double sigma = 0.02, bool specials = true) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, static_cast<float>(sigma));
  std::vector<std::uint8_t> out(n * zipmoe::dtype_size(dtype));
  static const std::uint16_t special16[] = {0x7fc0, 0xffc1, 0x7f81, 0x7f80, 0xff80, 0x0001, 0x8001, 0x007f,
                                            0x0000, 0x8000, 0x7f7f, 0xff7f, 0x0080, 0x7c00, 0xfc00, 0x7e01};
  static const std::uint32_t special32[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u,
                                            0x00000001u, 0x80000001u, 0x007fffffu, 0x00000000u, 0x80000000u,
                                            0x7f7fffffu, 0xff7fffffu, 0x00800000u, 0x7fbfffffu};
  std::uniform_int_distribution<int> pick(0, 99);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = normal(rng);
    const bool special = specials && pick(rng) == 0;
    if (dtype == zipmoe::DType::kF32) {
      std::uint32_t x;
      std::memcpy(&x, &v, 4);
      if (special) x = special32[rng() % (sizeof(special32) / 4)];
      std::memcpy(&out[4 * i], &x, 4);
    } else {
      std::uint16_t x = dtype == zipmoe::DType::kBF16 ? f32_to_bf16_rne(v) : 0;
      if (dtype == zipmoe::DType::kF16) {
        // F16 via the bit pattern of a half: build from float by truncation of a scaled value.
        const float a = std::fabs(v);
        int e;
        const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
        int biased = e - 1 + 15;
        std::uint16_t bits = 0;
        if (a == 0.0f) {
          bits = 0;
        } else if (biased <= 0) {
          bits = static_cast<std::uint16_t>(std::ldexp(a, 24));  // subnormal
        } else if (biased >= 31) {
          bits = 0x7bff;
        } else {
          bits = static_cast<std::uint16_t>((biased << 10) | (static_cast<int>((m * 2.0f - 1.0f) * 1024.0f) & 0x3ff));
        }
        x = static_cast<std::uint16_t>(bits | (v < 0 ? 0x8000 : 0));
      }
      if (special) x = special16[rng() % (sizeof(special16) / 2)];
      std::memcpy(&out[2 * i], &x, 2);
    }
  }
  return out;
}

// Every 16-bit pattern once (65536 elements).
inline std::vector<std::uint8_t> all_16bit_patterns() {
  std::vector<std::uint8_t> out(65536 * 2);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const std::uint16_t v = static_cast<std::uint16_t>(i);
    std::memcpy(&out[2 * i], &v, 2);
  }
  return out;
}

}  // namespace ztest

// The canonical evaluation order: one definition of every sum and of exp that
// each ISA path implements exactly, so that results are bit-identical on every
// path (MatmulPrecision::kExact for the linear layers and attention; always for
// norms, softmax and the activations).
//
// Sums. A sum over elements i = 0 .. n-1 is kept in kCanonicalLanes = 16
// partial sums (lanes), each fed in increasing i, starting from +0:
//   lane(i) = i mod 16                for norms, softmax, attention and the
//                                     linear layers with F32/F16 weights;
//   lane(i) = (i mod 32) / 2          for linear layers with BF16 weights (pairs
//                                     of neighbours share a lane, which lets a
//                                     vector of BF16 weights widen into its even
//                                     and odd elements without lane permutes).
// A dot product feeds each lane with fma(x_i, w_i, lane); other sums use add.
// The lanes are then combined by halving: lane[l] + lane[l + 8] for l < 8, then
// l + 4, l + 2, l + 1 (lane 0 holds the sum). A 16-wide vector holds the lanes
// as they are; an 8-wide one keeps them in 2 accumulators (lanes 0-7, 8-15), a
// 4-wide one in 4; padding elements past n are zeros, which leave a lane
// unchanged (a lane that starts at +0 can never become -0).
//
// exp(x): exactly 0 for x < -104 and for NaN; otherwise with c = min(x, 89),
// n = round-to-even(c * log2(e)), r = c - n * ln2 in two fma steps (Cody-Waite),
// a degree-6 polynomial p(r) by fma (the Cephes expf coefficients),
// e = fma(p, r * r, r) + 1, and the result e * 2^n, rounded once (any
// subnormal result included). Within 1e-6 relative of the true exp on
// [-87, 88]; +inf from 88.73.
//
// Nothing here depends on the C library or on the compiler contracting a * b + c
// (every fused operation is written as one). Like float_convert.h, everything has
// internal linkage because ISA-specific files include it, and is inlined into
// each caller so that each gets the fma instruction where its target has one.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/float_convert.h"

namespace zipmoe::kernels {
namespace {

constexpr std::size_t kCanonicalLanes = 16;

// Combines 16 lanes by halving and returns the sum (lanes are overwritten).
__attribute__((always_inline)) inline float combine_lanes(float* lanes) {
  for (std::size_t width = kCanonicalLanes / 2; width > 0; width /= 2) {
    for (std::size_t l = 0; l < width; ++l) lanes[l] = lanes[l] + lanes[l + width];
  }
  return lanes[0];
}

// p * 2^n for integral n in [-150, 128] with one rounding: p * 2^(n/2) is exact
// (p is near 1, so the product is a normal float), the second product rounds.
__attribute__((always_inline)) inline float canonical_pow2_scale(float p, std::int32_t n) {
  const std::int32_t half = n >= 0 ? n / 2 : -((1 - n) / 2);  // floor(n / 2)
  const std::int32_t rest = n - half;
  const float a = bits_float(static_cast<std::uint32_t>(half + 127) << 23);
  const float b = bits_float(static_cast<std::uint32_t>(rest + 127) << 23);
  return separately_rounded(p * a) * b;
}

__attribute__((always_inline)) inline float canonical_exp(float x) {
  if (!(x >= -104.0f)) return 0.0f;
  const float c = x < 89.0f ? x : 89.0f;
  const float n = std::nearbyint(separately_rounded(c * 1.44269504088896341f));
  float r = std::fma(n, -0.693359375f, c);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float e = std::fma(p, separately_rounded(r * r), r) + 1.0f;
  return canonical_pow2_scale(e, static_cast<std::int32_t>(n));
}

// 1 / (1 + exp(-x)), written as the vector paths compute it (0 - x, not -x:
// they differ only in the sign of a zero, which exp ignores).
__attribute__((always_inline)) inline float canonical_sigmoid(float x) { return 1.0f / (1.0f + canonical_exp(0.0f - x)); }

}  // namespace
}  // namespace zipmoe::kernels

// Bit planes: how a float element is cut into a coded "exponent" symbol and raw
// sign/mantissa bits, and the exact inverse.
//
//   BF16  s eeeeeeee mmmmmmm          symbol = bits 14..7 (the exponent)
//                                     sm     = s<<7 | bits 6..0
//   F16   s eeeee mmmmmmmmmm          symbol = bits 14..7 (5 exponent bits and the top
//                                              3 mantissa bits); sm = s<<7 | bits 6..0
//   F32   s eeeeeeee m(23)            symbol = bits 30..23 (the exponent)
//                                     sm     = s<<7 | bits 22..16, then bits 15..0
//   U8    bbbbbbbb                    symbol = the byte; no sm
//
// For 16-bit types the split is the same bit operation: the middle byte is coded,
// the sign and the low 7 bits are stored raw. F16 keeps 3 mantissa bits in its
// symbol so that both planes stay byte-aligned; those bits are near-uniform and
// cost the coder what they would cost raw.
//
// The sign/mantissa (SM) plane of n elements is n bytes for 16-bit types; for F32
// it is n "high" bytes followed by n little-endian 16-bit words (2n bytes), so
// that the high part merges exactly like BF16.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/cpu_features.h"
#include "zipmoe/types.h"

namespace zipmoe::codec {

// Bytes of SM plane per element: 1 for BF16/F16, 3 for F32, 0 for U8.
inline std::size_t sm_bytes_per_element(DType dtype) {
  return dtype == DType::kF32 ? 3 : dtype == DType::kU8 ? 0 : 1;
}

// Splits n elements into n symbols and the SM plane (sm_bytes_per_element(dtype) * n bytes).
// Either output may be null to produce only the other plane.
void split_planes(DType dtype, const void* elements, std::size_t n, std::uint8_t* symbols, std::uint8_t* sm);

// Where decoded symbols go. A decoder fills elements [offset, offset + count) of
// the target by merging symbols with the SM plane; with `dtype_or_symbols` false
// it stores the bare symbols (used by tests, fuzzers and statistics).
struct MergeTarget {
  bool merge = true;             // false: write bare symbols to `out` (uint8_t[])
  DType dtype = DType::kBF16;
  const std::uint8_t* sm_hi = nullptr;  // SM bytes of element 0 of this target
  const std::uint8_t* sm_lo = nullptr;  // F32 only: low 16-bit words of element 0 (2 bytes each)
  void* out = nullptr;                  // element 0 of this target

  // The same target seen from element `offset` on.
  MergeTarget advanced(std::size_t offset) const;
};

// Builds the target of a whole tensor of n elements whose SM plane is `sm`
// (for U8, whose bytes are its symbols, a symbol target).
MergeTarget make_merge_target(DType dtype, const std::uint8_t* sm, std::size_t n, void* out);
MergeTarget make_symbol_target(std::uint8_t* symbols_out);

// One implementation per ISA, all bit-identical. merge_into writes elements
// [offset, offset + count) of the target from count symbols.
#define ZIPMOE_DECLARE_PLANE_KERNELS(ns)                                                        \
  namespace ns {                                                                                \
  void merge16(const std::uint8_t* symbols, const std::uint8_t* sm, std::uint16_t* out,        \
               std::size_t n);                                                                  \
  void merge32(const std::uint8_t* symbols, const std::uint8_t* sm_hi, const std::uint8_t* sm_lo, \
               std::uint32_t* out, std::size_t n);                                              \
  void merge_into(const MergeTarget& target, std::size_t offset, const std::uint8_t* symbols,  \
                  std::size_t count);                                                           \
  }

ZIPMOE_DECLARE_PLANE_KERNELS(scalar)
#if defined(ZIPMOE_ARCH_X86)
ZIPMOE_DECLARE_PLANE_KERNELS(avx2)
ZIPMOE_DECLARE_PLANE_KERNELS(avx512)
#endif
#if defined(ZIPMOE_ARCH_ARM64)
ZIPMOE_DECLARE_PLANE_KERNELS(neon)
#endif

// Dispatching entry point (isa must be supported).
void merge_into(Isa isa, const MergeTarget& target, std::size_t offset, const std::uint8_t* symbols,
                std::size_t count);

}  // namespace zipmoe::codec

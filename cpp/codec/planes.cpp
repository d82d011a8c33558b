#include "codec/planes.h"

#include <cstring>

namespace zipmoe::codec {

void split_planes(DType dtype, const void* elements, std::size_t n, std::uint8_t* symbols, std::uint8_t* sm) {
  // Each plane is produced by its own simple loop so that the compiler vectorizes it.
  if (dtype == DType::kU8) {
    if (symbols && n) std::memcpy(symbols, elements, n);
    return;
  }
  if (dtype == DType::kF32) {
    const std::uint32_t* v = static_cast<const std::uint32_t*>(elements);
    if (symbols) {
      for (std::size_t i = 0; i < n; ++i) symbols[i] = static_cast<std::uint8_t>(v[i] >> 23);
    }
    if (sm) {
      std::uint8_t* lo = sm + n;
      for (std::size_t i = 0; i < n; ++i) {
        sm[i] = static_cast<std::uint8_t>(((v[i] >> 24) & 0x80) | ((v[i] >> 16) & 0x7f));
      }
      for (std::size_t i = 0; i < n; ++i) {
        lo[2 * i] = static_cast<std::uint8_t>(v[i]);
        lo[2 * i + 1] = static_cast<std::uint8_t>(v[i] >> 8);
      }
    }
    return;
  }
  const std::uint16_t* v = static_cast<const std::uint16_t*>(elements);
  if (symbols) {
    for (std::size_t i = 0; i < n; ++i) symbols[i] = static_cast<std::uint8_t>(v[i] >> 7);
  }
  if (sm) {
    for (std::size_t i = 0; i < n; ++i) sm[i] = static_cast<std::uint8_t>(((v[i] >> 8) & 0x80) | (v[i] & 0x7f));
  }
}

MergeTarget MergeTarget::advanced(std::size_t offset) const {
  MergeTarget t = *this;
  if (!merge) {
    t.out = static_cast<std::uint8_t*>(out) + offset;
    return t;
  }
  t.sm_hi = sm_hi + offset;
  if (dtype == DType::kF32) {
    t.sm_lo = sm_lo + 2 * offset;
    t.out = static_cast<std::uint32_t*>(out) + offset;
  } else {
    t.out = static_cast<std::uint16_t*>(out) + offset;
  }
  return t;
}

MergeTarget make_merge_target(DType dtype, const std::uint8_t* sm, std::size_t n, void* out) {
  if (dtype == DType::kU8) return make_symbol_target(static_cast<std::uint8_t*>(out));
  MergeTarget t;
  t.merge = true;
  t.dtype = dtype;
  t.sm_hi = sm;
  t.sm_lo = dtype == DType::kF32 ? sm + n : nullptr;
  t.out = out;
  return t;
}

MergeTarget make_symbol_target(std::uint8_t* symbols_out) {
  MergeTarget t;
  t.merge = false;
  t.out = symbols_out;
  return t;
}

void merge_into(Isa isa, const MergeTarget& target, std::size_t offset, const std::uint8_t* symbols,
                std::size_t count) {
  switch (isa) {
#if defined(ZIPMOE_ARCH_X86)
    case Isa::kAvx2: return avx2::merge_into(target, offset, symbols, count);
    case Isa::kAvx512: return avx512::merge_into(target, offset, symbols, count);
#endif
#if defined(ZIPMOE_ARCH_ARM64)
    case Isa::kNeon: return neon::merge_into(target, offset, symbols, count);
#endif
    default: return scalar::merge_into(target, offset, symbols, count);
  }
}

}  // namespace zipmoe::codec

// Writing one decoded symbol as its final element: the device twin of
// merge16/merge32 in cpp/codec/planes_scalar.cpp (bit-identical by definition:
// the host test compares every kernel's output with the CPU decoder's).
#pragma once

#include <cstdint>

#include "cuda/decode_layout.cuh"
#include "cuda/simt.cuh"

namespace zipmoe::cuda {

struct OutputView {
  std::uint32_t kind;  // OutputKind
  const std::uint8_t* sm_hi;
  const std::uint8_t* sm_lo;
  void* out;
};

ZIPMOE_HD OutputView output_view(const PlaneArgs& plane) {
  return OutputView{plane.output_kind, plane.sm_hi, plane.sm_lo, plane.out};
}

ZIPMOE_HD std::uint16_t merge16_element(std::uint32_t symbol, std::uint32_t sm) {
  return static_cast<std::uint16_t>(((sm & 0x80u) << 8) | (symbol << 7) | (sm & 0x7fu));
}

ZIPMOE_HD std::uint32_t merge32_element(std::uint32_t symbol, std::uint32_t sm, std::uint32_t low16) {
  return ((sm & 0x80u) << 24) | (symbol << 23) | ((sm & 0x7fu) << 16) | low16;
}

// Element `index` of the plane (index < num_symbols, checked by the caller).
ZIPMOE_HD void put_element(const OutputView& view, std::uint64_t index, std::uint32_t symbol) {
  switch (view.kind) {
    case kOutputMerge16:
      static_cast<std::uint16_t*>(view.out)[index] = merge16_element(symbol, view.sm_hi[index]);
      break;
    case kOutputMerge32: {
      const std::uint32_t low16 = std::uint32_t(view.sm_lo[2 * index]) | (std::uint32_t(view.sm_lo[2 * index + 1]) << 8);
      static_cast<std::uint32_t*>(view.out)[index] = merge32_element(symbol, view.sm_hi[index], low16);
      break;
    }
    default:
      static_cast<std::uint8_t*>(view.out)[index] = static_cast<std::uint8_t>(symbol);
      break;
  }
}

// Raw and constant planes: thread `thread` of kFillBlockThreads writes every
// kFillBlockThreads-th element of slice `job`.
ZIPMOE_HD void fill_slice(const BatchArgs& batch, std::uint64_t job, unsigned thread) {
  const FillSliceArgs& slice = batch.fill_slices[job];
  const PlaneArgs& plane = batch.planes[slice.plane];
  const OutputView out = output_view(plane);
  const std::uint8_t* symbols = plane.data + slice.symbols_offset;
  for (std::uint64_t i = thread; i < slice.count; i += kFillBlockThreads) {
    const std::uint64_t element = slice.first_element + i;
    const std::uint32_t symbol = slice.constant ? (slice.constant & 0xffu) : symbols[element];
    put_element(out, element, symbol);
  }
}

}  // namespace zipmoe::cuda

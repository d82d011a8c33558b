#include <cstring>
#include <vector>

#include "codec/planes.h"
#include "test_data.h"
#include "test_framework.h"

using zipmoe::DType;
using zipmoe::Isa;

namespace {

// Splits, merges back with every supported ISA and compares with the input.
void check_round_trip(DType dtype, const std::vector<std::uint8_t>& elements) {
  const std::size_t n = elements.size() / zipmoe::dtype_size(dtype);
  std::vector<std::uint8_t> symbols(n), sm(n * zipmoe::codec::sm_bytes_per_element(dtype));
  zipmoe::codec::split_planes(dtype, elements.data(), n, symbols.data(), sm.data());
  for (Isa isa : zipmoe::supported_isas()) {
    // Odd offsets and counts exercise the vector tails.
    for (std::size_t offset : {std::size_t(0), std::size_t(3)}) {
      if (offset > n) continue;
      std::vector<std::uint8_t> out(elements.size(), 0xAB);
      const auto target = zipmoe::codec::make_merge_target(dtype, sm.data(), n, out.data());
      if (offset) zipmoe::codec::merge_into(isa, target, 0, symbols.data(), offset);
      zipmoe::codec::merge_into(isa, target, offset, symbols.data() + offset, n - offset);
      if (out != elements) {
        std::fprintf(stderr, "  isa %s dtype %s offset %zu\n", zipmoe::isa_name(isa), zipmoe::dtype_name(dtype), offset);
      }
      ZCHECK(out == elements);
    }
  }
}

}  // namespace

ZTEST(planes_round_trip_every_16bit_pattern) {
  const auto all = ztest::all_16bit_patterns();
  check_round_trip(DType::kBF16, all);
  check_round_trip(DType::kF16, all);
}

ZTEST(planes_round_trip_random_with_specials) {
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (std::size_t n : {0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 1000, 4099}) {
      check_round_trip(dtype, ztest::make_weights(dtype, n, static_cast<std::uint32_t>(n) + 11));
    }
  }
}

ZTEST(planes_split_layout_is_documented_one) {
  // BF16 -1.5 = 0xBFC0: sign 1, exponent 0x7F, mantissa 0x40.
  const std::uint16_t bf = 0xBFC0;
  std::uint8_t sym, sm;
  zipmoe::codec::split_planes(DType::kBF16, &bf, 1, &sym, &sm);
  ZCHECK_EQ(sym, 0x7F);
  ZCHECK_EQ(sm, 0xC0);
  // F32 -1.5f = 0xBFC00000 plus low bits 0x1234.
  const std::uint32_t f = 0xBFC01234u;
  std::uint8_t sym32, sm32[3];
  zipmoe::codec::split_planes(DType::kF32, &f, 1, &sym32, sm32);
  ZCHECK_EQ(sym32, 0x7F);
  ZCHECK_EQ(sm32[0], 0xC0);
  ZCHECK_EQ(sm32[1], 0x34);
  ZCHECK_EQ(sm32[2], 0x12);
}

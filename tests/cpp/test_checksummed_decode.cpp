// CodedPlane::decode_checksummed: the checksums it gathers while decoding equal
// the CRC-32C of the planes, on every codec, dtype, ISA and thread count, and on
// damaged planes it fails exactly where the plain decode fails, reading nothing
// outside the plane.
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/lz4hc/lz4hc.h"
#include "codec/planes.h"
#include "common/checksum.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/thread_pool.h"

using zipmoe::Codec;
using zipmoe::DType;
using zipmoe::Isa;
namespace codec = zipmoe::codec;

namespace {

struct Planes {
  std::vector<std::uint8_t> coded;
  std::vector<std::uint8_t> sm;
};

Planes make_planes(const std::vector<std::uint8_t>& elements, DType dtype, Codec c, std::uint32_t segment_symbols) {
  const std::size_t n = elements.size() / zipmoe::dtype_size(dtype);
  std::vector<std::uint8_t> symbols(n);
  Planes p;
  p.sm.resize(n * codec::sm_bytes_per_element(dtype));
  codec::split_planes(dtype, elements.data(), n, symbols.data(), p.sm.data());
  codec::EncodeOptions options;
  options.codec = c;
  options.segment_symbols = segment_symbols;
  ZCHECK(codec::encode_plane(symbols.data(), n, options, nullptr, &p.coded).ok());
  return p;
}

std::vector<Codec> codecs() {
  std::vector<Codec> out = {Codec::kRaw, Codec::kHuffman, Codec::kRans};
  if (codec::lz4hc_available()) out.push_back(Codec::kLz4hc);
  return out;
}

}  // namespace

ZTEST(checksummed_decode_matches_crc_of_both_planes_everywhere) {
  zipmoe::ThreadPool pool(3);
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (std::size_t n : {0, 1, 7, 63, 64, 65, 1000, 4099, 70001}) {
      const auto elements = ztest::make_weights(dtype, n, static_cast<std::uint32_t>(n) + 5);
      for (Codec c : codecs()) {
        for (std::uint32_t seg : {997u, codec::kDefaultSegmentSymbols}) {
          const Planes p = make_planes(elements, dtype, c, seg);
          codec::CodedPlane plane;
          ZCHECK(codec::CodedPlane::parse(p.coded.data(), p.coded.size(), &plane).ok());
          const std::uint32_t want_coded = zipmoe::crc32c(p.coded.data(), p.coded.size());
          const std::uint32_t want_sm = zipmoe::crc32c(p.sm.data(), p.sm.size());
          for (Isa isa : zipmoe::supported_isas()) {
            for (zipmoe::ThreadPool* threads : {static_cast<zipmoe::ThreadPool*>(nullptr), &pool}) {
              std::vector<std::uint8_t> out(elements.size() + 1, 0xCD);  // one guard byte
              const auto target = codec::make_merge_target(dtype, p.sm.data(), n, out.data());
              codec::CodedPlane::Checksums sums;
              ZCHECK(plane.decode_checksummed(target, threads, isa, &sums).ok());
              const bool exact = std::memcmp(out.data(), elements.data(), elements.size()) == 0;
              if (!exact || sums.coded_plane != want_coded || sums.sm_plane != want_sm) {
                std::fprintf(stderr, "  dtype %s n %zu codec %s seg %u isa %s threads %d\n", zipmoe::dtype_name(dtype),
                             n, zipmoe::codec_name(plane.codec()), seg, zipmoe::isa_name(isa), threads ? 3 : 1);
              }
              ZCHECK(exact);
              ZCHECK_EQ(out.back(), 0xCD);
              ZCHECK_EQ(sums.coded_plane, want_coded);
              ZCHECK_EQ(sums.sm_plane, want_sm);
            }
          }
        }
      }
    }
  }
}

ZTEST(checksummed_decode_of_a_constant_plane) {
  std::vector<std::uint8_t> elements(2 * 5000);
  for (std::size_t i = 0; i < 5000; ++i) {
    const std::uint16_t v = static_cast<std::uint16_t>(0x3c00 | (i & 0x7f) | ((i & 1) << 15));
    std::memcpy(&elements[2 * i], &v, 2);
  }
  const Planes p = make_planes(elements, DType::kBF16, Codec::kAuto, 1024);
  codec::CodedPlane plane;
  ZCHECK(codec::CodedPlane::parse(p.coded.data(), p.coded.size(), &plane).ok());
  ZCHECK(plane.codec() == Codec::kConstant);
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<std::uint8_t> out(elements.size());
    codec::CodedPlane::Checksums sums;
    ZCHECK(plane.decode_checksummed(codec::make_merge_target(DType::kBF16, p.sm.data(), 5000, out.data()), nullptr,
                                    isa, &sums)
               .ok());
    ZCHECK(out == elements);
    ZCHECK_EQ(sums.coded_plane, zipmoe::crc32c(p.coded.data(), p.coded.size()));
    ZCHECK_EQ(sums.sm_plane, zipmoe::crc32c(p.sm.data(), p.sm.size()));
  }
}

// Damaged payloads (bit flips, and bytes moved between streams through the size
// fields): the checksummed decoders accept and reject exactly what the plain ones
// do, decode the same elements when they accept, and read only inside the plane,
// which lives in an allocation of its exact size (a sanitizer build checks that).
ZTEST(checksummed_decode_fails_like_the_plain_decode_on_damaged_planes) {
  const std::size_t n = 9000;
  const auto elements = ztest::make_weights(DType::kBF16, n, 77);
  std::mt19937 rng(78);
  for (Codec c : {Codec::kHuffman, Codec::kRans}) {
    const Planes p = make_planes(elements, DType::kBF16, c, 2500);
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<std::uint8_t> damaged = p.coded;
      const std::size_t flips = 1 + rng() % 3;
      for (std::size_t f = 0; f < flips; ++f) {
        // Past the 24-byte header, so that the framing mostly parses and the decoders run.
        const std::size_t at = 24 + rng() % (damaged.size() - 24);
        damaged[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      }
      std::unique_ptr<std::uint8_t[]> exact(new std::uint8_t[damaged.size()]);
      std::memcpy(exact.get(), damaged.data(), damaged.size());
      codec::CodedPlane plane;
      if (!codec::CodedPlane::parse(exact.get(), damaged.size(), &plane).ok()) continue;
      for (Isa isa : zipmoe::supported_isas()) {
        std::vector<std::uint8_t> plain_out(2 * n), summed_out(2 * n);
        const zipmoe::Status plain =
            plane.decode(codec::make_merge_target(DType::kBF16, p.sm.data(), n, plain_out.data()), nullptr, isa);
        codec::CodedPlane::Checksums sums;
        const zipmoe::Status summed = plane.decode_checksummed(
            codec::make_merge_target(DType::kBF16, p.sm.data(), n, summed_out.data()), nullptr, isa, &sums);
        ZCHECK_EQ(plain.ok(), summed.ok());
        if (plain.ok() && summed.ok()) {
          ZCHECK(plain_out == summed_out);
          ZCHECK_EQ(sums.coded_plane, zipmoe::crc32c(damaged.data(), damaged.size()));
          ZCHECK(sums.coded_plane != zipmoe::crc32c(p.coded.data(), p.coded.size()));
        }
      }
    }
  }
}

ZTEST(checksummed_decode_needs_a_merging_target) {
  const auto elements = ztest::make_weights(DType::kBF16, 100, 3);
  const Planes p = make_planes(elements, DType::kBF16, Codec::kHuffman, 1000);
  codec::CodedPlane plane;
  ZCHECK(codec::CodedPlane::parse(p.coded.data(), p.coded.size(), &plane).ok());
  std::vector<std::uint8_t> symbols(100);
  codec::CodedPlane::Checksums sums;
  ZCHECK(!plane.decode_checksummed(codec::make_symbol_target(symbols.data()), nullptr, Isa::kScalar, &sums).ok());
}

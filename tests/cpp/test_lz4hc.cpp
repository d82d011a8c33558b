// Tests of the LZ4HC exponent coder (cpp/codec/lz4hc): the documented payload,
// round trips through the coder, coded planes and blobs on every ISA, parallel
// segments, and rejection of corrupt tables and payloads. In a build without
// liblz4, that requesting or reading lz4hc fails with a message naming it.
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/coder.h"
#include "codec/lz4hc/lz4hc.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/codec.h"
#include "zipmoe/error.h"
#include "zipmoe/thread_pool.h"

#if defined(ZIPMOE_HAVE_LZ4)
#include <lz4.h>
#endif

using zipmoe::Codec;
using zipmoe::DType;
using zipmoe::Isa;
using zipmoe::Status;
namespace codec = zipmoe::codec;

namespace {

// The exponent plane of N(0, sigma) BF16 weights, specials included.
std::vector<std::uint8_t> exponent_symbols(std::size_t n, std::uint32_t seed) {
  const auto weights = ztest::make_weights(DType::kBF16, n, seed);
  std::vector<std::uint8_t> symbols(n);
  codec::split_planes(DType::kBF16, weights.data(), n, symbols.data(), nullptr);
  return symbols;
}

std::vector<std::uint8_t> uniform_symbols(std::size_t n, int alphabet, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& s : out) s = static_cast<std::uint8_t>(rng() % alphabet);
  return out;
}

// A coded plane of the plane's own header with codec id 4 (lz4hc): table = level 9,
// one segment holding one block of `symbols` (built without liblz4: the block is
// whatever bytes are given).
std::vector<std::uint8_t> handmade_plane(std::size_t n, const std::vector<std::uint8_t>& block) {
  std::vector<std::uint8_t> plane;
  plane.push_back(4);
  plane.push_back(codec::kCodedPlaneVersion);
  zipmoe::append_le16(&plane, 0);
  zipmoe::append_le32(&plane, codec::kDefaultSegmentSymbols);
  zipmoe::append_le64(&plane, n);
  zipmoe::append_le32(&plane, 1);
  zipmoe::append_le32(&plane, 1);
  plane.push_back(9);
  zipmoe::append_le32(&plane, static_cast<std::uint32_t>(4 + block.size()));
  zipmoe::append_le32(&plane, static_cast<std::uint32_t>(block.size()));
  plane.insert(plane.end(), block.begin(), block.end());
  return plane;
}

}  // namespace

#if !defined(ZIPMOE_HAVE_LZ4)

ZTEST(lz4hc_without_liblz4_names_the_missing_library) {
  ZCHECK(!codec::lz4hc_available());
  ZCHECK(codec::find_coder(Codec::kLz4hc) == nullptr);
  const auto symbols = exponent_symbols(5000, 1);
  codec::EncodeOptions options;
  options.codec = Codec::kLz4hc;
  std::vector<std::uint8_t> plane;
  const Status st = codec::encode_plane(symbols.data(), symbols.size(), options, nullptr, &plane);
  ZCHECK(st.code() == zipmoe::StatusCode::kUnsupported);
  ZCHECK(st.message().find("liblz4") != std::string::npos);
  const auto handmade = handmade_plane(16, std::vector<std::uint8_t>(8, 0));
  codec::CodedPlane parsed;
  const Status read = codec::CodedPlane::parse(handmade.data(), handmade.size(), &parsed);
  ZCHECK(read.code() == zipmoe::StatusCode::kFormat);
  ZCHECK(read.message().find("liblz4") != std::string::npos);
  bool threw = false;
  try {
    const auto weights = ztest::make_weights(DType::kBF16, 1000, 2);
    zipmoe::CompressOptions compress_options;
    compress_options.codec = Codec::kLz4hc;
    (void)zipmoe::compress(weights.data(), DType::kBF16, {1000}, compress_options);
  } catch (const zipmoe::Error& error) {
    threw = std::string(error.what()).find("liblz4") != std::string::npos;
  }
  ZCHECK(threw);
}

#else

namespace {

const codec::Coder& coder() { return *codec::find_coder(Codec::kLz4hc); }

struct Encoded {
  std::vector<std::uint8_t> table;
  std::vector<std::uint8_t> payload;
  std::unique_ptr<codec::DecoderTables> tables;
};

Encoded encode_one_segment(const std::vector<std::uint8_t>& symbols) {
  Encoded e;
  ZCHECK(coder().build_table(codec::compute_histogram(symbols.data(), symbols.size()), &e.table).ok());
  ZCHECK(coder().encode_segment(e.table.data(), e.table.size(), symbols.data(), symbols.size(), &e.payload).ok());
  ZCHECK(coder().prepare_decoder(e.table.data(), e.table.size(), &e.tables).ok());
  return e;
}

Status decode_symbols(const Encoded& e, const std::uint8_t* payload, std::size_t size, std::size_t n, Isa isa,
                      std::vector<std::uint8_t>* out) {
  out->assign(n, 0xAB);
  return coder().decode[static_cast<int>(isa)](*e.tables, payload, size, n, codec::make_symbol_target(out->data()));
}

void check_coder_round_trip(const std::vector<std::uint8_t>& symbols, const char* what) {
  const Encoded e = encode_one_segment(symbols);
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<std::uint8_t> out;
    const Status st = decode_symbols(e, e.payload.data(), e.payload.size(), symbols.size(), isa, &out);
    if (!st.ok() || out != symbols) {
      std::fprintf(stderr, "  %s n=%zu isa=%s: %s\n", what, symbols.size(), zipmoe::isa_name(isa),
                   st.message().c_str());
    }
    ZCHECK(st.ok());
    ZCHECK(out == symbols);
  }
}

void check_plane_round_trip(const std::vector<std::uint8_t>& symbols, std::uint32_t segment, zipmoe::ThreadPool* pool) {
  codec::EncodeOptions options;
  options.codec = Codec::kLz4hc;
  options.segment_symbols = segment;
  std::vector<std::uint8_t> plane;
  codec::PlaneEncodeResult result;
  ZCHECK(codec::encode_plane(symbols.data(), symbols.size(), options, pool, &plane, &result).ok());
  codec::CodedPlane parsed;
  ZCHECK(codec::CodedPlane::parse(plane.data(), plane.size(), &parsed).ok());
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<std::uint8_t> out(symbols.size(), 0xEE);
    const Status st = parsed.decode(codec::make_symbol_target(out.data()), pool, isa);
    if (!st.ok() || out != symbols) {
      std::fprintf(stderr, "  n=%zu segment=%u isa=%s codec=%s: %s\n", symbols.size(), segment,
                   zipmoe::isa_name(isa), zipmoe::codec_name(result.codec), st.message().c_str());
    }
    ZCHECK(st.ok());
    ZCHECK(out == symbols);
  }
}

}  // namespace

ZTEST(lz4hc_is_registered_and_named) {
  ZCHECK(codec::lz4hc_available());
  ZCHECK(codec::find_coder(Codec::kLz4hc) != nullptr);
  ZCHECK(std::string(zipmoe::codec_name(Codec::kLz4hc)) == "lz4hc");
  Codec parsed = Codec::kRaw;
  ZCHECK(zipmoe::parse_codec("LZ4HC", &parsed));
  ZCHECK(parsed == Codec::kLz4hc);
  ZCHECK_EQ(static_cast<int>(Codec::kLz4hc), 4);
}

ZTEST(lz4hc_payload_is_the_documented_one) {
  const std::size_t n = 2 * codec::kLz4hcBlockSymbols + 1234;
  const auto symbols = exponent_symbols(n, 5);
  const Encoded e = encode_one_segment(symbols);
  ZCHECK_EQ(e.table.size(), std::size_t(1));
  ZCHECK_EQ(int(e.table[0]), codec::kLz4hcLevel);
  // Blocks: u32 size, then an LZ4 block of 16384 symbols (the last: the rest).
  std::size_t at = 0;
  std::vector<std::uint8_t> rebuilt;
  for (std::size_t done = 0; done < n; done += codec::kLz4hcBlockSymbols) {
    const std::size_t count = std::min(codec::kLz4hcBlockSymbols, n - done);
    ZCHECK(at + 4 <= e.payload.size());
    const std::uint32_t size = zipmoe::load_le32(e.payload.data() + at);
    at += 4;
    ZCHECK(at + size <= e.payload.size());
    std::vector<char> block(count);
    const int produced = LZ4_decompress_safe(reinterpret_cast<const char*>(e.payload.data() + at), block.data(),
                                             static_cast<int>(size), static_cast<int>(count));
    ZCHECK_EQ(produced, static_cast<int>(count));
    rebuilt.insert(rebuilt.end(), block.begin(), block.end());
    at += size;
  }
  ZCHECK_EQ(at, e.payload.size());
  ZCHECK(rebuilt == symbols);
  // Exponents of weights compress (about 2.6 bits of information in 8).
  ZCHECK(e.payload.size() < n * 3 / 4);
}

ZTEST(lz4hc_segments_round_trip_every_size_and_alphabet) {
  for (std::size_t n : {1, 2, 3, 15, 16, 17, 100, 4095, 16383, 16384, 16385, 32768, 50001}) {
    check_coder_round_trip(exponent_symbols(n, static_cast<std::uint32_t>(n)), "exponents");
    check_coder_round_trip(std::vector<std::uint8_t>(n, 0x7F), "all equal");
    check_coder_round_trip(uniform_symbols(n, 2, 3), "two symbols");
    check_coder_round_trip(uniform_symbols(n, 256, 4), "256 symbols");
  }
  std::vector<std::uint8_t> ramp(70000);
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<std::uint8_t>(i);
  check_coder_round_trip(ramp, "ramp");
}

ZTEST(lz4hc_planes_round_trip_sizes_and_segments) {
  zipmoe::ThreadPool pool(3);
  for (std::size_t n : {0, 1, 2, 5, 17, 4097, 16384, 16385, 131072, 131073, 300001}) {
    const auto symbols = exponent_symbols(n, static_cast<std::uint32_t>(n) + 9);
    for (std::uint32_t segment : {1u, 3u, 64u, 1000u, 16384u, 20000u, codec::kDefaultSegmentSymbols}) {
      if (segment < 64 && n > 5000) continue;
      check_plane_round_trip(symbols, segment, segment == 1000u || segment == 20000u ? &pool : nullptr);
    }
  }
  // Two-symbol planes stay lz4hc; 256-symbol uniform ones fall back to raw (LZ4 cannot shrink them).
  for (int alphabet : {2, 256}) {
    const auto symbols = uniform_symbols(200000, alphabet, 7);
    check_plane_round_trip(symbols, codec::kDefaultSegmentSymbols, &pool);
    codec::EncodeOptions options;
    options.codec = Codec::kLz4hc;
    std::vector<std::uint8_t> plane;
    codec::PlaneEncodeResult result;
    ZCHECK(codec::encode_plane(symbols.data(), symbols.size(), options, nullptr, &plane, &result).ok());
    ZCHECK(result.codec == (alphabet == 2 ? Codec::kLz4hc : Codec::kRaw));
  }
}

ZTEST(lz4hc_blobs_round_trip_every_dtype_and_special_value) {
  zipmoe::ThreadPool pool(2);
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (std::size_t n : {0, 1, 2, 31, 1000, 65536, 200003}) {
      for (std::uint32_t segment : {0u, 997u}) {
        const auto data = ztest::make_weights(dtype, n, static_cast<std::uint32_t>(n * 5 + segment));
        zipmoe::CompressOptions options;
        options.codec = Codec::kLz4hc;
        options.segment_symbols = segment;
        const auto blob = zipmoe::compress(data.data(), dtype, {n}, options, &pool);
        if (n >= 1000 && dtype != DType::kF16) {
          ZCHECK(zipmoe::read_blob_info(blob.data(), blob.size()).codec == Codec::kLz4hc);
        }
        for (Isa isa : zipmoe::supported_isas()) {
          std::vector<std::uint8_t> out(data.size(), 0xCC);
          zipmoe::decompress(blob.data(), blob.size(), out.data(), out.size(), n > 60000 ? &pool : nullptr, isa);
          ZCHECK(out == data);
        }
      }
    }
  }
  const auto all = ztest::all_16bit_patterns();
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    zipmoe::CompressOptions options;
    options.codec = Codec::kLz4hc;
    const auto blob = zipmoe::compress(all.data(), dtype, {256, 256}, options);
    for (Isa isa : zipmoe::supported_isas()) {
      std::vector<std::uint8_t> out(all.size());
      zipmoe::decompress(blob.data(), blob.size(), out.data(), out.size(), nullptr, isa);
      ZCHECK(out == all);
    }
  }
}

ZTEST(lz4hc_parallel_and_serial_encodings_are_identical) {
  const std::size_t n = 1000003;
  const auto symbols = exponent_symbols(n, 77);
  codec::EncodeOptions options;
  options.codec = Codec::kLz4hc;
  options.segment_symbols = 50000;
  zipmoe::ThreadPool pool(3);
  std::vector<std::uint8_t> parallel, serial;
  ZCHECK(codec::encode_plane(symbols.data(), n, options, &pool, &parallel).ok());
  ZCHECK(codec::encode_plane(symbols.data(), n, options, nullptr, &serial).ok());
  ZCHECK(parallel == serial);
  check_plane_round_trip(symbols, 50000, &pool);
}

ZTEST(lz4hc_estimate_is_close_to_the_actual_size) {
  for (std::size_t n : {20000, 131072, 600000}) {
    const auto symbols = exponent_symbols(n, static_cast<std::uint32_t>(n + 1));
    const auto h = codec::compute_histogram(symbols.data(), n);
    const Encoded e = encode_one_segment(symbols);
    const double estimate = double(coder().estimate_payload_bytes(e.table.data(), e.table.size(), h, 1));
    const double actual = double(e.payload.size());
    ZCHECK(estimate > actual * 0.9 && estimate < actual * 1.1);
  }
}

ZTEST(lz4hc_corrupt_tables_are_rejected) {
  std::unique_ptr<codec::DecoderTables> tables;
  const std::uint8_t good[2] = {9, 0};
  ZCHECK(coder().prepare_decoder(good, 1, &tables).ok());
  ZCHECK(coder().prepare_decoder(good, 0, &tables).code() == zipmoe::StatusCode::kFormat);
  ZCHECK(coder().prepare_decoder(good, 2, &tables).code() == zipmoe::StatusCode::kFormat);
  for (std::uint8_t level : {0, 13, 255}) {
    ZCHECK(coder().prepare_decoder(&level, 1, &tables).code() == zipmoe::StatusCode::kFormat);
  }
}

ZTEST(lz4hc_truncation_and_extension_are_errors) {
  const std::size_t n = codec::kLz4hcBlockSymbols + 700;
  const auto symbols = exponent_symbols(n, 21);
  const Encoded e = encode_one_segment(symbols);
  std::vector<std::uint8_t> out;
  for (std::size_t size = 0; size < e.payload.size(); ++size) {
    std::vector<std::uint8_t> cut(e.payload.begin(), e.payload.begin() + size);  // exact-size copy: ASan sees overreads
    const Status st = decode_symbols(e, cut.data(), cut.size(), n, Isa::kScalar, &out);
    ZCHECK(st.code() == zipmoe::StatusCode::kFormat);
  }
  for (std::size_t extra : {1, 4, 100}) {
    std::vector<std::uint8_t> longer = e.payload;
    longer.resize(longer.size() + extra, 0);
    ZCHECK(decode_symbols(e, longer.data(), longer.size(), n, Isa::kScalar, &out).code() ==
           zipmoe::StatusCode::kFormat);
  }
  // The right payload for another count.
  ZCHECK(decode_symbols(e, e.payload.data(), e.payload.size(), n - 1, Isa::kScalar, &out).code() ==
         zipmoe::StatusCode::kFormat);
  ZCHECK(decode_symbols(e, e.payload.data(), e.payload.size(), n + 1, Isa::kScalar, &out).code() ==
         zipmoe::StatusCode::kFormat);
}

ZTEST(lz4hc_bit_flips_and_garbage_never_crash) {
  // LZ4 blocks carry no checksum: a flipped literal decodes to a wrong symbol (the
  // container's CRC-32C catches that); anything structural must be an error. No
  // flip may read or write out of bounds (run under ASan) or hang.
  const std::size_t n = 40000;
  const auto symbols = exponent_symbols(n, 33);
  const Encoded e = encode_one_segment(symbols);
  std::mt19937_64 rng(3);
  std::vector<std::uint8_t> out;
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::uint8_t> bad = e.payload;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    for (Isa isa : {Isa::kScalar, zipmoe::supported_isas().back()}) {
      const Status st = decode_symbols(e, bad.data(), bad.size(), n, isa, &out);
      ZCHECK(st.ok() || st.code() == zipmoe::StatusCode::kFormat);
      errors += !st.ok();
    }
  }
  ZCHECK(errors > 0);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<std::uint8_t> garbage(1 + rng() % 3000);
    for (auto& b : garbage) b = static_cast<std::uint8_t>(rng());
    if (trial % 2 == 0 && garbage.size() >= 4) zipmoe::store_le32(garbage.data(), std::uint32_t(garbage.size() - 4));
    const std::size_t count = 1 + rng() % 20000;
    const Status st = decode_symbols(e, garbage.data(), garbage.size(), count, Isa::kScalar, &out);
    ZCHECK(st.ok() || st.code() == zipmoe::StatusCode::kFormat);
  }
}

ZTEST(lz4hc_corrupt_coded_planes_fail_with_format_errors) {
  const auto symbols = exponent_symbols(100000, 44);
  codec::EncodeOptions options;
  options.codec = Codec::kLz4hc;
  options.segment_symbols = 30000;
  std::vector<std::uint8_t> plane;
  ZCHECK(codec::encode_plane(symbols.data(), symbols.size(), options, nullptr, &plane).ok());
  std::mt19937_64 rng(8);
  for (int trial = 0; trial < 600; ++trial) {
    std::vector<std::uint8_t> bad = plane;
    bad[rng() % bad.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    if (trial % 3 == 0) bad.resize(rng() % bad.size());
    codec::CodedPlane parsed;
    Status st = codec::CodedPlane::parse(bad.data(), bad.size(), &parsed);
    if (st.ok()) {
      std::vector<std::uint8_t> out(parsed.num_symbols() <= 200000 ? parsed.num_symbols() : 0);
      if (out.size() == parsed.num_symbols()) st = parsed.decode(codec::make_symbol_target(out.data()), nullptr, Isa::kScalar);
    }
    ZCHECK(st.ok() || st.code() == zipmoe::StatusCode::kFormat);
  }
  // A handmade plane whose block is not LZ4 data.
  const auto handmade = handmade_plane(16, std::vector<std::uint8_t>{0xF0, 1, 2});
  codec::CodedPlane parsed;
  ZCHECK(codec::CodedPlane::parse(handmade.data(), handmade.size(), &parsed).ok());
  std::vector<std::uint8_t> out(16);
  const Status st = parsed.decode(codec::make_symbol_target(out.data()), nullptr, Isa::kScalar);
  ZCHECK(st.code() == zipmoe::StatusCode::kFormat);
  ZCHECK(st.message().find("lz4hc") != std::string::npos);
}

#endif  // ZIPMOE_HAVE_LZ4

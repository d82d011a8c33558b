// Tests of the canonical Huffman exponent coder (cpp/codec/huffman): code
// construction, table format, round trips on every ISA, and rejection of
// corrupt tables and payloads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/coder.h"
#include "codec/huffman/huffman.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/codec.h"
#include "zipmoe/thread_pool.h"

using zipmoe::Codec;
using zipmoe::DType;
using zipmoe::Isa;
using zipmoe::Status;
using zipmoe::codec::Histogram;

namespace {

const zipmoe::codec::Coder& coder() { return *zipmoe::codec::find_coder(Codec::kHuffman); }

Histogram histogram_of(const std::vector<std::uint8_t>& symbols) {
  return zipmoe::codec::compute_histogram(symbols.data(), symbols.size());
}

std::uint64_t code_cost(const Histogram& h, const std::uint8_t lengths[256]) {
  std::uint64_t bits = 0;
  for (int s = 0; s < 256; ++s) bits += h[s] * lengths[s];
  return bits;
}

// Kraft sum scaled by 2^15 (exact for lengths <= 15).
std::uint32_t kraft_sum(const std::uint8_t lengths[256]) {
  std::uint32_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (lengths[s]) sum += 1u << (15 - lengths[s]);
  }
  return sum;
}

// Cost of an unrestricted Huffman code: the sum of all merged weights.
std::uint64_t huffman_cost(const Histogram& h) {
  std::priority_queue<std::uint64_t, std::vector<std::uint64_t>, std::greater<std::uint64_t>> heap;
  for (std::uint64_t c : h) {
    if (c) heap.push(c);
  }
  std::uint64_t cost = 0;
  while (heap.size() > 1) {
    const std::uint64_t a = heap.top();
    heap.pop();
    const std::uint64_t b = heap.top();
    heap.pop();
    cost += a + b;
    heap.push(a + b);
  }
  return cost;
}

// Symbols drawn i.i.d. from `weights` (index = symbol).
std::vector<std::uint8_t> draw(const std::vector<double>& weights, std::size_t n, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  std::vector<std::uint8_t> out(n);
  for (auto& s : out) s = static_cast<std::uint8_t>(pick(rng));
  return out;
}

// The exponent plane of N(0, sigma) BF16 weights, specials included.
std::vector<std::uint8_t> exponent_symbols(std::size_t n, std::uint32_t seed, bool specials = true) {
  const auto weights = ztest::make_weights(DType::kBF16, n, seed, 0.02, specials);
  std::vector<std::uint8_t> symbols(n), sm(n);
  zipmoe::codec::split_planes(DType::kBF16, weights.data(), n, symbols.data(), sm.data());
  return symbols;
}

// Geometric counts that force the 11-bit limit: Fibonacci weights over `count` symbols.
std::vector<double> fibonacci_weights(int count, int first_symbol) {
  std::vector<double> w(256, 0.0);
  double a = 1, b = 1;
  for (int i = 0; i < count; ++i) {
    w[(first_symbol + i) & 255] = a;
    const double c = a + b;
    a = b;
    b = c;
  }
  return w;
}

struct Encoded {
  std::vector<std::uint8_t> table;
  std::vector<std::uint8_t> payload;
  std::unique_ptr<zipmoe::codec::DecoderTables> tables;
};

Encoded encode_one_segment(const std::vector<std::uint8_t>& symbols, const Histogram& histogram) {
  Encoded e;
  ZCHECK(coder().build_table(histogram, &e.table).ok());
  ZCHECK(coder().encode_segment(e.table.data(), e.table.size(), symbols.data(), symbols.size(), &e.payload).ok());
  ZCHECK(coder().prepare_decoder(e.table.data(), e.table.size(), &e.tables).ok());
  return e;
}

// The payload is copied into an allocation of exactly its size, so that a
// sanitizer build catches any read outside it.
Status decode_symbols(const Encoded& e, const std::uint8_t* payload, std::size_t size, std::size_t count, Isa isa,
                      std::vector<std::uint8_t>* out) {
  std::unique_ptr<std::uint8_t[]> exact(new std::uint8_t[size]);
  if (size) std::memcpy(exact.get(), payload, size);
  out->assign(count, 0xEE);
  zipmoe::codec::DecodeSegmentFn fn = coder().decode[static_cast<int>(isa)];
  if (!fn) fn = coder().decode[static_cast<int>(Isa::kScalar)];
  return fn(*e.tables, exact.get(), size, count, zipmoe::codec::make_symbol_target(out->data()));
}

// Encodes one segment directly through the Coder and decodes it on every ISA,
// into bare symbols and into merged BF16 elements.
void check_segment_round_trip(const std::vector<std::uint8_t>& symbols, const char* what) {
  const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
  std::vector<std::uint8_t> sm(symbols.size());
  std::mt19937 rng(7);
  for (auto& b : sm) b = static_cast<std::uint8_t>(rng());
  std::vector<std::uint16_t> expected(symbols.size());
  zipmoe::codec::scalar::merge16(symbols.data(), sm.data(), expected.data(), symbols.size());
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<std::uint8_t> decoded;
    const Status st = decode_symbols(e, e.payload.data(), e.payload.size(), symbols.size(), isa, &decoded);
    if (!st.ok() || decoded != symbols) {
      std::fprintf(stderr, "  %s: n=%zu isa=%s: %s\n", what, symbols.size(), zipmoe::isa_name(isa),
                   st.ok() ? "mismatch" : st.message().c_str());
    }
    ZCHECK(st.ok());
    ZCHECK(decoded == symbols);
    std::vector<std::uint16_t> merged(symbols.size() + 1, 0xABCD);  // one guard element past the end
    const auto target = zipmoe::codec::make_merge_target(DType::kBF16, sm.data(), symbols.size(), merged.data());
    zipmoe::codec::DecodeSegmentFn fn = coder().decode[static_cast<int>(isa)];
    if (!fn) fn = coder().decode[static_cast<int>(Isa::kScalar)];
    std::unique_ptr<std::uint8_t[]> exact(new std::uint8_t[e.payload.size()]);
    std::memcpy(exact.get(), e.payload.data(), e.payload.size());
    ZCHECK(fn(*e.tables, exact.get(), e.payload.size(), symbols.size(), target).ok());
    ZCHECK(std::equal(expected.begin(), expected.end(), merged.begin()));
    ZCHECK_EQ(merged.back(), 0xABCD);
  }
}

// Encodes a whole plane with the Huffman codec and decodes it on every ISA,
// with and without a thread pool.
void check_plane_round_trip(const std::vector<std::uint8_t>& symbols, std::uint32_t segment_symbols,
                            bool expect_huffman, zipmoe::ThreadPool* pool) {
  zipmoe::codec::EncodeOptions options;
  options.codec = Codec::kHuffman;
  options.segment_symbols = segment_symbols;
  std::vector<std::uint8_t> plane;
  zipmoe::codec::PlaneEncodeResult result;
  ZCHECK(zipmoe::codec::encode_plane(symbols.data(), symbols.size(), options, pool, &plane, &result).ok());
  if (expect_huffman) ZCHECK(result.codec == Codec::kHuffman);
  zipmoe::codec::CodedPlane parsed;
  ZCHECK(zipmoe::codec::CodedPlane::parse(plane.data(), plane.size(), &parsed).ok());
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<std::uint8_t> out(symbols.size() + 1, 0x5A);
    ZCHECK(parsed.decode(zipmoe::codec::make_symbol_target(out.data()), pool, isa).ok());
    ZCHECK(std::equal(symbols.begin(), symbols.end(), out.begin()));
    ZCHECK_EQ(out.back(), 0x5A);
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Code construction

ZTEST(huffman_lengths_match_unlimited_huffman_when_the_limit_does_not_bind) {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    const auto symbols = exponent_symbols(50000, seed, false);
    const Histogram h = histogram_of(symbols);
    std::uint8_t lengths[256];
    zipmoe::codec::huffman_code_lengths(h, 15, lengths);
    ZCHECK_EQ(code_cost(h, lengths), huffman_cost(h));
    ZCHECK_EQ(kraft_sum(lengths), 1u << 15);
  }
  // A flat histogram of 256 symbols: every code 8 bits.
  Histogram flat{};
  for (auto& c : flat) c = 10;
  std::uint8_t lengths[256];
  zipmoe::codec::huffman_code_lengths(flat, 11, lengths);
  for (int s = 0; s < 256; ++s) ZCHECK_EQ(lengths[s], 8);
}

ZTEST(huffman_lengths_respect_the_limit_and_stay_optimal_and_complete) {
  for (int count : {12, 20, 30, 45, 80}) {
    const auto w = fibonacci_weights(count, 3);
    Histogram h{};
    for (int s = 0; s < 256; ++s) h[s] = static_cast<std::uint64_t>(w[s]);
    std::uint8_t limited[256], looser[256];
    zipmoe::codec::huffman_code_lengths(h, 11, limited);
    int max_length = 0;
    for (int s = 0; s < 256; ++s) {
      max_length = std::max<int>(max_length, limited[s]);
      ZCHECK_EQ(limited[s] != 0, h[s] != 0);  // every present symbol, and only those, has a code
    }
    ZCHECK(max_length <= 11);
    ZCHECK_EQ(kraft_sum(limited), 1u << 15);
    // Heavier symbols never get longer codes.
    for (int a = 0; a < 256; ++a) {
      for (int b = 0; b < 256; ++b) {
        if (h[a] && h[b] && h[a] > h[b]) ZCHECK(limited[a] <= limited[b]);
      }
    }
    if (count <= 32) {
      // Small enough for a brute-force check of optimality: no single change of
      // two lengths that keeps the code valid lowers the cost.
      zipmoe::codec::huffman_code_lengths(h, 15, looser);
      ZCHECK(code_cost(h, limited) >= code_cost(h, looser));
      for (int a = 0; a < 256; ++a) {
        for (int b = 0; b < 256; ++b) {
          if (!h[a] || !h[b] || a == b || limited[a] <= 1 || limited[b] >= 11) continue;
          std::uint8_t changed[256];
          std::memcpy(changed, limited, 256);
          --changed[a];
          ++changed[b];
          if (kraft_sum(changed) <= (1u << 15)) ZCHECK(code_cost(h, changed) >= code_cost(h, limited));
        }
      }
    }
  }
}

ZTEST(huffman_lengths_of_degenerate_histograms) {
  std::uint8_t lengths[256];
  Histogram one{};
  one[77] = 1000;
  zipmoe::codec::huffman_code_lengths(one, 11, lengths);
  ZCHECK_EQ(lengths[77], 1);
  ZCHECK_EQ(kraft_sum(lengths), 1u << 15);  // a second symbol completes the code
  Histogram two{};
  two[0] = 1;
  two[255] = 1000000;
  zipmoe::codec::huffman_code_lengths(two, 11, lengths);
  ZCHECK_EQ(lengths[0], 1);
  ZCHECK_EQ(lengths[255], 1);
  // A limit too small for the alphabet is raised: 256 symbols need 8 bits.
  Histogram flat{};
  for (auto& c : flat) c = 1;
  zipmoe::codec::huffman_code_lengths(flat, 3, lengths);
  ZCHECK_EQ(kraft_sum(lengths), 1u << 15);
  ZCHECK_EQ(lengths[200], 8);
  Histogram huge{};
  huge[1] = std::uint64_t(1) << 40;
  huge[2] = 1;
  huge[3] = 1;
  zipmoe::codec::huffman_code_lengths(huge, 11, lengths);
  ZCHECK_EQ(lengths[1], 1);
  ZCHECK_EQ(lengths[2], 2);
  ZCHECK_EQ(lengths[3], 2);
}

ZTEST(huffman_redundancy_on_exponent_planes_is_small) {
  // The cost of the 11-bit limit over an unlimited Huffman code on a realistic
  // exponent plane (1M N(0, 0.02) weights): under 0.01 bits per symbol.
  const auto symbols = exponent_symbols(1 << 20, 5, false);
  const Histogram h = histogram_of(symbols);
  std::uint8_t limited[256], unlimited[256];
  zipmoe::codec::huffman_code_lengths(h, 11, limited);
  zipmoe::codec::huffman_code_lengths(h, 20, unlimited);
  const double extra = double(code_cost(h, limited) - code_cost(h, unlimited)) / double(symbols.size());
  ZCHECK(extra < 0.01);
  const double bits = double(code_cost(h, limited)) / double(symbols.size());
  ZCHECK(bits < zipmoe::codec::entropy_bits(h) + 0.06);
}

// ---------------------------------------------------------------------------
// Table format

ZTEST(huffman_table_layout_is_the_documented_one) {
  Histogram h{};
  h[10] = 5;
  h[12] = 10;
  h[13] = 5;
  std::vector<std::uint8_t> table;
  ZCHECK(coder().build_table(h, &table).ok());
  // Symbols 10..13: lengths 2, 0, 1, 2 -> nibbles (2,0) (1,2).
  const std::vector<std::uint8_t> expected = {10, 13, 0x02, 0x21};
  ZCHECK(table == expected);
  std::uint8_t lengths[256];
  ZCHECK(zipmoe::codec::huffman_parse_table(table.data(), table.size(), lengths).ok());
  ZCHECK_EQ(lengths[10], 2);
  ZCHECK_EQ(lengths[11], 0);
  ZCHECK_EQ(lengths[12], 1);
  ZCHECK_EQ(lengths[13], 2);
  // Canonical codes: 12 -> "0", 10 -> "10", 13 -> "11"; written LSB-first, first
  // bit lowest. Symbols 12 10 13 12 -> bits 0 1 0 1 1 0 -> byte 0b011010 = 0x1A.
  const std::vector<std::uint8_t> symbols = {12, 10, 13, 12};
  std::vector<std::uint8_t> payload;
  ZCHECK(coder().encode_segment(table.data(), table.size(), symbols.data(), 1, &payload).ok());
  // One symbol: streams 0..3 hold 1, 0, 0, 0 symbols.
  const std::vector<std::uint8_t> one = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00};
  ZCHECK(payload == one);
  payload.clear();
  const std::vector<std::uint8_t> eight = {12, 10, 13, 12, 10, 10, 13, 12};
  ZCHECK(coder().encode_segment(table.data(), table.size(), eight.data(), eight.size(), &payload).ok());
  // Streams: {12,10} {13,12} {10,10} {13,12} -> bits 0,1,0 | 1,1,0 | 1,0,1,0 | 1,1,0.
  const std::vector<std::uint8_t> expected_payload = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
                                                      0x02, 0x03, 0x05, 0x03};
  ZCHECK(payload == expected_payload);
}

ZTEST(huffman_table_round_trips_and_is_compact) {
  for (std::uint32_t seed : {1u, 9u}) {
    const auto symbols = exponent_symbols(20000, seed);
    const Histogram h = histogram_of(symbols);
    std::vector<std::uint8_t> table;
    ZCHECK(coder().build_table(h, &table).ok());
    std::uint8_t expected[256], parsed[256];
    zipmoe::codec::huffman_code_lengths(h, zipmoe::codec::kHuffmanMaxCodeLength, expected);
    ZCHECK(zipmoe::codec::huffman_parse_table(table.data(), table.size(), parsed).ok());
    ZCHECK(std::memcmp(expected, parsed, 256) == 0);
    ZCHECK(table.size() <= 130);
  }
}

ZTEST(huffman_corrupt_tables_are_rejected) {
  auto rejected = [](std::vector<std::uint8_t> t, const char* what) {
    std::unique_ptr<zipmoe::codec::DecoderTables> tables;
    const Status st = coder().prepare_decoder(t.data(), t.size(), &tables);
    if (st.ok()) std::fprintf(stderr, "  accepted: %s\n", what);
    ZCHECK(!st.ok());
    ZCHECK(st.code() == zipmoe::StatusCode::kFormat);
  };
  rejected({}, "empty");
  rejected({5, 5}, "no lengths");
  rejected({6, 5, 0x11}, "reversed range");
  rejected({0, 1, 0x11, 0x00}, "one byte too many");
  rejected({0, 3, 0x22}, "one byte too few");
  rejected({0, 1, 0xC1}, "length 12");
  rejected({0, 2, 0x11, 0x01}, "over-subscribed (1,1,1)");
  rejected({0, 2, 0x21, 0x22}, "non-zero padding nibble");
  rejected({5, 5, 0x01}, "one code only");
  rejected({0, 2, 0x22, 0x02}, "incomplete (2,2,2)");
  rejected({0, 1, 0x01}, "single code of length 1");
  rejected({0, 2, 0x10, 0x01}, "first symbol without a code");
  rejected({0, 2, 0x11, 0x00}, "last symbol without a code");
  rejected({0, 0, 0x00}, "all zero");
  std::vector<std::uint8_t> all_eight(130, 0x88);
  all_eight[0] = 0;
  all_eight[1] = 255;
  std::unique_ptr<zipmoe::codec::DecoderTables> tables;
  ZCHECK(coder().prepare_decoder(all_eight.data(), all_eight.size(), &tables).ok());
  all_eight[77] = 0x78;  // one length 7 among 8s: over-subscribed
  rejected(all_eight, "256 codes, one shortened");
  // Random garbage: any accepted table must decode random payloads safely.
  std::mt19937_64 rng(3);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    const int first = int(rng() % 256), span = 1 + int(rng() % 4);
    std::vector<std::uint8_t> t = {std::uint8_t(first), std::uint8_t(std::min(255, first + span - 1))};
    t.resize(2 + (t[1] - t[0] + 2) / 2);
    for (std::size_t b = 2; b < t.size(); ++b) t[b] = static_cast<std::uint8_t>(rng());
    std::unique_ptr<zipmoe::codec::DecoderTables> tt;
    if (coder().prepare_decoder(t.data(), t.size(), &tt).ok()) ++accepted;
  }
  ZCHECK(accepted > 0);  // e.g. two codes of length 1
}

// ---------------------------------------------------------------------------
// Round trips

ZTEST(huffman_segment_round_trip_small_counts_every_isa) {
  const auto w = fibonacci_weights(20, 100);
  for (std::size_t n = 1; n <= 80; ++n) {
    check_segment_round_trip(draw(w, n, static_cast<std::uint32_t>(n)), "fibonacci");
    check_segment_round_trip(exponent_symbols(n, static_cast<std::uint32_t>(n)), "exponents");
  }
  for (std::size_t n : {127, 128, 129, 255, 256, 257, 1000, 1001, 1002, 1003, 4099, 65537}) {
    check_segment_round_trip(exponent_symbols(n, static_cast<std::uint32_t>(n)), "exponents");
    check_segment_round_trip(draw(w, n, 3), "fibonacci");
  }
}

ZTEST(huffman_segment_round_trip_extreme_alphabets) {
  // Two symbols, one of them rare.
  std::vector<double> two(256, 0.0);
  two[0x7f] = 1.0;
  two[0x80] = 0.001;
  check_segment_round_trip(draw(two, 50000, 1), "two symbols");
  // Two symbols, only one present (the code still has two entries).
  check_segment_round_trip(std::vector<std::uint8_t>(3000, 0x42), "one symbol");
  // All 256 symbols, uniform (8-bit codes) and geometric (11-bit limit binds).
  std::vector<double> flat(256, 1.0), geometric(256);
  for (int s = 0; s < 256; ++s) geometric[s] = std::pow(0.93, s) + 1e-9;
  check_segment_round_trip(draw(flat, 70000, 2), "256 uniform");
  check_segment_round_trip(draw(geometric, 70000, 3), "256 geometric");
  // Length-1 codes: 7 symbols per lookup, the densest entries.
  std::vector<double> skewed(256, 0.0);
  skewed[5] = 1000.0;
  skewed[6] = 1.0;
  skewed[7] = 1.0;
  check_segment_round_trip(draw(skewed, 100000, 4), "length-1 codes");
  // Every symbol needs the maximal length except two (Fibonacci over 256 symbols).
  check_segment_round_trip(draw(fibonacci_weights(256, 0), 20000, 5), "fibonacci 256");
}

ZTEST(huffman_segment_round_trip_unbalanced_streams) {
  // The first quarter codes in 1 bit per symbol, the rest in 8-11: stream 0 runs
  // ahead and the others finish alone.
  const std::size_t n = 40000;
  std::vector<std::uint8_t> symbols = draw(fibonacci_weights(40, 60), n, 8);
  for (std::size_t i = 0; i < n / 4; ++i) symbols[i] = 99;
  check_segment_round_trip(symbols, "unbalanced");
  std::reverse(symbols.begin(), symbols.end());
  check_segment_round_trip(symbols, "unbalanced reversed");
}

ZTEST(huffman_plane_round_trip_sizes_and_segments) {
  zipmoe::ThreadPool pool(3);
  for (std::size_t n : {0, 1, 2, 3, 4, 5, 7, 8, 17, 100, 1000, 4097, 131071, 131072, 131073, 300001}) {
    const auto symbols = exponent_symbols(n, static_cast<std::uint32_t>(n) + 1);
    for (std::uint32_t seg : {1u, 2u, 3u, 5u, 64u, 1000u, 4099u, zipmoe::codec::kDefaultSegmentSymbols}) {
      if (seg < 64 && n > 5000) continue;  // keeps the test fast
      check_plane_round_trip(symbols, seg, n >= 4000 && seg >= 1000, seg == 1000u ? &pool : nullptr);
    }
  }
}

ZTEST(huffman_compress_round_trip_all_dtypes) {
  zipmoe::ThreadPool pool(2);
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (std::size_t n : {0, 1, 2, 31, 1000, 65536, 200003}) {
      for (std::uint32_t seg : {0u, 997u}) {
        const auto data = ztest::make_weights(dtype, n, static_cast<std::uint32_t>(n * 3 + seg));
        zipmoe::CompressOptions options;
        options.codec = Codec::kHuffman;
        options.segment_symbols = seg;
        const auto blob = zipmoe::compress(data.data(), dtype, {n}, options, &pool);
        if (n >= 1000) ZCHECK(zipmoe::read_blob_info(blob.data(), blob.size()).codec == Codec::kHuffman);
        for (Isa isa : zipmoe::supported_isas()) {
          std::vector<std::uint8_t> out(data.size(), 0xCC);
          zipmoe::decompress(blob.data(), blob.size(), out.data(), out.size(), n > 60000 ? &pool : nullptr, isa);
          if (out != data) {
            std::fprintf(stderr, "  dtype %s n %zu seg %u isa %s\n", zipmoe::dtype_name(dtype), n, seg,
                         zipmoe::isa_name(isa));
          }
          ZCHECK(out == data);
        }
      }
    }
  }
  // Every 16-bit pattern, merged as BF16 and F16.
  const auto all = ztest::all_16bit_patterns();
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    zipmoe::CompressOptions options;
    options.codec = Codec::kHuffman;
    const auto blob = zipmoe::compress(all.data(), dtype, {256, 256}, options);
    for (Isa isa : zipmoe::supported_isas()) {
      std::vector<std::uint8_t> out(all.size());
      zipmoe::decompress(blob.data(), blob.size(), out.data(), out.size(), nullptr, isa);
      ZCHECK(out == all);
    }
  }
}

ZTEST(huffman_every_isa_matches_scalar_on_random_distributions) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<double> w(256, 0.0);
    const int used = 2 + int(rng() % 255);
    for (int i = 0; i < used; ++i) w[rng() % 256] = std::pow(double(rng() % 1000 + 1), double(rng() % 4));
    const std::size_t n = 1 + rng() % 20000;
    const auto symbols = draw(w, n, static_cast<std::uint32_t>(trial));
    const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
    std::vector<std::uint8_t> reference;
    ZCHECK(decode_symbols(e, e.payload.data(), e.payload.size(), n, Isa::kScalar, &reference).ok());
    ZCHECK(reference == symbols);
    for (Isa isa : zipmoe::supported_isas()) {
      std::vector<std::uint8_t> out;
      ZCHECK(decode_symbols(e, e.payload.data(), e.payload.size(), n, isa, &out).ok());
      ZCHECK(out == reference);
    }
  }
}

ZTEST(huffman_estimate_matches_encoded_size) {
  for (std::size_t n : {1000, 131072, 500000}) {
    for (std::uint32_t seg : {1000u, 4099u, zipmoe::codec::kDefaultSegmentSymbols}) {
      const auto symbols = exponent_symbols(n, static_cast<std::uint32_t>(n + seg));
      const Histogram h = histogram_of(symbols);
      std::vector<std::uint8_t> table;
      ZCHECK(coder().build_table(h, &table).ok());
      const std::size_t segments = (n + seg - 1) / seg;
      const std::uint64_t estimate = coder().estimate_payload_bytes(table.data(), table.size(), h, segments);
      std::uint64_t actual = 0;
      for (std::size_t s = 0; s < segments; ++s) {
        std::vector<std::uint8_t> payload;
        const std::size_t count = std::min<std::size_t>(seg, n - s * seg);
        ZCHECK(coder().encode_segment(table.data(), table.size(), symbols.data() + s * seg, count, &payload).ok());
        actual += payload.size();
      }
      const double difference = double(actual) - double(estimate);
      // Only the padding of each stream (0-7 bits) is unknown to the estimate.
      ZCHECK(difference <= 2.0 * segments + 1 && difference >= -2.0 * segments - 1);
    }
  }
  // A symbol without a code makes the estimate useless (maximal).
  Histogram h{};
  h[1] = 10;
  h[2] = 10;
  std::vector<std::uint8_t> table;
  ZCHECK(coder().build_table(h, &table).ok());
  h[3] = 1;
  ZCHECK_EQ(coder().estimate_payload_bytes(table.data(), table.size(), h, 1), ~std::uint64_t(0));
}

ZTEST(huffman_encoder_rejects_symbols_without_code) {
  Histogram h{};
  h[1] = 10;
  h[2] = 10;
  std::vector<std::uint8_t> table, payload;
  ZCHECK(coder().build_table(h, &table).ok());
  const std::vector<std::uint8_t> symbols = {1, 2, 3, 1};
  const Status st = coder().encode_segment(table.data(), table.size(), symbols.data(), symbols.size(), &payload);
  ZCHECK(!st.ok());
  ZCHECK(payload.empty());
}

// ---------------------------------------------------------------------------
// Corrupt payloads

ZTEST(huffman_structural_errors_are_reported) {
  const auto symbols = exponent_symbols(203, 4);
  const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
  std::vector<std::uint8_t> out;
  auto decode = [&](const std::vector<std::uint8_t>& p) {
    return decode_symbols(e, p.data(), p.size(), symbols.size(), Isa::kScalar, &out);
  };
  ZCHECK(decode(e.payload).ok());
  auto contains = [](const Status& st, const char* text) { return st.message().find(text) != std::string::npos; };

  std::vector<std::uint8_t> p = e.payload;
  p.push_back(0);  // stream 3 gets a byte it does not need
  Status st = decode(p);
  ZCHECK(contains(st, "left over"));

  p = e.payload;
  p.pop_back();  // stream 3 loses its last byte
  st = decode(p);
  ZCHECK(contains(st, "ends inside a code") || contains(st, "impossible"));

  p = e.payload;
  zipmoe::store_le32(p.data(), 100000);  // stream 0 larger than the payload
  st = decode(p);
  ZCHECK(contains(st, "header declares"));

  p = e.payload;
  p.resize(5);
  ZCHECK(contains(decode(p), "shorter than its"));

  // Non-zero padding: in a stream whose bit count is not a multiple of 8, bit 7
  // of the last byte is padding.
  std::uint8_t lengths[256];
  ZCHECK(zipmoe::codec::huffman_parse_table(e.table.data(), e.table.size(), lengths).ok());
  std::size_t at = zipmoe::codec::kHuffmanSegmentHeaderBytes, first = 0;
  bool tested_padding = false;
  for (int k = 0; k < 4; ++k) {
    const std::size_t count = symbols.size() / 4 + (std::size_t(k) < symbols.size() % 4 ? 1 : 0);
    std::size_t bits = 0;
    for (std::size_t i = first; i < first + count; ++i) bits += lengths[symbols[i]];
    const std::size_t bytes = (bits + 7) / 8;
    if (k < 3) ZCHECK_EQ(std::size_t(zipmoe::load_le32(e.payload.data() + 4 * k)), bytes);
    if (bits % 8 != 0 && !tested_padding) {
      p = e.payload;
      p[at + bytes - 1] |= 0x80;
      st = decode(p);
      ZCHECK(contains(st, "padding"));
      tested_padding = true;
    }
    at += bytes;
    first += count;
  }
  ZCHECK_EQ(at, e.payload.size());
  ZCHECK(tested_padding);
}

ZTEST(huffman_truncation_at_every_length_is_an_error) {
  for (std::uint32_t seed : {1u, 2u}) {
    const auto symbols = exponent_symbols(301, seed);
    const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
    for (Isa isa : zipmoe::supported_isas()) {
      for (std::size_t size = 0; size < e.payload.size(); ++size) {
        // A fresh copy of exactly `size` bytes, so that ASan sees any read past it.
        std::vector<std::uint8_t> cut(e.payload.begin(), e.payload.begin() + size);
        std::vector<std::uint8_t> out;
        ZCHECK(!decode_symbols(e, cut.data(), cut.size(), symbols.size(), isa, &out).ok());
      }
    }
  }
}

ZTEST(huffman_bit_flips_and_garbage_never_crash) {
  const auto symbols = exponent_symbols(150, 6);
  const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
  int detected = 0, flips = 0;
  for (Isa isa : zipmoe::supported_isas()) {
    for (std::size_t bit = 0; bit < e.payload.size() * 8; ++bit) {
      std::vector<std::uint8_t> p = e.payload;
      p[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      std::vector<std::uint8_t> out;
      const Status st = decode_symbols(e, p.data(), p.size(), symbols.size(), isa, &out);
      ++flips;
      if (!st.ok()) ++detected;
      std::vector<std::uint8_t> reference;
      const Status scalar_st = decode_symbols(e, p.data(), p.size(), symbols.size(), Isa::kScalar, &reference);
      ZCHECK_EQ(st.ok(), scalar_st.ok());  // every ISA agrees on corrupt input too
      if (st.ok()) ZCHECK(out == reference);
    }
  }
  ZCHECK(detected > flips / 4);  // most flips change a code length and are caught
  // Random garbage of random sizes against a few tables and counts.
  std::mt19937_64 rng(12);
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::uint8_t> garbage(rng() % 200);
    for (auto& b : garbage) b = static_cast<std::uint8_t>(rng());
    if (garbage.size() >= 12 && rng() % 2) {
      // Plausible stream sizes so that the streams themselves get decoded.
      for (int k = 0; k < 3; ++k) zipmoe::store_le32(garbage.data() + 4 * k, std::uint32_t(rng() % 48));
    }
    const std::size_t count = rng() % 400;
    for (Isa isa : zipmoe::supported_isas()) {
      std::vector<std::uint8_t> out;
      (void)decode_symbols(e, garbage.data(), garbage.size(), count, isa, &out);
    }
  }
}

ZTEST(huffman_adversarial_streams_stay_inside_the_payload) {
  // A code with 1-bit and 11-bit codes, and streams that declare few bytes for
  // many symbols but hold only the longest codes (all ones): the decoder's
  // unchecked rounds must stop before the stream ends (a sanitizer build checks
  // that nothing past the exact-size payload copy is read).
  const auto w = fibonacci_weights(40, 20);
  const auto symbols = draw(w, 4000, 21);
  const Encoded e = encode_one_segment(symbols, histogram_of(symbols));
  for (std::size_t stream_bytes : {1, 7, 8, 15, 16, 17, 64, 200, 1000}) {
    for (std::uint8_t fill : {0xFF, 0x00, 0xAA}) {
      std::vector<std::uint8_t> payload(zipmoe::codec::kHuffmanSegmentHeaderBytes + 4 * stream_bytes, fill);
      for (int k = 0; k < 3; ++k) zipmoe::store_le32(payload.data() + 4 * k, std::uint32_t(stream_bytes));
      for (std::size_t count : {4 * stream_bytes, 20 * stream_bytes, 32 * stream_bytes}) {
        for (Isa isa : zipmoe::supported_isas()) {
          std::vector<std::uint8_t> out;
          const Status st = decode_symbols(e, payload.data(), payload.size(), count, isa, &out);
          std::vector<std::uint8_t> reference;
          ZCHECK_EQ(st.ok(), decode_symbols(e, payload.data(), payload.size(), count, Isa::kScalar, &reference).ok());
          if (st.ok()) ZCHECK(out == reference);
        }
      }
    }
  }
}

ZTEST(huffman_corrupt_coded_planes_are_rejected_or_decoded_safely) {
  // Flip every bit of a whole small coded plane (header, table, sizes, payload).
  const auto symbols = exponent_symbols(700, 13);
  zipmoe::codec::EncodeOptions options;
  options.codec = Codec::kHuffman;
  options.segment_symbols = 300;
  std::vector<std::uint8_t> plane;
  zipmoe::codec::PlaneEncodeResult result;
  ZCHECK(zipmoe::codec::encode_plane(symbols.data(), symbols.size(), options, nullptr, &plane, &result).ok());
  ZCHECK(result.codec == Codec::kHuffman);
  for (std::size_t bit = 0; bit < plane.size() * 8; ++bit) {
    std::vector<std::uint8_t> p = plane;
    p[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    zipmoe::codec::CodedPlane parsed;
    if (!zipmoe::codec::CodedPlane::parse(p.data(), p.size(), &parsed).ok()) continue;
    if (parsed.num_symbols() > 100000) continue;
    std::vector<std::uint8_t> out(parsed.num_symbols());
    for (Isa isa : zipmoe::supported_isas()) {
      (void)parsed.decode(zipmoe::codec::make_symbol_target(out.data()), nullptr, isa);
    }
  }
}

// Canonical length-limited Huffman coder: table construction (package-merge),
// serialization, encoding, decoder preparation and registration. The format is
// specified in huffman.h; the segment decoders are in huffman_decode.inc.
#include "codec/huffman/huffman.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"

namespace zipmoe::codec {

namespace {

constexpr std::uint32_t kNoCode = 0x80000000u;  // encoder entry of a symbol without a code

// ---------------------------------------------------------------------------
// Canonical codes

// Codes (MSB-first canonical values) of the symbols that have a length.
void canonical_codes(const std::uint8_t lengths[256], std::uint16_t codes[256]) {
  int count_of_length[kHuffmanMaxCodeLength + 1] = {};
  for (int s = 0; s < 256; ++s) ++count_of_length[lengths[s]];
  count_of_length[0] = 0;
  std::uint32_t next_code[kHuffmanMaxCodeLength + 1] = {};
  std::uint32_t code = 0;
  for (int l = 1; l <= kHuffmanMaxCodeLength; ++l) {
    code = (code + count_of_length[l - 1]) << 1;
    next_code[l] = code;
  }
  for (int s = 0; s < 256; ++s) {
    codes[s] = lengths[s] ? static_cast<std::uint16_t>(next_code[lengths[s]]++) : 0;
  }
}

// The stream is LSB-first while canonical codes are MSB-first: the code's first
// bit must land in the lowest position.
std::uint32_t reverse_bits(std::uint32_t value, int length) {
  std::uint32_t out = 0;
  for (int i = 0; i < length; ++i) out |= ((value >> i) & 1u) << (length - 1 - i);
  return out;
}

// Encoder entries: reversed code in bits 0..15, length in bits 24..27, kNoCode
// for symbols without a code (so one OR over a segment finds them).
void encoder_entries(const std::uint8_t lengths[256], std::uint32_t entries[256]) {
  std::uint16_t codes[256];
  canonical_codes(lengths, codes);
  for (int s = 0; s < 256; ++s) {
    entries[s] = lengths[s] ? reverse_bits(codes[s], lengths[s]) | (std::uint32_t(lengths[s]) << 24) : kNoCode;
  }
}

void serialize_table(const std::uint8_t lengths[256], std::vector<std::uint8_t>* table) {
  int first = 0, last = 255;
  while (first < 256 && lengths[first] == 0) ++first;
  while (last > first && lengths[last] == 0) --last;
  const int span = last - first + 1;
  table->assign(2 + (span + 1) / 2, 0);
  (*table)[0] = static_cast<std::uint8_t>(first);
  (*table)[1] = static_cast<std::uint8_t>(last);
  for (int i = 0; i < span; ++i) (*table)[2 + i / 2] |= static_cast<std::uint8_t>(lengths[first + i] << (4 * (i & 1)));
}

// Symbol counts of the four streams of an n-symbol segment, and where each starts.
void stream_layout(std::size_t n, std::size_t count[kHuffmanStreams], std::size_t first[kHuffmanStreams]) {
  const std::size_t q = n / kHuffmanStreams, r = n % kHuffmanStreams;
  std::size_t at = 0;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    count[k] = q + (std::size_t(k) < r ? 1 : 0);
    first[k] = at;
    at += count[k];
  }
}

// ---------------------------------------------------------------------------
// Encoding

// Writes the codes of n symbols LSB-first from `out` and returns the bytes
// written. Stores 8 bytes at a time: `out` needs 8 bytes of slack past the
// stream's maximal size. *missing collects kNoCode.
std::size_t encode_stream(const std::uint32_t entries[256], const std::uint8_t* symbols, std::size_t n,
                          std::uint8_t* out, std::uint32_t* missing) {
  std::uint8_t* w = out;
  std::uint64_t acc = 0;  // pending bits, the oldest lowest
  unsigned pending = 0;   // < 8 after each flush
  std::uint32_t seen = 0;
  std::size_t i = 0;
  // Four codes of at most 11 bits fit on top of 7 pending bits.
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      const std::uint32_t e = entries[symbols[i + k]];
      seen |= e;
      acc |= std::uint64_t(e & 0xffffu) << pending;
      pending += (e >> 24) & 15u;
    }
    std::memcpy(w, &acc, 8);
    w += pending >> 3;
    acc >>= pending & ~7u;
    pending &= 7;
  }
  for (; i < n; ++i) {
    const std::uint32_t e = entries[symbols[i]];
    seen |= e;
    acc |= std::uint64_t(e & 0xffffu) << pending;
    pending += (e >> 24) & 15u;
    std::memcpy(w, &acc, 8);
    w += pending >> 3;
    acc >>= pending & ~7u;
    pending &= 7;
  }
  if (pending) {
    std::memcpy(w, &acc, 8);
    ++w;
  }
  *missing |= seen & kNoCode;
  return static_cast<std::size_t>(w - out);
}

// ---------------------------------------------------------------------------
// Decoding tables

class HuffmanDecoderTables final : public DecoderTables {
 public:
  HuffmanLookup lookup;
};

void build_lookup(const std::uint8_t lengths[256], HuffmanLookup* lookup) {
  std::uint16_t codes[256];
  canonical_codes(lengths, codes);
  constexpr std::uint32_t kWindows = 1u << kHuffmanWindowBits;
  // The code is complete: every window starts with exactly one code.
  for (int s = 0; s < 256; ++s) {
    const int l = lengths[s];
    if (!l) continue;
    const std::uint16_t entry = static_cast<std::uint16_t>(s | (l << 8));
    for (std::uint32_t w = reverse_bits(codes[s], l); w < kWindows; w += 1u << l) lookup->single[w] = entry;
  }
  // A code is whole inside the window when its length fits the bits left; the
  // unknown bits above the window are zero in the sub-lookup, which cannot
  // change a code that fits (prefix property).
  for (std::uint32_t w = 0; w < kWindows; ++w) {
    std::uint64_t entry = 0;
    unsigned used = 0, symbols = 0;
    while (symbols < kHuffmanMaxSymbolsPerEntry) {
      const std::uint16_t next = lookup->single[w >> used];
      const unsigned l = next >> 8;
      if (used + l > kHuffmanWindowBits) break;
      entry |= std::uint64_t(next & 0xffu) << (8 * symbols);
      used += l;
      ++symbols;
    }
    lookup->multi[w] = entry | std::uint64_t(symbols) << kHuffmanEntryCountShift;
    lookup->multi_bits[w] = static_cast<std::uint8_t>(used);
  }
}

using HuffmanKernel = bool (*)(const HuffmanLookup&, const HuffmanStreams&, const MergeTarget&, HuffmanFailure*,
                               HuffmanChecksums*);

Status split_payload(const std::uint8_t* payload, std::size_t payload_size, std::size_t count,
                     HuffmanStreams* streams) {
  if (payload_size < kHuffmanSegmentHeaderBytes) {
    return Status::Format("huffman segment payload of " + std::to_string(payload_size) +
                          " bytes is shorter than its " + std::to_string(kHuffmanSegmentHeaderBytes) +
                          "-byte header");
  }
  const std::size_t available = payload_size - kHuffmanSegmentHeaderBytes;
  std::uint64_t sizes[kHuffmanStreams];
  std::uint64_t declared = 0;
  for (int k = 0; k + 1 < kHuffmanStreams; ++k) {
    sizes[k] = load_le32(payload + 4 * k);
    declared += sizes[k];
  }
  if (declared > available) {
    return Status::Format("huffman segment header declares " + std::to_string(declared) +
                          " bytes for streams 0-2 but the payload holds " + std::to_string(available));
  }
  sizes[kHuffmanStreams - 1] = available - declared;
  stream_layout(count, streams->count, streams->first);
  const std::uint8_t* at = payload + kHuffmanSegmentHeaderBytes;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    // A stream needs 1 to 11 bits per symbol: reject impossible sizes before decoding.
    const std::uint64_t c = streams->count[k];
    if (sizes[k] < (c + 7) / 8 || sizes[k] > (c * kHuffmanMaxCodeLength + 7) / 8) {
      return Status::Format("huffman stream " + std::to_string(k) + " has " + std::to_string(sizes[k]) +
                            " bytes, impossible for " + std::to_string(c) + " symbols");
    }
    streams->begin[k] = at;
    at += sizes[k];
    streams->end[k] = at;
  }
  return Status::Ok();
}

Status failure_status(const HuffmanFailure& f) {
  const std::string where = "huffman stream " + std::to_string(f.stream) + " (" + std::to_string(f.stream_bytes) +
                            " bytes)";
  switch (f.kind) {
    case HuffmanFailureKind::kTruncated:
      return Status::Format(where + " ends inside a code at bit " + std::to_string(f.bits_used) +
                            " (truncated or corrupt)");
    case HuffmanFailureKind::kTrailingBytes:
      return Status::Format(where + " has bytes left over: its symbols end at bit " + std::to_string(f.bits_used));
    case HuffmanFailureKind::kNonZeroPadding:
      return Status::Format(where + " has non-zero padding bits after bit " + std::to_string(f.bits_used));
    case HuffmanFailureKind::kNone: break;
  }
  return Status::Internal("huffman decoder failed without a reason");
}

template <HuffmanKernel kernel>
Status decode_segment(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                      std::size_t count, const MergeTarget& target) {
  const HuffmanLookup& lookup = static_cast<const HuffmanDecoderTables&>(tables).lookup;
  HuffmanStreams streams;
  ZIPMOE_RETURN_IF_ERROR(split_payload(payload, payload_size, count, &streams));
  HuffmanFailure failure{HuffmanFailureKind::kNone, 0, 0, 0};
  if (!kernel(lookup, streams, target, &failure, nullptr)) return failure_status(failure);
  return Status::Ok();
}

// The streams are back to back after the header, and their elements too: the
// per-stream checksums combine in stream order.
template <HuffmanKernel kernel>
Status decode_segment_checksummed(const DecoderTables& tables, const std::uint8_t* payload, std::size_t payload_size,
                                  std::size_t count, const MergeTarget& target, SegmentChecksums* checksums) {
  const HuffmanLookup& lookup = static_cast<const HuffmanDecoderTables&>(tables).lookup;
  HuffmanStreams streams;
  ZIPMOE_RETURN_IF_ERROR(split_payload(payload, payload_size, count, &streams));
  HuffmanFailure failure{HuffmanFailureKind::kNone, 0, 0, 0};
  HuffmanChecksums parts;
  if (!kernel(lookup, streams, target, &failure, &parts)) return failure_status(failure);
  std::uint32_t stream_crc = crc32c(payload, kHuffmanSegmentHeaderBytes);
  std::uint32_t sm_crc = 0;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    stream_crc = crc32c_combine(stream_crc, parts.stream[k], static_cast<std::uint64_t>(streams.end[k] - streams.begin[k]));
    sm_crc = crc32c_combine(sm_crc, parts.sm_high[k], streams.count[k]);
  }
  checksums->payload = stream_crc;
  checksums->sm_high = sm_crc;
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Coder entry points

Status build_table(const Histogram& histogram, std::vector<std::uint8_t>* table) {
  bool any = false;
  for (std::uint64_t c : histogram) any |= c != 0;
  if (!any) return Status::InvalidArgument("huffman: cannot build a code for an empty histogram");
  std::uint8_t lengths[256];
  huffman_code_lengths(histogram, kHuffmanMaxCodeLength, lengths);
  serialize_table(lengths, table);
  return Status::Ok();
}

std::uint64_t estimate_payload_bytes(const std::uint8_t* table, std::size_t table_size, const Histogram& histogram,
                                     std::size_t num_segments) {
  std::uint8_t lengths[256];
  if (!huffman_parse_table(table, table_size, lengths).ok()) return std::numeric_limits<std::uint64_t>::max();
  std::uint64_t bits = 0;
  for (int s = 0; s < 256; ++s) {
    if (histogram[s] && !lengths[s]) return std::numeric_limits<std::uint64_t>::max();
    bits += histogram[s] * lengths[s];
  }
  // Each stream pads to a byte boundary: 3.5 bits on average, 14 per segment.
  return (bits + 14 * std::uint64_t(num_segments) + 7) / 8 + kHuffmanSegmentHeaderBytes * num_segments;
}

Status encode_segment(const std::uint8_t* table, std::size_t table_size, const std::uint8_t* symbols, std::size_t n,
                      std::vector<std::uint8_t>* payload) {
  std::uint8_t lengths[256];
  ZIPMOE_RETURN_IF_ERROR(huffman_parse_table(table, table_size, lengths));
  std::uint32_t entries[256];
  encoder_entries(lengths, entries);
  std::size_t count[kHuffmanStreams], first[kHuffmanStreams];
  stream_layout(n, count, first);
  std::size_t bound = kHuffmanSegmentHeaderBytes + 8;
  for (int k = 0; k < kHuffmanStreams; ++k) bound += (count[k] * kHuffmanMaxCodeLength + 7) / 8;
  const std::size_t start = payload->size();
  payload->resize(start + bound);
  std::uint8_t* base = payload->data() + start;
  std::uint8_t* at = base + kHuffmanSegmentHeaderBytes;
  std::uint32_t missing = 0;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    const std::size_t bytes = encode_stream(entries, symbols + first[k], count[k], at, &missing);
    if (k + 1 < kHuffmanStreams) {
      if (bytes > 0xffffffffu) return Status::Internal("huffman stream over 4 GiB");
      store_le32(base + 4 * k, static_cast<std::uint32_t>(bytes));
    }
    at += bytes;
  }
  if (missing) {
    payload->resize(start);
    return Status::InvalidArgument("huffman: the segment holds a symbol that has no code in the table");
  }
  payload->resize(static_cast<std::size_t>(at - payload->data()));
  return Status::Ok();
}

Status prepare_decoder(const std::uint8_t* table, std::size_t table_size, std::unique_ptr<DecoderTables>* out) {
  std::uint8_t lengths[256];
  ZIPMOE_RETURN_IF_ERROR(huffman_parse_table(table, table_size, lengths));
  auto tables = std::make_unique<HuffmanDecoderTables>();
  build_lookup(lengths, &tables->lookup);
  *out = std::move(tables);
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------
// Package-merge (Larmore & Hirschberg): the optimal code with lengths <= L is
// read off the 2n-2 cheapest items of a list built by L-1 rounds of "pair up
// the previous level's items into packages, merge them with the leaves".

void huffman_code_lengths(const Histogram& histogram, int max_length, std::uint8_t lengths[256]) {
  std::memset(lengths, 0, 256);
  std::vector<int> leaves;  // symbols with a count, lightest first
  for (int s = 0; s < 256; ++s) {
    if (histogram[s]) leaves.push_back(s);
  }
  if (leaves.empty()) return;
  if (leaves.size() == 1) {
    // A one-symbol code is incomplete; a second, unused symbol completes it.
    lengths[leaves[0]] = 1;
    lengths[leaves[0] == 0 ? 1 : 0] = 1;
    return;
  }
  std::stable_sort(leaves.begin(), leaves.end(), [&](int a, int b) { return histogram[a] < histogram[b]; });
  const std::size_t n = leaves.size();
  while (max_length < 8 && (std::size_t(1) << max_length) < n) ++max_length;  // n codes need ceil(log2 n) bits

  // is_package[level][i]: whether item i of that level's merged list is a package.
  std::vector<std::vector<bool>> is_package(max_length + 1);
  std::vector<std::uint64_t> previous;  // weights of the deeper level's list
  for (std::size_t i = 0; i < n; ++i) previous.push_back(histogram[leaves[i]]);
  is_package[max_length].assign(n, false);
  for (int level = max_length - 1; level >= 1; --level) {
    std::vector<std::uint64_t> merged;
    std::vector<bool>& flags = is_package[level];
    merged.reserve(n + previous.size() / 2);
    std::size_t leaf = 0, pair = 0;
    const std::size_t pairs = previous.size() / 2;
    while (leaf < n || pair < pairs) {
      const bool take_leaf =
          pair == pairs || (leaf < n && histogram[leaves[leaf]] <= previous[2 * pair] + previous[2 * pair + 1]);
      if (take_leaf) {
        merged.push_back(histogram[leaves[leaf++]]);
        flags.push_back(false);
      } else {
        merged.push_back(previous[2 * pair] + previous[2 * pair + 1]);
        flags.push_back(true);
        ++pair;
      }
    }
    previous.swap(merged);
  }
  // Walk down from level 1: each selected leaf adds one to its symbol's length,
  // each selected package selects two items of the next level.
  std::size_t selected = 2 * n - 2;
  for (int level = 1; level <= max_length && selected > 0; ++level) {
    std::size_t leaves_taken = 0;
    for (std::size_t i = 0; i < selected; ++i) leaves_taken += is_package[level][i] ? 0 : 1;
    for (std::size_t i = 0; i < leaves_taken; ++i) ++lengths[leaves[i]];
    selected = 2 * (selected - leaves_taken);
  }
}

Status huffman_parse_table(const std::uint8_t* table, std::size_t table_size, std::uint8_t lengths[256]) {
  if (table_size < 3) return Status::Format("huffman table of " + std::to_string(table_size) + " bytes is too short");
  const int first = table[0], last = table[1];
  if (last < first) {
    return Status::Format("huffman table symbol range " + std::to_string(first) + ".." + std::to_string(last) +
                          " is empty");
  }
  const int span = last - first + 1;
  const std::size_t expected = 2 + std::size_t(span + 1) / 2;
  if (table_size != expected) {
    return Status::Format("huffman table is " + std::to_string(table_size) + " bytes, expected " +
                          std::to_string(expected) + " for symbols " + std::to_string(first) + ".." +
                          std::to_string(last));
  }
  std::memset(lengths, 0, 256);
  std::uint32_t kraft = 0;  // sum of 2^(11 - length)
  for (int i = 0; i < span; ++i) {
    const int length = (table[2 + i / 2] >> (4 * (i & 1))) & 15;
    if (length > kHuffmanMaxCodeLength) {
      return Status::Format("huffman code length " + std::to_string(length) + " of symbol " +
                            std::to_string(first + i) + " exceeds " + std::to_string(kHuffmanMaxCodeLength));
    }
    lengths[first + i] = static_cast<std::uint8_t>(length);
    if (length) kraft += 1u << (kHuffmanMaxCodeLength - length);
  }
  if ((span & 1) && (table[table_size - 1] >> 4) != 0) {
    return Status::Format("huffman table has a non-zero padding nibble");
  }
  if (!lengths[first] || !lengths[last]) {
    return Status::Format("huffman table range " + std::to_string(first) + ".." + std::to_string(last) +
                          " does not start and end with coded symbols");
  }
  if (kraft != (1u << kHuffmanMaxCodeLength)) {
    return Status::Format(std::string("huffman code lengths are ") +
                          (kraft > (1u << kHuffmanMaxCodeLength) ? "over-subscribed" : "incomplete") +
                          " (Kraft sum " + std::to_string(kraft) + "/" +
                          std::to_string(1u << kHuffmanMaxCodeLength) + ")");
  }
  return Status::Ok();
}

const Coder& huffman_coder() {
  static const Coder coder = [] {
    Coder c{Codec::kHuffman, build_table, estimate_payload_bytes, encode_segment, prepare_decoder, {}, {}};
    c.decode[static_cast<int>(Isa::kScalar)] = decode_segment<scalar::huffman_decode_streams>;
    c.decode_checksummed[static_cast<int>(Isa::kScalar)] = decode_segment_checksummed<scalar::huffman_decode_streams>;
#if defined(ZIPMOE_ARCH_X86)
    c.decode[static_cast<int>(Isa::kAvx2)] = decode_segment<avx2::huffman_decode_streams>;
    c.decode[static_cast<int>(Isa::kAvx512)] = decode_segment<avx512::huffman_decode_streams>;
    c.decode_checksummed[static_cast<int>(Isa::kAvx2)] = decode_segment_checksummed<avx2::huffman_decode_streams>;
    c.decode_checksummed[static_cast<int>(Isa::kAvx512)] = decode_segment_checksummed<avx512::huffman_decode_streams>;
#endif
#if defined(ZIPMOE_ARCH_ARM64)
    c.decode[static_cast<int>(Isa::kNeon)] = decode_segment<neon::huffman_decode_streams>;
    c.decode_checksummed[static_cast<int>(Isa::kNeon)] = decode_segment_checksummed<neon::huffman_decode_streams>;
#endif
    return c;
  }();
  return coder;
}

}  // namespace zipmoe::codec

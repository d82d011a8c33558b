// Static rANS: frequency normalization, table serialization, encoding and
// decoder preparation. The format is specified in rans.h.
#include "codec/rans/rans.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "common/bytes.h"

namespace zipmoe::codec {

RansDecoderTables::~RansDecoderTables() = default;

namespace {

using Frequencies = std::array<std::uint32_t, 256>;

// Bits saved by raising a symbol of `count` occurrences from frequency f to f + 1.
// Raising one symbol and lowering another is worthwhile exactly when the gain of
// the first exceeds the gain the second had at its lower value; computing both
// with this one expression keeps the exchange loop from cycling on rounding noise.
double raise_gain(std::uint64_t count, std::uint32_t f) {
  return double(count) * (std::log2(double(f + 1)) - std::log2(double(f)));
}

// Frequencies summing to kRansScale that minimise sum count[s] * log2(M / f[s])
// with f[s] >= 1 wherever count[s] > 0. The cost is separable and convex in each
// f[s], so the optimum is where no single exchange of one unit between two symbols
// lowers it; proportional rounding starts within a few units of it.
Frequencies normalize(const Histogram& histogram) {
  std::uint64_t total = 0;
  for (std::uint64_t c : histogram) total += c;
  Frequencies f{};
  std::uint32_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (!histogram[s]) continue;
    const double share = std::floor(double(histogram[s]) * kRansScale / double(total));
    f[s] = std::max<std::uint32_t>(1, static_cast<std::uint32_t>(std::min(share, double(kRansScale - 1))));
    sum += f[s];
  }
  // gain[s]: what one more unit buys; loss[s]: what one unit less costs (infinite at f = 1).
  std::array<double, 256> gain{}, loss{};
  const double kInfinity = std::numeric_limits<double>::infinity();
  auto refresh = [&](int s) {
    gain[s] = raise_gain(histogram[s], f[s]);
    loss[s] = f[s] > 1 ? raise_gain(histogram[s], f[s] - 1) : kInfinity;
  };
  for (int s = 0; s < 256; ++s) {
    if (histogram[s]) refresh(s);
  }
  auto best_raise = [&] {
    int best = -1;
    for (int s = 0; s < 256; ++s) {
      if (histogram[s] && (best < 0 || gain[s] > gain[best])) best = s;
    }
    return best;
  };
  auto best_lower = [&] {
    int best = -1;
    for (int s = 0; s < 256; ++s) {
      if (histogram[s] && f[s] > 1 && (best < 0 || loss[s] < loss[best])) best = s;
    }
    return best;
  };
  while (sum < kRansScale) {
    const int s = best_raise();
    ++f[s];
    ++sum;
    refresh(s);
  }
  while (sum > kRansScale) {
    const int s = best_lower();  // exists: at most 256 symbols at f = 1 sum to less than 4096
    --f[s];
    --sum;
    refresh(s);
  }
  // Each exchange strictly lowers the cost, so the loop ends; the cap is a guard.
  for (int guard = 0; guard < 100000; ++guard) {
    const int up = best_raise();
    const int down = best_lower();
    if (down < 0 || up == down || !(gain[up] > loss[down])) break;
    ++f[up];
    --f[down];
    refresh(up);
    refresh(down);
  }
  return f;
}

void append_frequency(std::vector<std::uint8_t>* out, std::uint32_t f) {
  if (f < 128) {
    out->push_back(static_cast<std::uint8_t>(f));
  } else {
    out->push_back(static_cast<std::uint8_t>(0x80 | (f & 0x7f)));
    out->push_back(static_cast<std::uint8_t>(f >> 7));
  }
}

void serialize(const Frequencies& f, std::vector<std::uint8_t>* out) {
  out->clear();
  out->push_back(0);  // run count, patched below
  int runs = 0;
  for (int s = 0; s < 256;) {
    if (!f[s]) {
      ++s;
      continue;
    }
    int end = s;
    while (end < 256 && f[end]) ++end;
    out->push_back(static_cast<std::uint8_t>(s));
    out->push_back(static_cast<std::uint8_t>(end - s - 1));
    ++runs;
    s = end;
  }
  (*out)[0] = static_cast<std::uint8_t>(runs);
  for (int s = 0; s < 256; ++s) {
    if (f[s]) append_frequency(out, f[s]);
  }
}

// Parses and validates a serialized table (untrusted bytes).
Status parse_table(const std::uint8_t* table, std::size_t table_size, Frequencies* frequencies) {
  ByteReader r(table, table_size);
  std::uint8_t runs = 0;
  if (!r.u8(&runs)) return Status::Format("rans table is empty");
  if (runs == 0 || runs > 128) return Status::Format("rans table has " + std::to_string(runs) + " symbol runs");
  Frequencies f{};
  std::array<bool, 256> present{};
  int next_allowed = 0;  // the first symbol a run may start at
  int symbols = 0;
  for (int i = 0; i < runs; ++i) {
    std::uint8_t first = 0, length_minus_one = 0;
    if (!(r.u8(&first) && r.u8(&length_minus_one))) return Status::Format("rans table truncated in its symbol runs");
    const int last = int(first) + length_minus_one;
    if (first < next_allowed || last > 255) {
      return Status::Format("rans table symbol run " + std::to_string(i) + " (" + std::to_string(first) + " + " +
                            std::to_string(int(length_minus_one) + 1) + ") is out of order or out of range");
    }
    for (int s = first; s <= last; ++s) present[s] = true;
    symbols += last - first + 1;
    next_allowed = last + 2;
  }
  if (symbols < 2) return Status::Format("rans table codes a single symbol (a constant plane is not rANS-coded)");
  std::uint32_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (!present[s]) continue;
    std::uint8_t b0 = 0, b1 = 0;
    if (!r.u8(&b0)) return Status::Format("rans table truncated in its frequencies");
    std::uint32_t value = b0;
    if (b0 & 0x80) {
      if (!r.u8(&b1)) return Status::Format("rans table truncated in its frequencies");
      if (b1 == 0 || b1 > 31) {
        return Status::Format("rans table frequency of symbol " + std::to_string(s) + " is badly encoded");
      }
      value = (b0 & 0x7fu) | (std::uint32_t(b1) << 7);
    }
    if (value == 0 || value >= kRansScale) {
      return Status::Format("rans table frequency of symbol " + std::to_string(s) + " is " + std::to_string(value) +
                            " (must be in [1, 4095])");
    }
    f[s] = value;
    sum += value;
  }
  if (sum != kRansScale) {
    return Status::Format("rans table frequencies sum to " + std::to_string(sum) + ", not 4096");
  }
  if (r.remaining() != 0) {
    return Status::Format("rans table has " + std::to_string(r.remaining()) + " trailing bytes");
  }
  *frequencies = f;
  return Status::Ok();
}

// Bits of an ideal coder for `histogram` under frequencies f; infinite when some
// occurring symbol has no frequency.
double coded_bits(const Frequencies& f, const Histogram& histogram) {
  double bits = 0.0;
  for (int s = 0; s < 256; ++s) {
    if (!histogram[s]) continue;
    if (!f[s]) return std::numeric_limits<double>::infinity();
    bits += double(histogram[s]) * (kRansScaleBits - std::log2(double(f[s])));
  }
  return bits;
}

// The slot layout of rans.h, built once per table by encoder and decoder.
struct SlotLayout {
  std::uint32_t entries[kRansScale];     // per slot: bias | symbol << 12 | f << 20
  std::uint16_t slot_of[kRansScale];     // index cum[s] + bias -> slot
  std::uint32_t bucket_primary[kRansBuckets];
  std::uint32_t bucket_alias[kRansBuckets];
  std::uint32_t bucket_divide[kRansBuckets];
  std::uint32_t escape_frequency;
};

void build_slot_layout(const Frequencies& f, SlotLayout* layout) {
  constexpr int kNoSymbol = -1;
  constexpr int kEscape = -2;
  int present[256];
  int num_present = 0;
  for (int s = 0; s < 256; ++s) {
    if (f[s]) present[num_present++] = s;
  }
  std::array<bool, 256> escaped{};
  if (num_present > int(kRansBuckets)) {
    int by_frequency[256];
    std::copy(present, present + num_present, by_frequency);
    std::stable_sort(by_frequency, by_frequency + num_present, [&](int a, int b) { return f[a] < f[b]; });
    for (int i = 0; i < num_present - int(kRansBuckets) + 1; ++i) escaped[by_frequency[i]] = true;
  }
  // Items: the regular symbols ascending, then the escape item, then padding.
  int item_symbol[kRansBuckets];
  std::uint32_t remaining[kRansBuckets];
  std::size_t num_items = 0;
  std::uint32_t escape_frequency = 0;
  for (int i = 0; i < num_present; ++i) {
    const int s = present[i];
    if (escaped[s]) {
      escape_frequency += f[s];
    } else {
      item_symbol[num_items] = s;
      remaining[num_items++] = f[s];
    }
  }
  if (escape_frequency) {
    item_symbol[num_items] = kEscape;
    remaining[num_items++] = escape_frequency;
  }
  for (; num_items < kRansBuckets; ++num_items) {
    item_symbol[num_items] = kNoSymbol;
    remaining[num_items] = 0;
  }
  // Alias buckets; the queues hold item indices, each item enters `small` at most once.
  std::size_t small[kRansBuckets], large[kRansBuckets];
  std::size_t small_head = 0, small_tail = 0, large_head = 0, large_tail = 0;
  for (std::size_t i = 0; i < kRansBuckets; ++i) {
    if (remaining[i] < kRansBucketSlots) {
      small[small_tail++] = i;
    } else {
      large[large_tail++] = i;
    }
  }
  std::uint32_t divide[kRansBuckets];
  std::size_t alias[kRansBuckets];
  while (small_head < small_tail && large_head < large_tail) {
    const std::size_t s = small[small_head++];
    const std::size_t l = large[large_head];
    divide[s] = remaining[s];
    alias[s] = l;
    remaining[l] -= kRansBucketSlots - remaining[s];
    if (remaining[l] < kRansBucketSlots) {
      ++large_head;
      small[small_tail++] = l;
    }
  }
  for (; large_head < large_tail; ++large_head) {
    divide[large[large_head]] = kRansBucketSlots;
    alias[large[large_head]] = large[large_head];
  }
  // Biases in ascending slot order; escape slots are dealt out to the escape symbols.
  std::uint32_t next_bias[kRansBuckets] = {};
  std::uint32_t cum[256];
  std::uint32_t running = 0;
  for (int s = 0; s < 256; ++s) {
    cum[s] = running;
    running += f[s];
  }
  int escape_index = 0;  // into present[], the escape symbol now being dealt
  std::uint32_t escape_bias = 0;
  auto next_escape_symbol = [&] {
    while (!escaped[present[escape_index]]) ++escape_index;
    return present[escape_index];
  };
  std::uint32_t part_first_entry[kRansBuckets][2];
  for (std::size_t b = 0; b < kRansBuckets; ++b) {
    for (std::uint32_t o = 0; o < kRansBucketSlots; ++o) {
      const bool primary = o < divide[b];
      const std::size_t item = primary ? b : alias[b];
      int symbol = item_symbol[item];
      std::uint32_t bias = 0;
      if (symbol == kEscape) {
        symbol = next_escape_symbol();
        bias = escape_bias++;
        if (escape_bias == f[symbol]) {
          escape_bias = 0;
          ++escape_index;
        }
      } else {
        bias = next_bias[item]++;
      }
      const std::uint32_t slot = std::uint32_t(b) * kRansBucketSlots + o;
      const std::uint32_t entry = bias | (std::uint32_t(symbol) << kRansEntrySymbolShift) |
                                  (f[symbol] << kRansEntryFreqShift);
      layout->entries[slot] = entry;
      layout->slot_of[cum[symbol] + bias] = static_cast<std::uint16_t>(slot);
      if (o == 0 || o == divide[b]) {
        // An escape part has no single symbol: f = 0 sends its lanes to the slot table.
        part_first_entry[b][primary ? 0 : 1] = item_symbol[item] == kEscape ? 0 : entry;
      }
    }
    layout->bucket_primary[b] = divide[b] > 0 ? part_first_entry[b][0] : 0;
    layout->bucket_alias[b] = divide[b] < kRansBucketSlots ? part_first_entry[b][1] : 0;
    layout->bucket_divide[b] = divide[b];
  }
  layout->escape_frequency = escape_frequency;
}

Status build_table(const Histogram& histogram, std::vector<std::uint8_t>* table) {
  int distinct = 0;
  for (std::uint64_t c : histogram) distinct += c != 0;
  if (distinct < 2) {
    return Status::InvalidArgument("rans needs at least two distinct symbols (" + std::to_string(distinct) +
                                   " given)");
  }
  serialize(normalize(histogram), table);
  return Status::Ok();
}

// Bytes a lane adds beyond the ideal code length: its stored 32-bit final state,
// minus the 16-bit initial state it absorbs, plus the unused capacity of the final
// state (whose log2 averages about 24 bits for a state spread log-uniformly over
// [2^16, 2^32)): 32 - 16 + (32 - 24) = 24 bits.
constexpr double kLaneOverheadBytes = 3.0;

std::uint64_t estimate_payload_bytes(const std::uint8_t* table, std::size_t table_size, const Histogram& histogram,
                                     std::size_t num_segments) {
  Frequencies f;
  if (!parse_table(table, table_size, &f).ok()) return std::numeric_limits<std::uint64_t>::max();
  const double bits = coded_bits(f, histogram);
  if (!std::isfinite(bits)) return std::numeric_limits<std::uint64_t>::max();
  std::uint64_t total = 0;
  for (std::uint64_t c : histogram) total += c;
  const std::uint64_t lanes = std::min<std::uint64_t>(total, std::uint64_t(num_segments) * kRansLanes);
  return static_cast<std::uint64_t>(std::ceil(bits / 8.0 + kLaneOverheadBytes * double(lanes)));
}

struct EncodeSymbol {
  std::uint32_t freq;
  std::uint32_t cum;
  // States at or above f << 20 emit a word before coding the symbol: f << 20 is the
  // first state whose coded successor would pass 2^32 (x / f * 4096 >= 2^32).
  std::uint32_t renorm_limit;
};

Status encode_segment(const std::uint8_t* table, std::size_t table_size, const std::uint8_t* symbols, std::size_t n,
                      std::vector<std::uint8_t>* payload) {
  Frequencies f;
  ZIPMOE_RETURN_IF_ERROR(parse_table(table, table_size, &f).with_context("rans encode"));
  if (n == 0) return Status::Ok();
  auto layout = std::make_unique<SlotLayout>();
  build_slot_layout(f, layout.get());
  const std::uint16_t* slot_of = layout->slot_of;
  std::array<EncodeSymbol, 256> code{};
  std::uint32_t cum = 0;
  for (int s = 0; s < 256; ++s) {
    code[s] = {f[s], cum, f[s] << (32 - kRansScaleBits)};
    cum += f[s];
  }
  const std::size_t lanes_used = std::min(n, kRansLanes);
  // At most one word per symbol; written from the top down so that they end up in
  // the decoder's reading order. Before each symbol top >= 1 (one per symbol left).
  std::unique_ptr<std::uint16_t[]> words(new std::uint16_t[n]);
  std::size_t top = n;
  std::uint32_t state[kRansLanes];
  for (std::uint32_t& x : state) x = kRansStateLow;
  std::uint32_t missing = 0;  // non-zero once a symbol without frequency was seen
  auto encode_one = [&](std::size_t lane, std::uint8_t symbol) {
    const EncodeSymbol& c = code[symbol];
    missing |= c.freq == 0;
    const std::uint32_t freq = c.freq | (c.freq == 0);  // no division by zero before the error is returned
    std::uint32_t x = state[lane];
    // Branch-free: whether a lane emits is as unpredictable as a coin toss. The
    // word is stored either way and kept only if top moves past it.
    const std::uint32_t emits = x >= c.renorm_limit;
    words[top - 1] = static_cast<std::uint16_t>(x);
    top -= emits;
    x >>= emits * 16;
    const std::uint32_t quotient = x / freq;
    state[lane] = (quotient << kRansScaleBits) + slot_of[(c.cum + (x - quotient * freq)) & (kRansScale - 1)];
  };
  const std::size_t full_steps = n / kRansLanes;
  const std::size_t partial = n % kRansLanes;
  for (std::size_t lane = partial; lane-- > 0;) encode_one(lane, symbols[full_steps * kRansLanes + lane]);
  for (std::size_t step = full_steps; step-- > 0;) {
    const std::uint8_t* in = symbols + step * kRansLanes;
    for (std::size_t lane = kRansLanes; lane-- > 0;) encode_one(lane, in[lane]);
  }
  if (missing) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!f[symbols[i]]) {
        return Status::InvalidArgument("rans encode: symbol " + std::to_string(symbols[i]) + " at " +
                                       std::to_string(i) + " is not in the code table");
      }
    }
  }
  const std::size_t num_words = n - top;
  const std::size_t at = payload->size();
  payload->resize(at + 4 * lanes_used + 2 * num_words);
  std::uint8_t* out = payload->data() + at;
  for (std::size_t lane = 0; lane < lanes_used; ++lane) store_le32(out + 4 * lane, state[lane]);
  std::memcpy(out + 4 * lanes_used, words.get() + top, 2 * num_words);
  return Status::Ok();
}

Status prepare_decoder(const std::uint8_t* table, std::size_t table_size, std::unique_ptr<DecoderTables>* out) {
  Frequencies f;
  ZIPMOE_RETURN_IF_ERROR(parse_table(table, table_size, &f));
  auto layout = std::make_unique<SlotLayout>();
  build_slot_layout(f, layout.get());
  auto tables = std::make_unique<RansDecoderTables>();
  std::memcpy(tables->slots, layout->entries, sizeof(tables->slots));
  std::memcpy(tables->bucket_primary, layout->bucket_primary, sizeof(tables->bucket_primary));
  std::memcpy(tables->bucket_alias, layout->bucket_alias, sizeof(tables->bucket_alias));
  std::memcpy(tables->bucket_divide, layout->bucket_divide, sizeof(tables->bucket_divide));
  tables->escape_frequency = layout->escape_frequency;
  *out = std::move(tables);
  return Status::Ok();
}

}  // namespace

Status rans_parse_table(const std::uint8_t* table, std::size_t table_size, std::array<std::uint32_t, 256>* f) {
  return parse_table(table, table_size, f);
}

Status rans_open_segment(const std::uint8_t* payload, std::size_t payload_size, std::size_t count,
                         RansSegment* segment) {
  const std::size_t lanes_used = std::min(count, kRansLanes);
  if (payload_size < 4 * lanes_used || (payload_size - 4 * lanes_used) % 2 != 0) {
    return Status::Format("rans payload of " + std::to_string(payload_size) + " bytes cannot hold " +
                          std::to_string(lanes_used) + " lane states and whole 16-bit words");
  }
  for (std::size_t lane = 0; lane < kRansLanes; ++lane) {
    std::uint32_t x = kRansStateLow;
    if (lane < lanes_used) {
      x = load_le32(payload + 4 * lane);
      if (x < kRansStateLow) {
        return Status::Format("rans lane " + std::to_string(lane) + " starts from an impossible state");
      }
    }
    segment->states[lane] = x;
  }
  segment->words = payload + 4 * lanes_used;
  segment->words_end = payload + payload_size;
  return Status::Ok();
}

const Coder& rans_coder() {
  static const Coder coder{Codec::kRans,
                           build_table,
                           estimate_payload_bytes,
                           encode_segment,
                           prepare_decoder,
                           {
                               scalar::rans_decode_segment,
#if defined(ZIPMOE_ARCH_X86)
                               avx2::rans_decode_segment,
                               avx512::rans_decode_segment,
#else
                               nullptr,
                               nullptr,
#endif
#if defined(ZIPMOE_ARCH_ARM64)
                               neon::rans_decode_segment,
#else
                               nullptr,
#endif
                           },
                           {
                               scalar::rans_decode_segment_checksummed,
#if defined(ZIPMOE_ARCH_X86)
                               avx2::rans_decode_segment_checksummed,
                               avx512::rans_decode_segment_checksummed,
#else
                               nullptr,
                               nullptr,
#endif
#if defined(ZIPMOE_ARCH_ARM64)
                               neon::rans_decode_segment_checksummed,
#else
                               nullptr,
#endif
                           }};
  return coder;
}

}  // namespace zipmoe::codec

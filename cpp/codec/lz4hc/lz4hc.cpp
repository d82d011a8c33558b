// LZ4HC exponent coder: registration, encoding through liblz4's HC compressor,
// and the segment decoder (LZ4 block decompression fused with merge_into). The
// format is specified in lz4hc.h. Without liblz4 (ZIPMOE_HAVE_LZ4 undefined)
// only the "not available" status is compiled.
#include "codec/lz4hc/lz4hc.h"

#include <string>

#if defined(ZIPMOE_HAVE_LZ4)
#include <lz4.h>
#include <lz4hc.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/bytes.h"
#endif

namespace zipmoe::codec {

Status lz4hc_unavailable_status() {
  return Status::Unsupported(
      "the lz4hc codec is not available: this build of zipmoe was made without liblz4 "
      "(install liblz4-dev, e.g. apt-get install liblz4-dev, and rebuild)");
}

#if !defined(ZIPMOE_HAVE_LZ4)

bool lz4hc_available() { return false; }

#else

bool lz4hc_available() { return true; }

namespace {

struct Lz4hcTables final : DecoderTables {};

// One HC state per thread: LZ4_compress_HC would otherwise allocate its 256 KiB
// state for every 16 KiB block.
void* hc_state() {
  thread_local std::vector<unsigned char> state(static_cast<std::size_t>(LZ4_sizeofStateHC()));
  return state.data();
}

Status compress_block(const std::uint8_t* symbols, std::size_t n, int level, std::vector<std::uint8_t>* out) {
  const int bound = LZ4_compressBound(static_cast<int>(n));
  const std::size_t at = out->size();
  out->resize(at + 4 + static_cast<std::size_t>(bound));
  const int written = LZ4_compress_HC_extStateHC(hc_state(), reinterpret_cast<const char*>(symbols),
                                                 reinterpret_cast<char*>(out->data() + at + 4), static_cast<int>(n),
                                                 bound, level);
  if (written <= 0) return Status::Internal("LZ4HC compression of a " + std::to_string(n) + "-symbol block failed");
  store_le32(out->data() + at, static_cast<std::uint32_t>(written));
  out->resize(at + 4 + static_cast<std::size_t>(written));
  return Status::Ok();
}

Status build_table(const Histogram&, std::vector<std::uint8_t>* table) {
  table->assign(1, static_cast<std::uint8_t>(kLz4hcLevel));
  return Status::Ok();
}

// LZ4's output depends on the order of the symbols, not only on their counts:
// estimate it by compressing an i.i.d. sample drawn from the histogram (a fixed
// pseudo-random sequence, so conversion stays deterministic). Exponent planes
// of weights are close to i.i.d., which is what makes this a fair estimate.
std::uint64_t estimate_payload_bytes(const std::uint8_t*, std::size_t, const Histogram& histogram,
                                     std::size_t num_segments) {
  std::uint64_t total = 0;
  for (std::uint64_t c : histogram) total += c;
  if (total == 0) return 0;
  constexpr std::size_t kSampleBlocks = 4;
  constexpr std::uint32_t kResolution = 1u << 16;
  std::vector<std::uint8_t> lookup(kResolution);
  std::uint32_t filled = 0;
  std::uint64_t cumulative = 0;
  for (int s = 0; s < 256; ++s) {
    if (!histogram[s]) continue;
    cumulative += histogram[s];
    const auto upto = static_cast<std::uint32_t>((unsigned __int128)cumulative * kResolution / total);
    for (; filled < upto; ++filled) lookup[filled] = static_cast<std::uint8_t>(s);
  }
  const std::size_t sample_symbols =
      static_cast<std::size_t>(std::min<std::uint64_t>(total, kSampleBlocks * kLz4hcBlockSymbols));
  std::vector<std::uint8_t> sample(sample_symbols);
  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  for (auto& symbol : sample) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    symbol = lookup[(state >> 20) & (kResolution - 1)];
  }
  std::vector<std::uint8_t> compressed;
  for (std::size_t at = 0; at < sample_symbols; at += kLz4hcBlockSymbols) {
    const std::size_t n = std::min(kLz4hcBlockSymbols, sample_symbols - at);
    if (!compress_block(sample.data() + at, n, kLz4hcLevel, &compressed).ok()) return UINT64_MAX;
  }
  const double per_symbol = double(compressed.size()) / double(sample_symbols);
  const std::uint64_t blocks = (total + kLz4hcBlockSymbols - 1) / kLz4hcBlockSymbols + num_segments;
  return static_cast<std::uint64_t>(per_symbol * double(total)) + blocks * 4;
}

Status encode_segment(const std::uint8_t* table, std::size_t table_size, const std::uint8_t* symbols, std::size_t n,
                      std::vector<std::uint8_t>* payload) {
  if (table_size != kLz4hcTableBytes) return Status::Internal("lz4hc table is not 1 byte");
  for (std::size_t at = 0; at < n; at += kLz4hcBlockSymbols) {
    ZIPMOE_RETURN_IF_ERROR(compress_block(symbols + at, std::min(kLz4hcBlockSymbols, n - at), table[0], payload));
  }
  return Status::Ok();
}

Status prepare_decoder(const std::uint8_t* table, std::size_t table_size, std::unique_ptr<DecoderTables>* out) {
  if (table_size != kLz4hcTableBytes) {
    return Status::Format("lz4hc table has " + std::to_string(table_size) + " bytes (expected 1)");
  }
  if (table[0] < 1 || table[0] > 12) {
    return Status::Format("lz4hc table names compression level " + std::to_string(table[0]) + " (1..12)");
  }
  *out = std::make_unique<Lz4hcTables>();
  return Status::Ok();
}

// The ISA only chooses the merge: LZ4 decompression is liblz4's own code.
template <Isa isa>
Status decode_segment(const DecoderTables&, const std::uint8_t* payload, std::size_t payload_size, std::size_t count,
                      const MergeTarget& target) {
  alignas(64) std::uint8_t block[kLz4hcBlockSymbols];
  std::size_t position = 0;
  std::size_t block_index = 0;
  for (std::size_t done = 0; done < count; done += kLz4hcBlockSymbols, ++block_index) {
    const std::size_t n = std::min(kLz4hcBlockSymbols, count - done);
    if (payload_size - position < 4) {
      return Status::Format("lz4hc payload truncated before block " + std::to_string(block_index) + " (" +
                            std::to_string(payload_size) + " bytes for " + std::to_string(count) + " symbols)");
    }
    const std::uint32_t compressed = load_le32(payload + position);
    position += 4;
    if (compressed == 0 || compressed > payload_size - position) {
      return Status::Format("lz4hc block " + std::to_string(block_index) + " declares " + std::to_string(compressed) +
                            " bytes but " + std::to_string(payload_size - position) + " remain in the payload");
    }
    const int produced = LZ4_decompress_safe(reinterpret_cast<const char*>(payload + position),
                                             reinterpret_cast<char*>(block), static_cast<int>(compressed),
                                             static_cast<int>(n));
    if (produced != static_cast<int>(n)) {
      return Status::Format("lz4hc block " + std::to_string(block_index) + " is corrupt (" +
                            (produced < 0 ? std::string("malformed LZ4 data")
                                          : "decompresses to " + std::to_string(produced) + " symbols, expected " +
                                                std::to_string(n)) +
                            ")");
    }
    position += compressed;
    merge_into(isa, target, done, block, n);
  }
  if (position != payload_size) {
    return Status::Format("lz4hc payload has " + std::to_string(payload_size - position) +
                          " bytes after its last block");
  }
  return Status::Ok();
}

}  // namespace

const Coder& lz4hc_coder() {
  static const Coder coder = [] {
    Coder c{Codec::kLz4hc, build_table, estimate_payload_bytes, encode_segment, prepare_decoder, {}, {}};
    c.decode[static_cast<int>(Isa::kScalar)] = decode_segment<Isa::kScalar>;
#if defined(ZIPMOE_ARCH_X86)
    c.decode[static_cast<int>(Isa::kAvx2)] = decode_segment<Isa::kAvx2>;
    c.decode[static_cast<int>(Isa::kAvx512)] = decode_segment<Isa::kAvx512>;
#endif
#if defined(ZIPMOE_ARCH_ARM64)
    c.decode[static_cast<int>(Isa::kNeon)] = decode_segment<Isa::kNeon>;
#endif
    return c;
  }();
  return coder;
}

#endif  // ZIPMOE_HAVE_LZ4

}  // namespace zipmoe::codec

#include "codec/coded_plane.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "codec/lz4hc/lz4hc.h"
#include "common/bytes.h"
#include "common/checksum.h"

namespace zipmoe::codec {

namespace {

// Decoding of the trivial codecs goes through a small stack block so that the
// merge stays in L1 whatever the segment size.
constexpr std::size_t kBlockSymbols = 4096;

Status decode_raw_segment(const std::uint8_t* payload, std::size_t count, const MergeTarget& target, Isa isa) {
  merge_into(isa, target, 0, payload, count);
  return Status::Ok();
}

Status decode_constant_segment(std::uint8_t symbol, std::size_t count, const MergeTarget& target, Isa isa) {
  alignas(64) std::uint8_t block[kBlockSymbols];
  std::memset(block, symbol, std::min(count, kBlockSymbols));
  for (std::size_t done = 0; done < count; done += kBlockSymbols) {
    merge_into(isa, target, done, block, std::min(kBlockSymbols, count - done));
  }
  return Status::Ok();
}

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

}  // namespace

const Coder* find_coder(Codec id) {
  switch (id) {
    case Codec::kHuffman: return &huffman_coder();
    case Codec::kRans: return &rans_coder();
#if defined(ZIPMOE_HAVE_LZ4)
    case Codec::kLz4hc: return &lz4hc_coder();
#endif
    default: return nullptr;
  }
}

Histogram compute_histogram(const std::uint8_t* symbols, std::size_t n) {
  // Four sub-histograms break the store-to-load dependency on repeated symbols.
  std::uint64_t h[4][256] = {};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h[0][symbols[i]];
    ++h[1][symbols[i + 1]];
    ++h[2][symbols[i + 2]];
    ++h[3][symbols[i + 3]];
  }
  for (; i < n; ++i) ++h[0][symbols[i]];
  Histogram out{};
  for (int s = 0; s < 256; ++s) out[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
  return out;
}

double entropy_bits(const Histogram& histogram) {
  std::uint64_t total = 0;
  for (std::uint64_t c : histogram) total += c;
  if (total == 0) return 0.0;
  double bits = 0.0;
  for (std::uint64_t c : histogram) {
    if (c) bits -= double(c) * std::log2(double(c) / double(total));
  }
  return bits / double(total);
}

Status encode_plane(const std::uint8_t* symbols, std::size_t n, const EncodeOptions& options, ThreadPool* pool,
                    std::vector<std::uint8_t>* out, PlaneEncodeResult* result) {
  if (options.segment_symbols == 0 || options.segment_symbols > kMaxSegmentSymbols) {
    return Status::InvalidArgument("segment_symbols must be in [1, " + std::to_string(kMaxSegmentSymbols) + "]");
  }
  if (options.codec != Codec::kAuto && options.codec != Codec::kRaw && options.codec != Codec::kHuffman &&
      options.codec != Codec::kRans && options.codec != Codec::kLz4hc) {
    return Status::InvalidArgument(std::string("cannot request codec '") + codec_name(options.codec) + "'");
  }
  if (options.codec == Codec::kLz4hc && !lz4hc_available()) return lz4hc_unavailable_status();
  const std::uint32_t seg = options.segment_symbols;
  const std::size_t num_segments = static_cast<std::size_t>(ceil_div(n, seg));
  const Histogram histogram = compute_histogram(symbols, n);
  int distinct = 0;
  int only_symbol = 0;
  for (int s = 0; s < 256; ++s) {
    if (histogram[s]) {
      ++distinct;
      only_symbol = s;
    }
  }

  // Choose the codec and build its table.
  Codec codec = Codec::kRaw;
  std::vector<std::uint8_t> table;
  const Coder* coder = nullptr;
  if (options.codec == Codec::kRaw || n == 0) {
    codec = Codec::kRaw;
  } else if (distinct == 1) {
    codec = Codec::kConstant;
    table.push_back(static_cast<std::uint8_t>(only_symbol));
  } else {
    std::vector<Codec> candidates;
    if (options.codec == Codec::kAuto) {
      candidates = {Codec::kHuffman, Codec::kRans};
    } else {
      candidates = {options.codec};
    }
    // Raw is the fallback: coding must save at least 1% of the plane to be worth a decode.
    std::uint64_t best_bytes = n - n / 100;
    for (Codec c : candidates) {
      const Coder* candidate = find_coder(c);
      std::vector<std::uint8_t> candidate_table;
      ZIPMOE_RETURN_IF_ERROR(candidate->build_table(histogram, &candidate_table));
      const std::uint64_t payload = candidate->estimate_payload_bytes(candidate_table.data(), candidate_table.size(),
                                                                      histogram, num_segments);
      // Saturating: a coder reports "cannot code this" as UINT64_MAX.
      std::uint64_t bytes = payload > UINT64_MAX / 2 ? UINT64_MAX / 2 : payload + candidate_table.size();
      // Huffman decodes about 1.5x faster (AVX-512 here: 3.96 against 2.66 GB/s
      // of BF16 on one thread). Streaming an expert through the cache, that saves
      // 17.3 MB x (1/2.66 - 1/3.96) s/GB = 2.1 ms of one core per miss, as much as
      // reading 9-18% of the expert's 11.4 MB stored bytes at 1 GB/s takes. On
      // weights rANS is 0.2-0.5% smaller, so with kAuto it must be more than 3%
      // smaller to win: it still does where Huffman's whole-bit codes lose (very
      // skewed planes, under 1-2 bits of entropy).
      if (c == Codec::kRans && coder != nullptr) bytes += bytes * 3 / 100;
      if (bytes < best_bytes) {
        best_bytes = bytes;
        coder = candidate;
        codec = c;
        table = std::move(candidate_table);
      }
    }
  }
  if (result) {
    result->codec = codec;
    result->histogram = histogram;
  }

  // Encode segments (in parallel), then frame.
  std::vector<std::vector<std::uint8_t>> payloads(coder != nullptr ? num_segments : 0);
  std::vector<Status> statuses(payloads.size());
  parallel_for(pool, payloads.size(), [&](std::size_t s) {
    const std::size_t begin = s * std::size_t(seg);
    const std::size_t count = std::min<std::size_t>(seg, n - begin);
    statuses[s] = coder->encode_segment(table.data(), table.size(), symbols + begin, count, &payloads[s]);
  });
  for (const Status& st : statuses) ZIPMOE_RETURN_IF_ERROR(st);

  out->push_back(static_cast<std::uint8_t>(codec));
  out->push_back(kCodedPlaneVersion);
  append_le16(out, 0);
  append_le32(out, seg);
  append_le64(out, n);
  append_le32(out, static_cast<std::uint32_t>(table.size()));
  append_le32(out, static_cast<std::uint32_t>(num_segments));
  out->insert(out->end(), table.begin(), table.end());
  for (std::size_t s = 0; s < num_segments; ++s) {
    std::uint64_t size = 0;
    if (codec == Codec::kRaw) size = std::min<std::size_t>(seg, n - s * std::size_t(seg));
    if (!payloads.empty()) size = payloads[s].size();
    if (size > 0xffffffffu) return Status::Internal("segment payload over 4 GiB");
    append_le32(out, static_cast<std::uint32_t>(size));
  }
  if (codec == Codec::kRaw) {
    out->insert(out->end(), symbols, symbols + n);
  } else {
    for (const auto& p : payloads) out->insert(out->end(), p.begin(), p.end());
  }
  return Status::Ok();
}

Status CodedPlane::parse(const std::uint8_t* data, std::size_t size, CodedPlane* out) {
  ByteReader r(data, size);
  std::uint8_t codec_byte = 0, version = 0;
  std::uint16_t reserved = 0;
  std::uint32_t seg = 0, table_size = 0, num_segments = 0;
  std::uint64_t num_symbols = 0;
  if (!(r.u8(&codec_byte) && r.u8(&version) && r.u16(&reserved) && r.u32(&seg) && r.u64(&num_symbols) &&
        r.u32(&table_size) && r.u32(&num_segments))) {
    return Status::Format("coded plane truncated: " + std::to_string(size) + " bytes is shorter than its header");
  }
  if (version != kCodedPlaneVersion) {
    return Status::Format("coded plane version " + std::to_string(version) + " is not supported (expected " +
                          std::to_string(kCodedPlaneVersion) + ")");
  }
  if (reserved != 0) return Status::Format("coded plane reserved field is not zero");
  const Codec codec = static_cast<Codec>(codec_byte);
  if (codec != Codec::kRaw && codec != Codec::kHuffman && codec != Codec::kRans && codec != Codec::kConstant &&
      codec != Codec::kLz4hc) {
    return Status::Format("coded plane has unknown codec id " + std::to_string(codec_byte));
  }
  if (codec == Codec::kLz4hc && !lz4hc_available()) {
    return Status::Format("coded plane uses the lz4hc codec (id 4), which this build cannot decode: it was made "
                          "without liblz4 (install liblz4-dev and rebuild)");
  }
  if (seg == 0 || seg > kMaxSegmentSymbols) {
    return Status::Format("coded plane segment size " + std::to_string(seg) + " is out of range");
  }
  if (ceil_div(num_symbols, seg) != num_segments) {
    return Status::Format("coded plane declares " + std::to_string(num_segments) + " segments for " +
                          std::to_string(num_symbols) + " symbols of " + std::to_string(seg) + " per segment");
  }
  const std::uint8_t* table = nullptr;
  if (!r.bytes(&table, table_size)) return Status::Format("coded plane truncated inside its code table");
  // The size list is checked against the bytes present before anything is allocated for it.
  if (std::uint64_t(num_segments) * 4 > r.remaining()) {
    return Status::Format("coded plane truncated inside its segment table (" + std::to_string(num_segments) +
                          " segments)");
  }
  CodedPlane plane;
  plane.segment_offsets_.resize(std::size_t(num_segments) + 1);
  std::uint64_t offset = r.position() + std::uint64_t(num_segments) * 4;
  plane.segment_offsets_[0] = offset;
  for (std::uint32_t s = 0; s < num_segments; ++s) {
    std::uint32_t payload_size = 0;
    (void)r.u32(&payload_size);
    const std::uint64_t count = std::min<std::uint64_t>(seg, num_symbols - std::uint64_t(s) * seg);
    if (codec == Codec::kRaw && payload_size != count) {
      return Status::Format("raw coded plane segment " + std::to_string(s) + " holds " + std::to_string(payload_size) +
                            " bytes for " + std::to_string(count) + " symbols");
    }
    if (codec == Codec::kConstant && payload_size != 0) {
      return Status::Format("constant coded plane segment " + std::to_string(s) + " is not empty");
    }
    offset += payload_size;
    plane.segment_offsets_[s + 1] = offset;
  }
  if (offset != size) {
    return Status::Format("coded plane size mismatch: segments end at byte " + std::to_string(offset) +
                          " but the plane has " + std::to_string(size) + " bytes");
  }
  plane.data_ = data;
  plane.size_ = size;
  plane.codec_ = codec;
  plane.num_symbols_ = num_symbols;
  plane.segment_symbols_ = seg;
  plane.table_ = table;
  plane.table_size_ = table_size;
  if (codec == Codec::kRaw && table_size != 0) return Status::Format("raw coded plane has a non-empty table");
  if (codec == Codec::kConstant && table_size != 1) return Status::Format("constant coded plane table is not 1 byte");
  if (codec == Codec::kHuffman || codec == Codec::kRans || codec == Codec::kLz4hc) {
    plane.coder_ = find_coder(codec);
    std::unique_ptr<DecoderTables> tables;
    ZIPMOE_RETURN_IF_ERROR(plane.coder_->prepare_decoder(table, table_size, &tables)
                               .with_context(std::string(codec_name(codec)) + " code table"));
    plane.tables_ = std::move(tables);
  }
  if (num_symbols > 0 && plane.segment_offsets_.size() < 2) return Status::Internal("segment table");
  *out = std::move(plane);
  return Status::Ok();
}

std::size_t CodedPlane::segment_count(std::size_t s) const {
  const std::uint64_t begin = std::uint64_t(s) * segment_symbols_;
  return static_cast<std::size_t>(std::min<std::uint64_t>(segment_symbols_, num_symbols_ - begin));
}

Status CodedPlane::decode_segment(std::size_t s, const MergeTarget& plane_target, Isa isa) const {
  if (s >= num_segments()) return Status::InvalidArgument("segment index out of range");
  return decode_one(s, plane_target.advanced(s * std::size_t(segment_symbols_)), isa, nullptr);
}

Status CodedPlane::decode_segment_at(std::size_t s, const MergeTarget& segment_target, Isa isa) const {
  ZIPMOE_RETURN_IF_ERROR(check_isa(isa));
  return decode_one(s, segment_target, isa, nullptr);
}

Status CodedPlane::decode_one(std::size_t s, const MergeTarget& target, Isa isa, SegmentSums* sums) const {
  if (s >= num_segments()) return Status::InvalidArgument("segment index out of range");
  const std::size_t count = segment_count(s);
  const std::uint8_t* payload = data_ + segment_offsets_[s];
  const int isa_index = static_cast<int>(isa);
  const int scalar_index = static_cast<int>(Isa::kScalar);
  DecodeChecksummedFn checksummed = nullptr;
  if (sums && coder_) {
    checksummed = coder_->decode_checksummed[isa_index];
    if (!checksummed && !coder_->decode[isa_index]) checksummed = coder_->decode_checksummed[scalar_index];
  }
  if (sums) {
    // F32's low words are checksummed in a pass of their own: no decoder reads them
    // before the merge, and F32 planes are rare.
    if (target.dtype == DType::kF32) sums->sm_low = crc32c(target.sm_lo, 2 * count);
    if (!checksummed) {
      sums->coded.payload = crc32c(payload, payload_size(s));
      sums->coded.sm_high = crc32c(target.sm_hi, count);
    }
  }
  Status st;
  switch (codec_) {
    case Codec::kRaw: st = decode_raw_segment(payload, count, target, isa); break;
    case Codec::kConstant: st = decode_constant_segment(table_[0], count, target, isa); break;
    default: {
      if (checksummed) {
        st = checksummed(*tables_, payload, payload_size(s), count, target, &sums->coded);
        break;
      }
      DecodeSegmentFn fn = coder_->decode[isa_index];
      if (!fn) fn = coder_->decode[scalar_index];
      st = fn(*tables_, payload, payload_size(s), count, target);
    }
  }
  return st.with_context(s == 0 && num_segments() == 1 ? std::string(codec_name(codec_)) + " segment 0"
                                                         : std::string(codec_name(codec_)) + " segment " +
                                                               std::to_string(s));
}

Status CodedPlane::decode(const MergeTarget& plane_target, ThreadPool* pool, Isa isa) const {
  return decode_all(plane_target, pool, isa, nullptr);
}

Status CodedPlane::decode_all(const MergeTarget& plane_target, ThreadPool* pool, Isa isa, SegmentSums* sums) const {
  ZIPMOE_RETURN_IF_ERROR(check_isa(isa));
  const std::size_t n = num_segments();
  auto run = [&](std::size_t s) {
    return decode_one(s, plane_target.advanced(s * std::size_t(segment_symbols_)), isa, sums ? &sums[s] : nullptr);
  };
  if (n == 1 || pool == nullptr) {
    for (std::size_t s = 0; s < n; ++s) ZIPMOE_RETURN_IF_ERROR(run(s));
    return Status::Ok();
  }
  std::vector<Status> statuses(n);
  parallel_for(pool, n, [&](std::size_t s) { statuses[s] = run(s); });
  for (const Status& st : statuses) ZIPMOE_RETURN_IF_ERROR(st);
  return Status::Ok();
}

Status CodedPlane::decode_checksummed(const MergeTarget& plane_target, ThreadPool* pool, Isa isa,
                                      Checksums* sums) const {
  if (!plane_target.merge) return Status::InvalidArgument("decode_checksummed needs a merging target");
  const std::size_t n = num_segments();
  std::vector<SegmentSums> pieces(n);
  ZIPMOE_RETURN_IF_ERROR(decode_all(plane_target, pool, isa, pieces.data()));
  // The header, code table and size list come before the first payload.
  std::uint32_t plane = crc32c(data_, n == 0 ? size_ : static_cast<std::size_t>(segment_offsets_[0]));
  std::uint32_t high = 0, low = 0;  // the checksum of no bytes is 0
  const bool f32 = plane_target.dtype == DType::kF32;
  for (std::size_t s = 0; s < n; ++s) {
    const std::size_t count = segment_count(s);
    plane = crc32c_combine(plane, pieces[s].coded.payload, payload_size(s));
    high = crc32c_combine(high, pieces[s].coded.sm_high, count);
    if (f32) low = crc32c_combine(low, pieces[s].sm_low, 2 * std::uint64_t(count));
  }
  sums->coded_plane = plane;
  sums->sm_plane = f32 ? crc32c_combine(high, low, 2 * num_symbols_) : high;
  return Status::Ok();
}

}  // namespace zipmoe::codec

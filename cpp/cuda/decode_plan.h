// Host-side planning of GPU decodes: validates a coded plane with the CPU
// parsers, builds the device decode table and the per-segment work
// descriptors (PlanePlan, once per plane), and lays out one batch of planes as
// a single block of descriptor bytes to upload (BatchLayout, once per launch).
//
// Plain C++ (no CUDA): the CUDA host code (cuda_decode.cu) and the host test
// that runs the kernels' logic on an emulated GPU (tests/cpp/test_cuda_logic.cpp)
// use the same planner, so the test covers it too.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/coder.h"
#include "codec/huffman/huffman.h"
#include "codec/rans/rans.h"
#include "common/bytes.h"
#include "common/status.h"
#include "cuda/decode_layout.cuh"
#include "zipmoe/types.h"

namespace zipmoe::cuda {

static_assert(kHuffmanLookupBits == static_cast<unsigned>(codec::kHuffmanMaxCodeLength),
              "every code fits one lookup window");
static_assert(kHuffmanStreamsPerSegment == static_cast<unsigned>(codec::kHuffmanStreams), "streams per segment");

// What the kernels need of one coded plane. Immutable once built; offsets are
// relative to the plane's first byte, chunk indices to the plane's first chunk.
struct PlanePlan {
  Codec codec = Codec::kRaw;
  std::uint64_t num_symbols = 0;
  std::uint64_t plane_bytes = 0;
  std::vector<std::uint64_t> table;  // huffman: kHuffmanLookupEntries entries; rans: slot entries, two per word
  std::vector<HuffmanSegmentArgs> huffman_segments;
  std::uint64_t huffman_chunks = 0;
  std::vector<RansSegmentArgs> rans_segments;
  std::uint32_t constant_symbol = 0;
  std::uint64_t raw_offset = 0;  // raw: where symbol 0 is
};

namespace plan_detail {

// The decode table of huffman_device.cuh from code lengths that passed
// huffman_parse_table (a complete prefix code). Canonical codes as in huffman.h.
inline void build_huffman_table(const std::uint8_t lengths[256], std::uint64_t* table) {
  constexpr int kMaxLength = codec::kHuffmanMaxCodeLength;
  int count_of_length[kMaxLength + 1] = {};
  for (int s = 0; s < 256; ++s) ++count_of_length[lengths[s]];
  count_of_length[0] = 0;
  std::uint32_t next_code[kMaxLength + 1] = {};
  std::uint32_t code = 0;
  for (int l = 1; l <= kMaxLength; ++l) {
    code = (code + std::uint32_t(count_of_length[l - 1])) << 1;
    next_code[l] = code;
  }
  // first[w]: the symbol and length of the code that window w starts with.
  std::vector<std::uint16_t> first(kHuffmanLookupEntries, 0);
  for (int s = 0; s < 256; ++s) {
    const int l = lengths[s];
    if (!l) continue;
    const std::uint32_t canonical = next_code[l]++;
    std::uint32_t reversed = 0;  // codes are read first bit lowest
    for (int i = 0; i < l; ++i) reversed |= ((canonical >> i) & 1u) << (l - 1 - i);
    for (std::uint32_t w = reversed; w < kHuffmanLookupEntries; w += 1u << l) {
      first[w] = static_cast<std::uint16_t>(s | (l << 8));
    }
  }
  for (std::uint32_t w = 0; w < kHuffmanLookupEntries; ++w) {
    std::uint64_t entry = 0;
    unsigned used = 0, symbols = 0;
    while (symbols < kHuffmanEntryMaxSymbols) {
      const std::uint16_t next = first[w >> used];
      const unsigned l = next >> 8;
      if (used + l > kHuffmanLookupBits) break;
      entry |= std::uint64_t(next & 0xffu) << (8 * symbols);
      used += l;
      ++symbols;
    }
    entry |= std::uint64_t(first[w] >> 8) << kHuffmanEntryFirstLengthShift;
    entry |= std::uint64_t(used) << kHuffmanEntryTotalBitsShift;
    entry |= std::uint64_t(symbols) << kHuffmanEntryCountShift;
    table[w] = entry;
  }
}

// The checks of the CPU decoder's split_payload (huffman.cpp), on the host.
inline Status plan_huffman_segment(const std::uint8_t* plane, std::uint64_t payload_offset, std::uint64_t payload_size,
                                   std::uint64_t count, HuffmanSegmentArgs* out) {
  if (payload_size < codec::kHuffmanSegmentHeaderBytes) {
    return Status::Format("huffman segment payload of " + std::to_string(payload_size) +
                          " bytes is shorter than its " + std::to_string(codec::kHuffmanSegmentHeaderBytes) +
                          "-byte header");
  }
  const std::uint64_t available = payload_size - codec::kHuffmanSegmentHeaderBytes;
  std::uint64_t sizes[kHuffmanStreamsPerSegment];
  std::uint64_t declared = 0;
  for (unsigned k = 0; k + 1 < kHuffmanStreamsPerSegment; ++k) {
    sizes[k] = load_le32(plane + payload_offset + 4 * k);
    declared += sizes[k];
  }
  if (declared > available) {
    return Status::Format("huffman segment header declares " + std::to_string(declared) +
                          " bytes for streams 0-2 but the payload holds " + std::to_string(available));
  }
  sizes[kHuffmanStreamsPerSegment - 1] = available - declared;
  std::uint64_t at = payload_offset + codec::kHuffmanSegmentHeaderBytes;
  const std::uint64_t q = count / kHuffmanStreamsPerSegment, r = count % kHuffmanStreamsPerSegment;
  for (unsigned k = 0; k < kHuffmanStreamsPerSegment; ++k) {
    const std::uint64_t c = q + (k < r ? 1 : 0);
    if (sizes[k] < (c + 7) / 8 || sizes[k] > (c * codec::kHuffmanMaxCodeLength + 7) / 8) {
      return Status::Format("huffman stream " + std::to_string(k) + " has " + std::to_string(sizes[k]) +
                            " bytes, impossible for " + std::to_string(c) + " symbols");
    }
    out->stream_offset[k] = at;
    out->stream_bytes[k] = static_cast<std::uint32_t>(sizes[k]);
    out->stream_count[k] = static_cast<std::uint32_t>(c);
    out->stream_chunks[k] = static_cast<std::uint32_t>((sizes[k] * 8 + kHuffmanChunkBits - 1) / kHuffmanChunkBits);
    at += sizes[k];
  }
  return Status::Ok();
}

}  // namespace plan_detail

// Validates `plane` (size bytes, the CPU decoder's rules) and plans its decode.
inline Status plan_plane(const std::uint8_t* plane, std::size_t size, PlanePlan* out) {
  codec::CodedPlane parsed;
  ZIPMOE_RETURN_IF_ERROR(codec::CodedPlane::parse(plane, size, &parsed));
  PlanePlan plan;
  plan.codec = parsed.codec();
  plan.num_symbols = parsed.num_symbols();
  plan.plane_bytes = size;
  // Framing offsets (coded_plane.h), already validated by parse().
  const std::uint64_t table_at = codec::kCodedPlaneHeaderSize;
  const std::uint64_t sizes_at = table_at + parsed.table_size();
  const std::size_t num_segments = parsed.num_segments();
  std::uint64_t payload_at = sizes_at + 4 * std::uint64_t(num_segments);
  const std::uint64_t segment_symbols = parsed.segment_symbols();

  switch (plan.codec) {
    case Codec::kRaw:
      plan.raw_offset = payload_at;
      break;
    case Codec::kConstant:
      plan.constant_symbol = plane[table_at];
      break;
    case Codec::kHuffman: {
      std::uint8_t lengths[256];
      ZIPMOE_RETURN_IF_ERROR(codec::huffman_parse_table(plane + table_at, parsed.table_size(), lengths)
                                 .with_context("huffman code table"));
      plan.table.resize(kHuffmanLookupEntries);
      plan_detail::build_huffman_table(lengths, plan.table.data());
      plan.huffman_segments.resize(num_segments);
      for (std::size_t s = 0; s < num_segments; ++s) {
        const std::uint64_t payload_size = load_le32(plane + sizes_at + 4 * s);
        HuffmanSegmentArgs& segment = plan.huffman_segments[s];
        std::memset(&segment, 0, sizeof(segment));
        ZIPMOE_RETURN_IF_ERROR(plan_detail::plan_huffman_segment(plane, payload_at, payload_size,
                                                                 parsed.segment_count(s), &segment)
                                   .with_context("huffman segment " + std::to_string(s)));
        segment.segment = s;
        segment.first_element = s * segment_symbols;
        segment.chunk_first = plan.huffman_chunks;
        for (unsigned k = 0; k < kHuffmanStreamsPerSegment; ++k) plan.huffman_chunks += segment.stream_chunks[k];
        payload_at += payload_size;
      }
      break;
    }
    case Codec::kRans: {
      std::unique_ptr<codec::DecoderTables> tables;
      ZIPMOE_RETURN_IF_ERROR(codec::find_coder(Codec::kRans)
                                 ->prepare_decoder(plane + table_at, parsed.table_size(), &tables)
                                 .with_context("rans code table"));
      const auto& rans_tables = static_cast<const codec::RansDecoderTables&>(*tables);
      plan.table.resize(kRansTableEntries / 2);
      for (unsigned i = 0; i < kRansTableEntries / 2; ++i) {
        plan.table[i] = std::uint64_t(rans_tables.slots[2 * i]) | (std::uint64_t(rans_tables.slots[2 * i + 1]) << 32);
      }
      plan.rans_segments.resize(num_segments);
      for (std::size_t s = 0; s < num_segments; ++s) {
        const std::uint64_t payload_size = load_le32(plane + sizes_at + 4 * s);
        const std::size_t count = parsed.segment_count(s);
        codec::RansSegment opened;
        ZIPMOE_RETURN_IF_ERROR(codec::rans_open_segment(plane + payload_at, payload_size, count, &opened)
                                   .with_context("rans segment " + std::to_string(s)));
        RansSegmentArgs& segment = plan.rans_segments[s];
        std::memset(&segment, 0, sizeof(segment));
        segment.count = static_cast<std::uint32_t>(count);
        segment.segment = s;
        segment.first_element = s * segment_symbols;
        segment.payload_offset = payload_at;
        segment.payload_bytes = static_cast<std::uint32_t>(payload_size);
        segment.lanes_used = static_cast<std::uint32_t>(std::min<std::size_t>(count, codec::kRansLanes));
        payload_at += payload_size;
      }
      break;
    }
    default:
      return Status::Unsupported(std::string("cannot decode codec '") + codec_name(plan.codec) + "' on the GPU");
  }
  *out = std::move(plan);
  return Status::Ok();
}

inline std::uint32_t output_kind_for(DType dtype) {
  if (dtype == DType::kU8) return kOutputSymbols;  // its bytes are its symbols
  return dtype == DType::kF32 ? kOutputMerge32 : kOutputMerge16;
}

// One plane of a batch: its plan and where its bytes live for the kernels.
struct BatchItem {
  const PlanePlan* plan = nullptr;
  const std::uint8_t* device_plane = nullptr;  // the plane's bytes
  const std::uint8_t* device_sm = nullptr;     // its SM plane (merge kinds): n bytes, F32 3n bytes
  void* device_out = nullptr;                  // n elements (or n symbols)
  std::uint32_t output_kind = kOutputMerge16;
};

// A batch's descriptors in one block of bytes: sections of 64-byte aligned
// arrays, uploaded as they are; BatchArgs is made from the device address.
struct BatchLayout {
  std::vector<std::uint8_t> bytes;
  std::size_t planes_at = 0, tables_at = 0, huffman_at = 0, rans_segments_at = 0, rans_blocks_at = 0, fills_at = 0;
  std::size_t num_planes = 0;
  std::size_t num_huffman_segments = 0;
  std::size_t num_rans_blocks = 0;
  std::size_t num_fill_slices = 0;
  std::uint64_t num_huffman_chunks = 0;

  BatchArgs args(const std::uint8_t* device_bytes, HuffmanChunkState* device_chunks,
                 unsigned long long* device_errors) const {
    BatchArgs a;
    a.planes = reinterpret_cast<const PlaneArgs*>(device_bytes + planes_at);
    a.tables = reinterpret_cast<const std::uint64_t*>(device_bytes + tables_at);
    a.huffman_segments = reinterpret_cast<const HuffmanSegmentArgs*>(device_bytes + huffman_at);
    a.huffman_chunks = device_chunks;
    a.rans_segments = reinterpret_cast<const RansSegmentArgs*>(device_bytes + rans_segments_at);
    a.rans_blocks = reinterpret_cast<const RansBlockArgs*>(device_bytes + rans_blocks_at);
    a.fill_slices = reinterpret_cast<const FillSliceArgs*>(device_bytes + fills_at);
    a.errors = device_errors;
    return a;
  }
};

namespace plan_detail {

template <class T>
std::size_t append_section(std::vector<std::uint8_t>* bytes, const std::vector<T>& items) {
  const std::size_t at = (bytes->size() + 63) & ~std::size_t(63);
  bytes->resize(at + sizeof(T) * items.size());
  if (!items.empty()) std::memcpy(bytes->data() + at, items.data(), sizeof(T) * items.size());
  return at;
}

}  // namespace plan_detail

inline Status build_batch(const BatchItem* items, std::size_t count, BatchLayout* out) {
  if (count > 0xffffffffu) return Status::InvalidArgument("too many planes in one GPU batch");
  std::vector<PlaneArgs> planes(count);
  std::vector<std::uint64_t> tables;
  std::vector<HuffmanSegmentArgs> huffman;
  std::vector<RansSegmentArgs> rans;
  std::vector<RansBlockArgs> rans_blocks;
  std::vector<FillSliceArgs> fills;
  std::uint64_t chunks = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const BatchItem& item = items[i];
    const PlanePlan& plan = *item.plan;
    const std::uint32_t plane_index = static_cast<std::uint32_t>(i);
    PlaneArgs& p = planes[i];
    std::memset(&p, 0, sizeof(p));
    p.data = item.device_plane;
    p.out = item.device_out;
    p.num_symbols = plan.num_symbols;
    p.output_kind = item.output_kind;
    if (item.output_kind != kOutputSymbols) {
      p.sm_hi = item.device_sm;
      p.sm_lo = item.output_kind == kOutputMerge32 ? item.device_sm + plan.num_symbols : nullptr;
    }
    p.table_word = tables.size();
    tables.insert(tables.end(), plan.table.begin(), plan.table.end());
    for (const HuffmanSegmentArgs& s : plan.huffman_segments) {
      huffman.push_back(s);
      huffman.back().plane = plane_index;
      huffman.back().chunk_first += chunks;
    }
    chunks += plan.huffman_chunks;
    for (std::size_t s = 0; s < plan.rans_segments.size(); s += kRansWarpsPerBlock) {
      if (rans.size() > 0xffffffffu - kRansWarpsPerBlock) {
        return Status::InvalidArgument("too many rans segments in one GPU batch");
      }
      RansBlockArgs block{plane_index, static_cast<std::uint32_t>(rans.size()),
                          static_cast<std::uint32_t>(std::min<std::size_t>(kRansWarpsPerBlock,
                                                                           plan.rans_segments.size() - s)),
                          0};
      rans_blocks.push_back(block);
      for (std::uint32_t k = 0; k < block.num_segments; ++k) {
        rans.push_back(plan.rans_segments[s + k]);
        rans.back().plane = plane_index;
      }
    }
    if (plan.codec == Codec::kRaw || plan.codec == Codec::kConstant) {
      for (std::uint64_t first = 0; first < plan.num_symbols; first += kFillSliceElements) {
        FillSliceArgs slice;
        slice.plane = plane_index;
        slice.constant = plan.codec == Codec::kConstant ? 0x100u | plan.constant_symbol : 0u;
        slice.first_element = first;
        slice.count = std::min<std::uint64_t>(kFillSliceElements, plan.num_symbols - first);
        slice.symbols_offset = plan.raw_offset;
        fills.push_back(slice);
      }
    }
  }
  BatchLayout layout;
  layout.planes_at = plan_detail::append_section(&layout.bytes, planes);
  layout.tables_at = plan_detail::append_section(&layout.bytes, tables);
  layout.huffman_at = plan_detail::append_section(&layout.bytes, huffman);
  layout.rans_segments_at = plan_detail::append_section(&layout.bytes, rans);
  layout.rans_blocks_at = plan_detail::append_section(&layout.bytes, rans_blocks);
  layout.fills_at = plan_detail::append_section(&layout.bytes, fills);
  layout.bytes.resize((layout.bytes.size() + 63) & ~std::size_t(63));
  layout.num_planes = count;
  layout.num_huffman_segments = huffman.size();
  layout.num_rans_blocks = rans_blocks.size();
  layout.num_fill_slices = fills.size();
  layout.num_huffman_chunks = chunks;
  *out = std::move(layout);
  return Status::Ok();
}

// The FormatError for a plane's error word (kNoDecodeError: OK).
inline Status decode_error_status(unsigned long long code) {
  if (code == kNoDecodeError) return Status::Ok();
  const std::string segment = std::to_string(code >> 16);
  const std::string detail = std::to_string((code >> 8) & 0xffu);
  switch (static_cast<std::uint32_t>(code & 0xffu)) {
    case kErrorHuffmanTruncated:
      return Status::Format("huffman segment " + segment + ": stream " + detail +
                            " ends inside a code (truncated or corrupt)");
    case kErrorHuffmanTrailingBytes:
      return Status::Format("huffman segment " + segment + ": stream " + detail +
                            " has bytes left over after its last symbol");
    case kErrorHuffmanPadding:
      return Status::Format("huffman segment " + segment + ": stream " + detail + " has non-zero padding bits");
    case kErrorRansTruncated:
      return Status::Format("rans segment " + segment + ": payload is truncated (a lane needs more words)");
    case kErrorRansLeftover:
      return Status::Format("rans segment " + segment + ": payload has words left over after the last symbol");
    case kErrorRansFinalState:
      return Status::Format("rans segment " + segment + ": lane " + detail +
                            " does not end in the initial state (corrupt payload)");
    case kErrorRansInitialState:
      return Status::Format("rans segment " + segment + ": lane " + detail + " starts from an impossible state");
    default:
      return Status::Internal("GPU decoder reported unknown error word " + std::to_string(code));
  }
}

}  // namespace zipmoe::cuda

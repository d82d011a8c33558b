// Huffman segment decoding on the GPU, fused with the merge (format:
// cpp/codec/huffman/huffman.h; reference: huffman_decode.inc).
//
// A segment has only four streams, far too few threads for a GPU, so each
// stream is cut into chunks of kHuffmanChunkBits bits and one block of
// kHuffmanBlockThreads threads decodes all chunks of one segment:
//
//   1 guess     every chunk is decoded from its first bit as if a code started
//               there, counting codes that start inside the chunk and noting
//               where the walk leaves it. A wrong guess falls back into step
//               with the true code boundaries within a few codes (Huffman codes
//               resynchronize), so the exit is almost always right. The walk also
//               records which of the chunk's first 64 bits start a code.
//   2 correct   every chunk re-walks from the previous chunk's guessed exit until
//               it lands on a code start recorded in step 1 (then the rest of the
//               guess is right: count = codes walked + guessed codes after that
//               point) or leaves the first 64 bits (then it walks to the end).
//   3 link      one thread per stream walks its chunks in order, checks that each
//               chunk was corrected from the true exit of the previous one (else it
//               corrects it again from there, which is rare), and assigns each chunk
//               the index of its first symbol.
//   4 write     every chunk is decoded again from its true start, writing merged
//               elements; the chunk holding the stream's last symbol notes where
//               that code ends.
//   5 check     one thread per stream applies the end-of-stream rules of the format.
//
// Every walk advances by at least one bit per lookup and stops at the chunk end,
// so corrupt data costs at most a chunk per walk (a whole stream per thread in
// step 3 in the worst case) and never reads outside the stream's bytes: words
// that straddle the stream's ends are assembled byte by byte, bits past the end
// read as zeros (exactly as the CPU decoder sees them).
#pragma once

#include <cstdint>

#include "cuda/decode_layout.cuh"
#include "cuda/merge_device.cuh"
#include "cuda/simt.cuh"

namespace zipmoe::cuda {

struct HuffmanShared {
  std::uint64_t table[kHuffmanLookupEntries];
  std::uint64_t stream_element[kHuffmanStreamsPerSegment];     // plane element of each stream's first symbol
  std::uint32_t chunk_begin[kHuffmanStreamsPerSegment + 1];    // first chunk of each stream, then the total
  std::uint32_t symbols_found[kHuffmanStreamsPerSegment];  // codes starting inside each stream's bits
  std::uint32_t last_code_end[kHuffmanStreamsPerSegment];  // stream bit after its last symbol's code
};

namespace huffman_detail {

// A stream's bytes seen as 32-bit words aligned in memory: `aligned` is the
// stream's first byte rounded down to 4 bytes, [head, end) its bytes from there.
struct StreamWords {
  const std::uint8_t* aligned;
  std::uint32_t head;
  std::uint32_t end;
};

ZIPMOE_HD StreamWords stream_words(const std::uint8_t* begin, std::uint32_t bytes) {
  const std::uint32_t head = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(begin) & 3u);
  return StreamWords{begin - head, head, head + bytes};
}

// Word `index` of the stream's aligned view; bytes outside the stream read as 0.
ZIPMOE_HD std::uint32_t stream_word(const StreamWords& s, std::uint32_t index) {
  const std::uint32_t at = 4 * index;
  if (at >= s.head && at + 4 <= s.end) return load_aligned_u32(s.aligned + at);
  std::uint32_t value = 0;
  for (unsigned k = 0; k < 4; ++k) {
    const std::uint32_t byte = at + k;
    if (byte >= s.head && byte < s.end) value |= std::uint32_t(s.aligned[byte]) << (8 * k);
  }
  return value;
}

// Forward-only reader of 11-bit windows at increasing bit positions.
struct BitReader {
  StreamWords words;
  std::uint64_t buffer;  // words `word` and `word + 1`
  std::uint32_t word;
};

ZIPMOE_HD void seek(BitReader& r, std::uint32_t bit) {
  const std::uint32_t at = bit + 8 * r.words.head;
  r.word = at >> 5;
  r.buffer = stream_word(r.words, r.word) | (std::uint64_t(stream_word(r.words, r.word + 1)) << 32);
}

// The 11 stream bits from `bit` on (first bit lowest); bit >= the last position read.
ZIPMOE_HD std::uint32_t window(BitReader& r, std::uint32_t bit) {
  const std::uint32_t at = bit + 8 * r.words.head;
  while ((at >> 5) > r.word) {
    ++r.word;
    r.buffer = (r.buffer >> 32) | (std::uint64_t(stream_word(r.words, r.word + 1)) << 32);
  }
  return static_cast<std::uint32_t>(r.buffer >> (at & 31)) & kHuffmanLookupMask;
}

ZIPMOE_HD unsigned first_length(std::uint64_t entry) {
  return static_cast<unsigned>(entry >> kHuffmanEntryFirstLengthShift) & 15u;
}
ZIPMOE_HD unsigned total_bits(std::uint64_t entry) {
  return static_cast<unsigned>(entry >> kHuffmanEntryTotalBitsShift) & 15u;
}
ZIPMOE_HD unsigned symbol_count(std::uint64_t entry) {
  return static_cast<unsigned>(entry >> kHuffmanEntryCountShift) & 15u;
}

struct Walk {
  std::uint32_t count;  // codes starting before the chunk end
  std::uint32_t exit;   // where the first code starting at or after the chunk end starts
};

// Counts codes from `position` (a code start) until the first one at or past `end`.
ZIPMOE_HD Walk count_codes(const std::uint64_t* table, BitReader& r, std::uint32_t position, std::uint32_t end,
                           std::uint32_t count) {
  // Whole entries while every code of the entry starts before `end`.
  while (position + kHuffmanLookupBits <= end) {
    const std::uint64_t entry = table[window(r, position)];
    position += total_bits(entry);
    count += symbol_count(entry);
  }
  while (position < end) {
    position += first_length(table[window(r, position)]);
    ++count;
  }
  return Walk{count, position};
}

ZIPMOE_HD std::uint32_t smaller(std::uint32_t a, std::uint32_t b) { return a < b ? a : b; }

// Step 1: walks [begin, end) as if a code started at `begin`.
ZIPMOE_HD Walk guess_chunk(const std::uint64_t* table, BitReader& r, std::uint32_t begin, std::uint32_t end,
                           std::uint64_t* sync_map) {
  std::uint32_t position = begin, count = 0;
  std::uint64_t map = 0;
  seek(r, position);
  const std::uint32_t map_end = smaller(begin + kHuffmanSyncWindowBits, end);
  while (position < map_end) {
    map |= std::uint64_t(1) << (position - begin);
    position += first_length(table[window(r, position)]);
    ++count;
  }
  *sync_map = map;
  return count_codes(table, r, position, end, count);
}

// Steps 2 and 3: the chunk [begin, end) walked from the true code start `start`
// (>= begin), reusing the guess from the first code start they share.
ZIPMOE_HD Walk correct_chunk(const std::uint64_t* table, BitReader& r, std::uint32_t begin, std::uint32_t end,
                             std::uint32_t start, std::uint64_t sync_map, Walk guess) {
  std::uint32_t position = start, count = 0;
  seek(r, position);
  const std::uint32_t map_end = smaller(begin + kHuffmanSyncWindowBits, end);
  while (position < map_end) {
    if (position >= begin) {
      const std::uint32_t offset = position - begin;
      if ((sync_map >> offset) & 1u) {
        const std::uint32_t guessed_before = popcount64(sync_map & ((std::uint64_t(1) << offset) - 1));
        return Walk{count + guess.count - guessed_before, guess.exit};
      }
    }
    position += first_length(table[window(r, position)]);
    ++count;
  }
  return count_codes(table, r, position, end, count);
}

// Step 4: decodes the codes from `position` (a code start) that start before
// `end`, as stream symbols index, index + 1, ... below `limit`; when the symbol
// limit - 1 is among them, *last_end receives where its code ends.
ZIPMOE_HD void write_chunk(const std::uint64_t* table, BitReader& r, std::uint32_t position, std::uint32_t end,
                           std::uint32_t index, std::uint32_t limit, const OutputView& out,
                           std::uint64_t stream_element, std::uint32_t* last_end) {
  if (index >= limit) return;
  seek(r, position);
  while (position + kHuffmanLookupBits <= end && index + kHuffmanEntryMaxSymbols <= limit) {
    const std::uint64_t entry = table[window(r, position)];
    const unsigned n = symbol_count(entry);
    for (unsigned j = 0; j < kHuffmanEntryMaxSymbols; ++j) {
      if (j < n) put_element(out, stream_element + index + j, static_cast<std::uint32_t>(entry >> (8 * j)) & 0xffu);
    }
    index += n;
    position += total_bits(entry);
  }
  while (position < end && index < limit) {
    const std::uint64_t entry = table[window(r, position)];
    put_element(out, stream_element + index, static_cast<std::uint32_t>(entry) & 0xffu);
    ++index;
    position += first_length(entry);
  }
  if (index == limit) *last_end = position;
}

struct ChunkPlace {
  unsigned stream;
  std::uint32_t local;  // chunk index within the stream
};

ZIPMOE_HD ChunkPlace place_chunk(const std::uint32_t* chunk_begin, std::uint32_t chunk) {
  unsigned k = 0;
  while (k + 1 < kHuffmanStreamsPerSegment && chunk >= chunk_begin[k + 1]) ++k;
  return ChunkPlace{k, chunk - chunk_begin[k]};
}

ZIPMOE_HD unsigned long long error_code(std::uint64_t segment, unsigned detail, std::uint32_t kind) {
  return (static_cast<unsigned long long>(segment) << 16) | (static_cast<unsigned long long>(detail) << 8) | kind;
}

}  // namespace huffman_detail

// One block (kHuffmanBlockThreads threads, all of which call this) decodes
// Huffman segment job `job` of the batch.
ZIPMOE_SIMT void huffman_decode_segment(const BatchArgs& batch, std::uint64_t job, HuffmanShared& shared,
                                        unsigned thread) {
  using namespace huffman_detail;
  static_assert(kHuffmanBlockThreads == kHuffmanStreamsPerSegment * kWarpSize,
                "step 3 gives each stream's walk a warp of its own");
  constexpr unsigned kThreads = kHuffmanBlockThreads;
  const HuffmanSegmentArgs& segment = batch.huffman_segments[job];
  const PlaneArgs& plane = batch.planes[segment.plane];
  const std::uint64_t* table = shared.table;
  const OutputView out = output_view(plane);
  HuffmanChunkState* chunks = batch.huffman_chunks + segment.chunk_first;

  for (unsigned i = thread; i < kHuffmanLookupEntries; i += kThreads) shared.table[i] = batch.tables[plane.table_word + i];

  if (thread == 0) {
    shared.chunk_begin[0] = 0;
    std::uint64_t element = segment.first_element;
    for (unsigned k = 0; k < kHuffmanStreamsPerSegment; ++k) {
      shared.chunk_begin[k + 1] = shared.chunk_begin[k] + segment.stream_chunks[k];
      shared.stream_element[k] = element;
      element += segment.stream_count[k];
    }
  }
  simt::block_barrier();
  const std::uint32_t* chunk_begin = shared.chunk_begin;
  const std::uint32_t total_chunks = chunk_begin[kHuffmanStreamsPerSegment];

  // 1 guess
  for (std::uint32_t c = thread; c < total_chunks; c += kThreads) {
    const ChunkPlace at = place_chunk(chunk_begin, c);
    const std::uint32_t bits = segment.stream_bytes[at.stream] * 8;
    const std::uint32_t begin = at.local * kHuffmanChunkBits;
    const std::uint32_t end = smaller(begin + kHuffmanChunkBits, bits);
    BitReader r{stream_words(plane.data + segment.stream_offset[at.stream], segment.stream_bytes[at.stream]), 0, 0};
    std::uint64_t map = 0;
    const Walk guess = guess_chunk(table, r, begin, end, &map);
    chunks[c].sync_map = map;
    chunks[c].guess_count = guess.count;
    chunks[c].guess_exit = guess.exit;
  }
  simt::block_barrier();

  // 2 correct from the previous chunk's guessed exit
  for (std::uint32_t c = thread; c < total_chunks; c += kThreads) {
    const ChunkPlace at = place_chunk(chunk_begin, c);
    const Walk guess{chunks[c].guess_count, chunks[c].guess_exit};
    if (at.local == 0) {
      chunks[c].start = 0;
      chunks[c].count = guess.count;
      chunks[c].exit = guess.exit;
      continue;
    }
    const std::uint32_t bits = segment.stream_bytes[at.stream] * 8;
    const std::uint32_t begin = at.local * kHuffmanChunkBits;
    const std::uint32_t end = smaller(begin + kHuffmanChunkBits, bits);
    const std::uint32_t start = chunks[c - 1].guess_exit;
    BitReader r{stream_words(plane.data + segment.stream_offset[at.stream], segment.stream_bytes[at.stream]), 0, 0};
    const Walk walk = correct_chunk(table, r, begin, end, start, chunks[c].sync_map, guess);
    chunks[c].start = start;
    chunks[c].count = walk.count;
    chunks[c].exit = walk.exit;
  }
  simt::block_barrier();

  // 3 link: the true start and first symbol of every chunk, stream by stream
  if (thread % kWarpSize == 0) {
    const unsigned k = thread / kWarpSize;
    const std::uint32_t bits = segment.stream_bytes[k] * 8;
    BitReader r{stream_words(plane.data + segment.stream_offset[k], segment.stream_bytes[k]), 0, 0};
    std::uint32_t symbols = 0, exit = 0;
    for (std::uint32_t local = 0; local < segment.stream_chunks[k]; ++local) {
      HuffmanChunkState& chunk = chunks[chunk_begin[k] + local];
      if (local > 0 && chunk.start != exit) {
        const std::uint32_t begin = local * kHuffmanChunkBits;
        const std::uint32_t end = smaller(begin + kHuffmanChunkBits, bits);
        const Walk walk =
            correct_chunk(table, r, begin, end, exit, chunk.sync_map, Walk{chunk.guess_count, chunk.guess_exit});
        chunk.start = exit;
        chunk.count = walk.count;
        chunk.exit = walk.exit;
      }
      chunk.first_symbol = symbols;
      symbols += chunk.count;
      exit = chunk.exit;
    }
    shared.symbols_found[k] = symbols;
    shared.last_code_end[k] = ~0u;
  }
  simt::block_barrier();

  // 4 write
  for (std::uint32_t c = thread; c < total_chunks; c += kThreads) {
    const ChunkPlace at = place_chunk(chunk_begin, c);
    const std::uint32_t bits = segment.stream_bytes[at.stream] * 8;
    const std::uint32_t begin = at.local * kHuffmanChunkBits;
    const std::uint32_t end = smaller(begin + kHuffmanChunkBits, bits);
    BitReader r{stream_words(plane.data + segment.stream_offset[at.stream], segment.stream_bytes[at.stream]), 0, 0};
    write_chunk(table, r, chunks[c].start, end, chunks[c].first_symbol, segment.stream_count[at.stream], out,
                shared.stream_element[at.stream], &shared.last_code_end[at.stream]);
  }
  simt::block_barrier();

  // 5 check the ends of the streams (the rules of huffman.h)
  if (thread < kHuffmanStreamsPerSegment) {
    const unsigned k = thread;
    const std::uint32_t count = segment.stream_count[k];
    const std::uint32_t bytes = segment.stream_bytes[k];
    std::uint32_t kind = kErrorNone;
    if (count > 0) {
      const std::uint32_t end = shared.last_code_end[k];
      if (shared.symbols_found[k] < count || end > bytes * 8) {
        kind = kErrorHuffmanTruncated;
      } else if ((end + 7) / 8 != bytes) {
        kind = kErrorHuffmanTrailingBytes;
      } else if ((end & 7) != 0 && (plane.data[segment.stream_offset[k] + (end >> 3)] >> (end & 7)) != 0) {
        kind = kErrorHuffmanPadding;
      }
    }
    if (kind != kErrorNone) simt::atomic_min_u64(&batch.errors[segment.plane], error_code(segment.segment, k, kind));
  }
}

}  // namespace zipmoe::cuda

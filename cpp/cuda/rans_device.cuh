// rANS segment decoding on the GPU, fused with the merge (format and reference:
// cpp/codec/rans/rans.h, rans_decode_scalar.cpp).
//
// One warp decodes one segment. The format's kRansLanes interleaved lanes map
// onto the warp's 32 threads: thread t holds lanes t, t + 32, ... (one "group"
// of 32 lanes per multiple of 32). A step decodes symbols 64s .. 64s + 63 (for
// 64 lanes): each thread looks up the slots of its lanes (table in shared
// memory), computes the new states, and one ballot per group says which lanes
// need a renormalization word. Words are consumed in lane order, so a lane's
// word is number (words before this group) + (popcount of the ballot below
// this lane). The words themselves sit in a sliding window of 128 words held
// in registers, 4 per thread, fetched by coalesced loads two window shifts
// before they are needed and handed to the lanes that need them by shuffles.
// Symbols of a step go out as merged elements at consecutive indices, so the
// warp's stores and SM reads are coalesced.
//
// All control flow is warp-uniform: the word counts and error checks derive from
// ballots. Reads never leave the segment's payload (words past the end read as
// 0 and are rejected before they are used: a step that needs more words than
// remain is a truncated payload).
#pragma once

#include <cstdint>

#include "codec/rans/rans.h"
#include "cuda/decode_layout.cuh"
#include "cuda/merge_device.cuh"
#include "cuda/simt.cuh"

namespace zipmoe::cuda {

static_assert(codec::kRansLanes % kWarpSize == 0, "the warp decoder gives each thread whole lanes");
static_assert(codec::kRansScale == kRansTableEntries, "the slot table has one entry per slot");

struct RansShared {
  std::uint32_t slots[kRansTableEntries];
};

namespace rans_detail {

constexpr unsigned kLaneGroups = static_cast<unsigned>(codec::kRansLanes) / kWarpSize;
constexpr unsigned kWindowRegisters = 4;  // window of 32 * 4 words: 2 in use, 2 in flight

ZIPMOE_HD std::uint32_t load_le32_bytes(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}

ZIPMOE_HD std::uint32_t load_word(const std::uint8_t* words, std::uint32_t num_words, std::uint32_t index) {
  return index < num_words ? std::uint32_t(words[2 * index]) | (std::uint32_t(words[2 * index + 1]) << 8) : 0u;
}

ZIPMOE_HD unsigned long long error_code(std::uint64_t segment, unsigned detail, std::uint32_t kind) {
  return (static_cast<unsigned long long>(segment) << 16) | (static_cast<unsigned long long>(detail) << 8) | kind;
}

}  // namespace rans_detail

// The 32 threads of a warp (lane = 0..31, all calling this) decode one segment.
ZIPMOE_SIMT void rans_decode_segment(const BatchArgs& batch, const RansSegmentArgs& segment,
                                     const std::uint32_t* slots, unsigned lane) {
  using namespace rans_detail;
  constexpr std::uint32_t kStateLow = codec::kRansStateLow;
  constexpr std::uint32_t kSlotMask = codec::kRansScale - 1;
  const PlaneArgs& plane = batch.planes[segment.plane];
  const OutputView out = output_view(plane);
  const std::uint8_t* payload = plane.data + segment.payload_offset;
  const std::uint32_t lanes_used = segment.lanes_used;
  const std::uint8_t* words = payload + 4 * lanes_used;
  const std::uint32_t num_words = (segment.payload_bytes - 4 * lanes_used) / 2;
  const std::uint32_t lower_lanes = (1u << lane) - 1u;
  unsigned long long error = kNoDecodeError;

  std::uint32_t state[kLaneGroups];
  for (unsigned g = 0; g < kLaneGroups; ++g) {
    const unsigned l = g * kWarpSize + lane;
    state[g] = l < lanes_used ? load_le32_bytes(payload + 4 * l) : kStateLow;
    const std::uint32_t bad = simt::warp_ballot(state[g] < kStateLow);
    if (bad != 0 && error == kNoDecodeError) {
      error = error_code(segment.segment, g * kWarpSize + lowest_set_bit(bad), kErrorRansInitialState);
    }
  }

  std::uint32_t window[kWindowRegisters];  // window[k]: word window_base + 32k + lane
  for (unsigned k = 0; k < kWindowRegisters; ++k) window[k] = load_word(words, num_words, kWarpSize * k + lane);
  std::uint32_t window_base = 0;  // a multiple of 32, within 32 words below `consumed`
  std::uint32_t consumed = 0;     // words read so far

  const std::uint32_t count = segment.count;
  const std::uint64_t first_element = segment.first_element;
  for (std::uint32_t step_first = 0; step_first < count && error == kNoDecodeError;
       step_first += static_cast<std::uint32_t>(codec::kRansLanes)) {
    const std::uint32_t active = count - step_first;  // lanes l < active decode a symbol this step
    std::uint32_t symbol[kLaneGroups], next[kLaneGroups], reads[kLaneGroups];
    for (unsigned g = 0; g < kLaneGroups; ++g) {
      const unsigned l = g * kWarpSize + lane;
      const std::uint32_t x = state[g];
      const std::uint32_t entry = slots[x & kSlotMask];
      symbol[g] = (entry >> codec::kRansEntrySymbolShift) & 0xffu;
      next[g] = (entry >> codec::kRansEntryFreqShift) * (x >> codec::kRansScaleBits) +
                (entry & codec::kRansEntryBiasMask);
      if (l >= active) next[g] = x;
      reads[g] = simt::warp_ballot(l < active && next[g] < kStateLow);
    }
    for (unsigned g = 0; g < kLaneGroups; ++g) {
      const std::uint32_t wanted = popcount32(reads[g]);
      if (wanted > num_words - consumed) {
        error = error_code(segment.segment, 0, kErrorRansTruncated);
        break;
      }
      const std::uint32_t at = consumed - window_base + popcount32(reads[g] & lower_lanes);  // < 64
      const std::uint32_t low = simt::warp_shuffle(window[0], at % kWarpSize);
      const std::uint32_t high = simt::warp_shuffle(window[1], at % kWarpSize);
      const std::uint32_t word = at < kWarpSize ? low : high;
      if ((reads[g] >> lane) & 1u) next[g] = (next[g] << 16) | word;
      state[g] = next[g];
      consumed += wanted;
      if (consumed - window_base >= kWarpSize) {
        window_base += kWarpSize;
        for (unsigned k = 0; k + 1 < kWindowRegisters; ++k) window[k] = window[k + 1];
        window[kWindowRegisters - 1] =
            load_word(words, num_words, window_base + kWarpSize * (kWindowRegisters - 1) + lane);
      }
    }
    if (error != kNoDecodeError) break;
    for (unsigned g = 0; g < kLaneGroups; ++g) {
      const unsigned l = g * kWarpSize + lane;
      if (l < active) put_element(out, first_element + step_first + l, symbol[g]);
    }
  }

  if (error == kNoDecodeError && consumed != num_words) error = error_code(segment.segment, 0, kErrorRansLeftover);
  for (unsigned g = 0; g < kLaneGroups; ++g) {
    const std::uint32_t unfinished = simt::warp_ballot(state[g] != kStateLow);
    if (unfinished != 0 && error == kNoDecodeError) {
      error = error_code(segment.segment, g * kWarpSize + lowest_set_bit(unfinished), kErrorRansFinalState);
    }
  }
  if (error != kNoDecodeError && lane == 0) simt::atomic_min_u64(&batch.errors[segment.plane], error);
}

// One block (kRansWarpsPerBlock warps, all threads calling this) decodes the
// segments of rANS block job `job`, which share one plane and so one table.
ZIPMOE_SIMT void rans_decode_block(const BatchArgs& batch, std::uint64_t job, RansShared& shared, unsigned thread) {
  constexpr unsigned kThreads = kRansWarpsPerBlock * kWarpSize;
  const RansBlockArgs& block = batch.rans_blocks[job];
  const std::uint64_t* table = batch.tables + batch.planes[block.plane].table_word;
  for (unsigned i = thread; i < kRansTableEntries / 2; i += kThreads) {
    const std::uint64_t pair = table[i];
    shared.slots[2 * i] = static_cast<std::uint32_t>(pair);
    shared.slots[2 * i + 1] = static_cast<std::uint32_t>(pair >> 32);
  }
  simt::block_barrier();
  const unsigned warp = thread / kWarpSize;
  if (warp < block.num_segments) {
    rans_decode_segment(batch, batch.rans_segments[block.first_segment + warp], shared.slots, thread % kWarpSize);
  }
}

}  // namespace zipmoe::cuda

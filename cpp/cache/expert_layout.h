// ExpertLayout: where each routed expert lives in the container and how the
// cache lays its pieces out in RAM.
//
// An expert is three projections (gate, up, down), each one tensor with two
// chunks: the coded exponent plane ("E chunk") and the raw sign/mantissa plane
// ("SM chunk"). In RAM the cache keeps, per expert, up to three blocks, each the
// three projections' pieces back to back at 64-byte aligned offsets:
//   decoded block   gate | up | down        (FULL, and the decode buffers)
//   exponent block  E(gate) | E(up) | E(down)  (COMPRESSED, E)
//   SM block        SM(gate) | SM(up) | SM(down) (COMPRESSED, SM)
// A fetch reads chunks into a staging buffer where every chunk starts on a
// 4096-byte boundary and has its padded size (container chunk_buffer_size), as
// O_DIRECT needs.
//
// Experts are numbered densely: id = moe_layer_index * num_experts + expert,
// where moe_layer_index counts MoE layers only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/expert_provider.h"
#include "common/status.h"
#include "format/container_file.h"
#include "zipmoe/container.h"

namespace zipmoe::cache {

constexpr int kProjections = 3;
extern const char* const kProjectionNames[kProjections];  // "gate", "up", "down"

struct ProjectionLayout {
  const TensorInfo* tensor = nullptr;
  std::uint32_t exponent_chunk = 0;
  std::uint32_t sm_chunk = 0;
  std::uint64_t exponent_bytes = 0;  // stored sizes
  std::uint64_t sm_bytes = 0;
  std::uint64_t decoded_bytes = 0;
  std::size_t decoded_offset = 0;           // in the decoded block
  std::size_t exponent_offset = 0;          // in the exponent block
  std::size_t sm_offset = 0;                // in the SM block
  std::size_t staging_exponent_offset = 0;  // in a staging buffer
  std::size_t staging_sm_offset = 0;
  std::size_t staging_exponent_size = 0;    // padded (chunk_buffer_size)
  std::size_t staging_sm_size = 0;
};

struct ExpertLayout {
  std::uint32_t layer = 0;      // decoder layer
  std::uint32_t moe_index = 0;  // among MoE layers
  std::uint32_t expert = 0;
  std::array<ProjectionLayout, kProjections> projections;
  std::size_t decoded_block_bytes = 0;
  std::size_t exponent_block_bytes = 0;
  std::size_t sm_block_bytes = 0;
  std::size_t staging_bytes = 0;
  std::uint64_t stored_exponent_bytes = 0;  // sums of stored chunk sizes (what a read transfers)
  std::uint64_t stored_sm_bytes = 0;
  std::uint64_t decoded_bytes = 0;          // sum of decoded tensor sizes
};

struct ExpertTable {
  std::size_t num_experts = 0;        // per MoE layer
  std::size_t experts_per_token = 0;
  std::vector<std::uint32_t> moe_layers;       // decoder layer of each MoE layer
  std::vector<std::int32_t> moe_index_of_layer;  // -1 for dense layers
  std::vector<ExpertLayout> experts;           // by id
  std::size_t max_decoded_block = 0;
  std::size_t max_staging = 0;

  std::size_t id(std::uint32_t moe_index, std::uint32_t expert) const { return moe_index * num_experts + expert; }
};

// Finds every projection of every expert of `shapes` in `reader` and checks its
// shape (FormatError status naming the expert otherwise).
Status build_expert_table(const format::ContainerFile& reader, const ExpertShapes& shapes, ExpertTable* table);

// The weights of expert `x` decoded into `block` (laid out as x's decoded block).
ExpertWeights expert_weights(const ExpertLayout& x, const std::uint8_t* block);

}  // namespace zipmoe::cache

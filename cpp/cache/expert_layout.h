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

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/expert_provider.h"
#include "common/status.h"
#include "format/container_file.h"
#include "sched/fetch_pipeline.h"
#include "zipmoe/container.h"

namespace zipmoe::cache {

constexpr int kProjections = 3;
static_assert(kProjections <= sched::kMaxParts, "an expert's projections are the parts of its fetch");
extern const char* const kProjectionNames[kProjections];  // "gate", "up", "down"

// A projection: its tensor, its E chunk (plane sched::kExponentPlane) and SM
// chunk (sched::kSmPlane), where they land in a staging buffer, where the
// exponent and SM blocks hold them (rest_offset) and where it decodes to.
using ProjectionLayout = sched::PartLayout;

struct ExpertLayout {
  std::uint32_t layer = 0;      // decoder layer
  std::uint32_t moe_index = 0;  // among MoE layers
  std::uint32_t expert = 0;
  sched::FetchLayout fetch;     // its parts are the projections gate, up, down
  std::size_t decoded_block_bytes = 0;
  std::size_t exponent_block_bytes = 0;
  std::size_t sm_block_bytes = 0;
  std::size_t staging_bytes = 0;
  std::uint64_t stored_exponent_bytes = 0;  // sums of stored chunk sizes (what a read transfers)
  std::uint64_t stored_sm_bytes = 0;
  std::uint64_t decoded_bytes = 0;          // sum of decoded tensor sizes

  const ProjectionLayout& projection(int j) const { return fetch.parts[j]; }
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

// The weights of expert `x` decoded into `block` (laid out as x's decoded block);
// a null block gives the shapes only (a coded delivery).
ExpertWeights expert_weights(const ExpertLayout& x, const std::uint8_t* block);

}  // namespace zipmoe::cache

#include "cache/expert_layout.h"

#include <algorithm>
#include <string>

namespace zipmoe::cache {

const char* const kProjectionNames[kProjections] = {"gate", "up", "down"};

namespace {

constexpr std::size_t kLine = 64;

std::size_t align_to(std::size_t value, std::size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

Status build_expert_table(const format::ContainerFile& reader, const ExpertShapes& shapes, ExpertTable* table) {
  ExpertTable t;
  t.num_experts = shapes.num_experts;
  t.experts_per_token = shapes.experts_per_token;
  t.moe_index_of_layer.assign(shapes.num_layers, -1);
  for (std::uint32_t layer : shapes.moe_layers) {
    if (layer >= shapes.num_layers) {
      return Status::InvalidArgument("MoE layer " + std::to_string(layer) + " does not exist");
    }
    t.moe_index_of_layer[layer] = static_cast<std::int32_t>(t.moe_layers.size());
    t.moe_layers.push_back(layer);
  }
  const std::uint64_t hidden = shapes.hidden_size, inner = shapes.intermediate_size;
  const std::vector<ChunkInfo>& chunks = reader.chunks();
  t.experts.resize(t.moe_layers.size() * t.num_experts);
  for (std::uint32_t m = 0; m < t.moe_layers.size(); ++m) {
    for (std::uint32_t e = 0; e < t.num_experts; ++e) {
      ExpertLayout& x = t.experts[t.id(m, e)];
      x.layer = t.moe_layers[m];
      x.moe_index = m;
      x.expert = e;
      std::size_t decoded = 0, exponent = 0, sm = 0, staging = 0;
      for (int j = 0; j < kProjections; ++j) {
        const std::string what = "expert " + std::to_string(e) + " of layer " + std::to_string(x.layer) + " (" +
                                 kProjectionNames[j] + ")";
        const TensorInfo* info = reader.find_expert(x.layer, e, kProjectionNames[j]);
        if (!info) return Status::Format(reader.path() + ": " + what + " is missing from the container");
        const std::vector<std::uint64_t> want =
            j < 2 ? std::vector<std::uint64_t>{inner, hidden} : std::vector<std::uint64_t>{hidden, inner};
        if (info->shape != want) {
          return Status::Format(reader.path() + ": tensor " + info->name + " (" + what + ") has shape " +
                                shape_text(info->shape) + " but the config implies " + shape_text(want));
        }
        ProjectionLayout& p = x.fetch.parts[j];
        p.tensor = info;
        p.chunk[sched::kExponentPlane] = info->exponent_chunk;
        p.chunk[sched::kSmPlane] = info->sm_chunk;
        for (int plane = 0; plane < sched::kPlanes; ++plane) {
          p.stored_bytes[plane] = chunks[p.chunk[plane]].stored_size;
          p.staging_size[plane] = reader.chunk_buffer_size(p.chunk[plane]);
          p.staging_offset[plane] = staging;
          staging += p.staging_size[plane];
        }
        p.decoded_bytes = info->decoded_bytes();
        p.decoded_offset = decoded;
        decoded = align_to(decoded + static_cast<std::size_t>(p.decoded_bytes), kLine);
        p.rest_offset[sched::kExponentPlane] = exponent;
        exponent = align_to(exponent + static_cast<std::size_t>(p.stored_bytes[sched::kExponentPlane]), kLine);
        p.rest_offset[sched::kSmPlane] = sm;
        sm = align_to(sm + static_cast<std::size_t>(p.stored_bytes[sched::kSmPlane]), kLine);
        x.stored_exponent_bytes += p.stored_bytes[sched::kExponentPlane];
        x.stored_sm_bytes += p.stored_bytes[sched::kSmPlane];
        x.decoded_bytes += p.decoded_bytes;
      }
      x.fetch.part_count = kProjections;
      x.decoded_block_bytes = std::max<std::size_t>(decoded, kLine);
      x.exponent_block_bytes = std::max<std::size_t>(exponent, kLine);
      x.sm_block_bytes = std::max<std::size_t>(sm, kLine);
      x.staging_bytes = std::max<std::size_t>(staging, 4096);
      t.max_decoded_block = std::max(t.max_decoded_block, x.decoded_block_bytes);
      t.max_staging = std::max(t.max_staging, x.staging_bytes);
    }
  }
  *table = std::move(t);
  return Status::Ok();
}

ExpertWeights expert_weights(const ExpertLayout& x, const std::uint8_t* block) {
  ExpertWeights w;
  kernels::WeightMatrix* matrices[kProjections] = {&w.gate, &w.up, &w.down};
  for (int j = 0; j < kProjections; ++j) {
    const ProjectionLayout& p = x.projection(j);
    matrices[j]->data = block ? block + p.decoded_offset : nullptr;
    matrices[j]->dtype = p.tensor->dtype;
    matrices[j]->rows = static_cast<std::size_t>(p.tensor->shape[0]);
    matrices[j]->cols = static_cast<std::size_t>(p.tensor->shape[1]);
  }
  return w;
}

}  // namespace zipmoe::cache

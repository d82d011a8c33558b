// RoutingProfile: how often each MoE layer routes tokens to each of its experts.
//
// The planner places experts by these frequencies, and the cache policies rank
// experts by them. A profile is gathered online by every model (the forward pass
// adds each step's routing) and can be saved and read back as JSON, e.g. one
// recorded over representative prompts with `zipmoe profile`:
//
//   {"format": "zipmoe-routing-profile", "version": 1,
//    "architecture": "qwen2_moe", "num_layers": 24, "num_experts": 60, "experts_per_token": 4,
//    "layers": [{"layer": 0, "tokens": 5120, "counts": [c_0, ..., c_59]}, ...]}
//
// `layer` is the decoder layer index (MoE layers only), `tokens` the tokens that
// went through it, counts[e] the tokens routed to expert e (so sum(counts) is
// tokens * experts_per_token, or less for routers that pick fewer).
//
// Thread-safety: none; the model serializes the forward pass that adds to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace zipmoe::cache {

class RoutingProfile {
 public:
  RoutingProfile() = default;
  RoutingProfile(std::string architecture, std::size_t num_layers, std::vector<std::uint32_t> moe_layers,
                 std::size_t num_experts, std::size_t experts_per_token);

  // Adds one step of layer `layer`: experts[i] received token_counts[i] of the
  // step's `tokens` tokens. Unknown layers and experts are ignored.
  void add(std::uint32_t layer, const std::uint32_t* experts, const std::uint32_t* token_counts, std::size_t count,
           std::size_t tokens);
  void clear();

  // Adds the counts of `other` (same shape; InvalidArgument otherwise).
  Status merge(const RoutingProfile& other);

  const std::string& architecture() const { return architecture_; }
  std::size_t num_layers() const { return num_layers_; }
  std::size_t num_experts() const { return num_experts_; }
  std::size_t experts_per_token() const { return experts_per_token_; }
  const std::vector<std::uint32_t>& moe_layers() const { return moe_layers_; }
  // By MoE layer index (position in moe_layers()).
  std::uint64_t tokens(std::size_t moe_index) const { return tokens_[moe_index]; }
  std::uint64_t count(std::size_t moe_index, std::size_t expert) const {
    return counts_[moe_index * num_experts_ + expert];
  }
  // Fraction of the layer's tokens routed to the expert; experts_per_token /
  // num_experts when the layer saw no token.
  double probability(std::size_t moe_index, std::size_t expert) const;
  std::uint64_t total_tokens() const;

  std::string to_json() const;
  // Parses and validates a profile document (FormatError status on anything
  // malformed: missing keys, wrong types, counts of the wrong length or larger
  // than the tokens allow).
  static Status from_json(const std::string& text, RoutingProfile* out);
  // A profile made for another model shape is an InvalidArgument status naming
  // the difference.
  Status check_compatible(std::size_t num_layers, const std::vector<std::uint32_t>& moe_layers,
                          std::size_t num_experts) const;

 private:
  std::string architecture_;
  std::size_t num_layers_ = 0;
  std::size_t num_experts_ = 0;
  std::size_t experts_per_token_ = 0;
  std::vector<std::uint32_t> moe_layers_;
  std::vector<std::int32_t> moe_index_of_layer_;
  std::vector<std::uint64_t> tokens_;
  std::vector<std::uint64_t> counts_;
};

// Reads a profile file (IoError / FormatError status naming the path).
Status load_routing_profile(const std::string& path, RoutingProfile* out);

}  // namespace zipmoe::cache

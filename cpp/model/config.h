// ModelConfig: the numbers of a model, read from a container's metadata JSON
// (docs/FORMAT.md, "Metadata": `architecture` and the HF-style `config`).
//
// Both spellings of published configs are accepted: transformers 5's
// `rope_parameters` and older top-level `rope_theta` + `rope_scaling`; the expert
// count under `num_experts`, `num_local_experts` or `n_routed_experts`. Every
// value is type- and range-checked: a malformed or inconsistent config is a
// FormatError status naming the key, an architecture or feature the engine
// cannot run is an Unsupported status naming it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cache/expert_provider.h"
#include "common/json.h"
#include "common/status.h"
#include "kernels/kernel_types.h"
#include "kernels/kernels.h"
#include "model/architecture.h"

namespace zipmoe::model {

struct RopeSettings {
  kernels::RopeConfig config;      // config.ext_factors is not set here (see ext_factors)
  kernels::RopeStyle style = kernels::RopeStyle::kNeox;
  std::vector<float> short_factors;  // longrope
  std::vector<float> long_factors;   // longrope
  double short_mscale = 0.0;          // longrope (PhiMoE); 0: absent
  double long_mscale = 0.0;
};

struct ModelConfig {
  const FamilySpec* family = nullptr;
  std::string config_json;  // the metadata's `config` object, serialized

  std::size_t vocab_size = 0;
  std::size_t hidden_size = 0;
  std::size_t num_layers = 0;
  std::size_t num_heads = 0;
  std::size_t num_kv_heads = 0;
  std::size_t head_dim = 0;           // grouped attention: q/k/v head size
  std::size_t intermediate_size = 0;  // dense FFN layers
  std::size_t max_position_embeddings = 0;
  float norm_eps = 1e-6f;
  bool tie_word_embeddings = false;

  // MoE
  std::size_t num_experts = 0;
  std::size_t experts_per_token = 0;
  std::size_t expert_intermediate_size = 0;
  std::size_t shared_intermediate_size = 0;  // 0: no shared expert
  bool norm_topk_prob = false;
  // How top-k weights are renormalized when norm_topk_prob: divided by their
  // p-norm (p = 1: their sum; DBRX's moe_normalize_expert_weights may say 2), at
  // least norm_topk_min (ERNIE's moe_norm_min; 0: no floor).
  double norm_topk_p = 1.0;
  float norm_topk_min = 0.0f;
  // DeepSeek routing
  double routed_scaling_factor = 1.0;
  bool group_limited = false;  // V2: topk_method == "group_limited_greedy"; V3: always
  std::size_t num_groups = 1;
  std::size_t topk_groups = 1;
  // PhiMoE sparsemixer
  float router_jitter_noise = 0.01f;

  // Latent attention (DeepSeek)
  std::size_t q_lora_rank = 0;  // 0: a plain q projection
  std::size_t kv_lora_rank = 0;
  std::size_t qk_nope_head_dim = 0;
  std::size_t qk_rope_head_dim = 0;
  std::size_t v_head_dim = 0;

  // Scalars of some families (1 / 0 where a family has none)
  float attention_scale = 0.0f;  // multiplies q.k; 0: 1/sqrt(head size) (DeepSeek: with YaRN mscale^2)
  float embedding_multiplier = 1.0f;  // granitemoe
  float residual_multiplier = 1.0f;   // granitemoe
  float logits_scaling = 1.0f;        // granitemoe: logits are divided by it
  float clip_qkv = 0.0f;              // olmoe: clamp q, k, v to [-c, c]; 0: none
  float swiglu_alpha = 1.702f;        // gpt_oss
  float swiglu_limit = 7.0f;          // gpt_oss
  // Llama 4's NoPE layers scale each query by log1p(floor((p + 1) / floor_scale)) *
  // attn_scale + 1 at position p (attn_temperature_tuning).
  bool attention_temperature_tuning = false;
  double attention_floor_scale = 8192.0;
  double attention_temperature_scale = 0.1;
  // The q/k norm the layers apply: the family's, unless the config turns it off
  // (use_qk_norm: GLM-4.5, Llama 4).
  QkNormKind qk_norm = QkNormKind::kNone;

  RopeSettings rope;
  std::vector<LayerPlan> layers;  // num_layers entries
  // Multi-token-prediction layers the container carries after the decoder
  // layers, unused (num_nextn_predict_layers; families with mtp_layers only).
  std::size_t mtp_layers = 0;

  // Sizes of one query / key / value head and of the per-position KV cache row.
  std::size_t query_head_size() const {
    return family->attention == AttentionKind::kLatent ? qk_nope_head_dim + qk_rope_head_dim : head_dim;
  }
  std::size_t value_head_size() const {
    return family->attention == AttentionKind::kLatent ? v_head_dim : head_dim;
  }
  bool is_moe_layer(std::size_t layer) const { return layers[layer].ffn == FfnKind::kMoe; }
  std::size_t num_moe_layers() const;
};

// Parses the container metadata (the whole JSON text) into *config.
Status parse_model_config(const std::string& metadata_json, ModelConfig* config);

// Parses an already-parsed metadata object (tests).
Status parse_model_config(const json::Value& metadata, ModelConfig* config);

// The routed experts of `config`, as the expert providers (cpp/cache) know them.
cache::ExpertShapes expert_shapes(const ModelConfig& config);

}  // namespace zipmoe::model

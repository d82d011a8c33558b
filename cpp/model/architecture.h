// The model families the engine runs, each described by a row of a table: which
// norm, attention, router, activation and shared expert it has, and which
// optional tensors it carries. The forward pass (forward.cpp) dispatches on these
// fields, never on the family name, so that a new family that only recombines
// known parts is one new row (plus its config keys in config.cpp).
//
// Tensors per family, in canonical names (docs/FORMAT.md, "Canonical tensors"):
//   every family   token_embd, output_norm, output (absent when tied),
//                  blk.{i}.attn_norm, blk.{i}.ffn_norm
//   grouped attn   blk.{i}.attn_q/k/v/output.weight (+ .bias where present),
//                  attn_q_norm/attn_k_norm (qk_norm), attn_sinks (gpt_oss)
//   latent attn    blk.{i}.attn_q (or attn_q_a, attn_q_a_norm, attn_q_b),
//                  attn_kv_a_mqa, attn_kv_a_norm, attn_kv_b, attn_output
//   dense FFN      blk.{i}.ffn_gate/ffn_up/ffn_down
//   MoE FFN        blk.{i}.ffn_gate_inp (+ .bias gpt_oss), exp_probs_b.bias
//                  (deepseek_v3), ffn_{gate,up,down}_exps.bias (gpt_oss),
//                  ffn_{gate,up,down}_shexp (+ ffn_gate_inp_shexp, qwen2_moe),
//                  and the routed experts through the ExpertProvider
//   layer norms    .bias of every norm (phimoe), output.bias (phimoe lm_head_bias)
// Carried but unused (kept in the container, so that export gives them back,
// never computed):
//   MTP layers     blk.{num_layers + j}.* for j < num_nextn_predict_layers
//                  (deepseek_v3's and glm4_moe's multi-token-prediction layers; `mtp_layers`)
// A container holding any other tensor, or lacking a required one, is refused
// at load (model/load_plan.h): a container relabelled to another architecture
// would otherwise compute with some of its tensors ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kernels/kernel_types.h"

namespace zipmoe::model {

enum class Family : std::uint8_t {
  kLlama,
  kQwen2,
  kQwen2Moe,
  kQwen3Moe,
  kMixtral,
  kOlmoe,
  kDeepseekV2,
  kDeepseekV3,
  kGptOss,
  kGraniteMoe,
  kPhiMoe,
  kGlm4Moe,
  kDots1,
  kMinimaxM2,
  kHunyuanV1Moe,
  kErnie45Moe,
  kDbrx,
  kLlama4Text,
};

enum class NormKind : std::uint8_t {
  kRms,        // x / sqrt(mean(x^2) + eps) * w
  kLayerNorm,  // (x - mean) / sqrt(var + eps) * w + b   (PhiMoE)
};

enum class AttentionKind : std::uint8_t {
  kGrouped,  // q/k/v projections, GQA over a per-head KV cache
  kLatent,   // DeepSeek multi-head latent attention, computed absorbed over a latent cache
};

enum class QkNormKind : std::uint8_t {
  kNone,
  kPerHead,            // RMSNorm of each head's head_dim (Qwen3-MoE, GLM-4.5 with use_qk_norm, dots.llm1)
  kWholeProjection,    // RMSNorm of the whole q and k projections (OLMoE, MiniMax-M2)
  kPerHeadAfterRope,   // RMSNorm of each head after RoPE (Hunyuan-A13B)
  kUnitPerHeadAfterRope,  // RMSNorm without weight of each head after RoPE, RoPE layers only (Llama 4)
};

enum class RouterKind : std::uint8_t {
  kSoftmaxTopK,  // softmax over all experts, top-k, optional renormalization (Qwen, Mixtral, OLMoE)
  kTopKSoftmax,  // top-k of the logits, softmax over those k (gpt-oss, Granite)
  kDeepseekV2,   // softmax, greedy or group-limited top-k, * routed_scaling_factor
  kDeepseekV3,   // sigmoid, + correction bias for the choice, group-limited top-k, normalize, scale
  kSparseMixer,  // PhiMoE's sparsemixer (top-2 with a relative threshold), inference form
  kSoftmaxBiasedTopK,  // softmax; the choice adds the correction bias, the weights do not; normalize (ERNIE 4.5)
  kSigmoidTopK,  // top-k of the logits, each weight the sigmoid of its logit (Llama 4)
};

enum class ActivationKind : std::uint8_t {
  kSiluMul,    // silu(gate) * up
  kSwigluOai,  // gpt-oss's clamped (up + 1) * gate * sigmoid(alpha * gate)
};

enum class SharedExpertKind : std::uint8_t {
  kNone,
  kPlain,         // added to the routed experts' sum (DeepSeek, GLM-4.5, ERNIE 4.5, Hunyuan, dots.llm1, Llama 4)
  kSigmoidGated,  // times sigmoid(x . w_gate) (Qwen1.5/2-MoE)
};

enum class FfnKind : std::uint8_t { kDense, kMoe };

struct FamilySpec {
  Family family;
  const char* name;  // the HF model_type, as in the container metadata
  bool moe;          // has routed experts (some layers may still be dense)
  NormKind norm;
  AttentionKind attention;
  QkNormKind qk_norm;
  RouterKind router;
  ActivationKind activation;
  SharedExpertKind shared_expert;
  bool attention_sinks;    // blk.{i}.attn_sinks.weight
  bool router_bias;        // blk.{i}.ffn_gate_inp.bias
  bool expert_biases;      // blk.{i}.ffn_{gate,up,down}_exps.bias
  bool score_correction;   // blk.{i}.exp_probs_b.bias
  bool norm_biases;        // every norm has a .bias
  // Matrix products always in F32 (MatmulPrecision::kExact), whatever the model's
  // precision: PhiMoE's router drops experts whose logit is not within 2% (relative)
  // of the best one, a discontinuity that BF16-rounded activations cross often
  // enough to change the logits by more than the engine's tolerance.
  bool exact_matmuls;
  // RoPE pairs of grouped attention (latent attention reads its config).
  kernels::RopeStyle rope_style;
  // The routing weight multiplies an expert's input rather than its output
  // (Llama 4: the expert sees x * sigmoid(logit)).
  bool weight_expert_input;
  // Carries multi-token-prediction layers after its decoder layers (the config's
  // num_nextn_predict_layers of them), which the engine does not compute
  // (DeepSeek-V3, GLM-4.5).
  bool mtp_layers = false;
};

// The row of `name` (an HF model_type), or nullptr when the engine cannot run it.
const FamilySpec* find_family(std::string_view name);
const FamilySpec& family_spec(Family family);
// "llama, qwen2, qwen2_moe, ..." for error messages.
std::string supported_family_names();

// What one decoder layer is.
struct LayerPlan {
  FfnKind ffn = FfnKind::kDense;
  std::size_t sliding_window = 0;  // 0: full causal attention
  // > 0: a query sees only the keys of its own chunk of this many positions
  // (Llama 4's chunked attention on its RoPE layers).
  std::size_t attention_chunk = 0;
  bool rope = true;  // false: a NoPE layer (Llama 4), queries and keys are not rotated

  // The most keys a query sees (its window or chunk), 0 when unbounded: the
  // KV cache of such a layer needs only span + (queries per step) - 1 positions.
  std::size_t attention_span() const {
    if (sliding_window && attention_chunk) return sliding_window < attention_chunk ? sliding_window : attention_chunk;
    return sliding_window ? sliding_window : attention_chunk;
  }
};

}  // namespace zipmoe::model

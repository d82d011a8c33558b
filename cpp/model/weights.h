// Dense (non-expert) weights: resolved by canonical name, checked against the
// config, decoded at load into resident buffers, and handed to the forward pass
// as kernel views grouped per layer.
//
// Everything is kept in the dtype it was stored in (BF16, F16 or F32), bit for
// bit, with two exceptions that rearrange or widen without changing a value:
// - latent attention's attn_kv_b [heads * (nope + v), rank] is stored per head
//   as the transposed key part [rank, nope] (to absorb it into the query) and the
//   value part [v, rank] (to expand the attention output), in one buffer of the
//   same size;
// - attention sinks and DeepSeek-V3's score-correction bias are widened to F32
//   (the kernels and the router read them as floats).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/memory_ledger.h"
#include "common/status.h"
#include "format/container_file.h"
#include "kernels/kernel_types.h"
#include "model/config.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe::model {

struct NormWeights {
  kernels::WeightVector weight;
  kernels::WeightVector bias;  // layer norms with a bias only
};

struct AttentionWeights {
  NormWeights norm;
  // Grouped attention
  kernels::WeightMatrix q, k, v;        // [heads * head_dim, hidden], [kv_heads * head_dim, hidden] x2
  kernels::WeightVector q_bias, k_bias, v_bias;
  kernels::WeightVector q_norm, k_norm;  // [head_dim] (per head) or [rows of q / k] (whole projection)
  const float* sinks = nullptr;          // [heads], F32
  // Latent attention
  kernels::WeightMatrix q_a;            // [q_lora_rank, hidden] (when q_lora_rank > 0)
  kernels::WeightVector q_a_norm;       // [q_lora_rank]
  kernels::WeightMatrix q_b;            // [heads * (nope + rope), q_lora_rank]; or `q` [.., hidden] without q_lora
  kernels::WeightMatrix kv_a;           // [kv_lora_rank + rope, hidden]
  kernels::WeightVector kv_a_norm;      // [kv_lora_rank]
  std::vector<kernels::WeightMatrix> k_absorb;  // per head [kv_lora_rank, nope]: q_nope -> latent query
  std::vector<kernels::WeightMatrix> v_expand;  // per head [v_head_dim, kv_lora_rank]: latent -> value
  // Both
  kernels::WeightMatrix output;         // [hidden, heads * value head size]
  kernels::WeightVector output_bias;
};

struct FfnWeights {
  NormWeights norm;
  // Dense layers
  kernels::WeightMatrix gate, up, down;  // [I, hidden] x2, [hidden, I]
  // MoE layers (routed experts come from the ExpertProvider)
  kernels::WeightMatrix router;          // [experts, hidden]
  kernels::WeightVector router_bias;     // [experts] (gpt-oss)
  const float* score_correction = nullptr;  // [experts], F32 (DeepSeek-V3)
  kernels::WeightMatrix expert_gate_bias, expert_up_bias;  // [experts, I] (gpt-oss), row e = expert e
  kernels::WeightMatrix expert_down_bias;                   // [experts, hidden]
  kernels::WeightMatrix shared_gate, shared_up, shared_down;  // [S, hidden] x2, [hidden, S]
  kernels::WeightMatrix shared_router;   // [1, hidden] (Qwen2-MoE's sigmoid gate)
};

struct LayerWeights {
  AttentionWeights attention;
  FfnWeights ffn;
};

struct ModelWeights {
  kernels::WeightMatrix embedding;  // [vocab, hidden]
  NormWeights output_norm;
  kernels::WeightMatrix output;     // [vocab, hidden]; the embedding when tied
  kernels::WeightVector output_bias;
  const float* rope_factors = nullptr;  // [rotary_dim / 2], F32: GGUF llama 3 rope_freqs, or null
  kernels::WeightVector unit_head_norm;  // [head_dim] ones, F32: the weight of a weightless q/k norm (Llama 4)
  std::vector<LayerWeights> layers;
};

// The dense tensors a model reads, found in its container, and what holding
// them costs.
struct DensePlan {
  std::vector<const TensorInfo*> tensors;  // every dense tensor the forward pass reads
  std::uint64_t ledger_bytes = 0;          // what DenseWeightStore::load charges to the ledger
};

// Owns the decoded dense tensors (charged to the ledger as kDenseWeights).
class DenseWeightStore {
 public:
  // Resolves every dense tensor `config` needs in `reader` and checks names,
  // roles and shapes (FormatError status naming the tensor), without reading
  // or allocating anything. The tensors are those of the family's table
  // (architecture.h): the required ones must be present, optional ones are read
  // when present.
  static Status plan(const format::ContainerFile& reader, const ModelConfig& config, DensePlan* out);

  // Plans, then decodes the tensors in parallel on `pool` and fills *weights
  // with views into this store.
  Status load(const format::ContainerFile& reader, const ModelConfig& config, ThreadPool* pool, MemoryLedger* ledger,
              Isa isa, ModelWeights* weights);

  std::uint64_t bytes() const { return bytes_; }
  std::size_t num_tensors() const { return tensors_.size(); }

 private:
  struct Tensor {
    const TensorInfo* info = nullptr;
    LedgerBuffer buffer;
  };
  const Tensor* find(const std::string& name) const;
  kernels::WeightMatrix matrix(const std::string& name) const;  // empty when absent
  kernels::WeightVector vector(const std::string& name) const;

  // Steps of load().
  Status decode_all(const format::ContainerFile& reader, const std::vector<const TensorInfo*>& found,
                    ThreadPool* pool, MemoryLedger* ledger, Isa isa);
  Status make_views(const ModelConfig& config, MemoryLedger* ledger, ModelWeights* weights);
  Status widened(const std::string& name, MemoryLedger* ledger, const float** out);
  Status grouped_attention_views(const std::string& prefix, MemoryLedger* ledger, AttentionWeights* attention);
  void latent_attention_views(const ModelConfig& config, const std::string& prefix, AttentionWeights* attention);
  Status ffn_views(const ModelConfig& config, std::size_t layer, const std::string& prefix, MemoryLedger* ledger,
                   FfnWeights* ffn);

  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<LedgerBuffer> derived_;  // F32 copies (sinks, score correction)
  std::uint64_t bytes_ = 0;
};

}  // namespace zipmoe::model

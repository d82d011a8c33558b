#include "model/weights.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

#include "common/parallel.h"
#include "kernels/kernels.h"

namespace zipmoe::model {

namespace {

struct WantedTensor {
  std::string name;
  std::vector<std::uint64_t> shape;
  bool required = true;
};

// The dense tensors load() keeps an F32 copy of besides (the kernels and the
// router read them as floats): attention sinks, DeepSeek-V3's score-correction
// bias, GGUF llama 3's rope_freqs. make_views() makes the copies.
bool widened_to_f32(const std::string& name) {
  auto ends_with = [&](const char* suffix) {
    const std::size_t n = std::char_traits<char>::length(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  return name == "rope_freqs.weight" || ends_with(".attn_sinks.weight") || ends_with(".exp_probs_b.bias");
}

// Bytes a buffer of `bytes` is charged (an empty tensor still gets one byte).
std::uint64_t charged(std::uint64_t bytes) { return bytes ? bytes : 1; }

// The F32 ones make_views() gives a weightless q/k norm (Llama 4).
std::uint64_t unit_head_norm_bytes(const ModelConfig& config) { return charged(config.head_dim * sizeof(float)); }

// Every dense tensor the forward pass may read, with the shape the config implies.
std::vector<WantedTensor> wanted_tensors(const ModelConfig& c) {
  std::vector<WantedTensor> out;
  auto add = [&](std::string name, std::vector<std::uint64_t> shape, bool required = true) {
    out.push_back({std::move(name), std::move(shape), required});
  };
  const FamilySpec& f = *c.family;
  const std::uint64_t H = c.hidden_size, V = c.vocab_size;
  add("token_embd.weight", {V, H});
  add("output_norm.weight", {H});
  add("output.weight", {V, H}, !c.tie_word_embeddings);
  add("output.bias", {V}, false);
  if (f.norm_biases) add("output_norm.bias", {H});
  if (f.attention == AttentionKind::kGrouped) add("rope_freqs.weight", {c.rope.config.rotary_dim / 2}, false);
  for (std::size_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {H});
    add(p + "ffn_norm.weight", {H});
    if (f.norm_biases) {
      add(p + "attn_norm.bias", {H});
      add(p + "ffn_norm.bias", {H});
    }
    if (f.attention == AttentionKind::kLatent) {
      const std::uint64_t heads = c.num_heads, qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
      if (c.q_lora_rank) {
        add(p + "attn_q_a.weight", {c.q_lora_rank, H});
        add(p + "attn_q_a_norm.weight", {c.q_lora_rank});
        add(p + "attn_q_b.weight", {heads * qk, c.q_lora_rank});
      } else {
        add(p + "attn_q.weight", {heads * qk, H});
      }
      add(p + "attn_kv_a_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H});
      add(p + "attn_kv_a_norm.weight", {c.kv_lora_rank});
      add(p + "attn_kv_b.weight", {heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
      add(p + "attn_output.weight", {H, heads * c.v_head_dim});
    } else {
      const std::uint64_t q_rows = c.num_heads * c.head_dim, kv_rows = c.num_kv_heads * c.head_dim;
      add(p + "attn_q.weight", {q_rows, H});
      add(p + "attn_k.weight", {kv_rows, H});
      add(p + "attn_v.weight", {kv_rows, H});
      add(p + "attn_output.weight", {H, q_rows});
      add(p + "attn_q.bias", {q_rows}, false);
      add(p + "attn_k.bias", {kv_rows}, false);
      add(p + "attn_v.bias", {kv_rows}, false);
      add(p + "attn_output.bias", {H}, false);
      if (c.qk_norm == QkNormKind::kPerHead || c.qk_norm == QkNormKind::kPerHeadAfterRope) {
        add(p + "attn_q_norm.weight", {c.head_dim});
        add(p + "attn_k_norm.weight", {c.head_dim});
      } else if (c.qk_norm == QkNormKind::kWholeProjection) {
        add(p + "attn_q_norm.weight", {q_rows});
        add(p + "attn_k_norm.weight", {kv_rows});
      }
      if (f.attention_sinks) add(p + "attn_sinks.weight", {c.num_heads});
    }
    if (c.is_moe_layer(i)) {
      const std::uint64_t E = c.num_experts, I = c.expert_intermediate_size;
      add(p + "ffn_gate_inp.weight", {E, H});
      if (f.router_bias) add(p + "ffn_gate_inp.bias", {E});
      if (f.score_correction) add(p + "exp_probs_b.bias", {E});
      if (f.expert_biases) {
        add(p + "ffn_gate_exps.bias", {E, I});
        add(p + "ffn_up_exps.bias", {E, I});
        add(p + "ffn_down_exps.bias", {E, H});
      }
      if (c.shared_intermediate_size) {
        const std::uint64_t S = c.shared_intermediate_size;
        add(p + "ffn_gate_shexp.weight", {S, H});
        add(p + "ffn_up_shexp.weight", {S, H});
        add(p + "ffn_down_shexp.weight", {H, S});
        if (f.shared_expert == SharedExpertKind::kSigmoidGated) add(p + "ffn_gate_inp_shexp.weight", {1, H});
      }
    } else {
      const std::uint64_t I = c.intermediate_size;
      add(p + "ffn_gate.weight", {I, H});
      add(p + "ffn_up.weight", {I, H});
      add(p + "ffn_down.weight", {H, I});
    }
  }
  return out;
}

kernels::WeightMatrix matrix_of(const TensorInfo& t, const std::uint8_t* data) {
  kernels::WeightMatrix m;
  m.data = data;
  m.dtype = t.dtype;
  m.rows = static_cast<std::size_t>(t.shape[0]);
  m.cols = static_cast<std::size_t>(t.shape[1]);
  return m;
}

kernels::WeightVector vector_of(const TensorInfo& t, const std::uint8_t* data) {
  kernels::WeightVector v;
  v.data = data;
  v.dtype = t.dtype;
  v.size = static_cast<std::size_t>(t.num_elements);
  return v;
}

// Tensors above this size are decoded one at a time with the whole pool (their
// segments in parallel); smaller ones one per thread.
constexpr std::uint64_t kLargeTensorBytes = std::uint64_t(16) << 20;

}  // namespace

const DenseWeightStore::Tensor* DenseWeightStore::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Status DenseWeightStore::load(const format::ContainerFile& reader, const ModelConfig& config, ThreadPool* pool,
                              MemoryLedger* ledger, Isa isa, ModelWeights* weights) {
  DensePlan plan;
  ZIPMOE_RETURN_IF_ERROR(DenseWeightStore::plan(reader, config, &plan));
  ZIPMOE_RETURN_IF_ERROR(decode_all(reader, plan.tensors, pool, ledger, isa));
  ModelWeights w;
  ZIPMOE_RETURN_IF_ERROR(make_views(config, ledger, &w));
  *weights = std::move(w);
  return Status::Ok();
}

Status DenseWeightStore::plan(const format::ContainerFile& reader, const ModelConfig& config, DensePlan* out) {
  const std::string& path = reader.path();
  const std::vector<WantedTensor> wanted = wanted_tensors(config);
  DensePlan plan;
  plan.tensors.reserve(wanted.size());
  for (const WantedTensor& w : wanted) {
    const TensorInfo* t = reader.find(w.name);
    if (!t) {
      if (w.required) {
        return Status::Format(path + ": tensor " + w.name + " expected by the " + config.family->name +
                              " config is missing");
      }
      continue;
    }
    if (t->role.is_expert()) return Status::Format(path + ": tensor " + w.name + " should be dense, not an expert");
    if (t->shape != w.shape) {
      return Status::Format(path + ": tensor " + w.name + " has shape " + shape_text(t->shape) +
                            " but the config implies " + shape_text(w.shape) + " (config and tensors disagree)");
    }
    plan.tensors.push_back(t);
    plan.ledger_bytes += charged(t->decoded_bytes());
    if (widened_to_f32(t->name)) plan.ledger_bytes += charged(t->num_elements) * sizeof(float);
  }
  // make_views' unit weights of a weightless q/k norm
  if (config.qk_norm == QkNormKind::kUnitPerHeadAfterRope) plan.ledger_bytes += unit_head_norm_bytes(config);
  *out = std::move(plan);
  return Status::Ok();
}

// Allocates every tensor, then decodes them: large tensors with the whole pool, the rest one per thread.
Status DenseWeightStore::decode_all(const format::ContainerFile& reader, const std::vector<const TensorInfo*>& found,
                                    ThreadPool* pool, MemoryLedger* ledger, Isa isa) {
  tensors_.clear();
  tensors_.resize(found.size());
  for (std::size_t i = 0; i < found.size(); ++i) {
    tensors_[i].info = found[i];
    index_[found[i]->name] = i;
    const std::size_t bytes = static_cast<std::size_t>(found[i]->decoded_bytes());
    ZIPMOE_RETURN_IF_ERROR(tensors_[i].buffer.allocate(ledger, MemoryCategory::kDenseWeights, charged(bytes)));
    bytes_ += bytes;
  }
  std::vector<std::size_t> small, large;
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    (tensors_[i].info->decoded_bytes() >= kLargeTensorBytes ? large : small).push_back(i);
  }
  auto decode = [&](std::size_t i) {
    Tensor& t = tensors_[i];
    return reader.decode_tensor(*t.info, t.buffer.data(), static_cast<std::size_t>(t.info->decoded_bytes()), pool,
                                isa);
  };
  for (std::size_t i : large) ZIPMOE_RETURN_IF_ERROR(decode(i));
  return parallel_for_status(pool, small.size(), [&](std::size_t j) { return decode(small[j]); });
}

kernels::WeightMatrix DenseWeightStore::matrix(const std::string& name) const {
  const Tensor* t = find(name);
  return t ? matrix_of(*t->info, t->buffer.data()) : kernels::WeightMatrix();
}

kernels::WeightVector DenseWeightStore::vector(const std::string& name) const {
  const Tensor* t = find(name);
  return t ? vector_of(*t->info, t->buffer.data()) : kernels::WeightVector();
}

// An F32 copy of a small vector (a name widened_to_f32() lists); null when absent.
Status DenseWeightStore::widened(const std::string& name, MemoryLedger* ledger, const float** out) {
  *out = nullptr;
  const Tensor* t = find(name);
  if (!t) return Status::Ok();
  const std::size_t n = static_cast<std::size_t>(t->info->num_elements);
  derived_.emplace_back();
  ZIPMOE_RETURN_IF_ERROR(
      derived_.back().allocate(ledger, MemoryCategory::kDenseWeights, charged(n) * sizeof(float)));
  bytes_ += n * 4;
  float* dst = derived_.back().as<float>();
  kernels::convert_to_f32(Isa::kScalar, t->info->dtype, t->buffer.data(), dst, n);
  *out = dst;
  return Status::Ok();
}

Status DenseWeightStore::make_views(const ModelConfig& config, MemoryLedger* ledger, ModelWeights* w) {
  w->embedding = matrix("token_embd.weight");
  w->output_norm.weight = vector("output_norm.weight");
  w->output_norm.bias = vector("output_norm.bias");
  w->output = find("output.weight") ? matrix("output.weight") : w->embedding;
  w->output_bias = vector("output.bias");
  ZIPMOE_RETURN_IF_ERROR(widened("rope_freqs.weight", ledger, &w->rope_factors));
  if (config.qk_norm == QkNormKind::kUnitPerHeadAfterRope) {
    // A weightless RMSNorm is one with unit weights (times 1 is exact).
    derived_.emplace_back();
    ZIPMOE_RETURN_IF_ERROR(
        derived_.back().allocate(ledger, MemoryCategory::kDenseWeights, unit_head_norm_bytes(config)));
    bytes_ += config.head_dim * 4;
    float* ones = derived_.back().as<float>();
    std::fill(ones, ones + config.head_dim, 1.0f);
    w->unit_head_norm = {ones, DType::kF32, config.head_dim};
  }
  w->layers.resize(config.num_layers);
  for (std::size_t i = 0; i < config.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    AttentionWeights& a = w->layers[i].attention;
    a.norm.weight = vector(p + "attn_norm.weight");
    a.norm.bias = vector(p + "attn_norm.bias");
    a.output = matrix(p + "attn_output.weight");
    a.output_bias = vector(p + "attn_output.bias");
    if (config.family->attention == AttentionKind::kLatent) {
      latent_attention_views(config, p, &a);
    } else {
      ZIPMOE_RETURN_IF_ERROR(grouped_attention_views(p, ledger, &a));
    }
    ZIPMOE_RETURN_IF_ERROR(ffn_views(config, i, p, ledger, &w->layers[i].ffn));
  }
  return Status::Ok();
}

Status DenseWeightStore::grouped_attention_views(const std::string& p, MemoryLedger* ledger, AttentionWeights* a) {
  a->q = matrix(p + "attn_q.weight");
  a->k = matrix(p + "attn_k.weight");
  a->v = matrix(p + "attn_v.weight");
  a->q_bias = vector(p + "attn_q.bias");
  a->k_bias = vector(p + "attn_k.bias");
  a->v_bias = vector(p + "attn_v.bias");
  a->q_norm = vector(p + "attn_q_norm.weight");
  a->k_norm = vector(p + "attn_k_norm.weight");
  return widened(p + "attn_sinks.weight", ledger, &a->sinks);
}

void DenseWeightStore::latent_attention_views(const ModelConfig& config, const std::string& p, AttentionWeights* a) {
  if (config.q_lora_rank) {
    a->q_a = matrix(p + "attn_q_a.weight");
    a->q_a_norm = vector(p + "attn_q_a_norm.weight");
    a->q_b = matrix(p + "attn_q_b.weight");
  } else {
    a->q_b = matrix(p + "attn_q.weight");
  }
  a->kv_a = matrix(p + "attn_kv_a_mqa.weight");
  a->kv_a_norm = vector(p + "attn_kv_a_norm.weight");
  // Rearrange kv_b in place: per head, the key part transposed, then the value parts.
  Tensor* kv_b = const_cast<Tensor*>(find(p + "attn_kv_b.weight"));
  const std::size_t heads = config.num_heads, nope = config.qk_nope_head_dim, vdim = config.v_head_dim;
  const std::size_t rank = config.kv_lora_rank, es = dtype_size(kv_b->info->dtype);
  const std::size_t total = kv_b->buffer.size();
  std::vector<std::uint8_t> original(kv_b->buffer.data(), kv_b->buffer.data() + total);
  std::uint8_t* dst = kv_b->buffer.data();
  const std::uint8_t* src = original.data();
  const std::size_t key_block = heads * rank * nope;  // elements
  for (std::size_t h = 0; h < heads; ++h) {
    const std::size_t head_row = h * (nope + vdim);
    for (std::size_t r = 0; r < rank; ++r) {
      for (std::size_t j = 0; j < nope; ++j) {
        std::memcpy(dst + ((h * rank + r) * nope + j) * es, src + ((head_row + j) * rank + r) * es, es);
      }
    }
    std::memcpy(dst + (key_block + h * vdim * rank) * es, src + (head_row + nope) * rank * es, vdim * rank * es);
  }
  a->k_absorb.resize(heads);
  a->v_expand.resize(heads);
  for (std::size_t h = 0; h < heads; ++h) {
    a->k_absorb[h] = {dst + h * rank * nope * es, kv_b->info->dtype, rank, nope};
    a->v_expand[h] = {dst + (key_block + h * vdim * rank) * es, kv_b->info->dtype, vdim, rank};
  }
}

Status DenseWeightStore::ffn_views(const ModelConfig& config, std::size_t layer, const std::string& p,
                                   MemoryLedger* ledger, FfnWeights* ffn) {
  ffn->norm.weight = vector(p + "ffn_norm.weight");
  ffn->norm.bias = vector(p + "ffn_norm.bias");
  if (!config.is_moe_layer(layer)) {
    ffn->gate = matrix(p + "ffn_gate.weight");
    ffn->up = matrix(p + "ffn_up.weight");
    ffn->down = matrix(p + "ffn_down.weight");
    return Status::Ok();
  }
  ffn->router = matrix(p + "ffn_gate_inp.weight");
  ffn->router_bias = vector(p + "ffn_gate_inp.bias");
  ZIPMOE_RETURN_IF_ERROR(widened(p + "exp_probs_b.bias", ledger, &ffn->score_correction));
  ffn->expert_gate_bias = matrix(p + "ffn_gate_exps.bias");
  ffn->expert_up_bias = matrix(p + "ffn_up_exps.bias");
  ffn->expert_down_bias = matrix(p + "ffn_down_exps.bias");
  ffn->shared_gate = matrix(p + "ffn_gate_shexp.weight");
  ffn->shared_up = matrix(p + "ffn_up_shexp.weight");
  ffn->shared_down = matrix(p + "ffn_down_shexp.weight");
  ffn->shared_router = matrix(p + "ffn_gate_inp_shexp.weight");
  return Status::Ok();
}

}  // namespace zipmoe::model

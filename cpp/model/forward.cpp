#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace zipmoe::model {

namespace {

constexpr std::size_t kFloatAlignment = 16;  // 64 bytes

std::size_t align_floats(std::size_t n) { return (n + kFloatAlignment - 1) / kFloatAlignment * kFloatAlignment; }

// Elements per thread below which a row-wise step stays on the calling thread.
constexpr std::size_t kParallelRowWork = std::size_t(1) << 15;
// Multiply-adds below which a matrix product or attention runs on the calling thread.
constexpr std::size_t kParallelMatmulWork = std::size_t(1) << 18;

// Epsilon of DeepSeek's q_a_layernorm and kv_a_layernorm (transformers builds them
// with the RMSNorm default, not rms_norm_eps).
constexpr float kLatentNormEps = 1e-6f;

kernels::WeightVector row_of(const kernels::WeightMatrix& m, std::size_t row) {
  kernels::WeightVector v;
  if (!m.data) return v;
  v.data = static_cast<const std::uint8_t*>(m.data) + row * m.cols * dtype_size(m.dtype);
  v.dtype = m.dtype;
  v.size = m.cols;
  return v;
}

kernels::LinearJob job(const float* x, std::size_t m, std::size_t ldx, const kernels::WeightMatrix& w,
                       const kernels::WeightVector& bias, float* y, std::size_t ldy, bool accumulate = false) {
  kernels::LinearJob j;
  j.x = x;
  j.m = m;
  j.ldx = ldx;
  j.weight = w;
  j.bias = bias;
  j.y = y;
  j.ldy = ldy;
  j.accumulate = accumulate;
  return j;
}

// torch.clamp(x, -limit, limit), NaN kept (OLMoE's clip_qkv; no kernel for it).
void clamp_values(float* x, std::size_t n, float limit) {
  for (std::size_t i = 0; i < n; ++i) {
    if (x[i] > limit) {
      x[i] = limit;
    } else if (x[i] < -limit) {
      x[i] = -limit;
    }
  }
}

}  // namespace

template <typename Fn>
void Forward::for_rows(std::size_t rows, std::size_t row_cost, Fn&& fn) {
  const int threads = pool_ ? pool_->num_threads() : 1;
  if (threads <= 1 || rows < 2 || rows * row_cost < kParallelRowWork) {
    fn(std::size_t(0), rows);
    return;
  }
  // Blocks depend on the shapes only (not on the thread count): each row is
  // computed by the same code whichever thread runs it.
  const std::size_t rows_per_block = std::max<std::size_t>(1, kParallelRowWork / std::max<std::size_t>(row_cost, 1));
  const std::size_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  parallel_for(pool_, blocks, [&](std::size_t b) {
    const std::size_t first = b * rows_per_block;
    fn(first, std::min(rows_per_block, rows - first));
  });
}

Forward::~Forward() {
  if (ledger_ && workspace_charged_) ledger_->remove(MemoryCategory::kScratch, workspace_charged_);
}

Status Forward::init(const ModelConfig& config, const ModelWeights& weights, cache::ExpertProvider* experts,
                     ThreadPool* pool, MemoryLedger* ledger, const ForwardOptions& options) {
  config_ = &config;
  weights_ = &weights;
  experts_ = experts;
  pool_ = pool;
  ledger_ = ledger;
  options_ = options;
  if (options_.batch == 0) return Status::InvalidArgument("batch must be at least 1");
  if (options_.max_positions == 0) return Status::InvalidArgument("max_positions must be at least 1");
  ZIPMOE_RETURN_IF_ERROR(allocate_scratch());
  ZIPMOE_RETURN_IF_ERROR(prepare_rope());
  size_routing();
  return reserve_workspace();
}

std::uint64_t Forward::scratch_bytes(const ModelConfig& config, const ForwardOptions& options) {
  return lay_out_scratch(config, options).floats * sizeof(float) + workspace_bytes(config, options);
}

namespace {

bool has_ffn(const ModelConfig& c, FfnKind kind) {
  for (const LayerPlan& layer : c.layers) {
    if (layer.ffn == kind) return true;
  }
  return false;
}

}  // namespace

// Lays out every activation buffer for `batch` tokens in one scratch block.
Forward::ScratchLayout Forward::lay_out_scratch(const ModelConfig& c, const ForwardOptions& options) {
  const bool latent = c.family->attention == AttentionKind::kLatent;
  const bool any_dense = has_ffn(c, FfnKind::kDense), any_moe = has_ffn(c, FfnKind::kMoe);
  const std::size_t B = options.batch, H = c.hidden_size, heads = c.num_heads;
  const std::size_t K = c.experts_per_token, E = c.num_experts, I = c.expert_intermediate_size;
  const std::size_t kv_width = latent ? 0 : c.num_kv_heads * c.head_dim;
  const std::size_t latent_row = latent ? c.kv_lora_rank + c.qk_rope_head_dim : 0;
  const std::size_t ffn_width = std::max(any_dense ? c.intermediate_size : 0, c.shared_intermediate_size);
  const std::size_t rotary = c.rope.config.rotary_dim;

  ScratchLayout layout;
  auto place = [&](float* Forward::*buffer, std::size_t floats) {
    layout.offsets.emplace_back(buffer, layout.floats);
    layout.floats += align_floats(std::max<std::size_t>(floats, 1));
  };
  place(&Forward::x_, B * H);
  place(&Forward::xn_, B * H);
  place(&Forward::q_, B * heads * c.query_head_size());
  place(&Forward::att_, B * heads * c.value_head_size());
  place(&Forward::delta_, B * H);
  if (latent) {
    place(&Forward::q_lora_, B * c.q_lora_rank);
    place(&Forward::kv_latent_, B * latent_row);
    place(&Forward::q_latent_, B * heads * latent_row);
    place(&Forward::att_latent_, B * heads * c.kv_lora_rank);
  } else {
    place(&Forward::k_, B * kv_width);
    place(&Forward::v_, B * kv_width);
  }
  if (ffn_width) {
    place(&Forward::ffn_gate_, B * ffn_width);
    place(&Forward::ffn_up_, B * ffn_width);
  }
  if (any_moe) {
    place(&Forward::router_logits_, B * E);
    place(&Forward::router_work_, 2 * E + 2);
    place(&Forward::moe_in_, B * K * H);
    place(&Forward::moe_gate_, B * K * I);
    place(&Forward::moe_up_, B * K * I);
    place(&Forward::moe_out_, B * K * H);
    if (options.gate_ahead) {
      place(&Forward::ahead_xn_, B * H);
      place(&Forward::ahead_logits_, B * E);
    }
    if (c.shared_intermediate_size) {
      place(&Forward::shared_out_, B * H);
      place(&Forward::shared_logit_, B);
    }
  }
  place(&Forward::rope_rows_, B * rotary);
  place(&Forward::inv_freq_, rotary / 2);
  return layout;
}

Status Forward::allocate_scratch() {
  const ScratchLayout layout = lay_out_scratch(*config_, options_);
  ZIPMOE_RETURN_IF_ERROR(scratch_.allocate(ledger_, MemoryCategory::kScratch, layout.floats * sizeof(float)));
  for (const auto& [buffer, offset] : layout.offsets) this->*buffer = scratch(offset);
  return Status::Ok();
}

// The RoPE frequencies and scale; step() turns them into each step's cos/sin rows.
// (A table for every position the cache holds would grow with the context: 4 GB
// for 2^24 positions of 64 rotary dims.)
Status Forward::prepare_rope() {
  const ModelConfig& c = *config_;
  const std::size_t rotary = c.rope.config.rotary_dim, capacity = options_.max_positions;
  kernels::RopeConfig rope = c.rope.config;
  if (rope.scaling == kernels::RopeScaling::kLongRope) {
    const bool long_context = static_cast<double>(capacity) > rope.original_max_position_embeddings;
    rope.ext_factors = long_context ? c.rope.long_factors.data() : c.rope.short_factors.data();
    const double mscale = long_context ? c.rope.long_mscale : c.rope.short_mscale;
    if (mscale > 0 && rope.attention_factor <= 0) rope.attention_factor = mscale;
  } else if (rope.scaling == kernels::RopeScaling::kNone && weights_->rope_factors) {
    // GGUF llama 3: frequency factors stored as a tensor divide the base frequencies.
    for (std::size_t i = 0; i < rotary / 2; ++i) {
      if (!(weights_->rope_factors[i] > 0)) {
        return Status::Format("tensor rope_freqs.weight holds a frequency factor that is not positive");
      }
    }
    rope.scaling = kernels::RopeScaling::kLongRope;
    rope.factor = 1.0;
    rope.ext_factors = weights_->rope_factors;
  }
  // parse_model_config checked every parameter the kernel requires.
  rope_attention_factor_ = kernels::rope_inv_freq(rope, inv_freq_);
  return Status::Ok();
}

// Routing bookkeeping and job lists, sized once.
void Forward::size_routing() {
  const ModelConfig& c = *config_;
  const std::size_t B = options_.batch, K = c.experts_per_token, E = c.num_experts;
  selected_.assign(B * std::max<std::size_t>(K, 1), 0);
  selected_weight_.assign(selected_.size(), 0.0f);
  selected_row_.assign(selected_.size(), 0);
  expert_rows_.assign(E + 1, 0);
  expert_first_.assign(E + 1, 0);
  expert_cursor_.assign(E + 1, 0);
  group_scores_.assign(c.num_groups + 1, 0.0f);
  ready_.assign(E + 1, 0);
  next_moe_layer_.assign(c.num_layers, -1);
  for (std::size_t layer = c.num_layers; layer-- > 1;) {
    next_moe_layer_[layer - 1] = c.is_moe_layer(layer) ? static_cast<std::int32_t>(layer) : next_moe_layer_[layer];
  }
  if (options_.gate_ahead) {
    ahead_selected_.assign(B * std::max<std::size_t>(K, 1), 0);
    ahead_weight_.assign(ahead_selected_.size(), 0.0f);
    ahead_tokens_.assign(E + 1, 0);
    ahead_experts_.reserve(E);
  }
  request_.token_counts.reserve(E);
  topk_scratch_.assign(E + 2, 0);
  request_.experts.reserve(E);
  request_.weights.reserve(E);
  request_.delivered.reserve(E);
  jobs_.reserve(std::max<std::size_t>(2 * E + 4, 2 * c.num_heads + 4));
}

// The matmul workspace of the largest pass, found with stand-in pointers
// (distinct inputs are what sizes it; nothing is dereferenced).
std::size_t Forward::workspace_bytes(const ModelConfig& c, const ForwardOptions& options) {
  const bool latent = c.family->attention == AttentionKind::kLatent;
  const std::size_t B = options.batch, H = c.hidden_size, heads = c.num_heads;
  const std::size_t K = c.experts_per_token, E = c.num_experts, I = c.expert_intermediate_size;
  const std::size_t q_width = heads * c.query_head_size();
  std::size_t workspace = 0;
  auto consider = [&](const std::vector<kernels::LinearJob>& jobs) {
    workspace = std::max(workspace, kernels::linear_workspace_bytes(options.isa, jobs.data(), jobs.size(),
                                                                    options.precision));
  };
  std::vector<float> stand_in_floats(std::max(E, heads) + 1);
  float* base = stand_in_floats.data();
  auto stand_in = [&](std::size_t rows, std::size_t cols) {
    kernels::WeightMatrix m;
    m.data = base;
    m.dtype = DType::kF32;
    m.rows = rows;
    m.cols = cols;
    return m;
  };
  std::vector<kernels::LinearJob> probe;
  probe.push_back(job(base, B, 0, stand_in(c.vocab_size, H), {}, base, 0));
  consider(probe);
  if (has_ffn(c, FfnKind::kDense)) {
    probe.assign(1, job(base, B, 0, stand_in(c.intermediate_size, H), {}, base, 0));
    consider(probe);
    probe.assign(1, job(base, B, 0, stand_in(H, c.intermediate_size), {}, base, 0));
    consider(probe);
  }
  if (latent) {
    probe.clear();
    for (std::size_t h = 0; h < heads; ++h) {
      probe.push_back(job(base + h, B, q_width, stand_in(c.kv_lora_rank, c.qk_nope_head_dim), {}, base, 0));
    }
    consider(probe);
    probe.clear();
    for (std::size_t h = 0; h < heads; ++h) {
      probe.push_back(job(base + h, B, heads * c.kv_lora_rank, stand_in(c.v_head_dim, c.kv_lora_rank), {}, base, 0));
    }
    consider(probe);
  }
  if (has_ffn(c, FfnKind::kMoe) && E > 0) {
    const std::size_t used = std::min(E, B * K);
    const std::size_t rows = (B * K + used - 1) / used;
    probe.clear();
    for (std::size_t e = 0; e < used; ++e) probe.push_back(job(base + e, rows, H, stand_in(I, H), {}, base, 0));
    consider(probe);
    probe.clear();
    for (std::size_t e = 0; e < used; ++e) probe.push_back(job(base + e, rows, I, stand_in(H, I), {}, base, 0));
    consider(probe);
  }
  return workspace + 4096;
}

Status Forward::reserve_workspace() {
  const std::size_t bytes = workspace_bytes(*config_, options_);
  ZIPMOE_RETURN_IF_ERROR(ledger_->reserve(MemoryCategory::kScratch, bytes));
  workspace_charged_ = bytes;
  workspace_.reserve(bytes);
  return Status::Ok();
}

ThreadPool* Forward::pool_for(std::size_t work) const {
  // Waking the workers costs tens of microseconds: below that much work one
  // thread is faster (results do not depend on it).
  return work >= kParallelMatmulWork ? pool_ : nullptr;
}

void Forward::linear(const kernels::LinearJob* jobs, std::size_t count) { linear(jobs, count, options_.precision); }

void Forward::linear(const kernels::LinearJob* jobs, std::size_t count, kernels::MatmulPrecision precision) {
  std::size_t work = 0;
  for (std::size_t j = 0; j < count; ++j) work += jobs[j].m * jobs[j].weight.rows * jobs[j].weight.cols;
  kernels::linear_batch(options_.isa, jobs, count, pool_for(work), &workspace_, precision);
  if (workspace_.capacity() > workspace_charged_) {
    ledger_->add(MemoryCategory::kScratch, workspace_.capacity() - workspace_charged_);
    workspace_charged_ = workspace_.capacity();
  }
}

// ---------------------------------------------------------------------------
// The steps

void Forward::embed(const StepSegment* segments, std::size_t count) {
  // x[t] = embedding row of token t of the step (exactly widened to F32)
  const kernels::WeightMatrix& table = weights_->embedding;
  const std::size_t H = config_->hidden_size, row_bytes = H * dtype_size(table.dtype);
  std::size_t n = 0;
  for (std::size_t s = 0; s < count; ++s) {
    for (std::size_t i = 0; i < segments[s].n; ++i, ++n) {
      const std::size_t id = static_cast<std::size_t>(segments[s].tokens[i]);
      const auto* row = static_cast<const std::uint8_t*>(table.data) + id * row_bytes;
      kernels::convert_to_f32(options_.isa, table.dtype, row, x_ + n * H, H);
    }
  }
  if (config_->embedding_multiplier != 1.0f) {
    kernels::scale(options_.isa, x_, config_->embedding_multiplier, x_, n * H);
  }
}

void Forward::norm(const NormWeights& w, const float* in, float* out, std::size_t n) {
  // out[t] = norm(in[t]) * weight (+ bias)       [n, hidden]
  const std::size_t H = config_->hidden_size;
  const float eps = config_->norm_eps;
  const bool layer_norm = config_->family->norm == NormKind::kLayerNorm;
  const Isa isa = options_.isa;
  for_rows(n, H, [&](std::size_t first, std::size_t rows) {
    if (layer_norm) {
      kernels::layer_norm(isa, in + first * H, rows, H, H, w.weight, w.bias, eps, out + first * H, H);
    } else {
      kernels::rms_norm(isa, in + first * H, rows, H, H, w.weight, eps, out + first * H, H);
    }
  });
}

void Forward::add_residual(const float* delta, std::size_t n) {
  // x += delta (Granite: x += delta * residual_multiplier)
  const std::size_t H = config_->hidden_size;
  const float multiplier = config_->residual_multiplier;
  const Isa isa = options_.isa;
  for_rows(n, H, [&](std::size_t first, std::size_t rows) {
    float* x = x_ + first * H;
    const float* d = delta + first * H;
    if (multiplier == 1.0f) {
      kernels::add(isa, x, d, x, rows * H);
    } else {
      kernels::add_scaled(isa, d, multiplier, x, rows * H);
    }
  });
}

void Forward::attention_grouped(std::size_t layer, const StepSegment* segments, std::size_t count, std::size_t n) {
  const ModelConfig& c = *config_;
  const AttentionWeights& a = weights_->layers[layer].attention;
  const Isa isa = options_.isa;
  const std::size_t H = c.hidden_size, heads = c.num_heads, kv_heads = c.num_kv_heads, dim = c.head_dim;
  const std::size_t q_width = heads * dim, kv_width = kv_heads * dim, rotary = c.rope.config.rotary_dim;

  // xn = norm(x)                                         [n, hidden]
  norm(a.norm, x_, xn_, n);
  // q = xn Wq^T + bq, k = xn Wk^T + bk, v = xn Wv^T + bv   [n, heads*dim], [n, kv_heads*dim] x2
  const kernels::LinearJob qkv[3] = {job(xn_, n, H, a.q, a.q_bias, q_, q_width),
                                     job(xn_, n, H, a.k, a.k_bias, k_, kv_width),
                                     job(xn_, n, H, a.v, a.v_bias, v_, kv_width)};
  linear(qkv, 3);
  normalize_queries_and_keys(layer, n, /*after_rope=*/false);
  if (c.clip_qkv > 0) {
    clamp_values(q_, n * q_width, c.clip_qkv);
    clamp_values(k_, n * kv_width, c.clip_qkv);
    clamp_values(v_, n * kv_width, c.clip_qkv);
  }
  // per segment (rows [row, row + m) at positions [p, p + m) of its sequence): rotate
  // the first `rotary` dims of every q and k head by its position (Llama 4's NoPE
  // layers scale q by position instead)
  for (std::size_t s = 0, row = 0; s < count; row += segments[s].n, ++s) {
    const std::size_t m = segments[s].n, p = segments[s].position;
    if (c.layers[layer].rope) {
      const float* cos_sin = rope_rows_ + row * rotary;
      kernels::rope_apply(isa, c.rope.style, q_ + row * q_width, m, q_width, heads, dim, rotary, cos_sin);
      kernels::rope_apply(isa, c.rope.style, k_ + row * kv_width, m, kv_width, kv_heads, dim, rotary, cos_sin);
    } else if (c.attention_temperature_tuning) {
      scale_queries_by_position(row, m, p);
    }
  }
  normalize_queries_and_keys(layer, n, /*after_rope=*/true);
  attention_params_.n_heads = heads;
  attention_params_.scale = c.attention_scale;
  attention_params_.sliding_window = c.layers[layer].sliding_window;
  attention_params_.chunk_size = c.layers[layer].attention_chunk;
  attention_params_.sinks = a.sinks;
  // per segment (rows [row, row + m) at positions [p, p + m) of its sequence):
  std::size_t row = 0;
  for (std::size_t s = 0; s < count; ++s) {
    const std::size_t m = segments[s].n, p = segments[s].position;
    const float* q = q_ + row * q_width;
    const float* k = k_ + row * kv_width;
    const float* v = v_ + row * kv_width;
    // append k, v to its cache; att = softmax(q k^T * scale) v over its positions [0, p + m)
    const kernels::KvCacheView& cache = segments[s].state->kv().layer(layer);
    kernels::kv_cache_store(isa, cache, p, m, k, kv_width, v, kv_width);
    const std::size_t keys = std::min(p + m, cache.capacity);
    kernels::attention(isa, q, m, q_width, p, cache, attention_params_, att_ + row * q_width, q_width,
                       pool_for(m * keys * heads * dim * 2), options_.precision);
    row += m;
  }
  // x += att Wo^T + bo                                   [n, hidden]
  const bool direct = c.residual_multiplier == 1.0f;
  const kernels::LinearJob out = job(att_, n, q_width, a.output, a.output_bias, direct ? x_ : delta_, H, direct);
  linear(&out, 1);
  if (!direct) add_residual(delta_, n);
}

void Forward::normalize_queries_and_keys(std::size_t layer, std::size_t n, bool after_rope) {
  // q/k norms: per head over head_dim (Qwen3-MoE), over the whole projection
  // (OLMoE), per head after RoPE (Hunyuan), or weightless per head after RoPE on
  // the RoPE layers (Llama 4)
  const ModelConfig& c = *config_;
  const AttentionWeights& a = weights_->layers[layer].attention;
  const Isa isa = options_.isa;
  const std::size_t heads = c.num_heads, kv_heads = c.num_kv_heads, dim = c.head_dim;
  const std::size_t q_width = heads * dim, kv_width = kv_heads * dim;
  kernels::WeightVector q_norm = a.q_norm, k_norm = a.k_norm;
  bool per_head = true;
  switch (c.qk_norm) {
    case QkNormKind::kNone:
      return;
    case QkNormKind::kPerHead:
      if (after_rope) return;
      break;
    case QkNormKind::kWholeProjection:
      if (after_rope) return;
      per_head = false;
      break;
    case QkNormKind::kPerHeadAfterRope:
      if (!after_rope) return;
      break;
    case QkNormKind::kUnitPerHeadAfterRope:
      if (!after_rope || !c.layers[layer].rope) return;
      q_norm = k_norm = weights_->unit_head_norm;
      break;
  }
  if (per_head) {
    kernels::rms_norm(isa, q_, n * heads, dim, dim, q_norm, c.norm_eps, q_, dim);
    kernels::rms_norm(isa, k_, n * kv_heads, dim, dim, k_norm, c.norm_eps, k_, dim);
  } else {
    kernels::rms_norm(isa, q_, n, q_width, q_width, q_norm, c.norm_eps, q_, q_width);
    kernels::rms_norm(isa, k_, n, kv_width, kv_width, k_norm, c.norm_eps, k_, kv_width);
  }
}

void Forward::scale_queries_by_position(std::size_t first_row, std::size_t n, std::size_t position) {
  // Llama 4's NoPE layers: q[t] *= log1p(floor((p + 1) / floor_scale)) * attn_scale + 1
  // at position p, in transformers' float32 steps (exactly 1 below floor_scale).
  const ModelConfig& c = *config_;
  const std::size_t q_width = c.num_heads * c.head_dim;
  const float floor_scale = static_cast<float>(c.attention_floor_scale);
  const float strength = static_cast<float>(c.attention_temperature_scale);
  for (std::size_t t = 0; t < n; ++t) {
    const float steps = std::floor((static_cast<float>(position + t) + 1.0f) / floor_scale);
    const float factor = static_cast<float>(std::log1p(static_cast<double>(steps))) * strength + 1.0f;
    float* q = q_ + (first_row + t) * q_width;
    if (factor != 1.0f) kernels::scale(options_.isa, q, factor, q, q_width);
  }
}

void Forward::attention_latent(std::size_t layer, const StepSegment* segments, std::size_t count, std::size_t n) {
  // DeepSeek multi-head latent attention, computed absorbed: the cache holds one
  // row per position, [c = norm(latent) (rank) | k_rope (rope)], shared by every
  // head; head h scores q_nope_h . (W_k,h c) + q_rope_h . k_rope, which equals
  // (W_k,h^T q_nope_h) . c + q_rope_h . k_rope, and its value W_v,h c is applied
  // after the softmax-weighted sum over the latents.
  const ModelConfig& c = *config_;
  const AttentionWeights& a = weights_->layers[layer].attention;
  const Isa isa = options_.isa;
  const std::size_t H = c.hidden_size, heads = c.num_heads, rank = c.kv_lora_rank;
  const std::size_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, qk = nope + rope;
  const std::size_t vdim = c.v_head_dim, row = rank + rope, q_width = heads * qk;

  // xn = norm(x)                                          [n, hidden]
  norm(a.norm, x_, xn_, n);
  // q_lora = xn Wq_a^T (or q = xn Wq^T), kv = xn Wkv_a^T   [n, q_lora_rank], [n, rank + rope]
  kernels::LinearJob first[2];
  first[0] = c.q_lora_rank ? job(xn_, n, H, a.q_a, {}, q_lora_, c.q_lora_rank) : job(xn_, n, H, a.q_b, {}, q_, q_width);
  first[1] = job(xn_, n, H, a.kv_a, {}, kv_latent_, row);
  linear(first, 2);
  if (c.q_lora_rank) {
    // q = norm(q_lora) Wq_b^T                              [n, heads * (nope + rope)]
    kernels::rms_norm(isa, q_lora_, n, c.q_lora_rank, c.q_lora_rank, a.q_a_norm, kLatentNormEps, q_lora_,
                      c.q_lora_rank);
    const kernels::LinearJob q_b = job(q_lora_, n, c.q_lora_rank, a.q_b, {}, q_, q_width);
    linear(&q_b, 1);
  }
  // c = norm(kv[:, :rank]); per segment: rope on q[:, h, nope:] and kv[:, rank:] by
  // position, and the rows appended to its cache
  kernels::rms_norm(isa, kv_latent_, n, rank, row, a.kv_a_norm, kLatentNormEps, kv_latent_, row);
  for (std::size_t s = 0, r = 0; s < count; r += segments[s].n, ++s) {
    const std::size_t m = segments[s].n, p = segments[s].position;
    const float* cos_sin = rope_rows_ + r * rope;
    kernels::rope_apply(isa, c.rope.style, q_ + r * q_width + nope, m, q_width, heads, qk, rope, cos_sin);
    kernels::rope_apply(isa, c.rope.style, kv_latent_ + r * row + rank, m, row, 1, rope, rope, cos_sin);
    kernels::kv_cache_store(isa, segments[s].state->kv().layer(layer), p, m, kv_latent_ + r * row, row, nullptr, 0);
  }
  // q_latent[:, h] = [q_nope_h W_k,h | q_rope_h]           [n, heads * (rank + rope)]
  jobs_.clear();
  for (std::size_t h = 0; h < heads; ++h) {
    jobs_.push_back(job(q_ + h * qk, n, q_width, a.k_absorb[h], {}, q_latent_ + h * row, heads * row));
  }
  linear(jobs_.data(), jobs_.size());
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t h = 0; h < heads; ++h) {
      std::memcpy(q_latent_ + (t * heads + h) * row + rank, q_ + t * q_width + h * qk + nope, rope * sizeof(float));
    }
  }
  // att_latent[:, h] = softmax(q_latent_h . cache^T * scale) c   [n, heads * rank]
  attention_params_.n_heads = heads;
  attention_params_.scale = c.attention_scale;
  attention_params_.sliding_window = 0;
  attention_params_.chunk_size = 0;
  attention_params_.sinks = nullptr;
  for (std::size_t s = 0, r = 0; s < count; r += segments[s].n, ++s) {
    const std::size_t m = segments[s].n, p = segments[s].position;
    kernels::attention(isa, q_latent_ + r * heads * row, m, heads * row, p, segments[s].state->kv().layer(layer),
                       attention_params_, att_latent_ + r * heads * rank, heads * rank,
                       pool_for(m * (p + m) * heads * (row + rank)), options_.precision);
  }
  // att[:, h] = att_latent[:, h] W_v,h^T                   [n, heads * v]
  jobs_.clear();
  for (std::size_t h = 0; h < heads; ++h) {
    jobs_.push_back(job(att_latent_ + h * rank, n, heads * rank, a.v_expand[h], {}, att_ + h * vdim, heads * vdim));
  }
  linear(jobs_.data(), jobs_.size());
  // x += att Wo^T                                          [n, hidden]
  const kernels::LinearJob out = job(att_, n, heads * vdim, a.output, a.output_bias, x_, H, true);
  linear(&out, 1);
}

void Forward::ffn_dense(std::size_t layer, std::size_t n) {
  const ModelConfig& c = *config_;
  const FfnWeights& f = weights_->layers[layer].ffn;
  const std::size_t H = c.hidden_size, I = c.intermediate_size;
  // xn = norm(x); gate = xn Wg^T, up = xn Wu^T             [n, I] x2
  norm(f.norm, x_, xn_, n);
  const kernels::LinearJob gate_up[2] = {job(xn_, n, H, f.gate, {}, ffn_gate_, I), job(xn_, n, H, f.up, {}, ffn_up_, I)};
  linear(gate_up, 2);
  // h = silu(gate) * up; x += h Wd^T                       [n, hidden]
  kernels::silu_mul(options_.isa, ffn_gate_, ffn_up_, ffn_gate_, n * I);
  const bool direct = c.residual_multiplier == 1.0f;
  const kernels::LinearJob down = job(ffn_gate_, n, I, f.down, {}, direct ? x_ : delta_, H, direct);
  linear(&down, 1);
  if (!direct) add_residual(delta_, n);
}

void Forward::route_token(const FfnWeights& f, const float* logits, std::int32_t* experts, float* weights) {
  // experts[0, k), weights[0, k) of one token from its router logits [E]
  const ModelConfig& c = *config_;
  const Isa isa = options_.isa;
  const std::size_t E = c.num_experts, K = c.experts_per_token;
  float* scores = router_work_;      // [E]
  float* choice = router_work_ + E;  // [E]
  switch (c.family->router) {
    case RouterKind::kSoftmaxTopK: {
      kernels::softmax(isa, logits, 1, E, E, scores, E);
      kernels::top_k(scores, E, K, experts, weights);
      if (c.norm_topk_prob) {
        // divided by their sum, or by their 2-norm (DBRX's moe_normalize_expert_weights = 2)
        float sum = 0.0f;
        for (std::size_t j = 0; j < K; ++j) sum += c.norm_topk_p == 2.0 ? weights[j] * weights[j] : weights[j];
        if (c.norm_topk_p == 2.0) sum = std::sqrt(sum);
        for (std::size_t j = 0; j < K; ++j) weights[j] /= sum;
      }
      return;
    }
    case RouterKind::kSoftmaxBiasedTopK: {
      // ERNIE 4.5: the choice adds the correction bias to the softmax, the weights
      // do not; weights / max(sum, moe_norm_min)
      kernels::softmax(isa, logits, 1, E, E, scores, E);
      for (std::size_t e = 0; e < E; ++e) choice[e] = scores[e] + (f.score_correction ? f.score_correction[e] : 0.0f);
      kernels::top_k(choice, E, K, experts, nullptr);
      float sum = 0.0f;
      for (std::size_t j = 0; j < K; ++j) {
        weights[j] = scores[experts[j]];
        sum += weights[j];
      }
      sum = std::max(sum, c.norm_topk_min);
      for (std::size_t j = 0; j < K; ++j) weights[j] /= sum;
      return;
    }
    case RouterKind::kSigmoidTopK: {
      // Llama 4: the k largest logits, each weighted by its own sigmoid
      kernels::top_k(logits, E, K, experts, weights);
      kernels::sigmoid(isa, weights, weights, K);
      return;
    }
    case RouterKind::kTopKSoftmax: {
      kernels::top_k(logits, E, K, experts, weights);
      kernels::softmax(isa, weights, 1, K, K, weights, K);
      return;
    }
    case RouterKind::kDeepseekV2: {
      // As transformers' DeepSeek-V2: no renormalization (norm_topk_prob is not
      // read; published V2 configs set it false), weights scaled.
      kernels::softmax(isa, logits, 1, E, E, scores, E);
      if (c.group_limited && c.num_groups > 1) {
        // keep the topk_group groups with the highest best expert; others score 0
        const std::size_t groups = c.num_groups, per_group = E / groups;
        for (std::size_t g = 0; g < groups; ++g) {
          float best = -std::numeric_limits<float>::infinity();
          for (std::size_t e = 0; e < per_group; ++e) best = std::max(best, scores[g * per_group + e]);
          choice[g] = best;
        }
        kernels::top_k(choice, groups, c.topk_groups, topk_scratch_.data(), nullptr);
        for (std::size_t g = 0; g < groups; ++g) {
          bool kept = false;
          for (std::size_t j = 0; j < c.topk_groups; ++j) kept |= topk_scratch_[j] == static_cast<std::int32_t>(g);
          if (!kept) std::fill(scores + g * per_group, scores + (g + 1) * per_group, 0.0f);
        }
      }
      kernels::top_k(scores, E, K, experts, weights);
      const float scaling = static_cast<float>(c.routed_scaling_factor);
      for (std::size_t j = 0; j < K; ++j) weights[j] *= scaling;
      return;
    }
    case RouterKind::kDeepseekV3: {
      // scores = sigmoid(logits); the choice adds the correction bias, the weights do not
      kernels::sigmoid(isa, logits, scores, E);
      for (std::size_t e = 0; e < E; ++e) choice[e] = scores[e] + (f.score_correction ? f.score_correction[e] : 0.0f);
      if (c.num_groups > 1) {
        // group score = sum of its two best choices; keep the topk_group best groups
        const std::size_t groups = c.num_groups, per_group = E / groups;
        std::vector<float>& gs = group_scores_;
        for (std::size_t g = 0; g < groups; ++g) {
          std::int32_t best[2];
          float values[2];
          kernels::top_k(choice + g * per_group, per_group, 2, best, values);
          gs[g] = values[0] + values[1];
        }
        kernels::top_k(gs.data(), groups, c.topk_groups, topk_scratch_.data(), nullptr);
        for (std::size_t g = 0; g < groups; ++g) {
          bool kept = false;
          for (std::size_t j = 0; j < c.topk_groups; ++j) kept |= topk_scratch_[j] == static_cast<std::int32_t>(g);
          if (!kept) {
            std::fill(choice + g * per_group, choice + (g + 1) * per_group, -std::numeric_limits<float>::infinity());
          }
        }
      }
      kernels::top_k(choice, E, K, experts, nullptr);
      for (std::size_t j = 0; j < K; ++j) weights[j] = scores[experts[j]];
      if (c.norm_topk_prob) {
        float sum = 0.0f;
        for (std::size_t j = 0; j < K; ++j) sum += weights[j];
        sum += 1e-20f;
        for (std::size_t j = 0; j < K; ++j) weights[j] /= sum;
      }
      const float scaling = static_cast<float>(c.routed_scaling_factor);
      for (std::size_t j = 0; j < K; ++j) weights[j] *= scaling;
      return;
    }
    case RouterKind::kSparseMixer: {
      // PhiMoE (inference): the best expert, weighted by its softmax among the
      // experts within a relative threshold of it; then the same for the
      // runner-up, with the best one masked out.
      const float threshold = 2.0f * c.router_jitter_noise;
      const float minus_inf = -std::numeric_limits<float>::infinity();
      for (int pick = 0; pick < 2; ++pick) {
        const float* source = logits;
        if (pick == 1) {
          std::memcpy(choice, logits, E * sizeof(float));
          choice[experts[0]] = minus_inf;
          source = choice;
        }
        std::int32_t best;
        float top;
        kernels::top_k(source, E, 1, &best, &top);
        for (std::size_t e = 0; e < E; ++e) {
          const float factor = std::max(std::fabs(logits[e]), top);
          const bool masked = (top - logits[e]) / factor > threshold;
          scores[e] = masked ? minus_inf : source[e];
        }
        kernels::softmax(isa, scores, 1, E, E, scores, E);
        experts[pick] = best;
        weights[pick] = scores[best];
      }
      return;
    }
  }
}

void Forward::route(std::size_t layer, std::size_t n) {
  const FfnWeights& f = weights_->layers[layer].ffn;
  const std::size_t E = config_->num_experts, K = config_->experts_per_token;
  for (std::size_t t = 0; t < n; ++t) {
    route_token(f, router_logits_ + t * E, selected_.data() + t * K, selected_weight_.data() + t * K);
  }
}

void Forward::group_by_expert(std::size_t n) {
  // Rows of moe_* buffers: grouped by expert (ascending id), tokens in order
  // within a group; request_.experts lists the experts used, ascending.
  const std::size_t E = config_->num_experts, K = config_->experts_per_token;
  std::fill(expert_rows_.begin(), expert_rows_.begin() + E, 0u);
  for (std::size_t i = 0; i < n * K; ++i) ++expert_rows_[static_cast<std::size_t>(selected_[i])];
  request_.experts.clear();
  request_.token_counts.clear();
  request_.tokens = n;
  std::uint32_t row = 0;
  for (std::size_t e = 0; e < E; ++e) {
    if (!expert_rows_[e]) continue;
    expert_first_[request_.experts.size()] = row;
    expert_cursor_[e] = row;
    request_.experts.push_back(static_cast<std::uint32_t>(e));
    request_.token_counts.push_back(expert_rows_[e]);
    row += expert_rows_[e];
  }
  if (routing_) {
    routing_->add(request_.layer, request_.experts.data(), request_.token_counts.data(), request_.experts.size(), n);
  }
  for (std::size_t i = 0; i < n * K; ++i) selected_row_[i] = expert_cursor_[static_cast<std::size_t>(selected_[i])]++;
}

void Forward::prefetch_next_layer(std::size_t layer, std::size_t n) {
  // The next MoE layer's router applied to this layer's FFN input: its hidden
  // state has not yet gone through this layer's experts (nor the next layer's
  // attention), but the residual stream changes little from one layer to the
  // next, so the guess is usually right; a wrong one only costs I/O.
  const std::int32_t next = next_moe_layer_[layer];
  if (next < 0) return;
  const ModelConfig& c = *config_;
  const FfnWeights& g = weights_->layers[static_cast<std::size_t>(next)].ffn;
  const std::size_t H = c.hidden_size, E = c.num_experts, K = c.experts_per_token;
  norm(g.norm, x_, ahead_xn_, n);
  const kernels::LinearJob router = job(ahead_xn_, n, H, g.router, g.router_bias, ahead_logits_, E);
  linear(&router, 1, kernels::MatmulPrecision::kExact);
  std::fill(ahead_tokens_.begin(), ahead_tokens_.begin() + E, 0u);
  for (std::size_t t = 0; t < n; ++t) {
    route_token(g, ahead_logits_ + t * E, ahead_selected_.data() + t * K, ahead_weight_.data() + t * K);
    for (std::size_t j = 0; j < K; ++j) ++ahead_tokens_[static_cast<std::size_t>(ahead_selected_[t * K + j])];
  }
  ahead_experts_.clear();
  for (std::size_t e = 0; e < E; ++e) {
    if (ahead_tokens_[e]) ahead_experts_.push_back(static_cast<std::uint32_t>(e));
  }
  std::stable_sort(ahead_experts_.begin(), ahead_experts_.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return ahead_tokens_[a] > ahead_tokens_[b]; });
  experts_->prefetch(static_cast<std::uint32_t>(next), ahead_experts_.data(), ahead_experts_.size());
}

namespace {

// Releases an acquired expert request however the layer ends (an error, or a
// kernel's exception), so that the provider can serve the next step.
class ReleaseOnExit {
 public:
  ReleaseOnExit(cache::ExpertProvider* provider, cache::ExpertRequest* request)
      : provider_(provider), request_(request) {}
  ~ReleaseOnExit() { provider_->release(request_); }
  ReleaseOnExit(const ReleaseOnExit&) = delete;
  ReleaseOnExit& operator=(const ReleaseOnExit&) = delete;

 private:
  cache::ExpertProvider* provider_;
  cache::ExpertRequest* request_;
};

}  // namespace

Status Forward::run_experts(std::size_t layer, const FfnWeights& f, std::size_t n) {
  const std::size_t H = config_->hidden_size, K = config_->experts_per_token;
  // One token routed to distinct experts reads xn directly; otherwise rows are
  // gathered (and weighted, where the routing weight scales an expert's input).
  const bool weighted_input = config_->family->weight_expert_input;
  const bool gathered = weighted_input || !(n == 1 && request_.experts.size() == K);
  if (gathered) {
    for_rows(n * K, H, [&](std::size_t first, std::size_t count) {
      for (std::size_t i = first; i < first + count; ++i) {
        float* row = moe_in_ + selected_row_[i] * H;
        if (weighted_input) {
          kernels::scale(options_.isa, xn_ + (i / K) * H, selected_weight_[i], row, H);
        } else {
          std::memcpy(row, xn_ + (i / K) * H, H * sizeof(float));
        }
      }
    });
  }
  ZIPMOE_RETURN_IF_ERROR(experts_->acquire(&request_));
  const ReleaseOnExit release(experts_, &request_);
  if (options_.gate_ahead && experts_->wants_prefetch()) prefetch_next_layer(layer, n);
  // Experts are computed group by group as the provider delivers them; the
  // shared expert rides along with the first group.
  for (bool first_group = true;; first_group = false) {
    std::size_t ready = 0;
    ZIPMOE_RETURN_IF_ERROR(experts_->wait_ready(&request_, ready_.data(), &ready));
    if (ready == 0) return Status::Ok();
    ZIPMOE_RETURN_IF_ERROR(run_expert_group(f, n, ready, gathered, first_group && config_->shared_intermediate_size));
  }
}

Status Forward::multiply_coded(const FfnWeights& f, std::size_t ready, bool gathered,
                               cache::ExpertProjection projection) {
  const std::size_t H = config_->hidden_size, I = config_->expert_intermediate_size;
  for (std::size_t r = 0; r < ready; ++r) {
    const std::size_t i = ready_[r], e = request_.experts[i], row = expert_first_[i], rows = expert_rows_[e];
    const cache::ExpertWeights& w = request_.weights[i];
    if (!w.coded) continue;
    kernels::LinearJob product;
    if (projection == cache::ExpertProjection::kDown) {
      product = job(moe_gate_ + row * I, rows, I, w.down, row_of(f.expert_down_bias, e), moe_out_ + row * H, H);
    } else {
      const bool gate = projection == cache::ExpertProjection::kGate;
      product = job(gathered ? moe_in_ + row * H : xn_, rows, H, gate ? w.gate : w.up,
                    row_of(gate ? f.expert_gate_bias : f.expert_up_bias, e), (gate ? moe_gate_ : moe_up_) + row * I, I);
    }
    ZIPMOE_RETURN_IF_ERROR(experts_->multiply(request_, i, projection, product, options_.precision));
  }
  return Status::Ok();
}

Status Forward::run_expert_group(const FfnWeights& f, std::size_t n, std::size_t ready, bool gathered,
                                 bool with_shared) {
  const ModelConfig& c = *config_;
  const std::size_t H = c.hidden_size, I = c.expert_intermediate_size, S = c.shared_intermediate_size;
  // gate_e = x_e Wg_e^T (+ b), up_e = x_e Wu_e^T (+ b) for every ready expert e   [rows_e, I] x2
  // (experts delivered coded are multiplied by their provider, decoding on the way)
  jobs_.clear();
  for (std::size_t r = 0; r < ready; ++r) {
    const std::size_t i = ready_[r], e = request_.experts[i], row = expert_first_[i], rows = expert_rows_[e];
    const cache::ExpertWeights& w = request_.weights[i];
    if (w.coded) continue;
    const float* x = gathered ? moe_in_ + row * H : xn_;
    jobs_.push_back(job(x, rows, H, w.gate, row_of(f.expert_gate_bias, e), moe_gate_ + row * I, I));
    jobs_.push_back(job(x, rows, H, w.up, row_of(f.expert_up_bias, e), moe_up_ + row * I, I));
  }
  if (with_shared) {
    // gate_s, up_s (and its sigmoid gate's logit)
    jobs_.push_back(job(xn_, n, H, f.shared_gate, {}, ffn_gate_, S));
    jobs_.push_back(job(xn_, n, H, f.shared_up, {}, ffn_up_, S));
    if (f.shared_router.data) jobs_.push_back(job(xn_, n, H, f.shared_router, {}, shared_logit_, 1));
  }
  linear(jobs_.data(), jobs_.size());
  ZIPMOE_RETURN_IF_ERROR(multiply_coded(f, ready, gathered, cache::ExpertProjection::kGate));
  ZIPMOE_RETURN_IF_ERROR(multiply_coded(f, ready, gathered, cache::ExpertProjection::kUp));
  // h_e = act(gate_e, up_e); out_e = h_e Wd_e^T (+ b)     [rows_e, hidden]
  jobs_.clear();
  for (std::size_t r = 0; r < ready; ++r) {
    const std::size_t i = ready_[r], e = request_.experts[i], row = expert_first_[i], rows = expert_rows_[e];
    float* gate = moe_gate_ + row * I;
    if (c.family->activation == ActivationKind::kSwigluOai) {
      kernels::swiglu_oai(options_.isa, gate, moe_up_ + row * I, gate, rows * I, c.swiglu_alpha, c.swiglu_limit);
    } else {
      kernels::silu_mul(options_.isa, gate, moe_up_ + row * I, gate, rows * I);
    }
    if (request_.weights[i].coded) continue;
    jobs_.push_back(job(gate, rows, I, request_.weights[i].down, row_of(f.expert_down_bias, e), moe_out_ + row * H, H));
  }
  if (with_shared) {
    // shared = silu(gate_s) * up_s Wd_s^T                 [n, hidden]
    kernels::silu_mul(options_.isa, ffn_gate_, ffn_up_, ffn_gate_, n * S);
    jobs_.push_back(job(ffn_gate_, n, S, f.shared_down, {}, shared_out_, H));
  }
  linear(jobs_.data(), jobs_.size());
  return multiply_coded(f, ready, gathered, cache::ExpertProjection::kDown);
}

Status Forward::ffn_moe(std::size_t layer, std::size_t n) {
  const ModelConfig& c = *config_;
  const FfnWeights& f = weights_->layers[layer].ffn;
  const Isa isa = options_.isa;
  const std::size_t H = c.hidden_size, E = c.num_experts, K = c.experts_per_token, S = c.shared_intermediate_size;

  // xn = norm(x)                                          [n, hidden]
  norm(f.norm, x_, xn_, n);
  // router logits = xn Wr^T (+ br)                         [n, E]
  // Always in F32: the logits make discrete choices (top-k, thresholds), which a
  // rounded activation could flip; the product is small.
  const kernels::LinearJob router = job(xn_, n, H, f.router, f.router_bias, router_logits_, E);
  linear(&router, 1, kernels::MatmulPrecision::kExact);
  // top-k experts and weights per token
  route(layer, n);
  // every routed expert's output rows, and the shared expert's output
  request_.layer = static_cast<std::uint32_t>(layer);
  group_by_expert(n);
  ZIPMOE_RETURN_IF_ERROR(run_experts(layer, f, n));
  // delta[t] = sum_j w[t, j] out[row(t, j)] (+ shared)      [n, hidden]
  const bool gated = c.family->shared_expert == SharedExpertKind::kSigmoidGated && S;
  const bool weighted_input = c.family->weight_expert_input;
  if (gated) kernels::sigmoid(isa, shared_logit_, shared_logit_, n);
  for_rows(n, K * H, [&](std::size_t first, std::size_t count) {
    for (std::size_t t = first; t < first + count; ++t) {
      float* d = delta_ + t * H;
      std::fill(d, d + H, 0.0f);
      for (std::size_t j = 0; j < K; ++j) {
        // (an expert whose input was weighted adds its output as it is: 1 * x is exact)
        const float weight = weighted_input ? 1.0f : selected_weight_[t * K + j];
        kernels::add_scaled(isa, moe_out_ + selected_row_[t * K + j] * H, weight, d, H);
      }
      if (gated) {
        kernels::add_scaled(isa, shared_out_ + t * H, shared_logit_[t], d, H);
      } else if (S) {
        kernels::add(isa, d, shared_out_ + t * H, d, H);
      }
    }
  });
  add_residual(delta_, n);
  return Status::Ok();
}

void Forward::output(std::size_t rows, float* logits) {
  // logits = norm(x) Wout^T (+ b)  [rows, vocab], for the first rows of x
  const ModelConfig& c = *config_;
  const std::size_t H = c.hidden_size;
  norm(weights_->output_norm, x_, xn_, rows);
  const kernels::LinearJob out = job(xn_, rows, H, weights_->output, weights_->output_bias, logits, c.vocab_size);
  linear(&out, 1);
  if (c.logits_scaling != 1.0f) {
    // Granite divides (a multiply by the reciprocal would round differently)
    const std::size_t count = rows * c.vocab_size;
    for (std::size_t i = 0; i < count; ++i) logits[i] /= c.logits_scaling;
  }
}

std::size_t Forward::keep_wanted_rows(const StepSegment* segments, std::size_t count) {
  // Rows keep their order, and a row only ever moves towards the front.
  const std::size_t H = config_->hidden_size;
  std::size_t kept = 0, row = 0;
  for (std::size_t s = 0; s < count; row += segments[s].n, ++s) {
    if (segments[s].logits == SegmentLogits::kNone) continue;
    const std::size_t first = segments[s].logits == SegmentLogits::kAll ? row : row + segments[s].n - 1;
    for (std::size_t r = first; r < row + segments[s].n; ++r, ++kept) {
      if (r != kept) std::memcpy(x_ + kept * H, x_ + r * H, H * sizeof(float));
    }
  }
  return kept;
}

Status Forward::step(const StepSegment* segments, std::size_t count, float* logits) {
  const ModelConfig& c = *config_;
  std::size_t n = 0;
  bool every_row = true;
  for (std::size_t s = 0; s < count; ++s) {
    // cos | sin of the segment's positions, shared by every layer (bit-identical to a
    // table made once: each row depends on its position only)
    const std::size_t rotary = c.rope.config.rotary_dim;
    kernels::rope_cos_sin(inv_freq_, rotary, rope_attention_factor_, segments[s].position, segments[s].n,
                          rope_rows_ + n * rotary);
    n += segments[s].n;
    every_row &= segments[s].logits == SegmentLogits::kAll;
  }
  embed(segments, count);
  std::size_t rows = n;
  for (std::size_t layer = 0; layer < c.num_layers; ++layer) {
    if (c.family->attention == AttentionKind::kLatent) {
      attention_latent(layer, segments, count, n);
    } else {
      attention_grouped(layer, segments, count, n);
    }
    if (layer + 1 == c.num_layers && !every_row) {
      // The KV caches are complete: the last layer's FFN only matters for the rows
      // whose logits are wanted (as llama.cpp prunes it). Its arithmetic per row
      // does not depend on the row count under kExact, so the logits keep their bits.
      rows = keep_wanted_rows(segments, count);
      if (rows == 0) break;
    }
    if (c.is_moe_layer(layer)) {
      ZIPMOE_RETURN_IF_ERROR(ffn_moe(layer, rows));
    } else {
      ffn_dense(layer, rows);
    }
  }
  if (rows > 0 && logits) output(rows, logits);
  return Status::Ok();
}

Status Forward::step(SequenceState* state, const std::int32_t* tokens, std::size_t n, std::size_t position,
                     float* logits, bool all_logits) {
  StepSegment segment;
  segment.state = state;
  segment.tokens = tokens;
  segment.n = n;
  segment.position = position;
  segment.logits = !logits ? SegmentLogits::kNone : all_logits ? SegmentLogits::kAll : SegmentLogits::kLast;
  return step(&segment, 1, logits);
}

}  // namespace zipmoe::model

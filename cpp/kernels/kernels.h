// CPU math kernels of the inference engine: linear layers over BF16/F16/F32
// weights, norms, RoPE, softmax and activations, top-k, and attention over a KV
// cache.
//
// Conventions shared by every function here
// - Activations are F32, row-major; `ld*` arguments are row strides in elements
//   (0 means "rows are packed": the row length). Weights are used in place, in the
//   dtype they are stored in (never copied).
// - Every function has one implementation per Isa (a plain scalar reference and
//   AVX2 / AVX-512 / NEON variants). The overload without an Isa uses
//   default_isa() (ZIPMOE_ISA forces one); the explicit-Isa overload is for tests
//   and benchmarks and throws InvalidArgumentError for a path this CPU lacks.
// - BIT-IDENTICAL ACROSS Isa VARIANTS (and CPUs, compilers and C libraries): the
//   norms, softmax, activations, add/scale/add_scaled, conversions,
//   kv_cache_store, RoPE and top_k always; linear layers and attention with
//   MatmulPrecision::kExact. Each of them follows one canonical evaluation order
//   (kernels/canonical.h: 16 interleaved partial sums combined by halving, fma
//   for every multiply-add, one exp polynomial) that every path implements
//   exactly. With kFast, linear layers and attention sum in each path's fastest
//   order and agree with kExact within the tolerances stated below. The
//   guarantee covers inputs and intermediate results without NaN (where a NaN
//   appears, the results are NaN or meaningless, and may differ).
// - Functions taking a ThreadPool* run on it (null: on the caller's thread). Work
//   is cut into pieces whose bounds depend only on the shapes, and every output
//   element is computed by one thread in a fixed order, so results are
//   BIT-IDENTICAL for any number of threads, in either precision.
// - Nothing is allocated per call except by Workspace when it has to grow (see
//   below); there is no global mutable state, so concurrent calls on different
//   outputs are safe (a ThreadPool serializes concurrent parallel_for calls).
// - Shapes are checked (InvalidArgumentError) at the entry points; pointers are
//   trusted to cover the shapes they are given.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/aligned_buffer.h"
#include "kernels/kernel_types.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::kernels {

// Scratch memory owned by the caller and reused across calls (only linear()
// needs it). It grows when a call needs more than it holds, which allocates; a
// caller that reserves linear_workspace_bytes() of its largest call up front
// never allocates afterwards. Not thread-safe: one Workspace per concurrent caller.
class Workspace {
 public:
  Workspace() = default;
  explicit Workspace(std::size_t bytes) { reserve(bytes); }
  void reserve(std::size_t bytes);
  std::size_t capacity() const { return buffer_.capacity(); }
  // At least `bytes` bytes, 64-byte aligned; contents unspecified.
  void* get(std::size_t bytes);

 private:
  AlignedBuffer buffer_;
};

// ---------------------------------------------------------------------------
// Linear layers: y[M, N] = x[M, K] . W[N, K]^T (+ bias[N])

// One linear layer applied to m rows of input.
//   x: m rows of weight.cols floats, row i at x + i * ldx
//   y: m rows of weight.rows floats, row i at y + i * ldy; y = x W^T + bias, or
//      y += x W^T + bias with `accumulate` (e.g. adding into the residual stream)
// x and y must not overlap. bias, when present, has weight.rows elements in any
// dtype. The sum for y[i][n] is bias-free dot(x[i], W[n]) first, then + bias, then
// + the old y[i][n] when accumulating.
struct LinearJob {
  const float* x = nullptr;
  std::size_t m = 1;
  std::size_t ldx = 0;  // 0: weight.cols
  WeightMatrix weight;
  WeightVector bias;
  float* y = nullptr;
  std::size_t ldy = 0;  // 0: weight.rows
  bool accumulate = false;
};

// Runs several independent linear layers in one parallel pass (one
// synchronization instead of one per layer): q/k/v projections sharing an input,
// gate/up projections of several experts, the down projections of several experts
// with their own inputs. Jobs that share (x, m, ldx, K) convert their input once.
// Jobs must not write overlapping outputs (an accumulating job must be the only
// one writing its y). kExact: bit-identical on every Isa; an output's arithmetic
// depends only on K, so a row computed alone (M = 1) has the same bits as that row
// inside a larger M. kFast: for each output, |y - y_exact| <= (16 sqrt(K) + 4) *
// 2^-24 * (sum_k |x_k w_k| + |bias| + |y_old|), plus the BF16 rounding of x
// described at MatmulPrecision where it applies.
void linear_batch(const LinearJob* jobs, std::size_t count, ThreadPool* pool, Workspace* workspace,
                  MatmulPrecision precision = MatmulPrecision::kFast);
void linear_batch(Isa isa, const LinearJob* jobs, std::size_t count, ThreadPool* pool, Workspace* workspace,
                  MatmulPrecision precision = MatmulPrecision::kFast);
// One job (linear_batch of one).
void linear(const LinearJob& job, ThreadPool* pool, Workspace* workspace,
            MatmulPrecision precision = MatmulPrecision::kFast);
void linear(Isa isa, const LinearJob& job, ThreadPool* pool, Workspace* workspace,
            MatmulPrecision precision = MatmulPrecision::kFast);
// Workspace bytes linear_batch needs for these jobs (at most: the converted
// inputs, about 4 * m * K bytes per distinct input, plus bookkeeping).
std::size_t linear_workspace_bytes(Isa isa, const LinearJob* jobs, std::size_t count,
                                   MatmulPrecision precision = MatmulPrecision::kFast);

// ---------------------------------------------------------------------------
// Norms, over each of `rows` rows of `cols` elements (x row r at x + r * ldx, y
// row r at y + r * ldy; y == x works in place). Single-threaded. Bit-identical on
// every Isa (canonical sums); within 1e-5 relative of the exact formula.

// y = x * (1 / sqrt(mean(x^2) + eps)) * weight  (Llama/Qwen/Mixtral RMSNorm, in
// torch's order: normalize, then multiply by the weight). weight has cols elements.
void rms_norm(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, const WeightVector& weight,
              float eps, float* y, std::size_t ldy);
void rms_norm(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx,
              const WeightVector& weight, float eps, float* y, std::size_t ldy);

// y = (x - mean) / sqrt(var + eps) * weight + bias  (torch.nn.LayerNorm, biased
// variance; PhiMoE). bias may be absent.
void layer_norm(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, const WeightVector& weight,
                const WeightVector& bias, float eps, float* y, std::size_t ldy);
void layer_norm(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx,
                const WeightVector& weight, const WeightVector& bias, float eps, float* y, std::size_t ldy);

// ---------------------------------------------------------------------------
// Element-wise and row-wise operations (single-threaded; in place when out == in).
// Bit-identical on every Isa. Functions using exp evaluate canonical.h's
// polynomial (exactly 0 below -104, inf above 88.7), within 1e-6 relative of the
// true values (2e-6 for softmax).

// Softmax of each row: y = exp(x - max) / sum(exp(x - max)). -inf entries give 0.
void softmax(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, float* y, std::size_t ldy);
void softmax(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, float* y,
             std::size_t ldy);
// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
void silu_mul(const float* gate, const float* up, float* out, std::size_t n);
void silu_mul(Isa isa, const float* gate, const float* up, float* out, std::size_t n);
// gpt-oss's clamped SwiGLU: g = min(gate, limit), u = clamp(up, -limit, limit),
// out = (u + 1) * g * sigmoid(alpha * g)  (alpha = 1.702, limit = 7 in gpt-oss).
void swiglu_oai(const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit);
void swiglu_oai(Isa isa, const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit);
// out = 1 / (1 + exp(-x))  (DeepSeek-V3 router scores).
void sigmoid(const float* x, float* out, std::size_t n);
void sigmoid(Isa isa, const float* x, float* out, std::size_t n);
// out = a + b.
void add(const float* a, const float* b, float* out, std::size_t n);
void add(Isa isa, const float* a, const float* b, float* out, std::size_t n);
// out = x * factor.
void scale(const float* x, float factor, float* out, std::size_t n);
void scale(Isa isa, const float* x, float factor, float* out, std::size_t n);
// out += factor * x, computed as out + (factor * x) (two roundings, no FMA), e.g.
// the routing-weighted sum of expert outputs.
void add_scaled(const float* x, float factor, float* out, std::size_t n);
void add_scaled(Isa isa, const float* x, float factor, float* out, std::size_t n);
// Widens n elements of `dtype` to F32 (exact; embedding rows, small parameters).
void convert_to_f32(DType dtype, const void* src, float* out, std::size_t n);
void convert_to_f32(Isa isa, DType dtype, const void* src, float* out, std::size_t n);
// Narrows n floats to `dtype` with round-to-nearest-even (NaN stays NaN, made
// quiet; overflow gives inf; subnormals are kept).
void convert_from_f32(DType dtype, const float* src, void* out, std::size_t n);
void convert_from_f32(Isa isa, DType dtype, const float* src, void* out, std::size_t n);

// Indices of the k largest of values[0, n), largest first; ties go to the lower
// index; NaN ranks below every number. Writes k indices and, when out_values is
// not null, the k values. k <= n. Scalar on every path (n is an expert count).
void top_k(const float* values, std::size_t n, std::size_t k, std::int32_t* out_indices, float* out_values);

// ---------------------------------------------------------------------------
// Rotary position embeddings

enum class RopeScaling : std::uint8_t {
  kNone = 0,     // inv_freq[i] = theta^(-2i/d)
  kLinear = 1,   // inv_freq / factor
  kYarn = 2,     // DeepSeek-V2/V3, gpt-oss, Qwen long context (transformers' "yarn")
  kLlama3 = 3,   // Llama 3.1 ("llama3")
  kLongRope = 4, // Phi-3/PhiMoE ("longrope"): inv_freq / ext_factors
};

// The subset of a transformers rope_parameters dict the formulas use. Field names
// follow transformers (modeling_rope_utils.py); inv_freq is computed exactly as
// there (double precision here, float32 there: equal within 1 ulp of float).
struct RopeConfig {
  double theta = 10000.0;          // rope_theta
  std::size_t rotary_dim = 0;      // int(head_dim * partial_rotary_factor); even
  RopeScaling scaling = RopeScaling::kNone;
  double factor = 1.0;             // linear, yarn, llama3; longrope: for the default attention factor
  double original_max_position_embeddings = 0;  // yarn, llama3, longrope
  double beta_fast = 32.0;         // yarn (transformers: `or 32`)
  double beta_slow = 1.0;          // yarn (transformers: `or 1`)
  double mscale = 0.0;             // yarn; 0 = absent
  double mscale_all_dim = 0.0;     // yarn; 0 = absent
  bool truncate = true;            // yarn (gpt-oss sets false)
  double low_freq_factor = 1.0;    // llama3
  double high_freq_factor = 4.0;   // llama3
  const float* ext_factors = nullptr;  // longrope: rotary_dim / 2 factors (short_factor or long_factor)
  // The cos/sin multiplier ("attention_factor"/"attention_scaling"): <= 0 means
  // derive it as transformers does (yarn: get_mscale(factor, mscale) /
  // get_mscale(factor, mscale_all_dim) when both are set, else get_mscale(factor);
  // longrope: sqrt(1 + ln(factor) / ln(original_max_position_embeddings)); others:
  // 1). PhiMoE passes its short_mscale / long_mscale here.
  double attention_factor = 0.0;
};

// Fills inv_freq[rotary_dim / 2] and returns the attention factor (multiplier of
// cos and sin). Throws InvalidArgumentError for inconsistent parameters.
float rope_inv_freq(const RopeConfig& config, float* inv_freq);

// transformers' yarn_get_mscale: 1 if scale <= 1, else 0.1 * mscale * ln(scale) + 1.
// DeepSeek-V2/V3 multiply the softmax scale by yarn_get_mscale(factor,
// mscale_all_dim)^2 (when mscale_all_dim is set); the caller does that.
double yarn_get_mscale(double scale, double mscale = 1.0);

// cos/sin rows for `count` consecutive positions starting at `first_position`:
// row t (rotary_dim floats at out + t * rotary_dim) holds cos(a_0..a_{h-1}) then
// sin(a_0..a_{h-1}), h = rotary_dim / 2, a_i = float(position) * inv_freq[i]
// (the float32 product transformers forms), each times attention_factor. Build
// the rows of all positions once (max_positions * rotary_dim * 4 bytes) or just
// those of the tokens of a forward pass.
void rope_cos_sin(const float* inv_freq, std::size_t rotary_dim, float attention_factor,
                  std::size_t first_position, std::size_t count, float* out);

// Rotates the first rotary_dim elements of each head in place:
//   head h of token t starts at x + t * ldx + h * head_stride
//   token t uses cos/sin row cos_sin + t * rotary_dim (see rope_cos_sin)
// Elements past rotary_dim are untouched (partial rotary); for DeepSeek's
// [nope | rope] heads pass x pointing at the rope part. Computed as
// x0 * c - x1 * s and x1 * c + x0 * s without FMA: bit-identical across paths
// and to transformers' float32 formula.
void rope_apply(RopeStyle style, float* x, std::size_t tokens, std::size_t ldx, std::size_t heads,
                std::size_t head_stride, std::size_t rotary_dim, const float* cos_sin);
void rope_apply(Isa isa, RopeStyle style, float* x, std::size_t tokens, std::size_t ldx, std::size_t heads,
                std::size_t head_stride, std::size_t rotary_dim, const float* cos_sin);

// ---------------------------------------------------------------------------
// KV cache and attention

// Bytes of one layer's K and V in the default layout.
std::size_t kv_cache_bytes(DType dtype, std::size_t n_kv_heads, std::size_t k_dim, std::size_t v_dim,
                           std::size_t capacity);
// The default head-major view of caller-allocated k (n_kv_heads * capacity * k_dim
// elements) and v (n_kv_heads * capacity * v_dim elements).
KvCacheView make_kv_cache_view(DType dtype, std::size_t n_kv_heads, std::size_t k_dim, std::size_t v_dim,
                               std::size_t capacity, void* k, void* v);

// Stores the keys and values of `count` consecutive positions from first_position:
// token t's keys are k + t * ldk ([n_kv_heads][k_dim] floats), values v + t * ldv
// ([n_kv_heads][v_dim]); v == nullptr skips V (aliased caches). count <= capacity.
void kv_cache_store(const KvCacheView& cache, std::size_t first_position, std::size_t count, const float* k,
                    std::size_t ldk, const float* v, std::size_t ldv);
void kv_cache_store(Isa isa, const KvCacheView& cache, std::size_t first_position, std::size_t count,
                    const float* k, std::size_t ldk, const float* v, std::size_t ldv);

// Causal attention of m query positions first_position .. first_position + m - 1
// over the cache, which must already hold positions 0 .. first_position + m - 1
// (store the new keys and values first) and still hold every position a query
// sees (checked against capacity).
//   q:   query i at q + i * ldq, [n_heads][k_dim] floats
//   out: query i at out + i * ldo, [n_heads][v_dim] floats (must not overlap q)
// Query head h reads kv head h / (n_heads / n_kv_heads) (GQA; MHA when equal,
// MQA when n_kv_heads = 1). Softmax in F32 with a running maximum (one pass over
// the keys, in blocks of 64). Threads split (kv head, group of up to 8 query
// heads, block of 16 queries); results do not depend on the thread count, and a
// query's result does not depend on the other queries of the call. kExact:
// bit-identical on every Isa (scores as canonical dot products, canonical exp, the
// running sum by fma, values by fma in key order). kFast: within 1e-5 * max|v|
// absolute per output element of the exact result.
void attention(const float* q, std::size_t m, std::size_t ldq, std::size_t first_position,
               const KvCacheView& cache, const AttentionParams& params, float* out, std::size_t ldo,
               ThreadPool* pool, MatmulPrecision precision = MatmulPrecision::kFast);
void attention(Isa isa, const float* q, std::size_t m, std::size_t ldq, std::size_t first_position,
               const KvCacheView& cache, const AttentionParams& params, float* out, std::size_t ldo,
               ThreadPool* pool, MatmulPrecision precision = MatmulPrecision::kFast);

}  // namespace zipmoe::kernels

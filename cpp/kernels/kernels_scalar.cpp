// The reference kernels: plain loops. The canonical order (canonical.h) is
// written out here lane by lane with std::fma; every SIMD variant is tested
// against these, bit for bit where canonical.h applies. kFast's linear layers and
// attention sum in the obvious sequential order.
#include <cmath>
#include <cstring>

#include "kernels/canonical.h"
#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

namespace zipmoe::kernels::scalar {

namespace {

// The functions that use std::fma are also compiled for x86 CPUs with FMA and
// picked at load time (the same arithmetic: std::fma is exact either way, but
// without the instruction every call goes to the C library). Their helpers are
// inlined into each copy.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZIPMOE_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define ZIPMOE_FMA_CLONES
#endif
#define ZIPMOE_INLINE inline __attribute__((always_inline))

InputLayout input_layout(DType) { return InputLayout::kF32; }

void prepare_input(InputLayout, const float* x, std::size_t k, std::size_t k_padded, void* out) {
  float* o = static_cast<float*>(out);
  std::memcpy(o, x, k * sizeof(float));
  for (std::size_t i = k; i < k_padded; ++i) o[i] = 0.0f;
}

template <DType D>
ZIPMOE_INLINE float stored(const void* w, std::size_t i) {
  return element_as_f32(w, D, i);
}

// kFast: x . w summed in order.
template <DType D>
ZIPMOE_INLINE float sequential_dot(const float* x, const void* w, std::size_t k) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < k; ++i) sum += x[i] * stored<D>(w, i);
  return sum;
}

// The canonical dot product with lane(i) = i mod 16, or (i mod 32) / 2 for `pairs`.
template <DType D>
ZIPMOE_INLINE float canonical_dot(const float* x, const void* w, std::size_t k, bool pairs) {
  float lanes[kCanonicalLanes] = {};
  for (std::size_t i = 0; i < k; ++i) {
    const std::size_t lane = pairs ? (i % 32) / 2 : i % 16;
    lanes[lane] = std::fma(x[i], stored<D>(w, i), lanes[lane]);
  }
  return combine_lanes(lanes);
}

template <DType D>
ZIPMOE_INLINE void linear_tile_typed(const LinearTile& t) {
  const std::size_t row_bytes = t.k * dtype_size(D);
  const bool exact = t.precision == MatmulPrecision::kExact;
  for (std::size_t i = 0; i < t.m; ++i) {
    const float* x = static_cast<const float*>(t.x) + i * t.x_stride;
    for (std::size_t j = 0; j < t.n; ++j) {
      const void* w = static_cast<const std::uint8_t*>(t.w) + j * row_bytes;
      float v = exact ? canonical_dot<D>(x, w, t.k, D == DType::kBF16) : sequential_dot<D>(x, w, t.k);
      if (t.bias) v += element_as_f32(t.bias, t.bias_dtype, j);
      float* y = t.y + i * t.ldy + j;
      *y = t.accumulate ? *y + v : v;
    }
  }
}

ZIPMOE_FMA_CLONES void linear_tile(const LinearTile& t) {
  switch (t.w_dtype) {
    case DType::kBF16: return linear_tile_typed<DType::kBF16>(t);
    case DType::kF16: return linear_tile_typed<DType::kF16>(t);
    default: return linear_tile_typed<DType::kF32>(t);
  }
}

ZIPMOE_FMA_CLONES void rms_norm(const float* x, std::size_t n, const void* weight, DType weight_dtype, float eps, float* y) {
  float lanes[kCanonicalLanes] = {};
  for (std::size_t i = 0; i < n; ++i) lanes[i % 16] = std::fma(x[i], x[i], lanes[i % 16]);
  const float inverse_rms = 1.0f / std::sqrt(combine_lanes(lanes) / static_cast<float>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) y[i] = (x[i] * inverse_rms) * element_as_f32(weight, weight_dtype, i);
}

ZIPMOE_FMA_CLONES void layer_norm(const float* x, std::size_t n, const void* weight, DType weight_dtype, const void* bias,
                DType bias_dtype, float eps, float* y) {
  float lanes[kCanonicalLanes] = {};
  for (std::size_t i = 0; i < n; ++i) lanes[i % 16] = lanes[i % 16] + x[i];
  const float mean = combine_lanes(lanes) / static_cast<float>(n);
  for (float& lane : lanes) lane = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    lanes[i % 16] = std::fma(d, d, lanes[i % 16]);
  }
  const float inverse_std = 1.0f / std::sqrt(combine_lanes(lanes) / static_cast<float>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) {
    float v = ((x[i] - mean) * inverse_std) * element_as_f32(weight, weight_dtype, i);
    if (bias) v += element_as_f32(bias, bias_dtype, i);
    y[i] = v;
  }
}

ZIPMOE_FMA_CLONES void softmax(const float* x, std::size_t n, float* y) {
  float max = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  float lanes[kCanonicalLanes] = {};
  for (std::size_t i = 0; i < n; ++i) {
    y[i] = canonical_exp(x[i] - max);
    lanes[i % 16] = lanes[i % 16] + y[i];
  }
  const float sum = combine_lanes(lanes);
  for (std::size_t i = 0; i < n; ++i) y[i] = y[i] / sum;
}

ZIPMOE_FMA_CLONES void silu_mul(const float* gate, const float* up, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + canonical_exp(0.0f - gate[i])) * up[i];
}

ZIPMOE_FMA_CLONES void swiglu_oai(const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit) {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = gate[i] < limit ? gate[i] : limit;
    const float u = up[i] < -limit ? -limit : (up[i] > limit ? limit : up[i]);
    const float glu = g * canonical_sigmoid(g * alpha);
    out[i] = (u + 1.0f) * glu;
  }
}

ZIPMOE_FMA_CLONES void sigmoid(const float* x, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = canonical_sigmoid(x[i]);
}

void add(const float* a, const float* b, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(const float* x, float factor, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = x[i] * factor;
}

void add_scaled(const float* x, float factor, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = out[i] + separately_rounded(factor * x[i]);
}

void rope(RopeStyle style, float* x, std::size_t heads, std::size_t head_stride, std::size_t rotary_dim,
          const float* cos_sin) {
  const std::size_t half = rotary_dim / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  for (std::size_t h = 0; h < heads; ++h) {
    float* v = x + h * head_stride;
    for (std::size_t i = 0; i < half; ++i) {
      float* a = style == RopeStyle::kNeox ? v + i : v + 2 * i;
      float* b = style == RopeStyle::kNeox ? v + i + half : v + 2 * i + 1;
      const float x0 = *a, x1 = *b;
      *a = separately_rounded(x0 * cos[i]) - separately_rounded(x1 * sin[i]);
      *b = separately_rounded(x1 * cos[i]) + separately_rounded(x0 * sin[i]);
    }
  }
}

// Online softmax (running maximum and sum, rescaled per block of keys), the
// same algorithm as the SIMD variants, written plainly; kExact follows the
// canonical order (scores as canonical dot products, exp as canonical_exp, the
// running sum by fma), kFast sums in order with the C library's exp.
template <DType D, bool kExact>
ZIPMOE_INLINE void attention_typed(const AttentionTask& t) {
  const KvCacheView& c = *t.cache;
  const AttentionParams& p = *t.params;
  const std::size_t value_bytes = dtype_size(D);
  auto exp = [](float v) { return kExact ? canonical_exp(v) : std::exp(v); };
  float scores[kAttentionKeyBlock];
  for (std::size_t qi = t.query_begin; qi < t.query_end; ++qi) {
    const std::size_t position = t.first_position + qi;
    const std::size_t first_key = attention_first_key(p, position);
    for (std::size_t h = t.head_begin; h < t.head_end; ++h) {
      const float* q = t.q + qi * t.ldq + h * c.k_dim;
      float* out = t.out + qi * t.ldo + h * c.v_dim;
      for (std::size_t d = 0; d < c.v_dim; ++d) out[d] = 0.0f;
      float running_max = p.sinks ? p.sinks[h] : -INFINITY;
      float running_sum = p.sinks ? 1.0f : 0.0f;
      for (std::size_t block = first_key; block <= position; block += kAttentionKeyBlock) {
        const std::size_t count =
            position + 1 - block < kAttentionKeyBlock ? position + 1 - block : kAttentionKeyBlock;
        float block_max = -INFINITY;
        for (std::size_t j = 0; j < count; ++j) {
          const std::size_t slot = (block + j) % c.capacity;
          const std::uint8_t* key = static_cast<const std::uint8_t*>(c.k) +
                                    (t.kv_head * c.k_head_stride + slot * c.k_position_stride) * value_bytes;
          const float dot = kExact ? canonical_dot<D>(q, key, c.k_dim, false) : sequential_dot<D>(q, key, c.k_dim);
          scores[j] = dot * p.scale;
          block_max = scores[j] > block_max ? scores[j] : block_max;
        }
        const float new_max = block_max > running_max ? block_max : running_max;
        const float correction = exp(running_max - new_max);
        float lanes[kCanonicalLanes] = {};
        for (std::size_t j = 0; j < count; ++j) {
          scores[j] = exp(scores[j] - new_max);
          lanes[kExact ? j % 16 : 0] += scores[j];
        }
        const float block_sum = kExact ? combine_lanes(lanes) : lanes[0];
        running_sum = kExact ? std::fma(running_sum, correction, block_sum) : running_sum * correction + block_sum;
        running_max = new_max;
        for (std::size_t d = 0; d < c.v_dim; ++d) {
          float acc = out[d] * correction;
          for (std::size_t j = 0; j < count; ++j) {
            const std::size_t slot = (block + j) % c.capacity;
            const void* value = static_cast<const std::uint8_t*>(c.v) +
                                (t.kv_head * c.v_head_stride + slot * c.v_position_stride) * value_bytes;
            const float v = stored<D>(value, d);
            acc = kExact ? std::fma(scores[j], v, acc) : acc + scores[j] * v;
          }
          out[d] = acc;
        }
      }
      const float inverse_sum = 1.0f / running_sum;
      for (std::size_t d = 0; d < c.v_dim; ++d) out[d] *= inverse_sum;
    }
  }
}

template <DType D>
ZIPMOE_INLINE void attention_dtype(const AttentionTask& t) {
  if (t.precision == MatmulPrecision::kExact) {
    attention_typed<D, true>(t);
  } else {
    attention_typed<D, false>(t);
  }
}

ZIPMOE_FMA_CLONES void attention(const AttentionTask& t) {
  switch (t.cache->dtype) {
    case DType::kBF16: return attention_dtype<DType::kBF16>(t);
    case DType::kF16: return attention_dtype<DType::kF16>(t);
    default: return attention_dtype<DType::kF32>(t);
  }
}

const KernelTable kTable = {
    1,         input_layout, prepare_input, linear_tile, rms_norm, layer_norm, softmax, silu_mul,
    swiglu_oai, sigmoid,     add,           scale,       add_scaled, rope,     attention,
};

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::scalar

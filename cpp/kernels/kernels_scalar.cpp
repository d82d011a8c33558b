// The reference kernels: plain loops, F32 arithmetic in the obvious order, libm's
// exp. Every SIMD variant is tested against these.
#include <cmath>
#include <cstring>

#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"

namespace zipmoe::kernels::scalar {

namespace {

InputLayout input_layout(DType) { return InputLayout::kF32; }

void prepare_input(InputLayout, const float* x, std::size_t k, std::size_t k_padded, void* out) {
  float* o = static_cast<float*>(out);
  std::memcpy(o, x, k * sizeof(float));
  for (std::size_t i = k; i < k_padded; ++i) o[i] = 0.0f;
}

float dot(const float* x, const void* w, DType dtype, std::size_t k) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < k; ++i) sum += x[i] * element_as_f32(w, dtype, i);
  return sum;
}

void linear_tile(const LinearTile& t) {
  const std::size_t row_bytes = t.k * dtype_size(t.w_dtype);
  for (std::size_t i = 0; i < t.m; ++i) {
    const float* x = static_cast<const float*>(t.x) + i * t.x_stride;
    for (std::size_t j = 0; j < t.n; ++j) {
      float v = dot(x, static_cast<const std::uint8_t*>(t.w) + j * row_bytes, t.w_dtype, t.k);
      if (t.bias) v += element_as_f32(t.bias, t.bias_dtype, j);
      float* y = t.y + i * t.ldy + j;
      *y = t.accumulate ? *y + v : v;
    }
  }
}

void rms_norm(const float* x, std::size_t n, const void* weight, DType weight_dtype, float eps, float* y) {
  float sum_squares = 0.0f;
  for (std::size_t i = 0; i < n; ++i) sum_squares += x[i] * x[i];
  const float inverse_rms = 1.0f / std::sqrt(sum_squares / static_cast<float>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) y[i] = (x[i] * inverse_rms) * element_as_f32(weight, weight_dtype, i);
}

void layer_norm(const float* x, std::size_t n, const void* weight, DType weight_dtype, const void* bias,
                DType bias_dtype, float eps, float* y) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  float sum_squares = 0.0f;
  for (std::size_t i = 0; i < n; ++i) sum_squares += (x[i] - mean) * (x[i] - mean);
  const float inverse_std = 1.0f / std::sqrt(sum_squares / static_cast<float>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) {
    float v = ((x[i] - mean) * inverse_std) * element_as_f32(weight, weight_dtype, i);
    if (bias) v += element_as_f32(bias, bias_dtype, i);
    y[i] = v;
  }
}

void softmax(const float* x, std::size_t n, float* y) {
  float max = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - max);
    sum += y[i];
  }
  for (std::size_t i = 0; i < n; ++i) y[i] = y[i] / sum;
}

void silu_mul(const float* gate, const float* up, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void swiglu_oai(const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit) {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = gate[i] < limit ? gate[i] : limit;
    const float u = up[i] < -limit ? -limit : (up[i] > limit ? limit : up[i]);
    const float glu = g * (1.0f / (1.0f + std::exp(-(g * alpha))));
    out[i] = (u + 1.0f) * glu;
  }
}

void sigmoid(const float* x, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = 1.0f / (1.0f + std::exp(-x[i]));
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
// same algorithm as the SIMD variants, written plainly.
void attention(const AttentionTask& t) {
  const KvCacheView& c = *t.cache;
  const AttentionParams& p = *t.params;
  const std::size_t value_bytes = dtype_size(c.dtype);
  float scores[kAttentionKeyBlock];
  for (std::size_t qi = t.query_begin; qi < t.query_end; ++qi) {
    const std::size_t position = t.first_position + qi;
    const std::size_t first_key =
        p.sliding_window && position + 1 > p.sliding_window ? position + 1 - p.sliding_window : 0;
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
          scores[j] = dot(q, key, c.dtype, c.k_dim) * p.scale;
          block_max = scores[j] > block_max ? scores[j] : block_max;
        }
        const float new_max = block_max > running_max ? block_max : running_max;
        const float correction = std::exp(running_max - new_max);
        float block_sum = 0.0f;
        for (std::size_t j = 0; j < count; ++j) {
          scores[j] = std::exp(scores[j] - new_max);
          block_sum += scores[j];
        }
        running_sum = running_sum * correction + block_sum;
        running_max = new_max;
        for (std::size_t d = 0; d < c.v_dim; ++d) {
          float acc = out[d] * correction;
          for (std::size_t j = 0; j < count; ++j) {
            const std::size_t slot = (block + j) % c.capacity;
            const void* value = static_cast<const std::uint8_t*>(c.v) +
                                (t.kv_head * c.v_head_stride + slot * c.v_position_stride) * value_bytes;
            acc += scores[j] * element_as_f32(value, c.dtype, d);
          }
          out[d] = acc;
        }
      }
      const float inverse_sum = 1.0f / running_sum;
      for (std::size_t d = 0; d < c.v_dim; ++d) out[d] *= inverse_sum;
    }
  }
}

const KernelTable kTable = {
    1,         input_layout, prepare_input, linear_tile, rms_norm, layer_norm, softmax, silu_mul,
    swiglu_oai, sigmoid,     add,           scale,       add_scaled, rope,     attention,
};

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace zipmoe::kernels::scalar

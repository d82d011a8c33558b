// Tests of the math kernels (cpp/kernels): every ISA path against the scalar
// reference and against straightforward double-precision formulas, bit-identical
// results for 1/2/3 threads, RoPE frequencies against transformers' own numbers.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/cpu_features.h"
#include "kernels/float_convert.h"
#include "kernels/kernels.h"
#include "golden.h"
#include "test_framework.h"

using zipmoe::DType;
using zipmoe::Isa;
namespace k = zipmoe::kernels;

namespace {

const DType kDTypes[] = {DType::kBF16, DType::kF16, DType::kF32};

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// A tensor stored in `dtype`, with the exact F32 values it holds.
struct Stored {
  DType dtype;
  std::vector<std::uint8_t> bytes;
  std::vector<float> values;
};

Stored store_as(DType dtype, const std::vector<float>& v) {
  Stored s;
  s.dtype = dtype;
  s.bytes.resize(v.size() * zipmoe::dtype_size(dtype));
  k::convert_from_f32(Isa::kScalar, dtype, v.data(), s.bytes.data(), v.size());
  s.values.resize(v.size());
  k::convert_to_f32(Isa::kScalar, dtype, s.bytes.data(), s.values.data(), v.size());
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Max-reductions go through this instead of std::fmax: aarch64 GCC 12's
// vectorizer crashes (internal compiler error) on fmax reduction loops.
__attribute__((noinline)) double larger(double a, double b) { return a > b ? a : b; }

float round_to_bf16(float x) { return k::bf16_to_f32(k::f32_to_bf16(x)); }

// ---------------------------------------------------------------------------
// Linear layers

struct LinearCase {
  std::size_t m, n, kdim;
  DType dtype;
  bool bias;
  DType bias_dtype;
  bool accumulate;
  std::size_t x_pad, y_pad;  // extra elements per row
};

struct LinearData {
  Stored weight, bias;
  std::vector<float> x, y0;
  std::size_t ldx, ldy;
};

LinearData make_linear_data(const LinearCase& c, std::uint32_t seed) {
  LinearData d;
  d.weight = store_as(c.dtype, random_floats(c.n * c.kdim, seed, 0.05f));
  d.bias = store_as(c.bias_dtype, random_floats(c.n, seed + 1, 0.5f));
  d.ldx = c.kdim + c.x_pad;
  d.ldy = c.n + c.y_pad;
  d.x = random_floats(c.m * d.ldx, seed + 2);
  d.y0 = random_floats(c.m * d.ldy, seed + 3);
  return d;
}

k::LinearJob make_job(const LinearCase& c, const LinearData& d, float* y) {
  k::LinearJob job;
  job.x = d.x.data();
  job.m = c.m;
  job.ldx = d.ldx;
  job.weight = {d.weight.bytes.data(), c.dtype, c.n, c.kdim};
  if (c.bias) job.bias = {d.bias.bytes.data(), c.bias_dtype, c.n};
  job.y = y;
  job.ldy = d.ldy;
  job.accumulate = c.accumulate;
  return job;
}

// Runs the case on `isa` and checks every output against the scalar path within
// (16 sqrt(K) + 4) 2^-24 * (sum |x w| + |bias| + |y_old|); with round_x the
// reference sees x rounded to BF16 (the kFast vdpbf16ps path).
void check_linear_case(Isa isa, const LinearCase& c, k::MatmulPrecision precision, bool round_x,
                       zipmoe::ThreadPool* pool, k::Workspace* ws) {
  LinearData d = make_linear_data(c, static_cast<std::uint32_t>(c.m * 1000003 + c.n * 101 + c.kdim));
  std::vector<float> y = d.y0;
  k::linear(isa, make_job(c, d, y.data()), pool, ws, precision);

  LinearData ref_data = d;
  if (round_x) {
    for (float& v : ref_data.x) v = round_to_bf16(v);
  }
  std::vector<float> y_ref = d.y0;
  k::linear(Isa::kScalar, make_job(c, ref_data, y_ref.data()), nullptr, ws, k::MatmulPrecision::kExact);

  int failures = 0;
  for (std::size_t i = 0; i < c.m; ++i) {
    for (std::size_t j = 0; j < c.n; ++j) {
      double magnitude = 0;
      for (std::size_t t = 0; t < c.kdim; ++t) {
        magnitude += std::fabs(static_cast<double>(ref_data.x[i * d.ldx + t]) * d.weight.values[j * c.kdim + t]);
      }
      if (c.bias) magnitude += std::fabs(d.bias.values[j]);
      if (c.accumulate) magnitude += std::fabs(d.y0[i * d.ldy + j]);
      const double tolerance = (16.0 * std::sqrt(static_cast<double>(c.kdim)) + 4.0) * std::ldexp(1.0, -24) * magnitude;
      const double error = std::fabs(static_cast<double>(y[i * d.ldy + j]) - y_ref[i * d.ldy + j]);
      if (!(error <= tolerance) && failures++ < 3) {
        std::fprintf(stderr, "  %s %s m=%zu n=%zu k=%zu [%zu,%zu]: %.9g vs %.9g (tolerance %.3g)\n",
                     zipmoe::isa_name(isa), zipmoe::dtype_name(c.dtype), c.m, c.n, c.kdim, i, j,
                     y[i * d.ldy + j], y_ref[i * d.ldy + j], tolerance);
      }
    }
    // Padding between rows is never written.
    for (std::size_t j = c.n; j < d.ldy; ++j) ZCHECK_EQ(y[i * d.ldy + j], d.y0[i * d.ldy + j]);
  }
  ZCHECK_EQ(failures, 0);
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) std::uint16_t f16c_convert(float f) {
  return static_cast<std::uint16_t>(_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(f), 0)));
}
#endif

bool bf16_dot_available() {
#if defined(__x86_64__)
  return zipmoe::cpu_features().avx512_bf16 && zipmoe::isa_supported(Isa::kAvx512);
#else
  return false;
#endif
}

}  // namespace

ZTEST(kernels_linear_every_isa_matches_scalar_on_awkward_shapes) {
  k::Workspace ws;
  const std::size_t ms[] = {1, 2, 3, 4, 5, 7, 8, 13, 17};
  const std::size_t ns[] = {1, 3, 9, 17};
  const std::size_t ks[] = {1, 7, 16, 17, 31, 33, 65, 100};
  for (Isa isa : zipmoe::supported_isas()) {
    for (DType dtype : kDTypes) {
      for (std::size_t m : ms) {
        for (std::size_t n : ns) {
          for (std::size_t kdim : ks) {
            const bool bias = (m + n + kdim) % 2 == 0;
            const LinearCase c{m, n, kdim, dtype, bias, kDTypes[(m + kdim) % 3], m % 3 == 1, kdim % 3, n % 2};
            check_linear_case(isa, c, k::MatmulPrecision::kExact, false, nullptr, &ws);
          }
        }
      }
    }
  }
}

ZTEST(kernels_linear_blocks_cross_item_boundaries) {
  // Shapes past the row and column blocks of one work item, run on 3 threads.
  zipmoe::ThreadPool pool(3);
  k::Workspace ws;
  const LinearCase cases[] = {
      {1, 1000, 64, DType::kBF16, true, DType::kF32, false, 0, 0},
      {1, 300, 2049, DType::kF16, false, DType::kF32, true, 3, 0},
      {70, 130, 200, DType::kBF16, true, DType::kBF16, false, 0, 5},
      {61, 67, 1500, DType::kF32, false, DType::kF32, false, 1, 1},
      {130, 9, 3000, DType::kBF16, false, DType::kF32, true, 0, 0},
  };
  for (Isa isa : zipmoe::supported_isas()) {
    for (const LinearCase& c : cases) check_linear_case(isa, c, k::MatmulPrecision::kExact, false, &pool, &ws);
  }
}

ZTEST(kernels_linear_fast_precision_rounds_input_to_bf16_only_where_documented) {
  k::Workspace ws;
  for (Isa isa : zipmoe::supported_isas()) {
    for (DType dtype : kDTypes) {
      for (std::size_t m : {1, 2, 5, 17}) {
        for (std::size_t kdim : {1, 31, 32, 33, 95, 300}) {
          const LinearCase c{m, 11, kdim, dtype, true, DType::kF32, m == 5, 0, 0};
          // kFast rounds x only on AVX-512 with AVX512_BF16, for BF16 weights and M >= 2.
          const bool rounds = isa == Isa::kAvx512 && bf16_dot_available() && dtype == DType::kBF16 && m >= 2;
          check_linear_case(isa, c, k::MatmulPrecision::kFast, rounds, nullptr, &ws);
        }
      }
    }
  }
}

ZTEST(kernels_linear_fast_precision_error_against_f32) {
  // The documented bound of kFast: |y - y_exact| <= 2^-8 sum |x w| (2^-9 per x
  // element, doubled for the F32 sums), checked against a double reference.
  if (!bf16_dot_available()) return;
  k::Workspace ws;
  const std::size_t m = 9, n = 40, kdim = 2048;
  const Stored w = store_as(DType::kBF16, random_floats(n * kdim, 5, 0.02f));
  const std::vector<float> x = random_floats(m * kdim, 6);
  std::vector<float> y(m * n);
  k::LinearJob job;
  job.x = x.data();
  job.m = m;
  job.weight = {w.bytes.data(), DType::kBF16, n, kdim};
  job.y = y.data();
  k::linear(Isa::kAvx512, job, nullptr, &ws, k::MatmulPrecision::kFast);
  double worst_relative = 0;
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      double exact = 0, magnitude = 0;
      for (std::size_t t = 0; t < kdim; ++t) {
        const double p = static_cast<double>(x[i * kdim + t]) * w.values[j * kdim + t];
        exact += p;
        magnitude += std::fabs(p);
      }
      const double error = std::fabs(y[i * n + j] - exact);
      ZCHECK(error <= std::ldexp(1.0, -8) * magnitude);
      worst_relative = larger(worst_relative, error / magnitude);
    }
  }
  std::fprintf(stderr, "  kFast worst |error| / sum|x w| over %zu outputs, K=%zu: %.3g\n", m * n, kdim, worst_relative);
}

ZTEST(kernels_linear_rows_do_not_depend_on_batching) {
  // kExact: one output element's arithmetic depends only on K, so a row computed
  // alone (decode) equals the same row inside a batch (prefill), bit for bit.
  k::Workspace ws;
  for (Isa isa : zipmoe::supported_isas()) {
    for (DType dtype : kDTypes) {
      const LinearCase c{13, 37, 131, dtype, true, DType::kBF16, false, 0, 0};
      LinearData d = make_linear_data(c, 77);
      std::vector<float> all(c.m * c.n);
      k::linear(isa, make_job(c, d, all.data()), nullptr, &ws, k::MatmulPrecision::kExact);
      for (std::size_t i = 0; i < c.m; ++i) {
        LinearCase one = c;
        one.m = 1;
        LinearData row = d;
        row.x.assign(d.x.begin() + i * d.ldx, d.x.begin() + (i + 1) * d.ldx);
        std::vector<float> y(c.n);
        k::linear(isa, make_job(one, row, y.data()), nullptr, &ws, k::MatmulPrecision::kExact);
        ZCHECK(std::memcmp(y.data(), all.data() + i * c.n, c.n * sizeof(float)) == 0);
      }
      // kFast (vdpbf16ps for M >= 2): any two rows computed as a pair equal the
      // same rows of the full batch.
      k::linear(isa, make_job(c, d, all.data()), nullptr, &ws, k::MatmulPrecision::kFast);
      for (std::size_t i = 0; i + 1 < c.m; i += 3) {
        LinearCase two = c;
        two.m = 2;
        LinearData rows = d;
        rows.x.assign(d.x.begin() + i * d.ldx, d.x.begin() + (i + 2) * d.ldx);
        std::vector<float> y(2 * c.n);
        k::linear(isa, make_job(two, rows, y.data()), nullptr, &ws, k::MatmulPrecision::kFast);
        ZCHECK(std::memcmp(y.data(), all.data() + i * c.n, 2 * c.n * sizeof(float)) == 0);
      }
    }
  }
}

ZTEST(kernels_linear_batch_is_bit_identical_for_1_2_3_threads_and_to_single_calls) {
  // q/k/v sharing one input, gate/up of an expert sharing another, a down
  // projection with its own input, and a prefill-sized job.
  const std::size_t kdim = 320, m_prefill = 37;
  const Stored wq = store_as(DType::kBF16, random_floats(256 * kdim, 1, 0.05f));
  const Stored wk = store_as(DType::kBF16, random_floats(64 * kdim, 2, 0.05f));
  const Stored wv = store_as(DType::kF16, random_floats(64 * kdim, 3, 0.05f));
  const Stored wd = store_as(DType::kF32, random_floats(kdim * 96, 4, 0.05f));
  const Stored bias = store_as(DType::kBF16, random_floats(256, 5));
  const std::vector<float> x = random_floats(m_prefill * kdim, 6);
  const std::vector<float> act = random_floats(96, 7);
  for (Isa isa : zipmoe::supported_isas()) {
    for (k::MatmulPrecision precision : {k::MatmulPrecision::kExact, k::MatmulPrecision::kFast}) {
      std::vector<float> first[6];
      for (int threads : {1, 2, 3}) {
        zipmoe::ThreadPool pool(threads);
        k::Workspace ws;
        std::vector<float> yq(256), yk(64), yv(64), yd(kdim, 1.0f), yp(m_prefill * 256), yp2(m_prefill * 64);
        k::LinearJob jobs[6];
        jobs[0].x = x.data(), jobs[0].weight = {wq.bytes.data(), DType::kBF16, 256, kdim};
        jobs[0].bias = {bias.bytes.data(), DType::kBF16, 256}, jobs[0].y = yq.data();
        jobs[1].x = x.data(), jobs[1].weight = {wk.bytes.data(), DType::kBF16, 64, kdim}, jobs[1].y = yk.data();
        jobs[2].x = x.data(), jobs[2].weight = {wv.bytes.data(), DType::kF16, 64, kdim}, jobs[2].y = yv.data();
        jobs[3].x = act.data(), jobs[3].weight = {wd.bytes.data(), DType::kF32, kdim, 96}, jobs[3].y = yd.data();
        jobs[3].accumulate = true;
        jobs[4].x = x.data(), jobs[4].m = m_prefill, jobs[4].weight = jobs[0].weight, jobs[4].y = yp.data();
        jobs[5].x = x.data(), jobs[5].m = m_prefill, jobs[5].weight = jobs[1].weight, jobs[5].y = yp2.data();
        ZCHECK(k::linear_workspace_bytes(isa, jobs, 6, precision) > 0);
        k::linear_batch(isa, jobs, 6, &pool, &ws, precision);
        const std::vector<float>* outs[6] = {&yq, &yk, &yv, &yd, &yp, &yp2};
        for (int j = 0; j < 6; ++j) {
          if (threads == 1) {
            first[j] = *outs[j];
            // The same job alone, without a pool, gives the same bits.
            std::vector<float> alone(outs[j]->size(), 1.0f);
            k::LinearJob single = jobs[j];
            single.y = alone.data();
            k::linear(isa, single, nullptr, &ws, precision);
            ZCHECK(same_bits(alone, *outs[j]));
          } else {
            if (!same_bits(first[j], *outs[j])) {
              std::fprintf(stderr, "  %s threads=%d job %d differs\n", zipmoe::isa_name(isa), threads, j);
            }
            ZCHECK(same_bits(first[j], *outs[j]));
          }
        }
      }
    }
  }
}

ZTEST(kernels_linear_rejects_bad_shapes) {
  k::Workspace ws;
  std::vector<float> x(8), y(8);
  std::vector<std::uint16_t> w(64);
  k::LinearJob job;
  job.x = x.data();
  job.y = y.data();
  job.weight = {w.data(), DType::kBF16, 8, 8};
  job.ldx = 4;
  ZCHECK_THROWS(k::linear(Isa::kScalar, job, nullptr, &ws), zipmoe::InvalidArgumentError);
  job.ldx = 0;
  job.bias = {w.data(), DType::kBF16, 7};
  ZCHECK_THROWS(k::linear(Isa::kScalar, job, nullptr, &ws), zipmoe::InvalidArgumentError);
  job.bias = {};
  job.weight.dtype = static_cast<DType>(9);
  ZCHECK_THROWS(k::linear(Isa::kScalar, job, nullptr, &ws), zipmoe::InvalidArgumentError);
  job.weight.dtype = DType::kBF16;
  ZCHECK_THROWS(k::linear(Isa::kScalar, job, nullptr, nullptr), zipmoe::InvalidArgumentError);
  k::linear(Isa::kScalar, job, nullptr, &ws);
}

// ---------------------------------------------------------------------------
// Conversions

ZTEST(kernels_conversions_are_exact_and_round_to_nearest_even) {
  // bf16 <-> f32, every pattern.
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = k::bf16_to_f32(static_cast<std::uint16_t>(h));
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    ZCHECK_EQ(bits, h << 16);
    if (!std::isnan(f)) ZCHECK_EQ(k::f32_to_bf16(f), static_cast<std::uint16_t>(h));
  }
  ZCHECK_EQ(k::f32_to_bf16(k::bits_float(0x3f808000u)), 0x3f80);  // tie to even (down)
  ZCHECK_EQ(k::f32_to_bf16(k::bits_float(0x3f818000u)), 0x3f82);  // tie to even (up)
  ZCHECK_EQ(k::f32_to_bf16(k::bits_float(0x7f800001u)), 0x7fc0);  // signaling NaN becomes quiet
  // f16 -> f32 -> f16 round trip for every non-NaN pattern, and the value is right.
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = k::f16_to_f32(static_cast<std::uint16_t>(h));
    const std::uint32_t exponent = (h >> 10) & 31, mantissa = h & 1023;
    if (exponent == 31 && mantissa) {
      ZCHECK(std::isnan(f));
      continue;
    }
    double expected = exponent == 0 ? std::ldexp(mantissa, -24)
                                    : (exponent == 31 ? INFINITY : std::ldexp(1024 + mantissa, int(exponent) - 25));
    if (h & 0x8000) expected = -expected;
    ZCHECK_EQ(static_cast<double>(f), expected);
    ZCHECK_EQ(k::f32_to_f16(f), static_cast<std::uint16_t>(h));
  }
#if defined(__x86_64__)
  // f32 -> f16 against the F16C instruction on random bit patterns (all ranges).
  if (zipmoe::isa_supported(Isa::kAvx2)) {
    std::mt19937 rng(9);
    for (int i = 0; i < 2000000; ++i) {
      std::uint32_t bits = rng();
      if (i % 4 == 0) bits = (bits & 0x8fffffffu) | 0x30000000u;  // near the f16 range
      const float f = k::bits_float(bits);
      if (std::isnan(f)) continue;
      const std::uint16_t want = f16c_convert(f);
      if (k::f32_to_f16(f) != want) {
        std::fprintf(stderr, "  f32_to_f16(0x%08x) = 0x%04x, F16C 0x%04x\n", bits, k::f32_to_f16(f), want);
        ZCHECK(false);
        break;
      }
    }
  }
#endif
  // The public conversion functions give the same bits on every path.
  const std::vector<float> v = random_floats(1001, 3, 100.0f);
  for (DType dtype : kDTypes) {
    std::vector<std::uint8_t> ref(v.size() * 4), out(v.size() * 4);
    k::convert_from_f32(Isa::kScalar, dtype, v.data(), ref.data(), v.size());
    std::vector<float> back_ref(v.size()), back(v.size());
    k::convert_to_f32(Isa::kScalar, dtype, ref.data(), back_ref.data(), v.size());
    for (Isa isa : zipmoe::supported_isas()) {
      k::convert_from_f32(isa, dtype, v.data(), out.data(), v.size());
      ZCHECK(out == ref);
      k::convert_to_f32(isa, dtype, ref.data(), back.data(), v.size());
      ZCHECK(same_bits(back, back_ref));
    }
  }
}

// ---------------------------------------------------------------------------
// Norms and element-wise functions

namespace {
bool close_relative(float got, double want, double relative, double absolute = 1e-30) {
  return std::fabs(got - want) <= relative * std::fabs(want) + absolute;
}
}  // namespace

ZTEST(kernels_norms_match_reference_and_formula) {
  for (std::size_t cols : {1, 5, 16, 17, 100, 2048, 2049}) {
    const std::size_t rows = 3, ld = cols + 2;
    const std::vector<float> x = random_floats(rows * ld, static_cast<std::uint32_t>(cols), 2.0f);
    for (DType dtype : kDTypes) {
      const Stored w = store_as(dtype, random_floats(cols, 11, 1.0f));
      const Stored b = store_as(kDTypes[(cols + 1) % 3], random_floats(cols, 12, 1.0f));
      const k::WeightVector wv{w.bytes.data(), dtype, cols}, bv{b.bytes.data(), b.dtype, cols};
      for (Isa isa : zipmoe::supported_isas()) {
        std::vector<float> y(rows * cols), ln(rows * cols), in_place = x;
        k::rms_norm(isa, x.data(), rows, cols, ld, wv, 1e-6f, y.data(), cols);
        k::rms_norm(isa, in_place.data(), rows, cols, ld, wv, 1e-6f, in_place.data(), ld);
        k::layer_norm(isa, x.data(), rows, cols, ld, wv, bv, 1e-5f, ln.data(), 0);
        for (std::size_t r = 0; r < rows; ++r) {
          double squares = 0, sum = 0;
          for (std::size_t i = 0; i < cols; ++i) {
            squares += double(x[r * ld + i]) * x[r * ld + i];
            sum += x[r * ld + i];
          }
          const double inverse_rms = 1.0 / std::sqrt(squares / cols + 1e-6);
          const double mean = sum / cols;
          double deviation = 0;
          for (std::size_t i = 0; i < cols; ++i) deviation += (x[r * ld + i] - mean) * (x[r * ld + i] - mean);
          const double inverse_std = 1.0 / std::sqrt(deviation / cols + 1e-5);
          for (std::size_t i = 0; i < cols; ++i) {
            const double want = x[r * ld + i] * inverse_rms * w.values[i];
            ZCHECK(close_relative(y[r * cols + i], want, 1e-5, 1e-6));
            ZCHECK_EQ(in_place[r * ld + i], y[r * cols + i]);
            const double want_ln = (x[r * ld + i] - mean) * inverse_std * w.values[i] + b.values[i];
            ZCHECK(close_relative(ln[r * cols + i], want_ln, 1e-5, 1e-5));
          }
        }
      }
    }
  }
}

ZTEST(kernels_elementwise_functions_match_reference) {
  for (std::size_t n : {1, 3, 8, 15, 16, 17, 33, 1000}) {
    const std::vector<float> a = random_floats(n, static_cast<std::uint32_t>(n), 4.0f);
    const std::vector<float> b = random_floats(n, static_cast<std::uint32_t>(n) + 1, 4.0f);
    std::vector<float> ref(n), out(n);
    for (Isa isa : zipmoe::supported_isas()) {
      // Exact ones: bit-identical to the reference.
      k::add(Isa::kScalar, a.data(), b.data(), ref.data(), n);
      k::add(isa, a.data(), b.data(), out.data(), n);
      ZCHECK(same_bits(out, ref));
      k::scale(Isa::kScalar, a.data(), 0.37f, ref.data(), n);
      k::scale(isa, a.data(), 0.37f, out.data(), n);
      ZCHECK(same_bits(out, ref));
      ref = b, out = b;
      k::add_scaled(Isa::kScalar, a.data(), -1.7f, ref.data(), n);
      k::add_scaled(isa, a.data(), -1.7f, out.data(), n);
      ZCHECK(same_bits(out, ref));
      // exp-based ones: within 1e-6 relative.
      k::silu_mul(isa, a.data(), b.data(), out.data(), n);
      for (std::size_t i = 0; i < n; ++i) {
        const double want = a[i] / (1.0 + std::exp(-double(a[i]))) * b[i];
        ZCHECK(close_relative(out[i], want, 1e-6));
      }
      k::sigmoid(isa, a.data(), out.data(), n);
      for (std::size_t i = 0; i < n; ++i) ZCHECK(close_relative(out[i], 1.0 / (1.0 + std::exp(-double(a[i]))), 1e-6));
      k::swiglu_oai(isa, a.data(), b.data(), out.data(), n, 1.702f, 7.0f);
      for (std::size_t i = 0; i < n; ++i) {
        const double g = std::fmin(a[i], 7.0), u = std::fmax(std::fmin(b[i], 7.0), -7.0);
        const double want = (u + 1.0) * g / (1.0 + std::exp(-double(float(g * 1.702f))));
        ZCHECK(close_relative(out[i], want, 1e-6, 1e-7));
      }
      std::vector<float> s(n);
      k::softmax(isa, a.data(), 1, n, 0, s.data(), 0);
      double max = -INFINITY, sum = 0;
      for (float v : a) max = larger(max, v);
      for (float v : a) sum += std::exp(v - max);
      for (std::size_t i = 0; i < n; ++i) ZCHECK(close_relative(s[i], std::exp(a[i] - max) / sum, 2e-6));
    }
  }
}

ZTEST(kernels_exp_extremes) {
  // -inf and hugely negative inputs give exactly 0; large ones saturate to inf; the
  // results stay within 2e-6 of libm across the whole finite range.
  std::vector<float> x = {-INFINITY, -1e30f, -200.0f, -104.5f, -87.0f, -20.0f, -1e-3f, 0.0f,
                          1e-3f,     1.0f,   20.0f,   60.0f,   80.0f,  88.0f};
  for (Isa isa : zipmoe::supported_isas()) {
    std::vector<float> out(x.size());
    std::vector<float> minus(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) minus[i] = -x[i];
    // sigmoid(-x) = 1 / (1 + exp(x)): probes exp at x through a public function.
    k::sigmoid(isa, minus.data(), out.data(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double want = 1.0 / (1.0 + std::exp(double(x[i])));
      ZCHECK(close_relative(out[i], want, 2e-6, 1e-44));
    }
    // A softmax row with -inf entries.
    const float row[5] = {1.0f, -INFINITY, 2.0f, -INFINITY, 3.0f};
    float s[5];
    k::softmax(isa, row, 1, 5, 0, s, 0);
    ZCHECK_EQ(s[1], 0.0f);
    ZCHECK_EQ(s[3], 0.0f);
    ZCHECK(close_relative(s[4], std::exp(0.0) / (1 + std::exp(-1.0) + std::exp(-2.0)), 2e-6));
  }
}

ZTEST(kernels_top_k_orders_ties_and_nans_deterministically) {
  const float values[] = {0.5f, 2.0f, NAN, 2.0f, -1.0f, 3.0f, 2.0f, -0.0f, 0.0f};
  std::int32_t idx[9];
  float v[9];
  k::top_k(values, 9, 9, idx, v);
  const std::int32_t want[] = {5, 1, 3, 6, 0, 7, 8, 4, 2};
  for (int i = 0; i < 9; ++i) ZCHECK_EQ(idx[i], want[i]);
  ZCHECK_EQ(v[0], 3.0f);
  k::top_k(values, 9, 2, idx, nullptr);
  ZCHECK_EQ(idx[0], 5);
  ZCHECK_EQ(idx[1], 1);
  ZCHECK_THROWS(k::top_k(values, 3, 4, idx, v), zipmoe::InvalidArgumentError);
}

// ---------------------------------------------------------------------------
// RoPE

// The inverse frequencies and attention factors below were computed with
// transformers 5.24.0's own functions (ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
// from transformers/modeling_rope_utils.py, torch 2.13 CPU), printed with %.9e,
// for these configs:
//   DeepseekV3Config(rope_theta=10000, qk_rope_head_dim=64, max_position_embeddings=163840,
//       rope_scaling={yarn, factor 40, original_max_position_embeddings 4096, beta_fast 32,
//                     beta_slow 1, mscale 1.0, mscale_all_dim 1.0})
//   DeepseekV2Config: the same with mscale = mscale_all_dim = 0.707 (identical numbers)
//   GptOssConfig() defaults (rope_theta 150000, head_dim 64, yarn factor 32, beta 32/1,
//       original 4096, truncate False)
//   Qwen2MoeConfig(hidden_size=1024, num_attention_heads=8, rope_theta=1e6,
//       rope_scaling={yarn, factor 4, original_max_position_embeddings 32768})
//   Qwen2MoeConfig(hidden_size=512, num_attention_heads=8, rope_theta=10000,
//       rope_scaling={linear, factor 2.5})
//   LlamaConfig(hidden_size=1024, num_attention_heads=8, rope_theta=500000,
//       rope_scaling={llama3, factor 8, low_freq_factor 1, high_freq_factor 4,
//                     original_max_position_embeddings 8192})
//   PhimoeConfig(hidden_size=512, num_attention_heads=8, rope_theta=10000,
//       max_position_embeddings=131072, rope_scaling={longrope, short_factor
//       [1 + 0.05 i], long_factor [1 + 0.5 i], original 4096, short_mscale 1, long_mscale 1.2})
//       with seq_len None (short) and 8192 (long); default attention factor
//       sqrt(1 + ln(32) / ln(4096)).
namespace {
const float kDeepseekV3InvFreq[32] = {
    1.000000000e+00f, 7.498942018e-01f, 5.623413324e-01f, 4.216965139e-01f, 3.162277639e-01f, 2.371373624e-01f,
    1.778279394e-01f, 1.333521456e-01f, 1.000000015e-01f, 7.498941571e-02f, 5.623412877e-02f, 3.900692612e-02f,
    2.687936090e-02f, 1.837814413e-02f, 1.244795602e-02f, 8.334509097e-03f, 5.500000436e-03f, 3.561997321e-03f,
    2.249365207e-03f, 1.370513462e-03f, 7.905694074e-04f, 4.149904125e-04f, 1.778279402e-04f, 3.333803397e-05f,
    2.499999937e-05f, 1.874735426e-05f, 1.405853254e-05f, 1.054241238e-05f, 7.905694474e-06f, 5.928434348e-06f,
    4.445698323e-06f, 3.333803534e-06f,
};
const float kGptOssInvFreq[32] = {
    1.000000000e+00f, 6.890442967e-01f, 4.747820497e-01f, 3.271458745e-01f, 2.254180014e-01f, 1.553229839e-01f,
    1.070244238e-01f, 7.374456525e-02f, 5.081327260e-02f, 3.170569614e-02f, 1.933499984e-02f, 1.159204915e-02f,
    6.794959307e-03f, 3.860359080e-03f, 2.093792660e-03f, 1.052602194e-03f, 4.564839182e-04f, 1.293186942e-04f,
    3.830881178e-05f, 2.639646846e-05f, 1.818833698e-05f, 1.253256960e-05f, 8.635495760e-06f, 5.950239483e-06f,
    4.099978469e-06f, 2.825066758e-06f, 1.946596285e-06f, 1.341290954e-06f, 9.242089618e-07f, 6.368209142e-07f,
    4.387978549e-07f, 3.023511397e-07f,
};
const float kQwenYarnInvFreq[64] = {
    1.000000000e+00f, 8.058422208e-01f, 6.493816376e-01f, 5.232991576e-01f, 4.216965139e-01f, 3.398208320e-01f,
    2.738419771e-01f, 2.206733972e-01f, 1.778279394e-01f, 1.433012635e-01f, 1.154782027e-01f, 9.305720031e-02f,
    7.498941571e-02f, 6.042964384e-02f, 4.869675264e-02f, 3.924189880e-02f, 3.162277862e-02f, 2.548296750e-02f,
    2.053525113e-02f, 1.654817164e-02f, 1.333521493e-02f, 1.074607857e-02f, 8.659643121e-03f, 6.978305988e-03f,
    5.375321489e-03f, 4.131738096e-03f, 3.168422729e-03f, 2.423422411e-03f, 1.848276588e-03f, 1.405112445e-03f,
    1.064360957e-03f, 8.029597811e-04f, 6.029411452e-04f, 4.503235687e-04f, 3.342405544e-04f, 2.462583943e-04f,
    1.798411540e-04f, 1.299314899e-04f, 9.262301319e-05f, 6.490394298e-05f, 4.445698505e-05f, 3.582531644e-05f,
    2.886954826e-05f, 2.326430149e-05f, 1.874735608e-05f, 1.510740913e-05f, 1.217418867e-05f, 9.810474694e-06f,
    7.905693565e-06f, 6.370741630e-06f, 5.133812465e-06f, 4.137042652e-06f, 3.333803534e-06f, 2.686519565e-06f,
    2.164910939e-06f, 1.744576593e-06f, 1.405853368e-06f, 1.132895932e-06f, 9.129353202e-07f, 7.356817946e-07f,
    5.928434348e-07f, 4.777382401e-07f, 3.849816324e-07f, 3.102344408e-07f,
};
const float kLinearInvFreq[32] = {
    4.000000060e-01f, 2.999576926e-01f, 2.249365300e-01f, 1.686786115e-01f, 1.264910996e-01f, 9.485494345e-02f,
    7.113117725e-02f, 5.334085971e-02f, 3.999999911e-02f, 2.999576554e-02f, 2.249365114e-02f, 1.686785929e-02f,
    1.264911145e-02f, 9.485494345e-03f, 7.113117725e-03f, 5.334085785e-03f, 3.999999724e-03f, 2.999576973e-03f,
    2.249365207e-03f, 1.686785952e-03f, 1.264911145e-03f, 9.485495393e-04f, 7.113117608e-04f, 5.334086018e-04f,
    4.000000190e-04f, 2.999576682e-04f, 2.249365207e-04f, 1.686785981e-04f, 1.264911116e-04f, 9.485495684e-05f,
    7.113117317e-05f, 5.334086018e-05f,
};
const float kLlama3InvFreq[64] = {
    1.000000000e+00f, 8.146172166e-01f, 6.636012793e-01f, 5.405809879e-01f, 4.403666258e-01f, 3.587302268e-01f,
    2.922278345e-01f, 2.380538136e-01f, 1.939227581e-01f, 1.579728127e-01f, 1.286873817e-01f, 1.048309505e-01f,
    8.539710194e-02f, 6.956595182e-02f, 5.666961893e-02f, 4.616405070e-02f, 3.760603070e-02f, 3.063452058e-02f,
    2.495540865e-02f, 2.032910474e-02f, 1.656044088e-02f, 1.349041983e-02f, 1.098952908e-02f, 8.952259086e-03f,
    7.292665076e-03f, 5.940730684e-03f, 4.839421250e-03f, 3.942275885e-03f, 3.211446106e-03f, 2.166570630e-03f,
    1.371893683e-03f, 8.567514597e-04f, 5.248460220e-04f, 3.126936499e-04f, 1.785077911e-04f, 9.556212171e-05f,
    7.784655463e-05f, 6.341514381e-05f, 5.165906987e-05f, 4.208236714e-05f, 3.428102355e-05f, 2.792590931e-05f,
    2.274892904e-05f, 1.853166941e-05f, 1.509621779e-05f, 1.229763893e-05f, 1.001786859e-05f, 8.160727702e-06f,
    6.647869668e-06f, 5.415469332e-06f, 4.411534519e-06f, 3.593711881e-06f, 2.927499736e-06f, 2.384791742e-06f,
    1.942692506e-06f, 1.582550794e-06f, 1.289173156e-06f, 1.050182618e-06f, 8.554969213e-07f, 6.969025321e-07f,
    5.677088097e-07f, 4.624653798e-07f, 3.767322596e-07f, 3.068925878e-07f,
};
const float kLongRopeShortInvFreq[32] = {
    1.000000000e+00f, 7.141849399e-01f, 5.112193823e-01f, 3.666926324e-01f, 2.635231316e-01f, 1.897098869e-01f,
    1.367907375e-01f, 9.877937287e-02f, 7.142857462e-02f, 5.171684176e-02f, 3.748942167e-02f, 2.720622718e-02f,
    1.976423524e-02f, 1.437196136e-02f, 1.046046708e-02f, 7.620123215e-03f, 5.555555690e-03f, 4.053482320e-03f,
    2.959691221e-03f, 2.162546152e-03f, 1.581138931e-03f, 1.156767714e-03f, 8.467997541e-04f, 6.202424411e-04f,
    4.545454576e-04f, 3.332862980e-04f, 2.444962447e-04f, 1.794453274e-04f, 1.317615679e-04f, 9.679076175e-05f,
    7.113117317e-05f, 5.229496310e-05f,
};
const float kLongRopeLongInvFreq[32] = {
    1.000000000e+00f, 4.999294281e-01f, 2.811706662e-01f, 1.686785966e-01f, 1.054092497e-01f, 6.775353104e-02f,
    4.445698485e-02f, 2.963380888e-02f, 1.999999955e-02f, 1.363443956e-02f, 9.372355416e-03f, 6.487638224e-03f,
    4.517539404e-03f, 3.161831759e-03f, 2.222849289e-03f, 1.568848849e-03f, 1.111111138e-03f, 7.893623551e-04f,
    5.623413017e-04f, 4.016157181e-04f, 2.874797792e-04f, 2.062064159e-04f, 1.481899526e-04f, 1.066817131e-04f,
    7.692307554e-05f, 5.554771997e-05f, 4.016723688e-05f, 2.908251736e-05f, 2.108185072e-05f, 1.529918700e-05f,
    1.111424626e-05f, 8.081948181e-06f,
};

// transformers computes in float32, this library in double: allow a few ulp.
void check_inv_freq(const k::RopeConfig& config, const float* want, double want_factor, const char* name) {
  std::vector<float> got(config.rotary_dim / 2);
  const float factor = k::rope_inv_freq(config, got.data());
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!close_relative(got[i], want[i], 1e-6) && bad++ < 3) {
      std::fprintf(stderr, "  %s inv_freq[%zu] = %.9e, transformers %.9e\n", name, i, got[i], want[i]);
    }
  }
  ZCHECK_EQ(bad, 0);
  ZCHECK(close_relative(factor, want_factor, 1e-7));
}
}  // namespace

ZTEST(kernels_rope_inv_freq_matches_transformers) {
  k::RopeConfig ds;
  ds.theta = 10000;
  ds.rotary_dim = 64;
  ds.scaling = k::RopeScaling::kYarn;
  ds.factor = 40;
  ds.original_max_position_embeddings = 4096;
  ds.mscale = 1.0;
  ds.mscale_all_dim = 1.0;
  check_inv_freq(ds, kDeepseekV3InvFreq, 1.0, "deepseek-v3");
  ds.mscale = ds.mscale_all_dim = 0.707;
  check_inv_freq(ds, kDeepseekV3InvFreq, 1.0, "deepseek-v2");
  // DeepSeek's softmax scale factor (yarn_get_mscale(40, 1.0) = 0.1 ln 40 + 1).
  ZCHECK(std::fabs(k::yarn_get_mscale(40.0, 1.0) - 1.3688879454113936) < 1e-15);
  ZCHECK_EQ(k::yarn_get_mscale(1.0, 1.0), 1.0);

  k::RopeConfig oss;
  oss.theta = 150000;
  oss.rotary_dim = 64;
  oss.scaling = k::RopeScaling::kYarn;
  oss.factor = 32;
  oss.original_max_position_embeddings = 4096;
  oss.truncate = false;
  check_inv_freq(oss, kGptOssInvFreq, 1.3465735902799727, "gpt-oss");

  k::RopeConfig qwen;
  qwen.theta = 1e6;
  qwen.rotary_dim = 128;
  qwen.scaling = k::RopeScaling::kYarn;
  qwen.factor = 4;
  qwen.original_max_position_embeddings = 32768;
  check_inv_freq(qwen, kQwenYarnInvFreq, 1.1386294361119891, "qwen-yarn");

  k::RopeConfig linear;
  linear.theta = 10000;
  linear.rotary_dim = 64;
  linear.scaling = k::RopeScaling::kLinear;
  linear.factor = 2.5;
  check_inv_freq(linear, kLinearInvFreq, 1.0, "linear");

  k::RopeConfig llama;
  llama.theta = 500000;
  llama.rotary_dim = 128;
  llama.scaling = k::RopeScaling::kLlama3;
  llama.factor = 8;
  llama.low_freq_factor = 1;
  llama.high_freq_factor = 4;
  llama.original_max_position_embeddings = 8192;
  check_inv_freq(llama, kLlama3InvFreq, 1.0, "llama3");

  float short_factor[32], long_factor[32];
  for (int i = 0; i < 32; ++i) {
    short_factor[i] = static_cast<float>(1.0 + 0.05 * i);
    long_factor[i] = static_cast<float>(1.0 + 0.5 * i);
  }
  k::RopeConfig phi;
  phi.theta = 10000;
  phi.rotary_dim = 64;
  phi.scaling = k::RopeScaling::kLongRope;
  phi.factor = 131072.0 / 4096.0;
  phi.original_max_position_embeddings = 4096;
  phi.ext_factors = short_factor;
  check_inv_freq(phi, kLongRopeShortInvFreq, 1.1902380714238083, "longrope-short");
  phi.ext_factors = long_factor;
  phi.attention_factor = 1.2;  // PhiMoE's long_mscale overrides the default
  check_inv_freq(phi, kLongRopeLongInvFreq, 1.2, "longrope-long");

  k::RopeConfig none;
  none.theta = 10000;
  none.rotary_dim = 6;
  float inv[3];
  ZCHECK_EQ(k::rope_inv_freq(none, inv), 1.0f);
  ZCHECK(close_relative(inv[1], std::pow(10000.0, -2.0 / 6.0), 1e-7));
  none.rotary_dim = 5;
  ZCHECK_THROWS(k::rope_inv_freq(none, inv), zipmoe::InvalidArgumentError);
}

ZTEST(kernels_rope_matches_formula_and_is_bit_identical_across_isas) {
  const std::size_t heads = 3, head_dim = 40, tokens = 5, first = 1000;
  for (std::size_t rotary_dim : {std::size_t(40), std::size_t(24), std::size_t(2)}) {
    std::vector<float> inv(rotary_dim / 2);
    k::RopeConfig config;
    config.theta = 10000;
    config.rotary_dim = rotary_dim;
    const float factor = 1.25f;
    k::rope_inv_freq(config, inv.data());
    std::vector<float> table(tokens * rotary_dim);
    k::rope_cos_sin(inv.data(), rotary_dim, factor, first, tokens, table.data());
    for (std::size_t t = 0; t < tokens; ++t) {
      for (std::size_t i = 0; i < rotary_dim / 2; ++i) {
        const double angle = double(float(first + t) * inv[i]);
        ZCHECK(std::fabs(table[t * rotary_dim + i] - std::cos(angle) * factor) < 1e-6);
        ZCHECK(std::fabs(table[t * rotary_dim + rotary_dim / 2 + i] - std::sin(angle) * factor) < 1e-6);
      }
    }
    const std::size_t ld = heads * head_dim + 3;
    const std::vector<float> x = random_floats(tokens * ld, 5);
    for (k::RopeStyle style : {k::RopeStyle::kNeox, k::RopeStyle::kInterleaved}) {
      std::vector<float> ref = x;
      k::rope_apply(Isa::kScalar, style, ref.data(), tokens, ld, heads, head_dim, rotary_dim, table.data());
      // The formula, pair by pair.
      const std::size_t half = rotary_dim / 2;
      for (std::size_t t = 0; t < tokens; ++t) {
        for (std::size_t h = 0; h < heads; ++h) {
          const float* in = x.data() + t * ld + h * head_dim;
          const float* out = ref.data() + t * ld + h * head_dim;
          for (std::size_t i = 0; i < half; ++i) {
            const std::size_t a = style == k::RopeStyle::kNeox ? i : 2 * i;
            const std::size_t b = style == k::RopeStyle::kNeox ? i + half : 2 * i + 1;
            const float c = table[t * rotary_dim + i], s = table[t * rotary_dim + half + i];
            // Products rounded before the add (no FMA), as transformers computes it.
            ZCHECK_EQ(out[a], k::separately_rounded(in[a] * c) - k::separately_rounded(in[b] * s));
            ZCHECK_EQ(out[b], k::separately_rounded(in[b] * c) + k::separately_rounded(in[a] * s));
          }
          for (std::size_t d = rotary_dim; d < head_dim; ++d) ZCHECK_EQ(out[d], in[d]);
        }
        for (std::size_t d = heads * head_dim; d < ld; ++d) ZCHECK_EQ(ref[t * ld + d], x[t * ld + d]);
      }
      for (Isa isa : zipmoe::supported_isas()) {
        std::vector<float> got = x;
        k::rope_apply(isa, style, got.data(), tokens, ld, heads, head_dim, rotary_dim, table.data());
        ZCHECK(same_bits(got, ref));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Attention

namespace {

struct AttentionCase {
  std::size_t n_heads, n_kv_heads, k_dim, v_dim;
  std::size_t m, first_position, capacity, window;
  bool sinks;
  DType dtype;
  bool alias_v;  // V = the first v_dim components of K
  const char* name;
  std::size_t chunk;  // attention chunk (0: none)
};

struct AttentionData {
  std::vector<std::uint8_t> k, v;
  k::KvCacheView view;
  std::vector<float> q, sinks;
  std::vector<float> k_values, v_values;  // [position][kv head][dim], as stored (rounded)
};

using FloatSource = std::vector<float> (*)(std::size_t n, std::uint32_t seed, float sigma);

AttentionData make_attention_data(const AttentionCase& c, FloatSource floats = &random_floats) {
  AttentionData d;
  const std::size_t total = c.first_position + c.m;
  const std::size_t element = zipmoe::dtype_size(c.dtype);
  d.k.resize(c.n_kv_heads * c.capacity * c.k_dim * element);
  d.v.resize(c.n_kv_heads * c.capacity * c.v_dim * element);
  d.view = k::make_kv_cache_view(c.dtype, c.n_kv_heads, c.k_dim, c.v_dim, c.capacity, d.k.data(), d.v.data());
  if (c.alias_v) {
    d.view.v = d.view.k;
    d.view.v_head_stride = d.view.k_head_stride;
    d.view.v_position_stride = d.view.k_position_stride;
  }
  const std::vector<float> keys = floats(total * c.n_kv_heads * c.k_dim, 21, 1.0f);
  const std::vector<float> values = floats(total * c.n_kv_heads * c.v_dim, 22, 3.0f);
  // Store position by position, in chunks the way a model would (prefill then decode).
  for (std::size_t p = 0; p < total; ++p) {
    k::kv_cache_store(Isa::kScalar, d.view, p, 1, keys.data() + p * c.n_kv_heads * c.k_dim, 0,
                      c.alias_v ? nullptr : values.data() + p * c.n_kv_heads * c.v_dim, 0);
  }
  d.k_values.resize(keys.size());
  d.v_values.resize(values.size());
  for (std::size_t p = 0; p < total; ++p) {
    for (std::size_t h = 0; h < c.n_kv_heads; ++h) {
      for (std::size_t i = 0; i < c.k_dim; ++i) {
        const float stored = store_as(c.dtype, {keys[(p * c.n_kv_heads + h) * c.k_dim + i]}).values[0];
        d.k_values[(p * c.n_kv_heads + h) * c.k_dim + i] = stored;
      }
      for (std::size_t i = 0; i < c.v_dim; ++i) {
        d.v_values[(p * c.n_kv_heads + h) * c.v_dim + i] =
            c.alias_v ? d.k_values[(p * c.n_kv_heads + h) * c.k_dim + i]
                      : store_as(c.dtype, {values[(p * c.n_kv_heads + h) * c.v_dim + i]}).values[0];
      }
    }
  }
  d.q = floats(c.m * c.n_heads * c.k_dim, 23, 1.0f);
  d.sinks = floats(c.n_heads, 24, 2.0f);
  return d;
}

k::AttentionParams params_for(const AttentionCase& c, const AttentionData& d) {
  k::AttentionParams p;
  p.n_heads = c.n_heads;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.k_dim)));
  p.sliding_window = c.window;
  p.chunk_size = c.chunk;
  p.sinks = c.sinks ? d.sinks.data() : nullptr;
  return p;
}

// Textbook attention in double: all scores, max, exp, normalize, weighted sum.
std::vector<double> naive_attention(const AttentionCase& c, const AttentionData& d) {
  std::vector<double> out(c.m * c.n_heads * c.v_dim, 0.0);
  const double scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.k_dim)));
  const std::size_t rep = c.n_heads / c.n_kv_heads;
  for (std::size_t i = 0; i < c.m; ++i) {
    const std::size_t position = c.first_position + i;
    std::size_t first = c.window && position + 1 > c.window ? position + 1 - c.window : 0;
    if (c.chunk) first = std::max(first, position / c.chunk * c.chunk);
    for (std::size_t h = 0; h < c.n_heads; ++h) {
      const std::size_t kv = h / rep;
      std::vector<double> scores;
      double max = c.sinks ? d.sinks[h] : -INFINITY;
      for (std::size_t p = first; p <= position; ++p) {
        double s = 0;
        for (std::size_t t = 0; t < c.k_dim; ++t) {
          s += double(d.q[(i * c.n_heads + h) * c.k_dim + t]) * d.k_values[(p * c.n_kv_heads + kv) * c.k_dim + t];
        }
        scores.push_back(s * scale);
        max = larger(max, s * scale);
      }
      double sum = c.sinks ? std::exp(d.sinks[h] - max) : 0.0;
      for (double& s : scores) sum += (s = std::exp(s - max));
      for (std::size_t p = first; p <= position; ++p) {
        const double weight = scores[p - first] / sum;
        for (std::size_t t = 0; t < c.v_dim; ++t) {
          out[(i * c.n_heads + h) * c.v_dim + t] += weight * d.v_values[(p * c.n_kv_heads + kv) * c.v_dim + t];
        }
      }
    }
  }
  return out;
}

const AttentionCase kAttentionCases[] = {
    {4, 4, 64, 64, 1, 100, 128, 0, false, DType::kF32, false, "mha decode", 0},
    {8, 2, 32, 32, 19, 0, 64, 0, false, DType::kF32, false, "gqa prefill", 0},
    {12, 1, 20, 13, 5, 70, 80, 0, false, DType::kBF16, false, "mqa 12 heads (chunks 8+4), odd dims, bf16", 0},
    {3, 3, 48, 32, 17, 40, 96, 0, false, DType::kF16, false, "k_dim != v_dim (mla-like), f16", 0},
    {4, 2, 16, 16, 9, 200, 40, 32, true, DType::kF32, false, "sliding window + sinks, ring buffer", 0},
    {6, 2, 24, 24, 1, 300, 512, 0, true, DType::kBF16, false, "sinks decode", 0},
    {16, 1, 36, 32, 3, 90, 128, 0, false, DType::kBF16, true, "absorbed mla: v aliases k", 0},
    {2, 1, 8, 8, 70, 0, 70, 0, false, DType::kF32, false, "prefill over several key blocks", 0},
    {2, 2, 7, 5, 4, 150, 160, 129, true, DType::kF16, false, "window longer than a key block", 0},
    {4, 2, 16, 16, 37, 0, 64, 0, false, DType::kF32, false, "chunks of 8 (Llama 4), prefill across chunks", 8},
    {4, 1, 16, 16, 9, 130, 80, 70, true, DType::kBF16, false, "chunks of 64 and a window, decode in a chunk", 64},
};

}  // namespace

ZTEST(kernels_attention_matches_naive_on_every_isa) {
  for (const AttentionCase& c : kAttentionCases) {
    const AttentionData d = make_attention_data(c);
    const std::vector<double> want = naive_attention(c, d);
    double max_value = 0;
    for (float v : d.v_values) max_value = larger(max_value, std::fabs(v));
    const k::AttentionParams params = params_for(c, d);
    for (Isa isa : zipmoe::supported_isas()) {
      for (k::MatmulPrecision precision : {k::MatmulPrecision::kFast, k::MatmulPrecision::kExact}) {
        std::vector<float> out(c.m * c.n_heads * c.v_dim, NAN);
        k::attention(isa, d.q.data(), c.m, 0, c.first_position, d.view, params, out.data(), 0, nullptr, precision);
        double worst = 0;
        for (std::size_t i = 0; i < out.size(); ++i) worst = larger(worst, std::fabs(out[i] - want[i]));
        if (!(worst <= 1e-5 * max_value)) {
          std::fprintf(stderr, "  %s [%s]: max error %.3g (max |v| %.3g)\n", c.name, zipmoe::isa_name(isa), worst,
                       max_value);
        }
        ZCHECK(worst <= 1e-5 * max_value);
      }
    }
  }
}

ZTEST(kernels_attention_is_bit_identical_for_1_2_3_threads_and_per_query) {
  for (const AttentionCase& c : kAttentionCases) {
    const AttentionData d = make_attention_data(c);
    const k::AttentionParams params = params_for(c, d);
    const std::size_t row = c.n_heads * c.v_dim;
    for (Isa isa : zipmoe::supported_isas()) {
      for (k::MatmulPrecision precision : {k::MatmulPrecision::kFast, k::MatmulPrecision::kExact}) {
        std::vector<float> first;
        for (int threads : {1, 2, 3}) {
          zipmoe::ThreadPool pool(threads);
          std::vector<float> out(c.m * row);
          k::attention(isa, d.q.data(), c.m, 0, c.first_position, d.view, params, out.data(), 0, &pool, precision);
          if (threads == 1) {
            first = out;
          } else {
            ZCHECK(same_bits(first, out));
          }
        }
        // A query computed alone (decode) equals the same query in a prefill batch.
        for (std::size_t i = 0; i < c.m; i += 4) {
          std::vector<float> one(row);
          k::attention(isa, d.q.data() + i * c.n_heads * c.k_dim, 1, 0, c.first_position + i, d.view, params,
                       one.data(), 0, nullptr, precision);
          ZCHECK(std::memcmp(one.data(), first.data() + i * row, row * sizeof(float)) == 0);
        }
      }
    }
  }
}

ZTEST(kernels_attention_and_cache_reject_bad_shapes) {
  std::vector<float> k_cache(4 * 8 * 16), v_cache(4 * 8 * 16), q(3 * 16), out(3 * 16);
  k::KvCacheView view = k::make_kv_cache_view(DType::kF32, 1, 16, 16, 8, k_cache.data(), v_cache.data());
  k::AttentionParams params;
  params.n_heads = 3;
  params.scale = 0.25f;
  k::attention(Isa::kScalar, q.data(), 1, 0, 7, view, params, out.data(), 0, nullptr);
  // Position 8 would need 9 positions in a cache of 8.
  ZCHECK_THROWS(k::attention(Isa::kScalar, q.data(), 1, 0, 8, view, params, out.data(), 0, nullptr),
                zipmoe::InvalidArgumentError);
  // With a window of 8 it fits.
  params.sliding_window = 8;
  k::attention(Isa::kScalar, q.data(), 1, 0, 100, view, params, out.data(), 0, nullptr);
  view.n_kv_heads = 2;
  ZCHECK_THROWS(k::attention(Isa::kScalar, q.data(), 1, 0, 7, view, params, out.data(), 0, nullptr),
                zipmoe::InvalidArgumentError);
  view.n_kv_heads = 1;
  ZCHECK_THROWS(k::kv_cache_store(Isa::kScalar, view, 0, 9, q.data(), 0, q.data(), 0), zipmoe::InvalidArgumentError);
  ZCHECK_EQ(k::kv_cache_bytes(DType::kBF16, 2, 192, 128, 100), std::size_t(2 * 100 * 320 * 2));
}

ZTEST(kernels_kv_cache_store_places_and_rounds_values) {
  const std::size_t heads = 2, k_dim = 3, v_dim = 2, capacity = 4;
  std::vector<std::uint16_t> kc(heads * capacity * k_dim), vc(heads * capacity * v_dim);
  const k::KvCacheView view = k::make_kv_cache_view(DType::kBF16, heads, k_dim, v_dim, capacity, kc.data(), vc.data());
  const std::vector<float> keys = random_floats(6 * heads * k_dim, 1), values = random_floats(6 * heads * v_dim, 2);
  for (Isa isa : zipmoe::supported_isas()) {
    k::kv_cache_store(isa, view, 0, 4, keys.data(), 0, values.data(), 0);
    k::kv_cache_store(isa, view, 4, 2, keys.data() + 4 * heads * k_dim, 0, values.data() + 4 * heads * v_dim, 0);
    // Positions 4 and 5 overwrote slots 0 and 1.
    for (std::size_t p = 2; p < 6; ++p) {
      for (std::size_t h = 0; h < heads; ++h) {
        for (std::size_t d = 0; d < k_dim; ++d) {
          ZCHECK_EQ(kc[h * capacity * k_dim + (p % capacity) * k_dim + d],
                    k::f32_to_bf16(keys[(p * heads + h) * k_dim + d]));
        }
        for (std::size_t d = 0; d < v_dim; ++d) {
          ZCHECK_EQ(vc[h * capacity * v_dim + (p % capacity) * v_dim + d],
                    k::f32_to_bf16(values[(p * heads + h) * v_dim + d]));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// MatmulPrecision::kExact and the always-canonical kernels: the same bits on
// every path (here: every path this machine runs), and the same bits as x86's
// scalar path (golden values; the aarch64 build runs these under qemu in CI).

namespace {

// Rows with values that probe exp's extremes (underflow to 0, subnormal results,
// overflow) between ordinary ones.
std::vector<float> rows_with_extremes(std::size_t n, std::uint32_t seed) {
  std::vector<float> v = random_floats(n, seed, 3.0f);
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 7 == 3) v[i] = -86.5f - static_cast<float>(i % 19);  // exp in the subnormal range, then 0
    if (i % 11 == 5) v[i] = 80.0f + static_cast<float>(i % 10);   // large, some beyond exp's range
  }
  return v;
}

bool report_differs(const char* what, Isa isa, std::size_t n, const std::vector<float>& got,
                    const std::vector<float>& want) {
  if (same_bits(got, want)) return false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      std::fprintf(stderr, "  %s n=%zu [%s]: element %zu is %.9g, scalar %.9g\n", what, n, zipmoe::isa_name(isa), i,
                   got[i], want[i]);
      break;
    }
  }
  return true;
}

}  // namespace

ZTEST(kernels_exact_linear_is_bit_identical_on_every_isa_and_any_row_count) {
  zipmoe::ThreadPool pool(3);
  k::Workspace ws;
  const std::size_t ms[] = {1, 2, 3, 5, 13};
  const std::size_t ns[] = {1, 3, 9, 17};
  const std::size_t ks[] = {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63, 65, 100, 129, 257};
  int failures = 0;
  for (DType dtype : kDTypes) {
    for (std::size_t m : ms) {
      for (std::size_t n : ns) {
        for (std::size_t kdim : ks) {
          const bool bias = (m + n + kdim) % 2 == 1;
          const LinearCase c{m, n, kdim, dtype, bias, kDTypes[(n + kdim) % 3], m % 2 == 1, kdim % 3, n % 2};
          const LinearData d = make_linear_data(c, static_cast<std::uint32_t>(m * 7919 + n * 131 + kdim));
          std::vector<float> want = d.y0;
          k::linear(Isa::kScalar, make_job(c, d, want.data()), nullptr, &ws, k::MatmulPrecision::kExact);
          for (Isa isa : zipmoe::supported_isas()) {
            std::vector<float> y = d.y0;
            k::linear(isa, make_job(c, d, y.data()), kdim % 2 ? &pool : nullptr, &ws, k::MatmulPrecision::kExact);
            if (report_differs(zipmoe::dtype_name(dtype), isa, kdim, y, want) && failures++ < 5) {
              std::fprintf(stderr, "    (linear m=%zu n=%zu k=%zu)\n", m, n, kdim);
            }
            // The last row alone gives the bits it has inside the call.
            LinearCase one = c;
            one.m = 1;
            LinearData row = d;
            row.x.assign(d.x.end() - d.ldx, d.x.end());
            row.y0.assign(d.y0.end() - d.ldy, d.y0.end());
            std::vector<float> alone = row.y0;
            k::linear(isa, make_job(one, row, alone.data()), nullptr, &ws, k::MatmulPrecision::kExact);
            ZCHECK(std::memcmp(alone.data(), want.data() + (m - 1) * d.ldy, n * sizeof(float)) == 0);
          }
        }
      }
    }
  }
  ZCHECK_EQ(failures, 0);
}

ZTEST(kernels_exact_linear_blocks_and_threads_give_the_scalar_bits) {
  // Shapes spanning several work items and register tiles, on 1 to 3 threads.
  k::Workspace ws;
  const LinearCase cases[] = {
      {37, 150, 1000, DType::kBF16, true, DType::kF32, false, 0, 3},
      {1, 700, 333, DType::kF16, false, DType::kF32, true, 1, 0},
      {9, 64, 2049, DType::kF32, true, DType::kBF16, false, 0, 0},
  };
  for (const LinearCase& c : cases) {
    const LinearData d = make_linear_data(c, static_cast<std::uint32_t>(c.kdim));
    std::vector<float> want = d.y0;
    k::linear(Isa::kScalar, make_job(c, d, want.data()), nullptr, &ws, k::MatmulPrecision::kExact);
    for (Isa isa : zipmoe::supported_isas()) {
      for (int threads : {1, 2, 3}) {
        zipmoe::ThreadPool pool(threads);
        std::vector<float> y = d.y0;
        k::linear(isa, make_job(c, d, y.data()), &pool, &ws, k::MatmulPrecision::kExact);
        ZCHECK(!report_differs(zipmoe::dtype_name(c.dtype), isa, c.kdim, y, want));
      }
    }
  }
}

ZTEST(kernels_norms_softmax_and_activations_are_bit_identical_on_every_isa) {
  const std::size_t lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000, 2049};
  for (std::size_t n : lengths) {
    const std::vector<float> a = rows_with_extremes(n, static_cast<std::uint32_t>(n) + 100);
    const std::vector<float> b = random_floats(n, static_cast<std::uint32_t>(n) + 200, 4.0f);
    const std::vector<float> x = random_floats(2 * n, static_cast<std::uint32_t>(n) + 300, 2.0f);
    std::vector<float> logits = a;
    for (std::size_t i = 1; i < n; i += 9) logits[i] = -INFINITY;
    const DType dtype = kDTypes[n % 3];
    const Stored w = store_as(dtype, random_floats(n, 11, 1.0f));
    const Stored bias = store_as(kDTypes[(n + 1) % 3], random_floats(n, 12, 1.0f));
    const k::WeightVector wv{w.bytes.data(), dtype, n}, bv{bias.bytes.data(), bias.dtype, n};
    auto run = [&](Isa isa) {
      std::vector<std::vector<float>> out(7, std::vector<float>(2 * n));
      k::rms_norm(isa, x.data(), 2, n, n, wv, 1e-6f, out[0].data(), n);
      k::layer_norm(isa, x.data(), 2, n, n, wv, n % 2 ? bv : k::WeightVector{}, 1e-5f, out[1].data(), n);
      k::softmax(isa, logits.data(), 1, n, 0, out[2].data(), 0);
      k::silu_mul(isa, a.data(), b.data(), out[3].data(), n);
      k::swiglu_oai(isa, a.data(), b.data(), out[4].data(), n, 1.702f, 7.0f);
      k::sigmoid(isa, a.data(), out[5].data(), n);
      out[6] = a;
      k::softmax(isa, out[6].data(), 1, n, 0, out[6].data(), 0);  // in place
      return out;
    };
    const auto want = run(Isa::kScalar);
    const char* names[] = {"rms_norm",   "layer_norm", "softmax", "silu_mul",
                           "swiglu_oai", "sigmoid",    "softmax in place"};
    for (Isa isa : zipmoe::supported_isas()) {
      const auto got = run(isa);
      for (int f = 0; f < 7; ++f) ZCHECK(!report_differs(names[f], isa, n, got[f], want[f]));
    }
  }
}

ZTEST(kernels_exp_is_close_to_libm_over_its_whole_range) {
  // The canonical exp, probed through public functions: softmax({0, x}) holds
  // e^x / (1 + e^x) (subnormal results included), sigmoid(-x) = 1 / (1 + e^x).
  for (float x = -120.0f; x <= 0.0f; x += 0.37f) {
    const float row[2] = {0.0f, x};
    float p[2];
    k::softmax(Isa::kScalar, row, 1, 2, 0, p, 0);
    const double e = std::exp(double(x));
    ZCHECK(close_relative(p[1], e / (1.0 + e), 2e-6, 0x1p-149));
  }
  for (float x = 0.0f; x <= 85.0f; x += 0.37f) {
    const float minus = -x;
    float out;
    k::sigmoid(Isa::kScalar, &minus, &out, 1);
    ZCHECK(close_relative(out, 1.0 / (1.0 + std::exp(double(x))), 2e-6));
  }
  // Below -104 (and -inf) exactly 0; e^88.5 is finite, e^88.8 overflows.
  const float row[3] = {0.0f, -104.5f, -INFINITY};
  float p[3];
  k::softmax(Isa::kScalar, row, 1, 3, 0, p, 0);
  ZCHECK_EQ(p[0], 1.0f);
  ZCHECK_EQ(p[1], 0.0f);
  ZCHECK_EQ(p[2], 0.0f);
  const float big[2] = {-88.5f, -88.8f};
  float s[2];
  k::sigmoid(Isa::kScalar, big, s, 2);
  ZCHECK(s[0] > 0.0f);
  ZCHECK_EQ(s[1], 0.0f);
}

ZTEST(kernels_exact_attention_is_bit_identical_on_every_isa) {
  for (const AttentionCase& c : kAttentionCases) {
    const AttentionData d = make_attention_data(c);
    const k::AttentionParams params = params_for(c, d);
    std::vector<float> want(c.m * c.n_heads * c.v_dim);
    k::attention(Isa::kScalar, d.q.data(), c.m, 0, c.first_position, d.view, params, want.data(), 0, nullptr,
                 k::MatmulPrecision::kExact);
    zipmoe::ThreadPool pool(3);
    for (Isa isa : zipmoe::supported_isas()) {
      std::vector<float> out(want.size());
      k::attention(isa, d.q.data(), c.m, 0, c.first_position, d.view, params, out.data(), 0, &pool,
                   k::MatmulPrecision::kExact);
      ZCHECK(!report_differs(c.name, isa, c.m, out, want));
    }
  }
}

// ---------------------------------------------------------------------------
// Golden values

namespace {

const ztest::GoldenEntry kKernelGolden[] = {
#include "golden/exact_kernels.inc"
};

std::vector<float> golden_floats(std::size_t n, std::uint32_t seed, float scale) {
  return ztest::golden_floats(n, seed, scale);
}

void golden_linear_cases(Isa isa, ztest::GoldenSet* golden) {
  struct Shape {
    std::size_t m, n, k;
    bool bias, accumulate;
  };
  const Shape shapes[] = {{3, 5, 1, false, false},  {2, 7, 31, true, false}, {1, 9, 33, false, true},
                          {5, 3, 100, true, true},  {1, 4, 257, true, false}, {17, 6, 70, false, false}};
  zipmoe::ThreadPool pool(2);
  k::Workspace ws;
  std::uint32_t seed = 1;
  for (DType dtype : kDTypes) {
    for (const Shape& s : shapes) {
      const Stored w = store_as(dtype, golden_floats(s.n * s.k, seed++, 0.125f));
      const Stored bias = store_as(DType::kBF16, golden_floats(s.n, seed++, 0.5f));
      std::vector<float> x = golden_floats(s.m * s.k, seed++, 2.0f);
      x[0] = 0x1p-140f;  // a subnormal input: no path may flush it
      std::vector<float> y = golden_floats(s.m * s.n, seed++, 1.0f);
      k::LinearJob job;
      job.x = x.data();
      job.m = s.m;
      job.weight = {w.bytes.data(), dtype, s.n, s.k};
      if (s.bias) job.bias = {bias.bytes.data(), DType::kBF16, s.n};
      job.y = y.data();
      job.accumulate = s.accumulate;
      k::linear(isa, job, s.m > 4 ? &pool : nullptr, &ws, k::MatmulPrecision::kExact);
      golden->check(isa,
                    std::string("linear ") + zipmoe::dtype_name(dtype) + " " + std::to_string(s.m) + "x" +
                        std::to_string(s.n) + "x" + std::to_string(s.k),
                    y);
    }
  }
}

void golden_row_cases(Isa isa, ztest::GoldenSet* golden) {
  std::uint32_t seed = 100;
  for (std::size_t n : {1, 17, 100}) {
    const DType dtype = kDTypes[n % 3];
    const std::vector<float> x = golden_floats(2 * n, seed++, 4.0f);
    const Stored w = store_as(dtype, golden_floats(n, seed++, 1.0f));
    const Stored bias = store_as(DType::kF16, golden_floats(n, seed++, 1.0f));
    const k::WeightVector wv{w.bytes.data(), dtype, n}, bv{bias.bytes.data(), DType::kF16, n};
    std::vector<float> y(2 * n);
    k::rms_norm(isa, x.data(), 2, n, n, wv, 1e-6f, y.data(), n);
    golden->check(isa, "rms_norm " + std::to_string(n), y);
    k::layer_norm(isa, x.data(), 2, n, n, wv, bv, 1e-5f, y.data(), n);
    golden->check(isa, "layer_norm " + std::to_string(n), y);
  }
  for (std::size_t n : {3, 17, 100}) {
    // Differences down to -120: exp results in the subnormal range and exact zeros.
    std::vector<float> logits = golden_floats(n, seed++, 60.0f);
    logits[1] = -INFINITY;
    std::vector<float> p(n);
    k::softmax(isa, logits.data(), 1, n, 0, p.data(), 0);
    golden->check(isa, "softmax " + std::to_string(n), p);
  }
  const std::size_t n = 45;
  const std::vector<float> gate = golden_floats(n, seed++, 100.0f), up = golden_floats(n, seed++, 8.0f);
  std::vector<float> out(n);
  k::silu_mul(isa, gate.data(), up.data(), out.data(), n);
  golden->check(isa, "silu_mul", out);
  k::swiglu_oai(isa, gate.data(), up.data(), out.data(), n, 1.702f, 7.0f);
  golden->check(isa, "swiglu_oai", out);
  k::sigmoid(isa, gate.data(), out.data(), n);
  golden->check(isa, "sigmoid", out);
  // RoPE on a given cos/sin table (the table itself comes from the C library's
  // cos/sin in double precision, rounded to float; see rope_cos_sin).
  for (k::RopeStyle style : {k::RopeStyle::kNeox, k::RopeStyle::kInterleaved}) {
    std::vector<float> v = golden_floats(2 * 3 * 10, seed++, 2.0f);
    const std::vector<float> table = golden_floats(2 * 8, seed++, 1.0f);
    k::rope_apply(isa, style, v.data(), 2, 30, 3, 10, 8, table.data());
    golden->check(isa, style == k::RopeStyle::kNeox ? "rope neox" : "rope interleaved", v);
  }
}

void golden_attention_cases(Isa isa, ztest::GoldenSet* golden) {
  zipmoe::ThreadPool pool(2);
  for (const AttentionCase& c : kAttentionCases) {
    const AttentionData d = make_attention_data(c, &golden_floats);
    const k::AttentionParams params = params_for(c, d);
    std::vector<float> out(c.m * c.n_heads * c.v_dim);
    k::attention(isa, d.q.data(), c.m, 0, c.first_position, d.view, params, out.data(), 0, &pool,
                 k::MatmulPrecision::kExact);
    golden->check(isa, std::string("attention ") + c.name, out);
  }
}

}  // namespace

ZTEST(golden_exact_kernels_give_the_x86_scalar_bits_on_every_path) {
  ztest::GoldenSet golden("exact_kernels.inc", kKernelGolden, sizeof(kKernelGolden) / sizeof(kKernelGolden[0]));
  for (Isa isa : zipmoe::supported_isas()) {
    golden_linear_cases(isa, &golden);
    golden_row_cases(isa, &golden);
    golden_attention_cases(isa, &golden);
  }
  golden.finish();
}

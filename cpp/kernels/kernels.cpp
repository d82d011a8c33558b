// Entry points of the kernel library: argument checks, dispatch to one ISA's
// KernelTable, and the cutting of work into thread-independent pieces.
#include "kernels/kernels.h"

#include <cmath>
#include <cstring>
#include <new>
#include <string>

#include "common/cpu_features.h"
#include "kernels/float_convert.h"
#include "kernels/kernels_isa.h"
#include "zipmoe/error.h"

namespace zipmoe::kernels {

namespace {

const KernelTable& table_for(Isa isa) {
  throw_if_error(check_isa(isa));
  switch (isa) {
#if defined(ZIPMOE_ARCH_X86)
    case Isa::kAvx2: return avx2::kernel_table();
    case Isa::kAvx512: return avx512::kernel_table();
#endif
#if defined(ZIPMOE_ARCH_ARM64)
    case Isa::kNeon: return neon::kernel_table();
#endif
    default: return scalar::kernel_table();
  }
}

void require(bool condition, const char* function, const char* what) {
  if (!condition) throw InvalidArgumentError(std::string(function) + ": " + what);
}

void require_dtype(DType dtype, const char* function) {
  require(is_valid_dtype(static_cast<std::uint8_t>(dtype)), function, "unknown dtype");
}

std::size_t round_up_to(std::size_t value, std::size_t multiple) { return (value + multiple - 1) / multiple * multiple; }
std::size_t clamp_size(std::size_t v, std::size_t lo, std::size_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

// ---------------------------------------------------------------------------
// Linear layers

// How a job's input rows are prepared.
struct InputKind {
  bool bf16_dot = false;
  InputLayout layout = InputLayout::kF32;
  std::size_t k_padded = 0;
  std::size_t row_bytes = 0;  // prepared row, rounded up to a cache line
};

// How one job is cut into items, and where its prepared input lives.
struct JobPlan {
  InputKind kind;
  std::size_t input = 0;  // the job whose prepared rows this job reads (itself or an earlier one)
  std::size_t m_block = 0, n_block = 0, m_blocks = 0, n_blocks = 0;
  std::size_t first_item = 0;
  std::size_t input_offset = 0;  // bytes into the prepared data (jobs that own their input)
  std::size_t first_row = 0;     // index of its first row among all prepared rows (same)
};

// Inputs compared for sharing; later distinct inputs are prepared separately.
constexpr std::size_t kMaxSharedInputs = 256;

std::size_t effective_ldx(const LinearJob& job) { return job.ldx ? job.ldx : job.weight.cols; }
std::size_t effective_ldy(const LinearJob& job) { return job.ldy ? job.ldy : job.weight.rows; }

InputKind input_kind(Isa isa, const KernelTable& table, const LinearJob& job, MatmulPrecision precision) {
  InputKind kind;
  std::size_t chunk = table.k_chunk;
  kind.layout = table.input_layout(job.weight.dtype);
#if defined(ZIPMOE_ARCH_X86)
  if (isa == Isa::kAvx512 && precision == MatmulPrecision::kFast && job.weight.dtype == DType::kBF16 &&
      job.m >= 2 && cpu_features().avx512_bf16) {
    kind.bf16_dot = true;
    kind.layout = InputLayout::kBF16;
    chunk = avx512bf16::kBf16DotChunk;
  }
#else
  (void)isa, (void)precision;
#endif
  kind.k_padded = round_up_to(job.weight.cols, chunk);
  kind.row_bytes = round_up_to(kind.k_padded * (kind.layout == InputLayout::kBF16 ? 2 : 4), 64);
  return kind;
}

void validate_job(const LinearJob& job) {
  const char* f = "linear";
  require_dtype(job.weight.dtype, f);
  require(job.weight.rows > 0 && job.weight.cols > 0, f, "weight has no rows or no columns");
  require(job.weight.data != nullptr, f, "weight data is null");
  if (job.m == 0) return;
  require(job.x != nullptr && job.y != nullptr, f, "x or y is null");
  require(effective_ldx(job) >= job.weight.cols, f, "ldx is smaller than the weight's column count");
  require(effective_ldy(job) >= job.weight.rows, f, "ldy is smaller than the weight's row count");
  if (job.bias.data) {
    require_dtype(job.bias.dtype, f);
    require(job.bias.size == job.weight.rows, f, "bias size differs from the weight's row count");
  }
}

// Plans every job (plans may be null to size only); returns the bytes of prepared input.
std::size_t plan_jobs(Isa isa, const KernelTable& table, const LinearJob* jobs, std::size_t count,
                      MatmulPrecision precision, JobPlan* plans, std::size_t* total_items, std::size_t* total_rows) {
  std::size_t owners[kMaxSharedInputs];
  InputKind owner_kinds[kMaxSharedInputs];
  std::size_t n_owners = 0;
  std::size_t bytes = 0, items = 0, rows = 0;
  for (std::size_t j = 0; j < count; ++j) {
    const LinearJob& job = jobs[j];
    JobPlan p;
    p.kind = input_kind(isa, table, job, precision);
    // Blocks depend only on the shapes: about 64 KiB of weights per item for M = 1
    // (streaming), about 256 KiB of inputs and of weights per item for M > 1 (both
    // stay in L2 while the item runs). Multiples of 12 rows and columns fit every
    // register tile (4 or 3 rows, 6, 4 or 2 columns); rows are split evenly so that
    // no block is a thin remainder.
    const std::size_t weight_row_bytes = job.weight.cols * dtype_size(job.weight.dtype);
    if (job.m <= 1) {
      p.m_block = 1;
      p.n_block = clamp_size((65536 / weight_row_bytes) / 8 * 8, 8, 256);
    } else {
      const std::size_t most_rows = clamp_size((262144 / p.kind.row_bytes) / 12 * 12, 12, 60);
      const std::size_t row_blocks = (job.m + most_rows - 1) / most_rows;
      p.m_block = round_up_to((job.m + row_blocks - 1) / row_blocks, 4);
      p.n_block = clamp_size((262144 / weight_row_bytes) / 12 * 12, 12, 72);
    }
    p.m_blocks = (job.m + p.m_block - 1) / p.m_block;
    p.n_blocks = job.m ? (job.weight.rows + p.n_block - 1) / p.n_block : 0;
    p.first_item = items;
    items += p.m_blocks * p.n_blocks;
    p.input = j;
    if (job.m) {
      for (std::size_t r = 0; r < n_owners; ++r) {
        const LinearJob& other = jobs[owners[r]];
        const InputKind& other_kind = owner_kinds[r];
        if (other.x == job.x && other.m == job.m && effective_ldx(other) == effective_ldx(job) &&
            other.weight.cols == job.weight.cols && other_kind.layout == p.kind.layout &&
            other_kind.k_padded == p.kind.k_padded) {
          p.input = owners[r];
          break;
        }
      }
      if (p.input == j) {
        p.input_offset = bytes;
        p.first_row = rows;
        bytes += job.m * p.kind.row_bytes;
        rows += job.m;
        if (n_owners < kMaxSharedInputs) {
          owners[n_owners] = j;
          owner_kinds[n_owners++] = p.kind;
        }
      }
    }
    if (plans) new (plans + j) JobPlan(p);
  }
  *total_items = items;
  *total_rows = rows;
  return bytes;
}

// The workspace holds the plans, the list of jobs owning an input, then the prepared rows.
std::size_t plans_bytes(std::size_t count) {
  return round_up_to(count * sizeof(JobPlan), 64) + round_up_to(count * sizeof(std::size_t), 64);
}

struct LinearContext {
  const KernelTable* table;
  MatmulPrecision precision;
  const LinearJob* jobs;
  const JobPlan* plans;
  std::size_t count;
  const std::size_t* owners;  // jobs that own a prepared input, in order
  std::size_t owners_count;
  std::uint8_t* prepared;
};

// The job owning prepared row `row`: owners are listed in the order of their rows.
std::size_t job_of_row(const LinearContext& c, std::size_t row) {
  std::size_t lo = 0, hi = c.owners_count;
  while (hi - lo > 1) {
    const std::size_t mid = (lo + hi) / 2;
    if (c.plans[c.owners[mid]].first_row <= row) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return c.owners[lo];
}

void prepare_row(const LinearContext& c, std::size_t j, std::size_t i) {
  const LinearJob& job = c.jobs[j];
  const JobPlan& p = c.plans[j];
  void* out = c.prepared + p.input_offset + i * p.kind.row_bytes;
  const float* x = job.x + i * effective_ldx(job);
#if defined(ZIPMOE_ARCH_X86)
  if (p.kind.bf16_dot) {
    avx512bf16::prepare_input(p.kind.layout, x, job.weight.cols, p.kind.k_padded, out);
    return;
  }
#endif
  c.table->prepare_input(p.kind.layout, x, job.weight.cols, p.kind.k_padded, out);
}

void run_item(const LinearContext& c, std::size_t item) {
  // The job whose items contain `item`.
  std::size_t lo = 0, hi = c.count;
  while (hi - lo > 1) {
    const std::size_t mid = (lo + hi) / 2;
    if (c.plans[mid].first_item <= item) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  // Jobs without items share first_item with the next one; skip to the one that has it.
  while (c.plans[lo].m_blocks * c.plans[lo].n_blocks == 0 ||
         item >= c.plans[lo].first_item + c.plans[lo].m_blocks * c.plans[lo].n_blocks) {
    ++lo;
  }
  const LinearJob& job = c.jobs[lo];
  const JobPlan& p = c.plans[lo];
  const JobPlan& owner = c.plans[p.input];
  const std::size_t local = item - p.first_item;
  // Column blocks outer: the row blocks of one weight block run one after the
  // other (or side by side on two threads) while that block is in cache.
  const std::size_t nb = local / p.m_blocks, mb = local % p.m_blocks;
  const std::size_t m0 = mb * p.m_block, n0 = nb * p.n_block;
  LinearTile t;
  t.m = job.m - m0 < p.m_block ? job.m - m0 : p.m_block;
  t.n = job.weight.rows - n0 < p.n_block ? job.weight.rows - n0 : p.n_block;
  t.x = c.prepared + owner.input_offset + m0 * p.kind.row_bytes;
  t.x_stride = p.kind.row_bytes / (p.kind.layout == InputLayout::kBF16 ? 2 : 4);
  t.w_dtype = job.weight.dtype;
  t.k = job.weight.cols;
  t.w = static_cast<const std::uint8_t*>(job.weight.data) + n0 * t.k * dtype_size(t.w_dtype);
  if (job.bias.data) {
    t.bias = static_cast<const std::uint8_t*>(job.bias.data) + n0 * dtype_size(job.bias.dtype);
    t.bias_dtype = job.bias.dtype;
  }
  const std::size_t ldy = effective_ldy(job);
  t.y = job.y + m0 * ldy + n0;
  t.ldy = ldy;
  t.accumulate = job.accumulate;
  t.precision = c.precision;
#if defined(ZIPMOE_ARCH_X86)
  if (p.kind.bf16_dot) {
    avx512bf16::linear_tile(t);
    return;
  }
#endif
  c.table->linear_tile(t);
}

}  // namespace

void Workspace::reserve(std::size_t bytes) {
  if (bytes > buffer_.capacity()) buffer_.allocate(bytes, 64);
}

void* Workspace::get(std::size_t bytes) {
  if (bytes > buffer_.capacity() || buffer_.data() == nullptr) buffer_.allocate(bytes ? bytes : 64, 64);
  return buffer_.data();
}

std::size_t linear_workspace_bytes(Isa isa, const LinearJob* jobs, std::size_t count, MatmulPrecision precision) {
  const KernelTable& table = table_for(isa);
  if (count == 0) return 0;
  require(jobs != nullptr, "linear", "jobs is null");
  for (std::size_t j = 0; j < count; ++j) validate_job(jobs[j]);
  std::size_t items = 0, rows = 0;
  return plans_bytes(count) + plan_jobs(isa, table, jobs, count, precision, nullptr, &items, &rows);
}

void linear_batch(Isa isa, const LinearJob* jobs, std::size_t count, ThreadPool* pool, Workspace* workspace,
                  MatmulPrecision precision) {
  const KernelTable& table = table_for(isa);
  if (count == 0) return;
  require(jobs != nullptr, "linear", "jobs is null");
  require(workspace != nullptr, "linear", "workspace is null");
  for (std::size_t j = 0; j < count; ++j) validate_job(jobs[j]);

  std::size_t items = 0, rows = 0;
  const std::size_t data_bytes = plan_jobs(isa, table, jobs, count, precision, nullptr, &items, &rows);
  std::uint8_t* base = static_cast<std::uint8_t*>(workspace->get(plans_bytes(count) + data_bytes));
  JobPlan* plans = reinterpret_cast<JobPlan*>(base);
  std::size_t* owners = reinterpret_cast<std::size_t*>(base + round_up_to(count * sizeof(JobPlan), 64));
  plan_jobs(isa, table, jobs, count, precision, plans, &items, &rows);
  if (items == 0) return;

  LinearContext c;
  c.table = &table;
  c.precision = precision;
  c.jobs = jobs;
  c.plans = plans;
  c.count = count;
  c.owners = owners;
  c.owners_count = 0;
  for (std::size_t j = 0; j < count; ++j) {
    if (plans[j].input == j && jobs[j].m) owners[c.owners_count++] = j;
  }
  c.prepared = base + plans_bytes(count);
  const LinearContext* context = &c;

  // Convert the inputs (in parallel when there is enough of it to pay for a wake-up).
  std::size_t prepared_elements = 0;
  for (std::size_t o = 0; o < c.owners_count; ++o) prepared_elements += jobs[owners[o]].m * jobs[owners[o]].weight.cols;
  if (pool && pool->num_threads() > 1 && prepared_elements >= (std::size_t(1) << 16)) {
    parallel_for(pool, rows, [context](std::size_t row) {
      const std::size_t j = job_of_row(*context, row);
      prepare_row(*context, j, row - context->plans[j].first_row);
    });
  } else {
    for (std::size_t o = 0; o < c.owners_count; ++o) {
      for (std::size_t i = 0; i < jobs[owners[o]].m; ++i) prepare_row(c, owners[o], i);
    }
  }
  parallel_for(pool, items, [context](std::size_t item) { run_item(*context, item); });
}

void linear_batch(const LinearJob* jobs, std::size_t count, ThreadPool* pool, Workspace* workspace,
                  MatmulPrecision precision) {
  linear_batch(default_isa(), jobs, count, pool, workspace, precision);
}

void linear(const LinearJob& job, ThreadPool* pool, Workspace* workspace, MatmulPrecision precision) {
  linear_batch(default_isa(), &job, 1, pool, workspace, precision);
}

void linear(Isa isa, const LinearJob& job, ThreadPool* pool, Workspace* workspace, MatmulPrecision precision) {
  linear_batch(isa, &job, 1, pool, workspace, precision);
}

// ---------------------------------------------------------------------------
// Norms and element-wise functions

namespace {

void check_rows(const char* f, const float* x, std::size_t cols, std::size_t* ldx, const float* y, std::size_t* ldy) {
  require(cols > 0, f, "rows are empty");
  require(x != nullptr && y != nullptr, f, "x or y is null");
  if (*ldx == 0) *ldx = cols;
  if (*ldy == 0) *ldy = cols;
  require(*ldx >= cols && *ldy >= cols, f, "row stride smaller than the row");
}

void check_vector(const char* f, const WeightVector& v, std::size_t size, bool optional) {
  if (optional && !v.data) return;
  require(v.data != nullptr, f, "weight is null");
  require_dtype(v.dtype, f);
  require(v.size == size, f, "weight size differs from the row length");
}

}  // namespace

void rms_norm(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx,
              const WeightVector& weight, float eps, float* y, std::size_t ldy) {
  const KernelTable& t = table_for(isa);
  if (rows == 0) return;
  check_rows("rms_norm", x, cols, &ldx, y, &ldy);
  check_vector("rms_norm", weight, cols, false);
  for (std::size_t r = 0; r < rows; ++r) t.rms_norm(x + r * ldx, cols, weight.data, weight.dtype, eps, y + r * ldy);
}

void rms_norm(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, const WeightVector& weight,
              float eps, float* y, std::size_t ldy) {
  rms_norm(default_isa(), x, rows, cols, ldx, weight, eps, y, ldy);
}

void layer_norm(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx,
                const WeightVector& weight, const WeightVector& bias, float eps, float* y, std::size_t ldy) {
  const KernelTable& t = table_for(isa);
  if (rows == 0) return;
  check_rows("layer_norm", x, cols, &ldx, y, &ldy);
  check_vector("layer_norm", weight, cols, false);
  check_vector("layer_norm", bias, cols, true);
  for (std::size_t r = 0; r < rows; ++r) {
    t.layer_norm(x + r * ldx, cols, weight.data, weight.dtype, bias.data, bias.dtype, eps, y + r * ldy);
  }
}

void layer_norm(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, const WeightVector& weight,
                const WeightVector& bias, float eps, float* y, std::size_t ldy) {
  layer_norm(default_isa(), x, rows, cols, ldx, weight, bias, eps, y, ldy);
}

void softmax(Isa isa, const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, float* y,
             std::size_t ldy) {
  const KernelTable& t = table_for(isa);
  if (rows == 0) return;
  check_rows("softmax", x, cols, &ldx, y, &ldy);
  for (std::size_t r = 0; r < rows; ++r) t.softmax(x + r * ldx, cols, y + r * ldy);
}

void softmax(const float* x, std::size_t rows, std::size_t cols, std::size_t ldx, float* y, std::size_t ldy) {
  softmax(default_isa(), x, rows, cols, ldx, y, ldy);
}

void silu_mul(Isa isa, const float* gate, const float* up, float* out, std::size_t n) {
  const KernelTable& t = table_for(isa);
  if (n) t.silu_mul(gate, up, out, n);
}
void silu_mul(const float* gate, const float* up, float* out, std::size_t n) {
  silu_mul(default_isa(), gate, up, out, n);
}

void swiglu_oai(Isa isa, const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit) {
  const KernelTable& t = table_for(isa);
  if (n) t.swiglu_oai(gate, up, out, n, alpha, limit);
}
void swiglu_oai(const float* gate, const float* up, float* out, std::size_t n, float alpha, float limit) {
  swiglu_oai(default_isa(), gate, up, out, n, alpha, limit);
}

void sigmoid(Isa isa, const float* x, float* out, std::size_t n) {
  const KernelTable& t = table_for(isa);
  if (n) t.sigmoid(x, out, n);
}
void sigmoid(const float* x, float* out, std::size_t n) { sigmoid(default_isa(), x, out, n); }

void add(Isa isa, const float* a, const float* b, float* out, std::size_t n) {
  const KernelTable& t = table_for(isa);
  if (n) t.add(a, b, out, n);
}
void add(const float* a, const float* b, float* out, std::size_t n) { add(default_isa(), a, b, out, n); }

void scale(Isa isa, const float* x, float factor, float* out, std::size_t n) {
  const KernelTable& t = table_for(isa);
  if (n) t.scale(x, factor, out, n);
}
void scale(const float* x, float factor, float* out, std::size_t n) { scale(default_isa(), x, factor, out, n); }

void add_scaled(Isa isa, const float* x, float factor, float* out, std::size_t n) {
  const KernelTable& t = table_for(isa);
  if (n) t.add_scaled(x, factor, out, n);
}
void add_scaled(const float* x, float factor, float* out, std::size_t n) {
  add_scaled(default_isa(), x, factor, out, n);
}

// Conversions are the same scalar code on every path (exact, and cheap next to
// the matrix products).
void convert_to_f32(Isa isa, DType dtype, const void* src, float* out, std::size_t n) {
  table_for(isa);
  require_dtype(dtype, "convert_to_f32");
  if (n) convert_row_to_f32(dtype, src, out, n);
}
void convert_to_f32(DType dtype, const void* src, float* out, std::size_t n) {
  convert_to_f32(default_isa(), dtype, src, out, n);
}

void convert_from_f32(Isa isa, DType dtype, const float* src, void* out, std::size_t n) {
  table_for(isa);
  require_dtype(dtype, "convert_from_f32");
  if (n) convert_row_from_f32(dtype, src, out, n);
}
void convert_from_f32(DType dtype, const float* src, void* out, std::size_t n) {
  convert_from_f32(default_isa(), dtype, src, out, n);
}

namespace {
// The ranking of top_k: larger values first, NaN after every number, then lower index.
bool ranks_before(const float* values, std::size_t a, std::size_t b) {
  const bool a_nan = std::isnan(values[a]), b_nan = std::isnan(values[b]);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && values[a] != values[b]) return values[a] > values[b];
  return a < b;
}
}  // namespace

void top_k(const float* values, std::size_t n, std::size_t k, std::int32_t* out_indices, float* out_values) {
  require(k <= n, "top_k", "k is larger than n");
  require(k == 0 || (values != nullptr && out_indices != nullptr), "top_k", "null pointer");
  // The r-th pick is the best element ranking after the (r-1)-th: O(n k), no state.
  for (std::size_t r = 0; r < k; ++r) {
    std::size_t best = n;
    for (std::size_t i = 0; i < n; ++i) {
      if (r > 0 && !ranks_before(values, static_cast<std::size_t>(out_indices[r - 1]), i)) continue;
      if (best == n || ranks_before(values, i, best)) best = i;
    }
    out_indices[r] = static_cast<std::int32_t>(best);
    if (out_values) out_values[r] = values[best];
  }
}

// ---------------------------------------------------------------------------
// RoPE

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

float rope_inv_freq(const RopeConfig& config, float* inv_freq) {
  const char* f = "rope_inv_freq";
  const std::size_t dim = config.rotary_dim;
  require(dim > 0 && dim % 2 == 0, f, "rotary_dim must be even and positive");
  require(config.theta > 1.0, f, "rope_theta must be > 1");
  require(inv_freq != nullptr, f, "inv_freq is null");
  const std::size_t half = dim / 2;
  const double d = static_cast<double>(dim);
  auto base_frequency = [&](std::size_t i) { return std::pow(config.theta, static_cast<double>(2 * i) / d); };
  double attention_factor = 1.0;
  switch (config.scaling) {
    case RopeScaling::kNone:
      for (std::size_t i = 0; i < half; ++i) inv_freq[i] = static_cast<float>(1.0 / base_frequency(i));
      break;
    case RopeScaling::kLinear:
      require(config.factor > 0, f, "linear scaling needs factor > 0");
      for (std::size_t i = 0; i < half; ++i) inv_freq[i] = static_cast<float>(1.0 / base_frequency(i) / config.factor);
      break;
    case RopeScaling::kYarn: {
      const double factor = config.factor;
      const double original = config.original_max_position_embeddings;
      require(factor > 0 && original > 0, f, "yarn needs factor and original_max_position_embeddings");
      if (config.mscale != 0 && config.mscale_all_dim != 0) {
        attention_factor = yarn_get_mscale(factor, config.mscale) / yarn_get_mscale(factor, config.mscale_all_dim);
      } else {
        attention_factor = yarn_get_mscale(factor);
      }
      const double beta_fast = config.beta_fast != 0 ? config.beta_fast : 32.0;
      const double beta_slow = config.beta_slow != 0 ? config.beta_slow : 1.0;
      const double two_pi = 6.283185307179586476925;
      auto correction_dim = [&](double rotations) {
        return d * std::log(original / (rotations * two_pi)) / (2.0 * std::log(config.theta));
      };
      double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
      if (config.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      if (low < 0) low = 0;
      if (high > d - 1) high = d - 1;
      if (low == high) high += 0.001;  // as transformers: avoids dividing by zero
      for (std::size_t i = 0; i < half; ++i) {
        const double frequency = base_frequency(i);
        double ramp = (static_cast<double>(i) - low) / (high - low);
        ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
        const double extrapolation = 1.0 - ramp;
        const double interpolated = 1.0 / (factor * frequency), extrapolated = 1.0 / frequency;
        inv_freq[i] = static_cast<float>(interpolated * (1.0 - extrapolation) + extrapolated * extrapolation);
      }
      break;
    }
    case RopeScaling::kLlama3: {
      const double original = config.original_max_position_embeddings;
      require(config.factor > 0 && original > 0, f, "llama3 needs factor and original_max_position_embeddings");
      // Equal factors (Llama 4) leave no band to smooth: every frequency is kept or divided.
      const double low_wavelength = original / config.low_freq_factor;
      const double high_wavelength = original / config.high_freq_factor;
      for (std::size_t i = 0; i < half; ++i) {
        const double inv = 1.0 / base_frequency(i);
        const double wavelength = 6.283185307179586476925 / inv;
        double v;
        if (wavelength > low_wavelength) {
          v = inv / config.factor;
        } else if (wavelength < high_wavelength || config.high_freq_factor == config.low_freq_factor) {
          v = inv;
        } else {
          const double smooth =
              (original / wavelength - config.low_freq_factor) / (config.high_freq_factor - config.low_freq_factor);
          v = (1.0 - smooth) * inv / config.factor + smooth * inv;
        }
        inv_freq[i] = static_cast<float>(v);
      }
      break;
    }
    case RopeScaling::kLongRope: {
      require(config.ext_factors != nullptr, f, "longrope needs ext_factors");
      const double original = config.original_max_position_embeddings;
      if (config.factor > 1.0) {
        require(original > 1, f, "longrope needs original_max_position_embeddings");
        attention_factor = std::sqrt(1.0 + std::log(config.factor) / std::log(original));
      }
      for (std::size_t i = 0; i < half; ++i) {
        require(config.ext_factors[i] > 0, f, "longrope factors must be positive");
        inv_freq[i] = static_cast<float>(1.0 / (static_cast<double>(config.ext_factors[i]) * base_frequency(i)));
      }
      break;
    }
    default: require(false, f, "unknown scaling");
  }
  if (config.attention_factor > 0) attention_factor = config.attention_factor;
  return static_cast<float>(attention_factor);
}

void rope_cos_sin(const float* inv_freq, std::size_t rotary_dim, float attention_factor, std::size_t first_position,
                  std::size_t count, float* out) {
  require(rotary_dim > 0 && rotary_dim % 2 == 0, "rope_cos_sin", "rotary_dim must be even and positive");
  const std::size_t half = rotary_dim / 2;
  for (std::size_t t = 0; t < count; ++t) {
    const float position = static_cast<float>(first_position + t);
    float* row = out + t * rotary_dim;
    for (std::size_t i = 0; i < half; ++i) {
      const float angle = position * inv_freq[i];
      row[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_factor;
      row[half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_factor;
    }
  }
}

void rope_apply(Isa isa, RopeStyle style, float* x, std::size_t tokens, std::size_t ldx, std::size_t heads,
                std::size_t head_stride, std::size_t rotary_dim, const float* cos_sin) {
  const KernelTable& t = table_for(isa);
  const char* f = "rope_apply";
  if (tokens == 0 || heads == 0) return;
  require(rotary_dim > 0 && rotary_dim % 2 == 0, f, "rotary_dim must be even and positive");
  require(heads == 1 || head_stride >= rotary_dim, f, "head_stride is smaller than rotary_dim");
  require(x != nullptr && cos_sin != nullptr, f, "null pointer");
  require(style == RopeStyle::kNeox || style == RopeStyle::kInterleaved, f, "unknown style");
  if (ldx == 0) ldx = heads * head_stride;
  for (std::size_t i = 0; i < tokens; ++i) t.rope(style, x + i * ldx, heads, head_stride, rotary_dim, cos_sin + i * rotary_dim);
}

void rope_apply(RopeStyle style, float* x, std::size_t tokens, std::size_t ldx, std::size_t heads,
                std::size_t head_stride, std::size_t rotary_dim, const float* cos_sin) {
  rope_apply(default_isa(), style, x, tokens, ldx, heads, head_stride, rotary_dim, cos_sin);
}

// ---------------------------------------------------------------------------
// KV cache and attention

std::size_t kv_cache_bytes(DType dtype, std::size_t n_kv_heads, std::size_t k_dim, std::size_t v_dim,
                           std::size_t capacity) {
  return n_kv_heads * capacity * (k_dim + v_dim) * dtype_size(dtype);
}

KvCacheView make_kv_cache_view(DType dtype, std::size_t n_kv_heads, std::size_t k_dim, std::size_t v_dim,
                               std::size_t capacity, void* k, void* v) {
  KvCacheView view;
  view.dtype = dtype;
  view.n_kv_heads = n_kv_heads;
  view.k_dim = k_dim;
  view.v_dim = v_dim;
  view.capacity = capacity;
  view.k = k;
  view.k_head_stride = capacity * k_dim;
  view.k_position_stride = k_dim;
  view.v = v;
  view.v_head_stride = capacity * v_dim;
  view.v_position_stride = v_dim;
  return view;
}

namespace {
void check_cache(const char* f, const KvCacheView& c) {
  require_dtype(c.dtype, f);
  require(c.n_kv_heads > 0 && c.k_dim > 0 && c.v_dim > 0 && c.capacity > 0, f, "empty KV cache shape");
  require(c.k != nullptr && c.v != nullptr, f, "KV cache pointers are null");
}
}  // namespace

void kv_cache_store(Isa isa, const KvCacheView& cache, std::size_t first_position, std::size_t count,
                    const float* k, std::size_t ldk, const float* v, std::size_t ldv) {
  table_for(isa);
  const char* f = "kv_cache_store";
  check_cache(f, cache);
  if (count == 0) return;
  require(count <= cache.capacity, f, "more positions than the cache holds");
  require(k != nullptr, f, "k is null");
  if (ldk == 0) ldk = cache.n_kv_heads * cache.k_dim;
  if (ldv == 0) ldv = cache.n_kv_heads * cache.v_dim;
  require(ldk >= cache.n_kv_heads * cache.k_dim, f, "ldk smaller than a token's keys");
  require(v == nullptr || ldv >= cache.n_kv_heads * cache.v_dim, f, "ldv smaller than a token's values");
  const std::size_t element = dtype_size(cache.dtype);
  for (std::size_t t = 0; t < count; ++t) {
    const std::size_t slot = (first_position + t) % cache.capacity;
    for (std::size_t h = 0; h < cache.n_kv_heads; ++h) {
      convert_row_from_f32(cache.dtype, k + t * ldk + h * cache.k_dim,
                           static_cast<std::uint8_t*>(cache.k) +
                               (h * cache.k_head_stride + slot * cache.k_position_stride) * element,
                           cache.k_dim);
      if (v) {
        convert_row_from_f32(cache.dtype, v + t * ldv + h * cache.v_dim,
                             static_cast<std::uint8_t*>(cache.v) +
                                 (h * cache.v_head_stride + slot * cache.v_position_stride) * element,
                             cache.v_dim);
      }
    }
  }
}

void kv_cache_store(const KvCacheView& cache, std::size_t first_position, std::size_t count, const float* k,
                    std::size_t ldk, const float* v, std::size_t ldv) {
  kv_cache_store(default_isa(), cache, first_position, count, k, ldk, v, ldv);
}

namespace {
// Queries per attention task: enough work per task, few enough for balance.
constexpr std::size_t kAttentionQueryBlock = 16;

struct AttentionContext {
  const KernelTable* table;
  AttentionTask base;
  std::size_t m;
  std::size_t heads_per_kv;
  std::size_t head_chunks;
  std::size_t query_blocks;
};
}  // namespace

void attention(Isa isa, const float* q, std::size_t m, std::size_t ldq, std::size_t first_position,
               const KvCacheView& cache, const AttentionParams& params, float* out, std::size_t ldo,
               ThreadPool* pool, MatmulPrecision precision) {
  const KernelTable& table = table_for(isa);
  const char* f = "attention";
  check_cache(f, cache);
  require(params.n_heads > 0 && params.n_heads % cache.n_kv_heads == 0, f,
          "n_heads must be a positive multiple of n_kv_heads");
  if (m == 0) return;
  require(q != nullptr && out != nullptr, f, "q or out is null");
  if (ldq == 0) ldq = params.n_heads * cache.k_dim;
  if (ldo == 0) ldo = params.n_heads * cache.v_dim;
  require(ldq >= params.n_heads * cache.k_dim, f, "ldq smaller than a query's heads");
  require(ldo >= params.n_heads * cache.v_dim, f, "ldo smaller than an output's heads");
  const std::size_t last = first_position + m - 1;
  const std::size_t oldest = attention_first_key(params, first_position);
  require(last - oldest + 1 <= cache.capacity, f,
          "the cache capacity is too small for the positions these queries see");

  AttentionContext c;
  c.table = &table;
  c.base.q = q;
  c.base.ldq = ldq;
  c.base.out = out;
  c.base.ldo = ldo;
  c.base.first_position = first_position;
  c.base.cache = &cache;
  c.base.params = &params;
  c.base.precision = precision;
  c.m = m;
  c.heads_per_kv = params.n_heads / cache.n_kv_heads;
  c.head_chunks = (c.heads_per_kv + kAttentionMaxHeadsPerTask - 1) / kAttentionMaxHeadsPerTask;
  c.query_blocks = (m + kAttentionQueryBlock - 1) / kAttentionQueryBlock;
  const AttentionContext* context = &c;
  parallel_for(pool, cache.n_kv_heads * c.head_chunks * c.query_blocks, [context](std::size_t index) {
    const AttentionContext& ctx = *context;
    AttentionTask task = ctx.base;
    const std::size_t query_block = index % ctx.query_blocks;
    const std::size_t head_chunk = (index / ctx.query_blocks) % ctx.head_chunks;
    task.kv_head = index / (ctx.query_blocks * ctx.head_chunks);
    task.query_begin = query_block * kAttentionQueryBlock;
    task.query_end = task.query_begin + kAttentionQueryBlock < ctx.m ? task.query_begin + kAttentionQueryBlock : ctx.m;
    const std::size_t first_head = task.kv_head * ctx.heads_per_kv;
    task.head_begin = first_head + head_chunk * kAttentionMaxHeadsPerTask;
    const std::size_t end = task.head_begin + kAttentionMaxHeadsPerTask;
    task.head_end = end < first_head + ctx.heads_per_kv ? end : first_head + ctx.heads_per_kv;
    ctx.table->attention(task);
  });
}

void attention(const float* q, std::size_t m, std::size_t ldq, std::size_t first_position, const KvCacheView& cache,
               const AttentionParams& params, float* out, std::size_t ldo, ThreadPool* pool,
               MatmulPrecision precision) {
  attention(default_isa(), q, m, ldq, first_position, cache, params, out, ldo, pool, precision);
}

}  // namespace zipmoe::kernels

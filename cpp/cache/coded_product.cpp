#include "cache/coded_product.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/parallel.h"

namespace zipmoe::cache {

namespace {

using Clock = std::chrono::steady_clock;

// Straddling rows of a tensor of `rows` x `cols` in segments of `s` elements:
// the rows that contain a segment start other than element 0. Increasing.
std::vector<std::size_t> straddling_rows(std::size_t rows, std::size_t cols, std::size_t s) {
  std::vector<std::size_t> out;
  const std::size_t total = rows * cols;
  for (std::size_t start = s; start < total; start += s) {
    if (start % cols == 0) continue;
    const std::size_t row = start / cols;
    if (out.empty() || out.back() != row) out.push_back(row);
  }
  return out;
}

std::size_t straddling_count(std::size_t rows, std::size_t cols, std::size_t s) {
  return straddling_rows(rows, cols, s).size();
}

// The rows of a tensor: its first dimension (the product's output features).
std::size_t rows_of(const TensorInfo& t) { return t.shape.empty() ? 1 : static_cast<std::size_t>(t.shape[0]); }
std::size_t cols_of(const TensorInfo& t) {
  const std::size_t rows = rows_of(t);
  return rows ? static_cast<std::size_t>(t.num_elements) / rows : 0;
}

// The job's bias from row `first` on, `count` rows.
kernels::WeightVector bias_rows(const kernels::WeightVector& bias, std::size_t first, std::size_t count) {
  if (!bias.data) return bias;
  kernels::WeightVector out = bias;
  out.data = static_cast<const std::uint8_t*>(bias.data) + first * dtype_size(bias.dtype);
  out.size = count;
  return out;
}

// One job for `rows` complete rows of W starting at row `first`, found at `weights`.
kernels::LinearJob rows_job(const kernels::LinearJob& job, std::size_t first, std::size_t rows, const void* weights) {
  kernels::LinearJob out = job;
  out.weight.data = weights;
  out.weight.rows = rows;
  out.ldy = job.ldy ? job.ldy : job.weight.rows;
  out.y = job.y + first;
  out.bias = bias_rows(job.bias, first, rows);
  return out;
}

}  // namespace

void CodedProductLimits::cover(const TensorInfo& t, std::uint32_t segment_symbols) {
  const std::size_t rows = rows_of(t), cols = cols_of(t), size = dtype_size(t.dtype);
  const std::size_t s = std::min<std::size_t>(segment_symbols, t.num_elements);
  segment_bytes = std::max(segment_bytes, s * size);
  const std::size_t straddling = straddling_count(rows, cols, segment_symbols);
  straddling_bytes = std::max(straddling_bytes, straddling * cols * size);
  straddling_rows = std::max(straddling_rows, straddling);
  max_cols = std::max(max_cols, cols);
}

bool CodedProductLimits::covers(const TensorInfo& t, std::uint32_t segment_symbols, std::size_t rows) const {
  if (segment_symbols == 0 || rows > max_rows || t.dtype == DType::kU8) return false;
  const std::size_t cols = cols_of(t), size = dtype_size(t.dtype);
  const std::size_t s = std::min<std::size_t>(segment_symbols, t.num_elements);
  const std::size_t straddling = straddling_count(rows_of(t), cols, segment_symbols);
  return s * size <= segment_bytes && cols <= max_cols && straddling * cols * size <= straddling_bytes &&
         straddling <= straddling_rows;
}

std::uint32_t coded_segment_symbols(const std::uint8_t* exponent_chunk, std::size_t size) {
  if (exponent_chunk == nullptr || size < codec::kCodedPlaneHeaderSize) return 0;
  std::uint32_t s;
  std::memcpy(&s, exponent_chunk + 4, 4);  // little-endian on every supported CPU (docs/FORMAT.md)
  return s;
}

namespace {

// The workspace a slot needs: a batch of one-row jobs, one per straddling row
// (all sharing their input), of max_rows input rows of max_cols, in the
// largest input layout.
std::size_t workspace_bytes(const CodedProductLimits& limits, Isa isa) {
  if (limits.max_cols == 0) return 0;
  std::vector<float> row(1);
  kernels::LinearJob job;
  job.x = row.data();
  job.m = limits.max_rows;
  job.weight = {row.data(), DType::kF32, 1, limits.max_cols};
  job.y = row.data();
  std::vector<kernels::LinearJob> jobs(std::max<std::size_t>(limits.straddling_rows, 1), job);
  std::size_t bytes = 0;
  for (auto precision : {kernels::MatmulPrecision::kExact, kernels::MatmulPrecision::kFast}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (kernels::LinearJob& j : jobs) j.weight.dtype = dtype;
      bytes = std::max(bytes, kernels::linear_workspace_bytes(isa, jobs.data(), jobs.size(), precision));
    }
  }
  return bytes;
}

}  // namespace

std::uint64_t CodedProducts::bytes_for(const CodedProductLimits& limits, Isa isa) {
  const std::uint64_t per_thread = MemoryBlock::charged_size(limits.segment_bytes) + workspace_bytes(limits, isa);
  return std::uint64_t(std::max(limits.threads, 1)) * per_thread +
         MemoryBlock::charged_size(std::max<std::size_t>(limits.straddling_bytes, 1));
}

CodedProducts::~CodedProducts() {
  if (ledger_ && workspace_charged_) ledger_->remove(MemoryCategory::kExperts, workspace_charged_);
}

Status CodedProducts::allocate(MemoryLedger* ledger, const CodedProductLimits& limits, Isa isa) {
  limits_ = limits;
  ledger_ = ledger;
  const int threads = std::max(limits.threads, 1);
  const std::size_t workspace = workspace_bytes(limits, isa);
  slots_.resize(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    Slot& slot = slots_[static_cast<std::size_t>(t)];
    ZIPMOE_RETURN_IF_ERROR(slot.segment.allocate(ledger, std::max<std::size_t>(limits.segment_bytes, 1)));
    ZIPMOE_RETURN_IF_ERROR(ledger->reserve(MemoryCategory::kExperts, workspace));
    workspace_charged_ += workspace;
    slot.workspace.reserve(workspace);
    free_slots_.push_back(threads - 1 - t);
  }
  return straddling_.allocate(ledger, std::max<std::size_t>(limits.straddling_bytes, 1));
}

std::uint64_t CodedProducts::charged_bytes() const {
  std::uint64_t bytes = workspace_charged_ + straddling_.charged();
  for (const Slot& slot : slots_) bytes += slot.segment.charged();
  return bytes;
}

int CodedProducts::take_slot() {
  const std::lock_guard<std::mutex> lock(slots_mutex_);
  const int slot = free_slots_.back();  // a pool never runs more calls at once than it has threads
  free_slots_.pop_back();
  return slot;
}

void CodedProducts::give_slot(int slot) {
  const std::lock_guard<std::mutex> lock(slots_mutex_);
  free_slots_.push_back(slot);
}

Status CodedProducts::multiply(const format::ContainerFile& file, const TensorInfo& tensor,
                               const std::uint8_t* exponent_chunk, const std::uint8_t* sm_chunk,
                               const kernels::LinearJob& job, kernels::MatmulPrecision precision, Isa isa,
                               ThreadPool* pool, std::uint64_t* decode_ns) {
  const ChunkInfo& ec = file.chunks()[tensor.exponent_chunk];
  const ChunkInfo& sc = file.chunks()[tensor.sm_chunk];
  codec::CodedPlane plane;
  ZIPMOE_RETURN_IF_ERROR(file.parse_chunks(tensor, exponent_chunk, static_cast<std::size_t>(ec.stored_size),
                                           static_cast<std::size_t>(sc.stored_size), &plane));
  const std::size_t rows = job.weight.rows, cols = job.weight.cols, size = dtype_size(tensor.dtype);
  if (rows * cols != tensor.num_elements || job.weight.dtype != tensor.dtype) {
    return Status::InvalidArgument(file.path() + ": " + tensor.name + ": a product of " + std::to_string(rows) +
                                   " x " + std::to_string(cols) + " does not match the tensor");
  }
  if (!limits_.covers(tensor, plane.segment_symbols(), job.m) ||
      (pool && static_cast<std::size_t>(pool->num_threads()) > slots_.size())) {
    return Status::Internal(tensor.name + ": coded product beyond the scratch it was given");
  }
  const std::size_t s_elements = plane.segment_symbols();
  const std::vector<std::size_t> straddling = straddling_rows(rows, cols, s_elements);
  std::vector<std::uint64_t> segment_ns(plane.num_segments(), 0);

  ZIPMOE_RETURN_IF_ERROR(parallel_for_status(pool, plane.num_segments(), [&](std::size_t s) -> Status {
    const std::size_t first = s * s_elements, count = plane.segment_count(s), end = first + count;
    const int index = take_slot();
    struct Give {
      CodedProducts* self;
      int slot;
      ~Give() { self->give_slot(slot); }
    } give{this, index};
    Slot& slot = slots_[static_cast<std::size_t>(index)];
    // The SM bytes of the segment's elements, merged into the slot's buffer.
    codec::MergeTarget target =
        codec::make_merge_target(tensor.dtype, sm_chunk, static_cast<std::size_t>(tensor.num_elements), slot.segment.data());
    target.sm_hi += first;
    if (target.sm_lo) target.sm_lo += 2 * first;
    const auto start = Clock::now();
    ZIPMOE_RETURN_IF_ERROR(plane.decode_segment_at(s, target, isa));
    segment_ns[s] = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    // The rows complete in this segment, multiplied while they are in cache.
    const std::size_t first_row = (first + cols - 1) / cols, end_row = end / cols;
    if (end_row > first_row) {
      const kernels::LinearJob part =
          rows_job(job, first_row, end_row - first_row, slot.segment.data() + (first_row * cols - first) * size);
      kernels::linear(isa, part, nullptr, &slot.workspace, precision);
    }
    // Pieces of straddling rows, kept for the end.
    for (std::size_t row = first / cols; row * cols < end && row < rows; ++row) {
      const std::size_t row_start = row * cols, row_end = row_start + cols;
      if (row_start >= first && row_end <= end) continue;
      const std::size_t k = static_cast<std::size_t>(
          std::lower_bound(straddling.begin(), straddling.end(), row) - straddling.begin());
      const std::size_t from = std::max(first, row_start), to = std::min(end, row_end);
      std::memcpy(straddling_.data() + (k * cols + (from - row_start)) * size,
                  slot.segment.data() + (from - first) * size, (to - from) * size);
    }
    return Status::Ok();
  }));

  if (!straddling.empty()) {
    std::vector<kernels::LinearJob> jobs;
    jobs.reserve(straddling.size());
    for (std::size_t k = 0; k < straddling.size(); ++k) {
      jobs.push_back(rows_job(job, straddling[k], 1, straddling_.data() + k * cols * size));
    }
    kernels::linear_batch(isa, jobs.data(), jobs.size(), pool, &slots_[0].workspace, precision);
  }
  if (decode_ns) {
    for (std::uint64_t ns : segment_ns) *decode_ns += ns;
  }
  return Status::Ok();
}

}  // namespace zipmoe::cache

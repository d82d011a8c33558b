// CodedProducts: matrix products with weights that rest coded (a COMPRESSED
// expert's projections), decoded tile by tile into the product.
//
// y = x W^T (+ b) where W is one tensor of a container held as its two stored
// chunks (the coded exponent plane and the sign/mantissa plane). Instead of
// decoding the whole matrix to memory and reading it back for the product, each
// thread decodes one segment of the exponent plane (128 Ki elements: 256 KiB of
// BF16, which stays in its core's cache) into a scratch buffer and multiplies
// the rows of W it completes at once. Rows that straddle two segments are
// assembled from their pieces and multiplied last.
//
// Bit-identical to kernels::linear_batch over the decoded matrix, for every
// Isa, precision and thread count: each output element is the same kernel's dot
// product over the same whole row of W (kernels.h: a dot product's order
// depends only on K, never on the tiling).
//
// Memory: per thread, one decoded segment and a matmul workspace for up to
// `max_rows` input rows; one buffer of straddling rows. All charged to the
// ledger as kExperts (part of the cache's working set).
//
// Thread-safety: one multiply() at a time (it runs on the pool itself).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common/memory_block.h"
#include "common/memory_ledger.h"
#include "common/status.h"
#include "format/container_file.h"
#include "kernels/kernels.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::cache {

struct CodedProductLimits {
  int threads = 1;                   // the pool's threads
  std::size_t segment_bytes = 0;     // the largest decoded segment of the tensors to multiply
  std::size_t straddling_bytes = 0;  // the most bytes of rows straddling segments in one tensor
  std::size_t straddling_rows = 0;   // the most rows straddling segments in one tensor
  std::size_t max_cols = 0;          // the longest row (elements)
  std::size_t max_rows = 1;          // the most input rows (tokens) of one product

  // Grows the limits to cover `tensor` coded in segments of `segment_symbols`.
  void cover(const TensorInfo& tensor, std::uint32_t segment_symbols);
  // Whether they cover `tensor` coded so, for products of `rows` input rows.
  bool covers(const TensorInfo& tensor, std::uint32_t segment_symbols, std::size_t rows) const;
};

// The segment size of a coded exponent plane from its header (0 if `size` is too short).
std::uint32_t coded_segment_symbols(const std::uint8_t* exponent_chunk, std::size_t size);

class CodedProducts {
 public:
  CodedProducts() = default;
  ~CodedProducts();
  CodedProducts(const CodedProducts&) = delete;
  CodedProducts& operator=(const CodedProducts&) = delete;

  // Bytes allocate() would charge for `limits` under `isa`.
  static std::uint64_t bytes_for(const CodedProductLimits& limits, Isa isa);

  Status allocate(MemoryLedger* ledger, const CodedProductLimits& limits, Isa isa);
  bool allocated() const { return !slots_.empty(); }
  const CodedProductLimits& limits() const { return limits_; }
  std::uint64_t charged_bytes() const;

  // y = x W^T (+ b) as `job` describes it (x, m <= max_rows, ldx, bias, y, ldy,
  // accumulate; job.weight gives W's shape and dtype, its data is ignored) with
  // W = `tensor` from its stored chunks, which were checked before (their
  // structure is checked again). *decode_ns (if not null) gets the decoding
  // time, summed over the threads.
  Status multiply(const format::ContainerFile& file, const TensorInfo& tensor, const std::uint8_t* exponent_chunk,
                  const std::uint8_t* sm_chunk, const kernels::LinearJob& job, kernels::MatmulPrecision precision,
                  Isa isa, ThreadPool* pool, std::uint64_t* decode_ns);

 private:
  struct Slot {
    MemoryBlock segment;  // one decoded segment
    kernels::Workspace workspace;
  };
  int take_slot();
  void give_slot(int slot);

  CodedProductLimits limits_;
  MemoryLedger* ledger_ = nullptr;
  std::uint64_t workspace_charged_ = 0;
  std::vector<Slot> slots_;
  MemoryBlock straddling_;  // rows that straddle segments, assembled
  std::mutex slots_mutex_;
  std::vector<int> free_slots_;
};

}  // namespace zipmoe::cache

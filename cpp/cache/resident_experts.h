// ResidentExpertProvider: every routed expert decoded into RAM at load, every
// request served at once (a model loaded without a memory budget).
//
// Thread-safety: as ExpertProvider (one request at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cache/expert_layout.h"
#include "cache/expert_provider.h"
#include "common/memory_ledger.h"
#include "common/status.h"
#include "format/container_file.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace zipmoe::cache {

class ResidentExpertProvider final : public ExpertProvider {
 public:
  // Finds every expert projection of `shapes` in `reader` (FormatError status for
  // one that is missing or has the wrong shape), then decodes them all in
  // parallel on `pool`, into aligned RAM charged to `ledger` as kExperts.
  static Status create(const format::ContainerFile& reader, const ExpertShapes& shapes, ThreadPool* pool,
                       MemoryLedger* ledger, Isa isa, std::unique_ptr<ResidentExpertProvider>* out);
  // The bytes create() charges to the ledger for experts laid out as `table`.
  static std::uint64_t bytes_for(const ExpertTable& table);

  Status acquire(ExpertRequest* request) override;
  Status wait_ready(ExpertRequest* request, std::uint32_t* ready, std::size_t* count) override;
  void release(ExpertRequest* request) override;
  std::uint64_t resident_bytes() const override { return bytes_; }
  // Every request is a FULL hit; counted per MoE layer.
  void collect_stats(ExpertCacheStats* out) const override;
  void reset_stats() override;

 private:
  ResidentExpertProvider() = default;

  // Requests per layer (forward thread only; read between requests).
  std::vector<std::uint64_t> requests_;

  struct ResidentExpert {
    LedgerBuffer buffer;  // gate | up | down, each 64-byte aligned
    ExpertWeights weights;
  };
  std::vector<std::vector<ResidentExpert>> layers_;  // [layer][expert]; empty for dense layers
  std::uint64_t bytes_ = 0;
};

}  // namespace zipmoe::cache

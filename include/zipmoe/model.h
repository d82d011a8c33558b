// zipmoe/model.h - run a model stored in a .zmoe container on the CPU.
//
//   zipmoe::Model model = zipmoe::Model::load("qwen.zmoe");
//   std::vector<float> logits = model.logits({1, 2, 3});     // [3 * vocab], fresh sequence
//   std::vector<float> next = model.eval({4});               // [1 * vocab], appended to it
//
// Families: llama, qwen2 (dense), qwen2_moe, qwen3_moe, mixtral, olmoe,
// deepseek_v2, deepseek_v3, gpt_oss, granitemoe, phimoe. Weights are used in the
// dtype they are stored in (BF16, F16, F32), bit for bit whichever codec stored
// them; activations and sums are F32.
//
// Reproducibility. With either precision, logits are bit-identical for any
// thread count, memory budget, cache policy, tier set, codec and I/O mode on one
// machine and ISA path. Precision::kExact adds two guarantees:
//   - the same bits on every ISA path (scalar, AVX2, AVX-512, NEON) and every
//     machine and build: every kernel follows one canonical evaluation order
//     (cpp/kernels/canonical.h) that each path implements exactly, using neither
//     the C library's exp nor compiler-chosen fmas;
//   - a token's logits do not depend on how the sequence is split into eval()
//     calls (how many tokens share its step).
// So with kExact a seed samples the same text everywhere. Two caveats, both
// outside the kernels: the RoPE angles are computed from the C library's
// double-precision cos, sin, pow and log, rounded to float (they agree between
// C libraries unless a value lies within about 2^-29 of a float rounding
// boundary), and the sampler's exp (zipmoe/sampler.h). Results involving NaN are
// not covered.
// Precision::kFast lets each ISA path sum in its own fastest order (the last
// bits of logits then differ between paths) and, on CPUs with AVX512_BF16, rounds
// activations to BF16 for the BF16 matrix products of multi-token steps (so a
// prompt in one call and in pieces differ in the last bits). Either difference can
// change a sampled token where two candidates are nearly tied.
// PhiMoE always runs as kExact (its sparsemixer router thresholds logits, which
// rounded activations would cross).
//
// Memory: the model holds every dense weight, a KV cache of max_context
// positions and scratch for `batch` tokens. Routed experts are either all
// decoded in RAM (no memory_budget), or streamed from the container through a
// tiered expert cache that keeps everything the engine holds within
// memory_budget (docs/CACHE.md): each expert is FULL (decoded), COMPRESSED
// (both planes in RAM), SM (sign/mantissa plane in RAM), E (coded exponent
// plane in RAM) or ABSENT, and a fetch scheduler reads, decodes and hands
// experts to the forward pass as they become ready. Results are bit-identical
// for every budget, policy, tier set, thread count and I/O mode. memory()
// counts each byte by category; stats() reports the cache's work.
//
// Thread-safety: a Model may be used from several threads; calls that run or
// change the sequence (logits, eval, reset) are serialized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "zipmoe/cache.h"
#include "zipmoe/container.h"
#include "zipmoe/error.h"
#include "zipmoe/export.h"
#include "zipmoe/types.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// How matrix products and attention sum (see the top of this file and
// MatmulPrecision in the kernels).
enum class Precision : std::uint8_t {
  kFast = 0,   // each ISA path's fastest order; BF16 dot products for multi-token steps on AVX512_BF16
  kExact = 1,  // F32 in one canonical order: the same bits on every ISA path and machine
};
// "fast", "exact".
const char* precision_name(Precision precision);
bool parse_precision(const std::string& name, Precision* precision);

struct ModelOptions {
  int threads = 0;                 // threads of the model's pool, the caller's included; <= 0: one per core;
                                   // above ThreadPool::kMaxThreads (1024): InvalidArgumentError
  std::size_t max_context = 0;     // positions of the KV cache; 0: min(max_position_embeddings, 4096)
  std::optional<Isa> isa;          // kernel path; default: ZIPMOE_ISA or the best this CPU runs
  Precision precision = Precision::kFast;
  DType kv_cache_dtype = DType::kF32;  // F32, or BF16 / F16 to halve the cache
  std::size_t batch = 0;           // most tokens per forward step when prefilling; 0: 256
  IoMode io_mode = IoMode::kPread;  // how the container is read (at load, and while streaming experts)

  // Expert streaming. memory_budget == 0: every expert decoded at load (no cache).
  // Otherwise the budget in bytes for everything the engine holds (dense weights,
  // KV cache, scratch, every expert tier and fetch buffer); a budget below the
  // minimum is a BudgetError at load naming the minimum.
  std::uint64_t memory_budget = 0;
  CachePolicy cache_policy = CachePolicy::kAffinity;
  bool prefetch = true;            // next-layer prefetch from a gate-ahead guess
  // Resting states the cache may use, a mask of expert_tier_bit(); ABSENT is
  // always allowed. E.g. expert_tier_bit(kFull) | expert_tier_bit(kSm) is the
  // ZipMoE paper's configuration.
  std::uint8_t allowed_tiers = kAllExpertTiers;
  std::string routing_profile;     // a routing profile JSON file (`zipmoe profile`); empty: none
  double storage_bandwidth = 0;    // bytes/s the planner assumes for storage; 0: measured at load
  double decode_throughput = 0;    // decoded bytes/s of one thread; 0: measured at load
  // false: fetch and decode a layer's experts in the order they are asked for
  // (a baseline for benchmarks) instead of the scheduler's order.
  bool reorder_fetches = true;
  // Threads reading chunks for the cache (in the scheduler's order); 0: 2, so
  // that a read is queued on the drive while a reader waits for a busy core.
  int io_threads = 0;
};

// Bytes held, by category (one MemoryLedger counts every allocation).
struct MemoryUse {
  std::uint64_t dense_weights = 0;  // attention, norms, embeddings, routers, shared experts
  std::uint64_t experts = 0;        // routed experts
  std::uint64_t kv_cache = 0;
  std::uint64_t scratch = 0;        // activations, matmul workspace (not growing with the context)
  std::uint64_t total = 0;
  std::uint64_t peak = 0;           // the highest total since load
};

// What the engine read from the container's config.
struct ModelInfo {
  std::string architecture;  // HF model_type, e.g. "qwen2_moe"
  std::size_t vocab_size = 0;
  std::size_t hidden_size = 0;
  std::size_t num_layers = 0;
  std::size_t num_heads = 0;
  std::size_t num_kv_heads = 0;
  std::size_t num_experts = 0;        // 0 for dense models
  std::size_t experts_per_token = 0;
  std::size_t num_moe_layers = 0;
  std::size_t max_position_embeddings = 0;
  std::size_t max_context = 0;        // KV cache positions of this Model
  std::string config_json;            // the container's HF-style config, as JSON text
};

class Model {
 public:
  // Opens `path`, checks its config and tensors, and decodes every weight into
  // RAM on the model's thread pool. Throws UnsupportedModelError (an
  // architecture or feature the engine cannot run; the message names the
  // supported ones), FormatError / ChecksumError (a damaged or inconsistent
  // container, or one holding tensors its architecture does not use),
  // IoError, InvalidArgumentError (bad options), BudgetError (a memory_budget
  // below the minimum, or a minimum beyond the memory available to the process;
  // the message states it, itemized). Both are found from the container's index
  // and config before any weight is read or buffer allocated.
  //
  // With a memory_budget, logits() and eval() read experts from the file while
  // they run: a file damaged, truncated or rewritten in place under a running
  // model fails that call with ChecksumError / FormatError / IoError (nothing
  // crashes or hangs; the model stays usable, e.g. after the file is restored).
  // With IoMode::kMmap the size is checked before each read, but a truncation
  // racing with the read itself can still raise SIGBUS: prefer pread or direct
  // for files that may change.
  static Model load(const std::string& path, const ModelOptions& options = ModelOptions());

  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Starts a fresh sequence with tokens[0, count) and writes their logits,
  // [count, vocab] row-major, to `logits` (count * vocab floats).
  void logits(const std::int32_t* tokens, std::size_t count, float* logits);
  std::vector<float> logits(const std::vector<std::int32_t>& tokens);

  // Appends tokens[0, count) to the current sequence (its KV cache is kept) and
  // writes their logits: [count, vocab], or only the last token's [1, vocab]
  // when last_only. Throws InvalidArgumentError for an empty input, a token id
  // outside [0, vocab) or a sequence longer than max_context (nothing is run
  // then). If a step fails midway, the tokens of the steps that completed stay
  // in the sequence (position() says how many).
  void eval(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only = false);
  std::vector<float> eval(const std::vector<std::int32_t>& tokens, bool last_only = false);

  // Forgets the sequence (position() becomes 0).
  void reset();

  // The expert cache's counters (every MoE model has them; without a budget the
  // experts are resident and every request is a FULL hit).
  ExpertCacheStats stats() const;
  void reset_stats();
  // Per MoE layer, the tokens routed to each expert since load, as a routing
  // profile JSON document (docs/CACHE.md); reading it back with
  // ModelOptions::routing_profile lets the planner place experts by frequency.
  std::string routing_profile_json() const;

  // Tokens in the current sequence.
  std::size_t position() const;
  const ModelInfo& info() const;
  MemoryUse memory() const;
  int num_threads() const;
  Isa isa() const;
  const std::string& path() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zipmoe
ZIPMOE_PUBLIC_END

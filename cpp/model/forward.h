// The forward pass of a decoder-only transformer, one readable function per step
// (in the spirit of llama2.c), over the n <= batch tokens of one step. A step
// holds one or more segments: each is a run of tokens of one sequence at
// consecutive positions, with that sequence's state (KV cache) beside it, so
// that one step can carry a prompt chunk of one sequence together with the
// single decode tokens of others:
//
//   x = embed(tokens of every segment)                  [n, hidden]
//   for each layer:
//     x += attention(norm(x))       grouped (GQA) or latent (MLA); per segment over
//                                   its own KV cache, which it appends to
//     x += ffn(norm(x))             dense SwiGLU, or MoE: router -> experts from the
//                                   ExpertProvider (+ shared expert), over all n rows
//   logits = output(norm(x))                            [rows wanted, vocab]
//
// Every matrix product goes through kernels::linear_batch, with the independent
// products of a step in one parallel pass (q/k/v; the router; the gate/up of
// every expert and of the shared expert; the down of every expert and of the
// shared expert). The rows of every segment share those products; the MoE
// layers group all of the step's tokens per expert, acquire each expert once
// per step (the provider sees the union, with how many tokens want each) and
// run one matmul per expert. All buffers are allocated once, for `batch`
// tokens; a step allocates nothing (the matmul workspace only grows past its
// initial reservation if a step needs more).
//
// Results are bit-identical for any thread count (the kernels guarantee it per
// call, and everything between them is single-threaded or split by rows), for
// any order in which the provider delivers experts (each expert writes its own
// rows; the weighted sum runs in a fixed order afterwards), and, with
// MatmulPrecision::kExact, for any split of a sequence into steps, any company
// of other segments in a step, and on every Isa path (every kernel then follows
// kernels/canonical.h, whose arithmetic per row does not depend on the row count).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cache/expert_provider.h"
#include "cache/routing_profile.h"
#include "common/memory_ledger.h"
#include "common/status.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/sequence_state.h"
#include "model/weights.h"
#include "zipmoe/thread_pool.h"

namespace zipmoe::model {

struct ForwardOptions {
  Isa isa = Isa::kScalar;
  kernels::MatmulPrecision precision = kernels::MatmulPrecision::kFast;
  std::size_t batch = 256;  // most tokens per step
  std::size_t max_positions = 0;  // the highest position + 1 a sequence may reach (longrope picks its factors by it)
  // Gate-ahead: after routing a MoE layer, apply the next MoE layer's router to
  // this layer's hidden state and hand the experts it picks to the provider's
  // prefetch() (a guess: nothing computed depends on it).
  bool gate_ahead = false;
};

// Which logits a segment wants from its step.
enum class SegmentLogits : std::uint8_t {
  kNone,  // none (a prompt chunk before the prompt's end)
  kLast,  // its last token's row
  kAll,   // a row per token
};

// One sequence's part of a step: tokens[0, n) at positions [position, position + n)
// of `state` (position + n <= state->capacity()).
struct StepSegment {
  SequenceState* state = nullptr;
  const std::int32_t* tokens = nullptr;
  std::size_t n = 0;
  std::size_t position = 0;
  SegmentLogits logits = SegmentLogits::kLast;
};

class Forward {
 public:
  Forward() = default;
  ~Forward();
  Forward(const Forward&) = delete;
  Forward& operator=(const Forward&) = delete;

  // Allocates every buffer (charged to the ledger as kScratch). The referenced
  // objects must outlive this one.
  Status init(const ModelConfig& config, const ModelWeights& weights, cache::ExpertProvider* experts,
              ThreadPool* pool, MemoryLedger* ledger, const ForwardOptions& options);

  // The bytes init() charges to the ledger as kScratch for `config` and
  // `options` (activations for options.batch tokens and the matrix products'
  // workspace), without allocating anything. It does not depend on the context
  // length: RoPE angles are computed for each step's positions.
  static std::uint64_t scratch_bytes(const ModelConfig& config, const ForwardOptions& options);

  // Runs the segments' tokens (n >= 1 each, ids < vocab, at most batch() in all,
  // each segment within its state's capacity and max_positions; a state appears
  // in at most one segment) and writes the rows of logits they want, in segment
  // order, to `logits` ([rows, vocab]; null when no segment wants any). Does not
  // touch the states' token lists (the caller records what was stored).
  // Returns the provider's error when it fails to deliver an expert (the step
  // is then abandoned and the positions it was to fill hold no meaning).
  Status step(const StepSegment* segments, std::size_t count, float* logits);
  // One segment: tokens[0, n) of `state` at `position`, logits of every token
  // (all_logits: [n, vocab]) or of the last one ([1, vocab]); null: none.
  Status step(SequenceState* state, const std::int32_t* tokens, std::size_t n, std::size_t position, float* logits,
              bool all_logits);

  std::size_t batch() const { return options_.batch; }

  // Every step adds its routing (tokens per expert per MoE layer) to `profile`
  // (null: none). The profile must outlive this object.
  void set_routing_profile(cache::RoutingProfile* profile) { routing_ = profile; }

 private:
  // Where each activation buffer lies in the scratch block, in floats.
  struct ScratchLayout {
    std::vector<std::pair<float* Forward::*, std::size_t>> offsets;
    std::size_t floats = 0;
  };
  static ScratchLayout lay_out_scratch(const ModelConfig& config, const ForwardOptions& options);
  // Bytes of matrix-product workspace the largest pass of a step needs.
  static std::size_t workspace_bytes(const ModelConfig& config, const ForwardOptions& options);

  // Steps of init().
  Status allocate_scratch();
  Status prepare_rope();
  void size_routing();
  Status reserve_workspace();

  // Steps of one forward pass, each over the n tokens of the step.
  void embed(const StepSegment* segments, std::size_t count);
  void norm(const NormWeights& weights, const float* in, float* out, std::size_t n);
  void attention_grouped(std::size_t layer, const StepSegment* segments, std::size_t count, std::size_t n);
  void attention_latent(std::size_t layer, const StepSegment* segments, std::size_t count, std::size_t n);
  // Moves the rows whose logits are wanted to the front of x_; returns how many.
  std::size_t keep_wanted_rows(const StepSegment* segments, std::size_t count);
  void normalize_queries_and_keys(std::size_t layer, std::size_t n, bool after_rope);
  // Llama 4's NoPE layers: rows [first_row, first_row + n) of q at positions [position, position + n).
  void scale_queries_by_position(std::size_t first_row, std::size_t n, std::size_t position);
  void ffn_dense(std::size_t layer, std::size_t n);
  Status ffn_moe(std::size_t layer, std::size_t n);
  void route(std::size_t layer, std::size_t n);
  void route_token(const FfnWeights& ffn, const float* logits, std::int32_t* experts, float* weights);
  void group_by_expert(std::size_t n);
  Status run_experts(std::size_t layer, const FfnWeights& ffn, std::size_t n);
  Status run_expert_group(const FfnWeights& ffn, std::size_t n, std::size_t ready, bool gathered, bool with_shared);
  // The experts of the group delivered coded (ExpertWeights::coded), multiplied
  // through the provider one projection at a time.
  Status multiply_coded(const FfnWeights& ffn, std::size_t ready, bool gathered, cache::ExpertProjection projection);
  void prefetch_next_layer(std::size_t layer, std::size_t n);
  void add_residual(const float* delta, std::size_t n);
  void output(std::size_t rows, float* logits);

  void linear(const kernels::LinearJob* jobs, std::size_t count);
  void linear(const kernels::LinearJob* jobs, std::size_t count, kernels::MatmulPrecision precision);
  // The pool for a call of `work` multiply-adds, or null (the caller's thread) for little work.
  ThreadPool* pool_for(std::size_t work) const;
  // Runs fn(first_row, row_count) over row blocks, in parallel when the work is large.
  template <typename Fn>
  void for_rows(std::size_t rows, std::size_t row_cost, Fn&& fn);

  float* scratch(std::size_t offset) { return scratch_.as<float>() + offset; }

  const ModelConfig* config_ = nullptr;
  const ModelWeights* weights_ = nullptr;
  cache::ExpertProvider* experts_ = nullptr;
  ThreadPool* pool_ = nullptr;
  MemoryLedger* ledger_ = nullptr;
  ForwardOptions options_;
  cache::RoutingProfile* routing_ = nullptr;
  kernels::Workspace workspace_;
  std::size_t workspace_charged_ = 0;

  // Activations, as offsets (in floats) into one scratch buffer; shapes for n tokens.
  LedgerBuffer scratch_;
  float* x_ = nullptr;          // [n, hidden]       the residual stream
  float* xn_ = nullptr;         // [n, hidden]       normalized input of a block
  float* q_ = nullptr;          // [n, heads * query head]
  float* k_ = nullptr;          // [n, kv_heads * head_dim]            (grouped)
  float* v_ = nullptr;          // [n, kv_heads * head_dim]            (grouped)
  float* q_lora_ = nullptr;     // [n, q_lora_rank]                    (latent)
  float* kv_latent_ = nullptr;  // [n, kv_lora_rank + rope]            (latent)
  float* q_latent_ = nullptr;   // [n, heads * (kv_lora_rank + rope)]  (latent)
  float* att_latent_ = nullptr; // [n, heads * kv_lora_rank]           (latent)
  float* att_ = nullptr;        // [n, heads * value head]
  float* ffn_gate_ = nullptr;   // [n, max(dense I, shared I)]
  float* ffn_up_ = nullptr;     // [n, max(dense I, shared I)]
  float* delta_ = nullptr;      // [n, hidden]       a block's output before the residual add
  float* shared_out_ = nullptr; // [n, hidden]
  float* router_logits_ = nullptr;  // [n, experts]
  float* shared_logit_ = nullptr;   // [n]
  float* router_work_ = nullptr;    // [experts * 2]  per-token routing scratch
  float* moe_in_ = nullptr;     // [n * k, hidden]   tokens gathered per expert
  float* moe_gate_ = nullptr;   // [n * k, expert I]
  float* moe_up_ = nullptr;     // [n * k, expert I]
  float* moe_out_ = nullptr;    // [n * k, hidden]
  float* ahead_xn_ = nullptr;   // [n, hidden]       gate-ahead: x normalized for the next MoE layer
  float* ahead_logits_ = nullptr;  // [n, experts]   gate-ahead: the next MoE layer's router logits
  float* rope_rows_ = nullptr;  // [n, rotary_dim]  cos | sin of each position of the step
  float* inv_freq_ = nullptr;   // [rotary_dim / 2]
  float rope_attention_factor_ = 1.0f;  // multiplies cos and sin (YaRN, longrope)

  // Routing of the step: token t's j-th expert and weight at [t * k + j], and the
  // row of its output in moe_out_ (rows grouped by expert, in expert id order).
  std::vector<std::int32_t> selected_;
  std::vector<float> selected_weight_;
  std::vector<std::uint32_t> selected_row_;
  std::vector<std::uint32_t> expert_rows_;   // per expert id: tokens routed to it
  std::vector<std::uint32_t> expert_first_;  // per request index: first row
  std::vector<std::uint32_t> expert_cursor_; // per expert id: next row to hand out
  std::vector<float> group_scores_;          // per expert group (DeepSeek routing)
  std::vector<std::uint32_t> ready_;
  std::vector<std::int32_t> next_moe_layer_;  // per layer: the next MoE layer, or -1
  std::vector<std::int32_t> ahead_selected_;  // [n * k]  gate-ahead routing
  std::vector<float> ahead_weight_;           // [n * k]
  std::vector<std::uint32_t> ahead_tokens_;   // per expert id
  std::vector<std::uint32_t> ahead_experts_;  // the guess, most tokens first
  std::vector<std::int32_t> topk_scratch_;
  cache::ExpertRequest request_;
  std::vector<kernels::LinearJob> jobs_;
  kernels::AttentionParams attention_params_;
};

}  // namespace zipmoe::model

// Context::Impl: the sequences of a zipmoe::Context (include/zipmoe/model.h),
// reached by the layers above the model (the generation loop) through
// Context::impl(). Its methods return a Status.
//
// Use. Whoever runs or changes the sequences holds the context first
// (acquire(), or a Use for the length of a call): a second holder gets
// Status Busy at once. A generation holds it from its first step to its end,
// so the calls in between (its steps) go to the *_held methods. position() and
// tokens() read under state_mutex and may be called by anyone at any time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/memory_ledger.h"
#include "common/status.h"
#include "model/model_impl.h"
#include "model/sequence_state.h"
#include "zipmoe/model.h"

namespace zipmoe {

struct Context::Impl {
  // Allocates the sequences (and, for contexts made after load, makes room for
  // them in the budget first: Model::Impl::make_room).
  static Status create(std::shared_ptr<Model::Impl> model, const ContextOptions& options, bool at_load,
                       std::unique_ptr<Impl>* out);
  ~Impl();

  // Takes the context for `who` (what it is, for the message a second user
  // gets), or Status Busy naming the holder.
  Status acquire(const std::string& who);
  void release();

  // Holds the context for the length of one call.
  class Use {
   public:
    Use(Impl* impl, const char* who) : impl_(impl), status_(impl->acquire(who)) {}
    ~Use() {
      if (status_.ok()) impl_->release();
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    const Status& status() const { return status_; }

   private:
    Impl* impl_;
    Status status_;
  };

  // The work; the caller holds the context.
  // Appends tokens to a sequence in steps of up to the model's batch: logits of
  // every token ([count, vocab]) or of the last one ([1, vocab]); null: none.
  Status eval_held(std::size_t sequence, const std::int32_t* tokens, std::size_t count, float* logits,
                   bool last_only);
  // Context::decode (checks included); *rows: the rows written.
  Status decode_held(const SequenceTokens* batch, std::size_t count, float* logits, std::size_t* rows);
  Status truncate_held(std::size_t sequence, std::size_t position);
  void reset_held(std::size_t sequence);

  Status check_sequence(std::size_t sequence) const;

  // Thread-safe reads.
  std::size_t position(std::size_t sequence) const;
  std::vector<std::int32_t> tokens(std::size_t sequence) const;

  std::shared_ptr<Model::Impl> model;
  std::size_t max_context = 0;
  std::size_t max_sequences = 0;
  std::uint64_t bytes = 0;  // charged for the sequences and logits rows
  std::vector<model::SequenceState> sequences;
  // One logits row per sequence ([max_sequences, vocab]), for the loops above
  // that step every sequence at once (zipmoe/generate.h).
  LedgerBuffer logits_rows;

 private:
  Status check_tokens(const std::int32_t* tokens, std::size_t count) const;

  void free_memory();

  // Whether its memory was taken from the expert cache's share (every context
  // made after load), to be given back when it ends.
  bool gives_back_ = false;
  mutable std::mutex state_mutex_;  // the sequences' token lists, for readers on other threads
  std::atomic<bool> busy_{false};
  std::mutex holder_mutex_;
  std::string holder_;
};

}  // namespace zipmoe

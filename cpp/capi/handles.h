// The live zipmoe_model and zipmoe_context handles, and the state behind a
// context. find_model / find_context check a handle and return shared
// ownership of its state for the duration of a call (InvalidArgumentError for
// NULL, a freed handle or a pointer the library never handed out).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "capi/model_state.h"
#include "zipmoe.h"

namespace zipmoe::capi {

// A context. What it holds of the engine (a zipmoe::Context of its own over
// the model's weights) is opened, used and closed by capi/generation.h.
struct ContextState {
  std::shared_ptr<ModelState> model;
  std::unique_ptr<Context> engine;  // set by open_sequence(), dropped by close_sequence()
  std::size_t max_context = 0;
  std::size_t batch = 0;
  std::int32_t max_sequences = 1;
  // Set for the duration of a call: a second call meanwhile is ZIPMOE_ERR_BUSY.
  std::atomic<bool> busy{false};
  // zipmoe_context_cancel: checked between tokens and forward steps.
  std::atomic<bool> cancel{false};
  // Per sequence, what its last generation did (written by the call that holds busy).
  std::vector<zipmoe_generation_stats> stats;

  ~ContextState();
};

// Holds a context's `busy` flag for one call (BusyError when another call has it)
// and clears a cancel request left from before the call.
class ContextUse {
 public:
  explicit ContextUse(ContextState* context);
  ~ContextUse();
  ContextUse(const ContextUse&) = delete;
  ContextUse& operator=(const ContextUse&) = delete;

 private:
  ContextState* context_;
};

zipmoe_model* add_model(std::shared_ptr<ModelState> state);
std::shared_ptr<ModelState> find_model(const zipmoe_model* handle);
std::shared_ptr<ModelState> remove_model(const zipmoe_model* handle);

zipmoe_context* add_context(std::shared_ptr<ContextState> state);
std::shared_ptr<ContextState> find_context(const zipmoe_context* handle);
std::shared_ptr<ContextState> remove_context(const zipmoe_context* handle);

}  // namespace zipmoe::capi

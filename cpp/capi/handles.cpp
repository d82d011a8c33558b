#include "capi/handles.h"

#include "capi/api_support.h"
#include "capi/generation.h"

namespace zipmoe::capi {

namespace {

// Never destroyed: handles an application did not free stay valid until the
// process ends, whatever the order of static destructors.
HandleTable<ModelState>& models() {
  static auto* table = new HandleTable<ModelState>();
  return *table;
}

HandleTable<ContextState>& contexts() {
  static auto* table = new HandleTable<ContextState>();
  return *table;
}

}  // namespace

ContextState::~ContextState() { close_sequence(*this); }

ContextUse::ContextUse(ContextState* context) : context_(context) {
  bool expected = false;
  if (!context_->busy.compare_exchange_strong(expected, true)) {
    throw BusyError("the context is in use by another call (a context runs one call at a time: use it from one "
                    "thread at a time, or give each thread its own)");
  }
  context_->cancel.store(false);
}

ContextUse::~ContextUse() { context_->busy.store(false); }

zipmoe_model* add_model(std::shared_ptr<ModelState> state) {
  return static_cast<zipmoe_model*>(models().add(std::move(state)));
}

std::shared_ptr<ModelState> find_model(const zipmoe_model* handle) {
  if (handle == nullptr) throw InvalidArgumentError("model is NULL");
  std::shared_ptr<ModelState> state = models().find(handle);
  if (!state) throw InvalidArgumentError("model is not a live zipmoe_model (freed already, or never loaded)");
  return state;
}

std::shared_ptr<ModelState> remove_model(const zipmoe_model* handle) { return models().remove(handle); }

zipmoe_context* add_context(std::shared_ptr<ContextState> state) {
  return static_cast<zipmoe_context*>(contexts().add(std::move(state)));
}

std::shared_ptr<ContextState> find_context(const zipmoe_context* handle) {
  if (handle == nullptr) throw InvalidArgumentError("ctx is NULL");
  std::shared_ptr<ContextState> state = contexts().find(handle);
  if (!state) throw InvalidArgumentError("ctx is not a live zipmoe_context (freed already, or never created)");
  return state;
}

std::shared_ptr<ContextState> remove_context(const zipmoe_context* handle) { return contexts().remove(handle); }

}  // namespace zipmoe::capi

// zipmoe::Context: sequences over a model's weights (include/zipmoe/model.h).
#include <algorithm>
#include <string>

#include "model/context_impl.h"

namespace zipmoe {

namespace {

std::string context_description(std::size_t sequences, std::size_t positions) {
  return "a context of " + std::to_string(sequences) + (sequences == 1 ? " sequence" : " sequences") + " of " +
         std::to_string(positions) + " positions";
}

}  // namespace

Status Context::Impl::create(std::shared_ptr<Model::Impl> model, const ContextOptions& options, bool at_load,
                             std::unique_ptr<Impl>* out) {
  std::size_t positions = 0;
  ZIPMOE_RETURN_IF_ERROR(model->context_positions(options, &positions));
  std::unique_ptr<Impl> impl(new Impl);
  impl->model = model;
  impl->max_context = positions;
  impl->max_sequences = options.max_sequences;
  const std::string what = context_description(options.max_sequences, positions);
  const std::lock_guard<std::mutex> lock(model->contexts_mutex);
  const std::uint64_t bytes = model->context_bytes(positions, options.max_sequences);
  if (!at_load) {
    ZIPMOE_RETURN_IF_ERROR(model->make_room(bytes, what));
    impl->gives_back_ = true;  // from here on, its end returns the room to the expert cache
  }
  impl->sequences.resize(options.max_sequences);
  Status status;
  for (model::SequenceState& sequence : impl->sequences) {
    status = sequence.allocate(model->config, positions, model->batch, model->options.kv_cache_dtype, &model->ledger);
    if (!status.ok()) break;
  }
  if (status.ok()) {
    status = impl->logits_rows.allocate(&model->ledger, MemoryCategory::kScratch,
                                        options.max_sequences * model->config.vocab_size * sizeof(float));
  }
  if (!status.ok()) {
    impl->free_memory();  // before the lock is released: the room goes back in give_back() below
    const bool gave = impl->gives_back_;
    impl->gives_back_ = false;
    impl.reset();
    if (gave) model->give_back_locked();
    return status.with_context(model->path + ": " + what);
  }
  impl->bytes = bytes;
  *out = std::move(impl);
  return Status::Ok();
}

void Context::Impl::free_memory() {
  sequences.clear();
  logits_rows.release();
}

Context::Impl::~Impl() {
  free_memory();
  if (gives_back_) model->room_freed();
}

Status Context::Impl::acquire(const std::string& who) {
  bool expected = false;
  if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
    std::string holder;
    {
      const std::lock_guard<std::mutex> lock(holder_mutex_);
      holder = holder_;
    }
    return Status::Busy(model->path + ": the context is in use by " + (holder.empty() ? "another call" : holder) +
                        ". A context runs one use at a time: use it from one thread at a time, and read a "
                        "streamed generation to the end or close it before the next call (another context, "
                        "Model.new_context(), runs beside it)");
  }
  const std::lock_guard<std::mutex> lock(holder_mutex_);
  holder_ = who;
  return Status::Ok();
}

void Context::Impl::release() {
  {
    const std::lock_guard<std::mutex> lock(holder_mutex_);
    holder_.clear();
  }
  busy_.store(false, std::memory_order_release);
}

Status Context::Impl::check_sequence(std::size_t sequence) const {
  if (sequence >= max_sequences) {
    return Status::InvalidArgument("sequence " + std::to_string(sequence) + " is outside the context's [0, " +
                                   std::to_string(max_sequences) + ")");
  }
  return Status::Ok();
}

Status Context::Impl::check_tokens(const std::int32_t* tokens, std::size_t count) const {
  if (count == 0) return Status::InvalidArgument("eval: no tokens given");
  if (tokens == nullptr) return Status::InvalidArgument("eval: tokens is null");
  const std::size_t vocab = model->config.vocab_size;
  for (std::size_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab) {
      return Status::InvalidArgument("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                     " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
  return Status::Ok();
}

std::size_t Context::Impl::position(std::size_t sequence) const {
  const std::lock_guard<std::mutex> lock(state_mutex_);
  return sequence < sequences.size() ? sequences[sequence].position() : 0;
}

std::vector<std::int32_t> Context::Impl::tokens(std::size_t sequence) const {
  const std::lock_guard<std::mutex> lock(state_mutex_);
  return sequence < sequences.size() ? sequences[sequence].tokens() : std::vector<std::int32_t>();
}

Status Context::Impl::eval_held(std::size_t sequence, const std::int32_t* tokens, std::size_t count, float* logits,
                                bool last_only) {
  ZIPMOE_RETURN_IF_ERROR(check_sequence(sequence));
  SequenceTokens entry;
  entry.sequence = sequence;
  entry.tokens = tokens;
  entry.count = count;
  entry.logits = logits == nullptr ? LogitRows::kNone : last_only ? LogitRows::kLast : LogitRows::kAll;
  std::size_t rows = 0;
  return decode_held(&entry, 1, logits, &rows);
}

Status Context::Impl::decode_held(const SequenceTokens* batch, std::size_t count, float* logits, std::size_t* rows) {
  *rows = 0;
  if (count == 0 || batch == nullptr) return Status::InvalidArgument("decode: no sequences given");
  std::vector<std::uint8_t> listed(max_sequences, 0);
  bool wants_logits = false;
  for (std::size_t i = 0; i < count; ++i) {
    const SequenceTokens& e = batch[i];
    ZIPMOE_RETURN_IF_ERROR(check_sequence(e.sequence));
    if (listed[e.sequence]) {
      return Status::InvalidArgument("decode: sequence " + std::to_string(e.sequence) + " is listed twice");
    }
    listed[e.sequence] = 1;
    ZIPMOE_RETURN_IF_ERROR(check_tokens(e.tokens, e.count));
    const std::size_t held = position(e.sequence);
    if (e.count > max_context - held) {
      return Status::InvalidArgument("context overflow: " + std::to_string(held) + " tokens held + " +
                                     std::to_string(e.count) + " new > max_context " + std::to_string(max_context) +
                                     (max_sequences > 1 ? " in sequence " + std::to_string(e.sequence) : "") +
                                     " (reset(), or a larger max_context)");
    }
    wants_logits |= e.logits != LogitRows::kNone;
  }
  if (wants_logits && logits == nullptr) return Status::InvalidArgument("decode: logits is null");

  // Steps of up to `batch` tokens, the entries packed in order (an entry that
  // does not fit goes on in the next step).
  const std::size_t step_tokens = model->batch, vocab = model->config.vocab_size;
  std::vector<std::size_t> done(count, 0);
  std::vector<model::StepSegment> segments;
  std::size_t entry = 0;
  while (entry < count) {
    segments.clear();
    std::size_t room = step_tokens, step_rows = 0;
    for (std::size_t i = entry; i < count && room > 0; ++i) {
      const SequenceTokens& e = batch[i];
      const std::size_t n = std::min(room, e.count - done[i]);
      const bool ends = done[i] + n == e.count;
      model::StepSegment s;
      s.state = &sequences[e.sequence];
      s.tokens = e.tokens + done[i];
      s.n = n;
      s.position = sequences[e.sequence].position();
      s.logits = e.logits == LogitRows::kAll                 ? model::SegmentLogits::kAll
                 : e.logits == LogitRows::kLast && ends      ? model::SegmentLogits::kLast
                                                             : model::SegmentLogits::kNone;
      step_rows += s.logits == model::SegmentLogits::kAll ? n : s.logits == model::SegmentLogits::kLast ? 1 : 0;
      segments.push_back(s);
      room -= n;
    }
    ZIPMOE_RETURN_IF_ERROR(
        model->step(segments.data(), segments.size(), step_rows ? logits + *rows * vocab : nullptr));
    *rows += step_rows;
    const std::lock_guard<std::mutex> lock(state_mutex_);
    for (std::size_t k = 0; k < segments.size(); ++k) {
      segments[k].state->append(segments[k].tokens, segments[k].n);
      done[entry + k] += segments[k].n;
    }
    while (entry < count && done[entry] == batch[entry].count) ++entry;
  }
  return Status::Ok();
}

Status Context::Impl::truncate_held(std::size_t sequence, std::size_t position) {
  ZIPMOE_RETURN_IF_ERROR(check_sequence(sequence));
  const std::lock_guard<std::mutex> lock(state_mutex_);
  model::SequenceState& state = sequences[sequence];
  if (position > state.position()) {
    return Status::InvalidArgument("truncate: position " + std::to_string(position) + " is beyond the " +
                                   std::to_string(state.position()) + " tokens the sequence holds");
  }
  if (!state.can_truncate_to(position)) {
    return Status::InvalidArgument("truncate: the model's sliding-window layers keep only the latest positions, so "
                                   "a sequence can only be kept whole or reset");
  }
  state.truncate(position);
  return Status::Ok();
}

void Context::Impl::reset_held(std::size_t sequence) {
  const std::lock_guard<std::mutex> lock(state_mutex_);
  if (sequence < sequences.size()) sequences[sequence].truncate(0);
}

// ---------------------------------------------------------------------------
// The public class

Context::Context(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Context::~Context() = default;
Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;

namespace {

void throw_if_busy(const Context::Impl::Use& use) { throw_if_error(use.status()); }

}  // namespace

void Context::logits(const std::int32_t* tokens, std::size_t count, float* logits, std::size_t sequence) {
  const Impl::Use use(impl_.get(), "a logits() call");
  throw_if_busy(use);
  if (logits == nullptr) throw InvalidArgumentError("logits: the output is null");
  throw_if_error(impl_->check_sequence(sequence));
  impl_->reset_held(sequence);
  throw_if_error(impl_->eval_held(sequence, tokens, count, logits, false));
}

std::vector<float> Context::logits(const std::vector<std::int32_t>& tokens, std::size_t sequence) {
  std::vector<float> out(tokens.size() * impl_->model->config.vocab_size);
  logits(tokens.data(), tokens.size(), out.data(), sequence);
  return out;
}

void Context::eval(const std::int32_t* tokens, std::size_t count, float* logits, bool last_only,
                   std::size_t sequence) {
  const Impl::Use use(impl_.get(), "an eval() call");
  throw_if_busy(use);
  if (logits == nullptr) throw InvalidArgumentError("eval: logits is null");
  throw_if_error(impl_->eval_held(sequence, tokens, count, logits, last_only));
}

std::vector<float> Context::eval(const std::vector<std::int32_t>& tokens, bool last_only, std::size_t sequence) {
  std::vector<float> out((last_only ? std::min<std::size_t>(tokens.size(), 1) : tokens.size()) *
                         impl_->model->config.vocab_size);
  eval(tokens.data(), tokens.size(), out.data(), last_only, sequence);
  return out;
}

void Context::reset() {
  const Impl::Use use(impl_.get(), "a reset() call");
  throw_if_busy(use);
  for (std::size_t s = 0; s < impl_->max_sequences; ++s) impl_->reset_held(s);
}

void Context::reset(std::size_t sequence) {
  const Impl::Use use(impl_.get(), "a reset() call");
  throw_if_busy(use);
  throw_if_error(impl_->check_sequence(sequence));
  impl_->reset_held(sequence);
}

void Context::truncate(std::size_t sequence, std::size_t position) {
  const Impl::Use use(impl_.get(), "a truncate() call");
  throw_if_busy(use);
  throw_if_error(impl_->truncate_held(sequence, position));
}

std::size_t Context::decode(const SequenceTokens* batch, std::size_t count, float* logits) {
  const Impl::Use use(impl_.get(), "a decode() call");
  throw_if_busy(use);
  std::size_t rows = 0;
  throw_if_error(impl_->decode_held(batch, count, logits, &rows));
  return rows;
}

std::size_t Context::position(std::size_t sequence) const {
  throw_if_error(impl_->check_sequence(sequence));
  return impl_->position(sequence);
}

std::vector<std::int32_t> Context::tokens(std::size_t sequence) const {
  throw_if_error(impl_->check_sequence(sequence));
  return impl_->tokens(sequence);
}
std::size_t Context::max_context() const { return impl_->max_context; }
std::size_t Context::max_sequences() const { return impl_->max_sequences; }
std::uint64_t Context::memory_bytes() const { return impl_->bytes; }

}  // namespace zipmoe

// The generation loop (include/zipmoe/generate.h).
#include "zipmoe/generate.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <string>
#include <utility>

#include "model/context_impl.h"
#include "model/model_impl.h"
#include "runtime/stop_strings.h"
#include "text/tokenizer.h"

namespace zipmoe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

double per_second(std::size_t count, double seconds) { return count / std::max(seconds, 1e-9); }

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "";
}

std::vector<std::int32_t> prompt_tokens(const Model& model, const std::string& text, bool add_special,
                                        bool parse_special) {
  std::vector<std::int32_t> ids = model.tokenize(text, add_special, parse_special);
  if (ids.empty()) {
    throw InvalidArgumentError("the prompt has no tokens (an empty text and a vocabulary without BOS)");
  }
  return ids;
}

struct Generation::Impl {
  enum class Phase : std::uint8_t {
    kPrompt,    // wants() is the prompt's rest; feed() takes its last logits
    kDecoding,  // wants() is the last id; feed() takes its logits
    kEnded,     // stats.finish_reason says why (or the generation failed)
  };

  Context::Impl* context = nullptr;
  std::size_t sequence = 0;
  GenerateOptions options;
  std::vector<std::int32_t> prompt;
  Sampler sampler;
  std::unique_ptr<text::StreamDecoder> decoder;
  std::vector<std::int32_t> eos_ids;  // ascending
  runtime::StopStrings stops;
  GenerationStats stats;
  Phase phase = Phase::kPrompt;
  bool held = false;      // the context is ours
  bool in_step = false;   // a step started and has not completed (it threw)
  bool clean_end = false;  // ended by its own rule: the sequence holds a meaningful prefix
  std::vector<std::int32_t> wanted;
  std::vector<float> logits;  // [vocab]
  std::deque<std::string> ready;  // pieces of final text not handed out yet (never empty strings)
  Clock::time_point started, prompt_done;

  bool sequence_left = true;  // nothing of this generation is in the sequence (not started, or left empty)

  explicit Impl(const SamplerOptions& sampling) : sampler(sampling) {}
  // An unfinished generation leaves its sequence empty; the context goes back to whoever comes next.
  ~Impl() {
    end_abnormally();
    if (held) context->release();
  }

  // Checks the prompt and options against the context (throws what the constructor documents).
  static void check(const Context::Impl& context, const std::vector<std::int32_t>& prompt_ids,
                    const GenerateOptions& options);
  void prepare(Context& owner, std::vector<std::int32_t> prompt_ids, const GenerateOptions& given, bool hold);
  void start();
  void on_logits(const float* row);
  void finish(FinishReason reason);
  void hand_out(std::string piece) {
    if (!piece.empty()) ready.push_back(std::move(piece));
  }
  void end_abnormally();
  void cancel_now() {
    stats.finish_reason = FinishReason::kCancelled;
    end_abnormally();
  }
  void evaluate_wanted(const KeepGoing& keep_going);
};

void Generation::Impl::check(const Context::Impl& context, const std::vector<std::int32_t>& prompt_ids,
                             const GenerateOptions& options) {
  validate_sampler_options(options.sampling);
  throw_if_error(context.check_sequence(options.sequence));
  if (prompt_ids.empty()) throw InvalidArgumentError("the prompt has no tokens");
  const std::size_t vocab = context.model->config.vocab_size;
  for (std::size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] < 0 || static_cast<std::size_t>(prompt_ids[i]) >= vocab) {
      throw InvalidArgumentError("token id " + std::to_string(prompt_ids[i]) + " at index " + std::to_string(i) +
                                 " is outside [0, " + std::to_string(vocab) + ")");
    }
  }
  if (prompt_ids.size() >= context.max_context) {
    throw InvalidArgumentError("the prompt has " + std::to_string(prompt_ids.size()) +
                               " tokens; the context holds " + std::to_string(context.max_context) +
                               " (a larger max_context leaves room to generate)");
  }
  for (const std::string& stop : options.stop) {
    if (stop.empty()) throw InvalidArgumentError("a stop string cannot be empty");
  }
}

void Generation::Impl::prepare(Context& owner, std::vector<std::int32_t> prompt_ids, const GenerateOptions& given,
                               bool hold) {
  check(owner.impl(), prompt_ids, given);
  context = &owner.impl();
  options = given;
  sequence = given.sequence;
  Model::Impl& model = *context->model;
  stops = runtime::StopStrings(options.stop);
  std::shared_ptr<const text::Tokenizer> tokenizer;
  throw_if_error(model.tokenizer(&tokenizer));
  throw_if_error(model.eos_token_ids(&eos_ids));
  decoder = std::make_unique<text::StreamDecoder>(tokenizer, options.skip_special_tokens, false);
  prompt = std::move(prompt_ids);
  logits.resize(model.config.vocab_size);
  stats.prompt_tokens = prompt.size();
  stats.seed = options.sampling.seed;
  if (hold) {
    throw_if_error(context->acquire("a generation"));
    held = true;
  }
}

// Reuses the sequence's KV cache when it holds a proper prefix of the prompt; otherwise starts it over.
void Generation::Impl::start() {
  started = Clock::now();
  if (options.max_new_tokens == 0) {  // nothing to do: the sequence is left as it is
    finish(FinishReason::kLength);
    return;
  }
  sequence_left = false;
  const std::vector<std::int32_t> known = context->tokens(sequence);
  std::size_t reused = 0;
  if (!known.empty() && known.size() < prompt.size() && std::equal(known.begin(), known.end(), prompt.begin())) {
    reused = known.size();
  } else {
    context->reset_held(sequence);
  }
  stats.reused_prompt_tokens = reused;
  sampler.set_history(prompt.data(), prompt.size());
  wanted.assign(prompt.begin() + static_cast<std::ptrdiff_t>(reused), prompt.end());
}

// One sampled id and what it makes of the text: at most one piece for the id,
// and at the end one more for what was held back.
void Generation::Impl::on_logits(const float* row) {
  if (phase == Phase::kPrompt) {
    prompt_done = Clock::now();
    stats.prompt_seconds = seconds_between(started, prompt_done);
    stats.prompt_tokens_per_second = per_second(prompt.size() - stats.reused_prompt_tokens, stats.prompt_seconds);
    phase = Phase::kDecoding;
  }
  const std::int32_t token = sampler.sample(row, logits.size());
  sampler.accept(token);
  if (options.logprobs >= 0) {
    stats.logprobs.push_back(token_logprobs(row, logits.size(), token, static_cast<std::size_t>(options.logprobs)));
  }
  stats.token_ids.push_back(token);
  stats.generated_tokens = stats.token_ids.size();
  stats.generation_seconds = seconds_between(prompt_done, Clock::now());
  stats.generation_tokens_per_second = per_second(stats.generated_tokens, stats.generation_seconds);
  if (std::binary_search(eos_ids.begin(), eos_ids.end(), token)) return finish(FinishReason::kEos);
  std::string piece;
  const bool stopped = stops.add(decoder->feed(token), &piece);
  hand_out(std::move(piece));
  if (stopped) return finish(FinishReason::kStop);
  if (stats.generated_tokens >= options.max_new_tokens) return finish(FinishReason::kLength);
  if (prompt.size() + stats.generated_tokens >= context->max_context) return finish(FinishReason::kContext);
  wanted.assign(1, token);
}

// The generation's end by its own rule: what the decoder held back, then the
// last look for a stop string (nothing is held back any more).
void Generation::Impl::finish(FinishReason reason) {
  if (reason != FinishReason::kStop && phase != Phase::kPrompt) {
    std::string piece;
    if (stops.finish(decoder->flush(), &piece)) reason = FinishReason::kStop;
    hand_out(std::move(piece));
  }
  stats.finish_reason = reason;
  if (phase != Phase::kPrompt) {
    stats.generation_seconds = seconds_between(prompt_done, Clock::now());
    stats.generation_tokens_per_second = per_second(stats.generated_tokens, stats.generation_seconds);
  }
  phase = Phase::kEnded;
  clean_end = true;
  wanted.clear();
}

// Cancelled or failed: the sequence may hold any prefix of the work, so it starts over.
void Generation::Impl::end_abnormally() {
  phase = Phase::kEnded;
  wanted.clear();
  if (context != nullptr && !clean_end && !sequence_left) {
    context->reset_held(sequence);
    sequence_left = true;
  }
}

// wants() through the forward pass (the prompt in steps of the model's batch,
// so that keep_going is asked between them), into `logits`.
void Generation::Impl::evaluate_wanted(const KeepGoing& keep_going) {
  const std::size_t step = context->model->batch;
  for (std::size_t first = 0; first < wanted.size(); first += step) {
    if (first > 0 && keep_going && !keep_going()) return cancel_now();
    const std::size_t n = std::min(step, wanted.size() - first);
    const bool last = first + n == wanted.size();
    throw_if_error(context->eval_held(sequence, wanted.data() + first, n, last ? logits.data() : nullptr, true));
  }
}

// ---------------------------------------------------------------------------

Generation::Generation(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options)
    : Generation(context, std::move(prompt), options, true) {}

Generation::Generation(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options,
                       bool hold_context) {
  validate_sampler_options(options.sampling);
  impl_ = std::make_unique<Impl>(options.sampling);
  impl_->prepare(context, std::move(prompt), options, hold_context);
  impl_->start();
}

Generation::~Generation() = default;

bool Generation::next(std::string* piece, const KeepGoing& keep_going) {
  Impl& g = *impl_;
  piece->clear();
  if (g.in_step) g.end_abnormally();  // the last call threw
  while (g.ready.empty() && g.phase != Impl::Phase::kEnded) {
    g.in_step = true;
    g.evaluate_wanted(keep_going);
    if (g.phase == Impl::Phase::kEnded) break;  // cancelled between prompt steps
    g.on_logits(g.logits.data());
    g.in_step = false;
    // asked once per token, after its text is handed out (the caller sees the piece, then the cancellation)
    if (g.ready.empty() && g.phase != Impl::Phase::kEnded && keep_going && !keep_going()) g.cancel_now();
  }
  g.in_step = false;
  if (g.ready.empty()) return false;
  piece->swap(g.ready.front());
  g.ready.pop_front();
  if (g.ready.empty() && g.phase != Impl::Phase::kEnded && keep_going && !keep_going()) g.cancel_now();
  return true;
}

bool Generation::done() const { return impl_->phase == Impl::Phase::kEnded && impl_->ready.empty(); }

const GenerationStats& Generation::stats() const { return impl_->stats; }

const std::vector<std::int32_t>& Generation::wants() const { return impl_->wanted; }

void Generation::feed(const float* logits, std::vector<std::string>* pieces) {
  Impl& g = *impl_;
  if (g.phase == Impl::Phase::kEnded || g.wanted.empty()) {
    throw InvalidArgumentError("feed: the generation wants no logits (it has ended)");
  }
  if (logits == nullptr || pieces == nullptr) throw InvalidArgumentError("feed: logits or pieces is null");
  g.in_step = true;
  g.on_logits(logits);
  g.in_step = false;
  for (std::string& piece : g.ready) pieces->push_back(std::move(piece));
  g.ready.clear();
}

void Generation::cancel() {
  if (impl_->phase != Impl::Phase::kEnded) impl_->cancel_now();
}

GenerationStats generate(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options,
                         const PieceCallback& on_piece) {
  Generation generation(context, std::move(prompt), options);
  std::string piece;
  while (generation.next(&piece)) {
    if (on_piece && !on_piece(piece)) {
      generation.cancel();
      break;
    }
  }
  return generation.stats();
}

// ---------------------------------------------------------------------------
// BatchScheduler

struct BatchScheduler::Impl {
  struct Entry {
    std::vector<std::int32_t> prompt;  // until it starts
    GenerateOptions options;
    std::unique_ptr<Generation> generation;  // while it runs
    std::size_t sequence = 0;
    std::size_t evaluated = 0;  // of generation->wants(), in earlier steps (a prompt in chunks)
    bool ended = false;
    GenerationStats stats;  // once ended; before it starts, what is known
  };

  Context* owner = nullptr;
  Context::Impl* context = nullptr;
  std::size_t step_tokens = 0, prompt_chunk = 0;
  bool reuse_prefixes = true;
  std::vector<Entry> entries;
  std::deque<std::size_t> queued;
  std::vector<std::size_t> free_sequences;  // a stack, lowest on top
  std::vector<std::size_t> running_ids;     // ascending
  std::size_t steps = 0;

  ~Impl() {
    for (Entry& e : entries) e.generation.reset();  // unfinished ones leave their sequences empty
    if (context != nullptr) context->release();
  }

  void admit();
  void end(std::size_t id);
  // Which of free_sequences a prompt takes: the one holding the longest proper
  // prefix of it (a conversation going on: only the rest is evaluated), else the
  // lowest free one.
  std::size_t pick_sequence(const std::vector<std::int32_t>& prompt) const;
};

std::size_t BatchScheduler::Impl::pick_sequence(const std::vector<std::int32_t>& prompt) const {
  std::size_t best = free_sequences.size() - 1, best_length = 0;  // the stack's top: the lowest free sequence
  for (std::size_t i = 0; i < free_sequences.size(); ++i) {
    const std::vector<std::int32_t> held = context->tokens(free_sequences[i]);
    if (held.size() > best_length && held.size() < prompt.size() &&
        std::equal(held.begin(), held.end(), prompt.begin())) {
      best = i;
      best_length = held.size();
    }
  }
  return best;
}

void BatchScheduler::Impl::admit() {
  while (!queued.empty() && !free_sequences.empty()) {
    const std::size_t id = queued.front();
    queued.pop_front();
    Entry& e = entries[id];
    const auto chosen = free_sequences.begin() + static_cast<std::ptrdiff_t>(pick_sequence(e.prompt));
    e.sequence = *chosen;
    free_sequences.erase(chosen);
    e.options.sequence = e.sequence;
    if (!reuse_prefixes) context->reset_held(e.sequence);
    e.generation.reset(new Generation(*owner, std::move(e.prompt), e.options, false));
    running_ids.insert(std::upper_bound(running_ids.begin(), running_ids.end(), id), id);
    if (e.generation->wants().empty()) end(id);  // max_new_tokens 0
  }
}

void BatchScheduler::Impl::end(std::size_t id) {
  Entry& e = entries[id];
  e.stats = e.generation->stats();
  e.generation.reset();
  e.ended = true;
  running_ids.erase(std::find(running_ids.begin(), running_ids.end(), id));
  free_sequences.push_back(e.sequence);
  std::sort(free_sequences.rbegin(), free_sequences.rend());
}

BatchScheduler::BatchScheduler(Context& context, const BatchOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  const std::size_t most = context.impl().model->batch;
  s.step_tokens = options.step_tokens ? std::min(options.step_tokens, most) : most;
  s.prompt_chunk = options.prompt_chunk ? std::min(options.prompt_chunk, s.step_tokens) : s.step_tokens;
  s.reuse_prefixes = options.reuse_prefixes;
  for (std::size_t q = context.max_sequences(); q-- > 0;) s.free_sequences.push_back(q);
  throw_if_error(context.impl().acquire("a batch of generations"));
  s.owner = &context;
  s.context = &context.impl();
}

BatchScheduler::~BatchScheduler() = default;

std::size_t BatchScheduler::add(std::vector<std::int32_t> prompt, const GenerateOptions& options) {
  Impl& s = *impl_;
  GenerateOptions checked = options;
  checked.sequence = 0;
  Generation::Impl::check(*s.context, prompt, checked);
  Impl::Entry e;
  e.stats.prompt_tokens = prompt.size();
  e.stats.seed = options.sampling.seed;
  e.prompt = std::move(prompt);
  e.options = checked;
  s.entries.push_back(std::move(e));
  s.queued.push_back(s.entries.size() - 1);
  return s.entries.size() - 1;
}

bool BatchScheduler::step(std::vector<Piece>* pieces) {
  Impl& s = *impl_;
  s.admit();
  if (s.running_ids.empty()) return false;
  // The running decodes first (one token each), then prompt chunks in the room left; a decode that does not fit
  // waits for the next step (rotated, so that every one gets its turn).
  struct Planned {
    std::size_t id;
    SequenceTokens tokens;
  };
  std::vector<Planned> plan;
  std::size_t room = s.step_tokens;
  const std::size_t count = s.running_ids.size();
  for (std::size_t k = 0; k < count && room > 0; ++k) {
    const std::size_t id = s.running_ids[(k + s.steps) % count];
    const Impl::Entry& e = s.entries[id];
    if (e.generation->impl_->phase != Generation::Impl::Phase::kDecoding) continue;
    plan.push_back({id, {e.sequence, e.generation->wants().data(), 1, LogitRows::kLast}});
    --room;
  }
  for (std::size_t k = 0; k < count && room > 0; ++k) {
    const std::size_t id = s.running_ids[k];
    const Impl::Entry& e = s.entries[id];
    if (e.generation->impl_->phase != Generation::Impl::Phase::kPrompt) continue;
    const std::vector<std::int32_t>& wants = e.generation->wants();
    const std::size_t n = std::min({room, s.prompt_chunk, wants.size() - e.evaluated});
    const bool last = e.evaluated + n == wants.size();
    plan.push_back({id, {e.sequence, wants.data() + e.evaluated, n, last ? LogitRows::kLast : LogitRows::kNone}});
    room -= n;
  }
  std::sort(plan.begin(), plan.end(), [](const Planned& a, const Planned& b) { return a.id < b.id; });
  std::vector<SequenceTokens> batch;
  for (const Planned& p : plan) batch.push_back(p.tokens);
  std::size_t rows = 0;
  const Status status = s.context->decode_held(batch.data(), batch.size(), s.context->logits_rows.as<float>(), &rows);
  ++s.steps;
  if (!status.ok()) {
    for (const Planned& p : plan) {
      s.entries[p.id].generation->cancel();
      s.end(p.id);
    }
    throw_if_error(status);
  }
  const std::size_t vocab = s.context->model->config.vocab_size;
  std::size_t row = 0;
  std::vector<std::string> texts;
  for (const Planned& p : plan) {
    Impl::Entry& e = s.entries[p.id];
    e.evaluated += p.tokens.count;
    if (p.tokens.logits == LogitRows::kNone) continue;
    texts.clear();
    e.generation->feed(s.context->logits_rows.as<float>() + row * vocab, &texts);
    ++row;
    e.evaluated = 0;
    for (std::string& text : texts) pieces->push_back({p.id, std::move(text)});
    if (e.generation->wants().empty()) s.end(p.id);
  }
  return true;
}

void BatchScheduler::cancel(std::size_t id) {
  Impl& s = *impl_;
  if (id >= s.entries.size()) throw InvalidArgumentError("no generation " + std::to_string(id));
  Impl::Entry& e = s.entries[id];
  if (e.ended) return;
  if (e.generation) {
    e.generation->cancel();
    s.end(id);
    return;
  }
  s.queued.erase(std::find(s.queued.begin(), s.queued.end(), id));
  e.stats.finish_reason = FinishReason::kCancelled;
  e.ended = true;
}

std::size_t BatchScheduler::size() const { return impl_->entries.size(); }
std::size_t BatchScheduler::running() const { return impl_->running_ids.size(); }
std::size_t BatchScheduler::steps() const { return impl_->steps; }

bool BatchScheduler::done(std::size_t id) const {
  if (id >= impl_->entries.size()) throw InvalidArgumentError("no generation " + std::to_string(id));
  return impl_->entries[id].ended;
}

const GenerationStats& BatchScheduler::stats(std::size_t id) const {
  if (id >= impl_->entries.size()) throw InvalidArgumentError("no generation " + std::to_string(id));
  const Impl::Entry& e = impl_->entries[id];
  return e.generation ? e.generation->stats() : e.stats;
}

}  // namespace zipmoe

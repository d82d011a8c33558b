// zipmoe/generate.h - the generation loop: prompt tokens in, text pieces out.
//
//   zipmoe::Model model = zipmoe::Model::load("model.zmoe");
//   zipmoe::Context context = model.new_context();
//   zipmoe::GenerateOptions options;
//   options.sampling.temperature = 0.7f; options.sampling.seed = 1;
//   options.max_new_tokens = 64;
//   options.stop = {"\n\n"};
//   std::vector<std::int32_t> prompt = zipmoe::prompt_tokens(model, "Once upon a time");
//   zipmoe::Generation generation(context, prompt, options);
//   std::string piece;
//   while (generation.next(&piece)) std::cout << piece << std::flush;
//   generation.stats().finish_reason;                 // FinishReason::kLength, ...
//
// or, in one call: zipmoe::generate(context, prompt, options, on_piece).
//
// One generation, per token: sample the next id from the logits of the last
// one (zipmoe/sampler.h: penalties over the prompt and what was generated,
// then temperature, top_k, top_p, min_p and one draw), stop at an EOS id (not
// part of the text), else turn the id into text (whole UTF-8 characters only:
// bytes of a character split across tokens wait for the rest), cut the text at
// the first stop string and stop, stop after max_new_tokens ids or when the
// sequence fills its context, and otherwise evaluate the id to get the next
// logits. A piece never holds part of a stop string: text that could still
// become the start of one is held back until it cannot, so the pieces
// concatenate to the final text exactly. A chat template is rendered before
// (the Python API renders it with jinja2); prompt_tokens() tokenizes the
// rendered text with its special tokens.
//
// Reproducibility: the same prompt, options (seed included) and model give the
// same ids and text; with Precision::kExact on every ISA path and machine, and
// whether the sequence runs alone or beside others (zipmoe/model.h).
//
// The context: a Generation holds its context (Context::Impl::acquire) from
// construction to destruction, so any other use of that context meanwhile
// throws BusyError (another context runs beside it). It works on one sequence
// of the context (GenerateOptions::sequence); when that sequence already holds
// a proper prefix of the prompt (a conversation going on), only the rest is
// evaluated, otherwise the sequence starts over. A generation that does not end
// normally (cancelled, a failed step, destroyed before its end) leaves its
// sequence empty, so the next use starts from a known state.
//
// Cancellation: next()'s and generate()'s callback is called after every
// generated token (and between the steps of a long prompt); returning false
// ends the generation with FinishReason::kCancelled. That is how a face stops
// on Ctrl-C or when its client goes away.
//
// Thread-safety: a Generation is used by one thread at a time; generations of
// different contexts may run on different threads at once (their forward
// steps take turns on the model's pool).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "zipmoe/model.h"
#include "zipmoe/sampler.h"

namespace zipmoe {

// Why a generation ended.
enum class FinishReason : std::uint8_t {
  kNone = 0,   // not ended yet
  kEos,        // an end-of-sequence id was sampled (Model::eos_token_ids)
  kStop,       // a stop string appeared (cut from the text)
  kLength,     // max_new_tokens ids were generated
  kContext,    // the sequence filled its context (Context::max_context)
  kCancelled,  // the callback returned false
};
// "eos", "stop", "length", "context", "cancelled" (kNone: "").
const char* finish_reason_name(FinishReason reason);

struct GenerateOptions {
  SamplerOptions sampling;           // its seed seeds the generation
  std::size_t max_new_tokens = 256;  // ids generated at most (0: none; the result is empty, kLength)
  std::vector<std::string> stop;     // non-empty UTF-8 strings; the text ends before the first that appears
  bool skip_special_tokens = true;   // special tokens (other than EOS, which ends it) give no text
  std::size_t sequence = 0;          // the context's sequence to generate on
  // Log-probabilities of each sampled id and of this many likeliest
  // alternatives (zipmoe::token_logprobs) into GenerationStats::logprobs; -1: none.
  int logprobs = -1;
};

// Counters of one generation (seconds from a steady clock).
struct GenerationStats {
  std::size_t prompt_tokens = 0;
  std::size_t reused_prompt_tokens = 0;  // the prompt's prefix the sequence already held (not evaluated again)
  double prompt_seconds = 0;             // evaluating the rest of the prompt
  double prompt_tokens_per_second = 0;   // of the tokens evaluated
  std::size_t generated_tokens = 0;      // ids sampled, EOS included
  double generation_seconds = 0;         // from the prompt's end to the last id
  double generation_tokens_per_second = 0;
  FinishReason finish_reason = FinishReason::kNone;
  std::uint64_t seed = 0;
  std::vector<std::int32_t> token_ids;  // the ids sampled, in order
  std::vector<TokenLogprobs> logprobs;  // one per sampled id when GenerateOptions::logprobs >= 0
};

// Called after each generated token (and between a long prompt's steps);
// false cancels the generation.
using KeepGoing = std::function<bool()>;
// Receives each piece of text (never empty); false cancels the generation.
using PieceCallback = std::function<bool(const std::string& piece)>;

// The ids of a rendered prompt: the tokenizer's BOS/EOS when add_special (as
// the vocabulary asks), and the special tokens written in the text as those
// tokens when parse_special (a rendered chat template). InvalidArgumentError
// when that gives no ids; UnsupportedModelError when the model has no tokenizer.
std::vector<std::int32_t> prompt_tokens(const Model& model, const std::string& text, bool add_special = true,
                                        bool parse_special = false);

class Generation {
 public:
  // Checks everything before any work (InvalidArgumentError: an empty prompt,
  // an id outside the vocabulary, a prompt that leaves no room in the context
  // (prompt size >= max_context), a sequence outside the context, an empty
  // stop string, bad sampling options; UnsupportedModelError without a
  // tokenizer) and takes the context (BusyError when another use holds it).
  // The context must outlive the generation.
  Generation(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options);
  ~Generation();  // gives the context back (leaving the sequence empty unless the generation ended)
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Runs until a piece of text is final (true, *piece non-empty) or the
  // generation ends (false). keep_going, when given, is asked after every
  // token. A forward step's error is thrown (the sequence is then left empty,
  // and next() returns false from there on).
  bool next(std::string* piece, const KeepGoing& keep_going = KeepGoing());
  bool done() const;
  const GenerationStats& stats() const;

  // The parts of next() for a loop that evaluates several sequences in one
  // forward step (Context::decode). What the sequence needs evaluated next
  // (the prompt's rest first, then each new id; empty when done), then the
  // logits row of its last token ([vocab]): the pieces of text that became
  // final are appended to *pieces (as next() would hand them out). feed() on a
  // generation that wants nothing throws InvalidArgumentError.
  const std::vector<std::int32_t>& wants() const;
  void feed(const float* logits, std::vector<std::string>* pieces);
  // Ends the generation as kCancelled (the sequence is left empty).
  void cancel();

  struct Impl;

 private:
  friend class BatchScheduler;
  // A generation on a context its caller holds already (the batch scheduler).
  Generation(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options, bool hold_context);
  std::unique_ptr<Impl> impl_;
};

// How a BatchScheduler fills its steps.
struct BatchOptions {
  // Tokens one forward step evaluates at most (0: the model's batch, also the most).
  std::size_t step_tokens = 0;
  // Prompt tokens of one sequence in a step at most (0: step_tokens), so that a
  // long prompt shares its steps with the running decodes instead of stalling them.
  std::size_t prompt_chunk = 0;
  // Whether a request may take a free sequence holding a prefix of its prompt
  // (prompt caching); false: every sequence is emptied when a request takes it,
  // so each prompt is evaluated whole (a baseline for measurements).
  bool reuse_prefixes = true;
};

// Continuous batching over one context: generations join (add) and leave (at
// their end) between steps, each on a sequence of the context; step() runs
// one forward step over the next token of every running generation and, with
// the room left in the step, chunks of the prompts of those starting
// (Context::decode: attention per sequence, each routed expert acquired once
// for the whole step). A generation gives the same ids and text as alone
// (with Precision::kExact the same bits of every logit; zipmoe/model.h).
// Requests beyond max_sequences wait in order for a sequence to come free. A
// request takes the free sequence that holds the longest proper prefix of its
// prompt (what an earlier generation on it left: the previous turn of a chat),
// so only the rest is evaluated (GenerationStats::reused_prompt_tokens).
//
// The scheduler holds its context (Context::Impl::acquire) for its lifetime:
// other uses of the context throw BusyError meanwhile. Used by one thread at
// a time.
class BatchScheduler {
 public:
  BatchScheduler(Context& context, const BatchOptions& options = BatchOptions());
  ~BatchScheduler();  // cancels what has not ended and gives the context back
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues a generation (checked now, as Generation checks; options.sequence
  // is ignored: the scheduler picks one). Returns its id: 0, 1, 2... in the
  // order of the calls.
  std::size_t add(std::vector<std::int32_t> prompt, const GenerateOptions& options);

  // A piece of text of one generation.
  struct Piece {
    std::size_t id = 0;
    std::string text;
  };
  // Starts what fits, runs one forward step and appends the pieces it made
  // final to *pieces (in the order of the ids). Returns false, running
  // nothing, when every generation has ended. A step's error is thrown after
  // the generations of that step were cancelled (the others go on).
  bool step(std::vector<Piece>* pieces);
  // Ends one generation as cancelled (queued or running); its sequence frees.
  void cancel(std::size_t id);

  std::size_t size() const;          // generations added
  std::size_t running() const;       // holding a sequence now
  bool done(std::size_t id) const;   // ended (or cancelled)
  const GenerationStats& stats(std::size_t id) const;
  std::size_t steps() const;         // forward steps run

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Generation(...) and next() until the end, every piece to on_piece (may be
// empty: the pieces are dropped). Returns the statistics.
GenerationStats generate(Context& context, std::vector<std::int32_t> prompt, const GenerateOptions& options,
                         const PieceCallback& on_piece = PieceCallback());

}  // namespace zipmoe

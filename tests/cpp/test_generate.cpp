// The generation loop (include/zipmoe/generate.h): stop strings held back and
// cut, and generations on the built-in model (its tokenizer and vocabulary):
// next() and generate() give the same text, cancellation, the context held
// for the generation, and wants()/feed() driven by Context::decode giving what
// next() gives. The outputs of the loop against recorded ones are checked from
// Python (tests/python/test_generation_golden.py).
#include <string>
#include <vector>

#include "model/context_impl.h"
#include "runtime/stop_strings.h"
#include "test_framework.h"
#include "zipmoe/generate.h"
#include "zipmoe/model.h"

using namespace zipmoe;

namespace {

// Feeds pieces one by one; returns what came out per piece and whether a stop string hit.
std::vector<std::string> feed_all(runtime::StopStrings& stops, const std::vector<std::string>& pieces, bool* hit) {
  std::vector<std::string> out;
  *hit = false;
  for (const std::string& piece : pieces) {
    std::string final_text;
    *hit = stops.add(piece, &final_text);
    out.push_back(final_text);
    if (*hit) break;
  }
  return out;
}

std::string builtin_model_path() {
  return std::string(ZIPMOE_TEST_SOURCE_DIR) + "/../../python/zipmoe/data/zipmoe-tiny-shakespeare.zmoe";
}

Model load_builtin() {
  ModelOptions options;
  options.threads = 2;
  options.precision = Precision::kExact;
  options.max_context = 64;
  return Model::load(builtin_model_path(), options);
}

GenerateOptions sampled(std::uint64_t seed, std::size_t max_new_tokens) {
  GenerateOptions options;
  options.sampling.temperature = 0.9f;
  options.sampling.seed = seed;
  options.max_new_tokens = max_new_tokens;
  return options;
}

std::string text_of(Generation& generation) {
  std::string text, piece;
  while (generation.next(&piece)) text += piece;
  return text;
}

}  // namespace

ZTEST(stop_strings_hold_back_what_could_start_one_and_cut_at_the_first) {
  bool hit = false;
  runtime::StopStrings none;
  ZCHECK(feed_all(none, {"ab", "c"}, &hit) == (std::vector<std::string>{"ab", "c"}));
  ZCHECK(!hit);

  runtime::StopStrings stops({"\n\n", "END"});
  // "E" and "EN" could start END: held; "ENx" cannot: handed out
  ZCHECK(feed_all(stops, {"a E", "N", "x\n", "b"}, &hit) == (std::vector<std::string>{"a ", "", "ENx", "\nb"}));
  ZCHECK(!hit);
  ZCHECK_EQ(stops.held(), std::size_t(0));
  // a stop string split across pieces: the text ends before it
  ZCHECK(feed_all(stops, {"to E", "ND here"}, &hit) == (std::vector<std::string>{"to ", ""}));
  ZCHECK(hit);

  // the earliest of two stop strings wins, whatever their order in the list
  runtime::StopStrings two({"cd", "b"});
  ZCHECK(feed_all(two, {"abcd"}, &hit) == (std::vector<std::string>{"a"}));
  ZCHECK(hit);

  // multi-byte characters: a held-back start is whole characters
  runtime::StopStrings accents({"é!"});
  ZCHECK(feed_all(accents, {"caf\xc3\xa9", "?"}, &hit) == (std::vector<std::string>{"caf", "\xc3\xa9?"}));

  // the end: nothing is held back; a stop string completed by the tail still cuts
  runtime::StopStrings end({"xyz"});
  std::string out;
  ZCHECK(!end.add("ab xy", &out));
  ZCHECK_EQ(out, std::string("ab "));
  out.clear();
  ZCHECK(!end.finish("", &out));
  ZCHECK_EQ(out, std::string("xy"));
  out.clear();
  ZCHECK(!end.add("q xy", &out));
  out.clear();
  ZCHECK(end.finish("z!", &out));
  ZCHECK_EQ(out, std::string(""));
}

ZTEST(generation_next_and_generate_give_the_same_text_and_stats) {
  Model model = load_builtin();
  const std::vector<std::int32_t> prompt = prompt_tokens(model, "ROMEO.");
  Context context = model.new_context();
  std::vector<std::string> pieces;
  GenerationStats first;
  {
    Generation generation(context, prompt, sampled(3, 20));
    std::string piece;
    while (generation.next(&piece)) {
      ZCHECK(!piece.empty());
      pieces.push_back(piece);
    }
    ZCHECK(generation.done());
    first = generation.stats();
  }  // gives the context back
  ZCHECK_EQ(first.generated_tokens, first.token_ids.size());
  ZCHECK(first.finish_reason == FinishReason::kLength || first.finish_reason == FinishReason::kEos);
  ZCHECK_EQ(first.prompt_tokens, prompt.size());

  std::string joined;
  for (const std::string& p : pieces) joined += p;
  std::string collected;
  Context other = model.new_context();
  const GenerationStats second = generate(other, prompt, sampled(3, 20), [&](const std::string& p) {
    collected += p;
    return true;
  });
  ZCHECK_EQ(collected, joined);
  ZCHECK(second.token_ids == first.token_ids);
  ZCHECK_EQ(joined, model.detokenize(first.token_ids.data(), first.token_ids.size()));

  // the sequence holds the prompt and every id but the last: a continuation reuses it
  ZCHECK_EQ(context.position(), prompt.size() + first.token_ids.size() - 1);
  std::vector<std::int32_t> longer = context.tokens();
  const std::size_t held = longer.size();
  longer.push_back(first.token_ids.back());
  longer.push_back(7);
  Generation continued(context, longer, sampled(4, 2));
  text_of(continued);
  ZCHECK_EQ(continued.stats().reused_prompt_tokens, held);
  // and gives what a fresh sequence gives for the same prompt
  Context fresh = model.new_context();
  ZCHECK(generate(fresh, longer, sampled(4, 2)).token_ids == continued.stats().token_ids);
}

ZTEST(generation_holds_its_context_and_cancels_cleanly) {
  Model model = load_builtin();
  const std::vector<std::int32_t> prompt = prompt_tokens(model, "JULIET.");
  Context context = model.new_context();
  {
    Generation generation(context, prompt, sampled(5, 30));
    std::string piece;
    ZCHECK(generation.next(&piece));
    // any other use of the context meanwhile is refused at once; reads are allowed
    ZCHECK_THROWS(context.eval({1}), BusyError);
    ZCHECK_THROWS(Generation(context, prompt, sampled(5, 3)), BusyError);
    ZCHECK(context.position() > 0);
    // another context runs beside it
    Context other = model.new_context();
    ZCHECK(!generate(other, prompt, sampled(5, 3)).token_ids.empty());
    int asked = 0;
    while (generation.next(&piece, [&] { return ++asked < 3; })) {
    }
    ZCHECK(generation.stats().finish_reason == FinishReason::kCancelled);
    ZCHECK_EQ(context.position(), std::size_t(0));  // cancelled: the sequence starts over
  }
  context.eval({1});  // given back

  // destroyed before its end: the sequence is left empty, the context free
  {
    Generation generation(context, prompt, sampled(5, 30));
    std::string piece;
    ZCHECK(generation.next(&piece));
  }
  ZCHECK_EQ(context.position(), std::size_t(0));
  // max_new_tokens 0: nothing evaluated, the sequence untouched
  context.eval({1, 2});
  GenerateOptions none = sampled(1, 0);
  ZCHECK(generate(context, prompt, none).finish_reason == FinishReason::kLength);
  ZCHECK_EQ(context.position(), std::size_t(2));

  // checked before any work
  ZCHECK_THROWS(Generation(context, {}, sampled(1, 3)), InvalidArgumentError);
  ZCHECK_THROWS(Generation(context, {-1}, sampled(1, 3)), InvalidArgumentError);
  ZCHECK_THROWS(Generation(context, std::vector<std::int32_t>(64, 1), sampled(1, 3)), InvalidArgumentError);
  GenerateOptions bad = sampled(1, 3);
  bad.stop = {""};
  ZCHECK_THROWS(Generation(context, prompt, bad), InvalidArgumentError);
  bad = sampled(1, 3);
  bad.sequence = 1;
  ZCHECK_THROWS(Generation(context, prompt, bad), InvalidArgumentError);
  bad = sampled(1, 3);
  bad.sampling.top_p = 0;
  ZCHECK_THROWS(Generation(context, prompt, bad), InvalidArgumentError);
  ZCHECK_EQ(context.position(), std::size_t(2));
}

ZTEST(batch_scheduler_gives_each_generation_its_text_alone) {
  Model model = load_builtin();
  const std::vector<std::string> texts = {"ROMEO.", "JULIET. What say you?", "KING LEAR.", "HAMLET. To be", "O"};
  std::vector<std::vector<std::int32_t>> prompts;
  for (const std::string& t : texts) prompts.push_back(prompt_tokens(model, t));
  std::vector<GenerateOptions> options;
  for (std::size_t i = 0; i < texts.size(); ++i) options.push_back(sampled(10 + i, 6 + 3 * i));
  options[2].stop = {"e"};
  options[3].max_new_tokens = 0;
  std::vector<GenerationStats> alone;
  std::vector<std::string> alone_text;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    Context solo = model.new_context();
    std::string text;
    alone.push_back(generate(solo, prompts[i], options[i], [&](const std::string& p) {
      text += p;
      return true;
    }));
    alone_text.push_back(text);
  }
  // 2 sequences for 5 generations (the rest queued), 4 tokens a step, prompts in chunks of 3
  ContextOptions c;
  c.max_sequences = 2;
  Context context = model.new_context(c);
  std::vector<std::string> got(texts.size());
  std::size_t steps = 0;
  {
    BatchOptions b;
    b.step_tokens = 4;
    b.prompt_chunk = 3;
    BatchScheduler batch(context, b);
    for (std::size_t i = 0; i < texts.size(); ++i) ZCHECK_EQ(batch.add(prompts[i], options[i]), i);
    ZCHECK_THROWS(context.eval({1}), BusyError);  // the scheduler holds the context
    ZCHECK_THROWS(batch.add({}, options[0]), InvalidArgumentError);
    std::vector<BatchScheduler::Piece> pieces;
    while (batch.step(&pieces)) {
      ZCHECK(batch.running() <= 2);
      ++steps;
    }
    for (const BatchScheduler::Piece& p : pieces) got[p.id] += p.text;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      ZCHECK(batch.done(i));
      ZCHECK(batch.stats(i).token_ids == alone[i].token_ids);
      ZCHECK(batch.stats(i).finish_reason == alone[i].finish_reason);
      ZCHECK_EQ(got[i], alone_text[i]);
    }
    ZCHECK_EQ(batch.steps(), steps);
  }
  context.eval({1});  // given back
  ZCHECK(steps > 0);
}

ZTEST(batch_scheduler_cancels_queued_and_running_generations) {
  Model model = load_builtin();
  const std::vector<std::int32_t> prompt = prompt_tokens(model, "ROMEO.");
  ContextOptions c;
  c.max_sequences = 1;
  Context context = model.new_context(c);
  BatchScheduler batch(context);
  batch.add(prompt, sampled(1, 20));
  batch.add(prompt, sampled(2, 20));
  std::vector<BatchScheduler::Piece> pieces;
  ZCHECK(batch.step(&pieces));
  ZCHECK_EQ(batch.running(), std::size_t(1));
  batch.cancel(1);  // queued: never starts
  batch.cancel(0);  // running: its sequence is left empty
  ZCHECK(batch.stats(0).finish_reason == FinishReason::kCancelled);
  ZCHECK(batch.stats(1).finish_reason == FinishReason::kCancelled);
  ZCHECK(batch.stats(1).token_ids.empty());
  ZCHECK_EQ(context.position(), std::size_t(0));
  ZCHECK(!batch.step(&pieces));
  ZCHECK_THROWS(batch.cancel(2), InvalidArgumentError);
}

ZTEST(batch_scheduler_gives_a_conversation_the_sequence_holding_its_prefix) {
  Model model = load_builtin();
  ContextOptions c;
  c.max_sequences = 3;
  Context context = model.new_context(c);
  const std::vector<std::int32_t> first = prompt_tokens(model, "ROMEO.");
  const std::vector<std::int32_t> other = prompt_tokens(model, "JULIET.");
  std::vector<std::int32_t> turn;
  {
    BatchScheduler batch(context);
    batch.add(other, sampled(1, 4));
    batch.add(first, sampled(2, 4));
    std::vector<BatchScheduler::Piece> pieces;
    while (batch.step(&pieces)) {
    }
    ZCHECK(batch.stats(1).finish_reason == FinishReason::kLength);
    turn = context.tokens(1);  // the second request ran on sequence 1
    ZCHECK_EQ(turn.size(), first.size() + 3);
  }
  turn.push_back(7);  // the next turn: the whole history and more
  BatchScheduler batch(context);
  batch.add(turn, sampled(3, 2));
  std::vector<BatchScheduler::Piece> pieces;
  while (batch.step(&pieces)) {
  }
  ZCHECK_EQ(batch.stats(0).reused_prompt_tokens, turn.size() - 1);
  Context fresh = model.new_context();
  ZCHECK(generate(fresh, turn, sampled(3, 2)).token_ids == batch.stats(0).token_ids);
}

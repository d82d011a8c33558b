"""Contexts: sequences over one model's weights (Model.new_context), each with its own KV cache, sharing the
model's expert cache and budget; one use of a context at a time. Runs on the built-in model: no torch needed."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import zipmoe

TIMEOUT = 60
PROMPTS = ["ROMEO.", "JULIET. What say you?", "HAMLET. To be, or not to be", "KING LEAR."]


@pytest.fixture(scope="module")
def model():
    # exact: a sequence's logits are the same bits however its tokens are split into steps
    return zipmoe.load(threads=2, precision="exact", max_context=128)


def ids_of(model, prompt):
    return model.tokenize(prompt)


def test_contexts_keep_their_own_sequences(model):
    prompts = [ids_of(model, p) for p in PROMPTS[:3]]
    expected = [model.logits(p) for p in prompts]
    context = model.new_context(max_sequences=3)
    assert context.max_sequences == 3 and context.max_context == model.max_context
    for s, p in enumerate(prompts):
        assert (context.logits(p, sequence=s) == expected[s]).all()
    assert [context.tokens(s) for s in range(3)] == prompts
    assert context.position == len(prompts[0])
    # each sequence continues on its own KV cache
    step = context.eval([7], sequence=1)
    assert (step == model.logits(prompts[1] + [7])[-1:]).all()
    assert context.tokens(1) == prompts[1] + [7]
    assert context.tokens(0) == prompts[0]
    context.reset(1)
    assert context.tokens(1) == [] and context.tokens(2) == prompts[2]
    context.reset()
    assert all(context.tokens(s) == [] for s in range(3))
    # the model's sequence methods use its default context, which is another one
    assert model.default_context.max_sequences == 1
    model.logits(prompts[0])
    assert model.position == len(prompts[0]) and context.position == 0


def test_context_generate_gives_the_models_text(model):
    kwargs = dict(max_new_tokens=16, temperature=0.9, seed=5)
    expected = model.generate("ROMEO.", **kwargs)
    context = model.new_context(max_context=64)
    assert context.generate("ROMEO.", **kwargs) == expected
    assert context.last_generation_stats["token_ids"] == model.last_generation_stats["token_ids"]
    assert "".join(context.generate("ROMEO.", stream=True, **kwargs)) == expected


def test_bad_context_arguments_are_invalid_argument_errors(model):
    for kwargs in (dict(max_context=model.max_context + 1), dict(max_context=0), dict(max_context=1.5),
                   dict(max_sequences=0), dict(max_sequences=zipmoe.model.MAX_SEQUENCES + 1),
                   dict(max_sequences="2"), dict(max_sequences=True)):
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.new_context(**kwargs)
    context = model.new_context(max_sequences=2)
    for call in (lambda: context.logits([1, 2], sequence=2), lambda: context.eval([1], sequence=-1),
                 lambda: context.tokens(5), lambda: context.reset(2), lambda: context.eval([model.vocab_size]),
                 lambda: context.eval([])):
        with pytest.raises(zipmoe.InvalidArgumentError):
            call()
    short = model.new_context(max_context=4)
    with pytest.raises(zipmoe.InvalidArgumentError, match="context overflow"):
        short.eval([1, 2, 3, 4, 5])
    assert short.position == 0


def test_a_context_outlives_the_model_object():
    model = zipmoe.load(threads=1, precision="exact", max_context=32)
    expected = model.logits([5, 6, 7])
    context = model.new_context()
    del model
    gc.collect()
    assert (context.logits([5, 6, 7]) == expected).all()


def test_contexts_in_threads_each_get_their_solo_results(model):
    prompts = [ids_of(model, p) for p in PROMPTS]
    expected = [model.logits(p) for p in prompts]
    contexts = [model.new_context(max_context=64) for _ in prompts]
    results = {}

    def run(i):
        for _ in range(5):
            out = contexts[i].logits(prompts[i])
            results.setdefault(i, []).append(bool((out == expected[i]).all()))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert results == {i: [True] * 5 for i in range(len(prompts))}


def test_a_context_held_by_a_stream_refuses_other_uses(model):
    context = model.new_context(max_context=64)
    stream = context.generate("ROMEO.", max_new_tokens=8, temperature=0, stream=True)
    first = next(stream)
    errors = []

    def other():
        for call in (lambda: context.eval([1]), lambda: context.logits([1]), context.reset,
                     lambda: context.generate("x", max_new_tokens=1)):
            try:
                call()
            except zipmoe.BusyError as error:
                errors.append(str(error))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(TIMEOUT)
    assert len(errors) == 4 and all("in use" in e and "stream" in e for e in errors)
    assert context.tokens(0)  # reads are allowed meanwhile
    text = first + "".join(stream)
    assert text == model.generate("ROMEO.", max_new_tokens=8, temperature=0)
    context.eval([1])  # free again


# ---- the budget ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def budgeted():
    # a budget that holds the built-in model's experts only in part
    return zipmoe.load(threads=2, precision="exact", max_context=128, memory_budget="14MB")


def test_a_context_beyond_the_budget_is_refused_and_disturbs_nothing(budgeted, model):
    ids = ids_of(model, PROMPTS[2])
    expected = model.logits(ids)
    assert (budgeted.logits(ids) == expected).all()
    before, tiers = budgeted.memory(), budgeted.stats()["experts_in"]
    with pytest.raises(zipmoe.BudgetError) as raised:
        budgeted.new_context(max_sequences=64)
    message = str(raised.value)
    for part in ("64 sequences of 128 positions needs", "memory_budget", "left", "dense weights", "KV caches",
                 "working set", "max_sequences"):
        assert part in message, message
    after = budgeted.memory()
    assert (after["total"], after["experts"], after["kv_cache"]) == \
        (before["total"], before["experts"], before["kv_cache"])
    assert budgeted.stats()["experts_in"] == tiers
    assert (budgeted.logits(ids) == expected).all()


def test_a_context_within_the_budget_takes_room_from_the_expert_cache(budgeted, model):
    budget = 14_000_000
    ids = ids_of(model, PROMPTS[1])
    expected = model.logits(ids)
    before = budgeted.memory()
    context = budgeted.new_context(max_sequences=3)
    during = budgeted.memory()
    assert during["kv_cache"] == before["kv_cache"] + 3 * (context.memory_bytes // 3 - 4 * model.vocab_size)
    assert during["total"] <= budget and during["experts"] < before["experts"]
    for s in range(3):
        assert (context.logits(ids, sequence=s) == expected).all()
    assert budgeted.memory()["total"] <= budget
    del context
    gc.collect()
    assert budgeted.memory()["kv_cache"] == before["kv_cache"]
    assert (budgeted.logits(ids) == expected).all()
    assert budgeted.memory()["total"] <= budget


def test_a_stream_keeps_its_statistics_current(model):
    kwargs = dict(max_new_tokens=12, temperature=0.9, seed=9, logprobs=2)
    whole = model.new_context()
    whole.generate("ROMEO.", **kwargs)
    expected = whole.last_generation_stats
    context = model.new_context()
    seen = []
    for _ in context.generate("ROMEO.", stream=True, **kwargs):
        stats = context.last_generation_stats
        assert len(stats["logprobs"]) == len(stats["token_ids"]) == stats["generated_tokens"]
        seen.append(list(stats["token_ids"]))
    final = context.last_generation_stats
    assert final["token_ids"] == expected["token_ids"] and final["logprobs"] == expected["logprobs"]
    assert all(final["token_ids"][:len(s)] == s for s in seen) and len(seen[0]) < len(final["token_ids"])

"""Generation on the built-in model against recorded outputs (tests/python/golden/generation.json).

The outputs were recorded from the generation loop as it was written in Python, before it moved into the core
(cpp/runtime): the same prompt, seed and settings must keep giving the same text, token ids, finish reason and
streamed pieces. precision="exact" makes the logits the same bits on every ISA path and machine, so the recording
holds on any CI machine.

    python tests/python/test_generation_golden.py --record    # rewrites the golden file (only when meant to)
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

import zipmoe

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "generation.json"

CHAT = [{"role": "system", "content": "Thou art a player."}, {"role": "user", "content": "What say you, my lord?"}]
PLAIN = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}

# name -> (prompt, load options, generate options); the stop strings of "stop_*" cases are recorded as given.
CASES = {
    "greedy": ("ROMEO.", {}, dict(temperature=0, max_new_tokens=40)),
    "greedy_utf8_prompt": ("Héllo wörld — café, naïve “quotes”", {}, dict(temperature=0, max_new_tokens=30)),
    "model_defaults_seed_1": ("To be, or not to be", {}, dict(seed=1, max_new_tokens=40)),
    "model_defaults_seed_2": ("To be, or not to be", {}, dict(seed=2, max_new_tokens=40)),
    "pure_sampling": ("JULIET.", {}, dict(seed=7, max_new_tokens=40, **PLAIN)),
    "hot": ("JULIET.", {}, dict(seed=17, max_new_tokens=40, **dict(PLAIN, temperature=1.6))),
    "top_k": ("KING LEAR.", {}, dict(seed=3, max_new_tokens=40, **dict(PLAIN, temperature=0.9, top_k=5))),
    "top_p": ("KING LEAR.", {}, dict(seed=4, max_new_tokens=40, **dict(PLAIN, top_p=0.5))),
    "min_p": ("KING LEAR.", {}, dict(seed=5, max_new_tokens=40, **dict(PLAIN, min_p=0.2))),
    "all_filters": ("HAMLET.", {}, dict(seed=6, max_new_tokens=40, temperature=0.7, top_k=40, top_p=0.9,
                                        min_p=0.05, repetition_penalty=1.0)),
    "repetition_penalty_greedy": ("HAMLET.", {}, dict(temperature=0, repetition_penalty=1.5, max_new_tokens=40)),
    "presence_penalty": ("HAMLET.", {}, dict(seed=8, max_new_tokens=40, presence_penalty=2.0,
                                             **dict(PLAIN, temperature=0.8))),
    "penalty_last_n": ("HAMLET.", {}, dict(seed=9, max_new_tokens=40, penalty_last_n=8,
                                           **dict(PLAIN, repetition_penalty=1.3))),
    "stop_newline": ("ROMEO.\nI am", {}, dict(temperature=0, max_new_tokens=60, stop="\n")),
    "stop_list": ("What, ho! ", {}, dict(seed=10, max_new_tokens=60, stop=[", ", "? ", "never-there"])),
    "stop_never": ("What, ho! ", {}, dict(seed=10, max_new_tokens=30, stop=["\x00never"])),
    "max_new_tokens_0": ("ROMEO.", {}, dict(temperature=0, max_new_tokens=0)),
    "max_new_tokens_1": ("ROMEO.", {}, dict(seed=11, max_new_tokens=1)),
    "max_new_tokens_5": ("ROMEO.", {}, dict(seed=11, max_new_tokens=5)),
    "chat_seed": (CHAT, {}, dict(seed=12, max_new_tokens=60)),
    "chat_greedy_specials_shown": (CHAT, {}, dict(temperature=0, max_new_tokens=80, skip_special_tokens=False)),
    "token_ids": ([1, 2, 3, 100, 200, 300], {}, dict(seed=13, max_new_tokens=30)),
    "no_special_tokens": ("ROMEO.", {}, dict(seed=14, max_new_tokens=30, add_special_tokens=False)),
    "full_context": ("ROMEO. What", {"max_context": 16}, dict(seed=15, max_new_tokens=100, **PLAIN)),
}
# Streamed too: the pieces themselves are recorded (whole characters; stop strings held back until they cannot match).
STREAMED = ("greedy_utf8_prompt", "hot", "stop_newline", "stop_list", "stop_never", "chat_seed")
# A stop string cut from the unstopped text at recording time, so that it is sure to be hit mid-stream.
CUT_STOPS = {"stop_cut": ("JULIET.", dict(seed=16, max_new_tokens=50, **PLAIN), (9, 13))}


def _load(load_options: dict):
    return zipmoe.load(threads=2, precision="exact", **load_options)


def _run(model, prompt, options: dict, stream: bool) -> dict:
    if stream:
        pieces = list(model.generate(prompt, stream=True, **options))
        text = "".join(pieces)
    else:
        pieces = None
        text = model.generate(prompt, **options)
    stats = model.last_generation_stats
    out = {"text": text, "token_ids": stats["token_ids"], "finish_reason": stats["finish_reason"],
           "prompt_tokens": stats["prompt_tokens"], "generated_tokens": stats["generated_tokens"]}
    if pieces is not None:
        out["pieces"] = pieces
    return out


def record() -> dict:
    models = {}

    def model_for(load_options):
        key = json.dumps(load_options, sort_keys=True)
        if key not in models:
            models[key] = _load(load_options)
        return models[key]

    cases = {}
    for name, (prompt, load_options, options) in CASES.items():
        model = model_for(load_options)
        model.reset()
        cases[name] = {"prompt": prompt, "load": load_options, "options": options,
                       "result": _run(model, prompt, options, stream=False)}
        if name in STREAMED:
            model.reset()
            cases[name]["streamed"] = _run(model, prompt, options, stream=True)
    for name, (prompt, options, (start, end)) in CUT_STOPS.items():
        model = model_for({})
        model.reset()
        full = model.generate(prompt, **options)
        options = dict(options, stop=full[start:end])
        model.reset()
        cases[name] = {"prompt": prompt, "load": {}, "options": options,
                       "result": _run(model, prompt, options, stream=False)}
        model.reset()
        cases[name]["streamed"] = _run(model, prompt, options, stream=True)
    return {"model": zipmoe.default_model_path().rsplit("/", 1)[-1], "precision": "exact", "cases": cases}


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(load_options):
        key = json.dumps(load_options, sort_keys=True)
        if key not in cache:
            cache[key] = _load(load_options)
        return cache[key]

    return get


def test_the_golden_file_covers_every_case(golden):
    assert set(golden["cases"]) == set(CASES) | set(CUT_STOPS)
    reasons = {case["result"]["finish_reason"] for case in golden["cases"].values()}
    # the recording exercises every way a generation ends
    assert {"eos", "stop", "length", "context"} <= reasons, reasons


@pytest.mark.parametrize("name", sorted(set(CASES) | set(CUT_STOPS)))
def test_generation_matches_the_recording(golden, models, name):
    case = golden["cases"][name]
    model = models(case["load"])
    prompt = case["prompt"]
    model.reset()
    assert _run(model, prompt, case["options"], stream=False) == case["result"]
    if "streamed" in case:
        model.reset()
        assert _run(model, prompt, case["options"], stream=True) == case["streamed"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(__doc__)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(record(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")

"""Model.generate, tokenize/detokenize and chat templates on tiny converted models with a byte-level BPE."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time

import numpy as np
import pytest

import zipmoe

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tiny_models import make_tiny_model  # noqa: E402

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
          "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles",
          "Héllo wörld, café crème, naïve façade — “quotes” ✓ 日本語 😀", "hello world, hello there, the end."]


def make_text_model(folder: pathlib.Path, arch: str = "qwen3_moe", generation_config: dict | None = None,
                    chat_template: str | None = CHATML, seed: int = 0) -> pathlib.Path:
    """A tiny random ``arch`` model with a 300-token byte-level BPE tokenizer (ChatML specials, EOS <|im_end|>)
    and, optionally, a generation_config.json (None: none at all) and a chat template; returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    vocab = tokenizer.get_vocab_size()
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    make_tiny_model(arch, folder, tokenizer=False, seed=seed, vocab_size=vocab, bos_token_id=ids["<|endoftext|>"],
                    eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], max_position_embeddings=256)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(folder))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if chat_template:
        config["chat_template"] = chat_template
    config_path.write_text(json.dumps(config))
    for name in ("chat_template.jinja",):
        if not chat_template and (folder / name).exists():
            (folder / name).unlink()
    generation_path = folder / "generation_config.json"
    if generation_config is None:
        if generation_path.exists():
            generation_path.unlink()
    else:
        generation_path.write_text(json.dumps(generation_config))
    return folder


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    """name -> .zmoe path; built on first use."""
    root = tmp_path_factory.mktemp("generate")
    variants = {
        # greedy by default (transformers: do_sample absent), EOS from the config
        "plain": dict(generation_config={"eos_token_id": [2], "bos_token_id": 0}),
        "sampling_config": dict(generation_config={"do_sample": True, "temperature": 0.7, "top_k": 20,
                                                   "top_p": 0.9, "max_new_tokens": 7, "eos_token_id": 2}),
        "no_config": dict(generation_config=None),
        "no_template": dict(generation_config={}, chat_template=None),
        "dense": dict(arch="llama", generation_config={}),
    }
    built = {}

    def get(name):
        if name not in built:
            folder = make_text_model(root / name, **variants[name])
            path = root / f"{name}.zmoe"
            zipmoe.convert(folder, path, threads=2)
            built[name] = path
        return built[name]

    return get


@pytest.fixture(scope="module")
def model(text_models):
    # exact precision: generate's one-token steps then equal model.logits() over the whole sequence bit for bit
    return zipmoe.load(text_models("plain"), threads=2, precision="exact")


def argmax_loop(model, prompt_ids, steps, eos_ids):
    ids = list(prompt_ids)
    out = []
    for _ in range(steps):
        token = int(np.argmax(model.logits(ids)[-1]))
        out.append(token)
        if token in eos_ids:
            break
        ids.append(token)
    return out


def test_tokenizer_comes_from_the_container(model, text_models):
    from transformers import AutoTokenizer

    folder = pathlib.Path(text_models("plain")).with_suffix("")
    reference = AutoTokenizer.from_pretrained(str(folder))
    for text in CORPUS + ["", "  spaces  and\ttabs\n"]:
        assert model.tokenize(text) == reference.encode(text), text
        assert model.detokenize(model.tokenize(text)) == text
    # special tokens written in text are plain text unless asked for (a rendered chat template asks)
    assert model.tokenizer.encode("<|im_start|>user", parse_special=True) == reference.encode("<|im_start|>user")
    assert model.tokenize("<|im_start|>user")[0] != 1
    assert isinstance(model.tokenizer, zipmoe.Tokenizer)
    assert model.tokenizer.vocab_size == model.vocab_size
    assert 2 in model.eos_token_ids  # <|im_end|>: the config's and the tokenizer's EOS


def test_greedy_generate_equals_the_argmax_loop(model):
    prompt = "To be, or not to be"
    prompt_ids = model.tokenize(prompt)
    text = model.generate(prompt, max_new_tokens=20, temperature=0)
    stats = model.last_generation_stats
    expected = argmax_loop(model, prompt_ids, 20, set(model.eos_token_ids))
    assert stats["token_ids"] == expected
    assert stats["prompt_tokens"] == len(prompt_ids)
    assert stats["generated_tokens"] == len(expected)
    content = [t for t in expected if t not in model.eos_token_ids]
    assert text == model.detokenize(content, skip_special_tokens=True)
    shown = model.generate(prompt, max_new_tokens=20, temperature=0, skip_special_tokens=False)
    assert shown == model.detokenize(content)
    # token ids as the prompt give the same
    assert model.generate(prompt_ids, max_new_tokens=20, temperature=0) == text


def test_top_k_1_and_tiny_top_p_equal_greedy(model):
    greedy = model.generate("hello world", max_new_tokens=15, temperature=0)
    assert model.generate("hello world", max_new_tokens=15, temperature=1.5, top_k=1, seed=3) == greedy
    assert model.generate("hello world", max_new_tokens=15, temperature=0.9, top_p=1e-6, seed=4) == greedy


def test_seed_makes_sampling_reproducible(model):
    kwargs = dict(max_new_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    first = model.generate("The slings", seed=123, **kwargs)
    ids = model.last_generation_stats["token_ids"]
    assert model.last_generation_stats["seed"] == 123
    assert model.generate("The slings", seed=123, **kwargs) == first
    assert model.last_generation_stats["token_ids"] == ids
    others = []
    for seed in (124, 125, 126):
        model.generate("The slings", seed=seed, **kwargs)
        others.append(model.last_generation_stats["token_ids"])
    assert any(o != ids for o in others)
    # no seed: a random one, reported
    model.generate("The slings", **kwargs)
    assert isinstance(model.last_generation_stats["seed"], int)


def test_stream_pieces_join_to_the_text(model):
    kwargs = dict(max_new_tokens=40, temperature=1.2, seed=7)
    text = model.generate("Héllo wörld", **kwargs)
    pieces = list(model.generate("Héllo wörld", stream=True, **kwargs))
    assert "".join(pieces) == text
    assert all(isinstance(p, str) and p for p in pieces)
    for piece in pieces:
        piece.encode("utf-8")  # whole characters only (a lone surrogate would fail)


def test_stop_strings(model):
    kwargs = dict(max_new_tokens=40, temperature=1.0, seed=11)
    full = model.generate("Or to take arms", **kwargs)
    assert len(full) >= 12, full
    stop = full[6:9]
    expected = full[:full.find(stop)]
    assert model.generate("Or to take arms", stop=stop, **kwargs) == expected
    assert model.last_generation_stats["finish_reason"] == "stop"
    pieces = list(model.generate("Or to take arms", stop=[stop, "\x00never"], stream=True, **kwargs))
    assert "".join(pieces) == expected
    # a stop string whose beginning appears at the end but never completes: held back, then given out
    tail_stop = full[-2:] + "\x00never"
    pieces = list(model.generate("Or to take arms", stop=tail_stop, stream=True, **kwargs))
    assert "".join(pieces) == full
    assert model.last_generation_stats["finish_reason"] in ("length", "eos")
    # the stop string is never emitted, even in part, while streaming
    for cut in range(1, 5):
        stop = full[cut:cut + 4]
        emitted = ""
        for piece in model.generate("Or to take arms", stop=stop, stream=True, **kwargs):
            emitted += piece
            assert stop not in emitted
        assert emitted == full[:full.find(stop)]


def test_max_new_tokens_and_finish_reasons(model):
    model.generate("hello", max_new_tokens=5, temperature=1.0, seed=1)
    stats = model.last_generation_stats
    assert stats["generated_tokens"] <= 5
    if stats["finish_reason"] == "length":
        assert stats["generated_tokens"] == 5
    assert model.generate("hello", max_new_tokens=0) == ""
    assert model.last_generation_stats["generated_tokens"] == 0
    for key in ("prompt_tokens", "prompt_seconds", "generated_tokens", "generation_seconds",
                "prompt_tokens_per_second", "generation_tokens_per_second", "finish_reason"):
        assert key in stats
    # the context fills up: generation ends there
    small = zipmoe.load(model.path, threads=1, max_context=12)
    prompt_ids = small.tokenize("hello world")
    small.generate("hello world", max_new_tokens=100, temperature=1.0, seed=2)
    stats = small.last_generation_stats
    assert stats["finish_reason"] in ("context", "eos")
    assert len(prompt_ids) + stats["generated_tokens"] <= 12


def test_eos_ends_generation(model):
    # make EOS the likeliest token by forcing every other id down through a huge presence penalty:
    # a penalty on every id but EOS, via a history holding them all, is what the sampler sees
    eos = model.eos_token_ids[0]
    every_other = [i for i in range(model.vocab_size) if i != eos]
    text = model.generate(every_other[:200], max_new_tokens=10, temperature=0, presence_penalty=1e6)
    stats = model.last_generation_stats
    # the prompt holds 200 ids; the likeliest id outside them, or EOS, comes next
    assert stats["generated_tokens"] >= 1
    if stats["token_ids"][-1] == eos:
        assert stats["finish_reason"] == "eos"
        assert text == model.detokenize(stats["token_ids"][:-1], skip_special_tokens=True)


def test_chat_messages_use_the_template(model, text_models):
    from transformers import AutoTokenizer

    folder = pathlib.Path(text_models("plain")).with_suffix("")
    reference = AutoTokenizer.from_pretrained(str(folder))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Héllo there"}]
    rendered = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert model.apply_chat_template(messages) == rendered
    hf_ids = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(hf_ids, dict) or hasattr(hf_ids, "keys"):
        hf_ids = hf_ids["input_ids"]
    answer = model.generate(messages, max_new_tokens=8, temperature=0)
    assert model.last_generation_stats["prompt_tokens"] == len(hf_ids)
    assert answer == model.generate(list(hf_ids), max_new_tokens=8, temperature=0)


def test_next_turn_reuses_the_kv_cache_with_identical_results(model):
    prompt_ids = model.tokenize("Whether 'tis nobler")
    model.reset()
    model.generate(prompt_ids, max_new_tokens=6, temperature=0)
    generated = model.last_generation_stats["token_ids"]
    follow = prompt_ids + generated + model.tokenize(" in the mind")
    continued = model.generate(follow, max_new_tokens=8, temperature=0)
    reused = model.last_generation_stats["reused_prompt_tokens"]
    if generated[-1] not in model.eos_token_ids:
        assert reused == len(prompt_ids) + len(generated) - 1
    model.reset()
    assert model.generate(follow, max_new_tokens=8, temperature=0) == continued
    assert model.last_generation_stats["reused_prompt_tokens"] == 0
    # logits()/eval() by hand are tracked too
    model.logits(follow[:5])
    model.generate(follow, max_new_tokens=8, temperature=0)
    assert model.last_generation_stats["reused_prompt_tokens"] == 5


def test_defaults_from_generation_config(text_models):
    configured = zipmoe.load(text_models("sampling_config"), threads=1)
    assert configured.generation_config["top_k"] == 20
    a = configured.generate("hello", seed=5)
    stats = configured.last_generation_stats
    assert stats["generated_tokens"] <= 7  # max_new_tokens from the config
    assert configured.generate("hello", seed=5) == a
    # sampling is on (do_sample): some seed gives another text than greedy
    greedy = configured.generate("hello", temperature=0)
    assert any(configured.generate("hello", seed=s) != greedy for s in range(6, 16))
    plain = zipmoe.load(text_models("plain"), threads=1)
    # do_sample absent: greedy, as transformers
    assert plain.generate("hello", max_new_tokens=10) == plain.generate("hello", max_new_tokens=10, temperature=0)
    bare = zipmoe.load(text_models("no_config"), threads=1)
    assert bare.generation_config == {}
    bare.generate("hello", max_new_tokens=3, seed=1)  # llama.cpp's sampling defaults


def test_bad_arguments_are_invalid_argument_errors(model):
    bad = [dict(temperature=-1), dict(temperature=float("nan")), dict(temperature="hot"), dict(top_p=0),
           dict(top_p=1.5), dict(top_k=-1), dict(top_k=2.5), dict(min_p=2), dict(repetition_penalty=0),
           dict(presence_penalty=float("inf")), dict(seed=-1), dict(seed=2**64), dict(seed=1.5), dict(stop=[""]),
           dict(stop=5), dict(max_new_tokens=-1), dict(max_new_tokens=1.5), dict(unknown_option=1),
           dict(top_n=3), dict(stream="yes"), dict(frequency_penalty=float("nan")), dict(frequency_penalty="x"),
           dict(logprobs=-1), dict(logprobs=2.5), dict(logprobs=True)]
    for kwargs in bad:
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.generate("hello", **kwargs)
        assert issubclass(zipmoe.InvalidArgumentError, ValueError)
    for prompt in (5, None, [], "", [{"role": "user"}, "x"], [model.vocab_size], [-1]):
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.generate(prompt, max_new_tokens=2)
    with pytest.raises(zipmoe.InvalidArgumentError):
        model.generate("hello " * 300, max_new_tokens=2)  # longer than the context
    with pytest.raises(zipmoe.InvalidArgumentError, match="unknown option"):
        model.generate("hello", temprature=0.5)


def test_logprobs_are_the_log_softmax_of_each_step(model):
    prompt = model.tokenize("hello world")
    text = model.generate(prompt, max_new_tokens=6, temperature=0, logprobs=3)
    stats = model.last_generation_stats
    assert isinstance(text, str) and len(stats["logprobs"]) == len(stats["token_ids"])
    ids = list(prompt)
    for token, (logprob, top) in zip(stats["token_ids"], stats["logprobs"]):
        row = model.logits(ids)[-1].astype(np.float64)
        log_softmax = row - row.max() - np.log(np.exp(row - row.max()).sum())
        assert logprob == pytest.approx(log_softmax[token], abs=1e-9)
        assert [i for i, _ in top] == sorted(range(len(row)), key=lambda i: (-row[i], i))[:3]
        assert [v for _, v in top] == pytest.approx(log_softmax[[i for i, _ in top]], abs=1e-9)
        ids.append(token)
    assert model.generate(prompt, max_new_tokens=2, temperature=0) == model.generate(prompt, max_new_tokens=2,
                                                                                    temperature=0, logprobs=0)
    assert model.last_generation_stats["logprobs"][0][1] == []
    model.generate(prompt, max_new_tokens=2, temperature=0)
    assert model.last_generation_stats["logprobs"] is None


def test_frequency_penalty_counts_occurrences(model):
    prompt = model.tokenize("hello world, hello there")
    sampler = zipmoe._core.Sampler(temperature=0.0, frequency_penalty=0.0)
    row = np.zeros(model.vocab_size, dtype=np.float32)
    row[prompt[0]] = 1.0  # the likeliest, but it occurs twice in the history
    row[7] = 0.5
    sampler.set_history(np.asarray(prompt))
    assert sampler.sample(row) == prompt[0]
    penalized = zipmoe._core.Sampler(temperature=0.0, frequency_penalty=0.3)
    penalized.set_history(np.asarray(prompt))
    assert prompt.count(prompt[0]) >= 2 and penalized.sample(row) == 7
    plain = model.generate(prompt, max_new_tokens=24, temperature=0, repetition_penalty=1.0)
    assert model.generate(prompt, max_new_tokens=24, temperature=0, repetition_penalty=1.0,
                          frequency_penalty=0.0) == plain
    assert model.generate(prompt, max_new_tokens=24, temperature=0, repetition_penalty=1.0,
                          frequency_penalty=2.0) != plain


def test_messages_without_a_template_and_the_default_model(text_models):
    bare = zipmoe.load(text_models("no_template"), threads=1)
    assert bare.chat_template is None
    with pytest.raises(zipmoe.UnsupportedModelError, match="chat template"):
        bare.generate([{"role": "user", "content": "hi"}], max_new_tokens=2)
    # a text prompt needs no template: greedy tokens as the argmax loop picks them
    text = bare.generate("hi", max_new_tokens=2, temperature=0)
    expected = argmax_loop(bare, bare.tokenize("hi"), 2, set(bare.eos_token_ids))
    assert bare.last_generation_stats["token_ids"] == expected
    assert text == bare.detokenize([t for t in expected if t not in bare.eos_token_ids], skip_special_tokens=True)
    default = pathlib.Path(zipmoe.__file__).parent / "data" / "zipmoe-tiny-shakespeare.zmoe"
    if default.is_file():
        assert zipmoe.default_model_path() == str(default)
    else:
        with pytest.raises(zipmoe.IoError, match="installed without its default model"):
            zipmoe.default_model_path()
        with pytest.raises(zipmoe.IoError, match="installed without its default model"):
            zipmoe.load()


def _interrupt_after(calls):
    """A keep-going hook (asked by the native loop once per generated token) that raises KeyboardInterrupt at the
    n-th call, as Python's Ctrl-C handler raises it when the loop checks for signals."""
    count = [0]

    def hook():
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return True

    return hook


def test_interruption_leaves_the_model_usable(model):
    expected = model.generate("hello there", max_new_tokens=10, temperature=0)
    context = model.default_context
    context._keep_going = _interrupt_after(3)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.generate("hello there", max_new_tokens=10, temperature=0)
    finally:
        context._keep_going = None
    assert model.last_generation_stats["finish_reason"] == "interrupted"
    assert model.position == 0
    assert model.generate("hello there", max_new_tokens=10, temperature=0) == expected
    # a stream closed early
    stream = model.generate("hello there", max_new_tokens=10, temperature=1.0, seed=1, stream=True)
    next(stream)
    stream.close()
    assert model.last_generation_stats["finish_reason"] == "interrupted"
    assert model.generate("hello there", max_new_tokens=10, temperature=0) == expected


def test_ctrl_c_stops_a_native_generation_between_tokens(model):
    # a real SIGINT while the native loop runs without the GIL: Python's handler raises KeyboardInterrupt at the
    # loop's next per-token check, and the model stays usable
    expected = model.generate("hello there", max_new_tokens=8, temperature=0)
    # a context of its own: the default one may still be held by a stream an earlier test left open, and
    # model.generate would then run on a private context without this hook
    context = model.new_context()
    started, sending = threading.Event(), threading.Event()

    def first_token():
        # the loop goes on only once the sender is about to signal (on a loaded machine it could otherwise come after
        # the generation's end); the sender holds the GIL from here to os.kill, so the handler runs at the native
        # loop's next per-token check
        if not started.is_set():
            started.set()
            sending.wait(60)
        return True

    def send():
        if started.wait(60):
            sending.set()
            os.kill(os.getpid(), signal.SIGINT)

    context._keep_going = first_token
    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            context.generate("hello there", max_new_tokens=model.max_context - 8, temperature=1.0, seed=1)
    finally:
        context._keep_going = None
        sender.join(60)
    stats = context.last_generation_stats
    assert stats["finish_reason"] == "interrupted" and 0 < stats["generated_tokens"] < model.max_context - 8
    assert context.position == 0
    assert context.generate("hello there", max_new_tokens=8, temperature=0) == expected


def test_a_keep_going_hook_returning_false_cancels(model):
    context = model.new_context()
    calls = []
    context._keep_going = lambda: calls.append(1) or len(calls) < 4
    text = context.generate("hello there", max_new_tokens=20, temperature=0)
    assert context.last_generation_stats["finish_reason"] == "cancelled"
    assert context.last_generation_stats["generated_tokens"] == 4 and context.position == 0
    context._keep_going = None
    full = context.generate("hello there", max_new_tokens=20, temperature=0)
    assert full.startswith(text)


def test_dense_model_and_sampler_binding(text_models):
    dense = zipmoe.load(text_models("dense"), threads=1)
    assert isinstance(dense.generate("hello", max_new_tokens=4, seed=0), str)
    sampler = zipmoe._core.Sampler(temperature=0.0)
    assert sampler.sample(np.array([0.0, 2.0, 1.0], dtype=np.float32)) == 1
    assert sampler.sample(np.array([[5.0, 0.0], [0.0, 2.0]], dtype=np.float32)) == 1  # the last row
    with pytest.raises(zipmoe.InvalidArgumentError, match="nan"):
        sampler.sample(np.array([0.0, float("nan")], dtype=np.float32))
    with pytest.raises(zipmoe.InvalidArgumentError):
        zipmoe._core.Sampler(top_p=0.0)

"""The C API (include/zipmoe.h, libzipmoe) against the Python API: the library exports exactly the C API and the
public C++ API, and its tokenize, detokenize, chat template, logits and generation give what Python gives."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

import zipmoe
from capi_ctypes import CApi, CApiError, library_path

TEXTS = ["ROMEO. But soft, what light through yonder window breaks?", "", " ", "a", "\n\n  two lines\n",
         "Héllo wörld, café crème, naïve façade — “quotes” ✓ 日本語 😀", "<|im_start|>user\nHi<|im_end|>",
         "<|endoftext|> inside text", "    indented\tand\ttabbed", "x" * 3000, "1234567890 3.14159 -42"]


@pytest.fixture(scope="module")
def capi():
    return CApi()


@pytest.fixture(scope="module")
def builtin(capi):
    """(C model handle, Python model) of the built-in model."""
    c_model = capi.load(zipmoe.default_model_path(), threads=2)
    yield c_model, zipmoe.load(threads=2)
    capi.free(c_model)


def test_library_exports_the_c_api_and_hides_the_core():
    header = (pathlib.Path(zipmoe.get_include()) / "zipmoe.h").read_text()
    declared = set(re.findall(r"ZIPMOE_API\s[^;]*?\b(zipmoe_\w+)\(", header))
    assert len(declared) > 40
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    listed = subprocess.run([nm, "-D", "--defined-only", "-C", str(library_path())], capture_output=True, text=True,
                            check=True).stdout
    symbols = {line.split(" ", 2)[2] for line in listed.splitlines() if line.count(" ") >= 2}
    c_functions = {s for s in symbols if re.fullmatch(r"zipmoe_\w+", s)}
    assert c_functions == declared
    # A symbol of the core's internal namespaces (a function, variable, vtable or typeinfo). Not counted: weak
    # instantiations of std:: templates over an internal enum (std::vector<text::TokenAttribute>), which GCC exports
    # whatever -fvisibility says because an enum type carries no visibility; they hold only the standard library's code.
    internal = re.compile(r"^(?:(?:typeinfo name|typeinfo|vtable|VTT|construction vtable|guard variable) for )?"
                          r"(?:[\w:*&]+ )?zipmoe::(common|codec|kernels|text|cuda|format|sched|cache|model|runtime|"
                          r"capi|json|bindings)::")
    leaked = sorted(s for s in symbols if internal.search(s))
    assert not leaked, leaked[:20]
    assert any("zipmoe::Model::load" in s for s in symbols)  # the public C++ API is exported


def test_paths_of_the_package(capi):
    include = pathlib.Path(zipmoe.get_include())
    assert (include / "zipmoe.h").is_file() and (include / "zipmoe" / "model.h").is_file()
    assert (pathlib.Path(zipmoe.get_cmake_dir()) / "zipmoeConfig.cmake").is_file()
    assert (pathlib.Path(zipmoe.get_pkgconfig_dir()) / "zipmoe.pc").is_file()
    assert capi.lib.zipmoe_version().decode() == zipmoe.__version__
    for option, function in (("--cmake-dir", zipmoe.get_cmake_dir), ("--include-dir", zipmoe.get_include)):
        run = subprocess.run([__import__("sys").executable, "-m", "zipmoe", option], capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout.strip() == function()


def test_tokenize_and_detokenize_match_python(capi, builtin):
    c_model, model = builtin
    tokenizer = model.tokenizer
    for text in TEXTS:
        for add_special in (True, False):
            for parse_special in (True, False):
                ids = tokenizer.encode(text, add_special_tokens=add_special, parse_special=parse_special)
                assert capi.tokenize(c_model, text.encode(), add_special, parse_special) == ids, text
                for skip in (True, False):
                    assert capi.detokenize(c_model, ids, skip) == tokenizer.decode(ids, skip_special_tokens=skip)
    raw = b"a\xff\xfeb\xc3"  # not UTF-8: bytes are taken as they are, as Python's encode(bytes) does
    ids = tokenizer.encode(raw, add_special_tokens=False)
    assert capi.tokenize(c_model, raw, False) == ids
    assert capi.detokenize(c_model, ids) == tokenizer.decode(ids)
    with pytest.raises(CApiError, match="outside the vocabulary"):
        capi.detokenize(c_model, [model.tokenizer.vocab_size])
    assert capi.eos_tokens(c_model) == model.eos_token_ids


def test_model_chat_template_matches_python(capi, builtin):
    c_model, model = builtin
    assert capi.lib.zipmoe_model_chat_template(c_model).decode() == model.metadata["chat_template"]
    conversations = [[{"role": "user", "content": "Hi"}],
                     [{"role": "system", "content": "Speak verse."}, {"role": "user", "content": "Of love?"},
                      {"role": "assistant", "content": "Aye."}, {"role": "user", "content": "More ✓"}]]
    for messages in conversations:
        for add in (True, False):
            assert capi.chat(messages, model=c_model, add_generation_prompt=add) == \
                model.apply_chat_template(messages, add_generation_prompt=add)


@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_eval_logits_are_python_logits(capi, precision):
    c_model = capi.load(zipmoe.default_model_path(), threads=2, precision=precision)
    model = zipmoe.load(threads=2, precision=precision)
    ctx = capi.context(c_model)
    try:
        for text in ("ROMEO.", "ROMEO. " * 60):  # one forward step, several
            ids = model.tokenize(text)
            capi.lib.zipmoe_context_reset(ctx)
            ours = capi.eval(ctx, ids, model.vocab_size)
            assert np.array_equal(ours, model.logits(ids)[-1])
        # appended tokens continue the sequence, as Model.eval does
        model.reset()
        model.eval(ids[:-3])
        capi.lib.zipmoe_context_reset(ctx)
        capi.eval(ctx, ids[:-3], model.vocab_size)
        assert np.array_equal(capi.eval(ctx, ids[-3:], model.vocab_size), model.eval(ids[-3:])[-1])
    finally:
        capi.free_context(ctx)
        capi.free(c_model)


GENERATIONS = [
    dict(temperature=0.0, max_new_tokens=40),
    dict(temperature=0.9, top_k=30, top_p=0.9, seed=7, max_new_tokens=40),
    dict(temperature=1.2, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.5, penalty_last_n=16, seed=3,
         max_new_tokens=30),
    dict(temperature=0.8, frequency_penalty=0.7, penalty_last_n=0, seed=5, max_new_tokens=30),
    dict(seed=11, max_new_tokens=25),  # the model's generation_config defaults
    dict(temperature=0.0, max_new_tokens=60, stop=["\n\n", "the"]),
    dict(temperature=0.0, max_new_tokens=0),
]


@pytest.mark.parametrize("index", range(len(GENERATIONS)))
def test_generate_matches_python(capi, builtin, index):
    c_model, model = builtin
    options = GENERATIONS[index]
    ctx = capi.context(c_model)
    try:
        for prompt in ("ROMEO.", "JULIET.\nO Romeo, Romeo!"):
            text, pieces, stats = capi.generate(ctx, prompt, **options)
            model.reset()
            python_pieces = list(model.generate(prompt, stream=True, **options))
            assert text == "".join(python_pieces)
            assert pieces == python_pieces  # the same UTF-8-safe pieces, stop strings held back alike
            python_stats = model.last_generation_stats
            assert stats["generated_tokens"] == python_stats["generated_tokens"]
            assert stats["finish_reason"] == python_stats["finish_reason"]
            assert stats["prompt_tokens"] == python_stats["prompt_tokens"]
            for stop in options.get("stop", []):
                assert stop not in text
        messages = [{"role": "user", "content": "Speak of the moon."}]
        text, _, stats = capi.generate(ctx, messages=messages, **options)
        model.reset()
        assert text == model.generate(messages, **options)
        assert stats["finish_reason"] == model.last_generation_stats["finish_reason"]
    finally:
        capi.free_context(ctx)


def test_random_seed_is_reported_and_reproduces(capi, builtin):
    c_model, model = builtin
    ctx = capi.context(c_model)
    try:
        text, _, stats = capi.generate(ctx, "ROMEO.", max_new_tokens=20)
        model.reset()
        assert model.generate("ROMEO.", max_new_tokens=20, seed=stats["seed"]) == text
    finally:
        capi.free_context(ctx)


def test_sampling_defaults_match_python(capi, builtin):
    c_model, model = builtin
    import ctypes

    params = capi.lib.zipmoe_sampling_default_params()
    capi.check(capi.lib.zipmoe_model_sampling_defaults(c_model, ctypes.byref(params)))
    expected = model._sampling_options(None, None, None, None, None, None, 0)  # noqa: SLF001
    for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty"):
        assert getattr(params, name) == pytest.approx(expected[name], rel=1e-7), name
    assert params.max_new_tokens == model.generation_config.get("max_new_tokens", 256)


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_generate import make_text_model

    root = tmp_path_factory.mktemp("capi-generate")
    variants = {
        "greedy_config": dict(generation_config={"eos_token_id": [2], "max_length": 40}),
        "sampling_config": dict(generation_config={"do_sample": True, "temperature": 0.7, "top_k": 20,
                                                   "top_p": 0.9, "max_new_tokens": 9, "eos_token_id": 2}),
        "no_config": dict(generation_config=None),
        "bad_config": dict(generation_config={"do_sample": True, "temperature": -1.0}),
    }
    out = {}
    for name, kwargs in variants.items():
        folder = make_text_model(root / name, **kwargs)
        out[name] = root / f"{name}.zmoe"
        zipmoe.convert(folder, out[name])
    return out


@pytest.mark.parametrize("variant", ["greedy_config", "sampling_config", "no_config"])
def test_generation_defaults_of_other_models_match_python(capi, text_models, variant):
    path = text_models[variant]
    c_model = capi.load(path, threads=1)
    model = zipmoe.load(path, threads=1)
    ctx = capi.context(c_model)
    try:
        for seed in (1, 2):
            text, _, stats = capi.generate(ctx, "hello world", seed=seed)
            model.reset()
            assert text == model.generate("hello world", seed=seed)
            assert stats["generated_tokens"] == model.last_generation_stats["generated_tokens"]
            assert stats["finish_reason"] == model.last_generation_stats["finish_reason"]
        assert capi.tokenize(c_model, "Héllo wörld 😀".encode()) == model.tokenize("Héllo wörld 😀")
        assert capi.eos_tokens(c_model) == model.eos_token_ids
    finally:
        capi.free_context(ctx)
        capi.free(c_model)


def test_invalid_generation_config_is_a_format_error(capi, text_models):
    c_model = capi.load(text_models["bad_config"], threads=1)
    ctx = capi.context(c_model)
    try:
        with pytest.raises(CApiError, match="generation_config.json is invalid: temperature") as error:
            capi.generate(ctx, "hello")
        assert error.value.status == "ZIPMOE_ERR_FORMAT"
        text, _, _ = capi.generate(ctx, "hello", temperature=0.0, max_new_tokens=3)  # given: no default needed
        assert isinstance(text, str)
    finally:
        capi.free_context(ctx)
        capi.free(c_model)

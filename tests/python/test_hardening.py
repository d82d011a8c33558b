"""What a hostile or careless user tries: concurrent use of one model, absurd thread counts, text that is not
UTF-8, bad paths and out-of-range numbers, misleading messages. Each must end in a clear zipmoe error (one line
and a non-zero exit from the CLI) and leave the model usable. Runs on the built-in model: no torch needed."""

from __future__ import annotations

import json
import os
import pathlib
import re
import select
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import zipmoe

TIMEOUT = 60
PROMPT = "ROMEO."


def cli(*args, stdin: bytes | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`zipmoe ARGS` in a subprocess; stdout and stderr as text (undecodable bytes replaced)."""
    result = subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], input=stdin, capture_output=True,
                            timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8", "replace"),
                                       result.stderr.decode("utf-8", "replace"))


def assert_one_line_error(result: subprocess.CompletedProcess, *patterns: str) -> None:
    """A non-zero exit whose stderr ends in one line matching every pattern, with no traceback."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for pattern in patterns:
        assert re.search(pattern, last), (pattern, result.stderr)


def python_in_subprocess(code: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model():
    # exact: eval() in pieces equals one logits() call bit for bit
    return zipmoe.load(threads=1, precision="exact")


def copy_container(src, dst, change_metadata) -> pathlib.Path:
    """A copy of container ``src`` at ``dst`` with every tensor as it is and the metadata changed in place by
    ``change_metadata(metadata)``."""
    with zipmoe.open_container(src) as source:
        metadata = json.loads(json.dumps(source.metadata))
        change_metadata(metadata)
        with zipmoe.ContainerWriter(dst, metadata) as writer:
            for t in source.tensors:
                role = None if t.role == "dense" else {"layer": t.layer, "expert": t.expert,
                                                       "projection": t.projection}
                writer.add_tensor(t.name, source.read(t.name, threads=1), dtype=t.dtype, role=role, threads=1)
    return pathlib.Path(dst)


# ---- 1. one model, one use at a time ---------------------------------------------------------------------

def alone(model, prompt=PROMPT, **kwargs):
    return model.generate(prompt, max_new_tokens=12, temperature=0.9, seed=7, **kwargs)


def test_busy_error_is_a_zipmoe_error():
    assert issubclass(zipmoe.BusyError, zipmoe.ZipMoEError)
    assert "BusyError" in zipmoe.__all__


def test_interleaved_streams_refuse_the_second_and_keep_the_first_right(model):
    expected = alone(model)
    first = model.generate(PROMPT, max_new_tokens=12, temperature=0.9, seed=7, stream=True)
    second = model.generate("JULIET.", max_new_tokens=12, temperature=0.9, seed=7, stream=True)
    pieces = [next(first)]
    with pytest.raises(zipmoe.BusyError, match="in use"):
        next(second)
    for call in (lambda: model.generate(PROMPT, max_new_tokens=2), lambda: model.logits([1, 2]),
                 lambda: model.eval([3]), model.reset, lambda: list(model.generate("x", stream=True))):
        with pytest.raises(zipmoe.BusyError):
            call()
    pieces.extend(first)
    assert "".join(pieces) == expected
    # the stream is done: the model is free again, and nothing of the refused calls stuck to it
    assert alone(model) == expected
    assert alone(model, prompt="JULIET.") == model.generate("JULIET.", max_new_tokens=12, temperature=0.9, seed=7)


class _BlockingNative:
    """Delegates to the native model; the first logits() call waits until released (a long native call that
    another thread can overlap)."""

    def __init__(self, native):
        self._native = native
        self.entered = threading.Event()
        self.release = threading.Event()

    def logits(self, tokens):
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        return self._native.logits(tokens)

    def __getattr__(self, name):
        return getattr(self._native, name)


def test_a_second_thread_during_a_native_call_gets_busy(model):
    expected = model.logits([5, 6, 7])
    native = model._native
    blocking = model._native = _BlockingNative(native)
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("logits", model.logits([5, 6, 7])))
    try:
        worker.start()
        assert blocking.entered.wait(TIMEOUT)
        for call in (lambda: model.generate(PROMPT, max_new_tokens=2), lambda: model.logits([1]),
                     lambda: model.eval([1]), model.reset):
            with pytest.raises(zipmoe.BusyError):
                call()
    finally:
        blocking.release.set()
        worker.join(TIMEOUT)
        model._native = native
    assert (results["logits"] == expected).all()
    assert (model.eval([8]) == model.logits([5, 6, 7, 8])[-1:]).all()


def test_threads_generating_at_once_never_get_wrong_text(model):
    prompts = ["ROMEO.", "JULIET.", "HAMLET.", "KING LEAR."]
    expected = {p: alone(model, prompt=p) for p in prompts}
    outcomes = []

    def run(prompt):
        for _ in range(3):
            try:
                outcomes.append((prompt, alone(model, prompt=prompt)))
            except zipmoe.BusyError:
                outcomes.append((prompt, None))

    workers = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for w in workers:
        w.start()
    for w in workers:
        w.join(TIMEOUT)
    assert len(outcomes) == 12
    assert all(text is None or text == expected[prompt] for prompt, text in outcomes)


def test_reset_from_another_thread_mid_stream_is_refused(model):
    expected = alone(model)
    stream = model.generate(PROMPT, max_new_tokens=12, temperature=0.9, seed=7, stream=True)
    pieces = [next(stream)]
    errors = []

    def reset():
        try:
            model.reset()
        except zipmoe.BusyError as error:
            errors.append(error)

    other = threading.Thread(target=reset)
    other.start()
    other.join(TIMEOUT)
    assert len(errors) == 1 and "stream" in str(errors[0])
    assert "".join(pieces + list(stream)) == expected


def test_sequential_use_keeps_working(model):
    expected = alone(model)
    # a stream closed early, one dropped unfinished, one ended by an error in the consumer
    stream = model.generate(PROMPT, max_new_tokens=12, temperature=0.9, seed=7, stream=True)
    next(stream)
    stream.close()
    assert alone(model) == expected
    stream = model.generate(PROMPT, max_new_tokens=12, temperature=0.9, seed=7, stream=True)
    next(stream)
    del stream
    assert alone(model) == expected
    with pytest.raises(RuntimeError):
        for _ in model.generate(PROMPT, max_new_tokens=12, stream=True):
            raise RuntimeError("consumer failed")
    assert alone(model) == expected
    # a stream created but never started holds nothing
    unused = model.generate(PROMPT, max_new_tokens=12, stream=True)
    assert alone(model) == expected
    del unused
    # an error inside a generation (a bad token id) and Ctrl-C inside a native call
    with pytest.raises(zipmoe.InvalidArgumentError):
        model.generate([model.vocab_size], max_new_tokens=2)
    native = model._native

    class Interrupting:
        def eval(self, tokens, last_only=False):
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(native, name)

    model._native = Interrupting()
    try:
        with pytest.raises(KeyboardInterrupt):
            alone(model)
        with pytest.raises(KeyboardInterrupt):
            model.eval([1])
    finally:
        model._native = native
    assert alone(model) == expected
    # logits / eval / reset one after another, from several threads in turn
    first = model.logits([1, 2, 3])
    for tokens in ([4], [5]):
        worker = threading.Thread(target=model.eval, args=(tokens,))
        worker.start()
        worker.join(TIMEOUT)
    assert (model.eval([6]) == model.logits([1, 2, 3, 4, 5, 6])[-1:]).all()
    assert (model.logits([1, 2, 3]) == first).all()
    model.reset()
    assert model.position == 0


# ---- 2. thread counts ------------------------------------------------------------------------------------

def test_thread_counts_beyond_the_maximum_are_argument_errors(model, tmp_path):
    limit = zipmoe.MAX_THREADS
    assert limit == 1024
    weights = np.zeros(64, np.float32)
    blob = zipmoe.compress(weights)
    calls = {
        "load": lambda threads: zipmoe.load(threads=threads),
        "compress": lambda threads: zipmoe.compress(weights, threads=threads),
        "decompress": lambda threads: zipmoe.decompress(blob, threads=threads),
        "read": lambda threads: container.read(container.tensors[0].name, threads=threads),
    }
    container = zipmoe.open_container(model.path)
    for name, call in calls.items():
        for threads in (limit + 1, 10**6, 2**31, 2**64):
            with pytest.raises(zipmoe.InvalidArgumentError, match="1024"):
                call(threads)
    with pytest.raises(zipmoe.InvalidArgumentError, match="1024"):
        zipmoe._core.ThreadPool(limit + 1)
    assert zipmoe.compress(weights, threads=4) == blob
    for args in (("verify", model.path, "--threads", 0), ("verify", model.path, "--threads", 5000),
                 ("run", "-p", "x", "--threads", 10**6), ("profile", model.path, "--random", 1, "-o",
                                                          tmp_path / "p.json", "--threads", -3)):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert "--threads" in result.stderr and "1024" in result.stderr and "Traceback" not in result.stderr
        assert "FAILED" not in result.stdout  # an argument error, not blamed on the file


def test_a_failed_thread_start_is_an_error_and_the_pool_is_torn_down():
    # Thread stacks come out of the address space: a tight RLIMIT_AS makes thread creation fail (this works for
    # root too, unlike RLIMIT_NPROC).
    code = """
import resource, zipmoe

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1])

threads_before = status('Threads')
limit = status('VmSize') * 1024 + (96 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
for attempt in range(2):
    try:
        zipmoe._core.ThreadPool(400)
        print('no error')
    except zipmoe.ZipMoEError as error:
        print(type(error).__name__, '|', error)
print('threads left', status('Threads') - threads_before)
pool = zipmoe._core.ThreadPool(3)
print('small pool', pool.num_threads)
"""
    result = python_in_subprocess(code, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    for line in lines[:2]:
        assert line.startswith("ZipMoEError | cannot start thread"), result.stdout
        assert "of 400" in line and "fewer threads" in line
    assert lines[2] == "threads left 0"
    assert lines[3] == "small pool 3"


# ---- 4. text that is not UTF-8 ---------------------------------------------------------------------------

def test_lone_surrogates_are_clear_errors(model):
    for call in (lambda: model.tokenize("ROMEO.\udcff"), lambda: model.generate("a\ud800b", max_new_tokens=1),
                 lambda: model.tokenizer.encode("x\udfff"), lambda: model.tokenizer.encode_batch(["ok", "\ud800"]),
                 lambda: model.generate([{"role": "user", "content": "hi \udcff"}], max_new_tokens=1),
                 lambda: model.tokenizer.token_to_id("\ud800")):
        with pytest.raises(zipmoe.InvalidArgumentError, match=r"not valid Unicode.*U\+D[89a-fA-F]"):
            call()
    assert model.tokenize(b"ROMEO.\xff") != []  # bytes are taken as they are
    assert alone(model) == alone(model)


def test_cli_run_refuses_a_prompt_that_is_not_utf8(tmp_path):
    result = cli("run", "-p", os.fsdecode(b"ROMEO.\xff"), "-n", 2)
    assert_one_line_error(result, r"prompt \(-p\) is not UTF-8 text", r"byte 0xff at offset 6")
    result = cli("run", "-n", 2, stdin=b"ROMEO.\n\xfe\xff")
    assert_one_line_error(result, r"stdin is not UTF-8", r"0xfe", r"offset 7")
    result = cli("run", "-p", "ok", "--stop", os.fsdecode(b"\xff"), "-n", 2)
    assert_one_line_error(result, r"--stop is not UTF-8")


def test_cli_chat_survives_a_line_that_is_not_utf8():
    result = cli("chat", "-n", 3, "--seed", 1, "--temperature", 0, "--verbose",
                 stdin=b"ROMEO.\nJULIET.\xff\nROMEO.\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"line 2 is not UTF-8 text \(byte 0xff at offset 7\); skipped", result.stderr), result.stderr
    assert len(re.findall(r"generation: \d+ tokens", result.stderr)) == 2


# ---- 7. paths and numbers --------------------------------------------------------------------------------

def test_out_of_range_numbers_are_invalid_argument_errors(model):
    weights = np.zeros(16, np.float32)
    bad = [
        lambda: model.generate(PROMPT, top_k=2**31, max_new_tokens=1),
        lambda: model.generate(PROMPT, penalty_last_n=2**64, max_new_tokens=1),
        lambda: model.generate(PROMPT, temperature=10**400, max_new_tokens=1),
        lambda: zipmoe.load(memory_budget=2**64),
        lambda: zipmoe.load(memory_budget="1e30"),
        lambda: zipmoe.load(memory_budget=1e30),
        lambda: zipmoe.load(io_threads=2**31),
        lambda: zipmoe.load(io_threads=65),
        lambda: zipmoe.load(max_context=2**64),
        lambda: zipmoe.load(batch=2**64),
        lambda: zipmoe.load(storage_bandwidth=10**400),
        lambda: zipmoe.compress(weights, segment_symbols=-1),
        lambda: zipmoe.compress(weights, segment_symbols=2**32),
        lambda: zipmoe.compress(weights, segment_symbols=1.5),
        lambda: zipmoe.ContainerWriter("/nonexistent-dir/x.zmoe", segment_symbols=-1),
        lambda: model.tokenizer.id_to_token(2**64),
        lambda: model.detokenize([2**70]),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(zipmoe.InvalidArgumentError):
            call()
            pytest.fail(f"case {i} did not raise")


def test_save_routing_profile_to_a_bad_path_is_an_io_error(model, tmp_path):
    target = tmp_path / "profile.json"
    target.write_text("keep me")
    for path in (tmp_path / "missing" / "p.json", tmp_path, target / "p.json"):
        with pytest.raises(zipmoe.IoError, match=re.escape(str(path))):
            model.save_routing_profile(path)
    assert target.read_text() == "keep me"
    model.save_routing_profile(target)
    assert json.loads(target.read_text())["layers"]
    assert sorted(os.listdir(tmp_path)) == ["profile.json"]  # no temporary file left


def test_cli_profile_checks_its_files_before_the_work(model, tmp_path):
    out = tmp_path / "profile.json"
    binary = tmp_path / "prompts.bin"
    binary.write_bytes(b"ROMEO.\n\x00\xff\xfe\n")
    for prompts, message in ((tmp_path / "missing.txt", "No such file"), (tmp_path, "directory"),
                             (binary, "not UTF-8 text")):
        result = cli("profile", model.path, "--prompts", prompts, "-o", out)
        assert_one_line_error(result, re.escape(str(prompts)), message)
    # an unwritable output is found before a long run (a million random prompts would take minutes)
    for output in (tmp_path / "no" / "such" / "dir.json", tmp_path, binary / "x.json"):
        start = time.perf_counter()
        result = cli("profile", model.path, "--random", 10**6, "-o", output, timeout=30)
        assert_one_line_error(result, re.escape(str(output)))
        assert time.perf_counter() - start < 20
    assert not out.exists()
    result = cli("profile", model.path, "--text", PROMPT, "--generate", 2, "-o", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["layers"]


# ---- 9. misleading or missing errors ---------------------------------------------------------------------

def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "model.zmoe"
    os.mkfifo(fifo)
    for call in ("zipmoe.load(path)", "zipmoe.open_container(path)", "zipmoe.Tokenizer.from_gguf(path)"):
        code = f"import zipmoe\npath = {str(fifo)!r}\ntry:\n    {call}\nexcept zipmoe.ZipMoEError as e:\n" \
               f"    print(type(e).__name__, e)\n"
        result = python_in_subprocess(code, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "not a regular file" in result.stdout and "FIFO" in result.stdout, result.stdout
    result = cli("inspect", fifo, timeout=30)
    assert_one_line_error(result, "not a regular file")


def test_detokenize_refuses_ids_outside_the_vocabulary(model):
    for ids in ([model.vocab_size], [-1], [1, 2, 10**9], ["a"]):
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.detokenize(ids)
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.tokenizer.decode_bytes(ids)
        with pytest.raises(zipmoe.InvalidArgumentError):
            model.tokenizer.stream_decoder().feed(ids)
    assert model.detokenize(model.tokenize(PROMPT, add_special_tokens=False)) == PROMPT


def test_flags_must_be_bools(model):
    for value in ("no", 0, 1, None, "False"):
        with pytest.raises(zipmoe.InvalidArgumentError, match="add_special_tokens"):
            model.tokenize(PROMPT, add_special_tokens=value)
        with pytest.raises(zipmoe.InvalidArgumentError, match="add_special_tokens"):
            model.tokenizer.encode(PROMPT, add_special_tokens=value)
        with pytest.raises(zipmoe.InvalidArgumentError, match="skip_special_tokens"):
            model.detokenize([1], skip_special_tokens=value)
    for value in ("no", 0, 1):
        with pytest.raises(zipmoe.InvalidArgumentError, match="add_special_tokens"):
            model.generate(PROMPT, add_special_tokens=value, max_new_tokens=1)
        with pytest.raises(zipmoe.InvalidArgumentError, match="skip_special_tokens"):
            model.generate(PROMPT, skip_special_tokens=value, max_new_tokens=1)
    assert model.tokenize(PROMPT, add_special_tokens=np.bool_(False)) == model.tokenize(PROMPT, False)


def test_an_invalid_generation_config_is_blamed_on_the_model(model, tmp_path):
    path = copy_container(model.path, tmp_path / "bad_config.zmoe",
                          lambda m: m["generation_config"].update(temperature=-5))
    bad = zipmoe.load(path, threads=1)
    with pytest.raises(zipmoe.FormatError, match=r"generation_config\.json.*temperature.*-5"):
        bad.generate(PROMPT, max_new_tokens=2)
    # the caller's own value overrides it
    assert bad.generate(PROMPT, max_new_tokens=2, temperature=0) == model.generate(PROMPT, max_new_tokens=2,
                                                                                   temperature=0)
    with pytest.raises(zipmoe.InvalidArgumentError, match="temperature must be >= 0"):
        bad.generate(PROMPT, max_new_tokens=2, temperature=-1)
    result = cli("run", path, "-p", PROMPT, "-n", 2)
    assert_one_line_error(result, r"generation_config\.json", "temperature", "--temperature")


# ---- 10. forged or absurd values -------------------------------------------------------------------------

def relabel_as_mixtral(metadata):
    """The built-in qwen3_moe model's metadata made a mixtral's: every tensor a mixtral reads is there, with
    the shapes its config now implies; only the q/k norms are left over."""
    config = metadata["config"]
    metadata["architecture"] = config["model_type"] = "mixtral"
    config["intermediate_size"] = config["moe_intermediate_size"]


def test_a_relabelled_container_is_refused(model, tmp_path):
    forged = copy_container(model.path, tmp_path / "forged.zmoe", relabel_as_mixtral)
    with pytest.raises(zipmoe.FormatError, match=r"8 tensors are not part of a mixtral model .*attn_k_norm"):
        zipmoe.load(forged, threads=1)
    # the other way: an architecture that needs tensors the container lacks
    lacking = copy_container(model.path, tmp_path / "lacking.zmoe",
                             lambda m: m.update(architecture="qwen2_moe") or m["config"].update(
                                 model_type="qwen2_moe", shared_expert_intermediate_size=64))
    with pytest.raises(zipmoe.FormatError, match="ffn_gate_inp_shexp|shexp"):
        zipmoe.load(lacking, threads=1)


def test_a_context_no_memory_holds_fails_at_once_naming_the_kv_cache():
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # beyond the trained length
        with pytest.raises(zipmoe.BudgetError, match=r"KV cache .* for 16777216 positions.*max_context"):
            zipmoe.load(threads=1, max_context=2**24)
        with pytest.raises(zipmoe.BudgetError, match=r"memory_budget .* KV cache .* for 16777216 positions"):
            zipmoe.load(threads=1, max_context=2**24, memory_budget="1GB")
    assert time.monotonic() - started < 10


def test_a_long_context_costs_no_memory_until_it_is_used():
    # half a million positions: the KV cache (1 GB of bf16) is allocated, not touched, and nothing else grows
    # with the context (RoPE rows for every position were 128 MB, written at load)
    code = """if True:
        import resource, warnings, zipmoe
        warnings.simplefilter("ignore")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model = zipmoe.load(threads=1, max_context=2**19, kv_cache_dtype="bf16")
        text = model.generate("ROMEO.", max_new_tokens=4, temperature=0)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """
    result = python_in_subprocess(code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 64, f"peak resident size grew by {result.stdout.strip()} MiB"


def test_the_budget_is_checked_before_any_weight_is_read(model, tmp_path):
    # token_embd's raw plane damaged: a load that reads any dense weight reports the damage
    data = bytearray(pathlib.Path(model.path).read_bytes())
    with zipmoe.open_container(model.path) as container:
        chunk = next(c for c in container.chunks() if c["tensor"] == 0 and c["kind"] == "sm")
    data[chunk["offset"] + 100] ^= 0x10
    damaged = tmp_path / "damaged.zmoe"
    damaged.write_bytes(bytes(data))
    with pytest.raises(zipmoe.ChecksumError):
        zipmoe.load(damaged, threads=1)
    with pytest.raises(zipmoe.BudgetError, match="memory_budget .* too small"):
        zipmoe.load(damaged, threads=1, memory_budget="1MB")


# ---- 12. messages that send users the wrong way ----------------------------------------------------------

def test_chat_on_a_container_without_a_tokenizer_says_so(model, tmp_path):
    def strip(metadata):
        del metadata["tokenizer"], metadata["chat_template"]

    path = copy_container(model.path, tmp_path / "no_tokenizer.zmoe", strip)
    result = cli("chat", path, stdin=b"hello\n")
    assert_one_line_error(result, "no tokenizer", "tokenizer.json")
    assert "chat template" not in result.stderr
    result = cli("run", path, "-p", "hello")
    assert_one_line_error(result, "no tokenizer", "tokenizer.json")


def test_loading_a_hugging_face_folder_says_to_convert_it(tmp_path):
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(zipmoe.ZipMoEError, match=r"Hugging Face model folder.*zipmoe convert .*hf-model -o "):
        zipmoe.load(folder)
    result = cli("run", folder, "-p", "x")
    assert_one_line_error(result, "Hugging Face model folder", "zipmoe convert")
    with pytest.raises(zipmoe.ZipMoEError, match="a directory, not a .zmoe file"):
        zipmoe.load(tmp_path)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    for call in (zipmoe.load, zipmoe.open_container):
        with pytest.raises(zipmoe.FormatError, match=r"GGUF file; convert it first with `zipmoe convert .*model\.gguf "
                                                     r"-o model\.zmoe`"):
            call(gguf)


def test_the_budget_error_names_options_the_cli_has(model):
    result = cli("run", "-p", PROMPT, "-n", 1, "--memory-budget", "1MB")
    assert_one_line_error(result, "memory_budget", "max_context or batch")
    minimum = lambda text: int(re.search(r"the minimum is [^(]*\((\d+) bytes\)", text).group(1))  # noqa: E731
    smaller = cli("run", "-p", PROMPT, "-n", 1, "--memory-budget", "1MB", "--batch", 1)
    assert_one_line_error(smaller, "memory_budget")
    assert minimum(smaller.stderr) < minimum(result.stderr)


def test_max_context_beyond_the_trained_length_warns(model):
    trained = model.info["max_position_embeddings"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zipmoe.load(threads=1, max_context=trained)
    assert not caught
    with pytest.warns(UserWarning, match=rf"max_context {2 * trained} .* {trained} positions"):
        zipmoe.load(threads=1, max_context=2 * trained)
    result = cli("run", "-p", PROMPT, "-n", 1, "--max-context", 2 * trained)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"zipmoe: warning: max_context {2 * trained} .*\n", result.stderr), result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as Linux has them")
def test_chat_has_line_editing_and_history_on_a_terminal():
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: zipmoe chat with the terminal as stdin, stdout and stderr
        env = dict(os.environ, TERM="xterm")
        os.execve(sys.executable, [sys.executable, "-m", "zipmoe", "chat", "-n", "4", "--temperature", "0",
                                   "--verbose"], env)
    output = b""
    deadline = time.monotonic() + TIMEOUT

    def wait_for(pattern: bytes, count: int) -> None:
        nonlocal output
        while len(re.findall(pattern, output)) < count:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {output!r}")
            try:
                output += os.read(fd, 4096)
            except OSError:
                raise AssertionError(f"chat ended early; got {output!r}") from None

    try:
        wait_for(rb"> ", 1)
        # a message; a new conversation; the first message again by the up arrow (history: /reset, then it);
        # a new conversation; the first message typed as "ROMO." with the "E" inserted after two left arrows
        steps = ((b"ROMEO.\r", rb"generation: \d+ tokens", 1), (b"/reset\r", rb"conversation reset", 1),
                 (b"\x1b[A\x1b[A\r", rb"generation: \d+ tokens", 2), (b"/reset\r", rb"conversation reset", 2),
                 (b"ROMO.\x1b[D\x1b[DE\r", rb"generation: \d+ tokens", 3))
        for prompts, (keys, pattern, count) in enumerate(steps, start=2):
            os.write(fd, keys)
            wait_for(pattern, count)
            wait_for(rb"> ", prompts)
        os.write(fd, b"\x04")  # Ctrl-D quits
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = output.decode("utf-8", "replace")
    prompt_tokens = re.findall(r"prompt: (\d+) tokens", text)
    assert len(prompt_tokens) == 3 and len(set(prompt_tokens)) == 1, text
    assert "^[[" not in text
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

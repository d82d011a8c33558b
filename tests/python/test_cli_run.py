"""`zipmoe run` and `zipmoe chat` as subprocesses on a tiny converted model."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import zipmoe

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from test_generate import make_text_model  # noqa: E402

TIMEOUT = 120


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_run")
    folder = make_text_model(root / "model", generation_config={"eos_token_id": 2})
    path = root / "model.zmoe"
    zipmoe.convert(folder, path, threads=2)
    return path


def zipmoe_cli(*args, stdin: str | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", errors="strict", timeout=TIMEOUT, env=env,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def generation_tokens(stderr: str) -> list:
    return [int(m) for m in re.findall(r"generation: (\d+) tokens", stderr)]


def test_run_streams_the_same_text_as_generate(model_path):
    result = zipmoe_cli("run", model_path, "-p", "To be, or not", "-n", 12, "--temperature", 0.9, "--seed", 5,
                        "--threads", 1)
    assert result.returncode == 0, result.stderr
    model = zipmoe.load(model_path, threads=1)
    expected = model.generate("To be, or not", max_new_tokens=12, temperature=0.9, seed=5)
    assert result.stdout == expected + "\n"
    assert "Traceback" not in result.stderr


def test_run_n_limits_and_verbose_prints_tokens_per_second(model_path):
    result = zipmoe_cli("run", model_path, "-p", "hello world", "-n", 4, "--temp", 1.0, "--seed", 1, "--verbose")
    assert result.returncode == 0, result.stderr
    assert re.search(r"prompt: \d+ tokens .* [\d.]+ tokens/s; generation: \d+ tokens in .* [\d.]+ tokens/s",
                     result.stderr), result.stderr
    counts = generation_tokens(result.stderr)
    assert len(counts) == 1 and 1 <= counts[0] <= 4
    assert "tokens/s" not in result.stdout


def test_run_seed_is_reproducible(model_path):
    args = ("run", model_path, "-p", "hello", "-n", 16, "--temperature", 1.0, "--top-k", 0, "--top-p", 1.0,
            "--min-p", 0.0, "--repeat-penalty", 1.1)
    first = zipmoe_cli(*args, "--seed", 42)
    again = zipmoe_cli(*args, "--seed", 42)
    assert first.returncode == 0 and first.stdout == again.stdout
    others = {zipmoe_cli(*args, "--seed", s).stdout for s in (43, 44, 45)}
    assert others != {first.stdout}


def test_run_chat_mode_stop_and_stdin_prompt(model_path):
    result = zipmoe_cli("run", model_path, "-p", "hi", "--chat", "--system", "Be brief.", "-n", 6, "--seed", 3)
    assert result.returncode == 0, result.stderr
    model = zipmoe.load(model_path, threads=1)
    expected = model.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                              max_new_tokens=6, seed=3)
    assert result.stdout == expected + "\n"
    piped = zipmoe_cli("run", model_path, "-n", 6, "--seed", 3, stdin="hi")
    assert piped.returncode == 0
    assert piped.stdout == model.generate("hi", max_new_tokens=6, seed=3) + "\n"
    full = model.generate("hi", max_new_tokens=20, temperature=1.0, seed=8)
    if len(full) > 4:
        stop = full[2:4]
        stopped = zipmoe_cli("run", model_path, "-p", "hi", "-n", 20, "--temperature", 1.0, "--seed", 8,
                             "--stop", stop)
        assert stopped.stdout == full[:full.find(stop)] + "\n"


def test_load_options_and_stats(model_path):
    result = zipmoe_cli("run", model_path, "-p", "hello", "-n", 3, "--seed", 0, "--threads", 1, "--memory-budget",
                        "1GB", "--io", "mmap", "--cache-policy", "lfu", "--no-prefetch", "--stats")
    assert result.returncode == 0, result.stderr
    assert "experts: streamed within the memory budget" in result.stderr
    assert re.search(r"\d+ requests, \d+ hits", result.stderr)
    assert "decoded" in result.stderr and "stalled" in result.stderr
    # the machine's speeds the expert cache planned with, and its plan
    assert re.search(r"machine \((measured|cached)\): reads [0-9.]+ GB/s", result.stderr)
    assert re.search(r"plan: full \d+, compressed \d+, sm \d+, e \d+ of \d+ experts", result.stderr)
    for io in ("direct", "pread"):
        assert zipmoe_cli("run", model_path, "-p", "x", "-n", 2, "--io", io, "--cache-policy", "lru").returncode == 0


def test_run_precision_exact_gives_the_same_text_on_every_isa_path():
    # The built-in model with a seed whose text differed between ZIPMOE_ISA=scalar and avx2 before exact mode
    # was made the same bits on every path.
    args = ("run", "-p", "KING.\n", "-n", 48, "--temp", 1.0, "--seed", 26, "--threads", 1, "--precision", "exact")
    outputs = {}
    for isa in zipmoe.available_isas():
        result = zipmoe_cli(*args, env_extra={"ZIPMOE_ISA": isa})
        assert result.returncode == 0, result.stderr
        outputs[isa] = result.stdout
    assert len(set(outputs.values())) == 1, outputs
    expected = zipmoe.load(threads=1, precision="exact").generate("KING.\n", max_new_tokens=48, temperature=1.0,
                                                                   seed=26)
    assert outputs["scalar"] == expected + "\n"
    assert zipmoe_cli("run", "-p", "x", "--precision", "sloppy").returncode == 2


def test_chat_over_piped_stdin_answers_each_line_and_exits_on_eof(model_path):
    result = zipmoe_cli("chat", model_path, "-n", 5, "--seed", 2, "--verbose", stdin="hello there\nhow are you\n")
    assert result.returncode == 0, result.stderr
    prompts = [int(m) for m in re.findall(r"prompt: (\d+) tokens", result.stderr)]
    assert len(prompts) == 2
    assert prompts[1] > prompts[0]  # the conversation is kept
    assert "Traceback" not in result.stderr
    # the answers are what generate gives for the same conversation
    model = zipmoe.load(model_path, threads=1)
    conversation = [{"role": "user", "content": "hello there"}]
    first = model.generate(conversation, max_new_tokens=5, seed=2)
    conversation += [{"role": "assistant", "content": first}, {"role": "user", "content": "how are you"}]
    second = model.generate(conversation, max_new_tokens=5, seed=2)
    assert result.stdout == f"{first}\n{second}\n"


def test_chat_reset_and_exit_commands(model_path):
    result = zipmoe_cli("chat", model_path, "-n", 3, "--seed", 2, "--verbose",
                        stdin="hello there\n/reset\nhello there\n\n/exit\nnever read\n")
    assert result.returncode == 0, result.stderr
    prompts = [int(m) for m in re.findall(r"prompt: (\d+) tokens", result.stderr)]
    assert len(prompts) == 2 and prompts[0] == prompts[1]  # after /reset the same message is the whole prompt
    assert "(conversation reset)" in result.stderr
    empty = zipmoe_cli("chat", model_path, stdin="")
    assert empty.returncode == 0 and empty.stdout == ""


def test_bad_arguments_give_a_message_and_no_traceback(model_path, tmp_path):
    cases = [
        (("run", model_path, "-p", "x", "--temperature", "-1"), 1, "temperature"),
        (("run", model_path, "-p", "x", "--top-p", "0"), 1, "top_p"),
        (("run", model_path, "-p", "x", "--top-k", "abc"), 2, "--top-k"),
        (("run", model_path, "-p", "x", "-n", "-3"), 1, "max_new_tokens"),
        (("run", tmp_path / "missing.zmoe", "-p", "x"), 1, "missing.zmoe"),
        (("run", model_path, "-p", "x", "--io", "floppy"), 2, "--io"),
        (("run", model_path, "-p", "x", "--memory-budget", "lots"), 1, "lots"),
        (("chat", model_path, "--repeat-penalty", "0"), 1, "repetition_penalty"),
    ]
    for args, code, needle in cases:
        result = zipmoe_cli(*args, stdin="hello\n" if args[0] == "chat" else None)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)


def test_without_a_model_the_default_one_is_used(model_path):
    default = pathlib.Path(zipmoe.__file__).parent / "data" / "zipmoe-tiny-shakespeare.zmoe"
    result = zipmoe_cli("run", "-p", "ROMEO:", "-n", 5, "--seed", 1)
    if default.is_file():
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert "installed without its default model" in result.stderr
        assert "Traceback" not in result.stderr


def test_chat_past_the_context_says_so_and_goes_on(model_path):
    # with this tiny vocabulary the first turn's prompt takes 26 tokens, the second's about 60
    line = "to be or not to be"
    result = zipmoe_cli("chat", model_path, "--max-context", 48, "-n", 4, "--seed", 1,
                        stdin=f"{line}\n{line}\n/reset\nhi\n")
    assert result.returncode == 0, result.stderr
    assert "/reset starts over" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.count("\n") >= 2  # the first answer and the one after /reset

"""examples/simple.c and examples/chat.cpp built against zipmoe as an application builds them (find_package(zipmoe)
with zipmoe.get_cmake_dir(), and pkg-config), run on the built-in model without LD_LIBRARY_PATH: their text is
Python's (greedy, and seeded sampling).

ZIPMOE_EXAMPLES_PREFIX=<an install prefix of `cmake --install`> also builds them against that prefix (CI does).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

import zipmoe
from conftest import REPO

EXAMPLES = REPO / "examples"
CHAT_LINES = ["Speak of love.", "And of war?", "/reset", "Who art thou?"]


def _environment() -> dict:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)  # the programs must find libzipmoe by their rpath
    env.pop("DYLD_LIBRARY_PATH", None)
    return env


def _build(build: pathlib.Path, **definitions) -> pathlib.Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [cmake, "-S", str(EXAMPLES), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release"]
    configure += [f"-D{k}={v}" for k, v in definitions.items()]
    for command in (configure, [cmake, "--build", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return build


def _sources() -> list:
    sources = [("wheel or development build", {"zipmoe_DIR": zipmoe.get_cmake_dir()})]
    prefix = os.environ.get("ZIPMOE_EXAMPLES_PREFIX")
    if prefix:
        sources.append(("install prefix", {"CMAKE_PREFIX_PATH": prefix}))
    return sources


@pytest.fixture(scope="module")
def model():
    return zipmoe.load(threads=2)


_BUILDS = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name of a source of _sources() -> the folder of the examples built against it (built on first use)."""
    def get(name, definitions):
        if name not in _BUILDS:
            _BUILDS[name] = _build(tmp_path_factory.mktemp("examples"), **definitions)
        return _BUILDS[name]
    return get


def _expected_chat(model, lines, **options) -> str:
    messages, out = [], []
    for line in lines:
        if line == "/reset":
            messages = []
            continue
        messages.append({"role": "user", "content": line})
        model.reset()  # a fresh sequence per turn, as zipmoe_generate_chat
        reply = model.generate(messages, **options)
        messages.append({"role": "assistant", "content": reply})
        out.append(reply + "\n")
    return "".join(out)


@pytest.mark.parametrize("name,definitions", _sources(), ids=[s[0] for s in _sources()])
def test_examples_give_pythons_text(built, model, name, definitions):
    build = built(name, definitions)
    path = zipmoe.default_model_path()
    env = _environment()
    for arguments, options in ((["32", "0"], dict(temperature=0.0)), (["40", "0.8", "42"], dict(temperature=0.8,
                                                                                               seed=42))):
        run = subprocess.run([str(build / "simple"), path, "ROMEO.", *arguments], capture_output=True, text=True,
                             env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        model.reset()
        max_new_tokens = int(arguments[0])
        assert run.stdout == model.generate("ROMEO.", max_new_tokens=max_new_tokens, **options) + "\n"
        assert "tokens/s" in run.stderr
    run = subprocess.run([str(build / "chat"), path, "--temperature", "0", "--max-new-tokens", "24"],
                         input="\n".join(CHAT_LINES) + "\n", capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == _expected_chat(model, CHAT_LINES, temperature=0.0, max_new_tokens=24)


def test_pkg_config_builds_simple_c(tmp_path, model):
    pkg_config = shutil.which("pkg-config")
    compiler = shutil.which("cc")
    if pkg_config is None or compiler is None:
        pytest.skip("pkg-config or a C compiler is not installed")
    env = _environment()
    env["PKG_CONFIG_PATH"] = zipmoe.get_pkgconfig_dir()
    flags = subprocess.run([pkg_config, "--cflags", "--libs", "zipmoe"], capture_output=True, text=True, env=env,
                           check=True).stdout.split()
    program = tmp_path / "simple"
    subprocess.run([compiler, "-std=c99", str(EXAMPLES / "simple.c"), "-o", str(program), *flags], check=True,
                   env=env)
    run = subprocess.run([str(program), zipmoe.default_model_path(), "ROMEO.", "16", "0"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    model.reset()
    assert run.stdout == model.generate("ROMEO.", max_new_tokens=16, temperature=0.0) + "\n"


def test_bad_model_path_is_one_clear_line(built, tmp_path):
    build = built(*_sources()[0])
    run = subprocess.run([str(build / "simple"), str(tmp_path / "missing.zmoe")], capture_output=True, text=True,
                         env=_environment())
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "missing.zmoe" in run.stderr

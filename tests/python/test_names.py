"""The Python package takes the core's name tables from the core (zipmoe._names, _core.names()), never a copy."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import zipmoe
from zipmoe import _core, _dtypes, _names, cli, codec, model

KINDS = {"dtype": "DTYPES", "isa": "ISAS", "io_mode": "IO_MODES", "cache_policy": "CACHE_POLICIES",
         "expert_tier": "EXPERT_TIERS", "precision": "PRECISIONS"}


def test_the_tables_are_the_cores():
    core = _core.names()
    assert set(core) == set(KINDS) | {"codec"}
    for kind, attribute in KINDS.items():
        assert getattr(_names, attribute) == tuple(core[kind]), kind
    assert set(_names.CODECS) == set(core["codec"]) - {"constant"} and _names.CODECS[0] == "auto"
    assert set(zipmoe.available_isas()) <= set(_names.ISAS) and zipmoe.default_isa() in _names.ISAS
    assert set(_dtypes.NUMPY_DTYPES) == set(_names.DTYPES)


def test_modules_use_the_shared_tables_not_copies():
    assert model.PRECISIONS is _names.PRECISIONS
    assert model.CACHE_POLICIES is _names.CACHE_POLICIES
    assert model.EXPERT_TIERS is _names.EXPERT_TIERS
    assert model.KV_CACHE_DTYPES is _names.FLOAT_DTYPES
    from zipmoe.conversion import converter

    assert converter.CODECS is _names.CODECS


def test_canonical_names_resolve_the_cores_aliases():
    assert _core.canonical_name("dtype", "BFloat16") == "bf16"
    assert _core.canonical_name("dtype", "half") == "f16"
    assert _core.canonical_name("isa", "AVX2") == "avx2"
    assert _core.canonical_name("io_mode", "async") is None
    for kind, names in _core.names().items():
        for name in names:
            assert _core.canonical_name(kind, name) == name
    with pytest.raises(zipmoe.InvalidArgumentError, match="no name table"):
        _core.canonical_name("colour", "red")


def test_every_dtype_codec_and_isa_name_works():
    values = np.linspace(-1, 1, 5000, dtype=np.float32)
    arrays = {"bf16": (values.view(np.uint32) >> 16).astype(np.uint16), "f16": values.astype(np.float16),
              "f32": values, "u8": np.frombuffer(values.tobytes(), dtype=np.uint8)}
    for dtype in _names.DTYPES:
        for name in _names.CODECS:
            try:
                blob = zipmoe.compress(arrays[dtype], dtype=dtype, codec=name)
            except zipmoe.ZipMoEError as error:
                assert name == "lz4hc" and "liblz4" in str(error)  # a build without liblz4
                continue
            for isa in zipmoe.available_isas():
                assert zipmoe.decompress(blob, isa=isa).tobytes() == arrays[dtype].tobytes(), (dtype, name, isa)
    with pytest.raises(zipmoe.InvalidArgumentError):
        zipmoe.compress(values, codec="constant")  # the coder's own choice, never a request
    with pytest.raises(zipmoe.InvalidArgumentError, match="'bf16', 'f16', 'f32'"):
        zipmoe.compress(values, dtype="f8")


def test_python_side_checks_name_the_cores_choices(tmp_path):
    with pytest.raises(zipmoe.InvalidArgumentError, match="precision must be one of " + ", ".join(_names.PRECISIONS)):
        zipmoe.load(tmp_path / "missing.zmoe", precision="approximate")
    with pytest.raises(zipmoe.InvalidArgumentError, match="cache_policy must be one of " +
                       ", ".join(_names.CACHE_POLICIES)):
        zipmoe.load(tmp_path / "missing.zmoe", cache_policy="random")
    with pytest.raises(zipmoe.InvalidArgumentError, match="io must be one of " + ", ".join(_names.IO_MODES)):
        zipmoe.open_container(tmp_path / "missing.zmoe", io="async")


def _options(parser: argparse.ArgumentParser, flag: str) -> dict:
    """{subcommand: choices of ``flag``} over every subcommand that has it."""
    found = {}
    for action in parser._subparsers._group_actions:
        for command, subparser in action.choices.items():
            for option in subparser._actions:
                if flag in option.option_strings:
                    found[command] = tuple(option.choices)
    return found


def test_cli_choices_are_the_cores_names():
    parser = cli.build_parser()
    assert _options(parser, "--io") == dict.fromkeys(("verify", "profile", "run", "chat", "serve"), _names.IO_MODES)
    assert _options(parser, "--cache-policy") == dict.fromkeys(("run", "chat", "serve"), _names.CACHE_POLICIES)
    assert _options(parser, "--codec") == {"convert": _names.CODECS}

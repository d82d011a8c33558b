"""zipmoe.load's options: one checked record (model.LoadOptions) behind the unchanged public signature."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib

import pytest

import zipmoe
from zipmoe.model import LoadOptions


def test_load_keeps_its_signature_and_names_every_option():
    params = inspect.signature(zipmoe.load).parameters
    assert list(params)[:3] == ["path", "threads", "max_context"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in list(params.values())[:3])
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[3:])
    assert params["path"].default is None
    fields = {f.name: f.default for f in dataclasses.fields(LoadOptions)}
    assert {name: p.default for name, p in params.items() if name != "path"} == fields


def test_options_become_the_native_arguments():
    options = LoadOptions(threads=3, memory_budget="1.5 GiB", tiers="full+SM",
                          profile=pathlib.Path("/tmp/profile.json"), storage_bandwidth=2e9, io_threads=4)
    arguments = options.native_arguments()
    assert arguments["threads"] == 3 and arguments["io_threads"] == 4
    assert arguments["memory_budget"] == 3 << 29
    assert arguments["tiers"] == ["full", "sm"]
    assert arguments["routing_profile"] == "/tmp/profile.json"
    assert arguments["storage_bandwidth"] == 2e9 and arguments["decode_throughput"] == 0.0
    defaults = LoadOptions().native_arguments()
    assert (defaults["max_context"], defaults["batch"], defaults["memory_budget"], defaults["tiers"]) == \
        (0, 0, 0, None)
    assert defaults["threads"] >= 1 and defaults["routing_profile"] == ""
    native_signature = zipmoe._core.Model.__init__.__doc__
    for name in arguments:  # every argument is one the native engine takes
        assert f" {name}: " in native_signature, name


@pytest.mark.parametrize("bad", [dict(threads=0), dict(max_context=True), dict(batch=1.5), dict(io_threads=-1),
                                 dict(memory_budget=0), dict(memory_budget="lots"), dict(tiers=["full", "l2"]),
                                 dict(precision="approximate"), dict(cache_policy="random"),
                                 dict(storage_bandwidth=float("inf")), dict(decode_throughput=0)])
def test_bad_options_are_refused_before_the_file_is_opened(bad, tmp_path):
    with pytest.raises(zipmoe.InvalidArgumentError):
        LoadOptions(**bad).native_arguments()
    with pytest.raises(zipmoe.InvalidArgumentError):
        zipmoe.load(tmp_path / "missing.zmoe", **bad)

"""`zipmoe inspect` and `zipmoe verify`, run as a user would (python -m zipmoe)."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import zipmoe
from conftest import make_weights

METADATA = {"architecture": "qwen2_moe", "tokenizer": {"vocab_size": 3}, "name": "tiny ✓",
            "chat_template": "x" * 200}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.zmoe"
    with zipmoe.ContainerWriter(path, METADATA) as w:
        w.add_tensor("model.embed_tokens.weight", make_weights("bf16", (64, 32), seed=1), dtype="bf16")
        w.add_tensor("model.norm.weight", make_weights("f32", (32,), seed=2), codec="raw")
        for expert in range(2):
            for projection in ("gate", "up", "down"):
                w.add_tensor(f"model.layers.0.mlp.experts.{expert}.{projection}_proj.weight",
                             make_weights("bf16", (96, 32), seed=10 + expert), dtype="bf16",
                             role={"layer": 0, "expert": expert, "projection": projection})
    return path


def test_inspect_prints_metadata_tensors_and_totals(model):
    run = run_cli("inspect", model)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "zipmoe container 1.0" in out
    assert "architecture: \"qwen2_moe\"" in out
    assert "tokenizer: {1 keys}" in out
    assert "chat_template: <text, 200 characters>" in out
    assert "model.embed_tokens.weight" in out
    assert "L0 E1 down" in out
    assert "64x32" in out
    for role in ("dense", "expert", "all"):
        assert any(line.startswith(role) for line in out.splitlines()), role
    assert "ratio" in out and "exp.bits" in out
    run = run_cli("inspect", "--no-tensors", model)
    assert run.returncode == 0
    assert "model.embed_tokens.weight" not in run.stdout


def test_inspect_json_is_complete_and_consistent(model):
    run = run_cli("inspect", "--json", model)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["metadata"] == METADATA
    assert report["version"] == "1.0"
    assert report["file_size"] % 4096 == 0
    tensors = report["tensors"]
    assert len(tensors) == 8
    norm = next(t for t in tensors if t["name"] == "model.norm.weight")
    assert norm["codec"] == "raw" and norm["dtype"] == "f32" and norm["shape"] == [32] and norm["role"] == "dense"
    experts = [t for t in tensors if t["role"] == "expert"]
    assert {(t["layer"], t["expert"], t["projection"]) for t in experts} == {
        (0, e, p) for e in range(2) for p in ("gate", "up", "down")}
    totals = report["totals"]
    assert totals["dense"]["tensors"] == 2 and totals["expert"]["tensors"] == 6 and totals["all"]["tensors"] == 8
    for key in ("raw_bytes", "stored_bytes", "elements"):
        assert totals["all"][key] == totals["dense"][key] + totals["expert"][key]
    assert totals["expert"]["raw_bytes"] == 6 * 96 * 32 * 2
    assert totals["all"]["stored_bytes"] == sum(t["exponent_bytes"] + t["sm_bytes"] for t in tensors)
    assert totals["all"]["ratio"] == pytest.approx(totals["all"]["raw_bytes"] / totals["all"]["stored_bytes"])
    assert 0.0 < totals["all"]["exponent_entropy"] < 8.0


@pytest.mark.parametrize("io", ["pread", "direct", "mmap"])
def test_verify_clean_file(model, io):
    run = run_cli("verify", "--io", io, "--threads", "2", model)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK:")
    assert "8 tensors" in run.stdout and "16 chunk checksums" in run.stdout


def test_verify_names_the_damaged_tensor_and_chunk(model, tmp_path):
    data = bytearray(model.read_bytes())
    with zipmoe.open_container(model) as c:
        tensor = c.info("model.layers.0.mlp.experts.1.up_proj.weight")
        chunk = c.chunks()[tensor.exponent_chunk]
    data[chunk["offset"] + chunk["stored_size"] // 2] ^= 0x01
    bad = tmp_path / "bad.zmoe"
    bad.write_bytes(bytes(data))
    run = run_cli("verify", bad)
    assert run.returncode == 1
    first = run.stdout.splitlines()[0]
    assert first.startswith("FAILED:")
    assert str(bad) in first
    assert "'model.layers.0.mlp.experts.1.up_proj.weight'" in first
    assert f"chunk {chunk['index']} (exponent plane)" in first
    assert "1 of 8 tensors failed" in run.stdout


def test_verify_and_inspect_reject_broken_files(model, tmp_path):
    data = model.read_bytes()
    truncated = tmp_path / "truncated.zmoe"
    truncated.write_bytes(data[:-4096])
    run = run_cli("verify", truncated)
    assert run.returncode == 1
    assert "FAILED:" in run.stdout and "truncated" in run.stdout and str(truncated) in run.stdout
    run = run_cli("inspect", truncated)
    assert run.returncode == 1
    assert "truncated" in run.stderr
    newer = tmp_path / "newer.zmoe"
    newer.write_bytes(data[:8] + struct.pack("<H", 7) + data[10:])
    run = run_cli("verify", newer)
    assert run.returncode == 1 and "version 7.0 is not supported" in run.stdout
    run = run_cli("verify", tmp_path / "missing.zmoe")
    assert run.returncode == 1 and "No such file" in run.stdout
    run = run_cli("inspect", tmp_path / "missing.zmoe")
    assert run.returncode == 1 and "No such file" in run.stderr


def test_inspect_empty_container(tmp_path):
    path = tmp_path / "empty.zmoe"
    with zipmoe.ContainerWriter(path, {}):
        pass
    run = run_cli("inspect", path)
    assert run.returncode == 0, run.stderr
    assert "0 tensors" in run.stdout and "metadata: (empty)" in run.stdout
    run = run_cli("verify", path)
    assert run.returncode == 0 and run.stdout.startswith("OK:")
    report = json.loads(run_cli("inspect", "--json", path).stdout)
    assert report["tensors"] == [] and report["totals"]["all"]["ratio"] is None
    assert np.isclose(report["file_size"], 8192)

"""convert refuses configs the engine would refuse (by the engine's own rules), warns about containers the engine
cannot fully use, and reports tensor data and file size separately."""

import json
import shutil
import subprocess
import sys
import warnings

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import zipmoe  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    return make_tiny_model("mixtral", tmp_path_factory.mktemp("hf") / "mixtral")


def _with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("change, key", [
    ({"num_experts_per_tok": 0}, "num_experts_per_tok"),
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    ({"max_position_embeddings": 0}, "max_position_embeddings"),
    ({"num_experts_per_tok": "two"}, "num_experts_per_tok"),
    ({"rope_parameters": {"rope_theta": 0.5, "rope_type": "default"}}, "rope_theta"),
])
def test_a_config_the_engine_refuses_is_refused_at_convert(change, key, mixtral, tmp_path):
    src = _with_config(mixtral, tmp_path / "src", **change)
    with pytest.raises(zipmoe.FormatError, match=key):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert not (tmp_path / "m.zmoe").exists()
    # --generic stores any checkpoint, runnable or not
    zipmoe.convert(src, tmp_path / "g.zmoe", generic=True)


def test_every_converted_container_loads(mixtral, tmp_path):
    """The other side of the rule: what convert accepts, the engine loads."""
    zipmoe.convert(mixtral, tmp_path / "m.zmoe")
    model = zipmoe.load(tmp_path / "m.zmoe", threads=1)
    assert model.info["num_moe_layers"] == 2


def test_a_feature_the_engine_lacks_converts_with_a_warning(mixtral, tmp_path):
    src = _with_config(mixtral, tmp_path / "src", hidden_act="gelu")
    with pytest.warns(zipmoe.conversion.ConversionWarning, match="cannot run it yet.*hidden_act"):
        summary = zipmoe.convert(src, tmp_path / "m.zmoe")
    assert "hidden_act" in summary["warnings"][0]
    with pytest.raises(zipmoe.UnsupportedModelError, match="hidden_act"):
        zipmoe.load(tmp_path / "m.zmoe")
    assert zipmoe.verify_against(tmp_path / "m.zmoe", src)["ok"]


def test_a_folder_without_a_tokenizer_warns(mixtral, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(mixtral / name, src / name)
    run = subprocess.run([sys.executable, "-m", "zipmoe", "convert", src, "-o", tmp_path / "m.zmoe", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("zipmoe: warning: ") and "no tokenizer" in run.stderr and "tokenizer.json" in \
        run.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zipmoe.convert(mixtral, tmp_path / "quiet.zmoe")  # a folder with its tokenizer: no warning


def test_summary_separates_tensor_data_from_file_size(mixtral, tmp_path):
    summary = zipmoe.convert(mixtral, tmp_path / "m.zmoe")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert summary["payload_bytes"] == sum(t.stored_bytes for t in c.tensors)
        assert summary["source_bytes"] == sum(t.raw_bytes for t in c.tensors)
    assert summary["container_bytes"] == (tmp_path / "m.zmoe").stat().st_size > summary["payload_bytes"]
    assert summary["ratio"] == summary["source_bytes"] / summary["payload_bytes"]
    # a tiny model: 4 KiB alignment dominates the file, not the coded data
    assert summary["ratio"] > 1.2 and summary["file_ratio"] < 1
    run = subprocess.run([sys.executable, "-m", "zipmoe", "convert", mixtral, "-o", tmp_path / "c.zmoe", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"(ratio {summary['ratio']:.3f})" in run.stdout and "alignment" in run.stdout
    assert f"{summary['file_ratio']:.3f}" not in run.stdout

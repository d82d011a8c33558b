"""--generic is "any checkpoint, losslessly": every safetensors and GGUF type (non-float ones as raw U8 bytes), every
shape (0-d included), a single .safetensors file, exported back byte for byte and verified against its source."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
gguf = pytest.importorskip("gguf")

import zipmoe  # noqa: E402
from tiny_models import make_tiny_gguf, make_tiny_model  # noqa: E402


def _bert_like_tensors():
    """What non-LLM checkpoints hold besides float weights (BERT, CLIP, BatchNorm, FP8 releases)."""
    g = torch.Generator().manual_seed(0)
    return {
        "embeddings.position_ids": torch.arange(512).reshape(1, 512),
        "embeddings.word_embeddings.weight": torch.randn(64, 32, generator=g).to(torch.bfloat16),
        "encoder.layer.0.attention.mask": torch.rand(5, 7, generator=g) > 0.5,
        "bn.num_batches_tracked": torch.tensor(1234),
        "bn.running_var": torch.rand(32, generator=g, dtype=torch.float64),
        "logit_scale": torch.tensor(2.6592),
        "quantized.weight": torch.randint(-128, 127, (16, 8), dtype=torch.int8, generator=g),
        "fp8.weight": torch.randn(8, 8, generator=g).to(torch.float8_e4m3fn),
        "bytes": torch.randint(0, 255, (3,), dtype=torch.uint8, generator=g),
        "empty": torch.zeros(0, 4, dtype=torch.int32),
        "half.bias": torch.randn(7, generator=g).to(torch.float16),
    }


@pytest.fixture(scope="module")
def bert_like(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("bert") / "bert"
    folder.mkdir()
    save_file(_bert_like_tensors(), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    return folder


def files_of(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir()}


def test_any_safetensors_checkpoint_round_trips(bert_like, tmp_path):
    zipmoe.convert(bert_like, tmp_path / "m.zmoe", generic=True)
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        info = {t.name: (t.dtype, t.shape) for t in c.tensors}
        assert c.version == (1, 1)  # holds raw bytes
        # non-float types as raw bytes: the source shape, then the bytes per element
        assert info["embeddings.position_ids"] == ("u8", (1, 512, 8))
        assert info["bn.num_batches_tracked"] == ("u8", (8,))
        assert info["encoder.layer.0.attention.mask"] == ("u8", (5, 7, 1))
        assert info["fp8.weight"] == ("u8", (8, 8, 1))
        assert info["empty"] == ("u8", (0, 4, 4))
        # floats as floats, every shape kept: CLIP's 0-d logit_scale stays 0-d
        assert info["logit_scale"] == ("f32", ())
        assert info["half.bias"] == ("f16", (7,))
        ids = c.read("embeddings.position_ids").view(np.int64).reshape(1, 512)
        assert np.array_equal(ids, np.arange(512).reshape(1, 512))
        # position ids are mostly zero bytes: coded, not stored raw
        assert c.info("embeddings.position_ids").stored_bytes < 4096 / 2
    zipmoe.export(tmp_path / "m.zmoe", "safetensors", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(bert_like)
    result = zipmoe.verify_against(tmp_path / "m.zmoe", bert_like)
    assert result["ok"] and result["checked"] == len(_bert_like_tensors())


def test_verify_against_catches_a_changed_integer(bert_like, tmp_path):
    from safetensors.torch import save_file

    zipmoe.convert(bert_like, tmp_path / "m.zmoe", generic=True)
    changed = tmp_path / "changed"
    changed.mkdir()
    tensors = _bert_like_tensors()
    tensors["bn.num_batches_tracked"] = torch.tensor(1235)
    save_file(tensors, str(changed / "model.safetensors"), metadata={"format": "pt"})
    result = zipmoe.verify_against(tmp_path / "m.zmoe", changed)
    assert not result["ok"] and result["mismatch"] == "bn.num_batches_tracked"


def test_a_single_safetensors_file(bert_like, tmp_path):
    src = bert_like / "model.safetensors"
    run = subprocess.run([sys.executable, "-m", "zipmoe", "convert", src, "-o", tmp_path / "f.zmoe", "--generic", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with zipmoe.open_container(tmp_path / "f.zmoe") as c:
        assert c.metadata["source"]["single_file"] is True
        assert c.metadata["source"]["auxiliary_files"] == []
    zipmoe.export(tmp_path / "f.zmoe", "safetensors", tmp_path / "back.safetensors")  # a file, as it came
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()
    assert zipmoe.verify_against(tmp_path / "f.zmoe", src)["ok"]
    run = subprocess.run([sys.executable, "-m", "zipmoe", "verify", tmp_path / "f.zmoe", "--against", src],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("OK"), run.stdout + run.stderr
    with pytest.raises(zipmoe.IoError, match="single .safetensors file.*--generic"):
        zipmoe.convert(src, tmp_path / "x.zmoe")


def _gguf_with_every_kind(path):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    for name, kind in (("blk.0.attn_q.weight", gguf.GGMLQuantizationType.Q8_0),
                       ("blk.0.attn_k.weight", gguf.GGMLQuantizationType.Q4_0)):
        q = gguf.quants.quantize(rng.normal(size=(8, 64)).astype(np.float32), kind)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)
    w.add_tensor("token_ids", np.arange(10, dtype=np.int32))
    w.add_tensor("counts", np.arange(6, dtype=np.int64))
    w.add_tensor("output_norm.weight", rng.normal(size=(64,)).astype(np.float32))
    w.add_tensor("output.weight", rng.normal(size=(16, 64)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_any_gguf_round_trips(tmp_path):
    src = _gguf_with_every_kind(tmp_path / "q.gguf")
    zipmoe.convert(src, tmp_path / "q.zmoe", generic=True)
    with zipmoe.open_container(tmp_path / "q.zmoe") as c:
        # quantized blocks as bytes: rows, blocks per row, bytes per block
        assert (c.info("blk.0.attn_q.weight").dtype, c.info("blk.0.attn_q.weight").shape) == ("u8", (8, 2, 34))
        assert (c.info("blk.0.attn_k.weight").dtype, c.info("blk.0.attn_k.weight").shape) == ("u8", (8, 2, 18))
        assert c.info("token_ids").shape == (10, 4) and c.info("output.weight").dtype == "f16"
    zipmoe.export(tmp_path / "q.zmoe", "gguf", tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == src.read_bytes()
    assert zipmoe.verify_against(tmp_path / "q.zmoe", src)["ok"]


def test_the_engine_refuses_raw_bytes(tmp_path):
    """A runnable container with a U8 tensor added (a forged one: convert never makes it) is refused."""
    model = make_tiny_model("qwen2", tmp_path / "hf")
    zipmoe.convert(model, tmp_path / "m.zmoe")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c, \
            zipmoe.ContainerWriter(tmp_path / "forged.zmoe", c.metadata) as w:
        for t in c.tensors:
            w.add_tensor(t.name, c.read(t.name), dtype=t.dtype)
        w.add_tensor("extra", np.zeros(4, np.uint8))
    with pytest.raises(zipmoe.FormatError, match="extra.*raw u8 bytes"):
        zipmoe.load(tmp_path / "forged.zmoe")
    with pytest.raises(zipmoe.InvalidArgumentError, match="kv_cache_dtype"):
        zipmoe.load(tmp_path / "m.zmoe", kv_cache_dtype="u8")


def test_raw_bytes_through_the_python_api(tmp_path):
    data = np.frombuffer(np.arange(-3, 300, dtype=np.int32).tobytes(), np.uint8).reshape(-1, 4)
    blob = zipmoe.compress(data)
    assert zipmoe.blob_info(blob)["dtype"] == "u8"
    assert np.array_equal(zipmoe.decompress(blob), data)
    with zipmoe.ContainerWriter(tmp_path / "b.zmoe") as w:
        w.add_tensor("ints", data, dtype="u8")
    with zipmoe.open_container(tmp_path / "b.zmoe") as c:
        assert c.read("ints").dtype == np.uint8 and np.array_equal(c.read("ints"), data)
    with pytest.raises(zipmoe.InvalidArgumentError, match="view other types as uint8"):
        zipmoe.compress(np.zeros(3, np.int64))


def test_quantized_gguf_refusal_says_how_to_get_a_float_one(tmp_path):
    src = make_tiny_gguf(make_tiny_model("qwen2_moe", tmp_path / "hf"), tmp_path / "q.gguf", "bf16",
                         quantized_tensor="blk.1.attn_q.weight")
    with pytest.raises(zipmoe.UnsupportedModelError, match=r"Q8_0.*zipmoe dequantize .*q\.gguf.*--generic"):
        zipmoe.convert(src, tmp_path / "m.zmoe")

"""`zipmoe dequantize`: a quantized GGUF becomes the BF16 GGUF of the same model, which zipmoe converts and runs."""

import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import zipmoe  # noqa: E402
from tiny_models import make_tiny_gguf, make_tiny_model  # noqa: E402
from zipmoe.conversion import dequantize  # noqa: E402
from zipmoe.conversion.gguf_format import read_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A GGUF of every kind of tensor a quantized model holds."""
    path = tmp_path_factory.mktemp("q") / "q.gguf"
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_file_type(7)
    w.add_string("tokenizer.ggml.model", "gpt2")
    for name, kind in (("blk.0.attn_q.weight", Q.Q8_0), ("blk.0.attn_k.weight", Q.Q4_0),
                       ("blk.0.ffn_gate_inp.weight", Q.Q5_1)):
        q = gguf.quants.quantize(rng.normal(size=(8, 64)).astype(np.float32), kind)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)
    w.add_tensor("output_norm.weight", rng.normal(size=(64,)).astype(np.float32))
    half = rng.normal(size=(3, 64)).astype(np.float16)
    half[0, :3] = [np.nan, np.inf, -0.0]
    w.add_tensor("output.weight", half)
    w.add_tensor("positions", np.arange(5, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_dequantize_widens_every_tensor_as_llama_cpp_would_store_it(quantized, tmp_path):
    out = tmp_path / "bf16.gguf"
    run = run_cli("dequantize", quantized, out, "-q")
    assert run.returncode == 0, run.stderr
    assert "3 BF16 and 2 F32 tensors, 1 integer tensors unchanged" in run.stdout
    source, result = gguf.GGUFReader(str(quantized)), gguf.GGUFReader(str(out))
    assert [k for k in source.fields] == [k for k in result.fields]  # every key, in order
    assert result.fields["general.file_type"].contents() == dequantize.FILE_TYPE_MOSTLY_BF16
    assert result.fields["tokenizer.ggml.model"].contents() == "gpt2"
    kinds = {t.name: t.tensor_type for t in result.tensors}
    assert kinds == {"blk.0.attn_q.weight": Q.BF16, "blk.0.attn_k.weight": Q.BF16,
                     "blk.0.ffn_gate_inp.weight": Q.F32,  # routers stay F32
                     "output_norm.weight": Q.F32, "output.weight": Q.BF16, "positions": Q.I32}
    for t, r in zip(source.tensors, result.tensors):
        assert list(t.shape) == list(r.shape), t.name
        if t.tensor_type == Q.I32:
            assert np.array_equal(np.asarray(r.data), np.asarray(t.data))
            continue
        reference = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        if r.tensor_type == Q.F32:
            assert np.array_equal(np.asarray(r.data).view(np.uint32).reshape(-1), reference.view(np.uint32))
        else:
            bits = np.asarray(r.data).view(np.uint16).reshape(-1)
            widened = (bits.astype(np.uint32) << 16).view(np.float32)
            assert np.array_equal(bits, dequantize.f32_to_bf16_bits(reference)), t.name
            finite = np.isfinite(reference)
            # round to nearest: within half a BF16 step of the exact value; NaN and infinities kept
            assert np.all(np.abs(widened[finite] - reference[finite]) <= np.abs(reference[finite]) * 2.0 ** -8)
            assert np.array_equal(np.isnan(widened), np.isnan(reference))
            assert np.array_equal(widened[np.isinf(reference)], reference[np.isinf(reference)])
    assert read_gguf(str(out)).alignment == 32


def test_f32_to_bf16_rounds_to_nearest_even():
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20, np.inf, -0.0,
                       np.finfo(np.float32).max], dtype=np.float32)
    bits = dequantize.f32_to_bf16_bits(values)
    assert bits.tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x8000, 0x7F80]


def test_a_quantized_model_converts_and_runs_after_dequantize(tmp_path):
    model = make_tiny_model("qwen2_moe", tmp_path / "hf")
    src = make_tiny_gguf(model, tmp_path / "q.gguf", "bf16", quantized_tensor="blk.1.attn_q.weight")
    run = run_cli("convert", src, "-o", tmp_path / "m.zmoe")
    assert run.returncode == 1 and "zipmoe dequantize" in run.stderr
    run = run_cli("dequantize", src, tmp_path / "f.gguf", "-q")
    assert run.returncode == 0, run.stderr
    zipmoe.convert(tmp_path / "f.gguf", tmp_path / "m.zmoe")
    loaded = zipmoe.load(tmp_path / "m.zmoe", threads=1)
    assert np.isfinite(loaded.logits([1, 2, 3])).all()


def test_dequantize_errors(quantized, tmp_path):
    run = run_cli("dequantize", quantized, quantized)
    assert run.returncode == 1 and "would overwrite the input" in run.stderr
    run = run_cli("dequantize", tmp_path / "missing.gguf", tmp_path / "x.gguf")
    assert run.returncode == 1 and "no such file" in run.stderr
    (tmp_path / "not.gguf").write_bytes(b"GGUF" + b"\xff" * 100)
    run = run_cli("dequantize", tmp_path / "not.gguf", tmp_path / "x.gguf")
    assert run.returncode == 1 and run.stderr.startswith("zipmoe: error:") and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.gguf"]

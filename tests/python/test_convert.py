"""zipmoe convert / export / verify --against on tiny random checkpoints of every supported architecture."""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
gguf = pytest.importorskip("gguf")

import zipmoe  # noqa: E402
from conftest import data_file  # noqa: E402
from tiny_models import TINY_ARCHITECTURES, make_tiny_gguf, make_tiny_model  # noqa: E402
from zipmoe.conversion import registry  # noqa: E402

MOE = [a for a in TINY_ARCHITECTURES if a not in ("llama", "qwen2")]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(arch, **kw) -> a cached tiny HF model folder (read-only for tests: copy before changing it)."""
    root = tmp_path_factory.mktemp("tiny_models")
    cache = {}

    def get(arch, **kwargs):
        key = (arch, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = make_tiny_model(arch, root / f"{arch}-{len(cache)}", **kwargs)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_gguf(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gguf")
    cache = {}

    def get(arch, dtype="bf16", **kwargs):
        key = (arch, dtype, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = make_tiny_gguf(tiny(arch), root / f"{arch}-{dtype}-{len(cache)}.gguf", dtype, **kwargs)
        return cache[key]

    return get


def files_of(folder):
    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir()}


def leftovers(folder, stem):
    return [p.name for p in pathlib.Path(folder).iterdir() if p.name.startswith(stem)]


def as_f32(container, name):
    info = container.info(name)
    a = container.read(name)
    if info.dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def expert_count(metadata):
    dims = registry.model_dims(metadata["architecture"], metadata["config"])
    return len(dims.moe_layers) * dims.num_experts * 3


# ------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_hf_round_trip_is_byte_identical(arch, tiny, tmp_path):
    src = tiny(arch)
    out = tmp_path / "model.zmoe"
    summary = zipmoe.convert(src, out)
    assert summary["architecture"] == arch
    with zipmoe.open_container(out) as c:
        experts = [t for t in c.tensors if t.role == "expert"]
        assert len(experts) == expert_count(c.metadata)
        for t in experts:
            assert t.name == f"blk.{t.layer}.ffn_{t.projection}_exps.{t.expert}.weight"
        assert set(c) <= set(registry.expected_tensors(c.metadata))
        assert {n for n, e in registry.expected_tensors(c.metadata).items() if e.required} <= set(c)
    exported = tmp_path / "exported"
    zipmoe.export(out, "safetensors", exported)
    assert files_of(exported) == files_of(src)
    assert zipmoe.verify_against(out, src)["ok"]


@pytest.mark.parametrize("arch", ["mixtral", "gpt_oss", "deepseek_v3", "granitemoe"])
def test_sharded_hf_round_trip(arch, tiny, tmp_path):
    src = tiny(arch, shard_size="40KB")
    assert (src / "model.safetensors.index.json").exists()
    assert len(list(src.glob("*.safetensors"))) >= 2
    out = tmp_path / "m.zmoe"
    zipmoe.convert(src, out)
    with zipmoe.open_container(out) as c:
        assert len(c.metadata["source"]["files"]) == len(list(src.glob("*.safetensors")))
        assert c.metadata["source"]["index_file"] == "model.safetensors.index.json"
    zipmoe.export(out, "safetensors", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(src)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_gguf_bf16_round_trip_is_byte_identical(arch, tiny_gguf, tmp_path):
    src = tiny_gguf(arch)
    out = tmp_path / "m.zmoe"
    assert zipmoe.convert(src, out)["architecture"] == arch
    back = tmp_path / "back.gguf"
    zipmoe.export(out, "gguf", back)
    assert back.read_bytes() == src.read_bytes()
    assert zipmoe.verify_against(out, src)["ok"]


@pytest.mark.parametrize("dtype", ["f16", "f32"])
@pytest.mark.parametrize("arch", ["qwen2_moe", "mixtral", "deepseek_v2"])
def test_gguf_f16_f32_round_trip(arch, dtype, tiny_gguf, tmp_path):
    src = tiny_gguf(arch, dtype)
    out = tmp_path / "m.zmoe"
    zipmoe.convert(src, out)
    with zipmoe.open_container(out) as c:
        assert c.info("blk.0.attn_q_a.weight" if arch == "deepseek_v2" else "blk.0.attn_q.weight").dtype == dtype
    zipmoe.export(out, "gguf", tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_hf_and_gguf_sources_give_the_same_canonical_model(arch, tiny, tiny_gguf, tmp_path):
    """Canonical tensors are HF-semantics whatever the source: llama.cpp's permutations, stacking,
    splits and transposes are all undone."""
    zipmoe.convert(tiny(arch), tmp_path / "hf.zmoe")
    zipmoe.convert(tiny_gguf(arch), tmp_path / "gguf.zmoe")
    with zipmoe.open_container(tmp_path / "hf.zmoe") as h, zipmoe.open_container(tmp_path / "gguf.zmoe") as g:
        assert set(h) == set(g)
        for name in h:
            a, b = h.info(name), g.info(name)
            assert (a.shape, a.role, a.layer, a.expert, a.projection) == (b.shape, b.role, b.layer, b.expert,
                                                                          b.projection), name
            # GGUF keeps norms and routers in F32; values are the same
            assert np.array_equal(as_f32(h, name), as_f32(g, name)), name
        # llama.cpp drops deepseek_v3's multi-token-prediction layer, so its count is not compared
        hf_dims = dataclasses.replace(registry.model_dims(arch, h.metadata["config"]), extra_layers=0)
        assert hf_dims == registry.model_dims(arch, g.metadata["config"])


# --------------------------------------------------------------------------------------------- layout

def _hf_tensors(folder):
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(pathlib.Path(folder).glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def _bits(t):
    import torch

    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def test_fused_gpt_oss_experts_are_split_per_expert_in_linear_layout(tiny, tmp_path):
    src = tiny("gpt_oss")
    zipmoe.convert(src, tmp_path / "m.zmoe")
    hf = _hf_tensors(src)
    gate_up = _bits(hf["model.layers.1.mlp.experts.gate_up_proj"])  # [E, H, 2I], interleaved
    down = _bits(hf["model.layers.1.mlp.experts.down_proj"])  # [E, I, H]
    bias = _bits(hf["model.layers.1.mlp.experts.gate_up_proj_bias"])
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        for e in range(4):
            assert np.array_equal(c.read_expert(1, e, "gate"), gate_up[e, :, 0::2].T)
            assert np.array_equal(c.read_expert(1, e, "up"), gate_up[e, :, 1::2].T)
            assert np.array_equal(c.read_expert(1, e, "down"), down[e].T)
        assert c.read_expert(1, 0, "gate").shape == (48, 32)  # [intermediate, hidden]
        assert np.array_equal(c.read("blk.1.ffn_gate_exps.bias"), bias[:, 0::2])
        assert c.info("blk.1.ffn_gate_exps.bias").role == "dense"


def test_fused_granitemoe_experts_are_split_into_gate_and_up(tiny, tmp_path):
    src = tiny("granitemoe")
    zipmoe.convert(src, tmp_path / "m.zmoe")
    fused = _bits(_hf_tensors(src)["model.layers.0.block_sparse_moe.input_linear.weight"])  # [E, 2I, H]
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert np.array_equal(c.read_expert(0, 2, "gate"), fused[2, :48])
        assert np.array_equal(c.read_expert(0, 2, "up"), fused[2, 48:])


def test_mixed_dtypes_are_kept(tiny, tmp_path):
    zipmoe.convert(tiny("deepseek_v3"), tmp_path / "m.zmoe")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert c.info("blk.1.ffn_gate_inp.weight").dtype == "f32"
        assert c.info("blk.1.exp_probs_b.bias").dtype == "f32"
        assert c.info("blk.1.attn_kv_b.weight").dtype == "bf16"
        assert c.info("blk.0.ffn_gate.weight").role == "dense"  # first_k_dense_replace
        assert c.info("blk.1.ffn_up_shexp.weight").role == "dense"


def test_hf_metadata(tiny, tmp_path):
    src = tiny("qwen2_moe")
    zipmoe.convert(src, tmp_path / "m.zmoe", codec="huffman")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        m = c.metadata
    assert m["zipmoe_format"] == 1 and m["architecture"] == "qwen2_moe"
    assert m["config"] == json.loads((src / "config.json").read_text())
    assert m["tokenizer"]["tokenizer_json"] == (src / "tokenizer.json").read_text()
    assert m["tokenizer"]["tokenizer_config"] == json.loads((src / "tokenizer_config.json").read_text())
    assert m["tokenizer"]["gguf"] is None
    assert m["chat_template"] and "add_generation_prompt" in m["chat_template"]
    assert m["generation_config"] == json.loads((src / "generation_config.json").read_text())
    assert m["provenance"]["codec"] == "huffman" and m["provenance"]["zipmoe_version"] == zipmoe.__version__
    source = m["source"]
    assert source["format"] == "safetensors"
    record = next(r for r in source["tensors"] if r["name"] == "model.layers.0.mlp.experts.3.up_proj.weight")
    assert record["dtype"] == "BF16" and record["shape"] == [16, 32]
    assert record["pieces"] == [{"tensor": "blk.0.ffn_up_exps.3.weight"}]
    assert len(record["sha256"]) == 64


def test_gguf_metadata(tiny_gguf, tmp_path):
    src = tiny_gguf("qwen3_moe")
    zipmoe.convert(src, tmp_path / "m.zmoe")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        m = c.metadata
    assert m["architecture"] == "qwen3_moe"
    config = m["config"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_experts"], config["num_experts_per_tok"],
            config["moe_intermediate_size"], config["head_dim"], config["num_key_value_heads"]) == (32, 2, 4, 2, 16, 8, 2)
    assert config["norm_topk_prob"] is True
    tokens = m["tokenizer"]["gguf"]["tokenizer.ggml.tokens"]
    assert len(tokens) == 128 and tokens[1] == "<s>"
    assert "add_generation_prompt" in m["chat_template"]
    source = m["source"]
    assert source["format"] == "gguf" and source["gguf_architecture"] == "qwen3moe"
    kv = {e["key"]: e for e in source["kv"]}
    assert kv["qwen3moe.block_count"] == {"key": "qwen3moe.block_count", "type": "UINT32", "value": 2}
    assert kv["tokenizer.ggml.tokens"]["value_from"] == "tokenizer.gguf"
    stacked = next(r for r in source["tensors"] if r["name"] == "blk.1.ffn_down_exps.weight")
    assert stacked["shape"] == [4, 32, 16] and stacked["ggml_type"] == 30
    assert [p["tensor"] for p in stacked["pieces"]] == [f"blk.1.ffn_down_exps.{e}.weight" for e in range(4)]
    assert stacked["pieces"][2]["src"] == [["index", [2]]]


def test_generic_mode_keeps_source_names_without_roles(tiny, tmp_path):
    src = tmp_path / "unknown"
    shutil.copytree(tiny("mixtral"), src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "someday_moe"
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(zipmoe.UnsupportedModelError, match="qwen2_moe.*granitemoe.*--generic"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert not (tmp_path / "m.zmoe").exists()
    zipmoe.convert(src, tmp_path / "m.zmoe", generic=True)
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert c.metadata["architecture"] == "generic"
        assert "model.layers.0.block_sparse_moe.experts.0.w1.weight" in c
        assert all(t.role == "dense" for t in c.tensors)
    zipmoe.export(tmp_path / "m.zmoe", "safetensors", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(src)


def test_generic_gguf(tiny_gguf, tmp_path):
    src = tiny_gguf("mixtral")
    zipmoe.convert(src, tmp_path / "m.zmoe", generic=True)
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert "blk.0.ffn_gate_exps.weight" in c
    zipmoe.export(tmp_path / "m.zmoe", "gguf", tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("vocab", ["qwen2", "llama-spm"])
def test_real_tokenizer_gguf_metadata_survives_exactly(vocab, tmp_path):
    """llama.cpp's vocabulary GGUFs (tokens, scores, merges, types; no tensors) come back byte for byte."""
    src = data_file(f"tokenizers/ggml-vocab-{vocab}.gguf")
    zipmoe.convert(src, tmp_path / "v.zmoe", generic=True)
    with zipmoe.open_container(tmp_path / "v.zmoe") as c:
        tokenizer = c.metadata["tokenizer"]["gguf"]
        assert len(tokenizer["tokenizer.ggml.tokens"]) > 30000
    zipmoe.export(tmp_path / "v.zmoe", "gguf", tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == src.read_bytes()


def test_gguf_values_that_json_cannot_hold_survive(tmp_path):
    """Strings that are not UTF-8, NaN payloads, nested arrays, bools and 64-bit integers round-trip."""
    from zipmoe.conversion import gguf_format

    kv = [
        {"key": "general.architecture", "type": "STRING", "value": "llama"},
        {"key": "a.bytes", "type": "STRING", "value": {"base64": "/wD+"}},
        {"key": "a.nan", "type": "FLOAT32", "value": {"bits": 0x7FC00123}},
        {"key": "a.inf64", "type": "FLOAT64", "value": {"bits": 0x7FF0000000000000}},
        {"key": "a.u64", "type": "UINT64", "value": (1 << 64) - 1},
        {"key": "a.flag", "type": "BOOL", "value": True},
        {"key": "a.floats", "type": "ARRAY", "item_type": "FLOAT32", "value": [1.5, {"bits": 0xFF800000}, -0.0]},
        {"key": "a.nested", "type": "ARRAY", "item_type": "ARRAY",
         "value": [{"item_type": "INT16", "value": [-1, 2]}, {"item_type": "STRING", "value": ["x", {"base64": "gA=="}]}]},
        {"key": "a.bools", "type": "ARRAY", "item_type": "BOOL", "value": [True, False]},
    ]
    raw = gguf_format.header_bytes(3, kv, [], 32)
    path = tmp_path / "values.gguf"
    path.write_bytes(raw)
    parsed = gguf_format.read_gguf(str(path))
    assert json.loads(json.dumps(parsed.kv)) == kv
    assert gguf_format.header_bytes(3, parsed.kv, [], 32) == raw


def test_raw_codec_stores_planes_uncompressed(tiny, tmp_path):
    src = tiny("olmoe")
    zipmoe.convert(src, tmp_path / "m.zmoe", codec="raw")
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        assert {t.codec for t in c.tensors} <= {"raw", "constant"}
    assert zipmoe.verify_against(tmp_path / "m.zmoe", src)["ok"]


# -------------------------------------------------------------------------------------------- errors

def test_quantized_gguf_tensor_is_a_clear_error(tiny_gguf, tmp_path):
    src = tiny_gguf("qwen2_moe", quantized_tensor="blk.1.attn_q.weight")
    with pytest.raises(zipmoe.UnsupportedModelError, match=r"blk\.1\.attn_q\.weight.*Q8_0"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert leftovers(tmp_path, "m.zmoe") == []


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_files(tiny, tmp_path):
    with pytest.raises(zipmoe.IoError, match="no such"):
        zipmoe.convert(tmp_path / "nothing", tmp_path / "m.zmoe")
    src = _copy(tiny("mixtral"), tmp_path / "no_config")
    (src / "config.json").unlink()
    with pytest.raises(zipmoe.IoError, match="config.json"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    src = _copy(tiny("mixtral", shard_size="40KB"), tmp_path / "no_shard")
    next(src.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(zipmoe.IoError, match="shard.*missing"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    src = _copy(tiny("mixtral"), tmp_path / "no_weights")
    (src / "model.safetensors").unlink()
    with pytest.raises(zipmoe.IoError, match="safetensors"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert leftovers(tmp_path, "m.zmoe") == []


def test_corrupt_and_truncated_safetensors(tiny, tmp_path):
    src = _copy(tiny("qwen2"), tmp_path / "corrupt")
    weights = src / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:8] + b"{not json" + good[17:])
    with pytest.raises(zipmoe.FormatError, match="corrupt safetensors header"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    weights.write_bytes(struct.pack("<Q", len(good) * 2) + good[8:])
    with pytest.raises(zipmoe.FormatError, match="corrupt safetensors header"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    weights.write_bytes(good[:-100])
    with pytest.raises(zipmoe.FormatError, match="truncated"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    weights.write_bytes(good[:5])
    with pytest.raises(zipmoe.FormatError, match="not a safetensors file"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert leftovers(tmp_path, "m.zmoe") == []


def test_corrupt_and_truncated_gguf(tiny_gguf, tmp_path):
    good = tiny_gguf("mixtral").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good[:-64])
    with pytest.raises(zipmoe.FormatError, match="truncated"):
        zipmoe.convert(bad, tmp_path / "m.zmoe")
    bad.write_bytes(good[:4] + struct.pack("<I", 99) + good[8:])
    with pytest.raises(zipmoe.FormatError, match="version 99"):
        zipmoe.convert(bad, tmp_path / "m.zmoe")
    bad.write_bytes(good[:8] + struct.pack("<Q", 1 << 40) + good[16:])
    with pytest.raises(zipmoe.FormatError, match="corrupt GGUF header"):
        zipmoe.convert(bad, tmp_path / "m.zmoe")
    bad.write_bytes(good[:2000])
    with pytest.raises(zipmoe.FormatError):
        zipmoe.convert(bad, tmp_path / "m.zmoe")
    rng = np.random.default_rng(5)
    for _ in range(30):  # random damage to the header: an error or a correct conversion, never a crash
        damaged = bytearray(good)
        for position in rng.integers(0, 3000, size=4):
            damaged[position] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(damaged))
        try:
            zipmoe.convert(bad, tmp_path / "fuzz.zmoe")
        except zipmoe.ZipMoEError:
            pass
    assert leftovers(tmp_path, "m.zmoe") == []
    assert [n for n in leftovers(tmp_path, "fuzz.zmoe") if n != "fuzz.zmoe"] == []


@pytest.mark.parametrize("change, message", [
    ({"num_local_experts": 5}, "missing"),
    ({"num_local_experts": 3}, "not part of"),
    ({"hidden_size": 64}, "shape"),
    ({"num_hidden_layers": 3}, "missing"),
    ({"intermediate_size": 40}, "shape"),
])
def test_config_that_disagrees_with_tensors(change, message, tiny, tmp_path):
    src = _copy(tiny("mixtral"), tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(zipmoe.FormatError, match=f"{message}.*|config and tensors disagree"):
        zipmoe.convert(src, tmp_path / "m.zmoe")
    assert leftovers(tmp_path, "m.zmoe") == []


def test_unknown_tensor_in_a_known_architecture(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src = _copy(tiny("qwen2"), tmp_path / "src")
    tensors = load_file(str(src / "model.safetensors"))
    tensors["model.layers.0.mystery.weight"] = torch.zeros(4, dtype=torch.bfloat16)
    save_file(tensors, str(src / "model.safetensors"))
    with pytest.raises(zipmoe.UnsupportedModelError, match="mystery"):
        zipmoe.convert(src, tmp_path / "m.zmoe")


def test_interrupted_conversion_leaves_nothing(tiny, tmp_path, monkeypatch):
    calls = []
    original = zipmoe.ContainerWriter.add_tensor

    def interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "m.zmoe"
    out.write_bytes(b"previous")
    monkeypatch.setattr(zipmoe.ContainerWriter, "add_tensor", interrupt)
    with pytest.raises(KeyboardInterrupt):
        zipmoe.convert(tiny("qwen2_moe"), out)
    assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path, "m.zmoe") == ["m.zmoe"]


def test_export_errors_leave_no_output(tiny, tiny_gguf, tmp_path):
    zipmoe.convert(tiny("olmoe"), tmp_path / "m.zmoe")
    with pytest.raises(zipmoe.InvalidArgumentError, match="--to safetensors"):
        zipmoe.export(tmp_path / "m.zmoe", "gguf", tmp_path / "x.gguf")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(zipmoe.IoError, match="not an empty directory"):
        zipmoe.export(tmp_path / "m.zmoe", "safetensors", tmp_path / "busy")
    # a damaged chunk: export fails and writes nothing
    data = bytearray((tmp_path / "m.zmoe").read_bytes())
    with zipmoe.open_container(tmp_path / "m.zmoe") as c:
        chunk = c.chunks()[c.info("blk.1.ffn_down_exps.2.weight").sm_chunk]
    data[chunk["offset"] + 3] ^= 0x40
    (tmp_path / "damaged.zmoe").write_bytes(bytes(data))
    with pytest.raises(zipmoe.ChecksumError):
        zipmoe.export(tmp_path / "damaged.zmoe", "safetensors", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path, "out") == []
    zipmoe.convert(tiny_gguf("olmoe"), tmp_path / "g.zmoe")
    with pytest.raises(zipmoe.ChecksumError):
        data = bytearray((tmp_path / "g.zmoe").read_bytes())
        with zipmoe.open_container(tmp_path / "g.zmoe") as c:
            chunk = c.chunks()[c.info("token_embd.weight").sm_chunk]
        data[chunk["offset"]] ^= 1
        (tmp_path / "g.zmoe").write_bytes(bytes(data))
        zipmoe.export(tmp_path / "g.zmoe", "gguf", tmp_path / "out.gguf")
    assert leftovers(tmp_path, "out.gguf") == []


def test_verify_against_names_the_first_mismatching_tensor(tiny, tmp_path):
    src = _copy(tiny("mixtral"), tmp_path / "src")
    zipmoe.convert(src, tmp_path / "m.zmoe")
    assert zipmoe.verify_against(tmp_path / "m.zmoe", src)["ok"]
    weights = src / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
    begin = header["model.layers.1.block_sparse_moe.experts.2.w3.weight"]["data_offsets"][0]
    data[8 + struct.unpack("<Q", data[:8])[0] + begin + 5] ^= 1
    weights.write_bytes(bytes(data))
    result = zipmoe.verify_against(tmp_path / "m.zmoe", src)
    assert not result["ok"]
    assert result["mismatch"] == "model.layers.1.block_sparse_moe.experts.2.w3.weight"


# ----------------------------------------------------------------------------------------------- CLI

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zipmoe", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_convert_export_verify(tiny, tiny_gguf, tmp_path):
    src = tiny("qwen2_moe")
    run = run_cli("convert", src, "-o", tmp_path / "m.zmoe", "--codec", "rans", "--threads", "2", "--progress")
    assert run.returncode == 0, run.stderr
    assert "qwen2_moe" in run.stdout and "ratio" in run.stdout
    assert "convert" in run.stderr  # the progress bar
    run = run_cli("verify", tmp_path / "m.zmoe", "--against", src)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK")
    run = run_cli("verify", tmp_path / "m.zmoe", "--against", tiny("qwen3_moe"))
    assert run.returncode == 1
    assert "FAILED" in run.stdout and "first mismatching tensor" in run.stdout
    run = run_cli("export", tmp_path / "m.zmoe", "--to", "safetensors", tmp_path / "back")
    assert run.returncode == 0, run.stderr
    assert files_of(tmp_path / "back") == files_of(src)
    gsrc = tiny_gguf("gpt_oss")
    assert run_cli("convert", gsrc, "-o", tmp_path / "g.zmoe", "-q").returncode == 0
    assert run_cli("export", tmp_path / "g.zmoe", "--to", "gguf", tmp_path / "g.gguf").returncode == 0
    assert hashlib.sha256((tmp_path / "g.gguf").read_bytes()).digest() == hashlib.sha256(gsrc.read_bytes()).digest()
    run = run_cli("convert", tmp_path / "nothing", "-o", tmp_path / "x.zmoe")
    assert run.returncode == 1 and "no such file or folder" in run.stderr
    assert not os.path.exists(tmp_path / "x.zmoe")

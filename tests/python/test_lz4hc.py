"""The lz4hc exponent codec (the ZipMoE paper's setting): zipmoe.compress, conversion, the engine.

In a build with liblz4: round trips of every dtype and special value, corrupt blobs raise
FormatError, a converted model decodes to the same bits as with the other codecs and runs with
bit-identical logits, resident and streamed through the cache (tiers=("full", "sm") as in the
paper). In a build without it: requesting lz4hc is an error that names liblz4.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import zipmoe


def lz4hc_available() -> bool:
    try:
        zipmoe.compress(np.zeros(4, np.float32) + np.arange(4, dtype=np.float32), codec="lz4hc")
    except zipmoe.ZipMoEError as error:
        assert "liblz4" in str(error)
        return False
    return True


needs_lz4 = pytest.mark.skipif(not lz4hc_available(), reason="zipmoe built without liblz4")


def special_values(dtype: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(n) * 0.02).astype(np.float32)
    if dtype == "bf16":
        bits = values.view(np.uint32)
        out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        specials = np.array([0x7FC0, 0xFFC1, 0x7F81, 0x7F80, 0xFF80, 0x0001, 0x8001, 0x0000, 0x8000, 0x7F7F],
                            np.uint16)
    elif dtype == "f16":
        out = values.astype(np.float16)
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 6e-8, 65504.0], np.float16)
    else:
        out = values
        specials = np.array([0x7FC00000, 0xFFC00001, 0x7F800000, 0x00000001, 0x80000000], np.uint32).view(np.float32)
    if n:
        where = rng.integers(0, n, size=max(1, n // 50))
        out[where] = specials[rng.integers(0, len(specials), size=where.size)]
    return out


def test_without_liblz4_the_error_names_it():
    if lz4hc_available():
        pytest.skip("this build has liblz4")
    with pytest.raises(zipmoe.ZipMoEError, match="liblz4"):
        zipmoe.compress(np.ones(1000, np.float32), codec="lz4hc")


@needs_lz4
@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("n", [0, 1, 7, 16384, 16385, 200003])
def test_compress_round_trip(dtype, n):
    array = special_values(dtype, n, n)
    kwargs = {"dtype": "bf16"} if dtype == "bf16" else {}
    blob = zipmoe.compress(array, codec="lz4hc", segment_symbols=50000, **kwargs)
    if n >= 16384 and dtype != "f16":
        assert zipmoe.blob_info(blob)["codec"] == "lz4hc"
    for isa in [None, "scalar"]:
        out = zipmoe.decompress(blob, isa=isa)
        assert out.dtype == array.dtype and out.tobytes() == array.tobytes()


@needs_lz4
def test_lz4hc_is_larger_than_the_entropy_coders_but_smaller_than_raw():
    array = special_values("bf16", 1 << 20, 3)
    sizes = {c: len(zipmoe.compress(array, dtype="bf16", codec=c)) for c in ("raw", "huffman", "rans", "lz4hc")}
    assert sizes["huffman"] < sizes["lz4hc"] < sizes["raw"]
    assert sizes["rans"] < sizes["lz4hc"]


@needs_lz4
def test_corrupt_blobs_raise_format_errors():
    array = special_values("bf16", 100000, 4)
    blob = bytearray(zipmoe.compress(array, dtype="bf16", codec="lz4hc"))
    rng = np.random.default_rng(5)
    for _ in range(50):
        bad = bytearray(blob)
        bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(zipmoe.FormatError):  # ChecksumError is a FormatError
            zipmoe.decompress(bytes(bad))
    with pytest.raises(zipmoe.FormatError):
        zipmoe.decompress(bytes(blob[: len(blob) // 2]))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("lz4hc")
    folder = make_tiny_model("qwen2_moe", root / "hf", tokenizer=False)
    paths = {}
    for codec in ("auto", "raw", "lz4hc"):
        paths[codec] = root / f"{codec}.zmoe"
        zipmoe.convert(folder, paths[codec], codec=codec, threads=2)
    return folder, paths


@needs_lz4
def test_converted_container_holds_lz4hc_planes_with_the_same_bits(converted):
    folder, paths = converted
    with zipmoe.open_container(paths["lz4hc"]) as lz4, zipmoe.open_container(paths["auto"]) as auto:
        codecs = {t.codec for t in lz4.tensors}
        assert "lz4hc" in codecs and codecs <= {"lz4hc", "raw", "constant"}
        assert {t.codec for t in auto.tensors} <= {"huffman", "rans", "raw", "constant"}
        for name in auto:
            assert lz4.read(name).tobytes() == auto.read(name).tobytes(), name
    assert zipmoe.verify_against(paths["lz4hc"], folder)["ok"]


@needs_lz4
def test_engine_logits_are_bit_identical_across_codecs_and_cache_settings(converted):
    _, paths = converted
    tokens = np.random.default_rng(1).integers(0, 128, size=20)
    options = dict(precision="exact", max_context=64, batch=8, threads=2)

    def run(model):
        rows = [model.logits(tokens[:8])] + [model.eval([int(t)]) for t in tokens[8:]]
        return np.concatenate(rows)

    expected = run(zipmoe.load(paths["auto"], **options))
    for codec in ("raw", "lz4hc"):
        assert run(zipmoe.load(paths[codec], **options)).tobytes() == expected.tobytes(), codec
    resident = zipmoe.load(paths["lz4hc"], **options)
    with pytest.raises(zipmoe.BudgetError) as error:
        zipmoe.load(paths["lz4hc"], memory_budget=1, **options)
    minimum = int(re.search(r"the minimum is [^(]*\((\d+) bytes\)", str(error.value)).group(1))
    budget = minimum + resident.memory()["experts"] // 2
    for tiers in (None, ("full", "sm")):
        model = zipmoe.load(paths["lz4hc"], memory_budget=int(budget), io="direct", tiers=tiers, **options)
        assert run(model).tobytes() == expected.tobytes(), tiers
        total = model.stats()["total"]
        assert total["misses"] > 0 and total["decoded_bytes"] > 0


@needs_lz4
def test_cli_convert_with_lz4hc(converted, tmp_path):
    folder, _ = converted
    helptext = subprocess.run([sys.executable, "-m", "zipmoe", "convert", "--help"], capture_output=True,
                              text=True).stdout
    assert re.search(r"--codec \{[a-z0-9,]*\blz4hc\b[a-z0-9,]*\}", helptext), helptext
    out = tmp_path / "cli.zmoe"
    run = subprocess.run([sys.executable, "-m", "zipmoe", "convert", str(folder), "-o", str(out), "--codec",
                          "lz4hc"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with zipmoe.open_container(out) as c:
        assert "lz4hc" in {t.codec for t in c.tensors}

"""The .zmoe container through the Python API: round trips, I/O modes, lookup,
atomic writes and damaged files."""

import gc
import json
import os
import struct
import threading

import numpy as np
import pytest

import zipmoe
from conftest import as_bits, make_weights

DTYPES = ["bf16", "f16", "f32"]
IO_MODES = ["pread", "direct", "mmap"]
METADATA = {
    "architecture": "qwen2_moe",
    "hyper_parameters": {"num_layers": 2, "num_experts": 4, "rope_theta": 1e6},
    "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}",
    "name": "模型 ✓ café 🚀",
    "provenance": {"source": "unit test", "none": None, "list": [1, 2.5, "x"]},
}


def dtype_arg(dtype):
    return "bf16" if dtype == "bf16" else None


def build_samples():
    """(name, array, dtype, role, codec) covering every dtype, role, codec and odd shape."""
    samples = []
    shapes = [(), (0,), (1,), (7, 3), (0, 5), (4097,), (64, 1501)]
    seed = 0
    for dtype in DTYPES:
        for shape in shapes:
            for codec in ("auto", "raw"):
                seed += 1
                array = make_weights(dtype, shape, seed=seed)
                if seed % 2:
                    role = {"layer": seed % 3, "expert": seed, "projection": ["gate", "up", "down"][seed % 3]}
                    name = f"model.layers.{seed % 3}.mlp.experts.{seed}.{role['projection']}_proj.weight"
                else:
                    role = None if seed % 4 else "dense"
                    name = f"model.dense.{dtype}.{'x'.join(map(str, shape))}.{codec}"
                samples.append((name, array, dtype, role, codec))
    constant = np.full((5000,), 0x3F80, dtype=np.uint16)  # one exponent only
    samples.append(("constant", constant, "bf16", None, "auto"))
    return samples


def write(path, samples, metadata=METADATA, **kw):
    with zipmoe.ContainerWriter(path, metadata, **kw) as w:
        for name, array, dtype, role, codec in samples:
            w.add_tensor(name, array, dtype=dtype_arg(dtype), role=role, codec=codec, threads=2)


@pytest.fixture(scope="module")
def samples():
    return build_samples()


@pytest.fixture(scope="module")
def model(tmp_path_factory, samples):
    path = tmp_path_factory.mktemp("container") / "model.zmoe"
    write(path, samples, segment_symbols=1000)
    return path


@pytest.mark.parametrize("io", IO_MODES)
def test_round_trip_every_dtype_role_and_io_mode(model, samples, io):
    with zipmoe.open_container(model, io=io) as c:
        assert c.metadata == METADATA
        assert c.version[0] == 1
        assert len(c) == len(samples)
        assert [t.name for t in c.tensors] == [s[0] for s in samples]
        for (name, array, dtype, role, codec), info in zip(samples, c.tensors):
            assert name in c
            assert info.dtype == dtype
            assert info.shape == array.shape
            assert info.num_elements == array.size
            if isinstance(role, dict):
                assert (info.role, info.layer, info.expert, info.projection) == (
                    "expert", role["layer"], role["expert"], role["projection"])
            else:
                assert (info.role, info.layer, info.expert, info.projection) == ("dense", None, None, None)
            if codec == "raw" and array.size:
                assert info.codec == "raw"
            assert info.sm_bytes == array.size * (3 if dtype == "f32" else 1)
            assert 0.0 <= info.exponent_entropy <= 8.0
            assert info.raw_bytes == array.nbytes
            for isa in zipmoe.available_isas():
                out = c.read(name, threads=2, isa=isa)
                assert out.shape == array.shape
                assert out.dtype == (np.uint16 if dtype == "bf16" else array.dtype)
                np.testing.assert_array_equal(as_bits(out), as_bits(array))


def test_io_modes_give_identical_chunk_bytes_and_chunks_are_aligned(model):
    per_mode = {}
    for io in IO_MODES:
        with zipmoe.open_container(model, io=io) as c:
            chunks = c.chunks()
            assert len(chunks) == 2 * len(c.tensors)
            for chunk in chunks:
                assert chunk["offset"] % 4096 == 0
            per_mode[io] = [c.read_chunk(i) for i in range(len(chunks))]
            for chunk, data in zip(chunks, per_mode[io]):
                assert len(data) == chunk["stored_size"]
    assert per_mode["pread"] == per_mode["direct"] == per_mode["mmap"]
    assert os.path.getsize(model) % 4096 == 0


def test_entropy_of_constant_and_gaussian_planes(model):
    with zipmoe.open_container(model) as c:
        constant = c.info("constant")
        assert constant.exponent_entropy == 0.0
        assert constant.codec in ("constant", "raw")  # constant once an entropy coder exists
        gaussian = [t for t in c.tensors if t.num_elements == 64 * 1501]
        assert len(gaussian) == 6
        assert all(1.0 < t.exponent_entropy < 6.0 for t in gaussian), [t.exponent_entropy for t in gaussian]


def test_find_and_read_expert(tmp_path):
    path = tmp_path / "experts.zmoe"
    arrays = {}
    with zipmoe.ContainerWriter(path, {"architecture": "toy"}) as w:
        w.add_tensor("embed", make_weights("bf16", (16, 8), seed=1), dtype="bf16")
        for layer in range(3):
            for expert in range(4):
                for projection in ("gate", "up", "down"):
                    a = make_weights("bf16", (8, 16), seed=layer * 100 + expert * 10 + len(projection))
                    arrays[layer, expert, projection] = a
                    w.add_tensor(f"l{layer}.e{expert}.{projection}", a, dtype="bf16",
                                 role={"layer": layer, "expert": expert, "projection": projection})
        w.add_tensor("far", make_weights("f32", (3,), seed=2),
                     role={"layer": 2**32 - 1, "expert": np.uint32(7), "projection": "w1"})
    with zipmoe.open_container(path) as c:
        for (layer, expert, projection), a in arrays.items():
            info = c.find_expert(layer, expert, projection)
            assert info.name == f"l{layer}.e{expert}.{projection}"
            np.testing.assert_array_equal(c.read_expert(layer, expert, projection), a)
        assert c.find_expert(3, 0, "gate") is None
        assert c.find_expert(0, 0, "gate_proj") is None
        assert c.find_expert(-1, 0, "gate") is None
        assert c.find_expert(2**32 - 1, 7, "w1").name == "far"
        with pytest.raises(KeyError, match="layer 0, expert 9"):
            c.read_expert(0, 9, "up")
        with pytest.raises(KeyError, match="nope"):
            c.read("nope")
        assert "embed" in c and "nope" not in c
        assert list(c)[:2] == ["embed", "l0.e0.gate"]


def test_empty_container(tmp_path):
    path = tmp_path / "empty.zmoe"
    with zipmoe.ContainerWriter(path) as w:
        assert w.num_tensors == 0
    with zipmoe.open_container(path) as c:
        assert c.metadata == {}
        assert c.tensors == []
        assert os.path.getsize(path) == 2 * 4096  # the header page and a page holding "{}"


def test_metadata_can_change_until_close(tmp_path):
    path = tmp_path / "m.zmoe"
    w = zipmoe.ContainerWriter(path, {"a": 1})
    w.add_tensor("x", np.zeros(3, np.float32))
    w.metadata["tokenizer"] = {"vocab": ["ä", "😀"]}
    w.close()
    assert w.closed
    w.close()  # idempotent
    with zipmoe.open_container(path) as c:
        assert c.metadata == {"a": 1, "tokenizer": {"vocab": ["ä", "😀"]}}


def test_exception_inside_with_block_leaves_nothing(tmp_path):
    path = tmp_path / "atomic.zmoe"
    with pytest.raises(RuntimeError):
        with zipmoe.ContainerWriter(path, {}) as w:
            w.add_tensor("a", make_weights("f16", (1000,), seed=1))
            assert len(os.listdir(tmp_path)) <= 1  # the temporary file, unless it is unnamed (O_TMPFILE)
            raise RuntimeError("conversion failed")
    assert os.listdir(tmp_path) == []


def test_failed_add_inside_with_block_leaves_nothing(tmp_path):
    path = tmp_path / "atomic.zmoe"
    with pytest.raises(zipmoe.InvalidArgumentError):
        with zipmoe.ContainerWriter(path, {}) as w:
            w.add_tensor("a", make_weights("f16", (1000,), seed=1))
            w.add_tensor("a", make_weights("f16", (1000,), seed=1))
    assert os.listdir(tmp_path) == []


def test_dropped_writer_leaves_nothing_and_existing_file_survives(tmp_path):
    path = tmp_path / "keep.zmoe"
    path.write_bytes(b"previous contents")
    w = zipmoe.ContainerWriter(path, {})
    w.add_tensor("a", make_weights("f32", (100,), seed=1))
    del w
    gc.collect()
    assert os.listdir(tmp_path) == ["keep.zmoe"]
    assert path.read_bytes() == b"previous contents"
    w = zipmoe.ContainerWriter(path, {})
    w.add_tensor("a", make_weights("f32", (100,), seed=1))
    w.discard()
    assert os.listdir(tmp_path) == ["keep.zmoe"]
    with pytest.raises(zipmoe.InvalidArgumentError, match="closed"):
        w.add_tensor("b", np.zeros(1, np.float32))


def test_writer_rejects_bad_arguments(tmp_path):
    path = tmp_path / "bad.zmoe"
    a = np.zeros(4, np.float32)
    with pytest.raises(zipmoe.InvalidArgumentError, match="JSON"):
        zipmoe.ContainerWriter(path, {"x": object()})
    with pytest.raises(zipmoe.InvalidArgumentError, match="JSON"):
        zipmoe.ContainerWriter(path, {"x": float("nan")})
    with pytest.raises(zipmoe.InvalidArgumentError):
        zipmoe.ContainerWriter(path, ["not", "a", "dict"])
    with pytest.raises(zipmoe.IoError):
        zipmoe.ContainerWriter(tmp_path / "no-such-dir" / "x.zmoe", {})
    w = zipmoe.ContainerWriter(path, {})
    w.add_tensor("a", a, role={"layer": 0, "expert": 0, "projection": "up"})
    bad_calls = [
        dict(name="a", array=a),  # duplicate name
        dict(name="b", array=a, role={"layer": 0, "expert": 0, "projection": "up"}),  # duplicate expert
        dict(name="", array=a),
        dict(name="x" * 1025, array=a),
        dict(name="b", array=a, role={"layer": -1, "expert": 0, "projection": "up"}),
        dict(name="b", array=a, role={"layer": 2**32, "expert": 0, "projection": "up"}),
        dict(name="b", array=a, role={"layer": 0, "expert": 0}),
        dict(name="b", array=a, role={"layer": 0, "expert": 0, "projection": "up", "extra": 1}),
        dict(name="b", array=a, role={"layer": 0, "expert": 0, "projection": ""}),
        dict(name="b", array=a, role={"layer": 0, "expert": 0, "projection": "p" * 65}),
        dict(name="b", array=a, role={"layer": True, "expert": 0, "projection": "up"}),
        dict(name="b", array=a, role="expert"),
        dict(name="b", array=a, dtype="f16"),
        dict(name="b", array=np.zeros(4, np.uint16)),  # ambiguous without dtype="bf16"
        dict(name="b", array=np.zeros(4, np.int32)),
        dict(name="b", array=np.zeros([1] * 9, np.float32)),
        dict(name="b", array=a, codec="zstd"),
        dict(name="b", array=a, codec="constant"),
    ]
    for kwargs in bad_calls:
        with pytest.raises(zipmoe.InvalidArgumentError):
            w.add_tensor(**kwargs)
    w.add_tensor("b", a[::2])  # non-contiguous input is fine
    w.close()
    with zipmoe.open_container(path) as c:
        assert [t.name for t in c.tensors] == ["a", "b"]
        np.testing.assert_array_equal(c.read("b"), a[::2])


def test_concurrent_reads_from_threads(model, samples):
    with zipmoe.open_container(model, io="pread") as c:
        expected = {name: as_bits(array) for name, array, *_ in samples}
        errors = []

        def worker(offset):
            try:
                for i in range(len(samples)):
                    name = samples[(i + offset) % len(samples)][0]
                    np.testing.assert_array_equal(as_bits(c.read(name, threads=1)), expected[name])
            except Exception as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k * 7,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]


def test_closed_container_and_bad_io_mode(model):
    c = zipmoe.open_container(model)
    c.close()
    assert c.closed
    with pytest.raises(zipmoe.InvalidArgumentError, match="closed"):
        c.read(c.tensors[0].name)
    with pytest.raises(zipmoe.InvalidArgumentError):
        zipmoe.open_container(model, io="async")
    with pytest.raises(zipmoe.IoError, match="No such file"):
        zipmoe.open_container(str(model) + ".missing")


# ---------------------------------------------------------------------------
# Damaged files


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "small.zmoe"
    samples = [s for s in build_samples() if s[1].size < 5000][:12]
    write(path, samples)
    return path, path.read_bytes()


def header_fields(data):
    index_offset, index_size, table_offset, table_size, meta_offset, meta_size = struct.unpack_from("<6Q", data, 48)
    return index_offset, index_size, table_offset, table_size, meta_offset, meta_size


def read_everything(path, io="pread"):
    with zipmoe.open_container(path, io=io) as c:
        for t in c.tensors:
            c.read(t.name, threads=1)


def test_truncated_files_are_rejected_at_every_length(small_model, tmp_path):
    path, data = small_model
    lengths = sorted({0, 1, 7, 8, 100, 4095, 4096, 4097, 8192, *range(8192, len(data), 5003),
                      len(data) - 4096, len(data) - 1})
    cut = tmp_path / "cut.zmoe"
    for length in lengths:
        cut.write_bytes(data[:length])
        with pytest.raises(zipmoe.FormatError) as e:
            read_everything(cut)
        assert str(cut) in str(e.value)


def test_wrong_magic_and_unknown_version(small_model, tmp_path):
    path, data = small_model
    bad = tmp_path / "bad.zmoe"
    bad.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(zipmoe.FormatError, match="bad magic"):
        zipmoe.open_container(bad)
    bad.write_bytes(data[:8] + struct.pack("<HH", 2, 0) + data[12:])
    with pytest.raises(zipmoe.FormatError, match=r"version 2\.0 is not supported \(this build reads version 1\.x"):
        zipmoe.open_container(bad)
    bad.write_bytes(b"not a container at all")
    with pytest.raises(zipmoe.FormatError, match="not a zipmoe container"):
        zipmoe.open_container(bad)


def flip(data, at, bit=0):
    out = bytearray(data)
    out[at] ^= 1 << bit
    return bytes(out)


def test_bit_flips_in_header_index_table_and_metadata(small_model, tmp_path):
    path, data = small_model
    index_offset, index_size, table_offset, table_size, meta_offset, meta_size = header_fields(data)
    bad = tmp_path / "flipped.zmoe"
    cases = [(at, "header checksum mismatch") for at in (12, 20, 40, 64, 100, 2000, 4095)]
    for offset, size, message in ((index_offset, index_size, "tensor index checksum mismatch"),
                                  (table_offset, table_size, "chunk table checksum mismatch"),
                                  (meta_offset, meta_size, "metadata checksum mismatch")):
        cases += [(offset + k, message) for k in range(0, size, max(1, size // 9))]
    for at, message in cases:
        bad.write_bytes(flip(data, at, at % 8))
        with pytest.raises(zipmoe.ChecksumError, match=message) as e:
            zipmoe.open_container(bad)
        assert str(bad) in str(e.value)


@pytest.mark.parametrize("io", IO_MODES)
def test_bit_flips_in_chunks_name_tensor_and_chunk(small_model, tmp_path, io):
    path, data = small_model
    with zipmoe.open_container(path) as c:
        chunks = c.chunks()
        tensors = c.tensors
    bad = tmp_path / "flipped.zmoe"
    for chunk in chunks:
        if chunk["stored_size"] == 0:
            continue
        tensor = tensors[chunk["tensor"]]
        kind = "exponent plane" if chunk["kind"] == "exponent" else "sign/mantissa plane"
        for at in (chunk["offset"], chunk["offset"] + chunk["stored_size"] - 1):
            bad.write_bytes(flip(data, at, 3))
            with zipmoe.open_container(bad, io=io) as c:  # chunks are checked when read, not at open
                with pytest.raises(zipmoe.ChecksumError) as e:
                    c.read(tensor.name)
                with pytest.raises(zipmoe.ChecksumError):
                    c.read_chunk(chunk["index"])
            message = str(e.value)
            assert str(bad) in message
            assert f"'{tensor.name}'" in message
            assert f"chunk {chunk['index']} ({kind})" in message


def test_random_damage_never_crashes(small_model, tmp_path):
    path, data = small_model
    rng = np.random.default_rng(7)
    bad = tmp_path / "damaged.zmoe"
    rejected = 0
    for iteration in range(150):
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(0, 160)) if iteration % 3 == 0 else int(rng.integers(0, len(damaged)))
            damaged[at] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(damaged))
        try:
            read_everything(bad, io=IO_MODES[iteration % 3])
        except zipmoe.FormatError:
            rejected += 1
    assert rejected > 60


def test_metadata_that_is_not_json_is_a_format_error(tmp_path):
    # Only the native writer can produce this: it treats metadata as opaque UTF-8.
    from zipmoe import _core

    path = tmp_path / "m.zmoe"
    w = _core.ContainerWriter(str(path), "{not json")
    w.finish()
    with pytest.raises(zipmoe.FormatError, match="not valid JSON"):
        zipmoe.open_container(path)
    w = _core.ContainerWriter(str(path), json.dumps([1, 2]))
    w.finish()
    with pytest.raises(zipmoe.FormatError, match="not a JSON object"):
        zipmoe.open_container(path)

import threading
import time

import numpy as np
import pytest

import zipmoe
from conftest import as_bits, make_weights

DTYPES = ["bf16", "f16", "f32"]
CODECS = ["auto", "huffman", "rans", "raw"]


def compress(a, dtype, **kw):
    return zipmoe.compress(a, dtype="bf16" if dtype == "bf16" else None, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 3), (4097,), (300, 1001)])
def test_round_trip_bit_exact(dtype, codec, shape):
    a = make_weights(dtype, shape, seed=hash((dtype, codec, shape)) % 1000)
    blob = compress(a, dtype, codec=codec)
    b = zipmoe.decompress(blob)
    assert b.shape == a.shape
    assert b.dtype == (np.uint16 if dtype == "bf16" else a.dtype)
    np.testing.assert_array_equal(as_bits(b), as_bits(a))


@pytest.mark.parametrize("codec", ["huffman", "rans", "auto"])
def test_every_isa_and_thread_count_gives_identical_bits(codec):
    a = make_weights("bf16", (700_000,), seed=3)
    blob = zipmoe.compress(a, dtype="bf16", codec=codec, segment_symbols=50_000)
    assert zipmoe.blob_info(blob)["num_segments"] == 14
    for isa in zipmoe.available_isas():
        for threads in (1, 2, 3):
            b = zipmoe.decompress(blob, threads=threads, isa=isa)
            np.testing.assert_array_equal(b, a, err_msg=f"isa={isa} threads={threads}")


def test_encoding_does_not_depend_on_thread_count():
    a = make_weights("f32", (400_000,), seed=4)
    blobs = {zipmoe.compress(a, threads=t, segment_symbols=65536) for t in (1, 2, 4)}
    assert len(blobs) == 1


def test_every_16bit_pattern_round_trips():
    every = np.arange(65536, dtype=np.uint16)
    for codec in CODECS:
        np.testing.assert_array_equal(zipmoe.decompress(zipmoe.compress(every, dtype="bf16", codec=codec)), every)
        f16 = every.view(np.float16)
        np.testing.assert_array_equal(as_bits(zipmoe.decompress(zipmoe.compress(f16, codec=codec))), every)


def test_constant_and_two_symbol_planes():
    ones = np.ones(100_000, dtype=np.float32)  # layer-norm weights: a single exponent
    blob = zipmoe.compress(ones)
    info = zipmoe.blob_info(blob)
    assert info["codec"] == "constant"
    assert info["coded_plane_bytes"] < 1000
    np.testing.assert_array_equal(zipmoe.decompress(blob), ones)
    two = np.where(np.arange(10_000) % 3 == 0, 1.0, 2.0).astype(np.float32)
    np.testing.assert_array_equal(zipmoe.decompress(zipmoe.compress(two)), two)


def test_entropy_coding_reaches_the_bound_on_gaussian_weights():
    a = make_weights("bf16", (2_000_000,), seed=5, specials=False)
    exponents = (a >> 7).astype(np.uint8)
    counts = np.bincount(exponents, minlength=256)
    p = counts[counts > 0] / a.size
    entropy = float(-(p * np.log2(p)).sum())
    bound = (entropy / 8 + 1) * a.size
    for codec in ("huffman", "rans", "auto"):
        size = len(zipmoe.compress(a, dtype="bf16", codec=codec))
        assert size <= bound * 1.01, (codec, size / bound)
        assert size < 0.70 * a.nbytes


def test_blob_info_describes_the_blob():
    a = make_weights("f16", (3, 5, 7), seed=6)
    info = zipmoe.blob_info(zipmoe.compress(a, codec="raw"))
    assert info["dtype"] == "f16"
    assert info["shape"] == (3, 5, 7)
    assert info["num_elements"] == 105
    assert info["codec"] == "raw"
    assert info["sm_plane_bytes"] == 105


def test_non_contiguous_input_is_handled():
    a = make_weights("f32", (64, 64), seed=7)
    view = a[:, ::2]
    np.testing.assert_array_equal(as_bits(zipmoe.decompress(zipmoe.compress(view))), as_bits(np.ascontiguousarray(view)))


@pytest.mark.parametrize("bad", [
    dict(array=np.zeros(4, np.int32)),
    dict(array=np.zeros(4, np.float64)),
    dict(array=np.zeros(4, np.uint16)),  # ambiguous without dtype="bf16"
    dict(array=np.zeros(4, np.float32), dtype="bf16"),
    dict(array=np.zeros(4, np.float32), dtype="f99"),
    dict(array=np.zeros(4, np.float32), codec="zip"),
    dict(array=np.zeros(4, np.float32), codec="constant"),
    dict(array=np.zeros(4, np.float32), threads=0),
    dict(array=np.zeros(4, np.float32), segment_symbols=-1),
    dict(array=np.zeros(4, np.float32), segment_symbols=1 << 30),
    dict(array=np.zeros((1,) * 9, np.float32)),
])
def test_bad_arguments_raise_clear_errors(bad):
    with pytest.raises((zipmoe.InvalidArgumentError, OverflowError, TypeError)):
        zipmoe.compress(**bad)


def test_invalid_argument_error_is_a_value_error():
    with pytest.raises(ValueError):
        zipmoe.compress(np.zeros(3, np.int64))
    with pytest.raises(zipmoe.ZipMoEError):
        zipmoe.decompress(zipmoe.compress(np.zeros(3, np.float32)), isa="sse9")


@pytest.mark.parametrize("codec", CODECS)
def test_every_truncation_is_rejected(codec):
    a = make_weights("bf16", (3000,), seed=8)
    blob = zipmoe.compress(a, dtype="bf16", codec=codec, segment_symbols=1000)
    for cut in list(range(0, 64)) + list(range(64, len(blob), 97)) + [len(blob) - 1]:
        with pytest.raises(zipmoe.FormatError):
            zipmoe.decompress(blob[:cut])
    with pytest.raises(zipmoe.FormatError):
        zipmoe.decompress(blob + b"\0")


@pytest.mark.parametrize("codec", CODECS)
def test_bit_flips_anywhere_are_detected(codec):
    a = make_weights("f32", (2000,), seed=9)
    blob = bytearray(zipmoe.compress(a, codec=codec, segment_symbols=700))
    rng = np.random.default_rng(10)
    positions = sorted(set(range(0, 80)) | set(rng.integers(0, len(blob), 300).tolist()))
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises((zipmoe.ChecksumError, zipmoe.FormatError)):
            zipmoe.decompress(bytes(damaged))


@pytest.mark.parametrize("codec", CODECS)
def test_damage_past_the_blob_header_is_a_checksum_error(codec):
    # The checksum is verified during the decode; damage that also breaks the coded
    # plane's framing or its streams must still be reported as the corruption it is.
    a = make_weights("bf16", (5000,), seed=12)
    blob = bytearray(zipmoe.compress(a, dtype="bf16", codec=codec, segment_symbols=1500))
    header = 8 + 8 * 1 + 16  # magic, version, dtype, ndim, one dimension, the two plane sizes
    rng = np.random.default_rng(13)
    positions = sorted(set(range(header, header + 120)) | set(rng.integers(header, len(blob), 200).tolist()))
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(zipmoe.ChecksumError):
            zipmoe.decompress(bytes(damaged))
        with pytest.raises(zipmoe.ChecksumError):
            zipmoe.decompress(bytes(damaged), threads=2, isa="scalar")


def test_checksum_error_names_the_problem():
    blob = bytearray(zipmoe.compress(make_weights("bf16", (5000,), seed=11), dtype="bf16"))
    blob[-100] ^= 0x10  # inside the sign/mantissa plane: framing stays valid, only the checksum can tell
    with pytest.raises(zipmoe.ChecksumError, match="checksum"):
        zipmoe.decompress(bytes(blob))


def test_wrong_magic_and_version():
    blob = bytearray(zipmoe.compress(np.ones(10, np.float32)))
    with pytest.raises(zipmoe.FormatError, match="magic"):
        zipmoe.decompress(b"XXXX" + bytes(blob[4:]))
    blob[4] = 9
    with pytest.raises(zipmoe.FormatError, match="version"):
        zipmoe.decompress(bytes(blob))


def test_decompress_releases_the_gil():
    a = make_weights("bf16", (8_000_000,), seed=12, specials=False)
    blob = zipmoe.compress(a, dtype="bf16")
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.perf_counter()
        for _ in range(5):
            zipmoe.decompress(blob, threads=1)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if start < x < end]
    # With the GIL held for the whole decode the ticker could not run at all.
    assert len(during) >= 5

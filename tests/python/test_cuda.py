"""GPU decoding (zipmoe._core.cuda_decompress) against the CPU decoder, bit for bit.

Runs where the build has the CUDA kernels and a GPU is present; elsewhere the GPU
tests are skipped ("no CUDA GPU on this machine"). The kernels' logic is also
tested without a GPU by the C++ test tests/cpp/test_cuda_logic.cpp.
"""

import numpy as np
import pytest

import zipmoe
from zipmoe import _core

from conftest import as_bits, make_weights

HAVE_GPU = bool(getattr(_core, "cuda_available", lambda: False)())
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="no CUDA GPU on this machine")


def _compress(x, dtype, **kwargs):
    return zipmoe.compress(x, dtype="bf16" if dtype == "bf16" else None, **kwargs)


def _check(blob, original=None):
    cpu = zipmoe.decompress(blob)
    gpu = _core.cuda_decompress(blob)
    assert gpu.shape == cpu.shape
    assert gpu.dtype == cpu.dtype
    np.testing.assert_array_equal(as_bits(gpu), as_bits(cpu))
    if original is not None:
        np.testing.assert_array_equal(as_bits(gpu).reshape(-1), as_bits(np.asarray(original)).reshape(-1))


def test_cuda_available_is_a_bool():
    assert isinstance(_core.cuda_available(), bool)


@pytest.mark.skipif(HAVE_GPU, reason="checks the behaviour without a GPU")
def test_cuda_decompress_without_a_gpu_raises():
    blob = zipmoe.compress(make_weights("bf16", (100,), seed=1), dtype="bf16")
    with pytest.raises(zipmoe.ZipMoEError):
        _core.cuda_decompress(blob)


@needs_gpu
@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("codec", ["huffman", "rans", "raw", "auto"])
@pytest.mark.parametrize("shape", [(1,), (7,), (65, 3), (1000, 37), (2048, 1408)])
def test_cuda_decompress_matches_cpu(dtype, codec, shape):
    x = make_weights(dtype, shape, seed=sum(shape) + len(codec))
    _check(_compress(x, dtype, codec=codec), x)


@needs_gpu
@pytest.mark.parametrize("codec", ["huffman", "rans"])
@pytest.mark.parametrize("segment_symbols", [1, 3, 64, 100, 4096])
def test_cuda_decompress_small_segments(codec, segment_symbols):
    x = make_weights("bf16", (5000,), seed=segment_symbols)
    _check(_compress(x, "bf16", codec=codec, segment_symbols=segment_symbols), x)


@needs_gpu
@pytest.mark.parametrize("codec", ["huffman", "rans", "auto"])
def test_cuda_decompress_special_planes(codec):
    every_pattern = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    _check(zipmoe.compress(every_pattern, dtype="bf16", codec=codec), every_pattern)
    _check(zipmoe.compress(every_pattern.view(np.float16), codec=codec), every_pattern.view(np.float16))
    constant = np.full(100000, 0x3F80, dtype=np.uint16)
    _check(zipmoe.compress(constant, dtype="bf16", codec=codec), constant)
    rng = np.random.default_rng(3)
    two_exponents = np.where(rng.random(200000) < 0.9, 0x3F80, 0x4000).astype(np.uint16)
    two_exponents |= rng.integers(0, 128, two_exponents.size, dtype=np.uint16)
    _check(zipmoe.compress(two_exponents, dtype="bf16", codec=codec), two_exponents)
    f32 = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, 1.0] * 1000, dtype=np.float32)
    f32.view(np.uint32)[4::9] = 0x7FC00001  # NaNs with a payload
    _check(zipmoe.compress(f32, codec=codec), f32)
    _check(zipmoe.compress(np.zeros((0, 5), np.float32), codec=codec))


@needs_gpu
@pytest.mark.parametrize("codec", ["huffman", "rans"])
def test_cuda_decompress_rejects_corrupt_blobs_like_the_cpu(codec):
    x = make_weights("bf16", (20000,), seed=9)
    blob = bytearray(_compress(x, "bf16", codec=codec))
    rng = np.random.default_rng(4)
    for _ in range(50):
        bad = bytearray(blob)
        at = int(rng.integers(0, len(bad)))
        bad[at] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(zipmoe.ZipMoEError):
            zipmoe.decompress(bytes(bad))
        with pytest.raises(zipmoe.ZipMoEError):
            _core.cuda_decompress(bytes(bad))

import hashlib
import importlib.util
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def machine_profile_dir(tmp_path_factory):
    """The expert cache stores measured speeds per container file (docs/CACHE.md): the tests' go to a folder of
    this run, not the user's cache (subprocesses inherit it)."""
    if os.environ.get("ZIPMOE_CACHE_DIR"):
        yield
        return
    os.environ["ZIPMOE_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine-profiles"))
    yield
    del os.environ["ZIPMOE_CACHE_DIR"]


def _load_data_fetcher():
    spec = importlib.util.spec_from_file_location("zipmoe_test_data_fetch", REPO / "tests" / "data" / "fetch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fetcher = _load_data_fetcher()
# The tokenizer vocabularies, chat templates and corpus the tests read (tests/data/README.md): not in the
# repository; `python tests/data/fetch.py` puts them here.
TEST_DATA = _fetcher.data_dir()
DATA_FILES = _fetcher.manifest()  # {relative path: SHA-256}
_checked = set()


def data_file(relative: str) -> pathlib.Path:
    """One file of the test data, checked against tests/data/SHA256SUMS. Missing or different: the test fails."""
    path = TEST_DATA / relative
    if relative not in _checked:
        if relative not in DATA_FILES:
            pytest.fail(f"{relative} is not listed in tests/data/SHA256SUMS")
        if not path.is_file():
            pytest.fail(f"test data {relative} is missing from {TEST_DATA}: run `python tests/data/fetch.py` "
                        "(tests/data/README.md)")
        if hashlib.sha256(path.read_bytes()).hexdigest() != DATA_FILES[relative]:
            pytest.fail(f"test data {path} differs from tests/data/SHA256SUMS: rerun `python tests/data/fetch.py`")
        _checked.add(relative)
    return path


def data_files(folder: str, suffix: str = "") -> list:
    """The relative paths of the test data in `folder` (not below it) whose names end with `suffix`."""
    return [p for p in DATA_FILES if p.rsplit("/", 1)[0] == folder and p.endswith(suffix)]


def bf16_from_f32(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> BF16 bit patterns (uint16), NaNs kept quiet."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


SPECIAL_BF16 = np.array([0x7FC0, 0xFFC1, 0x7F81, 0x7F80, 0xFF80, 0x0001, 0x8001, 0x007F, 0x0000, 0x8000,
                         0x7F7F, 0xFF7F, 0x0080, 0x7E01], dtype=np.uint16)
SPECIAL_F16 = np.array([0x7E00, 0xFE01, 0x7C01, 0x7C00, 0xFC00, 0x0001, 0x8001, 0x03FF, 0x0000, 0x8000,
                        0x7BFF, 0xFBFF, 0x0400], dtype=np.uint16)
SPECIAL_F32 = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7F800000, 0xFF800000, 0x00000001, 0x80000001,
                        0x007FFFFF, 0x00000000, 0x80000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x7FBFFFFF],
                       dtype=np.uint32)


def make_weights(dtype: str, shape, seed: int = 0, sigma: float = 0.02, specials: bool = True) -> np.ndarray:
    """Gaussian weights of the given zipmoe dtype, with special values sprinkled in (1%)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, sigma, size=shape).astype(np.float32)
    n = x.size
    if dtype == "bf16":
        out = bf16_from_f32(x)
        pool = SPECIAL_BF16
    elif dtype == "f16":
        out = x.astype(np.float16).view(np.uint16)
        pool = SPECIAL_F16
    else:
        out = x.view(np.uint32).copy()
        pool = SPECIAL_F32
    if specials and n:
        flat = out.reshape(-1)
        idx = rng.choice(n, size=max(1, n // 100), replace=True)
        flat[idx] = rng.choice(pool, size=idx.size)
    if dtype == "f16":
        return out.view(np.float16)
    if dtype == "f32":
        return out.view(np.float32)
    return out


def as_bits(a: np.ndarray) -> np.ndarray:
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])

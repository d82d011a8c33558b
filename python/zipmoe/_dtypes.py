"""Element types of tensors: the container's dtype names, their numpy storage types, and which one an array is."""

from __future__ import annotations

import numpy as np

from . import _core
from ._names import DTYPES, FLOAT_DTYPES  # noqa: F401  (FLOAT_DTYPES re-exported)

# Container dtype name -> the numpy type its elements are stored as (BF16 as uint16 bit patterns; u8: raw bytes of
# tensors of any other type, docs/FORMAT.md).
NUMPY_DTYPES = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32, "u8": np.uint8}



def resolve_dtype(array: np.ndarray, dtype: str | None) -> str:
    """The container dtype name of ``array`` (``dtype`` given or inferred); InvalidArgumentError when it cannot be."""
    if dtype is not None:
        name = _core.canonical_name("dtype", dtype) if isinstance(dtype, str) else None
        if name is None:
            raise _core.InvalidArgumentError(f"unknown dtype {dtype!r} (use {', '.join(map(repr, DTYPES))})")
        expected = np.dtype(NUMPY_DTYPES[name])
        if name == "bf16":
            if array.dtype not in (np.dtype(np.uint16), np.dtype(np.int16)) and array.dtype.name != "bfloat16":
                raise _core.InvalidArgumentError(
                    f"dtype='bf16' needs a uint16 array of BF16 bit patterns, got {array.dtype}")
        elif array.dtype != expected:
            raise _core.InvalidArgumentError(f"dtype={dtype!r} does not match the array's dtype {array.dtype}")
        return name
    if array.dtype == np.float32:
        return "f32"
    if array.dtype == np.float16:
        return "f16"
    if array.dtype == np.uint8:
        return "u8"
    if array.dtype.name == "bfloat16":  # ml_dtypes / torch-style numpy extension type
        return "bf16"
    if array.dtype == np.uint16:
        raise _core.InvalidArgumentError("a uint16 array is ambiguous: pass dtype='bf16' for BF16 bit patterns")
    raise _core.InvalidArgumentError(
        f"cannot compress {array.dtype} arrays: zipmoe stores float32, float16, bf16 (uint16 with dtype='bf16') and "
        f"raw bytes (uint8; view other types as uint8)")

"""Lossless compression of single tensors: :func:`compress` and :func:`decompress`."""

from __future__ import annotations

import numpy as np

from . import _checks
from . import _core
from ._dtypes import NUMPY_DTYPES, resolve_dtype
from ._threads import get_pool


def compress(array, dtype: str | None = None, codec: str = "auto", threads: int | None = None,
             segment_symbols: int = 0) -> bytes:
    """Compresses a float tensor losslessly into a self-describing blob.

    array: a numpy array of float32 or float16, of uint16 holding BF16 bit
        patterns together with ``dtype="bf16"``, or of uint8 (raw bytes: each byte
        coded as a symbol, no sign/mantissa plane).
    codec: "auto" (the smallest of huffman/rans/raw for this tensor), "huffman",
        "rans", "raw", or "lz4hc" (LZ4HC blocks, the ZipMoE paper's exponent codec;
        only in builds with liblz4, otherwise an error naming liblz4).
    threads: threads to encode with (None: every core).
    segment_symbols: symbols per independently decodable segment (0: default).

    The blob holds dtype, shape, the coded exponent plane, the raw sign/mantissa
    plane and a CRC-32C checksum; :func:`decompress` gives back the same bits.
    """
    array = np.asarray(array)
    name = resolve_dtype(array, dtype)
    if not isinstance(codec, str):
        raise _core.InvalidArgumentError(f"codec must be a string, not {codec!r}")
    contiguous = np.ascontiguousarray(array)
    flat = contiguous.reshape(-1).view(np.uint8) if contiguous.size else np.zeros(0, np.uint8)
    segment_symbols = _checks.integer("segment_symbols (0: default)", segment_symbols, 0, _checks.UINT32_MAX)
    return _core.compress_buffer(flat, name, [int(d) for d in array.shape], codec, segment_symbols,
                                 get_pool(threads))


def blob_info(blob) -> dict:
    """Header fields of a blob (dtype, shape, codec, plane sizes) without decoding it."""
    return _core.blob_info(memoryview(blob).cast("B") if not isinstance(blob, (bytes, bytearray)) else blob)


def decompress(blob, threads: int | None = None, isa: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Decodes a blob made by :func:`compress` into a new numpy array.

    BF16 comes back as uint16 bit patterns, F16 as float16, F32 as float32, in the
    original shape. The checksum is verified as the data is decoded: corrupted data
    raises :class:`ChecksumError` (or :class:`FormatError`), never returns wrong
    values (an ``out`` array passed in holds unspecified values after a raise).
    ``isa`` forces an instruction-set path ("scalar", "avx2", "avx512", "neon").
    ``out``: an existing C-contiguous array of the right dtype and size to decode
    into (avoids allocating; returned reshaped to the blob's shape).
    """
    if isinstance(blob, np.ndarray):
        blob = blob.reshape(-1).view(np.uint8)
    info = _core.blob_info(blob)
    dtype = np.dtype(NUMPY_DTYPES[info["dtype"]])
    if out is None:
        out = np.empty(info["shape"], dtype=dtype)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != dtype or not out.flags.c_contiguous \
                or out.size != info["num_elements"] or not out.flags.writeable:
            raise _core.InvalidArgumentError(
                f"out must be a writeable C-contiguous {dtype} array of {info['num_elements']} elements")
        out = out.reshape(info["shape"])
    _core.decompress_into(blob, out.reshape(-1).view(np.uint8), get_pool(threads), isa)
    return out

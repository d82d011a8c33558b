"""The safetensors file format, read and written without the safetensors package.

A file is: u64 little-endian N, N bytes of UTF-8 JSON (the header, often padded
with spaces), then the data region. The header maps each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data
region) and may hold ``"__metadata__"`` (string to string). Tensors are stored
C-contiguous, little-endian.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field

from .fileio import format_error, io_error

# Bytes per element of every dtype the format defines (sub-byte float types excluded).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
# The float dtypes zipmoe stores as floats, by their container names.
FLOAT_DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32"}


def storage(dtype: str, shape) -> tuple:
    """(container dtype, shape) of the container tensor that holds a tensor of ``dtype`` and ``shape``: float
    types as they are; any other type as its raw bytes, u8 with one more axis of the item size
    (docs/FORMAT.md, "Conversion")."""
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype], tuple(shape)
    return "u8", (*shape, DTYPE_SIZES[dtype])

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


@dataclass
class SafetensorsEntry:
    name: str
    dtype: str  # as the file names it, e.g. "BF16"
    shape: tuple
    begin: int  # data_offsets, relative to the data region
    end: int


@dataclass
class SafetensorsHeader:
    path: str
    file_size: int
    header_text: str  # the JSON header exactly as stored (padding included)
    data_start: int  # 8 + header length
    entries: list = field(default_factory=list)  # in data order
    metadata: dict | None = None


def read_header(path: str) -> SafetensorsHeader:
    """Parses and validates the header of ``path`` (FormatError / IoError naming the file and tensor)."""
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise format_error(f"{path}: not a safetensors file (only {file_size} bytes)")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_HEADER_BYTES or 8 + header_size > file_size:
                raise format_error(f"{path}: corrupt safetensors header (it claims {header_size} bytes, the file has "
                                   f"{file_size})")
            raw = f.read(header_size)
    except OSError as e:
        raise io_error(f"{path}: {e.strerror}") from None
    if len(raw) != header_size:
        raise format_error(f"{path}: the safetensors header is truncated")
    try:
        text = raw.decode("utf-8")
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise format_error(f"{path}: corrupt safetensors header (not UTF-8 JSON: {e})") from None
    if not isinstance(header, dict):
        raise format_error(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + header_size
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise format_error(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    entries = []
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"} or len(info) != 3:
            raise format_error(f"{where}: corrupt header entry {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise format_error(f"{where}: unknown safetensors dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise format_error(f"{where}: corrupt shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise format_error(f"{where}: corrupt data_offsets {offsets!r}")
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != expected:
            raise format_error(f"{where}: data_offsets span {offsets[1] - offsets[0]} bytes but {dtype} "
                               f"{list(shape)} needs {expected}")
        if offsets[1] > data_size:
            raise format_error(f"{where}: truncated file (the tensor ends at byte {data_start + offsets[1]}, the "
                               f"file has {file_size})")
        entries.append(SafetensorsEntry(name, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e.begin, e.end))
    for previous, current in zip(entries, entries[1:]):
        if current.begin < previous.end:
            raise format_error(f"{path}: tensors {previous.name!r} and {current.name!r} overlap")
    return SafetensorsHeader(path=path, file_size=file_size, header_text=text, data_start=data_start,
                             entries=entries, metadata=metadata)


def header_prefix(header_text: str) -> bytes:
    """The bytes a file starts with for this header: its length and the header itself."""
    raw = header_text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw

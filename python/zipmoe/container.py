"""The .zmoe container: a whole model in one file (:class:`ContainerWriter`, :func:`open_container`).

Every tensor is stored as two chunks, its entropy-coded exponent plane and its raw
sign/mantissa plane, each at a 4096-byte boundary with its own CRC-32C; an index
names each tensor's dtype, shape and role (dense, or one projection of one expert);
the metadata is a JSON object. docs/FORMAT.md specifies the layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from . import _checks
from . import _core
from ._names import IO_MODES, check_choice
from ._dtypes import NUMPY_DTYPES, resolve_dtype
from ._threads import get_pool

_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a container, as its index describes it (no data is read)."""

    name: str
    dtype: str  # "bf16", "f16", "f32", or "u8" (the raw bytes of a tensor of another type)
    shape: tuple
    role: str  # "dense" or "expert"
    layer: int | None  # expert tensors only
    expert: int | None
    projection: str | None
    codec: str  # how the exponent plane is coded: "huffman", "rans", "raw" or "constant"
    exponent_bytes: int  # stored bytes of the coded exponent plane
    sm_bytes: int  # stored bytes of the sign/mantissa plane
    exponent_entropy: float  # order-0 entropy of the exponent plane, bits per element
    num_elements: int
    index: int  # position in the container
    exponent_chunk: int  # chunk indices (see Container.chunks / read_chunk)
    sm_chunk: int

    @property
    def stored_bytes(self) -> int:
        """Bytes both chunks occupy in the file (alignment padding excluded)."""
        return self.exponent_bytes + self.sm_bytes

    @property
    def raw_bytes(self) -> int:
        """Bytes of the decoded tensor."""
        return self.num_elements * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize

    @property
    def ratio(self) -> float:
        """raw_bytes / stored_bytes (below 1 for tiny tensors, whose plane headers dominate)."""
        return self.raw_bytes / self.stored_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d.update(stored_bytes=self.stored_bytes, raw_bytes=self.raw_bytes, ratio=self.ratio)
        return d


def _role_tuple(role, name: str):
    """None for a dense tensor, else (layer, expert, projection) checked to fit the format."""
    if role is None or (isinstance(role, str) and role == "dense"):
        return None
    if not isinstance(role, dict):
        raise _core.InvalidArgumentError(
            f"tensor {name!r}: role must be None, 'dense' or a dict with layer, expert and projection, not {role!r}")
    unknown = set(role) - {"layer", "expert", "projection"}
    missing = {"layer", "expert", "projection"} - set(role)
    if unknown or missing:
        raise _core.InvalidArgumentError(
            f"tensor {name!r}: an expert role has exactly the keys layer, expert and projection "
            f"(missing: {sorted(missing)}, unknown: {sorted(unknown)})")
    layer, expert, projection = role["layer"], role["expert"], role["projection"]
    for key, value in (("layer", layer), ("expert", expert)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= _U32_MAX:
            raise _core.InvalidArgumentError(
                f"tensor {name!r}: role {key} must be an integer in [0, 2^32), not {value!r}")
    if not isinstance(projection, str):
        raise _core.InvalidArgumentError(f"tensor {name!r}: role projection must be a string, not {projection!r}")
    return int(layer), int(expert), projection


class ContainerWriter:
    """Writes a .zmoe container, one tensor at a time.

    >>> with zipmoe.ContainerWriter("model.zmoe", {"architecture": "qwen2_moe"}) as w:
    ...     w.add_tensor("model.embed_tokens.weight", embed_bits, dtype="bf16")
    ...     w.add_tensor("model.layers.0.mlp.experts.3.up_proj.weight", up, dtype="bf16",
    ...                  role={"layer": 0, "expert": 3, "projection": "up"})

    The file appears at ``path`` only when :meth:`close` succeeds; an exception
    inside the ``with`` block, :meth:`discard`, or a writer dropped without
    closing leaves ``path`` as it was and no temporary file behind. ``metadata``
    (a JSON-serializable dict: architecture, tokenizer, ...) may be changed
    through :attr:`metadata` until :meth:`close`. Besides the caller's arrays, the
    writer holds the planes of one tensor at a time (about 1.5 times its size).
    """

    def __init__(self, path, metadata: dict | None = None, *, segment_symbols: int = 0):
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise _core.InvalidArgumentError(f"metadata must be a dict, not {type(metadata).__name__}")
        self.path = os.fspath(path)
        self.metadata = metadata
        # fail before any file is created
        _metadata_json(metadata)
        segment_symbols = _checks.integer("segment_symbols (0: default)", segment_symbols, 0, _checks.UINT32_MAX)
        self._native = _core.ContainerWriter(self.path, "{}", segment_symbols)

    def add_tensor(self, name: str, array, dtype: str | None = None, role=None, codec: str = "auto",
                   threads: int | None = None) -> None:
        """Compresses and appends one tensor.

        array: float32 or float16 numpy data, uint16 BF16 bit patterns with
            ``dtype="bf16"``, or uint8 raw bytes (as :func:`zipmoe.compress` takes).
        role: None or "dense", or ``{"layer": int, "expert": int, "projection": str}``
            for one projection of a routed expert.
        codec: "auto" (smallest), "huffman", "rans" or "raw" for the exponent plane.
        threads: encoding threads (None: every core).
        """
        native = self._require_open()
        if not isinstance(name, str):
            raise _core.InvalidArgumentError(f"tensor name must be a string, not {name!r}")
        if not isinstance(codec, str):
            raise _core.InvalidArgumentError(f"codec must be a string, not {codec!r}")
        array = np.asarray(array)
        dtype_name = resolve_dtype(array, dtype)
        role_tuple = _role_tuple(role, name)
        contiguous = np.ascontiguousarray(array)
        flat = contiguous.reshape(-1).view(np.uint8) if contiguous.size else np.zeros(0, np.uint8)
        native.add_tensor(name, flat, dtype_name, [int(d) for d in array.shape], role_tuple, codec,
                          get_pool(threads))

    def close(self) -> None:
        """Writes index, metadata and header, syncs, and moves the file into place."""
        if self._native is None:
            return
        native = self._native
        try:
            native.set_metadata(_metadata_json(self.metadata))
            native.finish()
        except BaseException:
            native.discard()
            self._native = None
            raise
        self._native = None

    def discard(self) -> None:
        """Abandons the file: nothing appears at ``path``."""
        if self._native is not None:
            self._native.discard()
            self._native = None

    @property
    def closed(self) -> bool:
        return self._native is None

    @property
    def num_tensors(self) -> int:
        return self._require_open().num_tensors

    @property
    def bytes_written(self) -> int:
        """Bytes of the file written so far (header page, chunks and their padding)."""
        return self._require_open().bytes_written

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def _require_open(self):
        if self._native is None:
            raise _core.InvalidArgumentError(f"{self.path}: the container writer is closed")
        return self._native


def _metadata_json(metadata: dict) -> str:
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _core.InvalidArgumentError(f"metadata is not JSON-serializable: {e}") from None


class Container:
    """An open .zmoe container (see :func:`open_container`). Thread-safe for reads."""

    def __init__(self, path, io: str = "pread"):
        check_choice("io", io, IO_MODES)
        self.path = _checks.container_path(path)
        try:
            self._native = _core.ContainerReader(self.path, io)
        except _core.FormatError as error:
            if type(error) is not _core.FormatError:
                raise
            raise _checks.explain_not_a_container(self.path, error) from None
        text = self._native.metadata_json
        try:
            metadata = json.loads(text) if text else {}
        except ValueError as e:
            raise _core.FormatError(f"{self.path}: metadata is not valid JSON: {e}") from None
        if not isinstance(metadata, dict):
            raise _core.FormatError(f"{self.path}: metadata is not a JSON object")
        self.metadata: dict = metadata
        self.tensors: list[TensorInfo] = [
            TensorInfo(name=t["name"], dtype=t["dtype"], shape=tuple(t["shape"]), role=t["role"], layer=t["layer"],
                       expert=t["expert"], projection=t["projection"], codec=t["codec"],
                       exponent_bytes=t["exponent_bytes"], sm_bytes=t["sm_bytes"],
                       exponent_entropy=t["exponent_entropy"], num_elements=t["num_elements"], index=t["index"],
                       exponent_chunk=t["exponent_chunk"], sm_chunk=t["sm_chunk"])
            for t in self._native.tensors()
        ]
        self._by_name = {t.name: t for t in self.tensors}
        self.io: str = io
        self.version: tuple = tuple(self._native.version)
        self.file_size: int = self._native.file_size

    @property
    def direct_io_active(self) -> bool:
        """With io="direct": whether reads really bypass the page cache."""
        return self._require_open().direct_io_active

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def info(self, name: str) -> TensorInfo:
        """The index entry of tensor ``name`` (KeyError when absent)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def find_expert(self, layer: int, expert: int, projection: str) -> TensorInfo | None:
        """The tensor of (layer, expert, projection), or None."""
        native = self._require_open()
        if not (0 <= layer <= _U32_MAX and 0 <= expert <= _U32_MAX):
            return None
        index = native.find_expert(int(layer), int(expert), projection)
        return None if index is None else self.tensors[index]

    def read(self, name: str, threads: int | None = None, isa: str | None = None) -> np.ndarray:
        """Decodes tensor ``name`` into a new array: BF16 as uint16 bit patterns, F16 as
        float16, F32 as float32, U8 as uint8, in its shape. Checksums are verified: damaged data
        raises ChecksumError naming file, tensor and chunk."""
        return self._read(self.info(name), threads, isa)

    def read_into(self, name: str, out: np.ndarray, threads: int | None = None) -> None:
        """Decodes tensor ``name`` into ``out``: a writeable C-contiguous array of its storage type
        (as :meth:`read` returns) and its element count, in any shape."""
        info = self.info(name)
        dtype = np.dtype(NUMPY_DTYPES[info.dtype])
        if not isinstance(out, np.ndarray) or out.dtype != dtype or not out.flags.c_contiguous \
                or not out.flags.writeable or out.size != info.num_elements:
            raise _core.InvalidArgumentError(
                f"out must be a writeable C-contiguous {dtype} array of {info.num_elements} elements")
        flat = out.reshape(-1).view(np.uint8) if out.size else np.zeros(0, np.uint8)
        self._require_open().decode_into(info.index, flat, get_pool(threads), None)

    def read_expert(self, layer: int, expert: int, projection: str, threads: int | None = None,
                    isa: str | None = None) -> np.ndarray:
        """Decodes the tensor of (layer, expert, projection) (KeyError when absent)."""
        info = self.find_expert(layer, expert, projection)
        if info is None:
            raise KeyError(f"no expert tensor for layer {layer}, expert {expert}, projection {projection!r} "
                           f"in {self.path}")
        return self._read(info, threads, isa)

    def read_chunk(self, index: int) -> bytes:
        """The stored bytes of chunk ``index`` (checksum verified)."""
        return self._require_open().read_chunk(index)

    def chunks(self) -> list[dict]:
        """The chunk table: kind, codec, tensor, offset, stored_size, decoded_size, crc32c of each chunk."""
        return self._require_open().chunks()

    def close(self) -> None:
        self._native = None

    @property
    def closed(self) -> bool:
        return self._native is None

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.tensors)} tensors"
        return f"<zipmoe.Container {self.path!r} {state}>"

    def _read(self, info: TensorInfo, threads, isa) -> np.ndarray:
        native = self._require_open()
        out = np.empty(info.shape, dtype=NUMPY_DTYPES[info.dtype])
        flat = out.reshape(-1).view(np.uint8) if out.size else np.zeros(0, np.uint8)
        native.decode_into(info.index, flat, get_pool(threads), isa)
        return out

    def _require_open(self):
        native = self._native
        if native is None:
            raise _core.InvalidArgumentError(f"{self.path}: the container is closed")
        return native


def open_container(path, io: str = "pread") -> Container:
    """Opens and validates a .zmoe container.

    io: how chunks are read: "pread" (through the page cache), "direct" (O_DIRECT,
        bypassing it where the filesystem allows), or "mmap".
    Raises FormatError (malformed file; the message names what), ChecksumError
    (damaged header, index, chunk table or metadata), IoError.
    """
    return Container(path, io)

"""``zipmoe.export`` and ``verify_against``: the source tensors rebuilt from a container, bit for bit.

Every source tensor's record in the metadata lists the canonical pieces it was
cut into; rebuilding assigns each piece back through the same view chain (see
views.py) and checks the SHA-256 recorded at conversion. Export writes the
original files: safetensors shards with their original headers (byte for byte)
and auxiliary files, or a GGUF file with its key/value pairs, tensor infos and
offsets; with zero padding, as the usual writers emit, the files come back
byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections import OrderedDict

import numpy as np

from .. import _core
from .._dtypes import NUMPY_DTYPES
from . import gguf_format, safetensors_format, views
from .fileio import format_error, io_error
from .outputs import AtomicDirectory, AtomicFile, refuse_overlap, terminating_signals_raise
from .progress import progress_bar
from .registry import Piece
from .sources import is_gguf_file, is_safetensors_file, open_gguf, open_hf_folder, open_safetensors_file

EXPORT_FORMATS = ("safetensors", "gguf")


def _source_metadata(container) -> dict:
    metadata = container.metadata
    if metadata.get("zipmoe_format") != 1 or not isinstance(metadata.get("source"), dict):
        raise format_error(f"{container.path}: the container was not made by zipmoe convert (its metadata has no "
                           f"zipmoe_format 1 source description), so it cannot be exported")
    source = metadata["source"]
    if source.get("format") not in EXPORT_FORMATS or not isinstance(source.get("tensors"), list) \
            or not all(isinstance(r, dict) for r in source["tensors"]):
        raise format_error(f"{container.path}: malformed source description in the metadata")
    return source


def _record_storage(source: dict, record: dict) -> tuple:
    """(container dtype, stored shape) of the tensor a source record describes (FormatError when malformed)."""
    shape = record.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise format_error(f"tensor {record.get('name')!r}: malformed shape in the metadata")
    try:
        if source["format"] == "gguf":
            ggml_type = record.get("ggml_type")
            if isinstance(ggml_type, bool) or not isinstance(ggml_type, int) or not shape:
                raise ValueError(ggml_type)
            return gguf_format.storage(ggml_type, shape)
        return safetensors_format.storage(record.get("dtype"), shape)
    except (KeyError, TypeError, ValueError):
        raise format_error(f"tensor {record.get('name')!r}: malformed type in the metadata") from None


def _record_nbytes(source: dict, record: dict) -> int:
    dtype, stored_shape = _record_storage(source, record)
    return math.prod(stored_shape) * np.dtype(NUMPY_DTYPES[dtype]).itemsize


class Assembler:
    """Rebuilds source tensors from a container; keeps a few decoded canonical tensors shared by several."""

    def __init__(self, container, source: dict, threads: int | None = None, cache_entries: int = 4):
        self.container, self.source = container, source
        self.threads = threads
        self.cache: OrderedDict = OrderedDict()
        self.cache_entries = cache_entries
        uses: dict = {}
        for record in source["tensors"]:
            for p in record.get("pieces", []):
                uses[p.get("tensor")] = uses.get(p.get("tensor"), 0) + 1
        self.shared = {name for name, n in uses.items() if n > 1}

    def _canonical(self, name: str) -> np.ndarray:
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        array = self.container.read(name, threads=self.threads)
        if name in self.shared:
            self.cache[name] = array
            while len(self.cache) > self.cache_entries:
                self.cache.popitem(last=False)
        return array

    def assemble(self, record: dict) -> np.ndarray:
        """The source tensor of ``record`` (C-contiguous, its storage dtype and shape)."""
        name = record["name"]
        dtype, shape = _record_storage(self.source, record)
        out = np.empty(shape, dtype=NUMPY_DTYPES[dtype])
        covered = 0
        for piece in (Piece.from_json(p) for p in record["pieces"]):
            if piece.canonical not in self.container:
                raise format_error(f"{self.container.path}: tensor {piece.canonical} needed for {name!r} is missing")
            info = self.container.info(piece.canonical)
            if info.dtype != dtype:
                raise format_error(f"{self.container.path}: tensor {piece.canonical} is {info.dtype}, but {name!r} "
                                   f"is {dtype}")
            src_shape = views.result_shape(shape, piece.src)
            if views.result_shape(info.shape, piece.dst) != src_shape:
                raise format_error(f"{self.container.path}: tensor {piece.canonical} {list(info.shape)} does not "
                                   f"fit its place in {name!r}")
            covered += math.prod(src_shape)
            target = views.apply(out, piece.src)
            if not piece.dst and views.is_plain(piece.src) and piece.canonical not in self.shared:
                self.container.read_into(piece.canonical, target, threads=self.threads)
            else:
                target[...] = views.apply(self._canonical(piece.canonical), piece.dst)
        if covered != math.prod(shape):
            raise format_error(f"{self.container.path}: the pieces of {name!r} do not cover it")
        return out


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.reshape(-1).view(np.uint8) if array.size else b"").hexdigest()


def _checked(assembler: Assembler, record: dict) -> np.ndarray:
    array = assembler.assemble(record)
    if record.get("sha256") and _sha256(array) != record["sha256"]:
        raise _core.ChecksumError(f"{assembler.container.path}: tensor {record['name']!r} rebuilt from the "
                                  f"container does not match the SHA-256 recorded at conversion")
    return array


def _write_zeros(f, count: int) -> None:
    block = b"\0" * min(count, 1 << 20)
    while count > 0:
        n = min(count, len(block))
        f.write(block[:n])
        count -= n


def _write_array(f, array: np.ndarray) -> None:
    if array.size:
        f.write(memoryview(array.reshape(-1).view(np.uint8)))


def _safe_name(container, name) -> str:
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name.startswith("."):
        raise format_error(f"{container.path}: unsafe file name {name!r} in the metadata")
    return name


def _write_safetensors_file(f, container, entry: dict, records: list, assembler: "Assembler", bar) -> None:
    """One shard: its recorded header, then its tensors at their recorded offsets, zero-padded."""
    header = json.loads(entry["header"])
    listed = {k for k in header if k != "__metadata__"}
    if listed != {r["name"] for r in records}:
        raise format_error(f"{container.path}: the recorded header of {entry['name']} disagrees with its tensors")
    f.write(safetensors_format.header_prefix(entry["header"]))
    position = 0
    for record in sorted(records, key=lambda r: r["offset"]):
        begin, end = header[record["name"]]["data_offsets"]
        if begin != record["offset"] or begin < position:
            raise format_error(f"{container.path}: tensor {record['name']!r} has inconsistent offsets")
        _write_zeros(f, begin - position)
        array = _checked(assembler, record)
        if array.nbytes != end - begin:
            raise format_error(f"{container.path}: tensor {record['name']!r} has the wrong size")
        _write_array(f, array)
        position = end
        if bar is not None:
            bar.update(array.nbytes)
    _write_zeros(f, entry.get("size", 0) - f.tell())


def _auxiliary_bytes(container, entry: dict) -> bytes:
    tokenizer_json = (container.metadata.get("tokenizer") or {}).get("tokenizer_json")
    if "text" in entry:
        return entry["text"].encode("utf-8")
    if "base64" in entry:
        return base64.b64decode(entry["base64"])
    if entry.get("same_as") == "tokenizer.tokenizer_json" and isinstance(tokenizer_json, str):
        return tokenizer_json.encode("utf-8")
    raise format_error(f"{container.path}: auxiliary file {entry.get('name')!r} has no content in the metadata")


def _export_safetensors(container, source: dict, target, threads, bar) -> list:
    by_file: dict = {}
    for record in source["tensors"]:
        by_file.setdefault(record["file"], []).append(record)
    assembler = Assembler(container, source, threads)
    if source.get("single_file"):  # a lone .safetensors file comes back as one file (target: AtomicFile)
        entries = source.get("files") or []
        if len(entries) != 1:
            raise format_error(f"{container.path}: a single-file source must list one file")
        _write_safetensors_file(target.file, container, entries[0], by_file.get(0, []), assembler, bar)
        return [os.path.basename(target.path)]
    written = []
    for index, entry in enumerate(source.get("files") or []):
        with target.open(_safe_name(container, entry["name"])) as f:
            _write_safetensors_file(f, container, entry, by_file.get(index, []), assembler, bar)
        written.append(entry["name"])
    for entry in source.get("auxiliary_files") or []:
        with target.open(_safe_name(container, entry.get("name"))) as f:
            f.write(_auxiliary_bytes(container, entry))
        written.append(entry["name"])
    return written


def gguf_kv(metadata: dict) -> list:
    """The GGUF key/value list of the source, with values moved to tokenizer/chat_template put back."""
    source = metadata["source"]
    tokenizer = (metadata.get("tokenizer") or {}).get("gguf") or {}
    out = []
    for entry in source.get("kv") or []:
        entry = dict(entry)
        origin = entry.pop("value_from", None)
        if origin == "tokenizer.gguf":
            if entry["key"] not in tokenizer:
                raise format_error(f"GGUF key {entry['key']} is missing from the tokenizer metadata")
            entry["value"] = tokenizer[entry["key"]]
        elif origin == "chat_template":
            entry["value"] = metadata.get("chat_template")
        out.append(entry)
    return out


def _export_gguf(container, source: dict, target: AtomicFile, threads, bar) -> list:
    records = source["tensors"]
    infos = []
    for record in records:
        infos.append(gguf_format.GGUFTensorInfo(record["name"], tuple(reversed(record["shape"])), record["ggml_type"],
                                                record["offset"], _record_nbytes(source, record)))
    header = gguf_format.header_bytes(source["version"], gguf_kv(container.metadata), infos, source["alignment"])
    size = (source.get("files") or [{}])[0].get("size", 0)
    if not records and size < len(header):
        header = header[:size]  # a file without tensors ends without padding
    elif len(header) != source.get("data_start", len(header)):
        raise format_error(f"{container.path}: the rebuilt GGUF header has {len(header)} bytes, the source had "
                           f"{source.get('data_start')}")
    assembler = Assembler(container, source, threads)
    f = target.file
    f.write(header)
    position = 0
    for record, info in sorted(zip(records, infos), key=lambda pair: pair[1].offset):
        if info.offset < position:
            raise format_error(f"{container.path}: tensor {record['name']!r} overlaps the one before it")
        _write_zeros(f, info.offset - position)
        array = _checked(assembler, record)
        _write_array(f, array)
        position = info.offset + info.nbytes
        if bar is not None:
            bar.update(array.nbytes)
    _write_zeros(f, size - f.tell())
    return [os.path.basename(target.path)]


def _wrong_format(container, source: dict, to: str) -> Exception:
    if source["format"] == "safetensors":
        how = ("export gives back exactly those files (--to safetensors); a GGUF of the model comes from llama.cpp's "
               "convert_hf_to_gguf.py run on them")
        origin = "a .safetensors file" if source.get("single_file") else "a Hugging Face safetensors folder"
    else:
        how = ("export gives back exactly that file (--to gguf); a Hugging Face folder of the model comes from the "
               "original release, or from transformers (from_pretrained(folder, gguf_file=...).save_pretrained)")
        origin = "a GGUF file"
    return _core.InvalidArgumentError(f"{container.path} was converted from {origin}, not {to}: {how}")


def export(container_path, to: str, out, *, threads: int | None = None, progress: bool = False) -> dict:
    """Writes the source model of a container made by :func:`zipmoe.convert` back out, byte for byte.

    to: the format the container was converted from (InvalidArgumentError
        otherwise): "safetensors" (``out`` is a folder that must not exist or be
        empty: the shards with their original headers, and the config/tokenizer
        files; for a container converted from a single .safetensors file, ``out``
        is that file) or "gguf" (``out`` is the .gguf file: key/value pairs,
        tensor infos and data as in the source).
    Every tensor is checked against the SHA-256 recorded at conversion
    (ChecksumError otherwise). Output appears only when complete, never over the
    container (InvalidArgumentError), and an unwritable destination fails before
    any tensor is decoded (IoError).
    """
    from ..container import open_container

    if to not in EXPORT_FORMATS:
        raise _core.InvalidArgumentError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {to!r}")
    out = os.fspath(out)
    with terminating_signals_raise(), open_container(container_path) as container:
        source = _source_metadata(container)
        if source["format"] != to:
            raise _wrong_format(container, source, to)
        refuse_overlap(out, [container.path], "export")
        total = sum(_record_nbytes(source, r) for r in source["tensors"])
        # created before any tensor is decoded, so that an unwritable destination fails at once
        one_file = to == "gguf" or source.get("single_file")
        target = AtomicFile(out) if one_file else AtomicDirectory(out)
        bar = progress_bar(total, "export", progress)
        try:
            write = _export_safetensors if to == "safetensors" else _export_gguf
            files = write(container, source, target, threads, bar)
            target.commit()
        except BaseException:
            target.discard()
            raise
        finally:
            if bar is not None:
                bar.close()
    return {"output": out, "format": to, "files": files, "tensors": len(source["tensors"]), "bytes": total}


def verify_against(container_path, src, *, threads: int | None = None, progress: bool = False) -> dict:
    """Checks that every source tensor rebuilt from the container is bit-identical to ``src``'s.

    Returns {"ok", "checked", "mismatch" (the first mismatching tensor's name or
    None), "message"}; stops at the first mismatch.
    """
    from ..container import open_container

    src = os.fspath(src)
    if os.path.isdir(src):
        source_files = open_hf_folder(src, require_config=False).source
    elif is_safetensors_file(src):
        source_files = open_safetensors_file(src).source
    elif is_gguf_file(src):
        source_files, _ = open_gguf(src)
    elif not os.path.exists(src):
        raise io_error(f"{src}: no such file or folder")
    else:
        raise format_error(f"{src}: not a Hugging Face model folder, a .safetensors file or a GGUF file")
    checked = 0

    def fail(name, message):
        return {"ok": False, "checked": checked, "mismatch": name, "message": message}

    with open_container(container_path) as container, source_files:
        source = _source_metadata(container)
        records = {r["name"]: r for r in source["tensors"]}
        present = {t.name: t for t in source_files.tensors}
        for name in records:
            if name not in present:
                return fail(name, f"tensor {name!r} is in the container but not in {src}")
        for name in present:
            if name not in records:
                return fail(name, f"tensor {name!r} is in {src} but not in the container")
        assembler = Assembler(container, source, threads)
        order = source_files.read_order()
        bar = progress_bar(sum(t.nbytes for t in order), "verify", progress)
        try:
            for t in order:
                record = records[t.name]
                if list(t.shape) != list(record["shape"]) or t.type_name != record["dtype"]:
                    return fail(t.name, f"tensor {t.name!r}: {src} has {t.type_name} {list(t.shape)}, the container "
                                        f"{record['dtype']} {record['shape']}")
                expected = hashlib.sha256(source_files.read_raw(t)).hexdigest()
                try:
                    actual = _sha256(assembler.assemble(record))
                except _core.ZipMoEError as e:
                    return fail(t.name, f"tensor {t.name!r}: {e}")
                if actual != expected:
                    return fail(t.name, f"tensor {t.name!r} decodes to different bytes than in {src} "
                                        f"(sha256 {actual[:16]}... != {expected[:16]}...)")
                checked += 1
                if bar is not None:
                    bar.update(t.nbytes)
        finally:
            if bar is not None:
                bar.close()
    return {"ok": True, "checked": checked, "mismatch": None,
            "message": f"all {checked} tensors decode bit-identical to {src}"}

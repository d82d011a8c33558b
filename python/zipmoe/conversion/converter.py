"""``zipmoe.convert``: a Hugging Face folder or a GGUF file in, a .zmoe container out.

The conversion first plans everything from the headers alone (which canonical
tensors each source tensor becomes, their shapes, and whether they agree with
the config), so a bad input fails before any output exists. It then streams:
a reader thread reads source tensors in file order (and hashes them) a bounded
number of bytes ahead, while the main thread cuts them into canonical tensors
and hands each to the container writer, which encodes on a thread pool. The
container appears at its path only when complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import _core
from .._names import CODECS  # lz4hc (the ZipMoE paper's exponent codec) needs a zipmoe built with liblz4
from .._dtypes import FLOAT_DTYPES, NUMPY_DTYPES
from . import registry, views
from .fileio import format_error, io_error
from .gguf_config import detect_architecture, synthesize_config
from .outputs import check_output_file, refuse_overlap, sweep_stale_temporaries, terminating_signals_raise
from .progress import progress_bar
from .registry import Piece
from .sources import is_gguf_file, is_safetensors_file, open_gguf, open_hf_folder, open_safetensors_file

FORMAT_VERSION = 1
# Bytes of source tensors the reader may hold beyond the one being converted.
READ_AHEAD_BYTES = 256 * 1024 * 1024


@dataclass
class CanonicalPlan:
    name: str
    dtype: str
    shape: tuple
    role: dict | None
    pieces: int = 0  # how many source pieces make it up
    covered: int = 0
    remaining: int = 0  # pieces still to arrive while converting
    buffer: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Plan:
    architecture: str
    config: dict
    pieces: dict  # source tensor name -> [Piece]
    canonicals: dict  # canonical name -> CanonicalPlan, in first-use order


def _float_only(tensor, where: str) -> None:
    """UnsupportedModelError, saying where to get float weights, for a tensor the engine cannot compute with."""
    if tensor.dtype in FLOAT_DTYPES:
        return
    if tensor.ggml_type is not None:
        how = (f"so it converts float GGUFs: `zipmoe dequantize {where} OUT.gguf` makes one (BF16 weights from the "
               f"dequantized values), or convert the original Hugging Face model")
    else:
        how = "so cast the checkpoint to BF16 first (FP8 checkpoints such as DeepSeek-V3's original release)"
    raise registry.unsupported(
        f"{where}: tensor {tensor.name!r} has type {tensor.type_name}: the engine runs F32, F16 and BF16 weights, "
        f"kept bit for bit, {how}. --generic stores any tensor losslessly as it is (the container exports back but "
        f"does not run)")


def build_plan(source_tensors, architecture: str, config: dict, mapper, where: str, generic: bool) -> Plan:
    """Maps every source tensor to canonical pieces and checks shapes, coverage and the config."""
    pieces_by_source, canonicals = {}, {}
    for t in source_tensors:
        if not generic:
            _float_only(t, where)
        pieces = [Piece(t.name, [], [])] if generic else mapper(t)
        covered = 0
        for piece in pieces:
            src_shape = views.result_shape(t.stored_shape, piece.src)
            canonical_shape = tuple(piece.shape) if piece.dst else src_shape
            if views.result_shape(canonical_shape, piece.dst) != src_shape:
                raise format_error(f"{where}: tensor {t.name!r}: its piece of {piece.canonical} does not fit")
            canonical = canonicals.get(piece.canonical)
            if canonical is None:
                role = None if generic else registry.role_of(piece.canonical)
                canonical = canonicals[piece.canonical] = CanonicalPlan(piece.canonical, t.dtype, canonical_shape,
                                                                        role)
            elif canonical.dtype != t.dtype or canonical.shape != canonical_shape:
                raise format_error(f"{where}: tensor {piece.canonical} is assembled from tensors of different "
                                   f"types or shapes ({t.name!r} is {t.type_name} {list(t.shape)})")
            canonical.pieces += 1
            canonical.remaining += 1
            canonical.covered += math.prod(src_shape)
            covered += math.prod(src_shape)
        if covered != math.prod(t.stored_shape):
            raise format_error(f"{where}: tensor {t.name!r} is not fully mapped to canonical tensors")
        pieces_by_source[t.name] = pieces
    for canonical in canonicals.values():
        if canonical.covered != math.prod(canonical.shape):
            raise format_error(f"{where}: tensor {canonical.name} is only partly present in the source (config and "
                               f"tensors disagree)")
    if not generic:
        registry.check_against_config(architecture, config, {c.name: c.shape for c in canonicals.values()}, where)
    return Plan(architecture, config, pieces_by_source, canonicals)


def _provenance(codec: str, src: str) -> dict:
    return {"zipmoe_version": _core.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "codec": codec, "source": os.path.basename(os.path.normpath(src))}


def _tensor_records(source, plan: Plan) -> list:
    records = []
    for t in source.tensors:
        record = {"name": t.name, "dtype": t.type_name, "shape": list(t.shape), "file": t.file,
                  "offset": t.relative_offset, "sha256": None,
                  "pieces": [p.to_json() for p in plan.pieces[t.name]]}
        if t.ggml_type is not None:
            record["ggml_type"] = t.ggml_type
        records.append(record)
    return records


def _prepare_hf(src: str, generic: bool):
    single_file = not os.path.isdir(src)
    if single_file and not generic:
        raise io_error(f"{src}: a single .safetensors file has no config.json; convert its Hugging Face folder "
                       f"(config.json, tokenizer files), or use --generic")
    folder = open_safetensors_file(src) if single_file else open_hf_folder(src, require_config=not generic)
    config = folder.config or {}
    architecture = "generic" if generic else config.get("model_type")
    if not generic and architecture not in registry.SUPPORTED_ARCHITECTURES:
        raise registry.unsupported(
            f"{src}: unsupported architecture {architecture!r} (config.json model_type); supported: "
            f"{registry.supported_list()}. --generic compresses any checkpoint losslessly without expert roles")
    plan = build_plan(folder.source.tensors, architecture, config,
                      lambda t: registry.hf_pieces(architecture, t.name, t.shape, config), src, generic)
    auxiliary = []
    for entry in folder.auxiliary:
        if entry["name"] == "tokenizer.json" and "text" in entry:
            auxiliary.append({"name": entry["name"], "same_as": "tokenizer.tokenizer_json"})
        else:
            auxiliary.append(entry)
    metadata = {
        "zipmoe_format": FORMAT_VERSION,
        "architecture": architecture,
        "config": config,
        "tokenizer": {"tokenizer_json": folder.tokenizer_json, "tokenizer_config": folder.tokenizer_config,
                      "gguf": None},
        "chat_template": folder.chat_template,
        "generation_config": folder.generation_config,
        "source": {
            "format": "safetensors",
            "files": [{"name": os.path.basename(h.path), "size": h.file_size, "header": h.header_text}
                      for h in folder.shard_headers],
            "index_file": folder.index_name,
            "auxiliary_files": auxiliary,
            "tensors": _tensor_records(folder.source, plan),
        },
    }
    if single_file:
        metadata["source"]["single_file"] = True
    return folder.source, plan, metadata


def _prepare_gguf(src: str, generic: bool):
    source, gguf = open_gguf(src)
    if (gguf.value("split.count") or 1) > 1:
        raise registry.unsupported(f"{src}: one part of a split GGUF ({gguf.value('split.count')} parts); merge them "
                                   f"first (llama-gguf-split --merge)")
    arch, model_type = detect_architecture(gguf)
    if generic:
        architecture, config = "generic", {}
    else:
        if model_type is None:
            raise registry.unsupported(
                f"{src}: unsupported GGUF architecture {arch!r}; supported: {registry.supported_list()} (GGUF "
                f"{', '.join(sorted(registry.GGUF_ARCHITECTURES))}). --generic compresses any float GGUF losslessly "
                f"without expert roles")
        architecture = model_type
        config = synthesize_config(gguf, arch, model_type)
    heads = config.get("num_attention_heads") or config.get("n_heads") or 0  # n_heads: DBRX's name
    kv_heads = config.get("num_key_value_heads") or (config.get("attn_config") or {}).get("kv_n_heads") or heads
    shapes = {t.name: t.shape for t in source.tensors}
    plan = build_plan(source.tensors, architecture, config,
                      lambda t: registry.gguf_pieces(arch, t.name, t.shape, shapes, heads, kv_heads), src, generic)
    tokenizer, kv, chat_template = {}, [], None
    for entry in gguf.kv:
        entry = dict(entry)
        if entry["key"].startswith("tokenizer.ggml."):
            tokenizer[entry["key"]] = entry.pop("value")
            entry["value_from"] = "tokenizer.gguf"
        elif entry["key"] == "tokenizer.chat_template" and isinstance(entry["value"], str):
            chat_template = entry.pop("value")
            entry["value_from"] = "chat_template"
        kv.append(entry)
    metadata = {
        "zipmoe_format": FORMAT_VERSION,
        "architecture": architecture,
        "config": config,
        "tokenizer": {"tokenizer_json": None, "tokenizer_config": None, "gguf": tokenizer or None},
        "chat_template": chat_template,
        "generation_config": None,
        "source": {
            "format": "gguf",
            "gguf_architecture": arch,
            "files": [{"name": os.path.basename(src), "size": gguf.file_size}],
            "version": gguf.version,
            "alignment": gguf.alignment,
            "data_start": gguf.data_start,
            "kv": kv,
            "tensors": _tensor_records(source, plan),
        },
    }
    return source, plan, metadata


class ConversionWarning(UserWarning):
    """A conversion that succeeds but gives a container the engine cannot fully use (no tokenizer, a feature the
    engine does not run yet)."""


def _check_runnable(src: str, metadata: dict) -> list:
    """Warnings about a container the engine would not fully run; FormatError for a config the engine refuses.

    The engine's own rules decide (``_core.check_model_config``), so convert never writes a container that
    ``zipmoe.load`` then rejects as malformed.
    """
    try:
        _core.check_model_config(json.dumps({"architecture": metadata["architecture"], "config": metadata["config"]}))
    except _core.UnsupportedModelError as e:
        return [f"{src}: converted losslessly, but this zipmoe cannot run it yet: {e}"]
    except _core.FormatError as e:
        raise format_error(f"{src}: {e}") from None
    tokenizer = metadata["tokenizer"]
    if tokenizer["tokenizer_json"] is None and not tokenizer["gguf"]:
        hint = ("the GGUF has no tokenizer.ggml.* keys" if metadata["source"]["format"] == "gguf" else
                "no tokenizer.json in the folder (transformers' AutoTokenizer.from_pretrained(folder)"
                ".save_pretrained(folder) writes one; a tokenizer.model alone is not read)")
        return [f"{src}: no tokenizer: {hint}; the container takes token ids only (zipmoe run, chat and "
                f"generate(text) need a tokenizer)"]
    return []


def prepare(src, generic: bool = False):
    """(Source, Plan, metadata, warnings) for ``src``, validated, without reading tensor data."""
    src = os.fspath(src)
    if os.path.isdir(src) or is_safetensors_file(src):
        source, plan, metadata = _prepare_hf(src, generic)
    elif not os.path.exists(src):
        raise io_error(f"{src}: no such file or folder")
    elif is_gguf_file(src):
        source, plan, metadata = _prepare_gguf(src, generic)
    else:
        raise format_error(f"{src}: not a Hugging Face model folder, a .safetensors file or a GGUF file")
    return source, plan, metadata, ([] if generic else _check_runnable(src, metadata))


class Prefetcher:
    """Reads tensors in order on a background thread, a bounded number of bytes ahead, hashing each."""

    def __init__(self, source, tensors, budget: int = READ_AHEAD_BYTES, digest: bool = True):
        self._source, self._tensors, self._budget, self._digest = source, list(tensors), budget, digest
        self._queue: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="zipmoe-convert-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for t in self._tensors:
                with self._cond:
                    while not self._stop and self._in_flight and self._in_flight + t.nbytes > self._budget:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._in_flight += t.nbytes
                raw = self._source.read_raw(t)
                digest = hashlib.sha256(raw).hexdigest() if self._digest else None
                self._queue.put((t, raw, digest))
        except BaseException as e:  # handed to the consumer, which raises it
            self._queue.put(e)

    def __iter__(self):
        for _ in self._tensors:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._in_flight -= nbytes
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()


def _write_container(source, plan: Plan, metadata: dict, out: str, *, codec: str, threads, segment_symbols: int,
                     bar) -> None:
    """Streams the source's tensors through ``plan`` into the container ``out``."""
    from ..container import ContainerWriter

    records = {r["name"]: r for r in metadata["source"]["tensors"]}
    prefetcher = None
    done = 0
    try:
        with ContainerWriter(out, metadata, segment_symbols=segment_symbols) as writer:
            def write(canonical: CanonicalPlan, data: np.ndarray) -> None:
                writer.add_tensor(canonical.name, data, dtype=canonical.dtype, role=canonical.role, codec=codec,
                                  threads=threads)

            prefetcher = Prefetcher(source, source.read_order())
            for t, raw, digest in prefetcher:
                records[t.name]["sha256"] = digest
                _convert_tensor(plan, t, raw.view(NUMPY_DTYPES[t.dtype]).reshape(t.stored_shape), write)
                del raw
                prefetcher.release(t.nbytes)
                done += t.nbytes
                if bar is not None:
                    bar.update(t.nbytes)
                    if writer.bytes_written:
                        bar.set_postfix(ratio=f"{done / writer.bytes_written:.3f}", refresh=False)
            pending = [c.name for c in plan.canonicals.values() if c.buffer is not None]
            if pending:
                raise format_error(f"{source.path}: tensor {pending[0]} was never completed")
    finally:
        # the reader stops before the source's files close under it
        if prefetcher is not None:
            prefetcher.close()


def _convert_tensor(plan: Plan, tensor, array: np.ndarray, write) -> None:
    """Cuts one source tensor into its canonical pieces; writes each canonical tensor once it is complete."""
    for piece in plan.pieces[tensor.name]:
        canonical = plan.canonicals[piece.canonical]
        if canonical.pieces == 1 and not piece.dst:
            # C-contiguous views (whole tensors, one expert of a stack) are not copied; np.array keeps a 0-d
            # tensor 0-d, where np.ascontiguousarray would make it 1-d
            view = views.apply(array, piece.src)
            write(canonical, view if view.flags.c_contiguous else np.array(view, order="C"))
            continue
        if canonical.buffer is None:
            canonical.buffer = np.empty(canonical.shape, dtype=NUMPY_DTYPES[canonical.dtype])
        views.apply(canonical.buffer, piece.dst)[...] = views.apply(array, piece.src)
        canonical.remaining -= 1
        if canonical.remaining == 0:
            write(canonical, canonical.buffer)
            canonical.buffer = None


def convert(src, out, *, codec: str = "auto", threads: int | None = None, generic: bool = False,
            progress: bool = False, segment_symbols: int = 0) -> dict:
    """Converts a Hugging Face model folder or a GGUF file (with ``generic``, also a single .safetensors file)
    into the .zmoe container ``out``.

    codec: "auto" (per tensor, the smallest), "huffman", "rans", "raw" (planes
        stored uncompressed: the uncompressed baseline in the same layout), or "lz4hc"
        (the ZipMoE paper's exponent codec; UnsupportedModelError naming liblz4 when
        this build of zipmoe has no liblz4).
    threads: encoding threads (None: every core).
    generic: any checkpoint, not runnable: every tensor under its source name,
        with no expert roles and no architecture checks; floats compressed, any
        other type (integers, bools, FP8, quantized blocks) stored as raw bytes.
    progress: show a progress bar (tqdm) with bytes done and the ratio so far.

    Raises UnsupportedModelError (unknown architecture, quantized or integer
    tensors, tensors the architecture does not have), FormatError (corrupt or
    truncated files, a config that disagrees with the tensors or that the
    engine would refuse), IoError,
    InvalidArgumentError (``out`` is, or lies inside, the source). Nothing
    appears at ``out`` unless the whole conversion succeeds, and an interrupted
    conversion leaves no temporary file (SIGTERM and SIGHUP are handled while
    it runs, see zipmoe.conversion.outputs). Returns a summary dict:
    architecture, tensor counts, ``source_bytes`` (the source's tensor data),
    ``payload_bytes`` (the coded planes of every tensor), ``container_bytes``
    (the file: payload plus header, index, metadata and 4 KiB alignment),
    ``ratio`` = source_bytes / payload_bytes, ``file_ratio`` = source_bytes /
    container_bytes, seconds, ``warnings`` (also issued as ConversionWarning).
    """
    if codec not in CODECS:
        raise _core.InvalidArgumentError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
    start = time.perf_counter()
    with terminating_signals_raise():
        path = check_output_file(out)
        source, plan, metadata, warnings_found = prepare(src, generic)
        for message in warnings_found:
            warnings.warn(message, ConversionWarning, stacklevel=2)
        refuse_overlap(path, [source.path, *source.files])
        metadata["provenance"] = _provenance(codec, os.fspath(src))
        sweep_stale_temporaries(os.path.dirname(path))
        total = sum(t.nbytes for t in source.tensors)
        bar = progress_bar(total, "convert", progress)
        try:
            with source:
                _write_container(source, plan, metadata, path, codec=codec, threads=threads,
                                 segment_symbols=segment_symbols, bar=bar)
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - start
    from ..container import open_container

    with open_container(path) as written:
        payload = sum(t.stored_bytes for t in written.tensors)
        size = written.file_size
    return {"output": os.fspath(out), "architecture": plan.architecture, "source_format": metadata["source"]["format"],
            "source_tensors": len(source.tensors), "tensors": len(plan.canonicals), "source_bytes": total,
            "payload_bytes": payload, "container_bytes": size, "ratio": total / payload if payload else None,
            "file_ratio": total / size if size else None, "seconds": seconds,
            "mb_per_s": total / 1e6 / seconds if seconds else None, "warnings": warnings_found}

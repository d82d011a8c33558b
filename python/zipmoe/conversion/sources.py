"""Model sources: a Hugging Face folder of safetensors, or a GGUF file, read tensor by tensor.

Opening a source parses and validates every header and the config; no tensor
data is read until :meth:`Source.read`, which reads one tensor with pread into a
fresh array, so memory stays bounded by the tensors in flight.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import numpy as np

from .._dtypes import NUMPY_DTYPES
from . import gguf_format, safetensors_format
from .fileio import format_error, io_error, read_exact

INDEX_SUFFIX = ".safetensors.index.json"
# Files never copied into the metadata: weights in other formats, and what zipmoe writes itself.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".npz",
                    ".zmoe", ".tflite", ".ot")
MAX_AUXILIARY_FILE_BYTES = 64 * 1024 * 1024


@dataclass
class SourceTensor:
    name: str
    type_name: str  # as the source names its type: "BF16", "F32", "Q4_K", ...
    dtype: str  # the container dtype that holds it: "bf16", "f16", "f32"; "u8" (raw bytes) for any other type
    shape: tuple  # numpy (row-major) order, in elements
    stored_shape: tuple  # the container tensor's shape: ``shape`` for floats; for raw bytes see *_format.storage
    file: int  # index into Source.files
    offset: int  # absolute byte offset in that file
    nbytes: int
    relative_offset: int  # safetensors: into the data region; GGUF: into the data section
    ggml_type: int | None = None


@dataclass
class Source:
    kind: str  # "safetensors" or "gguf"
    path: str
    files: list  # absolute paths
    tensors: list  # SourceTensor, in the order the format lists them
    _fds: list = field(default_factory=list, repr=False)

    def read_order(self) -> list:
        """Tensors in file order (sequential reads)."""
        return sorted(self.tensors, key=lambda t: (t.file, t.offset))

    def read_raw(self, tensor: SourceTensor) -> np.ndarray:
        """The tensor's bytes as a new uint8 array."""
        if not self._fds:
            try:
                for p in self.files:
                    self._fds.append(os.open(p, os.O_RDONLY))
            except OSError as e:
                self.close()
                raise io_error(f"{e.filename}: {e.strerror}") from None
        return read_exact(self._fds[tensor.file], self.files[tensor.file], tensor.offset, tensor.nbytes,
                          f"tensor {tensor.name!r}")

    def read(self, tensor: SourceTensor) -> np.ndarray:
        """The tensor's data as a new array of its container storage type (BF16 as uint16), in its stored shape."""
        return self.read_raw(tensor).view(NUMPY_DTYPES[tensor.dtype]).reshape(tensor.stored_shape)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -------------------------------------------------------------------------------------- Hugging Face

@dataclass
class HFFolder:
    source: Source
    config: dict | None
    config_text: str | None
    shard_headers: list  # SafetensorsHeader per file
    index_name: str | None
    auxiliary: list  # [{"name", "text"} | {"name", "base64"}], sorted by name
    tokenizer_json: str | None
    tokenizer_config: dict | None
    generation_config: dict | None
    chat_template: str | None


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise io_error(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise format_error(f"{path}: not UTF-8 text") from None


def _read_json(path: str, what: str):
    text = _read_text(path)
    try:
        return text, json.loads(text)
    except ValueError as e:
        raise format_error(f"{path}: {what} is not valid JSON: {e}") from None


def _chat_template_text(value):
    """tokenizer_config's chat_template: a string, or a list of named templates (the default one is used)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


def _read_shards(path: str, shard_names: list, weight_map, index_name):
    """(headers, tensors) of the safetensors files ``shard_names`` in folder ``path``, checked against the index."""
    headers, tensors = [], []
    for file_index, shard in enumerate(shard_names):
        header = safetensors_format.read_header(os.path.join(path, shard))
        headers.append(header)
        for entry in header.entries:
            if weight_map is not None and weight_map.get(entry.name) != shard:
                raise format_error(f"{path}/{shard}: tensor {entry.name!r} is not listed for this file in "
                                   f"{index_name}")
            dtype, stored_shape = safetensors_format.storage(entry.dtype, entry.shape)
            tensors.append(SourceTensor(
                name=entry.name, type_name=entry.dtype, dtype=dtype, shape=entry.shape, stored_shape=stored_shape,
                file=file_index, offset=header.data_start + entry.begin, nbytes=entry.end - entry.begin,
                relative_offset=entry.begin))
    seen = {}
    for t in tensors:
        if t.name in seen:
            raise format_error(f"{path}: tensor {t.name!r} appears in both {shard_names[seen[t.name]]} and "
                               f"{shard_names[t.file]}")
        seen[t.name] = t.file
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(seen))
        if missing:
            raise format_error(f"{path}: tensor {missing[0]!r} listed in {index_name} is in none of the shards")
    return headers, tensors


def open_safetensors_file(path: str) -> HFFolder:
    """One .safetensors file on its own: its tensors, and no config, tokenizer or other files."""
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    headers, tensors = _read_shards(folder, [name], None, None)
    source = Source(kind="safetensors", path=path, files=[path], tensors=tensors)
    return HFFolder(source=source, config=None, config_text=None, shard_headers=headers, index_name=None,
                    auxiliary=[], tokenizer_json=None, tokenizer_config=None, generation_config=None,
                    chat_template=None)


def is_safetensors_file(path: str) -> bool:
    return path.endswith(".safetensors") and os.path.isfile(path)


def open_hf_folder(path: str, require_config: bool = True) -> HFFolder:
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise io_error(f"{path}: no such folder")
    names = sorted(os.listdir(path))
    config_path = os.path.join(path, "config.json")
    config = config_text = None
    if os.path.isfile(config_path):
        config_text, config = _read_json(config_path, "config.json")
        if not isinstance(config, dict):
            raise format_error(f"{config_path}: config.json is not a JSON object")
    elif require_config:
        raise io_error(f"{path}: no config.json (a Hugging Face model folder has one; --generic converts without)")

    index_names = [n for n in names if n.endswith(INDEX_SUFFIX)]
    index_name = None
    if index_names:
        if len(index_names) > 1:
            raise format_error(f"{path}: several safetensors index files ({', '.join(index_names)})")
        index_name = index_names[0]
        _, index = _read_json(os.path.join(path, index_name), index_name)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise format_error(f"{path}/{index_name}: no weight_map of tensor names to file names")
        shard_names = sorted(set(weight_map.values()))
        for shard in shard_names:
            if os.path.basename(shard) != shard or not os.path.isfile(os.path.join(path, shard)):
                raise io_error(f"{path}: shard {shard!r} named by {index_name} is missing")
    else:
        weight_map = None
        shard_names = [n for n in names if n.endswith(".safetensors")]
        if not shard_names:
            raise io_error(f"{path}: no *.safetensors weights (other weight formats are not supported)")

    headers, tensors = _read_shards(path, shard_names, weight_map, index_name)
    auxiliary = []
    for name in names:
        full = os.path.join(path, name)
        if name.startswith(".") or not os.path.isfile(full) or name.lower().endswith(_WEIGHT_SUFFIXES):
            continue
        if os.path.getsize(full) > MAX_AUXILIARY_FILE_BYTES:
            continue
        with open(full, "rb") as f:
            raw = f.read()
        try:
            auxiliary.append({"name": name, "text": raw.decode("utf-8")})
        except UnicodeDecodeError:
            auxiliary.append({"name": name, "base64": base64.b64encode(raw).decode("ascii")})

    def aux_json(name):
        entry = next((a for a in auxiliary if a["name"] == name and "text" in a), None)
        if entry is None:
            return None
        try:
            return json.loads(entry["text"])
        except ValueError as e:
            raise format_error(f"{path}/{name}: not valid JSON: {e}") from None

    tokenizer_entry = next((a for a in auxiliary if a["name"] == "tokenizer.json" and "text" in a), None)
    tokenizer_config = aux_json("tokenizer_config.json")
    chat_template = None
    jinja = next((a for a in auxiliary if a["name"] == "chat_template.jinja" and "text" in a), None)
    if jinja is not None:
        chat_template = jinja["text"]
    elif isinstance(tokenizer_config, dict) and tokenizer_config.get("chat_template") is not None:
        chat_template = _chat_template_text(tokenizer_config["chat_template"])
    else:
        template_json = aux_json("chat_template.json")
        if isinstance(template_json, dict):
            chat_template = _chat_template_text(template_json.get("chat_template"))
    source = Source(kind="safetensors", path=path, files=[os.path.join(path, n) for n in shard_names],
                    tensors=tensors)
    return HFFolder(source=source, config=config, config_text=config_text, shard_headers=headers,
                    index_name=index_name, auxiliary=auxiliary,
                    tokenizer_json=tokenizer_entry["text"] if tokenizer_entry else None,
                    tokenizer_config=tokenizer_config if isinstance(tokenizer_config, dict) else None,
                    generation_config=aux_json("generation_config.json"), chat_template=chat_template)


# ---------------------------------------------------------------------------------------------- GGUF

def open_gguf(path: str):
    """(Source, GGUFFile) for a GGUF file."""
    path = os.path.abspath(path)
    gguf = gguf_format.read_gguf(path)
    tensors = []
    for t in gguf.tensors:
        dtype, stored_shape = gguf_format.storage(t.ggml_type, t.shape)
        tensors.append(SourceTensor(name=t.name, type_name=t.type_name, dtype=dtype, shape=t.shape,
                                    stored_shape=stored_shape, file=0, offset=gguf.data_start + t.offset,
                                    nbytes=t.nbytes, relative_offset=t.offset, ggml_type=t.ggml_type))
    return Source(kind="gguf", path=path, files=[path], tensors=tensors), gguf


def is_gguf_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == gguf_format.MAGIC
    except OSError:
        return False

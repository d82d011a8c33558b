"""``zipmoe dequantize``: a quantized GGUF (Q4_0, Q8_0, K-quants, ...) as a BF16 GGUF that zipmoe converts.

zipmoe runs F32, F16 and BF16 weights exactly as stored, so a quantized GGUF cannot be converted as it is. This
writes the float GGUF of the same model: every key/value pair in order (``general.file_type`` becomes MOSTLY_BF16),
every tensor name and shape. Each float or quantized tensor is widened to F32 (``gguf.quants.dequantize`` for
quantized types) and then

- kept F32 where llama.cpp's converter keeps F32 in a BF16 file: 1-D tensors (norms, biases), MoE routers
  (``ffn_gate_inp``) and their score-correction biases;
- otherwise rounded to BF16, to nearest, ties to even (a NaN stays a NaN, made quiet).

Integer tensors (I8 to I64) and F64 are copied as they are. Tensors are read, widened and written one at a time,
so memory stays about one tensor's F32 copy whatever the model's size. The values are those of the quantized model:
fine for running it, meaningless for compression ratios (they sit on quantization levels).
"""

from __future__ import annotations

import os
import time

import numpy as np

from .. import _core
from . import gguf_format
from .fileio import format_error, io_error, read_exact
from .outputs import AtomicFile, refuse_overlap, terminating_signals_raise
from .progress import progress_bar

# Tensors llama.cpp writes as F32 even when asked for BF16 (besides 1-D ones).
KEEP_F32_SUFFIXES = (".ffn_gate_inp.weight", ".ffn_gate_inp_shexp.weight", ".exp_probs_b.bias")
FILE_TYPE_MOSTLY_BF16 = 32
F32, F16, BF16 = 0, 1, 30
# Copied unchanged: I8, I16, I32, I64, F64.
UNCHANGED_TYPES = (24, 25, 26, 27, 28)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """uint16 BF16 bit patterns of float32 ``values``, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds half-way cases to the even neighbour; carries into the exponent
    # give the next binade or infinity, as IEEE rounding does. Done in 64 bits so that no sum wraps.
    wide = bits.astype(np.uint64)
    rounded = ((wide + 0x7FFF + ((wide >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # keep sign and payload top, set quiet bit
    return rounded


def keeps_f32(name: str, ndim: int) -> bool:
    return ndim <= 1 or name.endswith(KEEP_F32_SUFFIXES)


def widen_to_f32(raw: np.ndarray, ggml_type: int, shape) -> np.ndarray:
    """The float32 values of a tensor's bytes ``raw`` (uint8) of ``ggml_type`` and numpy-order ``shape``."""
    if ggml_type == F32:
        values = raw.view(np.float32)
    elif ggml_type == F16:
        values = raw.view(np.float16).astype(np.float32)
    elif ggml_type == BF16:
        values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize, quant_shape_to_byte_shape

        kind = GGMLQuantizationType(ggml_type)
        try:
            values = dequantize(raw.reshape(quant_shape_to_byte_shape(shape, kind)), kind)
        except NotImplementedError:
            raise _core.UnsupportedModelError(f"the gguf package cannot dequantize {kind.name} tensors") from None
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def _plan(gguf) -> list:
    """(source info, output info, how) per tensor, output offsets laid out in info order."""
    plan, offset = [], 0
    for t in gguf.tensors:
        if t.ggml_type in UNCHANGED_TYPES:
            how, out_type, nbytes = "copy", t.ggml_type, t.nbytes
        elif keeps_f32(t.name, len(t.ne)):
            how, out_type, nbytes = "f32", F32, 4 * int(np.prod(t.ne))
        else:
            how, out_type, nbytes = "bf16", BF16, 2 * int(np.prod(t.ne))
        plan.append((t, gguf_format.GGUFTensorInfo(t.name, t.ne, out_type, offset, nbytes), how))
        offset += -(-nbytes // gguf.alignment) * gguf.alignment
    return plan


def _output_kv(gguf) -> list:
    kv = []
    for entry in gguf.kv:
        if entry["key"] == "general.file_type":
            entry = {**entry, "type": "UINT32", "value": FILE_TYPE_MOSTLY_BF16}
        kv.append(entry)
    return kv


def dequantize_gguf(src, out, *, progress: bool = False) -> dict:
    """Writes the BF16 GGUF of the (quantized) GGUF ``src`` to ``out``; returns counts and timings.

    Raises FormatError (not a GGUF, corrupt), IoError, InvalidArgumentError (``out``
    is ``src``), UnsupportedModelError (a type the gguf package cannot dequantize).
    ``out`` appears only when complete.
    """
    src, out = os.fspath(src), os.fspath(out)
    start = time.perf_counter()
    with terminating_signals_raise():
        if not os.path.isfile(src):
            raise io_error(f"{src}: no such file" if not os.path.exists(src) else f"{src}: not a GGUF file")
        gguf = gguf_format.read_gguf(src)
        refuse_overlap(out, [src])
        plan = _plan(gguf)
        header = gguf_format.header_bytes(gguf.version, _output_kv(gguf), [o for _, o, _ in plan], gguf.alignment)
        counts = {"bf16": 0, "f32": 0, "copy": 0}
        target = AtomicFile(out)
        bar = progress_bar(sum(t.nbytes for t in gguf.tensors), "dequantize", progress)
        try:
            with open(src, "rb") as f:
                target.file.write(header)
                for t, o, how in plan:
                    _write_tensor(target.file, f.fileno(), src, gguf.data_start, t, o, how, header_size=len(header))
                    counts[how] += 1
                    if bar is not None:
                        bar.update(t.nbytes)
                # ends on the alignment, as llama.cpp's writers end
                target.file.write(b"\0" * (-(target.file.tell() - len(header)) % gguf.alignment))
            target.commit()
        except OSError as e:
            target.discard()
            raise io_error(f"{out}: writing it failed: {e.strerror}") from None
        except BaseException:
            target.discard()
            raise
        finally:
            if bar is not None:
                bar.close()
    return {"output": out, "bf16": counts["bf16"], "f32": counts["f32"], "unchanged": counts["copy"],
            "bytes": os.path.getsize(out), "seconds": time.perf_counter() - start}


def _write_tensor(f, fd: int, src: str, data_start: int, tensor, info, how: str, header_size: int) -> None:
    raw = read_exact(fd, src, data_start + tensor.offset, tensor.nbytes, f"tensor {tensor.name!r}")
    if how == "copy":
        data = raw
    else:
        values = widen_to_f32(raw, tensor.ggml_type, tensor.shape)
        data = values if how == "f32" else f32_to_bf16_bits(values)
    position = f.tell() - header_size
    if position > info.offset:
        raise format_error(f"{src}: tensor {tensor.name!r} does not fit its planned place")
    f.write(b"\0" * (info.offset - position))
    f.write(memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)))

#!/usr/bin/env python3
"""Turns a quantized GGUF (Q4_0, Q4_1, Q8_0, K-quants, ...) into a BF16 GGUF.

    python3 tools/dequantize_gguf.py SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-bf16.gguf

Why: no native BF16 LLM weights are reachable offline, but quantized GGUFs are;
dequantized, they give a real model that writes real English for end-to-end and
perplexity checks of the engine (not for compression-ratio claims: the values
sit on quantization levels).

The output keeps every key/value pair of the input (in order; general.file_type
becomes MOSTLY_BF16) and every tensor name and shape. Each tensor is widened to
F32 (gguf.quants.dequantize for quantized types) and then:
- kept F32 when llama.cpp's converter keeps it F32 in a BF16 file: 1-D tensors
  (norms, biases) and MoE routers (ffn_gate_inp) and their correction biases;
- otherwise rounded to BF16, round-to-nearest-even (NaN stays NaN, made quiet).
Tensors are converted and written one at a time, so memory stays about one
tensor's F32 copy whatever the model size.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# Tensors llama.cpp writes as F32 even when asked for BF16 (besides 1-D ones).
KEEP_F32_SUFFIXES = (".ffn_gate_inp.weight", ".ffn_gate_inp_shexp.weight", ".exp_probs_b.bias")
FILE_TYPE_MOSTLY_BF16 = 32


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """uint16 BF16 bit patterns of float32 `values`, rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds half-way cases to the even
    # neighbour; carries into the exponent give the next binade or infinity, as
    # IEEE rounding does. Done in 64 bits so that no sum wraps.
    wide = bits.astype(np.uint64)
    rounded = ((wide + 0x7FFF + ((wide >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # keep sign and payload top, set quiet bit
    return rounded


def keeps_f32(name: str, ndim: int) -> bool:
    return ndim <= 1 or name.endswith(KEEP_F32_SUFFIXES)


def as_f32(tensor) -> np.ndarray:
    """A GGUFReader tensor's values as float32 in numpy (row-major) shape."""
    import gguf

    kind = tensor.tensor_type
    shape = tuple(int(d) for d in reversed(tensor.shape))  # tensor.shape is ggml order, innermost first
    if kind == gguf.GGMLQuantizationType.F32:
        values = np.asarray(tensor.data, dtype=np.float32)
    elif kind == gguf.GGMLQuantizationType.F16:
        values = np.asarray(tensor.data, dtype=np.float16).astype(np.float32)
    elif kind == gguf.GGMLQuantizationType.BF16:
        raw = np.asarray(tensor.data).view(np.uint16)
        values = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        values = gguf.quants.dequantize(np.asarray(tensor.data), kind)
    return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)


def copy_key_values(reader, writer) -> None:
    import gguf

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == gguf.Keys.General.ARCHITECTURE:
            continue  # the header counts and the architecture are the writer's own
        if key == gguf.Keys.General.FILE_TYPE:
            writer.add_uint32(key, FILE_TYPE_MOSTLY_BF16)
            continue
        if key == gguf.Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        value_type = field.types[0]
        sub_type = None
        if value_type == gguf.GGUFValueType.ARRAY:
            sub_type = field.types[1]
            if sub_type == gguf.GGUFValueType.ARRAY:
                raise SystemExit(f"key {key}: arrays of arrays are not supported")
        writer.add_key_value(key, field.contents(), value_type, sub_type)


def dequantize_gguf(source: str, destination: str, verbose: bool = True) -> dict:
    """Writes the BF16 version of `source` to `destination` (atomically); returns counts by output type."""
    import gguf

    reader = gguf.GGUFReader(source)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    partial = destination + ".partial"
    writer = gguf.GGUFWriter(partial, architecture)
    copy_key_values(reader, writer)

    plan = []
    counts = {"bf16": 0, "f32": 0}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))
        f32 = keeps_f32(tensor.name, len(shape))
        elements = int(np.prod(shape))
        if f32:
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.float32), elements * 4)
        else:
            writer.add_tensor_info(tensor.name, shape, np.dtype(np.uint16), elements * 2,
                                   raw_dtype=gguf.GGMLQuantizationType.BF16)
        plan.append((tensor, f32))
        counts["f32" if f32 else "bf16"] += 1

    started = time.perf_counter()
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor, f32 in plan:
            values = as_f32(tensor)
            writer.write_tensor_data(values if f32 else f32_to_bf16_bits(values))
        writer.close()
        os.replace(partial, destination)
    except BaseException:
        writer.close()
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if verbose:
        print(f"{destination}: {counts['bf16']} BF16 and {counts['f32']} F32 tensors, "
              f"{os.path.getsize(destination) / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="quantized (or any) GGUF file")
    parser.add_argument("destination", help="BF16 GGUF to write")
    args = parser.parse_args(argv)
    dequantize_gguf(args.source, args.destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())

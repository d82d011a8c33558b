#!/usr/bin/env python3
"""Writes seed corpora for the libFuzzer harnesses in tests/fuzz/.

    python tools/make_fuzz_seeds.py OUT_DIR

creates OUT_DIR/blob/ (inputs of fuzz_blob: a control byte + a valid blob),
OUT_DIR/coded_plane/ (a control byte + a coded exponent plane) and, when the
container module is available, OUT_DIR/container/ (a control byte + a small valid .zmoe file).
"""

from __future__ import annotations

import pathlib
import struct
import sys
import tempfile

import numpy as np

import zipmoe


def _coded_plane_of(blob: bytes) -> bytes:
    ndim = blob[7]
    at = 8 + 8 * ndim
    plane_size, _sm_size = struct.unpack_from("<QQ", blob, at)
    return blob[at + 16: at + 16 + plane_size]


def main() -> int:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    rng = np.random.default_rng(0)
    cases = []
    for n in (0, 1, 5, 33, 200, 1500):
        x = rng.normal(0, 0.02, n).astype(np.float32)
        cases.append(("f32", x))
        cases.append(("f16", x.astype(np.float16)))
        cases.append(("bf16", (x.view(np.uint32) >> 16).astype(np.uint16)))
    cases.append(("f32", np.ones(50, np.float32)))
    for kind in ("blob", "coded_plane"):
        (out / kind).mkdir(parents=True, exist_ok=True)
    count = 0
    for i, (dtype, a) in enumerate(cases):
        for codec in ("huffman", "rans", "raw", "auto"):
            try:
                blob = zipmoe.compress(a, dtype="bf16" if dtype == "bf16" else None, codec=codec, segment_symbols=64)
            except zipmoe.ZipMoEError:
                continue  # a coder not built into this version
            for control in (0, 1, 3, 0x41):
                (out / "blob" / f"{i}-{codec}-{control}").write_bytes(bytes([control]) + blob)
            for control in (0, 1, 2):
                (out / "coded_plane" / f"{i}-{codec}-{control}").write_bytes(bytes([control]) + _coded_plane_of(blob))
            count += 1
    if hasattr(zipmoe, "ContainerWriter"):
        (out / "container").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "seed.zmoe"
            with zipmoe.ContainerWriter(str(path), {"architecture": "seed"}) as w:
                w.add_tensor("dense.weight", rng.normal(0, 0.02, 300).astype(np.float32))
                w.add_tensor("expert.weight", rng.normal(0, 0.02, (8, 8)).astype(np.float16),
                             role={"layer": 0, "expert": 1, "projection": "up"})
            data = path.read_bytes()
            for control in (0, 1, 3, 7, 11):
                (out / "container" / f"seed-{control}").write_bytes(bytes([control]) + data)
    print(f"wrote seeds for {count} blobs under {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

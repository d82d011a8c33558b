#!/usr/bin/env python3
"""Prefill and decode speed of the built-in model in both precisions, on the kernel path ZIPMOE_ISA selects.

    ZIPMOE_ISA=avx2 PYTHONPATH=python ZIPMOE_DEV_BUILD=build/dev python3 tools/bench_precision.py --runs 5

One thread, timed by the process's CPU time (on a shared machine other processes disturb it less than the wall
clock). Prefill: logits of the first 256 tokens of README.md as a fresh sequence; decode: 64 greedy tokens after
"DUKE.\\n". Prints tokens/s, medians of --runs runs after a warm-up, for "fast" and "exact".
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import zipmoe

ROOT = pathlib.Path(__file__).resolve().parent.parent


def median_seconds(runs: int, fn) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for precision in ("fast", "exact"):
        model = zipmoe.load(threads=1, precision=precision)
        ids = model.tokenize(text)[:256]
        prefill = median_seconds(args.runs, lambda: model.logits(ids))
        decode = median_seconds(args.runs, lambda: model.generate("DUKE.\n", max_new_tokens=64, temperature=0))
        print(f"{model.isa} {precision}: prefill {len(ids) / prefill:.0f} tokens/s, decode {64 / decode:.0f} tokens/s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Batched decoding speed: total generated tokens/s and mean time per output token at several batch sizes, resident
and under memory budgets (include/zipmoe/generate.h: BatchScheduler; one forward step carries every running
sequence's next token, and each routed expert is acquired once per step for all of them).

    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/dev python3 tools/bench_batch.py                    # the built-in model
    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/dev python3 tools/bench_batch.py MODEL.zmoe \\
        --batches 1 4 16 --budgets resident 0.5 0.25 --threads 2 --drop-caches

For every budget (a share of the model's resident bytes, as memory()["total"] reports them without a budget) and
batch size B, each measurement loads the model in a subprocess of its own (after `sync; echo 3 >
/proc/sys/vm/drop_caches` with --drop-caches, which needs root), then generates --new-tokens greedy tokens for B
different prompts of --prompt-tokens random ids in one generate() call on a context of B sequences, --repeats
times. Reported: total generated tokens/s (all sequences, prompt evaluation included in the wall time), mean time
per output token (wall time / tokens per sequence), and the ratio to batch 1 at the same budget. With
precision="exact" (the default here) every batch's texts are checked against batch 1's: they must be equal.

The issue's full benchmark (the 6-layer Qwen1.5-MoE-shaped model of tools/bench_e2e.py, the paper's lz4hc +
FULL/SM settings, and llama.cpp's batched decoding in a memory cgroup) runs this tool on bench_e2e's containers:
pass the `auto` or `lz4hc` container path and --tiers full sm for the latter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _measure(args_json: str) -> None:
    """Child process: one budget and batch size; prints one JSON line."""
    import zipmoe

    a = json.loads(args_json)
    options = dict(threads=a["threads"], precision=a["precision"], max_context=a["prompt_tokens"] + a["new_tokens"] + 1)
    if a["tiers"]:
        options["tiers"] = a["tiers"]
    if a["budget_bytes"]:
        options["memory_budget"] = a["budget_bytes"]
    model = zipmoe.load(a["model"], **options)
    rng = np.random.default_rng(0)
    vocab = model.vocab_size
    prompts = [rng.integers(1, vocab, a["prompt_tokens"]).tolist() for _ in range(a["batch"])]
    context = model.new_context(max_sequences=a["batch"], max_context=options["max_context"])
    seconds, texts = [], None
    for _ in range(a["repeats"]):
        start = time.perf_counter()
        texts = context.generate(prompts, max_new_tokens=a["new_tokens"], temperature=0)
        seconds.append(time.perf_counter() - start)
    generated = sum(s["generated_tokens"] for s in context.last_generation_stats)
    print(json.dumps({"seconds": seconds, "generated": generated, "texts": texts}))


def _child(args, batch: int, budget_bytes: int) -> dict:
    if args.drop_caches:
        subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True)
    spec = dict(model=args.model, threads=args.threads, precision=args.precision, tiers=args.tiers,
                prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeats=args.repeats, batch=batch,
                budget_bytes=budget_bytes)
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=os.environ)
    if out.returncode != 0:  # e.g. a budget below the model's minimum (BudgetError): its message, one line
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None, help="a .zmoe (default: the built-in model)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--budgets", nargs="+", default=["resident", "0.5", "0.25"],
                        help="'resident' or shares of the resident bytes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="exact", choices=("exact", "fast"))
    parser.add_argument("--tiers", nargs="*", default=None, help="expert tiers (the paper: full sm)")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each run (root)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _measure(args.child)
        return
    import zipmoe

    args.model = args.model or zipmoe.default_model_path()
    resident = zipmoe.load(args.model, threads=1).memory()["total"]
    print(f"model {args.model}: {resident / 1e6:.1f} MB resident; {args.threads} threads, precision "
          f"{args.precision}, {args.prompt_tokens} prompt + {args.new_tokens} new tokens per sequence, "
          f"median of {args.repeats}")
    print(f"{'budget':>10} {'batch':>5} {'tokens/s':>10} {'ms/token':>9} {'x batch 1':>9} {'exact':>6}")
    for budget in args.budgets:
        budget_bytes = 0 if budget == "resident" else int(float(budget) * resident)
        base_rate, base_texts = None, None
        for batch in args.batches:
            r = _child(args, batch, budget_bytes)
            label = budget if budget == "resident" else f"{float(budget):.0%}"
            if "error" in r:
                print(f"{label:>10} {batch:>5}  {r['error'][:150]}", flush=True)
                break
            wall = statistics.median(r["seconds"])
            rate = r["generated"] / wall
            per_token_ms = 1000 * wall / args.new_tokens
            if base_rate is None:
                base_rate, base_texts = rate, r["texts"][0]
            same = "yes" if r["texts"][0] == base_texts else "NO"
            print(f"{label:>10} {batch:>5} {rate:>10.1f} {per_token_ms:>9.2f} {rate / base_rate:>9.2f} {same:>6}",
                  flush=True)


if __name__ == "__main__":
    main()

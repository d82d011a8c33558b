#!/usr/bin/env python3
"""Conversion throughput and peak memory of `zipmoe convert` (and `zipmoe export`) on a generated model.

Generates a BF16 safetensors MoE checkpoint shaped like Qwen1.5-MoE-A2.7B (hidden
2048, 60 experts of 1408, a 5632 shared expert, vocab 151936) cut to a few
layers, random N(0, 0.02) weights, sharded like a Hugging Face folder (at least
4 GB by default), in a temporary folder. Then it converts it in a child process
(and exports it back, checking the shards are byte-identical), reporting MB/s of
source and the child's peak RSS (ru_maxrss), and removes everything.

    python tools/bench_convert.py                      # 3 layers, about 4.7 GB
    python tools/bench_convert.py --layers 1 --codecs auto,raw --threads 2
    python tools/bench_convert.py --drop-caches         # cold page cache before each run (root)

The source is read from the page cache unless --drop-caches is given (it was
just written); the figures are then the converter's own cost, not the disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HIDDEN, EXPERTS, EXPERT_FF, SHARED_FF, VOCAB, HEADS = 2048, 60, 1408, 5632, 151936, 16


def model_tensors(layers: int):
    """(name, shape) in the order a HF checkpoint lists them."""
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (HIDDEN,)
        for e in range(EXPERTS):
            yield p + f"mlp.experts.{e}.down_proj.weight", (HIDDEN, EXPERT_FF)
            yield p + f"mlp.experts.{e}.gate_proj.weight", (EXPERT_FF, HIDDEN)
            yield p + f"mlp.experts.{e}.up_proj.weight", (EXPERT_FF, HIDDEN)
        yield p + "mlp.gate.weight", (EXPERTS, HIDDEN)
        yield p + "mlp.shared_expert.down_proj.weight", (HIDDEN, SHARED_FF)
        yield p + "mlp.shared_expert.gate_proj.weight", (SHARED_FF, HIDDEN)
        yield p + "mlp.shared_expert.up_proj.weight", (SHARED_FF, HIDDEN)
        yield p + "mlp.shared_expert_gate.weight", (1, HIDDEN)
        yield p + "post_attention_layernorm.weight", (HIDDEN,)
        for proj in ("q", "k", "v"):
            yield p + f"self_attn.{proj}_proj.bias", (HIDDEN,)
            yield p + f"self_attn.{proj}_proj.weight", (HIDDEN, HIDDEN)
        yield p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCAB, HIDDEN)


def config(layers: int) -> dict:
    return {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": VOCAB,
            "hidden_size": HIDDEN, "intermediate_size": 5632, "num_hidden_layers": layers,
            "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "num_experts": EXPERTS,
            "num_experts_per_tok": 4, "moe_intermediate_size": EXPERT_FF, "shared_expert_intermediate_size": SHARED_FF,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151643}


def bf16_pool(elements: int, seed: int = 0) -> np.ndarray:
    """Random N(0, 0.02) BF16 bit patterns (round to nearest even); tensors are windows of this pool."""
    x = np.random.default_rng(seed).normal(0.0, 0.02, size=elements).astype(np.float32)
    bits = x.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_model(folder: str, layers: int, shard_bytes: int) -> int:
    pool = bf16_pool(1 << 25)
    shards, current, size = [], [], 0
    for name, shape in model_tensors(layers):
        n = int(np.prod(shape)) * 2
        if current and size + n > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    shards.append(current)
    weight_map, total, cursor = {}, 0, 0
    for index, tensors in enumerate(shards):
        file_name = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in tensors:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file_name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape in tensors:
                n = int(np.prod(shape))
                start = cursor % (pool.size - 1)
                cursor += 7919 * 1024 + n
                if start + n <= pool.size:
                    f.write(memoryview(pool[start:start + n]))
                else:
                    f.write(memoryview(np.resize(np.roll(pool, -start), n)))
        total += offset
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(layers), f, indent=2)
    return total


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


CHILD = r"""
import json, resource, sys, time
import zipmoe
mode, args = sys.argv[1], json.loads(sys.argv[2])
start = time.perf_counter()
if mode == "convert":
    summary = zipmoe.convert(args["src"], args["out"], codec=args["codec"], threads=args["threads"])
else:
    summary = zipmoe.export(args["src"], "safetensors", args["out"], threads=args["threads"])
summary["wall_s"] = time.perf_counter() - start
summary["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(summary))
"""


def run_child(mode: str, **args) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_files(a: str, b: str) -> bool:
    for name in os.listdir(a):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            while True:
                x, y = fa.read(1 << 24), fb.read(1 << 24)
                if x != y:
                    return False
                if not x:
                    break
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=3, help="decoder layers (3: about 4.7 GB)")
    parser.add_argument("--codecs", default="auto", help="comma-separated codecs to convert with (auto,huffman,rans,raw)")
    parser.add_argument("--threads", type=int, default=None, help="encoding/decoding threads (default: every core)")
    parser.add_argument("--shard-gb", type=float, default=2.0, help="safetensors shard size in GB")
    parser.add_argument("--no-export", action="store_true", help="skip the export run")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each run (root)")
    parser.add_argument("--dir", default=None, help="where to put the temporary folder (default: system temp)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="zipmoe-bench-convert-", dir=args.dir)
    try:
        need = sum(int(np.prod(s)) * 2 for _, s in model_tensors(args.layers))
        free = shutil.disk_usage(work).free
        if free < 2.6 * need:
            raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, need about {2.6 * need / 1e9:.1f} GB")
        src = os.path.join(work, "model")
        os.mkdir(src)
        t = time.perf_counter()
        total = write_model(src, args.layers, int(args.shard_gb * 1e9))
        largest = max(int(np.prod(s)) * 2 for _, s in model_tensors(args.layers))
        print(f"source: {src}: {total / 1e9:.2f} GB BF16 in "
              f"{len([n for n in os.listdir(src) if n.endswith('.safetensors')])} shards, {args.layers} layers, "
              f"largest tensor {largest / 1e6:.0f} MB (written in {time.perf_counter() - t:.1f} s)")
        print(f"{'run':<16} {'codec':<8} {'seconds':>8} {'MB/s':>8} {'peak RSS':>10} {'RSS - largest':>14} "
              f"{'output':>10} {'ratio':>7}")
        for codec in args.codecs.split(","):
            out = os.path.join(work, f"model-{codec}.zmoe")
            if args.drop_caches:
                drop_caches()
            s = run_child("convert", src=src, out=out, codec=codec, threads=args.threads)
            rss = s["max_rss_bytes"]
            print(f"{'convert':<16} {codec:<8} {s['wall_s']:>8.1f} {total / 1e6 / s['wall_s']:>8.0f} "
                  f"{rss / 1e9:>8.2f} GB {(rss - largest) / 1e9:>11.2f} GB {s['container_bytes'] / 1e9:>7.2f} GB "
                  f"{total / s['container_bytes']:>7.3f}", flush=True)
            if not args.no_export:
                back = os.path.join(work, f"export-{codec}")
                if args.drop_caches:
                    drop_caches()
                e = run_child("export", src=out, out=back, threads=args.threads)
                rss = e["max_rss_bytes"]
                identical = same_files(src, back)
                print(f"{'export (' + ('identical' if identical else 'DIFFERENT') + ')':<16} {codec:<8} "
                      f"{e['wall_s']:>8.1f} {total / 1e6 / e['wall_s']:>8.0f} {rss / 1e9:>8.2f} GB "
                      f"{(rss - largest) / 1e9:>11.2f} GB", flush=True)
                shutil.rmtree(back)
                if not identical:
                    return 1
            os.unlink(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

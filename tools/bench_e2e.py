#!/usr/bin/env python3
"""End-to-end decode speed under a memory budget: zipmoe's tiered expert cache against llama.cpp on mmap.

    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/e2e nice -n 10 python3 tools/bench_e2e.py prepare
    sudo-capable shell (root): PYTHONPATH=python ZIPMOE_DEV_BUILD=build/e2e python3 tools/bench_e2e.py run

The model is generated: the Qwen1.5-MoE-A2.7B shape (hidden 2048, 60 experts of moe_intermediate 1408 top-4, a
shared expert of 5632, vocab 151936; tools/bench_engine.py's config) cut to --layers decoder layers (default 6:
8.1 GB in BF16), with routing skewed the way trained routers are:

- the token embedding rows carry a common direction u (row = 0.6 |z| u + z, z ~ N(0, 1)), which the residual stream
  keeps through the layers (attention and shared-expert outputs are kept small, sigma 0.01, so one layer changes
  the stream by about a quarter of its norm: the next layer's router applied to this layer's input predicts its
  choice, as gate-ahead prefetching assumes of trained models);
- each layer's router row e is beta_e u + N(0, 0.02): the common direction adds a per-expert offset to the router
  logits, set so that expert popularity follows a Zipf law (offset -0.4 * noise * log(rank + 1), a different rank
  permutation per layer), while the token-dependent part decides which of them a token picks;
- the output matrix has u projected out of its rows, so that greedy decoding follows the token-dependent part and
  does not settle on the few tokens the common direction favours.
The measured skew (share of routed tokens that go to each layer's top 10% and top 25% experts) is printed and
recorded.

`prepare` writes the Hugging Face checkpoint (streamed, as tools/bench_engine.py does), converts it to a BF16 GGUF
with llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python 0.3.36 source package) and to a .zmoe with codec
`auto`, deletes the checkpoint, and converts the GGUF to a `raw` and an `lz4hc` .zmoe (all lossless: the weights of
all four files are the same bits). Everything lives in --work-dir (about 28 GB at 6 layers).

`run` measures, each system in its own subprocess after `sync; echo 3 > /proc/sys/vm/drop_caches`, for each
budget (a share of the model's BF16 bytes): time to first token of a 128-token prompt and decode tokens/s over the
next 64 tokens at batch 1, 2 threads:
- zipmoe: memory_budget=budget, io="direct", cache_policy="affinity", the `auto` container;
- zipmoe raw: the same engine on the `raw` container (the uncompressed baseline);
- zipmoe paper: the ZipMoE paper's settings, the `lz4hc` container with tiers=("full", "sm");
- llama.cpp: llama-cpp-python 0.3.36, the BF16 GGUF with use_mmap=True, 2 threads, inside a cgroup v1 memory
  limit equal to the budget (page cache counts against it).
`report` prints the table again from results.json and redraws the plot.
The 64 decoded tokens are the greedy continuation, computed once (zipmoe without a budget) and fed to every system,
so that every system does the same work; each zipmoe run checks that its own greedy choices equal them (the cache
is bit-exact), llama.cpp's agreement with them is reported. The plot (docs/bench_e2e.png) needs matplotlib
(installed here; otherwise `pip install matplotlib` for this tool only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

TOOLS = pathlib.Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
from bench_engine import (  # noqa: E402
    QWEN15_MOE_A27B, checkpoint_tensors, llama_cpp_source, to_bf16_bits, write_config_and_tokenizer)

DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_SDIST = pathlib.Path.home() / ".cache" / "zipmoe" / "llama_cpp_python-0.3.36.tar.gz"
PROMPT_TOKENS = 128
DECODE_TOKENS = 64
THREADS = 2

# Generation constants (see the module docstring).
WEIGHT_SIGMA = 0.02
SMALL_OUTPUT_SIGMA = 0.01      # o_proj and the shared expert's down_proj: keep the residual stream slowly changing
EMBED_COMMON_SHARE = 0.6       # |common part| / |token part| of an embedding row
ZIPF_STRENGTH = 0.4            # router offset per log(rank + 1), in units of the token-dependent logit noise
PIECE = 1 << 25                # elements generated at a time


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the checkpoint

def tensor_kind(name: str, kind: str) -> str:
    if kind == "ones":
        return "ones"
    if name == "model.embed_tokens.weight":
        return "embed"
    if name == "lm_head.weight":
        return "lm_head"
    if name.endswith("mlp.gate.weight"):
        return "router"
    if name.endswith("self_attn.o_proj.weight") or name.endswith("shared_expert.down_proj.weight"):
        return "small"
    return "normal"


def router_offsets(rng, experts: int, layer: int, hidden: int) -> tuple:
    """(beta per expert, popularity rank per expert) of one layer's router."""
    rank = rng.permutation(experts)
    # x = rmsnorm(h) has norm sqrt(H); its component along u is sqrt(H) * share / sqrt(1 + share^2) for the
    # embedding, shrinking slowly as layers add their (small) outputs.
    growth = 1.0 + 0.07 * layer
    along_u = math.sqrt(hidden) * EMBED_COMMON_SHARE / math.sqrt(EMBED_COMMON_SHARE ** 2 + growth)
    noise = WEIGHT_SIGMA * math.sqrt(hidden)  # std of (random row) . x
    beta = -ZIPF_STRENGTH * noise * np.log(rank + 1.0) / along_u
    return beta, rank


def write_skewed_safetensors(path: pathlib.Path, config: dict, seed: int = 0) -> dict:
    """A BF16 safetensors file of the qwen2_moe checkpoint, streamed; returns the popularity ranks per layer."""
    tensors = checkpoint_tensors(config)
    H, E = config["hidden_size"], config["num_experts"]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(H)
    direction /= np.linalg.norm(direction)
    direction32 = direction.astype(np.float32)
    ranks = {}
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        for name, shape, kind in tensors:
            kind = tensor_kind(name, kind)
            total = int(np.prod(shape))
            if kind == "router":
                layer = int(name.split(".")[2])
                beta, rank = router_offsets(rng, E, layer, H)
                ranks[layer] = rank.tolist()
                rows = rng.standard_normal((E, H), dtype=np.float32) * WEIGHT_SIGMA
                rows += beta[:, None].astype(np.float32) * direction32[None, :]
                f.write(to_bf16_bits(rows).tobytes())
                continue
            remaining = total
            while remaining:
                n = min(PIECE, remaining)
                if kind == "ones":
                    f.write(np.full(n, 0x3F80, dtype=np.uint16).tobytes())
                elif kind in ("embed", "lm_head"):
                    rows = rng.standard_normal((n // H, H), dtype=np.float32)
                    if kind == "embed":
                        rows += np.float32(EMBED_COMMON_SHARE * math.sqrt(H)) * direction32[None, :]
                    else:
                        rows -= (rows @ direction32)[:, None] * direction32[None, :]
                        rows *= WEIGHT_SIGMA
                    f.write(to_bf16_bits(rows).tobytes())
                else:
                    values = rng.standard_normal(n, dtype=np.float32)
                    values *= SMALL_OUTPUT_SIGMA if kind == "small" else WEIGHT_SIGMA
                    f.write(to_bf16_bits(values).tobytes())
                remaining -= n
    os.replace(partial, path)
    return {"bytes": offset, "ranks": ranks}


def make_checkpoint(model_dir: pathlib.Path, layers: int, data_dir: pathlib.Path) -> dict:
    config = dict(QWEN15_MOE_A27B, num_hidden_layers=layers, max_window_layers=layers, model_type="qwen2_moe",
                  architectures=["Qwen2MoeForCausalLM"], torch_dtype="bfloat16")
    write_config_and_tokenizer(model_dir, config, data_dir)
    started = time.perf_counter()
    written = write_skewed_safetensors(model_dir / "model.safetensors", config)
    log(f"wrote {written['bytes'] / 1e9:.2f} GB of BF16 weights in {time.perf_counter() - started:.0f} s")
    return {"config": config, "bytes": written["bytes"], "ranks": written["ranks"]}


def prepare(args) -> dict:
    work = pathlib.Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "prepared.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    model_dir = work / "hf"
    gguf = work / "model-bf16.gguf"

    def save():
        state_path.write_text(json.dumps(state, indent=1))

    if "checkpoint" not in state:
        state["checkpoint"] = make_checkpoint(model_dir, args.layers, pathlib.Path(args.data_dir))
        save()
    if "gguf" not in state:
        source = llama_cpp_source(work, None, args.llama_cpp_sdist)
        started = time.perf_counter()
        run = subprocess.run([sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outtype",
                              "bf16", "--outfile", str(gguf) + ".partial"], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"llama.cpp's converter failed:\n{run.stderr[-4000:]}")
        os.replace(str(gguf) + ".partial", gguf)
        state["gguf"] = {"path": str(gguf), "bytes": gguf.stat().st_size, "seconds": time.perf_counter() - started}
        log(f"convert_hf_to_gguf.py: {gguf.stat().st_size / 1e9:.2f} GB in {state['gguf']['seconds']:.0f} s")
        save()
    for codec, source in (("auto", model_dir), ("raw", gguf), ("lz4hc", gguf)):
        key = f"zmoe_{codec}"
        if key in state or codec not in args.codecs.split(","):
            continue
        if not (model_dir / "model.safetensors").exists():
            source = gguf  # the same bits (the checkpoint is deleted after the first conversion)
        import zipmoe

        out = work / f"model.{codec}.zmoe"
        started = time.perf_counter()
        zipmoe.convert(source, out, codec=codec, threads=THREADS)
        state[key] = {"path": str(out), "bytes": out.stat().st_size, "seconds": time.perf_counter() - started,
                      "source": source.name}
        log(f"zipmoe.convert {codec} from {source.name}: {out.stat().st_size / 1e9:.2f} GB in "
            f"{state[key]['seconds']:.0f} s")
        save()
        if codec == "auto" and model_dir.exists() and not args.keep_checkpoint:
            # The GGUF holds the same bits; the checkpoint is not needed any more (disk space).
            for p in model_dir.iterdir():
                if p.suffix == ".safetensors":
                    p.unlink()
    return state


# ------------------------------------------------------------------------------------------ measuring

SYSTEMS = {
    # name: (container codec, load options)
    "zipmoe": ("auto", dict(cache_policy="affinity", io="direct")),
    "zipmoe raw": ("raw", dict(cache_policy="affinity", io="direct")),
    "zipmoe paper": ("lz4hc", dict(cache_policy="affinity", io="direct", tiers=("full", "sm"))),
    "llama.cpp": (None, {}),
    # diagnosis only: a container converted with the former auto rule (rANS where 0.2% smaller), recorded by
    # hand in prepared.json as "zmoe_auto_rans_preferred" (a build before that rule changed must convert it)
    "zipmoe rans-auto": ("auto_rans_preferred", dict(cache_policy="affinity", io="direct")),
}
DEFAULT_SYSTEMS = ("zipmoe", "zipmoe raw", "zipmoe paper", "llama.cpp")
CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup/memory")


def drop_page_cache() -> None:
    os.sync()
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


def prompt_ids(seed: int = 1) -> list:
    # ids below 151643 are ordinary tokens of the Qwen2 vocabulary in both engines
    return np.random.default_rng(seed).integers(0, 151643, size=PROMPT_TOKENS).tolist()


def skew_of(profile: dict) -> dict:
    """Share of each layer's routed tokens that go to its top 10% / 25% experts (means over layers)."""
    top10, top25 = [], []
    for layer in profile["layers"]:
        counts = np.sort(np.asarray(layer["counts"], dtype=np.float64))[::-1]
        total = counts.sum()
        top10.append(counts[: max(1, round(0.10 * len(counts)))].sum() / total)
        top25.append(counts[: max(1, round(0.25 * len(counts)))].sum() / total)
    return {"top10_share": float(np.mean(top10)), "top25_share": float(np.mean(top25)),
            "top10_share_per_layer": [round(float(x), 3) for x in top10]}


def reference(args, state: dict) -> dict:
    """Greedy continuation and routing skew, from zipmoe with every expert resident."""
    import zipmoe

    model = zipmoe.load(state["zmoe_auto"]["path"], threads=THREADS, max_context=1024 + 8,
                        batch=PROMPT_TOKENS)
    prompt = prompt_ids()
    started = time.perf_counter()
    token = int(np.argmax(model.eval(prompt, last_only=True)[0]))
    ttft = time.perf_counter() - started
    tokens = [token]
    started = time.perf_counter()
    for _ in range(DECODE_TOKENS - 1):
        token = int(np.argmax(model.eval([token], last_only=True)[0]))
        tokens.append(token)
    decode_seconds = time.perf_counter() - started
    sequence_skew = skew_of(model.routing_profile())
    # A longer sample for the skew: 1024 further random tokens in one fresh sequence.
    model.reset()
    wide = np.random.default_rng(7).integers(0, 151643, size=1024).tolist()
    before = model.routing_profile()
    for at in range(0, len(wide), PROMPT_TOKENS):
        model.eval(wide[at:at + PROMPT_TOKENS], last_only=True)
    after = model.routing_profile()
    for b, a in zip(before["layers"], after["layers"]):
        a["counts"] = [x - y for x, y in zip(a["counts"], b["counts"])]
    return {"prompt": prompt, "tokens": tokens, "distinct_tokens": len(set(tokens)),
            "resident_ttft_s": ttft, "resident_decode_tok_s": (DECODE_TOKENS - 1) / decode_seconds,
            "skew_sequence": sequence_skew, "skew_1024_random_tokens": skew_of(after)}


def cache_stats(model) -> dict:
    s = model.stats()
    out = {k: s["total"][k] for k in ("requests", "hits", "misses", "bytes_read", "prefetch_bytes_read",
                                      "chunks_read", "read_seconds", "decoded_bytes", "decode_seconds",
                                      "stall_seconds", "prefetch_hits", "served_from")}
    for k in ("unused_bytes_read", "reread_bytes", "unused_decoded_bytes", "fused_decoded_bytes"):
        if k in s["total"]:
            out[k] = s["total"][k]
    for k in ("experts_in", "tier_bytes", "tier_capacity", "working_set_bytes", "prefetches", "prefetches_used",
              "prefetches_cancelled", "admissions", "evictions", "storage_bandwidth", "read_latency",
              "decode_throughput", "other_cpu_seconds", "planned_seconds_per_token", "replans", "load_bytes_read",
              "replan_dropped_bytes", "replan_demotions", "io_busy_seconds", "forward_seconds", "planner"):
        if k in s:
            out[k] = s[k]
    return out


def run_one(args) -> dict:
    """One system at one budget, in this (fresh) process; the result as a dict."""
    state = json.loads((pathlib.Path(args.work_dir) / "prepared.json").read_text())
    ref = state["reference"]
    prompt, tokens = ref["prompt"], ref["tokens"]
    budget = int(args.budget)
    codec, options = SYSTEMS[args.system]
    result = {"system": args.system, "budget": budget}
    started = time.perf_counter()
    if codec is None:
        from llama_cpp import Llama

        llm = Llama(model_path=state["gguf"]["path"], n_ctx=PROMPT_TOKENS + DECODE_TOKENS + 8,
                    n_batch=PROMPT_TOKENS, n_ubatch=PROMPT_TOKENS, n_threads=THREADS, n_threads_batch=THREADS,
                    logits_all=False, use_mmap=True, verbose=False)
        result["load_s"] = time.perf_counter() - started

        # With logits_all=False llama-cpp-python 0.3.x no longer copies logits into Llama.scores (they stay
        # zero): read the last token's row, the only one llama_decode computed, from the context.
        def last_logits():
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()

        def prefill(ids):
            llm.eval(ids)
            return last_logits()

        def step(token):
            llm.eval([token])
            return last_logits()
    else:
        import zipmoe

        try:
            model = zipmoe.load(state[f"zmoe_{codec}"]["path"], threads=THREADS, memory_budget=budget,
                                max_context=PROMPT_TOKENS + DECODE_TOKENS + 8, batch=args.batch, **options)
        except zipmoe.BudgetError as error:
            import re

            match = re.search(r"the minimum is [^(]*\((\d+) bytes\)", str(error))
            result.update(refused=True, minimum=int(match.group(1)) if match else None)
            return result
        result["load_s"] = time.perf_counter() - started

        def prefill(ids):
            return model.eval(ids, last_only=True)[0]

        def step(token):
            return model.eval([token], last_only=True)[0]

    started = time.perf_counter()
    first = int(np.argmax(prefill(prompt)))
    result["ttft_s"] = time.perf_counter() - started
    if codec is not None:
        result["prefill_stats"] = cache_stats(model)
        model.reset_stats()
    agree = [first == tokens[0]]
    started = time.perf_counter()
    done = 0
    for i in range(1, DECODE_TOKENS):
        # Every system decodes the reference continuation (the same work), checking its own greedy choice.
        agree.append(int(np.argmax(step(tokens[i - 1]))) == tokens[i])
        done += 1
        if time.perf_counter() - started > args.decode_time_limit:
            break
    result["decode_s"] = time.perf_counter() - started
    result["decoded"] = done
    result["decode_tok_s"] = done / result["decode_s"]
    result["greedy_agreement"] = sum(agree) / len(agree)
    if codec is not None:
        result["stats"] = cache_stats(model)
        result["memory"] = model.memory()
    return result


def spawn(args, system: str, budget: int) -> dict:
    """run_one in a subprocess after dropping the page cache; llama.cpp inside a memory cgroup of `budget`."""
    drop_page_cache()
    command = [sys.executable, __file__, "one", "--work-dir", args.work_dir, "--system", system, "--budget",
               str(budget), "--batch", str(args.batch), "--decode-time-limit", str(args.decode_time_limit)]
    cgroup = None
    if SYSTEMS[system][0] is None:
        cgroup = CGROUP_ROOT / f"zipmoe_bench_e2e_{os.getpid()}"
        cgroup.mkdir(exist_ok=True)
        (cgroup / "memory.limit_in_bytes").write_text(str(budget))
        # The child joins the cgroup before it imports or maps anything.
        command = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh"] + command
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=args.run_timeout)
        output = run.stdout.strip().splitlines()
        if run.returncode or not output:
            failure = {"system": system, "budget": budget, "failed": True, "returncode": run.returncode,
                       "stderr": run.stderr[-1500:]}
            if cgroup is not None:
                failure["oom_kills"] = (cgroup / "memory.oom_control").read_text().strip().split()[-1]
            return failure
        result = json.loads(output[-1])
        if cgroup is not None:
            result["cgroup_max_usage"] = int((cgroup / "memory.max_usage_in_bytes").read_text())
        return result
    except subprocess.TimeoutExpired:
        return {"system": system, "budget": budget, "failed": True, "timeout": args.run_timeout}
    finally:
        if cgroup is not None:
            for _ in range(50):
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def run_all(args) -> dict:
    work = pathlib.Path(args.work_dir)
    state = json.loads((work / "prepared.json").read_text())
    if "reference" not in state:
        drop_page_cache()
        log("reference run (every expert resident) ...")
        state["reference"] = reference(args, state)
        (work / "prepared.json").write_text(json.dumps(state, indent=1))
    ref = state["reference"]
    log(f"reference: {ref['distinct_tokens']} distinct of {DECODE_TOKENS} tokens, skew {ref['skew_1024_random_tokens']}")
    model_bytes = state["checkpoint"]["bytes"]
    shares = [float(x) for x in args.budgets.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if (results_path.exists() and args.resume) else []
    for rep in range(args.reps):
        for share in shares:
            budget = int(share * model_bytes)
            order = systems if rep % 2 == 0 else systems[::-1]
            for system in order:
                if any(r["system"] == system and r["budget"] == budget and r.get("refused") for r in results):
                    continue
                if share in args.llama_once_shares and system == "llama.cpp" and rep > 0:
                    continue
                result = spawn(args, system, budget)
                result.update(rep=rep, share=share)
                results.append(result)
                results_path.write_text(json.dumps(results, indent=1))
                brief = ("refused, minimum %.2f GB" % (result["minimum"] / 1e9) if result.get("refused") else
                         "FAILED" if result.get("failed") else
                         f"ttft {result['ttft_s']:.2f} s, decode {result['decode_tok_s']:.2f} tok/s "
                         f"(agree {result['greedy_agreement']:.2f})")
                log(f"rep {rep} budget {share:.0%} {system}: {brief}")
    return {"state": state, "results": results}


def median_table(data: dict) -> tuple:
    state, results = data["state"], data["results"]
    model_bytes = state["checkpoint"]["bytes"]
    shares = sorted({r["share"] for r in results})
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    cell = {}
    for share in shares:
        for system in systems:
            rows = [r for r in results if r["share"] == share and r["system"] == system]
            ok = [r for r in rows if "decode_tok_s" in r]
            if ok:
                cell[share, system] = {"decode": statistics.median(r["decode_tok_s"] for r in ok),
                                       "ttft": statistics.median(r["ttft_s"] for r in ok), "n": len(ok),
                                       "agree": min(r["greedy_agreement"] for r in ok),
                                       "decoded": min(r["decoded"] for r in ok)}
            elif rows and rows[0].get("refused"):
                cell[share, system] = {"refused": rows[0]["minimum"]}
            elif rows:
                cell[share, system] = {"failed": True}
    lines = ["| budget | system | decode tok/s | time to first token s | runs | vs llama.cpp | "
             "zipmoe vs this |", "|---|---|---:|---:|---:|---:|---:|"]
    for share in shares:
        base = cell.get((share, "llama.cpp"), {}).get("decode")
        ours = cell.get((share, "zipmoe"), {}).get("decode")
        for system in systems:
            c = cell.get((share, system))
            if c is None:
                continue
            label = f"{share:.0%} ({share * model_bytes / 1e9:.2f} GB)"
            if "refused" in c:
                lines.append(f"| {label} | {system} | refused: minimum {c['refused'] / 1e9:.2f} GB | | | | |")
                continue
            if "failed" in c:
                lines.append(f"| {label} | {system} | failed | | | | |")
                continue
            vs = f"{c['decode'] / base:.2f}x" if base else ""
            mine = f"{ours / c['decode']:.2f}x" if ours and system != "zipmoe" else ""
            note = "" if c["decoded"] >= DECODE_TOKENS - 1 else f" ({c['decoded']} tokens)"
            lines.append(f"| {label} | {system} | {c['decode']:.2f}{note} | {c['ttft']:.2f} | {c['n']} | {vs} | {mine} |")
    return "\n".join(lines), cell, shares, systems


def plot(cell: dict, shares: list, systems: list, model_bytes: int, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for system in systems:
        xs = [s * model_bytes / 1e9 for s in shares if "decode" in cell.get((s, system), {})]
        ys = [cell[s, system]["decode"] for s in shares if "decode" in cell.get((s, system), {})]
        if xs:
            ax.plot(xs, ys, marker="o", label=system)
    ax.set_xlabel("memory budget (GB; model 8.1 GB BF16)")
    ax.set_ylabel("decode tokens/s (batch 1)")
    ax.set_title("Qwen1.5-MoE-A2.7B shape, 6 layers, 2 threads")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("prepare", "run", "report", "one"))
    parser.add_argument("--work-dir", default=str(pathlib.Path.home() / ".cache" / "zipmoe" / "bench_e2e"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--codecs", default="auto,raw,lz4hc")
    parser.add_argument("--keep-checkpoint", action="store_true")
    parser.add_argument("--llama-cpp-sdist", default=str(DEFAULT_SDIST))
    parser.add_argument("--budgets", default="0.10,0.25,0.50", help="shares of the model's BF16 bytes")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--llama-once-shares", type=lambda t: [float(x) for x in t.split(",") if x], default=[0.10],
                        help="budgets at which llama.cpp runs once only (slow)")
    parser.add_argument("--resume", action="store_true", help="keep the results already in results.json")
    parser.add_argument("--batch", type=int, default=PROMPT_TOKENS, help="zipmoe's prefill step")
    parser.add_argument("--decode-time-limit", type=float, default=120.0,
                        help="stop decoding after this many seconds (tokens/s over the tokens done)")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    parser.add_argument("--system")
    parser.add_argument("--budget")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "bench_e2e.png"))
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
        return 0
    if args.command == "one":
        print(json.dumps(run_one(args)))
        return 0
    data = run_all(args) if args.command == "run" else {
        "state": json.loads((pathlib.Path(args.work_dir) / "prepared.json").read_text()),
        "results": json.loads((pathlib.Path(args.work_dir) / "results.json").read_text())}
    table, cell, shares, systems = median_table(data)
    state = data["state"]
    ref = state["reference"]
    print(f"model: Qwen1.5-MoE-A2.7B shape cut to {state['checkpoint']['config']['num_hidden_layers']} layers, "
          f"{state['checkpoint']['bytes'] / 1e9:.2f} GB BF16; containers: " +
          ", ".join(f"{k[5:]} {v['bytes'] / 1e9:.2f} GB" for k, v in state.items() if k.startswith("zmoe_")) +
          f"; GGUF {state['gguf']['bytes'] / 1e9:.2f} GB")
    print(f"routing skew (1024 random tokens): top 10% of experts take {ref['skew_1024_random_tokens']['top10_share']:.1%}"
          f" of routed tokens, top 25% take {ref['skew_1024_random_tokens']['top25_share']:.1%}; "
          f"decoded continuation: {ref['distinct_tokens']} distinct tokens of {DECODE_TOKENS}; "
          f"resident zipmoe: {ref['resident_decode_tok_s']:.2f} tok/s")
    print(table)
    try:
        plot(cell, shares, systems, state["checkpoint"]["bytes"], pathlib.Path(args.plot))
        print(f"plot: {args.plot}")
    except ImportError:
        log("matplotlib is not installed: pip install matplotlib (needed for the plot only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

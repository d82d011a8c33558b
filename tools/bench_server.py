#!/usr/bin/env python3
"""Serving under a memory budget: `zipmoe serve` against llama-cpp-python's own OpenAI server, many clients at once.

    root: PYTHONPATH=python ZIPMOE_DEV_BUILD=build/e2e python3 tools/bench_server.py run --work-dir /work/bench/e2e
    PYTHONPATH=python ZIPMOE_DEV_BUILD=build/dev python3 tools/bench_server.py smoke     # the built-in model, no root

`run` uses the model tools/bench_e2e.py prepares (the Qwen1.5-MoE-A2.7B shape cut to 6 layers, skewed routing: its
prepared.json names the `auto` .zmoe and the BF16 GGUF, the same bits). For each budget (a share of the model's
BF16 bytes) and each system, a server starts after `sync; echo 3 > /proc/sys/vm/drop_caches`, inside a cgroup v1
memory limit of the budget (page cache counts against it):
- zipmoe: `zipmoe serve` with --memory-budget (the limit less --overhead for the interpreter and the web stack),
  --io direct, 2 threads, --max-sequences 16, precision fast;
- llama-cpp-python: `python -m llama_cpp.server` on the GGUF with use_mmap, 2 threads (its server runs one
  request at a time).
Then 1, 4 and 16 clients each send --requests chat requests (a fixed set of prompts, max_tokens 128, greedy,
streamed), and the tool records requests/s, output tokens/s, and the p50/p95 time to first token and time per
output token (after the first, per request). The same server then serves a 10-turn chat (each turn resends the
conversation with the previous answer), time to first token per turn, and zipmoe runs it again with
--no-prompt-cache. Results go to bench_server.json in the work dir; `report` prints the tables again.

`smoke` runs the same measurements on the built-in model without cgroups or dropping the page cache (any user), to
check the tool itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOOLS = pathlib.Path(__file__).resolve().parent
CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup/memory")
THREADS = 2
MAX_TOKENS = 128
PROMPTS = [
    "Explain why the sky is blue in two sentences.", "Write a short poem about the sea.",
    "List three uses of a paperclip.", "What is the capital of France, and why is it famous?",
    "Describe a sunrise to someone who has never seen one.", "Give me a recipe for a simple soup.",
    "Summarize the plot of a detective story in one paragraph.", "How do bees make honey?",
    "Tell me a joke about computers.", "What are the rules of chess for the knight?",
    "Write a letter to a friend about a trip to the mountains.", "Why do we dream?",
    "Compare cats and dogs as pets.", "What is the speed of light and who measured it first?",
    "Suggest a name for a bakery and explain it.", "Describe the sound of rain on a tin roof.",
]
CHAT_TURNS = ["Tell me about the history of the printing press.", "Who was Gutenberg?", "What did he print first?",
              "How did printing spread across Europe?", "What changed for ordinary people?",
              "Which books were most printed?", "How did printing affect science?",
              "And religion?", "What came after the printing press?", "Summarize our conversation."]


def log(message: str) -> None:
    print(f"[bench_server {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_page_cache() -> None:
    os.sync()
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Server:
    """A server process (in a memory cgroup when `limit` is given) and its base URL."""

    def __init__(self, command: list, limit: int | None, ready_path: str, timeout: float = 900):
        self.cgroup = None
        if limit:
            self.cgroup = CGROUP_ROOT / f"zipmoe_bench_server_{os.getpid()}"
            self.cgroup.mkdir(exist_ok=True)
            (self.cgroup / "memory.limit_in_bytes").write_text(str(limit))
            # the child joins the cgroup before it imports or maps anything
            command = ["sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh"] + command
        # the server's output, for when it fails
        self.log = tempfile.NamedTemporaryFile("w", prefix="bench_server_", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode} (output: {self.log.name}): "
                                   f"{' '.join(command)}")
            try:
                if httpx.get(self.url + ready_path, timeout=5, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become ready in {timeout} s")

    def peak_bytes(self):
        if self.cgroup is None:
            return None
        return int((self.cgroup / "memory.max_usage_in_bytes").read_text())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def stream_chat(url: str, model: str, messages: list, max_tokens: int) -> dict:
    """One streamed chat request: time to first token, seconds per output token after it, the text."""
    import httpx

    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    pieces, chunks, usage = [], 0, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600, trust_env=False) as response:
        if response.status_code != 200:
            return {"failed": f"HTTP {response.status_code}: {response.read()[:300]!r}"}
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return {"failed": str(chunk["error"])[:300]}
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
                    pieces.append(text)
    tokens = usage["completion_tokens"] if usage else chunks
    if first is None:
        return {"failed": "no text"}
    return {"ttft": first - started, "tpot": (last - first) / max(tokens - 1, 1), "tokens": tokens,
            "seconds": last - started, "text": "".join(pieces),
            "cached": ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")}


def percentile(values: list, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def load_run(url: str, model: str, clients: int, requests: int) -> dict:
    """`clients` clients, each sending `requests` chat requests one after another."""
    def client(index: int) -> list:
        return [stream_chat(url, model, [{"role": "user", "content": PROMPTS[(index * 5 + i) % len(PROMPTS)]}],
                            MAX_TOKENS) for i in range(requests)]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - started
    ok = [r for r in results if "failed" not in r]
    out = {"clients": clients, "requests": len(results), "failed": len(results) - len(ok), "seconds": wall}
    if ok:
        ttft, tpot = [r["ttft"] for r in ok], [r["tpot"] for r in ok]
        out.update(requests_per_s=len(ok) / wall, output_tokens_per_s=sum(r["tokens"] for r in ok) / wall,
                   ttft_p50=percentile(ttft, 0.5), ttft_p95=percentile(ttft, 0.95), tpot_p50=percentile(tpot, 0.5),
                   tpot_p95=percentile(tpot, 0.95))
    if len(ok) < len(results):
        out["first_failure"] = next(r["failed"] for r in results if "failed" in r)
    return out


def chat_run(url: str, model: str, max_tokens: int) -> list:
    """A 10-turn conversation, one request per turn: time to first token and cached prompt tokens per turn."""
    messages, turns = [], []
    for text in CHAT_TURNS:
        messages.append({"role": "user", "content": text})
        result = stream_chat(url, model, messages, max_tokens)
        if "failed" in result:
            turns.append({"failed": result["failed"]})
            break
        turns.append({"ttft": result["ttft"], "cached": result["cached"]})
        messages.append({"role": "assistant", "content": result["text"]})
    return turns


def zipmoe_command(path: str, port: int, budget: int | None, prompt_cache: bool = True) -> list:
    command = [sys.executable, "-m", "zipmoe", "serve", path, "--port", str(port), "--threads", str(THREADS),
               "--max-sequences", "16", "--max-queue", "256", "--model-name", "bench"]
    if budget:
        command += ["--memory-budget", str(budget), "--io", "direct"]
    if not prompt_cache:
        command.append("--no-prompt-cache")
    return command


def llama_command(gguf: str, port: int) -> list:
    return [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "bench", "--host",
            "127.0.0.1", "--port", str(port), "--n_threads", str(THREADS), "--n_ctx", "4096", "--use_mmap", "true"]


def measure(system: str, command_of, limit, clients: list, requests: int, with_chat: bool, cold: bool) -> dict:
    record = {"system": system, "limit": limit, "runs": []}
    if cold:
        drop_page_cache()
    port = free_port()
    server = Server(command_of(port), limit, "/health" if system.startswith("zipmoe") else "/v1/models")
    try:
        for count in clients:
            run = load_run(server.url, "bench", count, requests)
            record["runs"].append(run)
            log(f"{system} limit {limit}: {count} clients: " + (
                f"{run['output_tokens_per_s']:.2f} tok/s, {run['requests_per_s']:.3f} req/s, ttft p50 "
                f"{run['ttft_p50']:.2f} s, tpot p50 {run['tpot_p50'] * 1e3:.0f} ms, {run['failed']} failed"
                if "output_tokens_per_s" in run else f"all {run['requests']} failed: {run.get('first_failure')}"))
        if with_chat:
            record["chat"] = chat_run(server.url, "bench", MAX_TOKENS)
            log(f"{system}: 10-turn chat ttft " + ", ".join(f"{t['ttft']:.2f}" for t in record["chat"] if "ttft" in t))
        record["peak_bytes"] = server.peak_bytes()
    finally:
        server.stop()
    return record


def run(args) -> list:
    work = pathlib.Path(args.work_dir)
    state = json.loads((work / "prepared.json").read_text())
    model_bytes = state["checkpoint"]["bytes"]
    zmoe, gguf = state["zmoe_auto"]["path"], state["gguf"]["path"]
    clients = [int(c) for c in args.clients.split(",")]
    results = []
    for share in (float(s) for s in args.shares.split(",")):
        limit = int(share * model_bytes)
        budget = limit - args.overhead
        systems = {"zipmoe": lambda port: zipmoe_command(zmoe, port, budget),
                   "zipmoe (no prompt cache)": lambda port: zipmoe_command(zmoe, port, budget, prompt_cache=False),
                   "llama-cpp-python": lambda port: llama_command(gguf, port)}
        for name in [s for s in args.systems.split(",") if s]:
            chat_only = name == "zipmoe (no prompt cache)"
            record = measure(name, systems[name], limit, [] if chat_only else clients, args.requests, True, True)
            record.update(share=share, budget=budget if name.startswith("zipmoe") else None)
            results.append(record)
            (work / "bench_server.json").write_text(json.dumps(results, indent=1))
    return results


def smoke(args) -> list:
    import zipmoe

    path = zipmoe.default_model_path()
    clients = [int(c) for c in args.clients.split(",")]
    results = [measure("zipmoe", lambda port: zipmoe_command(path, port, None), None, clients, args.requests, True,
                       False),
               measure("zipmoe (no prompt cache)", lambda port: zipmoe_command(path, port, None, prompt_cache=False),
                       None, [], args.requests, True, False)]
    for record in results:
        record.update(share=1.0, budget=None)
    return results


def report(results: list) -> str:
    lines = ["| budget | system | clients | requests/s | output tok/s | TTFT p50 / p95 s | TPOT p50 / p95 ms | "
             "failed | vs llama-cpp-python |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(r["share"], run["clients"]): run.get("output_tokens_per_s") for r in results
            if r["system"] == "llama-cpp-python" for run in r["runs"]}
    for record in results:
        for run in record["runs"]:
            if "output_tokens_per_s" not in run:
                lines.append(f"| {record['share']:.0%} | {record['system']} | {run['clients']} | failed | | | | "
                             f"{run['failed']} | |")
                continue
            reference = base.get((record["share"], run["clients"]))
            ratio = f"{run['output_tokens_per_s'] / reference:.2f}x" if reference and \
                record["system"] != "llama-cpp-python" else ""
            lines.append(f"| {record['share']:.0%} | {record['system']} | {run['clients']} | "
                         f"{run['requests_per_s']:.3f} | {run['output_tokens_per_s']:.2f} | "
                         f"{run['ttft_p50']:.2f} / {run['ttft_p95']:.2f} | {run['tpot_p50'] * 1e3:.0f} / "
                         f"{run['tpot_p95'] * 1e3:.0f} | {run['failed']} | {ratio} |")
    chats = [r for r in results if r.get("chat")]
    if chats:
        lines += ["", "| budget | system | " + " | ".join(f"turn {i + 1}" for i in range(len(CHAT_TURNS))) + " |",
                  "|---|---|" + "---:|" * len(CHAT_TURNS)]
        for record in chats:
            cells = [f"{t['ttft']:.2f}" + (f" ({t['cached']})" if t.get("cached") else "") if "ttft" in t
                     else "failed" for t in record["chat"]]
            lines.append(f"| {record['share']:.0%} | {record['system']} | " + " | ".join(cells) + " |")
        lines.append("(time to first token in seconds; in parentheses the prompt tokens the KV cache held)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "smoke", "report"))
    parser.add_argument("--work-dir", default="/work/bench/e2e", help="where tools/bench_e2e.py prepared the model")
    parser.add_argument("--shares", default="0.25,0.50", help="memory limits as shares of the model's BF16 bytes")
    parser.add_argument("--systems", default="zipmoe,zipmoe (no prompt cache),llama-cpp-python")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--overhead", type=int, default=400 << 20,
                        help="bytes of the limit left to zipmoe's interpreter and web stack (default 400 MiB)")
    args = parser.parse_args(argv)
    if args.command == "report":
        results = json.loads((pathlib.Path(args.work_dir) / "bench_server.json").read_text())
    elif args.command == "smoke":
        results = smoke(args)
    else:
        if "llama-cpp-python" in args.systems:
            try:
                import llama_cpp.server  # noqa: F401
            except ImportError as error:
                raise SystemExit(f"llama-cpp-python's server is not installed ({error}): pip install "
                                 f"'llama-cpp-python[server]', or leave it out with --systems")
        results = run(args)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``zipmoe`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

from . import _checks
from . import _core
from ._names import CACHE_POLICIES, CODECS, IO_MODES, PRECISIONS


def _thread_count(text: str) -> int:
    """argparse type of --threads: an integer in [1, MAX_THREADS]."""
    try:
        return _checks.thread_count(int(text))
    except (ValueError, _core.InvalidArgumentError):
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {_checks.MAX_THREADS}, not {text!r}") \
            from None


def _utf8_argument(text: str, what: str) -> str:
    """A command-line argument as text; InvalidArgumentError naming the first byte that is not UTF-8 (Python
    keeps such bytes of argv as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            os.fsencode(text).decode("utf-8")
        except UnicodeError as error:
            where = f" ({_checks.describe_bad_utf8(error)})" if isinstance(error, UnicodeDecodeError) else ""
            raise _core.InvalidArgumentError(f"{what} is not UTF-8 text{where}") from None
        raise _core.InvalidArgumentError(f"{what} is not UTF-8 text") from None
    return text


def _cmd_sysinfo(args: argparse.Namespace) -> int:
    print(f"zipmoe {_core.__version__}")
    print(f"instruction sets: {', '.join(_core.available_isas())} (default: {_core.default_isa()})")
    features = _core.cpu_features()
    print("cpu features: " + ", ".join(k for k, v in features.items() if v))
    return 0


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _role_text(t) -> str:
    return "dense" if t.role == "dense" else f"L{t.layer} E{t.expert} {t.projection}"


def _totals(tensors) -> dict:
    """Per-role and overall sums; entropy is the element-weighted mean of per-tensor entropies."""
    groups = {"dense": [t for t in tensors if t.role == "dense"],
              "expert": [t for t in tensors if t.role == "expert"],
              "all": list(tensors)}
    out = {}
    for role, ts in groups.items():
        raw = sum(t.raw_bytes for t in ts)
        stored = sum(t.stored_bytes for t in ts)
        elements = sum(t.num_elements for t in ts)
        out[role] = {
            "tensors": len(ts),
            "elements": elements,
            "raw_bytes": raw,
            "stored_bytes": stored,
            "exponent_bytes": sum(t.exponent_bytes for t in ts),
            "sm_bytes": sum(t.sm_bytes for t in ts),
            "ratio": raw / stored if stored else None,
            "exponent_entropy": sum(t.exponent_entropy * t.num_elements for t in ts) / elements if elements else None,
        }
    return out


def _metadata_summary(metadata: dict) -> list[str]:
    lines = []
    for key, value in metadata.items():
        if isinstance(value, dict):
            text = f"{{{len(value)} keys}}"
        elif isinstance(value, list):
            text = f"[{len(value)} items]"
        elif isinstance(value, str) and len(value) > 60:
            text = f"<text, {len(value)} characters>"
        else:
            text = json.dumps(value, ensure_ascii=False)
        lines.append(f"  {key}: {text}")
    return lines


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .container import open_container

    with open_container(args.file) as c:
        totals = _totals(c.tensors)
        if args.json:
            report = {
                "file": c.path,
                "file_size": c.file_size,
                "version": f"{c.version[0]}.{c.version[1]}",
                "metadata": c.metadata,
                "tensors": [t.to_dict() for t in c.tensors],
                "totals": totals,
            }
            json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
            print()
            return 0
        print(f"{c.path}: zipmoe container {c.version[0]}.{c.version[1]}, {_human_bytes(c.file_size)}, "
              f"{len(c.tensors)} tensors")
        print("metadata:" + ("" if c.metadata else " (empty)"))
        for line in _metadata_summary(c.metadata):
            print(line)
        if not args.no_tensors and c.tensors:
            rows = [(t.name, _role_text(t), t.dtype, "x".join(map(str, t.shape)) or "scalar", t.codec,
                     _human_bytes(t.stored_bytes), f"{t.ratio:.3f}", f"{t.exponent_entropy:.3f}") for t in c.tensors]
            header = ("tensor", "role", "dtype", "shape", "codec", "stored", "ratio", "exp.bits")
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
            right = {5, 6, 7}
            fmt = lambda r: "  ".join(v.rjust(w) if i in right else v.ljust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(r, widths))).rstrip()
            print()
            print(fmt(header))
            for r in rows:
                print(fmt(r))
        print()
        print(f"{'role':<7} {'tensors':>8} {'raw':>11} {'stored':>11} {'ratio':>7} {'exp.bits':>8}")
        for role in ("dense", "expert", "all"):
            s = totals[role]
            ratio = f"{s['ratio']:.3f}" if s["ratio"] else "-"
            entropy = f"{s['exponent_entropy']:.3f}" if s["exponent_entropy"] is not None else "-"
            print(f"{role:<7} {s['tensors']:>8} {_human_bytes(s['raw_bytes']):>11} "
                  f"{_human_bytes(s['stored_bytes']):>11} {ratio:>7} {entropy:>8}")
        if totals["all"]["raw_bytes"]:
            print(f"file: {_human_bytes(c.file_size)} for {_human_bytes(totals['all']['raw_bytes'])} of weights "
                  f"(ratio {totals['all']['raw_bytes'] / c.file_size:.3f} with headers, index and padding)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import warnings

    from .conversion import ConversionWarning, convert

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        summary = convert(args.src, args.output, codec=args.codec, threads=args.threads, generic=args.generic,
                          progress=not args.quiet and sys.stderr.isatty() or args.progress)
    for warning in caught:
        print(f"zipmoe: warning: {warning.message}", file=sys.stderr)
    overhead = summary["container_bytes"] - summary["payload_bytes"]
    print(f"{summary['output']}: {summary['architecture']}, {summary['source_tensors']} source tensors -> "
          f"{summary['tensors']} tensors; {_human_bytes(summary['source_bytes'])} of tensor data coded into "
          f"{_human_bytes(summary['payload_bytes'])} (ratio {summary['ratio']:.3f}); file "
          f"{_human_bytes(summary['container_bytes'])} (header, index, metadata and 4 KiB alignment "
          f"{_human_bytes(overhead)}) in {summary['seconds']:.1f} s ({summary['mb_per_s']:.0f} MB/s)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .conversion import export

    summary = export(args.file, args.to, args.output, threads=args.threads,
                     progress=not args.quiet and sys.stderr.isatty() or args.progress)
    print(f"{summary['output']}: {summary['tensors']} tensors ({_human_bytes(summary['bytes'])}) in "
          f"{len(summary['files'])} file(s), every tensor matching its conversion-time SHA-256")
    return 0


def _cmd_dequantize(args: argparse.Namespace) -> int:
    from .conversion.dequantize import dequantize_gguf

    summary = dequantize_gguf(args.src, args.output, progress=not args.quiet and sys.stderr.isatty() or args.progress)
    unchanged = f", {summary['unchanged']} integer tensors unchanged" if summary["unchanged"] else ""
    print(f"{summary['output']}: {summary['bf16']} BF16 and {summary['f32']} F32 tensors{unchanged}, "
          f"{_human_bytes(summary['bytes'])} in {summary['seconds']:.1f} s; `zipmoe convert {summary['output']} "
          f"-o MODEL.zmoe` converts it")
    return 0


def _cmd_verify_against(args: argparse.Namespace) -> int:
    from .conversion import verify_against

    start = time.perf_counter()
    try:
        result = verify_against(args.file, args.against, threads=args.threads)
    except _core.ZipMoEError as e:
        print(f"FAILED: {e}")
        return 1
    if not result["ok"]:
        print(f"FAILED: {args.file}: first mismatching tensor {result['mismatch']}: {result['message']} "
              f"({result['checked']} tensors matched before it)")
        return 1
    print(f"OK: {args.file}: {result['message']} ({time.perf_counter() - start:.2f} s)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .container import open_container

    if args.against is not None:
        return _cmd_verify_against(args)

    start = time.perf_counter()
    try:
        c = open_container(args.file, io=args.io)
    except _core.ZipMoEError as e:
        print(f"FAILED: {e}")
        return 1
    failures = []
    decoded = 0
    with c:
        for t in c.tensors:
            try:
                c.read(t.name, threads=args.threads)
                decoded += t.raw_bytes
            except _core.ZipMoEError as e:
                failures.append(str(e))
                if len(failures) == 1:
                    print(f"FAILED: {e}", flush=True)
        elapsed = time.perf_counter() - start
        if failures:
            for message in failures[1:20]:
                print(f"FAILED: {message}")
            if len(failures) > 20:
                print(f"... and {len(failures) - 20} more")
            print(f"{c.path}: {len(failures)} of {len(c.tensors)} tensors failed verification "
                  f"(first: {failures[0]})")
            return 1
        print(f"OK: {c.path}: header, index, chunk table and metadata checksums, {2 * len(c.tensors)} chunk "
              f"checksums and {len(c.tensors)} tensors ({_human_bytes(decoded)}) decoded in {elapsed:.2f} s")
    return 0


def _prompt_texts(args: argparse.Namespace) -> list:
    """The text prompts to profile with: one per non-blank line of each --prompts file, and each --text; read
    (and refused, when a file cannot be read or is not UTF-8) before any model is loaded."""
    texts = [_utf8_argument(text, "--text") for text in args.text or []]
    for prompts_file in args.prompts or []:
        content = _checks.read_text(prompts_file, "prompts file")
        lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as universal newlines read it
        texts.extend(line for line in lines if line.strip())
    return texts


def _prompt_ids(args: argparse.Namespace, texts: list, path: str, vocab_size: int, max_tokens: int) -> list:
    """Token id lists to profile with: ``texts`` tokenized with the container's tokenizer, then --random
    prompts of random ids."""
    import random

    prompts = []
    if texts:
        from .tokenizer import Tokenizer

        tokenizer = Tokenizer.from_container(path)
        for text in texts:
            ids = [i for i in tokenizer.encode(text) if 0 <= i < vocab_size][:max_tokens]
            if ids:
                prompts.append(ids)
    rng = random.Random(args.seed)
    for _ in range(args.random or 0):
        prompts.append([rng.randrange(vocab_size) for _ in range(max(1, min(args.random_length, max_tokens)))])
    return prompts


def _cmd_profile(args: argparse.Namespace) -> int:
    import numpy as np

    from .model import load

    if not args.prompts and not args.text and not args.random:
        print("zipmoe profile: give prompts (--prompts FILE, --text TEXT) or --random N", file=sys.stderr)
        return 2
    start = time.perf_counter()
    # everything that can be refused is refused before the work
    _checks.output_file(args.output, "profile")
    texts = _prompt_texts(args)
    model = load(args.file, threads=args.threads, max_context=args.max_context, memory_budget=args.memory_budget,
                 io=args.io, batch=args.batch)
    if not model.info["num_moe_layers"]:
        print(f"zipmoe profile: {args.file} has no MoE layers", file=sys.stderr)
        return 1
    room = max(1, model.max_context - args.generate)
    prompts = _prompt_ids(args, texts, args.file, model.vocab_size, room)
    if not prompts:
        print("zipmoe profile: no prompt has any token", file=sys.stderr)
        return 1
    tokens = 0
    for i, ids in enumerate(prompts):
        logits = model.logits(np.asarray(ids))[-1]
        tokens += len(ids)
        for _ in range(min(args.generate, model.max_context - len(ids))):
            logits = model.eval([int(logits.argmax())])[-1]
            tokens += 1
        if args.progress:
            print(f"\r{i + 1}/{len(prompts)} prompts, {tokens} tokens", end="", file=sys.stderr, flush=True)
    if args.progress:
        print(file=sys.stderr)
    model.save_routing_profile(args.output)
    profile = model.routing_profile()
    k = profile["experts_per_token"]
    shares = []
    for layer in profile["layers"]:
        counts = sorted(layer["counts"], reverse=True)
        routed = sum(counts)
        if routed:
            # share of routings that went to the busiest quarter of the experts
            shares.append(sum(counts[:max(1, len(counts) // 4)]) / routed)
    skew = f", the busiest quarter of the experts takes {100 * sum(shares) / len(shares):.0f}% of the routings" \
        if shares else ""
    print(f"{args.output}: {len(prompts)} prompts, {tokens} tokens through {len(profile['layers'])} MoE layers "
          f"(top-{k} of {profile['num_experts']}){skew}; {time.perf_counter() - start:.1f} s")
    stats = model.stats()
    if stats["streaming"]:
        print(_planner_summary(stats["planner"]))
    return 0


def _planner_summary(planner: dict) -> str:
    """The expert cache planner's speeds and choice (Model.stats()["planner"]) in two lines."""
    def rate(name):
        return f"{planner[name] / 1e9:.2f} GB/s"

    coded = f", into products {rate('coded_decode_throughput')}" if planner["coded_decode_throughput"] else ""
    raw = ""
    if planner["raw_seconds_per_token"]:
        raw = f"; an uncompressed container: {planner['raw_seconds_per_token']:.4f} s per token"
    return (f"machine ({planner['source']}): reads {rate('storage_bandwidth')} + "
            f"{planner['read_latency'] * 1e6:.0f} us per read, decoding {rate('decode_throughput')}{coded}, "
            f"products {rate('matmul_throughput')}, raw planes merged {rate('merge_throughput')}\n"
            f"plan: {planner['choice']}{raw}")


# ------------------------------------------------------------------------------------------- run / chat

def _load_for_generation(args: argparse.Namespace):
    from .model import default_model_path, load

    path = args.model if args.model is not None else default_model_path()
    return load(path, threads=args.threads, max_context=args.max_context, memory_budget=args.memory_budget,
                io=args.io, cache_policy=args.cache_policy, prefetch=not args.no_prefetch, batch=args.batch,
                precision=args.precision)


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    stop = [_utf8_argument(text, "--stop") for text in args.stop or []]
    return {"max_new_tokens": args.n_predict, "temperature": args.temperature, "top_p": args.top_p,
            "top_k": args.top_k, "min_p": args.min_p, "repetition_penalty": args.repeat_penalty,
            "presence_penalty": args.presence_penalty, "seed": args.seed, "stop": stop or None,
            "skip_special_tokens": not args.special}


def _system_messages(args: argparse.Namespace) -> list:
    return [{"role": "system", "content": _utf8_argument(args.system, "--system")}] if args.system else []


def _stream_to_stdout(pieces) -> str:
    text = []
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    return "".join(text)


def _print_timing(model) -> None:
    s = model.last_generation_stats
    if not s:
        return
    print(f"prompt: {s['prompt_tokens']} tokens ({s['reused_prompt_tokens']} reused) in {s['prompt_seconds']:.3f} s, "
          f"{s['prompt_tokens_per_second']:.1f} tokens/s; generation: {s['generated_tokens']} tokens in "
          f"{s['generation_seconds']:.3f} s, {s['generation_tokens_per_second']:.1f} tokens/s; "
          f"finish: {s['finish_reason']}", file=sys.stderr)


def _print_cache_stats(model) -> None:
    stats = model.stats()
    total = stats["total"]
    served = ", ".join(f"{tier} {count}" for tier, count in total["served_from"].items())
    mode = "streamed within the memory budget" if stats["streaming"] else "resident (no memory budget)"
    print(f"experts: {mode}; {total['requests']} requests, {total['hits']} hits, {total['misses']} misses "
          f"(served from: {served}); prefetch hits {total['prefetch_hits']}", file=sys.stderr)
    print(f"storage: {_human_bytes(total['bytes_read'])} read in {total['chunks_read']} chunks "
          f"({total['read_seconds']:.3f} s); decoded {_human_bytes(total['decoded_bytes'])} in "
          f"{total['decode_seconds']:.3f} s; stalled {total['stall_seconds']:.3f} s", file=sys.stderr)
    if stats["streaming"]:
        print(_planner_summary(stats["planner"]), file=sys.stderr)
    memory = model.memory()
    print(f"memory: {_human_bytes(memory['total'])} held (peak {_human_bytes(memory['peak'])}): dense "
          f"{_human_bytes(memory['dense_weights'])}, experts {_human_bytes(memory['experts'])}, KV cache "
          f"{_human_bytes(memory['kv_cache'])}, scratch {_human_bytes(memory['scratch'])}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.prompt is not None:
        prompt = _utf8_argument(args.prompt, "the prompt (-p)")
    elif sys.stdin.isatty():
        print("zipmoe run: give a prompt with -p PROMPT (or pipe it to stdin)", file=sys.stderr)
        return 2
    else:
        try:
            prompt = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as error:
            raise _core.InvalidArgumentError(f"the prompt on stdin is not UTF-8 text "
                                             f"({_checks.describe_bad_utf8(error)})") from None
    options = _sampling_kwargs(args)
    system = _system_messages(args)
    model = _load_for_generation(args)
    if args.chat:
        pieces = model.generate(system + [{"role": "user", "content": prompt}], stream=True, **options)
    else:
        pieces = model.generate(prompt, stream=True, **options)
    try:
        if args.echo and not args.chat:
            sys.stdout.write(prompt)
        _stream_to_stdout(pieces)
        sys.stdout.write("\n")
        sys.stdout.flush()
    finally:
        if args.verbose:
            _print_timing(model)
        if args.stats:
            _print_cache_stats(model)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from . import server
    except ImportError as error:
        print(f"zipmoe serve needs the server extra: pip install 'zipmoe[server]' ({error})", file=sys.stderr)
        return 1
    from .model import MAX_SEQUENCES, LoadOptions, default_model_path, parse_size

    if not 0 <= args.port <= 65535:
        raise _core.InvalidArgumentError(f"--port must be from 0 to 65535 (0: any free port), not {args.port}")
    for name in ("max_sequences", "max_queue"):
        if getattr(args, name) < 1:
            raise _core.InvalidArgumentError(f"--{name.replace('_', '-')} must be at least 1, not "
                                             f"{getattr(args, name)}")
    if args.max_sequences > MAX_SEQUENCES:
        raise _core.InvalidArgumentError(f"--max-sequences must be at most {MAX_SEQUENCES}, not "
                                         f"{args.max_sequences}")
    if not 0 <= args.shutdown_timeout <= 3600:
        raise _core.InvalidArgumentError(f"--shutdown-timeout must be from 0 to 3600 seconds, not "
                                         f"{args.shutdown_timeout}")
    api_key = args.api_key if args.api_key is not None else os.environ.get("ZIPMOE_API_KEY") or None
    if api_key is not None and (not api_key.isprintable() or not api_key.isascii() or " " in api_key):
        raise _core.InvalidArgumentError("--api-key must be printable ASCII without spaces")
    path = _checks.container_path(args.model if args.model is not None else default_model_path())
    # the file and every loading option are checked now, before the server listens and the model loads
    from .container import open_container

    try:
        open_container(path).close()
    except _core.FormatError as error:
        raise _checks.explain_not_a_container(path, error) from None
    LoadOptions(threads=args.threads, max_context=args.max_context, precision=args.precision, batch=args.batch,
                io=args.io, memory_budget=args.memory_budget, cache_policy=args.cache_policy,
                prefetch=not args.no_prefetch).native_arguments()
    model_name = args.model_name or server.default_model_name(path)
    options = server.ServerOptions(model_name=model_name, api_key=api_key, max_sequences=args.max_sequences,
                                   max_queue=args.max_queue, prompt_cache=not args.no_prompt_cache,
                                   memory_budget=parse_size(args.memory_budget) if args.memory_budget else 0)
    args.model = path
    return server.serve(lambda: _load_for_generation(args), options, host=args.host, port=args.port,
                        describe=path, drain_seconds=args.shutdown_timeout, log_requests=args.verbose)


def _chat_lines(interactive: bool):
    """The lines of `zipmoe chat`'s input, without their line ends, as they come; a line that is not UTF-8 text
    is reported on stderr and skipped. On a terminal, lines are read with the standard line editor (arrow keys,
    history) where Python has one (readline); piped input is read as it is."""
    if interactive and sys.stdout.isatty():
        try:
            import readline  # noqa: F401  (input() then edits lines and keeps their history)
        except ImportError:
            pass
        while True:
            try:
                yield input("> ")
            except EOFError:
                print()
                return
            except UnicodeDecodeError as error:
                print(f"(that line is not UTF-8 text ({_checks.describe_bad_utf8(error)}); skipped)",
                      file=sys.stderr)
    number = 0
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        raw = sys.stdin.buffer.readline()
        if not raw:
            return
        number += 1
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            print(f"(line {number} is not UTF-8 text ({_checks.describe_bad_utf8(error)}); skipped)",
                  file=sys.stderr)


def _cmd_chat(args: argparse.Namespace) -> int:
    options = _sampling_kwargs(args)
    system = _system_messages(args)
    model = _load_for_generation(args)
    model.tokenizer  # noqa: B018  (a container without one cannot chat: say so before the template)
    if model.chat_template is None:
        print(f"zipmoe chat: {model.path} has no chat template; use `zipmoe run` for plain text", file=sys.stderr)
        return 1
    conversation = list(system)
    if args.n_predict is not None and args.n_predict < 0:
        raise _core.InvalidArgumentError(f"max_new_tokens (-n) must be >= 0, not {args.n_predict}")
    # bad options fail now, not after the first message
    model.generate(system + [{"role": "user", "content": "x"}], **{**options, "max_new_tokens": 0})
    interactive = sys.stdin.isatty()
    if interactive:
        print("zipmoe chat: type a message; /reset starts over, /exit (or Ctrl-D) quits", file=sys.stderr)
    lines = _chat_lines(interactive)
    while True:
        try:
            message = next(lines, None)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        if message is None:
            break
        if not message.strip():
            continue
        command = message.strip()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            conversation = list(system)
            print("(conversation reset)", file=sys.stderr)
            continue
        conversation.append({"role": "user", "content": message})
        try:
            answer = _stream_to_stdout(model.generate(conversation, stream=True, **options))
        except KeyboardInterrupt:
            # the unfinished answer is dropped with its question; the model is reset and usable
            print("\n(interrupted)", file=sys.stderr)
            conversation.pop()
            continue
        except _core.InvalidArgumentError as error:
            # the options were checked above: what is left is a conversation too long for the context
            print(f"({error}; /reset starts over)", file=sys.stderr)
            conversation.pop()
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
        conversation.append({"role": "assistant", "content": answer})
        if args.verbose:
            _print_timing(model)
    if args.stats:
        _print_cache_stats(model)
    return 0


def _add_io_argument(p, text: str = "how to read the container") -> None:
    """--io: the core's I/O modes (p: a parser or an argument group)."""
    p.add_argument("--io", choices=IO_MODES, default="pread", help=text)


def _add_generation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="the .zmoe model (default: the built-in tiny Shakespeare model)")
    g = p.add_argument_group("sampling (defaults: the model's generation_config.json)")
    g.add_argument("-n", "--n-predict", type=int, default=None, metavar="N", help="most tokens to generate")
    g.add_argument("--temperature", "--temp", type=float, default=None, metavar="T", help="0: greedy")
    g.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling, in (0, 1]; 1: off")
    g.add_argument("--top-k", type=int, default=None, metavar="K", help="the K likeliest tokens; 0: off")
    g.add_argument("--min-p", type=float, default=None, metavar="M",
                   help="drop tokens below M times the likeliest one's probability; 0: off")
    g.add_argument("--repeat-penalty", type=float, default=None, metavar="R", help="repetition penalty; 1: off")
    g.add_argument("--presence-penalty", type=float, default=None, metavar="X", help="presence penalty; 0: off")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="makes sampling reproducible")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop before this text (repeatable)")
    g.add_argument("--system", default=None, metavar="TEXT", help="a system message (chat)")
    g.add_argument("--special", action="store_true", help="show special tokens (chat markers) in the text")
    _add_loading_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="print prompt and generation tokens/s on stderr after each answer")
    g.add_argument("--stats", action="store_true",
                   help="print the expert cache's work (hits per tier, bytes read, decode and stall time) at the end")


def _add_loading_arguments(p: argparse.ArgumentParser) -> None:
    """The options of load() that run, chat and serve share."""
    g = p.add_argument_group("loading")
    g.add_argument("--threads", type=_thread_count, default=None, help="threads (default: every core)")
    g.add_argument("--max-context", type=int, default=None, help="KV cache positions (default: the model's, <= 4096)")
    g.add_argument("--batch", type=int, default=None, metavar="N",
                   help="most prompt tokens per forward step (default 256; fewer need less memory)")
    g.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="stream experts within this budget, e.g. 4GB (default: everything resident)")
    _add_io_argument(g)
    g.add_argument("--cache-policy", choices=CACHE_POLICIES, default="affinity",
                   help="expert cache policy (with --memory-budget)")
    g.add_argument("--no-prefetch", action="store_true", help="no gate-ahead prefetch of the next layer's experts")
    g.add_argument("--precision", choices=PRECISIONS, default="fast",
                   help="exact: the same bits (and, with --seed, the same text) on every CPU and ISA path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipmoe", description="Lossless MoE model serving and compression.")
    parser.add_argument("--version", action="version", version=f"zipmoe {_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sysinfo", help="show the version and the CPU paths this build can use")
    p.set_defaults(func=_cmd_sysinfo)

    p = sub.add_parser("inspect", help="summarize a .zmoe container: metadata, tensors, sizes and ratios")
    p.add_argument("file", help="the .zmoe file")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON report")
    p.add_argument("--no-tensors", action="store_true", help="omit the per-tensor table")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("verify", help="check every checksum of a .zmoe container and decode every tensor "
                                      "(--against SRC: compare with the source model)")
    p.add_argument("file", help="the .zmoe file")
    p.add_argument("--threads", type=_thread_count, default=None, help="decoding threads (default: every core)")
    _add_io_argument(p, "how to read chunks")
    p.add_argument("--against", metavar="SRC", default=None,
                   help="also check that every source tensor decodes bit-identical to SRC (the Hugging Face "
                        "folder or GGUF file it was converted from); names the first mismatching tensor")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("convert", help="convert a Hugging Face folder or a GGUF file into a .zmoe container",
                       description="Converts a Hugging Face model folder (config.json, *.safetensors) or a GGUF "
                                   "file (F32/F16/BF16 tensors; `zipmoe dequantize` makes one of a quantized GGUF) "
                                   "losslessly into a .zmoe container, every routed expert stored on its own. The "
                                   "output appears only when complete, and never over its source.")
    p.add_argument("src", help="a Hugging Face model folder or a .gguf file (--generic: also a .safetensors file)")
    p.add_argument("-o", "--output", required=True, help="the .zmoe file to write")
    p.add_argument("--codec", choices=CODECS, default="auto",
                   help="exponent-plane coder (raw: planes stored uncompressed, the baseline; lz4hc: the ZipMoE "
                        "paper's codec, when built with liblz4); default auto")
    p.add_argument("--threads", type=_thread_count, default=None, help="encoding threads (default: every core)")
    p.add_argument("--generic", action="store_true",
                   help="any checkpoint, not runnable: every tensor under its own name, with no expert roles; "
                        "floats compressed, any other type (integers, masks, quantized blocks) stored as raw bytes")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("export", help="write the exact source files of a converted container back out",
                       description="Rebuilds the source model of a container made by `zipmoe convert`, byte for "
                                   "byte: the same tensor names, dtypes, shapes and bytes, with the config and "
                                   "tokenizer files (safetensors) or the key/value metadata (GGUF). A container "
                                   "exports to the format it was converted from only: a GGUF of a Hugging Face "
                                   "model comes from llama.cpp's convert_hf_to_gguf.py run on the exported folder.")
    p.add_argument("file", help="the .zmoe file")
    p.add_argument("--to", choices=("safetensors", "gguf"), required=True,
                   help="the source's format (a container exports to the format it came from)")
    p.add_argument("output", help="safetensors: a folder that does not exist yet (or is empty), or the file for a "
                                  "container converted from a single .safetensors file; gguf: the .gguf file")
    p.add_argument("--threads", type=_thread_count, default=None, help="decoding threads (default: every core)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("dequantize", help="write a quantized GGUF as the BF16 GGUF that zipmoe converts",
                       description="Widens every quantized tensor of a GGUF (Q4_0, Q8_0, K-quants, ...) and writes "
                                   "the float GGUF of the same model: BF16 weights (rounded to nearest even), F32 "
                                   "norms, biases and routers as llama.cpp writes them, every key/value pair kept. "
                                   "The values are the quantized model's: fine to run it, not to measure "
                                   "compression ratios. The output appears only when complete.")
    p.add_argument("src", help="the quantized .gguf file")
    p.add_argument("output", help="the BF16 .gguf file to write")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_dequantize)

    p = sub.add_parser("profile", help="record how often each MoE layer routes to each expert, for the cache planner",
                       description="Runs prompts through a model and writes its routing profile: per MoE layer, the "
                                   "tokens routed to each expert. zipmoe.load(..., profile=FILE) then places the "
                                   "experts a layer uses most in the fullest cache states. Each prompt is prefilled, "
                                   "then --generate greedy tokens are decoded one at a time.")
    p.add_argument("file", help="the .zmoe file")
    p.add_argument("-o", "--output", required=True, help="the profile JSON file to write")
    p.add_argument("--prompts", action="append", metavar="FILE",
                   help="a UTF-8 text file, one prompt per line (repeatable); uses the container's tokenizer")
    p.add_argument("--text", action="append", metavar="TEXT", help="a prompt (repeatable)")
    p.add_argument("--random", type=int, default=0, metavar="N", help="also N prompts of random token ids")
    p.add_argument("--random-length", type=int, default=64, help="tokens per random prompt (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    p.add_argument("--generate", type=int, default=16, help="greedy tokens decoded after each prompt (default 16)")
    p.add_argument("--threads", type=_thread_count, default=None, help="threads (default: every core)")
    p.add_argument("--max-context", type=int, default=None, help="KV cache positions (default: the model's, <= 4096)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="most prompt tokens per forward step (default 256; fewer need less memory)")
    p.add_argument("--memory-budget", default=None,
                   help="run within this budget, e.g. 4GB (default: all resident); also prints the speeds the "
                        "expert cache measured on this machine and the plan it chose")
    _add_io_argument(p)
    p.add_argument("--progress", action="store_true", help="show progress")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("run", help="generate text from a prompt, streamed to stdout",
                       description="Continues a prompt with a model and streams the text to stdout. With --chat the "
                                   "prompt is a user message rendered with the model's chat template.")
    p.add_argument("-p", "--prompt", default=None, help="the prompt (default: read from stdin)")
    p.add_argument("--chat", action="store_true", help="send the prompt as a chat message (the model's template)")
    p.add_argument("--echo", action="store_true", help="print the prompt before the generated text")
    _add_generation_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("chat", help="an interactive chat with a model (reads messages from stdin)",
                       description="Chats with a model: each stdin line is a user message; the answer streams to "
                                   "stdout. /reset starts a new conversation, /exit or end of input quits.")
    _add_generation_arguments(p)
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("serve", help="serve a model over OpenAI's HTTP API (needs zipmoe[server])",
                       description="Serves a model over OpenAI's HTTP API: /v1/chat/completions and /v1/completions "
                                   "(streamed or not), /v1/models, /health, /metrics (Prometheus), /tokenize and "
                                   "/detokenize. Requests queue for the engine; sampling defaults come from the "
                                   "model's generation_config.json. Ctrl-C or SIGTERM stops it gracefully.")
    p.add_argument("model", nargs="?", default=None,
                   help="the .zmoe model (default: the built-in tiny Shakespeare model)")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    g.add_argument("--model-name", default=None, metavar="NAME",
                   help="the model's name in the API (default: the file name without .zmoe)")
    g.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every request but /health (default: "
                        "$ZIPMOE_API_KEY, else none)")
    g.add_argument("--max-sequences", type=int, default=4, metavar="N",
                   help="sequences decoded together, from 1 to 1024 (default 4)")
    g.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests that may wait beyond those running; more get 503 (default 64)")
    g.add_argument("--shutdown-timeout", type=float, default=3.0, metavar="SECONDS",
                   help="after Ctrl-C or SIGTERM, running requests may finish for this long, then are cancelled "
                        "(default 3)")
    g.add_argument("--no-prompt-cache", action="store_true",
                   help="evaluate every prompt whole, even the part the KV cache holds (a baseline for measurements)")
    g.add_argument("-v", "--verbose", action="store_true", help="log every request")
    _add_loading_arguments(p)
    p.set_defaults(func=_cmd_serve)
    return parser


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings printed as one line each on stderr, as the command line's errors are."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(f"zipmoe: warning: {message}", file=sys.stderr)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _one_line_warnings():
            return args.func(args)
    except _core.ZipMoEError as e:
        print(f"zipmoe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zipmoe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `zipmoe run ... | head`); point stdout at /dev/null so that
        # the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        # what the operating system refused and no check foresaw: still one line, not a traceback
        print(f"zipmoe: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

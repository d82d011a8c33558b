"""Running a model stored in a .zmoe container: :func:`load` and :class:`Model`.

    import zipmoe
    model = zipmoe.load("qwen.zmoe")             # every weight decoded into RAM
    logits = model.logits([1, 2, 3])             # float32 (3, vocab), a fresh sequence
    step = model.eval([4])                       # float32 (1, vocab), appended (KV cache kept)
    model.reset()

    small = zipmoe.load("qwen.zmoe", memory_budget="4GB")   # experts streamed within 4 GB in all
    small.stats()["total"]                       # hits per tier, bytes read, decode and stall time

With a memory budget the experts are streamed from the container through a
tiered cache (docs/CACHE.md); logits are bit-identical to the resident run.

Text generation (the tokenizer and chat template come from the container's metadata):

    print(model.generate("Once upon a time", max_new_tokens=50, temperature=0.7, seed=1))
    for piece in model.generate([{"role": "user", "content": "Hi!"}], stream=True):
        print(piece, end="", flush=True)
    model.last_generation_stats                  # prompt/generated tokens, seconds, finish_reason
    model = zipmoe.load()                        # the built-in default model (default_model_path())

The engine is native (cpp/model); calls release the GIL. Results are bit-identical
for any thread count; with precision="exact" also on every ISA path and machine.
See include/zipmoe/model.h for the guarantees.

Many sequences: ``model.new_context(max_context=None, max_sequences=1)`` returns a
:class:`Context` (its own KV caches and token histories over the model's weights,
expert cache and budget); the model's logits(), eval(), reset() and position use
its default context.

Threads: a model may be used from many threads at once; a context by one use at a
time. logits(), eval(), reset() and generate() take their context for their whole
run, a streamed generate() from its first piece until it is read to the end or
closed. A call that finds the context taken raises BusyError instead of waiting or
mixing two sequences. Model.generate() runs on a context of its own when the
default one is taken, so generations from several threads and interleaved streams
each give the text they give alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import warnings
from typing import Sequence

import numpy as np

from . import _core
from . import _checks
from ._names import CACHE_POLICIES, EXPERT_TIERS, FLOAT_DTYPES, PRECISIONS, check_choice
from ._threads import default_threads

DEFAULT_MODEL_NAME = "zipmoe-tiny-shakespeare.zmoe"
# Sampling when the model has no generation_config.json: llama.cpp's defaults.
FALLBACK_SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.0}
DEFAULT_MAX_NEW_TOKENS = 256
GENERATE_OPTIONS = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                    "presence_penalty", "frequency_penalty", "penalty_last_n", "seed", "stop", "stream",
                    "add_special_tokens", "skip_special_tokens", "logprobs")


def default_model_path() -> str:
    """The path of the model zipmoe ships with (used by ``load()``, ``zipmoe run`` and
    ``zipmoe chat`` without a model): a tiny Qwen3-MoE-style model trained on
    Shakespeare, in the package's data folder. Raises IoError when the package was
    installed without it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", DEFAULT_MODEL_NAME)
    if not os.path.isfile(path):
        raise _core.IoError(f"the default model is missing ({path}): this zipmoe package was installed without its "
                            f"default model; pass the path of a .zmoe model (zipmoe convert makes one)")
    return path

# ModelOptions::io_threads' range (cpp/model/model.cpp checks it too).
MAX_IO_THREADS = 64
# Sequences of one context at most (zipmoe::kMaxSequences).
MAX_SEQUENCES = _core.MAX_SEQUENCES
# Sequences Model.generate() runs at once for a list of prompts (the rest queued); a context of its own with
# more (Model.new_context(max_sequences=...).generate(prompts)) runs more.
DEFAULT_BATCH_SEQUENCES = 16
KV_CACHE_DTYPES = FLOAT_DTYPES  # the KV cache may hold any float element type
# The ZipMoE paper's configuration: decoded experts and sign/mantissa planes only.
PAPER_TIERS = ("full", "sm")

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20, "mib": 1 << 20,
               "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9, "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def parse_size(value) -> int:
    """Bytes from an int or a string such as "4GB", "1.5 GiB", "512M", "300MB".

    KB/MB/GB/TB are decimal (10^3...), K/M/G/T and KiB/MiB/GiB/TiB binary (2^10...),
    as memory cgroups read them ("4G" is 4 GiB).
    """
    if isinstance(value, bool):
        raise _core.InvalidArgumentError(f"a size must be a number of bytes or a string like '4GB', not {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise _core.InvalidArgumentError(f"a size cannot be negative: {value}")
        return _size_in_range(int(value), value)
    if isinstance(value, float):
        if not value >= 0 or value != value or value == float("inf"):
            raise _core.InvalidArgumentError(f"a size must be finite and >= 0, not {value!r}")
        return _size_in_range(int(value), value)
    if not isinstance(value, str):
        raise _core.InvalidArgumentError(f"a size must be a number of bytes or a string like '4GB', not {value!r}")
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        amount = None
    if amount is None or unit not in _SIZE_UNITS or not amount >= 0 or amount == float("inf"):
        raise _core.InvalidArgumentError(f"cannot read the size {value!r} (examples: 4GB, 1.5GiB, 512M, 300000000)")
    return _size_in_range(int(amount * _SIZE_UNITS[unit]), value)


# Sizes are 64-bit in the engine; anything near this is no real machine's memory anyway.
MAX_SIZE = _checks.INT64_MAX


def _size_in_range(size: int, given) -> int:
    if size > MAX_SIZE:
        raise _core.InvalidArgumentError(f"the size {given!r} is too large (at most {MAX_SIZE} bytes, 8 EiB)")
    return size


def _token_array(token_ids) -> np.ndarray:
    """token_ids as a contiguous 1-D int64 array (InvalidArgumentError for anything else)."""
    try:
        array = np.asarray(token_ids)
    except (TypeError, ValueError) as error:
        raise _core.InvalidArgumentError(f"token_ids must be a sequence of integers: {error}") from None
    if array.ndim != 1:
        raise _core.InvalidArgumentError(f"token_ids must be one-dimensional, not of shape {array.shape}")
    if array.size == 0:
        raise _core.InvalidArgumentError("token_ids is empty")
    if array.dtype.kind not in "iu":
        raise _core.InvalidArgumentError(f"token_ids must be integers, not {array.dtype}")
    if array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
        raise _core.InvalidArgumentError(f"token id {int(array.max())} is out of range")
    return np.ascontiguousarray(array, dtype=np.int64)


class Context:
    """Sequences over a model's weights, made by :meth:`Model.new_context` (or a model's default context, which
    ``Model.logits``/``eval``/``reset`` use): each sequence has its own KV cache and token history, and every
    context shares the model's weights, expert cache and budget.

    logits(), eval(), reset() and generate() take the context for their whole run (a streamed generate() from its
    first piece until it is read to the end or closed): a call that finds it taken, from another thread or while a
    stream holds it, raises BusyError instead of waiting or mixing two uses. position, tokens() and the sizes may
    be read at any time. Another context (``model.new_context()``) runs beside it.
    """

    def __init__(self, model: "Model", native: _core.Context):
        self._model = model
        self._native = native
        # Who holds the context between native calls (a streamed generation); taken without waiting.
        self._use_lock = threading.Lock()
        self._user: str | None = None
        self._last_generation_stats = None
        # Asked once per generated token (None: only Ctrl-C is checked); returning False cancels the generation.
        self._keep_going = None

    # ---- sequences -----------------------------------------------------------------------------
    def logits(self, token_ids, sequence: int = 0) -> np.ndarray:
        """Logits of every token of a fresh sequence: float32 array (len(token_ids), vocab).

        The sequence (KV cache) then holds these tokens, so eval() continues it.
        """
        tokens = _token_array(token_ids)
        sequence = self._sequence_index(sequence)
        with self._use("a logits() call in another thread"):
            return self._native.logits(tokens, sequence)

    def eval(self, token_ids, last_only: bool = False, sequence: int = 0) -> np.ndarray:
        """Appends tokens to a sequence and returns their logits, float32 (len(token_ids), vocab); with
        last_only, only the last token's (1, vocab)."""
        tokens = _token_array(token_ids)
        last_only = _checks.flag("last_only", last_only)
        sequence = self._sequence_index(sequence)
        with self._use("an eval() call in another thread"):
            return self._native.eval(tokens, last_only, sequence)

    def reset(self, sequence: int | None = None) -> None:
        """Forgets a sequence (None: every one)."""
        if sequence is not None:
            sequence = self._sequence_index(sequence)
        with self._use("a reset() call in another thread"):
            self._native.reset(sequence)

    @property
    def position(self) -> int:
        """Tokens sequence 0 holds."""
        return self._native.position(0)

    def tokens(self, sequence: int = 0) -> list:
        """The token ids a sequence holds (what its KV cache was filled from)."""
        return self._native.tokens(self._sequence_index(sequence))

    @property
    def max_context(self) -> int:
        """Positions of each sequence."""
        return self._native.max_context

    @property
    def max_sequences(self) -> int:
        return self._native.max_sequences

    @property
    def memory_bytes(self) -> int:
        """Bytes held for the context (KV caches and logits rows), part of the model's memory()."""
        return self._native.memory_bytes

    @property
    def model(self) -> "Model":
        return self._model

    def _sequence_index(self, sequence) -> int:
        return _checks.integer("sequence", sequence, 0, self._native.max_sequences - 1)

    @contextlib.contextmanager
    def _use(self, user: str):
        """Holds the context for ``user`` (what it is, for the message another caller gets) until the block
        ends; BusyError at once when someone else holds it. Not a waiting lock: a streamed generation holds it
        between its pieces, so the other user may be this very thread."""
        if not self._use_lock.acquire(blocking=False):
            raise _core.BusyError(
                f"{self._model.path}: the context is in use by {self._user or 'another call'}. A context runs one "
                f"use at a time: use it from one thread at a time, and read a streamed generate() to the end or "
                f"close() it before the next call (another context, Model.new_context(), runs beside it)")
        self._user = user
        try:
            yield
        finally:
            self._user = None
            self._use_lock.release()

    # ---- generation ----------------------------------------------------------------------------
    @property
    def last_generation_stats(self):
        """What the last generate() on this context did (see Model.last_generation_stats)."""
        return _copy_stats(self._last_generation_stats)

    def generate(self, prompt, **options):
        """Model.generate() on this context, with the same options: see there. One prompt runs on sequence 0; a
        list of prompts runs as a batch over the context's sequences (max_sequences at once, the rest queued)."""
        prompts = _batch_prompts(prompt)
        if prompts is not None:
            requests = [self._model._generation_request(p, options) for p in prompts]
            _same_seed(requests)
            stats = [r.new_stats() for r in requests]
            self._last_generation_stats = stats
            pieces = self._batch_pieces(requests, stats)
            if requests[0].stream:
                return pieces
            texts = [""] * len(requests)
            for index, piece in pieces:
                texts[index] += piece
            return texts
        request = self._model._generation_request(prompt, options)
        stats = request.new_stats()
        self._last_generation_stats = stats
        pieces = self._generate_pieces(request, stats)
        if request.stream:
            return pieces
        return "".join(pieces)

    def batch_scheduler(self, reuse_prefixes: bool = True) -> "_core.BatchScheduler":
        """The native batch scheduler on this context, for a caller that adds and steps generations itself (the
        server's engine). It holds the context until its close(): other uses raise BusyError meanwhile.
        reuse_prefixes=False empties a sequence when a generation takes it (no prompt caching)."""
        return _core.BatchScheduler(self._native, reuse_prefixes=reuse_prefixes)

    def _batch_pieces(self, requests, stats):
        """(index, piece) pairs of a batch, stepped by the native scheduler (cpp/runtime/generate.cpp); holds the
        context throughout. Python's Ctrl-C handler runs between steps; an interrupted batch cancels the rest."""
        with self._use(_generation_user(requests[0])):
            batch = _core.BatchScheduler(self._native)
            try:
                for r in requests:
                    batch.add(np.asarray(r.prompt_ids, dtype=np.int64), seed=r.seed, max_new_tokens=r.max_new_tokens,
                              stop=r.stops, skip_special_tokens=r.skip_special_tokens, logprobs=r.logprobs,
                              **r.sampling)
                stream = requests[0].stream
                while (pieces := batch.step()) is not None:
                    if stream:  # a stream's statistics stay current (a joined batch's are filled in at its end)
                        _add_batch_progress(batch, requests, stats)
                    yield from pieces
                    if self._keep_going is not None and not self._keep_going():
                        break
            except BaseException as error:
                reason = "error" if isinstance(error, Exception) else "interrupted"
                batch.close()
                _add_batch_progress(batch, requests, stats)
                for s in stats:
                    if s["finish_reason"] in (None, "cancelled"):
                        s["finish_reason"] = reason
                raise
            batch.close()
            _add_batch_progress(batch, requests, stats)

    def _generate_pieces(self, request, stats):
        """The text pieces of one generation, holding the context from the first piece to the last (or until the
        generator is closed)."""
        with self._use(_generation_user(request)):
            yield from self._generation(request, stats)

    def _generation(self, request, stats):
        """The pieces of one generation, run by the native loop (cpp/runtime/generate.cpp) on sequence 0: the GIL
        is released while it runs, taken back once per token to let Python's Ctrl-C handler run (and to ask
        ``_keep_going``, when set). An interrupted or failed generation leaves the sequence empty."""
        native = _core.Generation(self._native, np.asarray(request.prompt_ids, dtype=np.int64), seed=request.seed,
                                  max_new_tokens=request.max_new_tokens, stop=request.stops,
                                  skip_special_tokens=request.skip_special_tokens, logprobs=request.logprobs,
                                  sequence=0, **request.sampling)
        try:
            if request.stream:
                while (piece := native.next(self._keep_going)) is not None:
                    _add_progress(stats, native.stats_since, request)
                    yield piece
            else:
                text = native.run(self._keep_going)
                _add_progress(stats, native.stats_since, request)
                if text:
                    yield text
            _add_progress(stats, native.stats_since, request)
        except BaseException as error:
            _add_progress(stats, native.stats_since, request)
            stats["finish_reason"] = "error" if isinstance(error, Exception) else "interrupted"
            raise
        finally:
            native.close()

    def __repr__(self) -> str:
        return (f"zipmoe.Context(max_context={self.max_context}, max_sequences={self.max_sequences}, "
                f"model={self._model.path!r})")


def _copy_stats(stats):
    """A copy of last_generation_stats: None, one dict, or a list of dicts (a batch)."""
    if stats is None:
        return None
    if isinstance(stats, list):
        return [dict(s) for s in stats]
    return dict(stats)


def _add_batch_progress(batch, requests, stats) -> None:
    """_add_progress for every generation of a batch."""
    for i, (request, s) in enumerate(zip(requests, stats)):
        _add_progress(s, lambda first, i=i: batch.stats_since(i, first), request)


def _add_progress(stats: dict, since, request) -> None:
    """A running generation's statistics: the counters, and the ids (and logprobs) sampled since the last look
    (``since(first)``: the native statistics with those from index ``first`` on)."""
    native = since(len(stats["token_ids"]))
    stats["token_ids"].extend(native.pop("token_ids"))
    new_logprobs = native.pop("logprobs")
    stats.update(native)
    if request.logprobs is not None:
        stats["logprobs"].extend(new_logprobs)


def _batch_prompts(prompt):
    """The prompts of a batch (a list whose elements are strings, lists of chat messages or lists of token ids),
    or None for a single prompt (a string, a list of messages, a list of ids). InvalidArgumentError for an empty
    list and for a list mixing prompts with ids or messages."""
    if isinstance(prompt, np.ndarray) or not isinstance(prompt, (list, tuple)):
        return None
    if not prompt:
        raise _core.InvalidArgumentError("the prompt is an empty list: give a string, a list of messages, a list of "
                                         "token ids, or a non-empty list of prompts")
    nested = [isinstance(p, (str, list, tuple, np.ndarray)) for p in prompt]
    if not any(nested):
        return None
    if not all(nested):
        raise _core.InvalidArgumentError("a list of prompts may hold only prompts (strings, lists of messages, lists "
                                         "of token ids), not token ids or messages beside them")
    return list(prompt)


def _same_seed(requests) -> None:
    """Every prompt of a batch with the seed of the first (drawn at random when none was given), so that each
    gives the text it gives alone with that seed."""
    for r in requests[1:]:
        r.seed = requests[0].seed


def _generation_user(request) -> str:
    """Who holds a context during a generation, for the BusyError message another caller gets."""
    if request.stream:
        return "a streamed generate() not yet read to the end or closed"
    return "a generate() call in another thread"


@dataclasses.dataclass
class _GenerationRequest:
    """One generate() call's arguments, checked and completed with the model's defaults."""

    prompt_ids: list
    sampling: dict
    seed: int
    max_new_tokens: int
    stops: list
    stream: bool
    skip_special_tokens: bool
    logprobs: int | None = None  # alternatives reported per token (None: no log-probabilities)

    def new_stats(self) -> dict:
        return {"prompt_tokens": len(self.prompt_ids), "reused_prompt_tokens": 0, "prompt_seconds": 0.0,
                "prompt_tokens_per_second": 0.0, "generated_tokens": 0, "generation_seconds": 0.0,
                "generation_tokens_per_second": 0.0, "finish_reason": None, "seed": self.seed, "token_ids": [],
                "logprobs": None if self.logprobs is None else []}


class Model:
    """A model loaded by :func:`load`: logits of token sequences, with a KV cache, and text generation.

    Not meant to be constructed directly. The sequence methods (logits(), eval(), reset(), position) use the
    model's default context (see :class:`Context`): one use at a time, BusyError for a second. generate() runs on
    the default context when it is free and on a context of its own otherwise, so generations from several
    threads, or interleaved streams, each give the text they give alone. Properties, stats(), memory(),
    new_context() and the tokenizer may be used from any thread at any time.
    """

    def __init__(self, native: _core.Model):
        self._native = native
        self._default = Context(self, native.default_context)
        self._config = None
        self._metadata = None
        self._tokenizer = None
        self._chat_template = None
        self._last_generation_stats = None

    # ---- contexts --------------------------------------------------------------------------------
    def new_context(self, max_context: int | None = None, max_sequences: int = 1) -> Context:
        """A new :class:`Context` over this model's weights: ``max_sequences`` sequences (1 to 1024) of
        ``max_context`` positions each (None: the model's max_context, also the most).

        Under a memory budget the context's KV caches and logits rows come out of the expert cache's share (the
        cache shrinks to make room); BudgetError, stating what the context needs and what the budget has left,
        when not even the cache's working set would leave room (nothing changes then). Freeing the context (when
        it is no longer referenced) gives the memory back to the cache.
        """
        max_context = _checks.integer("max_context", max_context, 1, _checks.INT64_MAX,
                                      none_means="the model's max_context")
        max_sequences = _checks.integer("max_sequences", max_sequences, 1, MAX_SEQUENCES)
        native = self._native.new_context(0 if max_context is None else max_context, max_sequences)
        return Context(self, native)

    @property
    def default_context(self) -> Context:
        """The context logits(), eval(), reset() and position use (one sequence of max_context positions)."""
        return self._default

    def logits(self, token_ids) -> np.ndarray:
        """Logits of every token of a fresh sequence: float32 array (len(token_ids), vocab).

        The sequence (KV cache) then holds these tokens, so eval() continues it.
        """
        return self._default.logits(token_ids)

    def eval(self, token_ids, last_only: bool = False) -> np.ndarray:
        """Appends tokens to the current sequence and returns their logits, float32
        (len(token_ids), vocab); with last_only, only the last token's (1, vocab)."""
        return self._default.eval(token_ids, last_only)

    def reset(self) -> None:
        """Forgets the current sequence."""
        self._default.reset()

    @property
    def position(self) -> int:
        """Tokens in the current sequence (of the default context)."""
        return self._default.position

    @property
    def config(self) -> dict:
        """The model's HF-style config from the container metadata (a copy)."""
        if self._config is None:
            self._config = json.loads(self._native.config_json)
        return json.loads(json.dumps(self._config))

    @property
    def info(self) -> dict:
        """What the engine read: architecture, sizes, experts, max_context."""
        return self._native.info

    @property
    def architecture(self) -> str:
        return self._native.info["architecture"]

    @property
    def vocab_size(self) -> int:
        return self._native.info["vocab_size"]

    @property
    def max_context(self) -> int:
        return self._native.info["max_context"]

    @property
    def threads(self) -> int:
        return self._native.num_threads

    @property
    def isa(self) -> str:
        return self._native.isa

    @property
    def path(self) -> str:
        return self._native.path

    def memory(self) -> dict:
        """Bytes held by category: dense_weights, experts, kv_cache, scratch, total (and peak)."""
        return self._native.memory()

    def stats(self) -> dict:
        """What the expert cache did since load (or reset_stats()).

        ``total`` and ``layers`` (one dict per MoE layer) hold: requests (experts asked
        for), hits, misses, served_from (requests by the state the expert was in:
        full, compressed, sm, e, absent = misses), prefetch_hits, bytes_read
        (from storage, prefetches included), prefetch_bytes_read, chunks_read,
        read_seconds (the I/O thread busy reading them), decoded_bytes,
        decode_seconds, stall_seconds (the forward pass waiting for experts). Also: experts_in / tier_bytes / tier_capacity by state,
        working_set_bytes, prefetches, prefetches_used, prefetches_cancelled,
        admissions, evictions, steps, the storage_bandwidth and decode_throughput
        the planner used, and streaming (False: no budget, experts resident).
        Every byte read is in ``total["bytes_read"]`` or ``load_bytes_read``; of the former,
        unused_bytes_read (wrong guesses, cancelled fetches) and reread_bytes (read again), and of the
        decoded bytes unused_decoded_bytes and fused_decoded_bytes (COMPRESSED experts decoded into their
        products); also replan_dropped_bytes, io_busy_seconds and forward_seconds (docs/CACHE.md
        "Statistics"; ZIPMOE_TIMELINE=N keeps the first N intervals in ``timeline``).

        ``planner``: what the planner measured and chose: source ("measured" at this load, "cached" from an
        earlier load on this machine, "given"), storage_bandwidth, read_latency, decode_throughput,
        coded_decode_throughput (COMPRESSED experts decoded into their products; 0: decoded whole),
        matmul_throughput, merge_throughput, other_cpu_seconds, seconds_per_token, raw_seconds_per_token
        (the same budget over an uncompressed container), compressed_slower_than_raw, choice (one line) and
        warning (when slower than raw; load() also warns once).
        """
        return self._native.stats()

    def reset_stats(self) -> None:
        """Zeroes the counters of stats() (the cache's contents stay)."""
        self._native.reset_stats()

    def routing_profile(self) -> dict:
        """Tokens routed to each expert of each MoE layer since load, as a routing
        profile (the document ``zipmoe profile`` writes and ``load(profile=...)`` reads)."""
        return json.loads(self._native.routing_profile_json())

    def save_routing_profile(self, path) -> None:
        """Writes routing_profile() as JSON to ``path``, atomically (IoError when it cannot be written)."""
        _checks.write_text(path, self._native.routing_profile_json(), "routing profile")

    # ---- text ----------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """The container's metadata (docs/FORMAT.md "Metadata"), read once."""
        if self._metadata is None:
            from .container import open_container

            with open_container(self.path) as container:
                self._metadata = container.metadata
        return self._metadata

    @property
    def tokenizer(self):
        """The model's :class:`zipmoe.Tokenizer`, built from the container's metadata (the one the native
        generation loop uses)."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            self._tokenizer = Tokenizer(self._native.tokenizer)
        return self._tokenizer

    @property
    def generation_config(self) -> dict:
        """The model's generation_config.json (a copy; {} when it has none)."""
        config = self.metadata.get("generation_config")
        return json.loads(json.dumps(config)) if isinstance(config, dict) else {}

    @property
    def chat_template(self):
        """The model's :class:`zipmoe.chat_template.ChatTemplate`, or None when it has none."""
        if self._chat_template is None:
            source = self.metadata.get("chat_template")
            if not isinstance(source, str) or not source:
                return None
            from .chat_template import ChatTemplate, SPECIAL_TOKEN_NAMES, special_tokens_from_config

            record = self.metadata.get("tokenizer") or {}
            special = special_tokens_from_config(record.get("tokenizer_config"))
            if not special:
                # GGUF: the named tokens by id, as the vocabulary writes them
                tokenizer = self.tokenizer
                for name, token_id in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id),
                                       ("unk_token", tokenizer.unk_id), ("pad_token", tokenizer.pad_id)):
                    if token_id is not None and name in SPECIAL_TOKEN_NAMES:
                        special[name] = tokenizer.id_to_token(token_id)
            self._chat_template = ChatTemplate(source, special)
        return self._chat_template

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, **kwargs) -> str:
        """The prompt text of ``messages`` rendered with the model's chat template (as transformers'
        ``apply_chat_template(..., tokenize=False)``); kwargs are template variables (tools=...,
        enable_thinking=False, ...). UnsupportedModelError when the model has no template."""
        template = self.chat_template
        if template is None:
            raise _core.UnsupportedModelError(f"{self.path}: the model has no chat template; give generate() "
                                              f"a text prompt instead of messages")
        return template.render(messages, add_generation_prompt=add_generation_prompt, **kwargs)

    def tokenize(self, text, add_special_tokens: bool = True) -> list:
        """Token ids of ``text`` (with the BOS/EOS the vocabulary asks for when add_special_tokens). A str must
        be valid Unicode (InvalidArgumentError names a lone surrogate); bytes are taken as they are."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def detokenize(self, token_ids, skip_special_tokens: bool = False) -> str:
        """The text of ``token_ids`` (InvalidArgumentError for an id outside the vocabulary)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    @property
    def eos_token_ids(self) -> list:
        """Every id that ends a generation: generation_config's eos_token_id(s), the config's and the tokenizer's."""
        return self._native.eos_token_ids

    @property
    def last_generation_stats(self):
        """What the last generate() did (None before the first): prompt_tokens, reused_prompt_tokens
        (already in the KV cache), prompt_seconds, prompt_tokens_per_second, generated_tokens,
        generation_seconds, generation_tokens_per_second, finish_reason ("eos", "stop" (a stop
        string), "length" (max_new_tokens), "context" (the KV cache is full), "interrupted" (Ctrl-C, or
        a stream closed early), "error"),
        seed, token_ids (the sampled ids, an ending EOS included), and logprobs (None unless
        generate() was given logprobs=N: per sampled id, (its log-probability, [(id, log-probability)
        of the N likeliest])). A streaming generate() updates it as it goes. After a list of prompts,
        a list of such dicts in the prompts' order (filled in when the batch ends)."""
        return _copy_stats(self._last_generation_stats)

    def generate(self, prompt, max_new_tokens=None, temperature=None, top_p=None, top_k=None, min_p=None,
                 repetition_penalty=None, presence_penalty=None, seed=None, stop=None, stream: bool = False,
                 add_special_tokens=None, skip_special_tokens: bool = True, penalty_last_n: int = 0,
                 frequency_penalty=None, logprobs=None, **unknown):
        """Continues ``prompt`` and returns the new text (or, with stream=True, a generator of text pieces
        that join to it; every piece is whole UTF-8 characters).

        prompt: a string (tokenized with the BOS/EOS the vocabulary asks for, unless
            add_special_tokens=False), a list of {"role", "content"} messages (rendered with the
            model's chat template and add_generation_prompt=True; special tokens in the rendered
            text are parsed, as transformers does), or a list of token ids.
        max_new_tokens: most tokens to sample (default: generation_config's max_new_tokens, else 256);
            generation also ends at an EOS id (eos_token_ids), at a stop string, or when the KV
            cache (max_context) is full.
        temperature (0: greedy), top_k (0: off), top_p (1: off), min_p (0: off),
        repetition_penalty (1: off), presence_penalty (0: off), frequency_penalty (0: off; times the
            token's occurrences), penalty_last_n (tokens the
            penalties look back at; 0: prompt and output, as transformers): see
            include/zipmoe/sampler.h for their exact semantics and order (transformers' order).
            Defaults: generation_config.json as transformers reads it (do_sample false or absent:
            greedy; top_k 50 unless given), or without one llama.cpp's: temperature 0.8, top_k 40,
            top_p 0.95, min_p 0.05.
        seed: makes sampling reproducible (any int in [0, 2^64)); None: a random seed, reported in
            last_generation_stats.
        stop: a string or a list of strings; the text ends before the first one generated (it is
            not included), and streaming never emits part of one.
        skip_special_tokens: leave special (control) tokens such as chat markers out of the text, as
            transformers' text-generation pipeline does (default); False shows them.
        logprobs: None (off) or N >= 0: record each sampled token's log-probability under the model's
            distribution (the softmax of the raw logits, before penalties and temperature) and the N
            likeliest alternatives' in last_generation_stats["logprobs"].

        The generation loop runs in the core (include/zipmoe/generate.h) with the GIL released; Ctrl-C
        (KeyboardInterrupt) between tokens stops the generation and leaves the model usable (its
        sequence is reset).
        The KV cache keeps the sequence, so a following prompt that extends it (the next chat turn)
        only evaluates the new tokens.
        One use of the model at a time: a streamed generation holds the model from its first piece
        until it is read to the end or closed (or dropped); any other logits/eval/reset/generate
        meanwhile, from this thread or another, raises BusyError (never a mix of two sequences).
        Raises InvalidArgumentError for bad arguments (before any work is done), FormatError when
        a default taken from the model's generation_config.json is invalid.
        """
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                       min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                       seed=seed, stop=stop, stream=stream, add_special_tokens=add_special_tokens,
                       skip_special_tokens=skip_special_tokens, penalty_last_n=penalty_last_n,
                       frequency_penalty=frequency_penalty, logprobs=logprobs, **unknown)
        prompts = _batch_prompts(prompt)
        if prompts is not None:
            requests = [self._generation_request(p, options) for p in prompts]
            reach = max(len(r.prompt_ids) + max(r.max_new_tokens, 1) for r in requests)
            context = self.new_context(max_context=min(self.max_context, reach),
                                       max_sequences=min(len(requests), DEFAULT_BATCH_SEQUENCES))
            out = context.generate(prompts, **options)
            self._last_generation_stats = context._last_generation_stats
            return out
        request = self._generation_request(prompt, options)
        stats = request.new_stats()
        self._last_generation_stats = stats
        pieces = self._pieces_on_a_free_context(request, stats)
        if request.stream:
            return pieces
        return "".join(pieces)

    def _pieces_on_a_free_context(self, request, stats):
        """The pieces of a generation on the default context when nobody holds it, else on a context of its own
        (freed at the end)."""
        user = _generation_user(request)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._default._use(user))
                context = self._default
            except _core.BusyError:
                # sized for this generation alone: the positions it can reach (its finish reason stays the same)
                reach = min(self.max_context, len(request.prompt_ids) + max(request.max_new_tokens, 1))
                context = self.new_context(max_context=reach)
                held.enter_context(context._use(user))
            context._last_generation_stats = stats
            yield from context._generation(request, stats)

    def _generation_request(self, prompt, options: dict) -> _GenerationRequest:
        """generate()'s arguments checked (InvalidArgumentError) and completed with the model's defaults."""
        unknown = sorted(set(options) - set(GENERATE_OPTIONS))
        if unknown:
            raise _core.InvalidArgumentError(f"generate() got unknown option(s) {', '.join(unknown)}; "
                                             f"known: {', '.join(GENERATE_OPTIONS)}")
        get = options.get
        sampling = self._sampling_options(get("temperature"), get("top_k"), get("top_p"), get("min_p"),
                                          get("repetition_penalty"), get("presence_penalty"),
                                          get("penalty_last_n", 0), get("frequency_penalty"))
        logprobs = _checks.integer("logprobs (alternatives reported per token)", get("logprobs"), 0,
                                   _checks.INT32_MAX, none_means="off")
        seed = get("seed")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise _core.InvalidArgumentError(f"seed must be an integer in [0, 2^64) or None, not {seed!r}")
        stops = _stop_strings(get("stop"))
        stream = _checks.flag("stream", get("stream", False))
        add_special_tokens = get("add_special_tokens")
        if add_special_tokens is not None:
            add_special_tokens = _checks.flag("add_special_tokens", add_special_tokens)
        skip_special_tokens = _checks.flag("skip_special_tokens", get("skip_special_tokens", True))
        prompt_ids = self._prompt_ids(prompt, add_special_tokens)
        if len(prompt_ids) >= self.max_context:
            raise _core.InvalidArgumentError(f"the prompt has {len(prompt_ids)} tokens; the model's context holds "
                                             f"{self.max_context} (load(max_context=...) sets it)")
        max_new_tokens = get("max_new_tokens")
        if max_new_tokens is None:
            max_new_tokens = self._default_max_new_tokens(len(prompt_ids))
        elif isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or \
                max_new_tokens < 0:
            raise _core.InvalidArgumentError(f"max_new_tokens must be an integer >= 0, not {max_new_tokens!r}")
        return _GenerationRequest(prompt_ids=prompt_ids, sampling=sampling, seed=int(seed),
                                  max_new_tokens=int(max_new_tokens), stops=stops, stream=stream,
                                  skip_special_tokens=skip_special_tokens, logprobs=logprobs)

    def _sampling_options(self, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                          penalty_last_n, frequency_penalty=None) -> dict:
        config = self.generation_config
        if config:
            sampling = bool(config.get("do_sample"))
            defaults = {"temperature": _config_number(config, "temperature", 1.0) if sampling else 0.0,
                        "top_k": _config_number(config, "top_k", 50), "top_p": _config_number(config, "top_p", 1.0),
                        "min_p": _config_number(config, "min_p", 0.0),
                        "repetition_penalty": _config_number(config, "repetition_penalty", 1.0)}
        else:
            defaults = dict(FALLBACK_SAMPLING)
        given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
                 "repetition_penalty": repetition_penalty}
        options = {}
        for name, value in given.items():
            if value is not None:
                options[name] = _sampling_value(name, value)
                continue
            try:
                options[name] = _sampling_value(name, defaults[name])
            except _core.InvalidArgumentError as error:
                # not the caller's mistake: the model came with it
                raise _core.FormatError(
                    f"{self.path}: the model's generation_config.json is invalid: {error}; give {name} to "
                    f"generate() ({_SAMPLING_FLAGS[name]} on the command line) to override it") from None
        options["presence_penalty"] = _checks.number("presence_penalty", 0.0 if presence_penalty is None
                                                     else presence_penalty)
        options["frequency_penalty"] = _checks.number("frequency_penalty", 0.0 if frequency_penalty is None
                                                      else frequency_penalty)
        options["penalty_last_n"] = _checks.integer("penalty_last_n (0: all)", penalty_last_n, 0, _checks.INT64_MAX)
        return options

    def _default_max_new_tokens(self, prompt_tokens: int) -> int:
        config = self.generation_config
        value = config.get("max_new_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        value = config.get("max_length")
        if isinstance(value, int) and not isinstance(value, bool) and value > 20:
            # transformers' max_length counts the prompt; its default (20) is too short to mean anything here
            return max(0, value - prompt_tokens)
        return DEFAULT_MAX_NEW_TOKENS

    def _prompt_ids(self, prompt, add_special_tokens) -> list:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True if add_special_tokens is None
                                        else bool(add_special_tokens))
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
            text = self.apply_chat_template(list(prompt), add_generation_prompt=True)
            # as transformers tokenizes a rendered chat: the template wrote the special tokens itself
            ids = self.tokenizer.encode(text, add_special_tokens=bool(add_special_tokens),
                                        parse_special=True)
        elif isinstance(prompt, np.ndarray) or (isinstance(prompt, (list, tuple)) and
                                                all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                                    for t in prompt)):
            ids = _token_array(prompt).tolist() if len(prompt) else []
            for i in ids:
                if not 0 <= i < self.vocab_size:
                    raise _core.InvalidArgumentError(f"token id {i} is outside [0, {self.vocab_size})")
        else:
            raise _core.InvalidArgumentError("prompt must be a string, a list of {'role', 'content'} messages or a "
                                             f"list of token ids, not {type(prompt).__name__}")
        if not ids:
            raise _core.InvalidArgumentError("the prompt has no tokens (an empty text and a vocabulary without BOS)")
        return list(ids)

    def __repr__(self) -> str:
        return (f"zipmoe.Model({self.path!r}, architecture={self.architecture!r}, "
                f"max_context={self.max_context}, threads={self.threads}, isa={self.isa!r})")


def _config_number(config: dict, name: str, default):
    value = config.get(name)
    return default if value is None else value


# The command-line options of the sampling settings, for messages.
_SAMPLING_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p",
                   "repetition_penalty": "--repeat-penalty"}


def _sampling_value(name: str, value):
    """A sampling setting checked against what the sampler takes (include/zipmoe/sampler.h)."""
    if name == "top_k":
        return _checks.integer("top_k (0: off)", value, 0, _checks.INT32_MAX)
    value = _checks.number(name, value)
    if name == "temperature" and value < 0:
        raise _core.InvalidArgumentError(f"temperature must be >= 0 (0: greedy), not {value!r}")
    if name == "top_p" and not 0 < value <= 1:
        raise _core.InvalidArgumentError(f"top_p must be in (0, 1] (1: off), not {value!r}")
    if name == "min_p" and not 0 <= value <= 1:
        raise _core.InvalidArgumentError(f"min_p must be in [0, 1] (0: off), not {value!r}")
    if name == "repetition_penalty" and not value > 0:
        raise _core.InvalidArgumentError(f"repetition_penalty must be > 0 (1: off), not {value!r}")
    return value


def _stop_strings(stop) -> list:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise _core.InvalidArgumentError(f"stop must be a string or a list of strings, not {stop!r}")
    if any(not s for s in stop):
        raise _core.InvalidArgumentError("a stop string cannot be empty")
    for s in stop:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _core.InvalidArgumentError(f"the stop string {s!r} has no UTF-8 form: {error.reason}") from None
    return list(stop)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """What :func:`load` takes besides the path (each is documented there); native_arguments() checks them."""

    threads: int | None = None
    max_context: int | None = None
    isa: str | None = None
    precision: str = "fast"
    kv_cache_dtype: str = "f32"
    batch: int | None = None
    io: str = "pread"
    memory_budget: int | float | str | None = None
    cache_policy: str = "affinity"
    prefetch: bool = True
    tiers: str | Sequence[str] | None = None
    profile: str | os.PathLike | None = None
    storage_bandwidth: float | None = None
    decode_throughput: float | None = None
    reorder_fetches: bool = True
    io_threads: int | None = None

    def native_arguments(self) -> dict:
        """The keyword arguments of ``_core.Model`` for these options; InvalidArgumentError for a bad one.
        The core checks isa, kv_cache_dtype and io itself."""
        threads = _checks.thread_count(self.threads)
        return dict(threads=default_threads() if threads is None else threads,
                    # sizes are size_t in the engine, which states its own maximum of max_context
                    max_context=_count("max_context", self.max_context, _checks.INT64_MAX,
                                       "the model's length, at most 4096"),
                    isa=self.isa, precision=check_choice("precision", self.precision, PRECISIONS),
                    kv_cache_dtype=self.kv_cache_dtype,
                    batch=_count("batch", self.batch, _checks.INT64_MAX, "256 tokens"), io=self.io,
                    memory_budget=_budget_bytes(self.memory_budget),
                    cache_policy=check_choice("cache_policy", self.cache_policy, CACHE_POLICIES),
                    prefetch=_checks.flag("prefetch", self.prefetch), tiers=_tier_names(self.tiers),
                    routing_profile="" if self.profile is None else os.fspath(self.profile),
                    storage_bandwidth=_rate("storage_bandwidth", self.storage_bandwidth),
                    decode_throughput=_rate("decode_throughput", self.decode_throughput),
                    reorder_fetches=_checks.flag("reorder_fetches", self.reorder_fetches),
                    io_threads=_count("io_threads", self.io_threads, MAX_IO_THREADS, "2 threads"))


def _count(name: str, value, maximum: int, none_means: str) -> int:
    """An int in [1, maximum], or 0 for None (the core's "its default")."""
    value = _checks.integer(name, value, 1, maximum, none_means=none_means)
    return 0 if value is None else value


def _budget_bytes(memory_budget) -> int:
    """Bytes of a memory budget (see parse_size); 0 for None, no budget."""
    if memory_budget is None:
        return 0
    try:
        budget = parse_size(memory_budget)
    except _core.InvalidArgumentError as error:
        raise _core.InvalidArgumentError(f"memory_budget: {error}") from None
    if budget == 0:
        raise _core.InvalidArgumentError("memory_budget must be positive (None: no budget)")
    return budget


def _tier_names(tiers):
    """The expert tiers as a list of names ("full,sm" and "full+sm" name two), or None for all."""
    if tiers is None:
        return None
    if isinstance(tiers, str):
        tiers = [t for t in tiers.replace("+", ",").split(",") if t.strip()]
    names = [str(t).strip().lower() for t in tiers]
    for name in names:
        if name not in EXPERT_TIERS:
            raise _core.InvalidArgumentError(f"unknown expert tier {name!r} (use {', '.join(EXPERT_TIERS)})")
    return names


def _rate(name: str, value) -> float:
    """Bytes/s for the planner, or 0 for None (measured at load)."""
    if value is None:
        return 0.0
    rate = _checks.number(name, value)
    if not rate > 0:
        raise _core.InvalidArgumentError(f"{name} must be a positive number of bytes/s or None, not {value!r}")
    return rate


def load(path=None, threads: int | None = None, max_context: int | None = None, *, isa: str | None = None,
         precision: str = "fast", kv_cache_dtype: str = "f32", batch: int | None = None,
         io: str = "pread", memory_budget=None, cache_policy: str = "affinity", prefetch: bool = True,
         tiers=None, profile=None, storage_bandwidth: float | None = None,
         decode_throughput: float | None = None, reorder_fetches: bool = True,
         io_threads: int | None = None) -> Model:
    """Loads the .zmoe container at ``path`` for inference (None: the built-in default model,
    default_model_path()).

    threads: threads of the model's pool, 1 to MAX_THREADS (1024; None: every core this process may use).
    max_context: positions of the KV cache (None: min(max_position_embeddings, 4096)); beyond
        max_position_embeddings (the length the model was trained for) it warns.
    isa: force a kernel path ("scalar", "avx2", "avx512", "neon"); None: ZIPMOE_ISA or the best.
    precision: "fast" (each kernel path's fastest summation order, BF16 dot products for multi-token
        steps where the CPU has them) or "exact" (F32 in one canonical order: the same bits on every
        kernel path and machine, and eval() in pieces equals one logits() call bit for bit).
    kv_cache_dtype: "f32", "bf16" or "f16".
    batch: most tokens per forward step when prefilling (None: 256).
    io: how the container is read ("pread", "direct" = O_DIRECT, "mmap"), at load and
        while streaming experts.
    memory_budget: None (every expert decoded at load), or the bytes the engine may
        hold in all, an int or a string such as "4GB" (see parse_size): dense weights,
        KV cache, scratch and the expert cache, which streams experts from the file.
        A budget below the minimum raises BudgetError stating the minimum, before any
        weight is read; so does a minimum beyond the memory available to the process
        (MemAvailable, lowered to the headroom of its memory cgroup), with or without a budget.
    cache_policy: "affinity" (LRU weighted by each layer's routing frequency), "lru" or "lfu".
    prefetch: prefetch the next layer's experts from a gate-ahead guess.
    tiers: the expert states the cache may use, e.g. ("full", "sm") for the ZipMoE
        paper's configuration (PAPER_TIERS); None: all (full, compressed, sm, e).
    profile: a routing profile JSON file (``zipmoe profile``, Model.save_routing_profile)
        by which the planner places experts; None: uniform, learnt online.
    storage_bandwidth, decode_throughput: bytes/s of storage and of one decoding
        thread for the planner; None: measured at load.
    reorder_fetches: False fetches each layer's experts in the order they are asked for
        instead of the scheduler's order (a baseline for benchmarks).
    io_threads: threads reading the container for the cache, 1 to 64 (None: 2), in the scheduler's order.

    Raises UnsupportedModelError (an architecture or feature the engine cannot run),
    FormatError / ChecksumError (a damaged or inconsistent container, or one holding tensors its
    architecture does not use; a GGUF file gets the command that converts it), IoError (a Hugging
    Face folder gets that command too), InvalidArgumentError (bad arguments), BudgetError (a budget,
    or the memory available, below the minimum).
    """
    if path is None:
        path = default_model_path()
    options = LoadOptions(threads=threads, max_context=max_context, isa=isa, precision=precision,
                          kv_cache_dtype=kv_cache_dtype, batch=batch, io=io, memory_budget=memory_budget,
                          cache_policy=cache_policy, prefetch=prefetch, tiers=tiers, profile=profile,
                          storage_bandwidth=storage_bandwidth, decode_throughput=decode_throughput,
                          reorder_fetches=reorder_fetches, io_threads=io_threads)
    path = _checks.container_path(path)
    arguments = options.native_arguments()
    try:
        native = _core.Model(path, **arguments)
    except _core.FormatError as error:
        if type(error) is not _core.FormatError:
            raise
        raise _checks.explain_not_a_container(path, error) from None
    trained = native.info["max_position_embeddings"]
    if max_context is not None and 0 < trained < max_context:
        warnings.warn(f"max_context {max_context} is beyond the {trained} positions {path} was trained for "
                      f"(max_position_embeddings): text past them may be poor", stacklevel=2)
    if memory_budget is not None:
        # Once per load: the expert cache expects this compressed container to be slower than raw bytes here.
        warning = native.stats().get("planner", {}).get("warning")
        if warning:
            warnings.warn(warning, stacklevel=2)
    return Model(native)

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

The engine is native (cpp/model); calls release the GIL. Results are bit-identical
for any thread count. See include/zipmoe/model.h for the guarantees on ISA paths
and precision.
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import _core
from ._threads import default_threads

PRECISIONS = ("fast", "exact")
KV_CACHE_DTYPES = ("f32", "bf16", "f16")
CACHE_POLICIES = ("affinity", "lru", "lfu")
EXPERT_TIERS = ("full", "compressed", "sm", "e", "absent")
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
    if isinstance(value, int):
        if value < 0:
            raise _core.InvalidArgumentError(f"a size cannot be negative: {value}")
        return value
    if isinstance(value, float):
        if not value >= 0 or value != value or value == float("inf"):
            raise _core.InvalidArgumentError(f"a size must be finite and >= 0, not {value!r}")
        return int(value)
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
    return int(amount * _SIZE_UNITS[unit])


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


class Model:
    """A model loaded by :func:`load`: logits of token sequences, with a KV cache.

    Not meant to be constructed directly. Calls from several threads are
    serialized by the engine.
    """

    def __init__(self, native: _core.Model):
        self._native = native
        self._config = None

    def logits(self, token_ids) -> np.ndarray:
        """Logits of every token of a fresh sequence: float32 array (len(token_ids), vocab).

        The sequence (KV cache) then holds these tokens, so eval() continues it.
        """
        return self._native.logits(_token_array(token_ids))

    def eval(self, token_ids, last_only: bool = False) -> np.ndarray:
        """Appends tokens to the current sequence and returns their logits, float32
        (len(token_ids), vocab); with last_only, only the last token's (1, vocab)."""
        return self._native.eval(_token_array(token_ids), bool(last_only))

    def reset(self) -> None:
        """Forgets the current sequence."""
        self._native.reset()

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
    def position(self) -> int:
        """Tokens in the current sequence."""
        return self._native.position

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
        """Writes routing_profile() as JSON to ``path``."""
        text = self._native.routing_profile_json()
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write(text)

    def __repr__(self) -> str:
        return (f"zipmoe.Model({self.path!r}, architecture={self.architecture!r}, "
                f"max_context={self.max_context}, threads={self.threads}, isa={self.isa!r})")


def load(path, threads: int | None = None, max_context: int | None = None, *, isa: str | None = None,
         precision: str = "fast", kv_cache_dtype: str = "f32", batch: int | None = None,
         io: str = "pread", memory_budget=None, cache_policy: str = "affinity", prefetch: bool = True,
         tiers=None, profile=None, storage_bandwidth: float | None = None,
         decode_throughput: float | None = None, reorder_fetches: bool = True,
         io_threads: int | None = None) -> Model:
    """Loads the .zmoe container at ``path`` for inference.

    threads: threads of the model's pool (None: every core this process may use).
    max_context: positions of the KV cache (None: min(max_position_embeddings, 4096)).
    isa: force a kernel path ("scalar", "avx2", "avx512", "neon"); None: ZIPMOE_ISA or the best.
    precision: "fast" (BF16 dot products for multi-token steps where the CPU has them) or
        "exact" (F32 throughout; eval() in pieces then equals one logits() call bit for bit).
    kv_cache_dtype: "f32", "bf16" or "f16".
    batch: most tokens per forward step when prefilling (None: 256).
    io: how the container is read ("pread", "direct" = O_DIRECT, "mmap"), at load and
        while streaming experts.
    memory_budget: None (every expert decoded at load), or the bytes the engine may
        hold in all, an int or a string such as "4GB" (see parse_size): dense weights,
        KV cache, scratch and the expert cache, which streams experts from the file.
        A budget below the minimum raises BudgetError stating the minimum.
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
    io_threads: threads reading the container for the cache (None: 2), in the scheduler's order.

    Raises UnsupportedModelError (an architecture or feature the engine cannot run),
    FormatError / ChecksumError (a damaged or inconsistent container), IoError,
    InvalidArgumentError (bad arguments), BudgetError (a budget below the minimum).
    """
    if threads is None:
        threads = default_threads()
    for name, value in (("threads", threads), ("max_context", max_context), ("batch", batch),
                        ("io_threads", io_threads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _core.InvalidArgumentError(f"{name} must be a positive integer or None, not {value!r}")
    if precision not in PRECISIONS:
        raise _core.InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    budget = 0 if memory_budget is None else parse_size(memory_budget)
    if memory_budget is not None and budget == 0:
        raise _core.InvalidArgumentError("memory_budget must be positive (None: no budget)")
    if cache_policy not in CACHE_POLICIES:
        raise _core.InvalidArgumentError(f"cache_policy must be one of {', '.join(CACHE_POLICIES)}, "
                                         f"not {cache_policy!r}")
    if tiers is not None:
        if isinstance(tiers, str):
            tiers = [t for t in tiers.replace("+", ",").split(",") if t.strip()]
        tiers = [str(t).strip().lower() for t in tiers]
        for t in tiers:
            if t not in EXPERT_TIERS:
                raise _core.InvalidArgumentError(f"unknown expert tier {t!r} (use {', '.join(EXPERT_TIERS)})")
    for name, value in (("storage_bandwidth", storage_bandwidth), ("decode_throughput", decode_throughput)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or
                                  not 0 < value < float("inf")):
            raise _core.InvalidArgumentError(f"{name} must be a positive number of bytes/s or None, not {value!r}")
    native = _core.Model(os.fspath(path), threads=threads, max_context=max_context or 0, isa=isa,
                         precision=precision, kv_cache_dtype=kv_cache_dtype, batch=batch or 0, io=io,
                         memory_budget=budget, cache_policy=cache_policy, prefetch=bool(prefetch), tiers=tiers,
                         routing_profile=os.fspath(profile) if profile is not None else "",
                         storage_bandwidth=float(storage_bandwidth or 0),
                         decode_throughput=float(decode_throughput or 0), reorder_fetches=bool(reorder_fetches),
                         io_threads=io_threads or 0)
    return Model(native)

"""Running a model stored in a .zmoe container: :func:`load` and :class:`Model`.

    import zipmoe
    model = zipmoe.load("qwen.zmoe")             # every weight decoded into RAM
    logits = model.logits([1, 2, 3])             # float32 (3, vocab), a fresh sequence
    step = model.eval([4])                       # float32 (1, vocab), appended (KV cache kept)
    model.reset()

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

    def __repr__(self) -> str:
        return (f"zipmoe.Model({self.path!r}, architecture={self.architecture!r}, "
                f"max_context={self.max_context}, threads={self.threads}, isa={self.isa!r})")


def load(path, threads: int | None = None, max_context: int | None = None, *, isa: str | None = None,
         precision: str = "fast", kv_cache_dtype: str = "f32", batch: int | None = None,
         io: str = "pread") -> Model:
    """Loads the .zmoe container at ``path`` for inference.

    threads: threads of the model's pool (None: every core this process may use).
    max_context: positions of the KV cache (None: min(max_position_embeddings, 4096)).
    isa: force a kernel path ("scalar", "avx2", "avx512", "neon"); None: ZIPMOE_ISA or the best.
    precision: "fast" (BF16 dot products for multi-token steps where the CPU has them) or
        "exact" (F32 throughout; eval() in pieces then equals one logits() call bit for bit).
    kv_cache_dtype: "f32", "bf16" or "f16".
    batch: most tokens per forward step when prefilling (None: 256).
    io: how the container is read at load ("pread", "direct", "mmap").

    Raises UnsupportedModelError (an architecture or feature the engine cannot run),
    FormatError / ChecksumError (a damaged or inconsistent container), IoError,
    InvalidArgumentError (bad arguments).
    """
    if threads is None:
        threads = default_threads()
    for name, value in (("threads", threads), ("max_context", max_context), ("batch", batch)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _core.InvalidArgumentError(f"{name} must be a positive integer or None, not {value!r}")
    if precision not in PRECISIONS:
        raise _core.InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    native = _core.Model(os.fspath(path), threads=threads, max_context=max_context or 0, isa=isa,
                         precision=precision, kv_cache_dtype=kv_cache_dtype, batch=batch or 0, io=io)
    return Model(native)

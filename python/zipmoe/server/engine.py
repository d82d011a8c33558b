"""The engine behind ``zipmoe serve``: generation requests in, text pieces and a finish out.

Everything the server does with the model's sequences goes through :class:`Engine`, whose interface is the one of
the batch scheduler (the "many sequences" work: contexts over one model, the generation loop in C++, a run loop
stepping every running sequence):

    engine = Engine(model, max_sequences=4, max_queue=64)
    request_id = engine.submit(prompt_ids, SamplingParams(max_tokens=64, temperature=0.0),
                               on_piece=lambda piece: ..., on_finish=lambda finish: ...)
    engine.cancel(request_id)        # from any thread; a queued request never starts
    engine.stats()                   # queued, running, limits, prompt cache hits
    engine.drain(grace_seconds=3.0)  # refuse new requests, cancel the queue, cancel what still runs after the grace
    engine.close()

``submit`` and ``cancel`` may be called from any thread. A request's callbacks come in order (its pieces, then
exactly one finish) on the engine's thread, or, for a request cancelled before it started, on the thread that
cancelled it; they must return quickly and must not call the engine's waiting method (``close``). An exception a
callback raises is logged and does not disturb the engine.

How it works: the engine owns one context of the model with ``max_sequences`` sequences and runs the native batch
scheduler on it (``_core.BatchScheduler``, include/zipmoe/generate.h) on the engine's thread: between two forward
steps, requests waiting in the queue join the running batch while a sequence is free, cancelled ones are stopped,
and ended ones leave it; every step decodes the next token of each running sequence (and chunks of the prompts of
those starting) and shares each expert fetch among them. Requests beyond ``max_sequences`` wait in the engine's
queue, first come first served. Each step's text pieces go out with the token ids (and logprobs) sampled since the
request's previous piece.

Prompt caching is the scheduler's: a joining request takes the free sequence that holds the longest proper prefix
of its prompt (what the previous turn of the same chat left there), so only the rest is evaluated, and
``Finish.cached_tokens`` reports the reused tokens. With ``prompt_cache=False`` a sequence is emptied when a
request takes it. ``cache_key`` is recorded but not used: the longest held prefix is what picks the sequence. The
KV of finished conversations stays in their sequences until a request takes them (it is not yet dropped least
recently used under the memory budget).

The answers do not depend on what else runs: greedy or seeded, each is exactly what ``Model.generate`` gives alone
with the same arguments (with ``precision="exact"`` bit for bit, whether batched with others or not and whether
or not its prompt was cached; with "fast", a prompt evaluated in parts may differ in the last bits, see README
"Logits from Python").
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from typing import Callable, Sequence

import numpy as np

from .. import _core

logger = logging.getLogger("zipmoe.server")

# What Model.generate's finish reasons are in OpenAI's terms.
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}


class EngineError(Exception):
    """A request the engine refuses; ``status`` is the HTTP status the server answers with."""

    status = 503


class QueueFullError(EngineError):
    """More requests are waiting than the queue holds."""


class EngineClosedError(EngineError):
    """The engine is shutting down and takes no new requests."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated. None: the model's default (its generation_config.json)."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple = ()
    logprobs: int | None = None  # None: off; N: each token's log-probability and the N likeliest alternatives


@dataclasses.dataclass
class Piece:
    """Text generated since the previous piece, with the tokens sampled since then (the text can lag its tokens:
    an incomplete UTF-8 character or a possible stop string is held back until it is resolved)."""

    text: str
    token_ids: list
    logprobs: list | None  # one (logprob, [(id, logprob), ...]) per token id; None when not asked for


@dataclasses.dataclass
class Finish:
    """How a request ended. reason: "stop" (an end-of-sequence token or a stop string), "length" (max_tokens or
    the end of the context), "cancelled" or "error" (then ``error`` holds the exception). token_ids and logprobs
    are the tokens sampled after the last piece (an ending EOS among them)."""

    reason: str
    prompt_tokens: int
    cached_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list = dataclasses.field(default_factory=list)
    logprobs: list | None = None
    error: BaseException | None = None
    seed: int | None = None
    queue_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0


@dataclasses.dataclass(eq=False)
class _Request:
    id: int
    prompt_ids: list
    params: SamplingParams
    on_piece: Callable[[Piece], None]
    on_finish: Callable[[Finish], None]
    cache_key: str | None
    submitted: float
    cancelled: bool = False
    # once it joined the batch: its id in the scheduler, when it joined, the seed it runs with, and how many of
    # its token ids the pieces handed out so far
    slot: int | None = None
    started: float = 0.0
    seed: int | None = None
    delivered: int = 0


class Engine:
    """Runs generation requests on one model (see the module's docstring for the contract)."""

    def __init__(self, model, max_sequences: int = 1, max_queue: int = 64, prompt_cache: bool = True):
        if max_sequences < 1 or max_queue < 1:
            raise _core.InvalidArgumentError("max_sequences and max_queue must be >= 1")
        self._model = model
        # the sequences the batch runs on, nothing else uses them: one is the model's default context (its KV
        # cache is counted at load), more a context of their own (its KV caches taken from the budget now:
        # BudgetError when they do not fit)
        self._context = model.default_context if max_sequences == 1 else \
            model.new_context(max_sequences=max_sequences)
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        self.prompt_cache = prompt_cache  # False: every prompt is evaluated whole (a baseline for measurements)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[_Request] = collections.deque()
        self._running: dict[int, _Request] = {}  # in the batch, by request id (at most max_sequences)
        self._batch = None  # the scheduler while anything runs (the engine's thread alone uses it)
        self._closed = False
        self._cache_hits = 0
        self._cached_tokens = 0
        self._steps = 0  # forward steps of the batch
        self._sequence_steps = 0  # the sequences those steps decoded, summed (over _steps: the mean batch)
        self._thread = threading.Thread(target=self._work, name="zipmoe-engine", daemon=True)
        self._thread.start()

    # ---- the interface ---------------------------------------------------------------------------------------
    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, on_piece: Callable[[Piece], None],
               on_finish: Callable[[Finish], None], cache_key: str | None = None) -> int:
        """Queues a sequence; returns its request id. Raises QueueFullError when max_queue requests wait,
        EngineClosedError after drain() or close()."""
        with self._lock:
            if self._closed:
                raise EngineClosedError("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"the server is busy: {len(self._queue)} requests are waiting")
            request = _Request(next(self._ids), list(prompt_ids), params, on_piece, on_finish, cache_key,
                               time.perf_counter())
            self._queue.append(request)
            self._wake.notify()
        return request.id

    def cancel(self, request_id: int) -> None:
        """Stops a request: a queued one is finished as cancelled at once, a running one at the next step.
        Unknown or finished ids are ignored."""
        with self._lock:
            running = self._running.get(request_id)
            if running is not None:
                running.cancelled = True
                return
            request = next((r for r in self._queue if r.id == request_id), None)
            if request is None:
                return
            self._queue.remove(request)
        self._call(request.on_finish, Finish("cancelled", len(request.prompt_ids), seed=request.params.seed,
                                             queue_seconds=time.perf_counter() - request.submitted))

    def stats(self) -> dict:
        """queued, running (sequences in the batch), max_sequences, max_queue; since start: prompt_cache_hits
        (requests that reused a cached prefix), cached_prompt_tokens (tokens they reused), steps (forward steps
        of the batch) and sequence_steps (the sequences each step decoded, summed)."""
        with self._lock:
            return {"queued": len(self._queue), "running": len(self._running),
                    "max_sequences": self.max_sequences, "max_queue": self.max_queue,
                    "prompt_cache_hits": self._cache_hits, "cached_prompt_tokens": self._cached_tokens,
                    "steps": self._steps, "sequence_steps": self._sequence_steps}

    def drain(self, grace_seconds: float) -> None:
        """Refuses new requests, cancels the queued ones now and what still runs after ``grace_seconds``.
        Returns at once."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        for request in waiting:
            self._call(request.on_finish, Finish("cancelled", len(request.prompt_ids), seed=request.params.seed))
        timer = threading.Timer(grace_seconds, self._cancel_running)
        timer.daemon = True
        timer.start()

    def close(self, timeout: float | None = None) -> bool:
        """drain(0) and waits up to ``timeout`` seconds for the engine's thread; True when it ended."""
        self.drain(0.0)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the engine's thread ---------------------------------------------------------------------------------
    def _cancel_running(self) -> None:
        with self._lock:
            for request in self._running.values():
                request.cancelled = True

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue and not self._running and not self._closed:
                        self._wake.wait()
                    if not self._queue and not self._running:
                        return
                    joining = []
                    while self._queue and len(self._running) < self.max_sequences:
                        request = self._queue.popleft()
                        self._running[request.id] = request
                        joining.append(request)
                    cancelled = [r for r in self._running.values() if r.cancelled and r.slot is not None]
                for request in cancelled:
                    self._batch.cancel(request.slot)
                for request in joining:
                    self._join(request)
                self._step()
        finally:
            if self._batch is not None:
                self._batch.close()

    def _join(self, request: _Request) -> None:
        """Adds a request to the batch (it starts at the next step), with the arguments Model.generate would
        run it with; a request they refuse finishes with an error."""
        request.started = time.perf_counter()
        params = request.params
        try:
            run = self._model._generation_request(request.prompt_ids, dict(
                max_new_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k, min_p=params.min_p, repetition_penalty=params.repetition_penalty,
                presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                seed=params.seed, stop=list(params.stop) or None, logprobs=params.logprobs))
            if self._batch is None:
                self._batch = self._context.batch_scheduler(reuse_prefixes=self.prompt_cache)
            request.slot = self._batch.add(
                np.asarray(run.prompt_ids, dtype=np.int64), seed=run.seed, max_new_tokens=run.max_new_tokens,
                stop=run.stops, skip_special_tokens=run.skip_special_tokens, logprobs=run.logprobs, **run.sampling)
            request.seed = run.seed
        except Exception as error:  # noqa: BLE001 - one request's failure must not stop the engine
            self._leave(request, Finish("error", len(request.prompt_ids), error=error, seed=params.seed,
                                        queue_seconds=request.started - request.submitted))

    def _step(self) -> None:
        """One forward step of the batch; hands out the pieces it made final and the finishes of the requests
        that ended."""
        failure = None
        texts: dict[int, list] = {}
        if self._batch is not None:
            with self._lock:
                self._steps += 1
                self._sequence_steps += sum(1 for r in self._running.values()
                                            if r.slot is not None and not r.cancelled)
            try:
                for slot, text in self._batch.step() or ():
                    texts.setdefault(slot, []).append(text)
            except Exception as error:  # noqa: BLE001 - the scheduler cancelled that step's sequences: they fail
                failure = error
        with self._lock:
            running = [r for r in self._running.values() if r.slot is not None]
        for request in running:
            if request.slot in texts:
                record = self._batch.stats_since(request.slot, request.delivered)
                self._call(request.on_piece, Piece("".join(texts[request.slot]), record["token_ids"],
                                                   self._logprobs(request, record)))
                request.delivered += len(record["token_ids"])
            if self._batch.done(request.slot):
                self._leave(request, self._finished(request, failure))
        with self._lock:
            idle = not self._running
        if idle and self._batch is not None:
            # a new scheduler for the next requests: this one's records of every request end here (the
            # sequences keep what they hold, for prompt caching)
            self._batch.close()
            self._batch = None

    def _finished(self, request: _Request, failure: BaseException | None) -> Finish:
        record = self._batch.stats_since(request.slot, request.delivered)
        reason = _FINISH_REASONS.get(record["finish_reason"])
        error = None
        if reason is None and request.cancelled:
            reason = "cancelled"
        elif reason is None:  # cancelled by the scheduler: its step failed
            reason, error = "error", failure or _core.ZipMoEError("the generation was stopped")
        cached = record["reused_prompt_tokens"]
        if reason != "error" and cached:
            with self._lock:
                self._cache_hits += 1
                self._cached_tokens += cached
        return Finish(reason, len(request.prompt_ids), cached, request.delivered + len(record["token_ids"]),
                      record["token_ids"], self._logprobs(request, record), error, request.seed,
                      queue_seconds=request.started - request.submitted, prompt_seconds=record["prompt_seconds"],
                      generation_seconds=record["generation_seconds"])

    @staticmethod
    def _logprobs(request: _Request, record: dict) -> list | None:
        return None if request.params.logprobs is None else record["logprobs"]

    def _leave(self, request: _Request, finish: Finish) -> None:
        with self._lock:
            self._running.pop(request.id, None)
        self._call(request.on_finish, finish)

    @staticmethod
    def _call(callback, argument) -> None:
        try:
            callback(argument)
        except Exception:  # noqa: BLE001 - a listener's bug is not the engine's
            logger.exception("a request callback failed")

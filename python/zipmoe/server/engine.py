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

How it works today: the current :class:`zipmoe.Model` holds one sequence and raises BusyError on concurrent use,
so one worker thread takes the queued requests one at a time, first come first served, and runs each with
``Model.generate(stream=True)``. ``max_sequences`` is recorded but cannot take effect. Prompt caching is the
model's own: ``generate`` evaluates only the part of a prompt past the tokens its KV cache already holds (the
previous turn of a chat, when that chat's request came last), and ``Finish.cached_tokens`` reports them. The
answers do not depend on the queue: each request runs alone, greedy or seeded, exactly as ``Model.generate`` with
the same arguments (with ``precision="exact"`` also whether or not its prompt was cached; with "fast", a prompt
evaluated in two parts may differ in the last bits, see README "Logits from Python").

What changes when the batch scheduler lands (nothing outside this module needs to):
  1. ``__init__``: create the scheduler on the model with ``max_sequences`` (and contexts for prompt caching),
     and start its run loop on the engine's thread in place of ``_work``.
  2. ``submit``: keep the queue bound (QueueFullError) and the closed check; hand the prompt ids and the
     SamplingParams to the scheduler's submit, with callbacks that build :class:`Piece` and :class:`Finish`
     from the scheduler's pieces, token ids, logprobs, finish reason, token counts and timings. The scheduler
     must therefore support everything SamplingParams holds: frequency_penalty and logprobs included
     (``zipmoe::token_logprobs`` in include/zipmoe/sampler.h computes the latter from a logits row).
  3. ``cancel``: the scheduler's cancel (a running sequence stops at its next step).
  4. Prompt caching: the scheduler keeps the KV of finished conversations in idle contexts, counted against the
     memory budget and dropped least recently used first; a new request takes the context holding the longest
     prefix of its prompt and reports the reused tokens as cached_tokens. ``cache_key`` (OpenAI's
     prompt_cache_key, else the user field) is the hint of which conversation a request continues. With
     ``prompt_cache=False`` every request starts from an empty context (as ``_generate`` resets the model today).
  5. ``stats``: running is the scheduler's running count; ``drain`` cancels through the scheduler.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from typing import Callable, Sequence

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


class Engine:
    """Runs generation requests on one model (see the module's docstring for the contract)."""

    def __init__(self, model, max_sequences: int = 1, max_queue: int = 64, prompt_cache: bool = True):
        if max_sequences < 1 or max_queue < 1:
            raise _core.InvalidArgumentError("max_sequences and max_queue must be >= 1")
        self._model = model
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        self.prompt_cache = prompt_cache  # False: every prompt is evaluated whole (a baseline for measurements)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[_Request] = collections.deque()
        self._running: _Request | None = None
        self._closed = False
        self._cache_hits = 0
        self._cached_tokens = 0
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
        """Stops a request: a queued one is finished as cancelled at once, a running one after its next token.
        Unknown or finished ids are ignored."""
        with self._lock:
            if self._running is not None and self._running.id == request_id:
                self._running.cancelled = True
                return
            request = next((r for r in self._queue if r.id == request_id), None)
            if request is None:
                return
            self._queue.remove(request)
        self._finish(request, Finish("cancelled", len(request.prompt_ids), seed=request.params.seed,
                                     queue_seconds=time.perf_counter() - request.submitted))

    def stats(self) -> dict:
        """queued, running, max_sequences, max_queue, prompt_cache_hits (requests that reused a cached prefix)
        and cached_prompt_tokens (tokens they reused), since start."""
        with self._lock:
            return {"queued": len(self._queue), "running": int(self._running is not None),
                    "max_sequences": self.max_sequences, "max_queue": self.max_queue,
                    "prompt_cache_hits": self._cache_hits, "cached_prompt_tokens": self._cached_tokens}

    def drain(self, grace_seconds: float) -> None:
        """Refuses new requests, cancels the queued ones now and what still runs after ``grace_seconds``.
        Returns at once."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        for request in waiting:
            self._finish(request, Finish("cancelled", len(request.prompt_ids), seed=request.params.seed))
        timer = threading.Timer(grace_seconds, self._cancel_running)
        timer.daemon = True
        timer.start()

    def close(self, timeout: float | None = None) -> bool:
        """drain(0) and waits up to ``timeout`` seconds for the engine's thread; True when it ended."""
        self.drain(0.0)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the worker ------------------------------------------------------------------------------------------
    def _cancel_running(self) -> None:
        with self._lock:
            if self._running is not None:
                self._running.cancelled = True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return
                request = self._running = self._queue.popleft()
            try:
                finish = self._generate(request)
            finally:
                with self._lock:
                    self._running = None
            self._finish(request, finish)

    def _generate(self, request: _Request) -> Finish:
        params = request.params
        started = time.perf_counter()
        delivered = 0
        pieces = None
        try:
            if not self.prompt_cache:
                self._model.reset()
            pieces = self._model.generate(
                request.prompt_ids, max_new_tokens=params.max_tokens, temperature=params.temperature,
                top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
                repetition_penalty=params.repetition_penalty, presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty, seed=params.seed, stop=list(params.stop) or None,
                logprobs=params.logprobs, stream=True)
            for text in pieces:
                record = self._model.last_generation_stats
                token_ids = record["token_ids"]
                logprobs = record["logprobs"]
                self._call(request.on_piece, Piece(text, token_ids[delivered:],
                                                   None if logprobs is None else logprobs[delivered:]))
                delivered = len(token_ids)
                if request.cancelled:
                    break
        except Exception as error:  # noqa: BLE001 - one request's failure must not stop the engine
            # generate() checks its arguments before it returns the stream: without one, nothing ran
            record = {} if pieces is None else self._model.last_generation_stats
            return self._finished(request, record, started, delivered, "error", error)
        finally:
            if pieces is not None:
                pieces.close()
        return self._finished(request, self._model.last_generation_stats, started, delivered,
                              "cancelled" if request.cancelled else None, None)

    def _finished(self, request: _Request, record: dict, started: float, delivered: int, reason: str | None,
                  error: BaseException | None) -> Finish:
        token_ids = record.get("token_ids") or []
        logprobs = record.get("logprobs")
        cached = record.get("reused_prompt_tokens", 0)
        if reason is None:
            reason = _FINISH_REASONS.get(record.get("finish_reason"), "stop")
        if reason != "error" and cached:
            with self._lock:
                self._cache_hits += 1
                self._cached_tokens += cached
        return Finish(reason, len(request.prompt_ids), cached, len(token_ids), token_ids[delivered:],
                      None if logprobs is None else logprobs[delivered:], error, record.get("seed"),
                      queue_seconds=started - request.submitted, prompt_seconds=record.get("prompt_seconds", 0.0),
                      generation_seconds=record.get("generation_seconds", 0.0))

    def _finish(self, request: _Request, finish: Finish) -> None:
        self._call(request.on_finish, finish)

    @staticmethod
    def _call(callback, argument) -> None:
        try:
            callback(argument)
        except Exception:  # noqa: BLE001 - a listener's bug is not the engine's
            logger.exception("a request callback failed")

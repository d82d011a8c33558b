"""The HTTP application of ``zipmoe serve`` (Starlette): OpenAI's endpoints over an :class:`Engine`.

The model loads on a thread of its own after the server starts listening, so ``/health`` answers 503 until it is
ready. Each generation request is checked (protocol.py), tokenized, and submitted to the engine as one sequence per
choice; the engine's callbacks come from its thread and are handed to the request's asyncio queue. A client that
goes away cancels its sequences; the engine's failure on one request fails that request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import logging
import os
import threading
import time
import uuid

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import _core
from . import protocol
from .engine import Engine, EngineClosedError, EngineError, Finish, Piece, SamplingParams
from .metrics import Metrics
from .protocol import ApiError

logger = logging.getLogger("zipmoe.server")

MAX_BODY_BYTES = 16 << 20
RETRY_AFTER_SECONDS = "1"
_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/tokenize",
              "/detokenize")


@dataclasses.dataclass
class ServerOptions:
    model_name: str
    api_key: str | None = None
    max_sequences: int = 1
    max_queue: int = 64
    memory_budget: int = 0  # bytes, for /metrics (0: none)
    prompt_cache: bool = True


class ServerApp:
    """The application (``.app``) and its state: loading, ready, shutting down.

    loader() returns the loaded zipmoe.Model; it runs on a thread started with the application. on_ready(model) and
    on_load_failure(error) are called from that thread.
    """

    def __init__(self, loader, options: ServerOptions, on_ready=None, on_load_failure=None):
        self.options = options
        self.metrics = Metrics()
        self.model = None
        self.engine: Engine | None = None
        self.load_error: BaseException | None = None
        self.shutting_down = False
        self.created = int(time.time())
        self._loader = loader
        self._on_ready = on_ready
        self._on_load_failure = on_load_failure
        self._state_lock = threading.Lock()
        self.logprob_writer = None
        routes = [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.get_metrics, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
        ]
        middleware = [Middleware(_CountRequests, metrics=self.metrics)]
        if options.api_key:
            middleware.append(Middleware(_RequireApiKey, key=options.api_key))
        self.app = Starlette(routes=routes, middleware=middleware, lifespan=self._lifespan,
                             exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                                                 _ClientGone: _client_gone, Exception: _internal_error})

    # ---- life --------------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        threading.Thread(target=self._load, name="zipmoe-load", daemon=True).start()
        yield
        self.begin_shutdown(0.0)
        engine = self.engine
        if engine is not None:
            await run_in_threadpool(engine.close, 10.0)

    def _load(self) -> None:
        try:
            model = self._loader()
            # what every request needs, read once (the tokenizer also proves the model can generate text)
            tokenizer = model.tokenizer
            eos_ids = model.eos_token_ids
            engine = Engine(model, max_sequences=self.options.max_sequences, max_queue=self.options.max_queue,
                            prompt_cache=self.options.prompt_cache)
        except BaseException as error:  # noqa: BLE001 - reported, and the server stops
            self.load_error = error
            if self._on_load_failure is not None:
                self._on_load_failure(error)
            return
        with self._state_lock:
            if self.shutting_down:
                engine.close(0.0)
                return
            self.logprob_writer = protocol.LogprobWriter(tokenizer, eos_ids)
            self.model = model
            self.metrics.attach(model, engine, self.options.memory_budget)
            self.engine = engine
        if self._on_ready is not None:
            self._on_ready(model)

    def begin_shutdown(self, grace_seconds: float) -> None:
        """Refuses new requests from now on; running sequences may finish for ``grace_seconds``, then are
        cancelled."""
        with self._state_lock:
            self.shutting_down = True
            engine = self.engine
        if engine is not None:
            engine.drain(grace_seconds)

    def _ready(self) -> Engine:
        if self.shutting_down:
            raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")
        engine = self.engine
        if engine is None:
            raise ApiError(503, "the model is still loading; try again shortly", type="server_error",
                           code="model_loading", headers={"Retry-After": RETRY_AFTER_SECONDS})
        return engine

    def _check_model(self, name) -> None:
        if name is not None and name != self.options.model_name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.options.model_name}'",
                           type="not_found_error", param="model", code="model_not_found")

    # ---- plain endpoints ---------------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        if self.shutting_down:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if self.engine is None:
            status = "failed" if self.load_error is not None else "loading"
            return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
        return JSONResponse({"status": "ok"})

    async def get_metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await run_in_threadpool(self.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _model_card(self) -> dict:
        card = {"id": self.options.model_name, "object": "model", "created": self.created, "owned_by": "zipmoe"}
        if self.model is not None:
            card["max_model_len"] = self.model.max_context
        return card

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def get_model(self, request: Request) -> Response:
        self._check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    async def tokenize(self, request: Request) -> Response:
        body = _expect_object(await _read_json(request))
        self._ready()
        self._check_model(protocol.string_field(body, "model"))
        if body.get("messages") is not None:
            messages = protocol.chat_messages(body["messages"])
            generation_prompt = protocol.boolean_field(body, "add_generation_prompt", True)
            tokens = await run_in_threadpool(self._chat_ids, messages, generation_prompt)
        else:
            name = "prompt" if "prompt" in body else "content"
            text = body.get(name)
            if not isinstance(text, str):
                raise protocol.invalid(name, "give the text as 'prompt' (or 'content'), or a chat as 'messages'")
            # vLLM's name, then llama-server's
            default = protocol.boolean_field(body, "add_special", True)
            special = protocol.boolean_field(body, "add_special_tokens", default)
            tokens = await run_in_threadpool(_guard, self.model.tokenize, text, special)
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": self.model.max_context})

    async def detokenize(self, request: Request) -> Response:
        body = _expect_object(await _read_json(request))
        self._ready()
        self._check_model(protocol.string_field(body, "model"))
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise protocol.invalid("tokens", "'tokens' must be an array of token ids")
        text = await run_in_threadpool(_guard, self.model.detokenize, tokens)
        # vLLM calls the text "prompt", llama-server "content"
        return JSONResponse({"prompt": text, "content": text})

    # ---- generation --------------------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, protocol.parse_chat)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, protocol.parse_completion)

    async def _generate(self, request: Request, parse) -> Response:
        arrived = time.perf_counter()
        parsed = parse(await _read_json(request))
        engine = self._ready()
        self._check_model(parsed.model)
        context = self.model.max_context
        if parsed.max_tokens is not None and parsed.max_tokens > context:
            raise protocol.invalid(parsed.max_tokens_param, f"'{parsed.max_tokens_param}' is {parsed.max_tokens}; the "
                                   f"model's context holds {context} tokens in all", code="context_length_exceeded")
        prompts = await run_in_threadpool(self._prompts, parsed)
        generation = _Generation(self, parsed, prompts, arrived)
        generation.submit(engine)
        if parsed.stream:
            return StreamingResponse(generation.events_stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await generation.response(request))

    def _chat_ids(self, messages, add_generation_prompt: bool = True) -> list:
        """Token ids of a conversation, as Model.generate makes them of messages."""
        try:
            text = self.model.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        except _core.UnsupportedModelError as error:
            raise protocol.invalid("messages", f"{error}; use /v1/completions with a text prompt") from None
        except _core.InvalidArgumentError as error:
            raise protocol.invalid("messages", str(error)) from None
        return _guard(self.model.tokenizer.encode, text, add_special_tokens=False, parse_special=True)

    def _prompts(self, parsed: protocol.GenerationRequest) -> list:
        """(token ids, echo text) of each prompt; ApiError for one that cannot run."""
        out = []
        vocab = self.model.vocab_size
        for prompt in parsed.prompts:
            if parsed.kind == "chat":
                ids = self._chat_ids(prompt)
            elif isinstance(prompt, str):
                ids = _guard(self.model.tokenize, prompt)
            else:
                bad = next((t for t in prompt if not 0 <= t < vocab), None)
                if bad is not None:
                    raise protocol.invalid("prompt", f"token id {bad} is outside the vocabulary [0, {vocab})")
                ids = list(prompt)
            if not ids:
                raise protocol.invalid("prompt", "the prompt has no tokens")
            if len(ids) >= self.model.max_context:
                raise protocol.invalid("messages" if parsed.kind == "chat" else "prompt",
                                       f"the prompt has {len(ids)} tokens; the model's context holds "
                                       f"{self.model.max_context} (prompt and completion together)",
                                       code="context_length_exceeded")
            echo = ""
            if parsed.echo:
                echo = prompt if isinstance(prompt, str) else _guard(self.model.detokenize, prompt)
            out.append((ids, echo))
        return out


class _Choice:
    def __init__(self, index: int, prompt_index: int):
        self.index = index
        self.prompt_index = prompt_index
        self.request_id: int | None = None
        self.texts: list = []
        self.logprobs = None  # chat: list of entries; completions: the arrays
        self.text_offset = 0
        self.finish: Finish | None = None


class _Generation:
    """One generation request in flight: its choices, the engine's events for them, and the answer they make."""

    def __init__(self, server: ServerApp, parsed: protocol.GenerationRequest, prompts: list, arrived: float):
        self.server = server
        self.parsed = parsed
        self.prompts = prompts
        self.arrived = arrived
        self.first_text_at: float | None = None
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.choices = [_Choice(p * parsed.n + k, p) for p in range(len(prompts)) for k in range(parsed.n)]
        self.engine: Engine | None = None
        self.id = ("chatcmpl-" if parsed.kind == "chat" else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        for choice in self.choices:
            choice.text_offset = len(prompts[choice.prompt_index][1])

    # ---- the engine side ---------------------------------------------------------------------------------------
    def submit(self, engine: Engine) -> None:
        self.engine = engine
        parsed = self.parsed
        context = self.server.model.max_context
        for choice in self.choices:
            ids = self.prompts[choice.prompt_index][0]
            room = context - len(ids)
            seed = None if parsed.seed is None else (parsed.seed + choice.index % parsed.n) % 2**64
            params = SamplingParams(max_tokens=min(parsed.max_tokens or room, room), seed=seed,
                                    logprobs=parsed.logprobs, **parsed.sampling)
            post = functools.partial(self._post, choice.index)
            try:
                choice.request_id = engine.submit(ids, params, post, post, cache_key=parsed.cache_key)
            except EngineError as error:
                self.cancel()
                code = "shutting_down" if isinstance(error, EngineClosedError) else "server_overloaded"
                raise ApiError(error.status, str(error), type="server_error", code=code,
                               headers={"Retry-After": RETRY_AFTER_SECONDS}) from None

    def _post(self, index: int, event) -> None:
        """An engine callback (from the engine's thread): hands the event to the request's loop."""
        if isinstance(event, Finish):
            self.server.metrics.finished(event)  # here: a request whose client left reads no more events
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (index, event))
        except RuntimeError:
            pass  # the loop has closed: the server is gone, nobody waits for this answer

    def cancel(self) -> None:
        """Cancels the choices that have not finished (the client went away, or one choice failed)."""
        for choice in self.choices:
            if choice.finish is None and choice.request_id is not None:
                self.engine.cancel(choice.request_id)

    def _unfinished(self) -> bool:
        return any(choice.finish is None for choice in self.choices)

    def _take(self, index: int, event):
        """Records an event of choice ``index``; returns (the choice, its new text, its new logprobs)."""
        choice = self.choices[index]
        token_ids, logprobs = event.token_ids, event.logprobs
        text = event.text if isinstance(event, Piece) else ""
        if isinstance(event, Finish):
            choice.finish = event
        if text:
            choice.texts.append(text)
            if self.first_text_at is None:
                self.first_text_at = time.perf_counter()
                self.server.metrics.time_to_first_token.observe(self.first_text_at - self.arrived)
        new_logprobs = None
        if self.parsed.logprobs is not None and logprobs is not None:
            writer = self.server.logprob_writer
            if self.parsed.kind == "chat":
                new_logprobs = writer.chat(token_ids, logprobs)
                choice.logprobs = (choice.logprobs or []) + new_logprobs
            else:
                new_logprobs, choice.text_offset = writer.completion(token_ids, logprobs, choice.text_offset)
                choice.logprobs = protocol.merge_completion_logprobs(choice.logprobs, new_logprobs)
        return choice, text, new_logprobs

    def _failure(self) -> ApiError | None:
        """The error of a choice that failed, else of one cancelled (by a shutdown: a client that went away
        reads no answer), if any."""
        reasons = [choice.finish.reason for choice in self.choices if choice.finish is not None]
        if "error" in reasons:
            failed = next(c for c in self.choices if c.finish is not None and c.finish.reason == "error")
            return _engine_failure(failed.finish.error)
        if "cancelled" in reasons:
            return ApiError(503, "the server shut down before the answer was complete", type="server_error",
                            code="shutting_down")
        return None

    def _usage(self) -> dict:
        prompt_tokens = completion_tokens = cached_tokens = 0
        for choice in self.choices:
            finish = choice.finish
            completion_tokens += finish.completion_tokens
            if choice.index % self.parsed.n == 0:  # a prompt counts once, however many choices it has
                prompt_tokens += finish.prompt_tokens
                cached_tokens += finish.cached_tokens
        return protocol.usage(prompt_tokens, completion_tokens, cached_tokens)

    # ---- the answer --------------------------------------------------------------------------------------------
    async def response(self, request: Request) -> dict:
        """The whole answer (stream: false); the client leaving meanwhile cancels the choices."""
        watcher = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            while self._unfinished():
                getter = asyncio.ensure_future(self.events.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    self.cancel()
                    raise _ClientGone()
                index, event = getter.result()
                self._take(index, event)
                if isinstance(event, Finish) and event.reason in ("error", "cancelled"):
                    self.cancel()
        finally:
            watcher.cancel()
            if self._unfinished():
                self.cancel()
            self.server.metrics.request_duration.observe(time.perf_counter() - self.arrived)
        failure = self._failure()
        if failure is not None:
            raise failure
        return self._whole_answer()

    def _whole_answer(self) -> dict:
        parsed = self.parsed
        choices = []
        for choice in self.choices:
            text = "".join(choice.texts)
            logprobs = None
            if parsed.kind == "chat":
                if parsed.logprobs is not None:
                    logprobs = {"content": choice.logprobs or []}
                choices.append({"index": choice.index, "message": {"role": "assistant", "content": text},
                                "logprobs": logprobs, "finish_reason": choice.finish.reason})
            else:
                if parsed.logprobs is not None:
                    logprobs = choice.logprobs or protocol.merge_completion_logprobs(None, {
                        "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []})
                echo = self.prompts[choice.prompt_index][1]
                choices.append({"index": choice.index, "text": echo + text, "logprobs": logprobs,
                                "finish_reason": choice.finish.reason})
        return {"id": self.id, "object": "chat.completion" if parsed.kind == "chat" else "text_completion",
                "created": self.created, "model": self.server.options.model_name, "choices": choices,
                "usage": self._usage()}

    def _chunk(self, index: int, text: str | None = None, logprobs=None, finish_reason=None, role=False) -> dict:
        parsed = self.parsed
        if parsed.kind == "chat":
            delta = {}
            if role:
                delta = {"role": "assistant", "content": ""}
            elif text:
                delta = {"content": text}
            choice = {"index": index, "delta": delta,
                      "logprobs": None if logprobs is None else {"content": logprobs}, "finish_reason": finish_reason}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
            kind = "text_completion"
        chunk = {"id": self.id, "object": kind, "created": self.created, "model": self.server.options.model_name,
                 "choices": [choice]}
        if parsed.include_usage:
            chunk["usage"] = None
        return chunk

    async def events_stream(self):
        """The answer as server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``. Leaving the
        stream early (the client went away) cancels the choices."""
        parsed = self.parsed
        try:
            for choice in self.choices:
                if parsed.kind == "chat":
                    yield protocol.sse(self._chunk(choice.index, role=True))
                elif parsed.echo and self.prompts[choice.prompt_index][1]:
                    yield protocol.sse(self._chunk(choice.index, self.prompts[choice.prompt_index][1]))
            failure = None
            while self._unfinished() and failure is None:
                index, event = await self.events.get()
                choice, text, logprobs = self._take(index, event)
                if isinstance(event, Piece):
                    if text or logprobs:
                        yield protocol.sse(self._chunk(index, text, logprobs))
                    continue
                failure = self._failure()
                if failure is None:
                    yield protocol.sse(self._chunk(index, None, logprobs, finish_reason=event.reason))
            if failure is not None:
                self.cancel()
                yield protocol.sse(failure.body())
            elif parsed.include_usage:
                yield protocol.sse({"id": self.id, "object": "chat.completion.chunk" if parsed.kind == "chat"
                                    else "text_completion", "created": self.created,
                                    "model": self.server.options.model_name, "choices": [], "usage": self._usage()})
            yield protocol.sse("[DONE]")
        finally:
            if self._unfinished():
                self.cancel()
            self.server.metrics.request_duration.observe(time.perf_counter() - self.arrived)


class _ClientGone(Exception):
    """The client of a plain (not streamed) request disconnected before its answer."""


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _engine_failure(error) -> ApiError:
    if isinstance(error, _core.InvalidArgumentError):
        return ApiError(400, str(error))
    logger.error("a request failed in the engine: %s: %s", type(error).__name__, error)
    return ApiError(500, f"the engine failed on this request: {type(error).__name__}: {error}", type="server_error",
                    code="engine_error")


def _guard(function, *args, **kwargs):
    """function(*args, **kwargs), with what the model refuses as input (InvalidArgumentError) a 400."""
    try:
        return function(*args, **kwargs)
    except _core.InvalidArgumentError as error:
        raise ApiError(400, str(error)) from None


def _expect_object(body) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


async def _read_json(request: Request):
    """The request body as JSON; 413 past MAX_BODY_BYTES, 400 when it is not JSON."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="request_too_large")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request has no body; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None


# ---- errors as OpenAI writes them --------------------------------------------------------------------------------
async def _api_error(request: Request, error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: HTTPException) -> Response:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    message = {404: f"no such endpoint: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
    return JSONResponse(protocol.error_body(message, kind), status_code=error.status_code, headers=error.headers)


async def _client_gone(request: Request, error: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it (nginx's code for a client that closed the request)


async def _internal_error(request: Request, error: Exception) -> Response:
    logger.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return JSONResponse(protocol.error_body(f"internal error: {type(error).__name__}: {error}", "server_error",
                                            code="internal_error"), status_code=500)


# ---- middleware (plain ASGI, so that streamed answers pass through untouched) ------------------------------------
class _RequireApiKey:
    """401 for every request but /health without ``Authorization: Bearer KEY``."""

    def __init__(self, app, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        response = JSONResponse(protocol.error_body("missing or wrong API key: send 'Authorization: Bearer KEY'",
                                                    "authentication_error", code="invalid_api_key"),
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class _CountRequests:
    """Counts answered requests by endpoint and status code (zipmoe_requests_total)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "/v1/models" if path.startswith("/v1/models/") else "other"
        status = []

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0] if status else 500)).inc()


def default_model_name(path: str) -> str:
    """The name a model is served under by default: its file name without .zmoe."""
    name = os.path.basename(path)
    return name[:-5] if name.endswith(".zmoe") else name

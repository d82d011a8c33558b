"""``zipmoe serve``: an OpenAI-compatible HTTP server for a zipmoe model (the optional extra ``zipmoe[server]``).

    zipmoe serve model.zmoe --port 8080 --memory-budget 4GB

Endpoints: POST /v1/chat/completions and /v1/completions (plain and streamed as server-sent events),
GET /v1/models, GET /health (503 while the model loads), GET /metrics (Prometheus), POST /tokenize and /detokenize.
The modules: engine.py (the requests as sequences of one batch: the native batch scheduler on a context of the model),
protocol.py (OpenAI's request and response shapes), metrics.py, app.py (the Starlette application). ``import zipmoe``
does not import this package: the core stays free of the web stack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time

import uvicorn

from .. import _core
from .app import ServerApp, ServerOptions, default_model_name
from .engine import Engine, Finish, Piece, SamplingParams

__all__ = ["serve", "ServerApp", "ServerOptions", "Engine", "SamplingParams", "Piece", "Finish",
           "default_model_name", "DRAIN_SECONDS"]

# After Ctrl-C or SIGTERM, running sequences may finish for this long; then they are cancelled.
DRAIN_SECONDS = 3.0
# Test hook: seconds the model's load waits before it starts (so that a test sees /health answer 503).
_LOAD_DELAY_VARIABLE = "ZIPMOE_SERVE_TEST_LOAD_DELAY"


class _Server(uvicorn.Server):
    """uvicorn's server with zipmoe's signal handling: the first Ctrl-C or SIGTERM drains (no new requests,
    running ones finish or are cancelled after DRAIN_SECONDS) and the process exits 0; a second one cancels all."""

    def __init__(self, config: uvicorn.Config, on_first_signal, on_second_signal):
        super().__init__(config)
        self._on_first_signal = on_first_signal
        self._on_second_signal = on_second_signal

    @contextlib.contextmanager
    def capture_signals(self):
        # Unlike uvicorn's, this does not raise the signal again after the shutdown: a drained server exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit:
            self.force_exit = True
            self._on_second_signal()
        else:
            self.should_exit = True
            self._on_first_signal()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket (IoError naming the address when it cannot be had)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                   flags=socket.AI_PASSIVE)
        family, kind, protocol, _, address = infos[0]
        # with its protocol named, asyncio sets TCP_NODELAY on the connections (else small writes wait ~40 ms)
        sock = socket.socket(family, kind, protocol)
    except OSError as error:
        raise _core.IoError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise _core.IoError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def serve(loader, options: ServerOptions, host: str = "127.0.0.1", port: int = 8080, *, describe: str = "",
          drain_seconds: float = DRAIN_SECONDS, log_requests: bool = False, out=None) -> int:
    """Serves the model ``loader()`` loads (on a thread, once the server listens) until Ctrl-C or SIGTERM.

    Returns 0 after a graceful shutdown, 1 when the model failed to load (the error printed on ``out``, stderr
    by default). Raises IoError when the address cannot be listened on. ``describe`` names the model in messages.
    """
    out = out or sys.stderr
    say = lambda text: print(f"zipmoe serve: {text}", file=out, flush=True)  # noqa: E731
    logger = logging.getLogger("zipmoe.server")
    if not logger.handlers:
        logger.addHandler(_one_line_handler(out))
        logger.setLevel(logging.INFO)
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown_host}:{bound_port}"
    failure = []
    delay = float(os.environ.get(_LOAD_DELAY_VARIABLE) or 0.0)

    def load():
        if delay > 0:
            time.sleep(delay)
        started = time.perf_counter()
        say(f"loading {describe or options.model_name}")
        model = loader()
        say(f"ready in {time.perf_counter() - started:.1f} s: {options.model_name} ({model.architecture}, context "
            f"{model.max_context}, {model.threads} threads, {model.isa})")
        return model

    def load_failed(error):
        failure.append(error)
        message = str(error) if isinstance(error, _core.ZipMoEError) else f"{type(error).__name__}: {error}"
        print(f"zipmoe: error: {message}", file=out, flush=True)
        server.should_exit = True

    application = ServerApp(load, options, on_load_failure=load_failed)

    def first_signal():
        say(f"shutting down: no new requests; running ones may finish for {drain_seconds:g} s")
        application.begin_shutdown(drain_seconds)

    def second_signal():
        say("shutting down now")
        application.begin_shutdown(0.0)

    config = uvicorn.Config(application.app, log_level="info" if log_requests else "warning",
                            access_log=log_requests, timeout_graceful_shutdown=int(drain_seconds) + 2,
                            lifespan="on", timeout_keep_alive=5)
    server = _Server(config, first_signal, second_signal)
    say(f"listening on {url} (OpenAI API under {url}/v1)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        return 1
    say("stopped")
    return 0


def _one_line_handler(out) -> logging.Handler:
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("zipmoe serve: %(message)s"))
    return handler

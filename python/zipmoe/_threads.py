"""Native thread pools shared by the Python API, one per thread count."""

from __future__ import annotations

import os
import threading

from . import _core

_lock = threading.Lock()
_pools: dict[int, _core.ThreadPool] = {}


def default_threads() -> int:
    """Threads used when a call says threads=None: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def get_pool(threads: int | None) -> _core.ThreadPool | None:
    """A pool of `threads` threads (None: default_threads()); None for a single thread."""
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise _core.InvalidArgumentError(f"threads must be a positive integer or None, not {threads!r}")
    if threads < 1:
        raise _core.InvalidArgumentError(f"threads must be >= 1, not {threads}")
    if threads == 1:
        return None
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = _core.ThreadPool(threads)
        return pool

"""Native thread pools shared by the Python API, one per thread count."""

from __future__ import annotations

import os
import threading

from . import _core
from ._checks import MAX_THREADS, thread_count

_lock = threading.Lock()
_pools: dict[int, _core.ThreadPool] = {}


def default_threads() -> int:
    """Threads used when a call says threads=None: every core this process may run on (at most MAX_THREADS)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_THREADS))


def get_pool(threads: int | None) -> _core.ThreadPool | None:
    """A pool of `threads` threads (None: default_threads()); None for a single thread.
    InvalidArgumentError outside [1, MAX_THREADS]; ZipMoEError when the system cannot start that many."""
    threads = thread_count(threads)
    if threads is None:
        threads = default_threads()
    if threads == 1:
        return None
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = _core.ThreadPool(threads)
        return pool

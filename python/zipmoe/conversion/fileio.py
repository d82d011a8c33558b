"""Small file helpers shared by the safetensors and GGUF readers and writers."""

from __future__ import annotations

import os

import numpy as np

from .. import _core


def io_error(message: str) -> Exception:
    return _core.IoError(message)


def format_error(message: str) -> Exception:
    return _core.FormatError(message)


def read_exact(fd: int, path: str, offset: int, size: int, what: str) -> np.ndarray:
    """``size`` bytes at ``offset`` into a new uint8 array (IoError / FormatError naming ``what``)."""
    buffer = np.empty(size, dtype=np.uint8)
    view = memoryview(buffer)
    done = 0
    while done < size:
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as e:
            raise io_error(f"{path}: reading {what}: {e.strerror}") from None
        if n == 0:
            raise format_error(f"{path}: {what} is truncated (file ends {size - done} bytes early)")
        done += n
    return buffer


def read_bytes(fd: int, path: str, offset: int, size: int, what: str) -> bytes:
    return read_exact(fd, path, offset, size, what).tobytes()

"""Small file helpers shared by the safetensors and GGUF readers and writers."""

from __future__ import annotations

import os
import shutil
import tempfile

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


class AtomicFile:
    """A file written under a temporary name beside ``path`` and renamed into place by commit()."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise io_error(f"{self.path}: directory {directory} does not exist")
        fd, self.temp_path = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".tmp-", dir=directory)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temp_path, self.path)

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            if os.path.exists(self.temp_path):
                os.unlink(self.temp_path)


class AtomicDirectory:
    """A directory filled under a temporary name beside ``path`` and renamed into place by commit().

    ``path`` must not exist, or be an empty directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise io_error(f"{path}: directory {parent} does not exist")
        if os.path.lexists(self.path) and not (os.path.isdir(self.path) and not os.listdir(self.path)):
            raise io_error(f"{path} already exists and is not an empty directory")
        self.temp_path = tempfile.mkdtemp(prefix=os.path.basename(self.path) + ".tmp-", dir=parent)

    def commit(self) -> None:
        for name in os.listdir(self.temp_path):
            with open(os.path.join(self.temp_path, name), "rb") as f:
                os.fsync(f.fileno())
        if os.path.isdir(self.path):
            os.rmdir(self.path)
        os.rename(self.temp_path, self.path)

    def discard(self) -> None:
        shutil.rmtree(self.temp_path, ignore_errors=True)

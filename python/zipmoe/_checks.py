"""Argument and path checks shared by the Python API and the command line.

Each check raises a zipmoe error that names the argument (InvalidArgumentError for values, IoError or FormatError
for files) before any work starts, so that nothing reaches the native module that it cannot take: pybind11 would
answer an integer out of its C++ type's range with a TypeError listing signatures.
"""

from __future__ import annotations

import math
import os
import secrets
import shlex
import tempfile

import numpy as np

from . import _core

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
# ThreadPool::kMaxThreads (include/zipmoe/thread_pool.h): the most threads any call may use.
MAX_THREADS = _core.MAX_THREADS


def integer(name: str, value, minimum: int, maximum: int, none_means: str | None = None) -> int | None:
    """``value`` as an int in [minimum, maximum]; None passes through when ``none_means`` says what it means."""
    if value is None and none_means is not None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or \
            not minimum <= value <= maximum:
        alternative = f" or None ({none_means})" if none_means is not None else ""
        raise _core.InvalidArgumentError(f"{name} must be an integer in [{minimum}, {maximum}]{alternative}, "
                                         f"not {value!r}")
    return int(value)


def number(name: str, value) -> float:
    """``value`` as a finite float (an int too large for a float is not one)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _core.InvalidArgumentError(f"{name} must be a finite number, not {value!r}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise _core.InvalidArgumentError(f"{name} must be a finite number, not {value!r}")
    return result


def flag(name: str, value) -> bool:
    """``value`` when it is True or False (a string such as 'no' is not a bool and would count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _core.InvalidArgumentError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def thread_count(value, name: str = "threads") -> int | None:
    """A thread count in [1, MAX_THREADS], or None (the caller's default)."""
    return integer(name, value, 1, MAX_THREADS, none_means="every core")


# ---- files ---------------------------------------------------------------------------------------------------

def _os_error(path, error: OSError) -> _core.IoError:
    return _core.IoError(f"{path}: {error.strerror or error}")


def container_path(path) -> str:
    """``path`` as a str, refused early when it is a directory: a Hugging Face model folder gets the command
    that converts it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, name)) for name in ("config.json", "model.safetensors",
                                                                      "model.safetensors.index.json")):
            name = os.path.basename(os.path.normpath(os.path.abspath(path))) or "model"
            raise _core.IoError(f"{path} is a Hugging Face model folder, not a .zmoe file: convert it first with "
                                f"`zipmoe convert {shlex.quote(path)} -o {shlex.quote(name + '.zmoe')}`")
        raise _core.IoError(f"{path} is a directory, not a .zmoe file")
    return path


def explain_not_a_container(path: str, error: _core.FormatError) -> _core.FormatError:
    """``error`` (the reader refused ``path``, a regular file), with the command that converts it when the file
    is a GGUF model."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return error
    if magic != b"GGUF":
        return error
    stem = os.path.splitext(os.path.basename(path))[0] or "model"
    return _core.FormatError(f"{error}: it is a GGUF file; convert it first with "
                             f"`zipmoe convert {shlex.quote(path)} -o {shlex.quote(stem + '.zmoe')}`")


def output_file(path, what: str = "output") -> str:
    """``path`` as a str once it is known that a file can be written there (checked before long work: the parent
    folder exists and takes a new file, and the path is not a folder). Nothing is left behind."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise _core.IoError(f"{path}: the {what} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".zipmoe-probe-", dir=folder)
    except OSError as error:
        raise _core.IoError(f"{path}: cannot write the {what} there: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_text(path, text: str, what: str = "output") -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically: a temporary file in the same folder, renamed into place,
    so that a failure leaves ``path`` as it was and nothing else behind. The file gets the permissions of any new
    file (the umask applies)."""
    path = output_file(path, what)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise _os_error(path, error) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError as error:
        _remove_quietly(temporary)
        raise _os_error(path, error) from None
    except BaseException:
        _remove_quietly(temporary)
        raise


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a file, or a pipe such as bash's <(...)); IoError when it cannot be read,
    FormatError naming the first bad byte when it is not UTF-8."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise _core.IoError(f"{path}: the {what} is a directory, not a text file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise _os_error(path, error) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _core.FormatError(f"{path}: the {what} is not UTF-8 text ({describe_bad_utf8(error)})") from None


def describe_bad_utf8(error: UnicodeDecodeError) -> str:
    """'byte 0xff at offset 6' for the first byte that is not UTF-8."""
    return f"byte 0x{error.object[error.start]:02x} at offset {error.start}"


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

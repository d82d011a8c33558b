"""Where convert, export and dequantize write: outputs that appear whole or not at all, and never over an input.

- Never over an input: an output that is an input, lies inside an input folder, or is a hard link of an input file
  is refused before any work starts (:func:`refuse_overlap`).
- Whole or not at all: a file is written unnamed (``O_TMPFILE``) where the filesystem allows it and linked into
  place when complete, else under a temporary name beside its target; a folder is filled under a temporary name
  and renamed into place. Files and folders get the modes ordinary ones get (0666 and 0777 less the umask).
- Nothing left behind: a temporary name is ``<target name>.zipmoe-tmp-<pid>-<random>``, and its writer holds a
  ``flock`` on it while it lives. SIGTERM and SIGHUP raise :class:`Terminated` for the duration of a command, so
  that its temporaries are removed (:func:`terminating_signals_raise`). What SIGKILL or a crash leaves behind is
  recognised by the next run that writes into the same folder (the process named in it is gone and its lock is
  free) and removed (:func:`sweep_stale_temporaries`). The C++ container writer names and locks its temporaries
  the same way (docs/FORMAT.md, "Writing").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import stat
import threading

from .. import _core
from .fileio import io_error

TEMPORARY_MARKER = ".zipmoe-tmp-"
_TEMPORARY_NAME = re.compile(r".+\.zipmoe-tmp-(?P<pid>[0-9]+)-[0-9a-z]+")


def temporary_name(target: str) -> str:
    """A fresh temporary name for ``target`` (a path), in the same folder."""
    return f"{target}{TEMPORARY_MARKER}{os.getpid()}-{secrets.token_hex(5)}"


# ------------------------------------------------------------------------------------------ inputs

def refuse_overlap(output, inputs, what: str = "output") -> None:
    """InvalidArgumentError when ``output`` is one of ``inputs``, lies inside one, or is a hard link of one."""
    output = os.fspath(output)
    out_real = os.path.realpath(output)
    inputs = [os.fspath(p) for p in inputs]
    for path in inputs:
        if out_real == os.path.realpath(path):
            raise _core.InvalidArgumentError(f"{output}: the {what} would overwrite the input {path}")
    for path in inputs:
        if out_real.startswith(os.path.realpath(path).rstrip(os.sep) + os.sep):
            raise _core.InvalidArgumentError(f"{output}: the {what} would be written inside the input folder {path}")
    out_stat = _stat_or_none(output)
    for path in inputs:
        in_stat = _stat_or_none(path)
        if out_stat is not None and in_stat is not None and (out_stat.st_dev, out_stat.st_ino) == \
                (in_stat.st_dev, in_stat.st_ino):
            raise _core.InvalidArgumentError(f"{output}: the {what} is a hard link of the input {path}; writing it "
                                             f"would replace that input")


def _stat_or_none(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def check_output_file(path) -> str:
    """The absolute path of an output file, IoError when it names a folder or its folder does not exist."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise io_error(f"{path} is a folder; give the path of the file to write")
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise io_error(f"{path}: folder {directory} does not exist")
    return path


# ------------------------------------------------------------------------------------- temporaries

def _locked(fd: int) -> bool:
    """Takes the writer's lock on ``fd``; False when another open file holds it, or the filesystem has no locks
    (a writer then goes on unlocked; a sweep leaves such a file alone)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_temporaries(directory) -> list:
    """Removes from ``directory`` the temporaries of zipmoe writers that were killed; returns their names.

    A temporary is stale when the process its name records no longer exists and nobody holds its lock (the lock
    also protects writers in other PID namespaces or on other hosts of a shared filesystem). Symbolic links and
    anything that cannot be removed are left alone.
    """
    directory = os.fspath(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY_NAME.fullmatch(name)
        if match is None or _process_exists(int(match["pid"])):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _locked(fd):
                continue
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _create_error(target: str, error: OSError) -> Exception:
    return io_error(f"{target}: cannot create it in {os.path.dirname(target)}: {error.strerror}")


def _open_unnamed(directory: str):
    """An unnamed file in ``directory`` (fd), or None where the filesystem (or a missing /proc) rules it out."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError:
        return None  # the named path reports permission errors
    if not os.path.exists(f"/proc/self/fd/{fd}"):  # commit() links the file through /proc
        os.close(fd)
        return None
    return fd


def _open_named(target: str):
    """(fd, name) of a new temporary file beside ``target``, locked."""
    while True:
        name = temporary_name(target)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise _create_error(target, e) from None
        _locked(fd)
        return fd, name


def _sync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the data itself is safe
    finally:
        os.close(fd)


class AtomicFile:
    """A file that appears at ``path`` whole, by :meth:`commit`, or not at all (:meth:`discard`).

    ``unnamed``: write it without a name (O_TMPFILE) where the filesystem allows it; False always uses a
    temporary name (what filesystems without O_TMPFILE get).
    """

    def __init__(self, path, unnamed: bool = True):
        self.path = check_output_file(path)
        directory = os.path.dirname(self.path)
        sweep_stale_temporaries(directory)
        self.temp_path = None
        fd = _open_unnamed(directory) if unnamed else None
        if fd is None:
            fd, self.temp_path = _open_named(self.path)
        else:
            _locked(fd)  # held through commit's link-then-rename, when the file has a temporary name
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            if self.temp_path is None:
                self.temp_path = self._link_unnamed()
            self.file.close()
            os.replace(self.temp_path, self.path)
        except OSError as e:
            self.discard()
            raise io_error(f"{self.path}: writing it failed: {e.strerror}") from None
        self.temp_path = None
        _sync_directory(os.path.dirname(self.path))

    def _link_unnamed(self) -> str:
        # linkat cannot replace a file: link under a temporary name, then rename that over the target. A folder
        # descriptor makes os.link call linkat, which alone follows the /proc link to the file.
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            while True:
                name = temporary_name(self.path)
                try:
                    os.link(f"/proc/self/fd/{self.file.fileno()}", os.path.basename(name), dst_dir_fd=directory,
                            follow_symlinks=True)
                    return name
                except FileExistsError:
                    continue
        finally:
            os.close(directory)

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            if self.temp_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.temp_path)
                self.temp_path = None


class AtomicDirectory:
    """A folder filled under a temporary name beside ``path`` and renamed into place by :meth:`commit`.

    ``path`` must not exist, or be an empty folder."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise io_error(f"{path}: folder {parent} does not exist")
        if os.path.lexists(self.path) and not (os.path.isdir(self.path) and not os.listdir(self.path)):
            raise io_error(f"{path} already exists and is not an empty directory")
        sweep_stale_temporaries(parent)
        while True:
            name = temporary_name(self.path)
            try:
                os.mkdir(name, 0o777)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise _create_error(self.path, e) from None
        self.temp_path = name
        self._fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _locked(self._fd)

    def open(self, name: str):
        """A new file ``name`` in the folder, open for writing."""
        return open(os.path.join(self.temp_path, name), "xb")

    def commit(self) -> None:
        try:
            for name in os.listdir(self.temp_path):
                with open(os.path.join(self.temp_path, name), "rb") as f:
                    os.fsync(f.fileno())
            if os.path.isdir(self.path):
                os.rmdir(self.path)
            os.rename(self.temp_path, self.path)
        except OSError as e:
            self.discard()
            raise io_error(f"{self.path}: writing it failed: {e.strerror}") from None
        self.temp_path = None
        os.close(self._fd)
        _sync_directory(os.path.dirname(self.path))

    def discard(self) -> None:
        if self.temp_path is not None:
            shutil.rmtree(self.temp_path, ignore_errors=True)
            self.temp_path = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------------------------- signals

class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived during a command (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


_TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def terminating_signals_raise():
    """For the duration of the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread, so that the
    ``with`` blocks and ``finally`` clauses inside remove their temporaries; then the previous handlers come back
    and the signal is delivered again, so the process ends as it would have (killed by that signal).

    Only signals whose disposition is the default (which ends the process without cleaning up) are taken over: a
    program's own handler, or SIG_IGN (nohup), stays in charge. Outside the main thread nothing changes (Python
    delivers signals to the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = [s for s in _TERMINATING_SIGNALS if signal.getsignal(s) is signal.SIG_DFL]
    received = []

    def handler(signum, frame):
        # a second signal must not interrupt the cleanup the first one started; it is delivered again at the end
        for s in taken:
            signal.signal(s, signal.SIG_IGN)
        received.append(signum)
        raise Terminated(signum)

    for s in taken:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s in taken:
            signal.signal(s, signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])

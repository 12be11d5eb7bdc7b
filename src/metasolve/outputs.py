"""Output paths of a run: checked before any work starts, and an advisory lock per run folder.

A run that trains for an hour must not find out at the end that it cannot write its records, so
:func:`prepare_directory` and :func:`check_file_target` are called on every path first; they
create what the run would create anyway and probe writability by writing (``os.access`` says yes
to root even on a read-only file system). :class:`RunLock` holds an exclusive ``fcntl.flock`` on
a file inside the run folder: the kernel drops it when the process ends, however it ends, so a
killed run never leaves a stale lock behind. On platforms without ``fcntl`` (Windows) the lock is
a no-op: concurrent runs on one folder are then the user's business.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks (see the module docstring)
    fcntl = None

LOCK_NAME = ".metasolve.lock"


class OutputPathError(ValueError):
    """An output path cannot be used: ``path`` and ``reason`` say which and why."""

    def __init__(self, what: str, path, reason: str):
        self.what, self.path, self.reason = what, Path(path), reason
        super().__init__(f"{what} {self.path}: {reason}")


class OutputBusyError(OutputPathError):
    """Another process holds the lock of a run folder (its PID in ``pid`` when known)."""

    def __init__(self, path, pid: int | None):
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__("run folder", path,
                         f"in use by {holder} (another reproduce on the same --out, experiment "
                         f"and scale); wait for it to end or choose another --out")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def prepare_directory(what: str, path) -> Path:
    """Create directory ``path`` if needed and check that files can be written in it.

    ``what`` names the path in messages (e.g. ``"--out"``). Raises :class:`OutputPathError`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(what, path, "exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # Name the ancestor that blocks it when that is the reason (a file where a folder goes).
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = (f"cannot be created, {blocker} is not a directory" if blocker is not None
                  else f"cannot be created ({_reason(exc)})")
        raise OutputPathError(what, path, reason) from exc
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OutputPathError(what, path, f"is not writable ({_reason(exc)})") from exc
    return path


def check_file_target(what: str, path) -> Path:
    """Check that file ``path`` can be written later: not a directory, its folder writable (and
    created), and if it exists, writable itself. Nothing is written to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(what, path, "is a directory, expected a file path")
    try:
        prepare_directory("folder", path.parent)
    except OutputPathError as exc:
        raise OutputPathError(what, path, f"its folder {exc.path} {exc.reason}") from exc
    if path.exists():
        try:
            # Append mode opens for writing without truncating what is there.
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise OutputPathError(what, path, f"is not writable ({_reason(exc)})") from exc
    return path


class RunLock:
    """An exclusive advisory lock on run folder ``folder``, refused at once if held elsewhere.

    Use as a context manager; the lock file keeps the holder's PID for the refusal message. The
    file itself is left in place: deleting it would let a third process lock a fresh file while
    a second still holds the old one.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._file = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        # "a+" creates the file without truncating a holder's PID before we own the lock.
        file = open(self.path, "a+")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                file.close()
                raise OutputPathError("lock file", self.path, _reason(exc)) from exc
            file.seek(0)
            text = file.read().strip()
            file.close()
            raise OutputBusyError(self.folder, int(text) if text.isdigit() else None) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            # Clear the PID first: a reader that sees the file unlocked must not blame us.
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""An exclusive, non-blocking lock so that two cron runs never harvest at once.

The lock is a separate ``<db>.lock`` file, never the database itself: closing any file
descriptor on the SQLite file would drop SQLite's own POSIX locks in this process.
``flock`` is released by the kernel when the process dies, so a killed run never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class AlreadyRunning(Exception):
    """Another process holds the harvest lock; ``pid`` is None when it left no readable PID."""

    def __init__(self, message: str, *, lock_path: Path, pid: int | None) -> None:
        super().__init__(message)
        self.lock_path = lock_path
        self.pid = pid


@contextmanager
def harvest_lock(db_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``<db>.lock`` for the duration of the block or raise :class:`AlreadyRunning`."""
    lock_path = Path(f"{db_path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(db_path, lock_path, _holder_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock_path
    finally:
        os.close(fd)


def _holder_pid(fd: int) -> int | None:
    """The PID the holder wrote, or None: ``flock(1)`` or another tool writes nothing, and a
    run that has just taken the lock may not have written its PID yet."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _already_running(db_path: str | os.PathLike[str], lock_path: Path, pid: int | None) -> AlreadyRunning:
    if pid is not None:
        what = f"another harvest is already running on {db_path} (pid {pid}, holding {lock_path})"
    else:
        what = (f"another harvest or tool is already running on {db_path}: {lock_path} is locked "
                "but names no PID, so its holder is unknown (flock(1) writes none; a run that "
                "is just starting has not written its own yet)")  # fmt: skip
    return AlreadyRunning(f"{what}; this run exits without doing anything",
                          lock_path=lock_path, pid=pid)  # fmt: skip


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this PID exists (a run row's owner, say)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True

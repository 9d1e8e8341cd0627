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
    """Another process holds the harvest lock."""


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
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise AlreadyRunning(
                f"another harvest is already running on {db_path} (pid {holder}); "
                "this run exits without doing anything"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock_path
    finally:
        os.close(fd)


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

"""The harvest lock: a second holder is refused at once; a dead holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harvest.lock import AlreadyRunning, harvest_lock


def test_second_holder_refused(tmp_path):
    db = tmp_path / "e.db"
    with harvest_lock(db):
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            with harvest_lock(db):
                pass
    with harvest_lock(db):  # released: free again
        pass


def test_killed_holder_releases_lock(tmp_path):
    db = tmp_path / "e.db"
    code = (
        "import sys, time; from harvest.lock import harvest_lock\n"
        f"with harvest_lock({str(db)!r}):\n    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning, match=f"pid {proc.pid}"):
            with harvest_lock(db):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with harvest_lock(db):
                break
        except AlreadyRunning:
            assert time.monotonic() < deadline, "lock not released after SIGKILL"
            time.sleep(0.05)

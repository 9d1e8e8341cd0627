"""The harvest lock: a second holder is refused at once; a dead holder leaves no stale lock."""

from __future__ import annotations

import os
import shutil
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


def _held_by_flock_tool(lock_path, content: bytes | None = None):
    """util-linux ``flock(1)`` holding the lock file, as a cron line guarding the same
    database would: it locks the file and writes nothing into it."""
    if shutil.which("flock") is None:
        pytest.skip("flock(1) (util-linux) is not installed")
    if content is not None:
        lock_path.write_bytes(content)
    proc = subprocess.Popen(["flock", "--nonblock", str(lock_path), "-c", "echo held; sleep 60"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # flock and the shell and sleep it started
    proc.wait()


@pytest.mark.parametrize("content", [None, b"\xff\xfe garbage", b"-1"])
def test_a_holder_that_wrote_no_pid_is_named_unknown_with_the_lock_file(tmp_path, content):
    db = tmp_path / "e.db"
    proc = _held_by_flock_tool(tmp_path / "e.db.lock", content)
    try:
        with pytest.raises(AlreadyRunning) as info:
            with harvest_lock(db):
                pass
    finally:
        _stop(proc)
    message = str(info.value)
    assert info.value.pid is None and info.value.lock_path == tmp_path / "e.db.lock"
    assert f"{tmp_path / 'e.db.lock'} is locked but names no PID, so its holder is unknown" in message
    assert "(pid " not in message and "\ufffd" not in message  # no "pid another process"


def test_the_cli_says_so_and_exits_75_when_the_holder_is_unknown(tmp_path):
    from click.testing import CliRunner

    from harvest.cli import cli

    db = tmp_path / "e.db"
    proc = _held_by_flock_tool(tmp_path / "e.db.lock")
    try:
        result = CliRunner().invoke(cli, ["run", "--db", str(db)],
                                    env={"NCBI_EMAIL": "test@example.org", "NCBI_API_KEY": None})  # fmt: skip
    finally:
        _stop(proc)
    assert result.exit_code == 75, result.output
    assert "harvest run: another harvest or tool is already running on" in result.output
    assert "its holder is unknown" in result.output and str(tmp_path / "e.db.lock") in result.output
    assert not db.exists()  # nothing was done

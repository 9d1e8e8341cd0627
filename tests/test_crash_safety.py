"""Killed runs, concurrent readers and overlapping cron runs, with real processes.

The harvester runs as a subprocess (`python -m harvest`) against the fake NCBI server in
this process; nothing here is mocked.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import date

import pytest
from fake_ncbi import Fault

from harvest import store

pytestmark = pytest.mark.slow

# Studies stored after each committed import batch of the 10k update file (batches of
# 500 records; one PMID appears twice in the file, at records 1,999 and 9,433, so the batch
# holding the second adds 499).
BATCH_BOUNDARIES = {*range(0, 9001, 500), 9499, 9999, 10362}

CONFIG = """
[ncbi]
batch_size = 3
backfill_from = "2024/01/01"
[topics.dry_needling]
query = '"dry needling"[tiab]'
"""


@pytest.fixture
def env(tmp_path, fake_ncbi):
    cfg = tmp_path / "harvest.toml"
    cfg.write_text(CONFIG)
    return {
        **os.environ,
        "NCBI_EMAIL": "test@example.org",
        "NCBI_EUTILS_URL": fake_ncbi.base_url,
        "HARVEST_DB": str(tmp_path / "e.db"),
        "HARVEST_CONFIG": str(cfg),
    }


@pytest.fixture
def corpus(fake_ncbi, shared_data):
    pmids = []
    for name in ("pubmed1.xml", "pubmed2.xml", "pubmed4.xml", "pubmed6.xml", "pubmed7.xml"):
        pmids += fake_ncbi.load_records(shared_data / "eutils" / "biopython" / name)
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="edat")
    return sorted(set(pmids), key=int)


def harvest(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harvest", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def count(db_path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT count(*) FROM studies").fetchall()[0][0]
    except sqlite3.OperationalError:
        return 0


def check_integrity(db_path) -> None:
    with closing(sqlite3.connect(db_path, timeout=30)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO studies_fts(studies_fts, rank) VALUES('integrity-check', 1)")
        conn.commit()
        n = conn.execute("SELECT count(*) FROM studies").fetchall()[0][0]
        assert conn.execute("SELECT count(*) FROM studies_fts_docsize").fetchall()[0][0] == n
        dupes = conn.execute("SELECT pmid FROM studies GROUP BY pmid HAVING count(*) > 1")
        assert dupes.fetchall() == []


def test_sigkill_mid_run_then_resume(env, fake_ncbi, corpus):
    db_path = env["HARVEST_DB"]
    # The second efetch hangs: the first batch is committed, the run is then killed.
    fake_ncbi.fail("efetch", at=2, with_=Fault.stall(10))
    proc = harvest("run", env=env)
    wait_for(lambda: len(fake_ncbi.requests_to("efetch")) >= 2 and count(db_path) == 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    check_integrity(db_path)
    db = store.open_db(db_path)
    assert store.get_source(db, "pubmed:dry_needling")["cursor"] is None  # not advanced
    assert db["runs"].get(1)["status"] == "running"
    status = subprocess.run([sys.executable, "-m", "harvest", "status"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert "interrupted" in status.stdout
    # The next run completes with no duplicates.
    done = subprocess.run([sys.executable, "-m", "harvest", "run"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pubmed:dry_needling: ok:" in done.stdout
    check_integrity(db_path)
    assert count(db_path) == len(corpus)
    db = store.open_db(db_path)
    assert store.get_source(db, "pubmed:dry_needling")["cursor"]
    # The killed run is closed as interrupted, not left "running" forever.
    killed = db["runs"].get(1)
    assert (killed["status"], bool(killed["finished"])) == ("interrupted", True)


def test_sigkill_during_writes_never_leaves_half_a_batch(tmp_path, shared_data):
    """Kill a 10k-record import at several moments: only whole batches ever land."""
    big = shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"
    db_path = tmp_path / "k.db"
    env = {**os.environ, "HARVEST_DB": str(db_path)}
    for delay in (0.8, 1.6, 2.4):
        proc = harvest("import", str(big), env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_integrity(db_path)
        n = count(db_path)
        assert n in BATCH_BOUNDARIES, n
    status = subprocess.run([sys.executable, "-m", "harvest", "status"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert "interrupted (killed or crashed); import the file again" in status.stdout
    done = subprocess.run([sys.executable, "-m", "harvest", "import", str(big)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_integrity(db_path)
    assert count(db_path) == 10362
    runs = [r["status"] for r in store.open_db(db_path)["runs"].rows]
    # No run left "running" forever (a kill before the run row was written leaves none).
    assert runs[-1] == "ok" and 1 <= len(runs) - 1 <= 3 and set(runs[:-1]) == {"interrupted"}, runs


def test_reader_never_sees_half_a_batch(tmp_path, shared_data):
    """A Datasette-style read-only reader polls while an import writes."""
    big = shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"
    db_path = tmp_path / "r.db"
    store.open_db(db_path).conn.close()  # schema in place before the reader starts
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        while not stop.is_set():
            try:
                conn.execute("BEGIN")  # one snapshot for both reads, as a Datasette page has
                n = conn.execute("SELECT count(*) FROM studies").fetchone()[0]
                hits = conn.execute(
                    "SELECT count(*) FROM studies_fts WHERE studies_fts MATCH 'pain'"
                ).fetchone()[0]
                conn.execute("COMMIT")
                assert hits <= n
                seen.append(n)
                time.sleep(0.005)  # poll, don't starve the writer's checkpoints
            except BaseException as exc:  # noqa: BLE001 - any reader error fails the test
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    done = subprocess.run([sys.executable, "-m", "harvest", "import", str(big)],
                          env={**os.environ, "HARVEST_DB": str(db_path)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    stop.set()
    thread.join()
    assert done.returncode == 0, done.stderr
    assert errors == []
    assert len(set(seen)) >= 3  # it really watched the import progress
    assert set(seen) <= BATCH_BOUNDARIES, sorted(set(seen))


def test_second_run_exits_at_once(env, fake_ncbi, corpus):
    fake_ncbi.fail("efetch", at=1, with_=Fault.stall(10))
    first = harvest("run", env=env)
    try:
        wait_for(lambda: len(fake_ncbi.requests_to("efetch")) >= 1)
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "harvest", "run"], env=env,
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        assert time.monotonic() - started < 5
        assert second.returncode == 75
        assert "already running" in second.stderr and str(first.pid) in second.stderr
        assert len(fake_ncbi.requests_to("esearch")) == 1  # the second asked NCBI nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

"""The NCBI rate file: one per user (NCBI counts requests per IP or key, not per database),
created on first use, and never a reason to fail a harvest."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from fake_ncbi import FakeNCBI

from harvest.config import load_settings
from harvest.eutils import EutilsClient, EutilsConfig

CONFIG = """
[ncbi]
batch_size = 2
backfill_from = "2024/01/01"
[topics.dry_needling]
query = '"dry needling"[tiab]'
"""


def max_in_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - t <= width) for i, t in enumerate(times)), default=0)


@pytest.fixture
def corpus(fake_ncbi: FakeNCBI, shared_data: Path) -> FakeNCBI:
    for name in ("pubmed1.xml", "pubmed2.xml", "pubmed4.xml", "pubmed6.xml", "pubmed7.xml"):
        fake_ncbi.load_records(shared_data / "eutils" / "biopython" / name)
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="edat")
    return fake_ncbi


def client(fake: FakeNCBI, rate_file: Path | None) -> EutilsClient:
    return EutilsClient(EutilsConfig(base_url=fake.base_url, email="t@example.org", rate_file=rate_file))


def test_two_harvests_into_different_databases_share_one_budget(corpus, tmp_path, monkeypatch):
    """Two `harvest run` processes at once, each with its own database, as two cron lines
    for two projects would: together they stay within NCBI's 3 requests per second."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    cfg = tmp_path / "harvest.toml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "NCBI_EMAIL": "t@example.org", "NCBI_EUTILS_URL": corpus.base_url,
           "HARVEST_CONFIG": str(cfg)}  # fmt: skip
    runs = [
        subprocess.Popen([sys.executable, "-m", "harvest", "run", "--db", str(tmp_path / name)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a.db", "b.db")
    ]  # fmt: skip
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    times = [r.time for r in corpus.requests]
    assert len(times) >= 10
    assert max_in_window(times) <= 3, sorted(t - times[0] for t in times)
    assert float((cache / "doesitwork" / "ncbi.rate").read_text()) > 0
    assert list(tmp_path.glob("*.ncbi-rate")) == []


def test_the_folder_is_created_on_first_use(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not" / "yet"))
    rate_file = load_settings(db=tmp_path / "e.db").ncbi.rate_file
    assert rate_file == tmp_path / "not" / "yet" / "doesitwork" / "ncbi.rate"
    pubmed = client(corpus, rate_file)
    assert not (tmp_path / "not").exists()  # nothing until a request is made
    pubmed.esearch("dry needling")
    assert float(rate_file.read_text()) == pytest.approx(time.time(), abs=5)


def test_a_folder_that_cannot_be_made_falls_back_to_pacing_in_process(corpus, tmp_path, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    rate_file = blocker / "doesitwork" / "ncbi.rate"
    pubmed = client(corpus, rate_file)
    with caplog.at_level(logging.WARNING, logger="harvest.eutils"):
        for _ in range(5):
            pubmed.esearch("dry needling")
    assert len(corpus.requests) == 5 and all(r.fault is None for r in corpus.requests)
    assert max_in_window([r.time for r in corpus.requests]) <= 3  # still paced
    (warning,) = [r.getMessage() for r in caplog.records]  # said once, not per request
    assert warning.startswith(f"cannot use the NCBI rate file {rate_file} (")
    assert "pacing requests in this process only" in warning and "NCBI_RATE_FILE" in warning

"""Shared fixtures: the recorded NCBI data (read in place) and a fake E-utilities server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from datafiles import SHARED_DATA
from fake_ncbi import FakeNCBI


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"recorded NCBI data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user NCBI rate file lives under $XDG_CACHE_HOME: a temporary folder for each
    test, inherited by the harvest processes tests start, so none writes the real ~/.cache."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("NCBI_RATE_FILE", raising=False)
    return cache


@pytest.fixture
def fake_ncbi() -> Iterator[FakeNCBI]:
    """A fake E-utilities server on an ephemeral 127.0.0.1 port, empty until records are loaded."""
    with FakeNCBI() as fake:
        yield fake

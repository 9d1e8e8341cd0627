"""Where the real recorded data lives, for tests and fixtures.

``../shared/data`` next to the project holds third-party recordings (NCBI replies, PubMed
files) that are read in place, never copied into the repository. CI has it; a user's fresh
clone does not, so tests that need it skip with a reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def data_file(*parts: str) -> Path:
    """A file of the shared real-data corpus, or skip: a fresh clone has no ../shared/data."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (see ../shared/data/README.md)")
    return path

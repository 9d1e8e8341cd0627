"""A plain (non-editable) install must carry everything the commands read at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harvest import shared_dir

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_checkout_uses_the_repository_folders() -> None:
    assert shared_dir("db") == REPO / "db"
    assert (shared_dir("db") / "metadata.yml").is_file()
    assert (shared_dir("notebooks") / "does_it_work.ipynb").is_file()


def test_wheel_carries_the_datasette_files_notebooks_and_rules(tmp_path: Path) -> None:
    # Built from a copy, so the repository gets no build/ folder and the test can plant a stray
    # database in db/, which must never ship.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks", "*.db"))  # fmt: skip
    (src / "db" / "stray.db").write_bytes(b"SQLite format 3\0")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = tmp_path.glob("doesitwork-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("harvest/db/metadata.yml", "harvest/db/plugins/doesitwork_exports.py",
                   "harvest/notebooks/does_it_work.ipynb", "harvest/notebooks/intervention.ipynb",
                   "harvest/harvest.toml", "harvest/rules/design.toml", "harvest/rules/ruleset.toml",
                   "harvest/data/sample_records.jsonl", "harvest/csl/apa.csl", "harvest/py.typed"):  # fmt: skip
        assert needed in names, needed
    assert not [n for n in names if n.endswith(".db")]

"""The offline demo: a database built from a bundled sample of real on-topic records.

The sample (``harvest/data/sample_records.jsonl``) is bibliographic facts on dry needling,
IMS and prolotherapy compiled from public pages; each record keeps the ``source`` it was
taken from, stored as the sighting's provenance.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvest import store
from harvest.ingest import OnChanged, write_batch
from harvest.models import MeshHeading, Study

SOURCE = "sample"


def sample_records() -> Iterator[dict[str, Any]]:
    """The bundled sample, one dict per record."""
    text = (resources.files("harvest") / "data" / "sample_records.jsonl").read_text("utf-8")
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


# "J Endod. 2023 Feb;49(2):129-136", "2018 May 15;18:157", "Acupunct Med 21(3):80": the
# volume(issue):pages part of the citations the sample was compiled with.
_LOCATION = re.compile(r"(?<![\w(])(\d+)(?:\((\w+(?:-\w+)?)\))?:\s*([A-Za-z]?\d+(?:-[A-Za-z]?\d+)?)\b")


def citation_location(citation: str | None) -> tuple[str | None, str | None, str | None]:
    """(volume, issue, pages) from a citation string, or Nones when it has no such part."""
    match = _LOCATION.search(citation or "")
    return (match[1], match[2], match[3]) if match else (None, None, None)


def record_to_study(rec: dict[str, Any]) -> Study:
    """Map a sample record; ``"Term*"`` in its MeSH list marks a major topic, as PubMed shows."""
    mesh = [MeshHeading(m.rstrip("*"), major=m.endswith("*")) for m in rec.get("mesh", [])]
    volume, issue, pages = citation_location(rec.get("citation"))
    return Study(
        title=rec["title"],
        pmid=rec.get("pmid"),
        doi=rec.get("doi"),
        pmcid=rec.get("pmcid"),
        abstract=rec.get("abstract"),
        journal=rec.get("journal"),
        volume=volume,
        issue=issue,
        pages=pages,
        pub_date=str(rec["year"]) if rec.get("year") else None,
        year=rec.get("year"),
        authors=rec.get("authors", []),
        publication_types=rec.get("publication_types", []),
        mesh=mesh,
        record_source="sample",
    )


def build_demo(path: str | os.PathLike[str], *, on_changed: OnChanged | None = None) -> Database:
    """(Re)build the demo database from the sample; returns it open."""
    path = Path(path)
    if path.exists() and not _holds_nothing(path) and not is_demo_db(path):
        raise store.StoreError(
            f"{path}: exists and is not a demo database; refusing to overwrite it "
            "(choose another --db path, or remove the file yourself)"
        )
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        try:
            old.unlink(missing_ok=True)
        except OSError as exc:
            raise store.StoreError(
                f"{old}: cannot remove the previous demo database ({exc.strerror or exc}); "
                "choose another --db path"
            ) from exc
    db = store.open_db(path)
    store.ensure_source(db, SOURCE, kind="sample", query="bundled sample of real records")
    run_id = store.start_run(db, SOURCE)
    with store.write_tx(db):
        for rec in sample_records():
            # One record per call so each sighting keeps the page it was compiled from.
            write_batch(db, [record_to_study(rec)], run_id=run_id,
                        how=f"sample: {rec['source']}", on_changed=on_changed)  # fmt: skip
    store.finish_run(db, run_id, status="ok")
    return db


def _holds_nothing(path: Path) -> bool:
    """An empty file (``touch db/demo.db``) loses nothing when replaced. (SQLite writes a
    database's first page before any write-ahead log, so an empty file has no log either.)"""
    return path.is_file() and path.stat().st_size == 0


def is_demo_db(path: Path) -> bool:
    """True if ``path`` is a doesitwork database whose only source is the bundled sample,
    i.e. one ``build_demo`` made and may rebuild. Reads it as it is; never changes it."""
    try:
        db = store.open_read_only(path)
    except store.StoreError:
        return False  # not SQLite, or not ours
    try:
        sources = {row[0] for row in db.execute("SELECT name FROM sources")}
    except sqlite3.Error:
        return False  # ours in name only: no sources table
    finally:
        db.conn.close()
    return sources == {SOURCE}


def summarize(db: Database) -> dict[str, Any]:
    """Counts a newcomer wants to see: studies, by year range, with PMID/DOI/abstract."""
    row = next(db.query("""
        SELECT count(*) AS studies, count(pmid) AS with_pmid, count(doi) AS with_doi,
               count(abstract) AS with_abstract, min(year) AS first_year, max(year) AS last_year,
               sum(retracted) AS retracted
        FROM studies WHERE deleted = 0
    """))  # fmt: skip
    return dict(row)

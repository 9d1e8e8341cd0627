"""The workbench's fixture database, built from real records only.

The bundled demo sample (52 on-topic records), Biopython's recorded efetch replies and
PubMed-format exports, and a handful of records picked by PMID from a real NLM update file
for their awkward titles (%, &, {}, #, _, ~, >, Greek letters, MathML-derived text) and one
retraction. Shared data is read in place; tests skip when it is absent.

:func:`build_demo_fixture_db` needs no shared data (the demo sample ships in the package),
so the basic workbench tests also run in a user's clone.
"""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from datafiles import SHARED_DATA
from lxml import etree

from harvest import demo, export, ingest, reading_lists, tagging
from harvest.store import open_db

UPDATE_FILE = SHARED_DATA / "pubmed" / "pubmed21n1298-even.xml.gz"
# PMID -> why it is here
AWKWARD = {
    "33737034": "% in the title",
    "33565264": "& in the title",
    "34095938": "{} in the title",
    "33821504": "MathML-derived T2∗",
    "34088036": "~ in the title",
    "33245788": "# in the title",
    "33217152": "_ in the title",
    "33176546": "> in the title",
    "30534744": "Greek β",
    "31031480": "retracted",
}
LIST_NAME = "knee OA"
LIST_PMIDS = ["23690322", "38705988"]
LIST_NOTE = "key trial"


def _extract(pmids: set[str], out: Path) -> None:
    """Copy the PubmedArticle elements of these PMIDs from the NLM update file."""
    kept = []
    with gzip.open(UPDATE_FILE, "rb") as fh:
        for _, el in etree.iterparse(fh, tag="PubmedArticle", resolve_entities=False,
                                     no_network=True, load_dtd=False):  # fmt: skip
            if el.findtext("MedlineCitation/PMID") in pmids:
                kept.append(etree.tostring(el))
            el.clear()
    out.write_bytes(b"<PubmedArticleSet>" + b"".join(kept) + b"</PubmedArticleSet>")


def build_fixture_db(path: Path) -> Path:
    for needed in (SHARED_DATA / "eutils" / "biopython", SHARED_DATA / "medline", UPDATE_FILE):
        if not needed.exists():
            pytest.skip(f"real test data not found: {needed} (see ../shared/data/README.md)")
    demo.build_demo(path).conn.close()
    db = open_db(path)
    files = sorted((SHARED_DATA / "eutils" / "biopython").glob("pubmed*.xml"))
    files += sorted((SHARED_DATA / "medline").glob("*.txt"))
    awkward = path.parent / "awkward.xml"
    _extract(set(AWKWARD), awkward)
    for f in [*files, awkward]:
        result = ingest.import_file(db, f)
        assert result.error is None, (f, result.error)
    tagging.tag_studies(db)
    reading_lists.create_list(db, LIST_NAME, description="knee osteoarthritis trials")
    reading_lists.add_items(db, LIST_NAME, LIST_PMIDS, note=LIST_NOTE)
    db.conn.close()
    return path


def build_demo_fixture_db(path: Path) -> Path:
    """The bundled demo sample alone, tagged, with the same reading list (its two studies
    are in the sample)."""
    demo.build_demo(path).conn.close()
    db = open_db(path)
    tagging.tag_studies(db)
    reading_lists.create_list(db, LIST_NAME, description="knee osteoarthritis trials")
    reading_lists.add_items(db, LIST_NAME, LIST_PMIDS, note=LIST_NOTE)
    db.conn.close()
    return path


# --- reading the fixture through Datasette, as `harvest serve` runs it ---------------------


def datasette_for(db_path: Path) -> Any:
    """Datasette on ``db_path`` named "evidence", with our metadata and plugins. The time
    limits are generous (30 s; Datasette's defaults are 0.2 to 1 s) so that what a page shows
    does not depend on the machine's load: a facet over a busy machine's 1 s went missing."""
    from datasette.app import Datasette

    from harvest import serve

    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")
    return Datasette([str(db_path)], metadata=meta, plugins_dir=str(serve.DEFAULT_PLUGINS_DIR),
                     settings={"sql_time_limit_ms": 30000, "facet_time_limit_ms": 30000,
                               "facet_suggest_time_limit_ms": 30000,
                               "suggest_facets": False})  # as harvest serve runs it  # fmt: skip


def get(ds: Any, path: str) -> Any:
    return asyncio.run(ds.client.get(path))


def rows(ds: Any, path: str) -> list[dict[str, Any]]:
    r = get(ds, path + ("&" if "?" in path else "?") + "_shape=objects&_size=max")
    assert r.status_code == 200, r.text[:500]
    return r.json()["rows"]


def expected(db_path: Path, sql: str, args: list[Any] | None = None) -> list[Any]:
    """The first column of ``sql`` read straight from the file: what a page should show."""
    conn = sqlite3.connect(db_path)
    try:
        return [r[0] for r in conn.execute(sql, args or []).fetchall()]
    finally:
        conn.close()


def import_files(path: Path, files: list[Path]) -> Path:
    """A database at ``path`` holding these PubMed XML / MEDLINE files, each imported whole."""
    db = open_db(path)
    try:
        for f in files:
            result = ingest.import_file(db, f)
            assert result.error is None, result.error
    finally:
        db.conn.close()
    return path


def records_by_pmid(path: Path) -> dict[str, dict[str, Any]]:
    """Every study's export record (study, sources, tags), by PMID."""
    db = open_db(path)
    try:
        return {r["pmid"]: r for r in export.load_records(db, export.select_study_ids(db))}
    finally:
        db.conn.close()


def make_older_db(path: Path, *, migrations: list[str], columns: tuple[str, ...], studies: list[Any],
                  hash_row: Any) -> None:  # fmt: skip
    """A database as an earlier version left it: ``migrations`` not applied, their ``columns``
    absent, ``studies`` stored with the content hash that version computed (``hash_row``)."""
    from harvest import store

    db = open_db(path)
    with store.write_tx(db):
        marks = ",".join("?" * len(migrations))
        db.execute(f"DELETE FROM _sqlite_migrations WHERE name IN ({marks})", migrations)
        for col in columns:
            db.execute(f"ALTER TABLE studies DROP COLUMN {col}")
        for study in studies:
            row = {k: v for k, v in store.study_to_row(study).items() if k not in columns}
            row.update(content_hash=hash_row(row), first_seen="2026-01-01T00:00:00Z",
                       last_updated="2026-01-01T00:00:00Z")  # fmt: skip
            db["studies"].insert(row)
    db.conn.close()

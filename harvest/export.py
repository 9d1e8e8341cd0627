"""Exports of the evidence base. JSONL here; the workbench issue adds RIS, BibTeX, CSL-JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlite_utils import Database

_JSON_COLUMNS = ("authors", "languages", "publication_types", "mesh", "keywords", "corrections")

_SOURCES_SQL = """
SELECT s.study_id, group_concat(DISTINCT r.source) AS sources
FROM sightings s JOIN runs r ON r.id = s.run_id
GROUP BY s.study_id
"""


def iter_studies(db: Database, *, include_deleted: bool = True) -> Iterator[dict[str, Any]]:
    """One dict per study, lists decoded, with the names of the sources that saw it."""
    sources = {r["study_id"]: r["sources"].split(",") for r in db.query(_SOURCES_SQL)}
    where = "" if include_deleted else "WHERE deleted = 0"
    for row in db.query(f"SELECT * FROM studies {where} ORDER BY id"):
        out = dict(row)
        for col in _JSON_COLUMNS:
            out[col] = json.loads(out[col]) if out[col] else []
        out["retracted"] = bool(out["retracted"])
        out["deleted"] = bool(out["deleted"])
        out["sources"] = sorted(sources.get(row["id"], []))
        for col in ("content_hash", "mesh_text", "keywords_text", "missing_count"):
            out.pop(col, None)
        yield out


def to_jsonl(studies: Iterator[dict[str, Any]]) -> Iterator[str]:
    for study in studies:
        yield json.dumps(study, ensure_ascii=False) + "\n"

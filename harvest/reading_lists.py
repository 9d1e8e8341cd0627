"""Named reading lists stored in the evidence database.

A list holds study ids (stable across revisions of a record), each with an optional note;
``query`` keeps the filters a list was created from, so it can be refreshed or alerted on.
Writes take their own ``BEGIN IMMEDIATE`` transaction, so they wait for a cron harvest
instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from sqlite_utils import Database

from harvest.store import utcnow, write_tx


class ReadingListError(Exception):
    """An unknown list, a duplicate name or a study reference that matches nothing."""


def _tx(db: Database) -> Any:
    return nullcontext() if db.conn.in_transaction else write_tx(db)


def get_list(db: Database, name: str) -> dict[str, Any]:
    row = db.execute("SELECT * FROM reading_lists WHERE name = ?", [name]).fetchone()
    if row is None:
        names = [r[0] for r in db.execute("SELECT name FROM reading_lists ORDER BY name")]
        known = f"; lists: {', '.join(names)}" if names else "; there are no lists yet"
        raise ReadingListError(f"no reading list named {name!r}{known}")
    cols = [d[0] for d in db.execute("SELECT * FROM reading_lists LIMIT 0").description]
    return dict(zip(cols, row, strict=True))


def create_list(
    db: Database, name: str, *, description: str | None = None,
    query: dict[str, Any] | None = None, study_ids: Sequence[int] = (),
) -> dict[str, Any]:  # fmt: skip
    """Create a list, optionally filled with ``study_ids`` (e.g. from an export query)."""
    name = name.strip()
    if not name:
        raise ReadingListError("a reading list needs a name")
    now = utcnow()
    with _tx(db):
        if db.execute("SELECT 1 FROM reading_lists WHERE name = ?", [name]).fetchone():
            raise ReadingListError(f"a reading list named {name!r} already exists")
        db.execute(
            "INSERT INTO reading_lists (name, description, query, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            [name, description, json.dumps(query, ensure_ascii=False) if query else None, now, now],
        )
        _add_ids(db, get_list(db, name)["id"], study_ids, note=None, now=now)
    return get_list(db, name)


def _add_ids(db: Database, list_id: int, ids: Sequence[int], *, note: str | None, now: str) -> int:
    """Add the studies not on the list yet; a note also replaces those already on it.
    Returns how many were added."""
    added = 0
    for sid in ids:
        cur = db.execute(
            "INSERT INTO reading_list_items (list_id, study_id, note, added) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (list_id, study_id) DO NOTHING",
            [list_id, sid, note, now],
        )
        added += cur.rowcount
        if not cur.rowcount and note is not None:
            db.execute("UPDATE reading_list_items SET note = ? WHERE list_id = ? AND study_id = ?",
                       [note, list_id, sid])  # fmt: skip
    return added


def _study_ids(db: Database, refs: Sequence[str]) -> list[int]:
    """The studies.id of each reference, as ``harvest tag`` reads them: a bare number or
    ``pmid:N`` a PMID, ``doi:10.xxxx/...`` a DOI, ``id:N`` the row (a feed-only study)."""
    from harvest.tagging import TagError, resolve_study  # lazily: tagging is the larger module

    ids = []
    for ref in refs:
        try:
            ids.append(resolve_study(db, ref))
        except TagError as exc:
            raise ReadingListError(str(exc)) from exc
    return ids


def add_items(db: Database, name: str, refs: Sequence[str], *, note: str | None = None) -> int:
    """Add studies by reference (PMID, ``doi:…``, ``id:N``; all or none); a note replaces
    the item's earlier note. Returns how many were not on the list before."""
    now = utcnow()
    with _tx(db):
        lst = get_list(db, name)
        count = _add_ids(db, lst["id"], _study_ids(db, refs), note=note, now=now)
        db.execute("UPDATE reading_lists SET updated = ? WHERE id = ?", [now, lst["id"]])
    return count


def remove_items(db: Database, name: str, refs: Sequence[str]) -> int:
    """Remove studies by reference (PMID, ``doi:…``, ``id:N``); returns how many were on
    the list."""
    with _tx(db):
        lst = get_list(db, name)
        removed = 0
        for sid in _study_ids(db, refs):
            removed += db.execute(
                "DELETE FROM reading_list_items WHERE list_id = ? AND study_id = ?", [lst["id"], sid]
            ).rowcount
        db.execute("UPDATE reading_lists SET updated = ? WHERE id = ?", [utcnow(), lst["id"]])
    return removed


def delete_list(db: Database, name: str) -> None:
    with _tx(db):
        lst = get_list(db, name)
        db.execute("DELETE FROM reading_list_items WHERE list_id = ?", [lst["id"]])
        db.execute("DELETE FROM reading_lists WHERE id = ?", [lst["id"]])


def list_items(db: Database, name: str) -> list[dict[str, Any]]:
    """The list's studies in the order they were added, with notes and current titles;
    ``ref`` is how to name each one to ``harvest list``/``tag`` (PMID, else doi:, else id:)."""
    lst = get_list(db, name)
    rows = list(
        db.query(
            "SELECT s.id AS study_id, s.pmid, s.doi, s.year, s.title, s.retracted, s.deleted, i.note, "
            "i.added, (SELECT count(*) FROM studies d WHERE d.doi = s.doi AND d.deleted = 0) "
            "AS live_with_doi FROM reading_list_items i JOIN studies s ON s.id = i.study_id "
            "WHERE i.list_id = ? ORDER BY i.added, i.rowid",  # rowid: order within one second
            [lst["id"]],
        )
    )
    for row in rows:
        # doi: only where it names this study alone (resolve_study refuses a shared DOI)
        live_with_doi = row.pop("live_with_doi")
        unique_doi = row["doi"] and not row["deleted"] and live_with_doi == 1
        row["ref"] = row["pmid"] or (f"doi:{row['doi']}" if unique_doi else f"id:{row['study_id']}")
    return rows


def all_lists(db: Database) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT l.name, l.description, l.created, l.updated, count(i.study_id) AS items "
            "FROM reading_lists l LEFT JOIN reading_list_items i ON i.list_id = l.id "
            "GROUP BY l.id ORDER BY l.name"
        )
    )

"""The evidence store: opening the database and every write to it.

One row per study whatever the source; harvest state (cursors, validators) and run
history live in the database itself, so a killed run loses nothing: each batch and
its cursor move commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvest import schema
from harvest.lock import pid_alive
from harvest.models import Study

# Writers wait this long for another writer (a Datasette reader never blocks them in WAL).
BUSY_TIMEOUT_S = 30
# Fields a later source may fill but must never blank (a feed never erases PubMed's data).
_MERGE_FIELDS = (
    "pmid", "pmid_version", "doi", "pmcid", "title", "abstract", "journal", "pub_date",
    "year", "authors", "languages", "publication_types", "mesh", "mesh_text", "keywords",
    "keywords_text", "medline_status", "date_revised", "corrections", "url", "retracted",
    "volume", "issue", "pages", "journal_abbrev", "work_type", "publisher", "publisher_place",
)  # fmt: skip
# Merge fields added after rows were first hashed, one group per schema change: a group
# enters the content hash only when one of its fields is set, so a record without them
# keeps the hash it always had (see :func:`_hash`).
_LATER_FIELDS = (
    ("volume", "issue", "pages"),  # m004
    ("journal_abbrev",),  # m005
    ("work_type", "publisher", "publisher_place"),  # m007: set on book records only
)
_HASHED_ALWAYS = tuple(k for k in _MERGE_FIELDS if not any(k in group for group in _LATER_FIELDS))
# Record sources in order of authority: PubMed's own record beats a feed's description.
_AUTHORITY = {"pubmed": 3, "medline": 3, "sample": 1, "feed": 1}
# Only NLM's own records replace each other's fields (revisions); two feeds describing one
# work only fill each other's blanks, or they would overwrite each other on every run.
_TOP_AUTHORITY = max(_AUTHORITY.values())


class StoreError(Exception):
    """A database that cannot be used: not ours, unwritable, or corrupt."""


def utcnow() -> str:
    """UTC timestamp as ISO 8601 with a ``Z``: sortable, and what Datasette shows."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_db(path: str | os.PathLike[str], *, create: bool = True, read_only: bool = False) -> Database:
    """Open (or create) the evidence database and bring its schema up to date.

    WAL lets Datasette and notebooks read while cron writes; the busy timeout makes a
    second writer wait instead of failing at once. ``read_only`` (for commands that only
    read) also accepts a file this user may not write, e.g. a shared snapshot.
    """
    path = Path(path)
    if read_only and path.exists() and not _writable(path):
        return _open_read_only(path)
    if str(path) != ":memory:":
        _check_path(path, create=create)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        db = Database(conn)
        check_ours(db, path)
        if str(path) != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            # Bounds the -wal file after a bulk load (field notes 3.8: 2 GB otherwise).
            db.execute("PRAGMA journal_size_limit=67108864")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        if schema.migrations.pending(db):
            with write_tx(db):
                schema.apply(db)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from exc
    except StoreError:
        conn.close()
        raise
    return db


# How long the check waits for a harvest's write lock (a batch holds it for less).
CHECK_BUSY_TIMEOUT_MS = 3000


def check_database(db: Database) -> tuple[list[str], list[str]]:
    """(what is wrong with the file, what could not be checked), in words: SQLite's quick
    check, then a full comparison of the full-text index with the ``studies`` rows.

    The index is kept current by triggers. A program outside harvest that runs
    ``INSERT OR REPLACE`` on ``studies`` without ``PRAGMA recursive_triggers = ON`` replaces a
    row without firing them, so searches find its old words; only the full comparison
    (``rank = 1``) notices. It writes nothing, but SQLite runs it as a write: on a read-only
    connection, or while a harvest holds the write lock, it is not checked (not a problem).
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check") if row[0] != "ok"]
    unchecked = []
    waited = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute(f"PRAGMA busy_timeout = {CHECK_BUSY_TIMEOUT_MS}")
    try:
        db.execute("INSERT INTO studies_fts(studies_fts, rank) VALUES('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_CORRUPT:
            unchecked.append(f"full-text index not checked ({exc})")
        else:
            problems.append(
                f"the full-text index does not match the studies table ({exc}): a program "
                "outside harvest wrote to it (INSERT OR REPLACE without PRAGMA "
                "recursive_triggers = ON?); rebuild it with: sqlite-utils rebuild-fts DB studies"
            )
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(waited)}")
    return problems, unchecked


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def open_read_only(path: Path) -> Database:
    """Read a database as it is, creating and changing nothing beside it (no WAL switch, no
    migration); raises :class:`StoreError` when it is not SQLite or not ours."""
    # Without a -wal file everything is in the main file: immutable needs no -shm beside it.
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from exc
    try:
        db = Database(conn)
        check_ours(db, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from exc
    except StoreError:
        conn.close()
        raise
    return db


def _open_read_only(path: Path) -> Database:
    """A database we may not write, read as it is, if its schema is current."""
    db = open_read_only(path)
    if schema.migrations.pending(db):
        db.conn.close()
        raise StoreError(f"{path}: read-only, and made by an older version of doesitwork; open it "
                         "once with write access to bring its schema up to date")  # fmt: skip
    return db


def _check_path(path: Path, *, create: bool) -> None:
    if path.exists():
        if not create and path.is_file() and path.stat().st_size == 0:
            # A command that only reads must not turn an empty file into a database.
            raise StoreError(f"{path}: empty file, no database yet (run `harvest run` or "
                             "`harvest import` first)")  # fmt: skip
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"{path}: database file is not readable and writable")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"{path.parent}: folder is not writable (SQLite needs it for WAL)")
        return
    if not create:
        raise StoreError(f"{path}: no such database (run `harvest run` or `harvest import` first)")
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"{parent}: cannot create the database folder ({exc})") from exc
    if not os.access(parent, os.W_OK):
        raise StoreError(f"{parent}: folder is not writable, cannot create {path.name}")


def check_ours(db: Database, path: Path) -> None:
    """Refuse to migrate somebody else's database into ours."""
    tables = set(db.table_names())
    if not tables:
        return
    if "_sqlite_migrations" in tables and db["_sqlite_migrations"].count_where(
        "migration_set = ?", [schema.migrations.name]
    ):
        return
    raise StoreError(
        f"{path}: this SQLite database was not made by doesitwork "
        f"(it has tables {', '.join(sorted(tables)[:5])}); choose another --db path"
    )


@contextmanager
def write_tx(db: Database) -> Iterator[Database]:
    """One write transaction, taken with ``BEGIN IMMEDIATE``.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
    when another writer holds the lock; IMMEDIATE takes the lock first and waits for
    the busy timeout instead. sqlite-utils calls inside nest as savepoints.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.rollback()
        raise
    else:
        db.conn.commit()


# --- studies ---------------------------------------------------------------------


def study_to_row(study: Study) -> dict[str, Any]:
    """Map a :class:`Study` to a ``studies`` row (without identity or timestamps)."""
    mesh = study.mesh
    keywords = study.keywords
    corrections = study.corrections
    return {
        "pmid": study.pmid,
        "pmid_version": study.pmid_version,
        "doi": study.doi,
        "pmcid": study.pmcid,
        "title": study.title,
        "abstract": study.abstract,
        "journal": study.journal,
        "journal_abbrev": study.journal_abbrev or None,
        "volume": study.volume or None,
        "issue": study.issue or None,
        "pages": study.pages or None,
        "work_type": study.work_type or None,
        "publisher": study.publisher or None,
        "publisher_place": study.publisher_place or None,
        "pub_date": study.pub_date,
        "year": study.year,
        "authors": _json_list(study.authors),
        "languages": _json_list(study.languages),
        "publication_types": _json_list(study.publication_types),
        "mesh": _json_list([m.to_json() for m in mesh]) if mesh else None,
        "mesh_text": "; ".join([m.descriptor + ("*" if m.is_major else "") for m in mesh])
        or None,
        "keywords": _json_list(keywords),
        "keywords_text": "; ".join(keywords) or None,
        "medline_status": study.medline_status,
        "date_revised": study.date_revised,
        "corrections": _json_list(
            [{"ref_type": c.ref_type, "pmid": c.pmid, "ref_source": c.ref_source}
             for c in corrections]
        ) if corrections else None,  # fmt: skip
        "url": study.url,
        "record_source": study.record_source,
        "retracted": int(study.retracted),
    }


# json.dumps(items, ensure_ascii=False) without its per-call argument handling: the
# same encoder json.dumps builds for these arguments (same output), made once.
_JSON_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _json_list(items: Sequence[Any]) -> str | None:
    return _JSON_ENCODE(list(items)) if items else None


def _hash(row: dict[str, Any]) -> str:
    """A fingerprint of the stored content: equal hashes mean an unchanged record.

    ``repr`` of a tuple of str/int/None is stable and three times cheaper than JSON,
    which matters on the re-import path where every record is hashed and compared.

    Each group of :data:`_LATER_FIELDS` is appended only when one of its fields is set: a
    row stored before they existed, and any record that still lacks them, hashes exactly as
    before, so an upgrade does not make a re-import count every such row as updated. A
    record that brings them to a row without them is a change, stored on that save (once).
    """
    values = [row.get(k) for k in _HASHED_ALWAYS]
    for group in _LATER_FIELDS:
        later = [row.get(k) for k in group]
        if any(v is not None for v in later):
            values += later
    return hashlib.sha1(repr(tuple(values)).encode()).hexdigest()


@dataclass
class SaveResult:
    """What a batch did: counts for the run row, and the ids a tagger must revisit."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    changed_ids: list[int] = field(default_factory=list)
    seen_ids: list[int] = field(default_factory=list)

    def add(self, other: SaveResult) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.changed_ids += other.changed_ids
        self.seen_ids += other.seen_ids


# Finds the existing row (as returned by :func:`existing_row`) for a new row, or None.
Resolver = Callable[[Database, dict[str, Any]], "dict[str, Any] | None"]

_EXISTING_COLS = "id, pmid, doi, content_hash, record_source, pmid_version, deleted, " + ", ".join(
    c for c in _MERGE_FIELDS if c not in ("pmid", "doi", "pmid_version")
)


def save_studies(
    db: Database,
    studies: Iterable[Study],
    *,
    run_id: int | None = None,
    how: str | None = None,
    now: str | None = None,
    resolve: Resolver | None = None,
) -> SaveResult:
    """Insert new studies and update revised ones; the caller owns the transaction.

    Identity is the PMID, else (for a PubMed record meeting a feed-only row) the DOI,
    else whatever ``resolve(db, row)`` finds (the feeds' fuzzy title match).
    A revision keeps ``first_seen``; an older PMID version never replaces a newer one;
    a study seen again after a tombstone is alive again. Each study seen by a run gets a
    sighting row, which is the provenance Datasette shows.
    """
    return save_rows(db, [study_to_row(s) for s in studies], run_id=run_id, how=how, now=now,
                     resolve=resolve)  # fmt: skip


def save_rows(
    db: Database,
    rows: list[dict[str, Any]],
    *,
    run_id: int | None = None,
    how: str | None = None,
    now: str | None = None,
    resolve: Resolver | None = None,
) -> SaveResult:
    """:func:`save_studies` for rows already made by :func:`study_to_row`; the rows are consumed."""
    now = now or utcnow()
    result = SaveResult()
    if not rows:
        return result
    existing = _find_existing(db, rows)
    inserts: list[dict[str, Any]] = []
    returned: list[str] = []  # PMIDs of stored studies PubMed just returned: no longer missing
    for row in rows:
        old = existing.get(("pmid", row["pmid"]))
        if old is None:
            # A feed-only row found by DOI is claimed once: a second PMID with the same DOI
            # in this batch must not merge into it too (resolve sees the claimed row's PMID).
            old = existing.pop(("doi", row["doi"]), None)
        if old is None and resolve is not None:
            old = resolve(db, row)
        if old is None:
            row["content_hash"] = _hash(row)
            row["first_seen"] = row["last_updated"] = now
            inserts.append(row)
            continue
        result.seen_ids.append(old["id"])
        if row["record_source"] == "pubmed" and row["pmid"]:
            returned.append(row["pmid"])
        if _update_existing(db, old, row, now):
            result.updated += 1
            result.changed_ids.append(old["id"])
        else:
            result.unchanged += 1
    if inserts:
        first = db.execute("SELECT coalesce(max(id), 0) FROM studies").fetchone()[0]
        _insert_rows(db, inserts)
        new_ids = [r[0] for r in db.execute("SELECT id FROM studies WHERE id > ?", [first])]
        result.new += len(new_ids)
        result.changed_ids += new_ids
        result.seen_ids += new_ids
    clear_missing(db, returned)
    if run_id is not None and result.seen_ids:
        # What sqlite-utils' insert_all(ignore=True) runs, without its per-row conversions.
        db.conn.executemany(
            "INSERT OR IGNORE INTO sightings (run_id, study_id, seen_at, how) VALUES (?, ?, ?, ?)",
            [(run_id, i, now, how) for i in result.seen_ids],
        )
    return result


def _update_existing(db: Database, old: dict[str, Any], row: dict[str, Any], now: str) -> bool:
    """Merge ``row`` into the stored study ``old``; whether anything changed."""
    if _older_copy(old, row):  # it neither rolls the study back nor undoes a deletion
        return False
    merged = _merge(old, row)
    # Only NLM's own record brings a deleted study back (PubMed returning its PMID); a
    # feed seeing the work must not undo a DeleteCitation or a merge.
    revive = bool(old["deleted"]) and _from_nlm(row)
    if merged is None and not revive:
        return False
    merged = merged or {}
    merged.update(last_updated=now, missing_count=0)
    if revive:
        merged.update(deleted=0, deleted_reason=None)
    db["studies"].update(old["id"], merged)
    if old["pmid"] and (merged.get("doi") or (revive and old["doi"])):
        # PubMed gave a study its DOI at last, or brought it back: feed-only rows with
        # that DOI (a feed may have listed the work meanwhile) were this study all along
        _absorb_feed_rows(db, old["id"], merged.get("doi") or old["doi"], now=now)
    return True


def _insert_rows(db: Database, rows: list[dict[str, Any]]) -> None:
    """Insert a batch as one ``INSERT … SELECT`` from a temporary staging table.

    FTS5 writes its pending terms out as a new index segment at every statement
    savepoint, so ``executemany`` straight into ``studies`` (one statement per row, each
    firing the FTS trigger) left thousands of one-row segments for FTS5 to merge: about
    twice the work on a 10k-record import. Through the staging table the same triggers
    fire inside a single statement. Plain ``executemany`` rather than sqlite-utils
    because the rows already have the table's shape, and its per-value conversions cost
    more than SQLite itself.
    """
    cols = list(rows[0])
    names = ", ".join(cols)
    # Made per batch, so it always has the table's current columns.
    db.execute("CREATE TEMP TABLE studies_staging AS SELECT * FROM main.studies WHERE 0")
    db.conn.executemany(
        f"INSERT INTO temp.studies_staging ({names}) VALUES ({', '.join('?' * len(cols))})",
        [[r[c] for c in cols] for r in rows],
    )
    db.execute(f"INSERT INTO main.studies ({names}) SELECT {names} FROM temp.studies_staging ORDER BY rowid")
    db.execute("DROP TABLE temp.studies_staging")


def _absorb_feed_rows(db: Database, keep: int, doi: str, *, now: str) -> None:
    """Fold feed-only studies with this DOI into study ``keep``: they were one work all along
    (the feed entry came before PubMed had the DOI, worded too differently to match). Their
    sightings, feed entries, reading-list places and manual tags move over, their fields fill
    ``keep``'s blanks, and each stays as a tombstone naming ``keep``."""
    gone_ids = [r[0] for r in db.execute(
        "SELECT id FROM studies WHERE doi = ? AND pmid IS NULL AND deleted = 0 AND id != ?", [doi, keep]
    )]  # fmt: skip
    for gone in gone_ids:
        for table, which in (("sightings", ""), ("reading_list_items", ""), ("tags", " AND origin = 'manual'")):
            db.execute(f"UPDATE OR IGNORE {table} SET study_id = ? WHERE study_id = ?{which}", [keep, gone])
            db.execute(f"DELETE FROM {table} WHERE study_id = ?", [gone])
        db.execute("UPDATE feed_entries SET study_id = ? WHERE study_id = ?", [keep, gone])
        filled = _merge(existing_row(db, keep), existing_row(db, gone))
        if filled:
            db["studies"].update(keep, {**filled, "last_updated": now})
        db["studies"].update(gone, {"deleted": 1, "deleted_reason": f"merged into study {keep}",
                                    "last_updated": now})  # fmt: skip


def existing_row(db: Database, study_id: int) -> dict[str, Any]:
    """The columns :func:`save_studies` needs to merge into study ``study_id``."""
    return next(db.query(f"SELECT {_EXISTING_COLS} FROM studies WHERE id = ?", [study_id]))


def _find_existing(db: Database, rows: list[dict[str, Any]]) -> dict[tuple[str, Any], dict]:
    """Look up the batch's PMIDs (and DOIs of live feed-only rows) in a few queries. A
    tombstone is found by its own PMID only: by DOI it would be a merged row's shell."""
    found: dict[tuple[str, Any], dict] = {}
    pmids = [r["pmid"] for r in rows if r["pmid"]]
    dois = [r["doi"] for r in rows if r["doi"]]
    for chunk in _chunks(pmids, 500):
        sql = f"SELECT {_EXISTING_COLS} FROM studies WHERE pmid IN ({','.join('?' * len(chunk))})"
        for r in db.query(sql, chunk):
            found[("pmid", r["pmid"])] = r
    for chunk in _chunks(dois, 500):
        marks = ",".join("?" * len(chunk))
        sql = (f"SELECT {_EXISTING_COLS} FROM studies "
               f"WHERE doi IN ({marks}) AND pmid IS NULL AND deleted = 0")
        for r in db.query(sql, chunk):
            found.setdefault(("doi", r["doi"]), r)
    return found


def _from_nlm(row: dict[str, Any]) -> bool:
    """Whether a row is NLM's own record (PubMed, a MEDLINE export), not a description."""
    return _AUTHORITY.get(row["record_source"], 1) == _TOP_AUTHORITY


def _older_copy(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` is an older copy of the record ``old`` holds: a lower PMID version, or
    the same version revised earlier (an old export or baseline imported after newer
    harvests). ISO dates compare as text. NLM's records gain a DateRevised and never lose
    it, so NLM's copy without one is older than a dated row; a feed's copy never has one."""
    if not old["pmid"] or new["pmid"] != old["pmid"]:
        return False
    new_version, old_version = new["pmid_version"] or 1, old["pmid_version"] or 1
    if new_version != old_version:
        return new_version < old_version
    if not new["date_revised"]:
        return _from_nlm(new) and bool(old["date_revised"])
    return new["date_revised"] < (old["date_revised"] or "")


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """Return the columns to update, or None when nothing changes.

    A less authoritative source (a feed) only fills blanks, and so does another feed; a more
    authoritative one (PubMed) replaces fields but never blanks one.
    """
    new_rank = _AUTHORITY.get(new["record_source"], 1)
    old_rank = _AUTHORITY.get(old["record_source"], 1)
    out = {}
    for key in _MERGE_FIELDS:
        value, current = new.get(key), old.get(key)
        if value in (None, "") or value == current:
            continue
        if current in (None, "") or new_rank > old_rank or new_rank == old_rank == _TOP_AUTHORITY:
            out[key] = value
    if new_rank > old_rank:
        out["record_source"] = new["record_source"]
    candidate = {k: out.get(k, old.get(k)) for k in _MERGE_FIELDS}
    new_hash = _hash(candidate)
    if new_hash == old["content_hash"]:
        return None
    out["content_hash"] = new_hash
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def mark_deleted(db: Database, pmids: Iterable[str], *, reason: str, now: str | None = None) -> int:
    """Tombstone studies NLM deleted: the row stays, flagged, so history is never lost."""
    now = now or utcnow()
    count = 0
    for chunk in _chunks(list(pmids), 500):
        marks = ",".join("?" * len(chunk))
        cur = db.execute(
            f"UPDATE studies SET deleted = 1, deleted_reason = ?, last_updated = ? "
            f"WHERE deleted = 0 AND pmid IN ({marks})",
            [reason, now, *chunk],
        )
        count += cur.rowcount
    return count


def record_missing(db: Database, pmids: Iterable[str], *, now: str | None = None) -> int:
    """Count a miss for PMIDs NCBI no longer returns; tombstone them at the second miss.

    One miss may be a transient short reply (field notes 3.4), two in a row are not.
    """
    now = now or utcnow()
    pmids = list(pmids)
    for chunk in _chunks(pmids, 500):
        marks = ",".join("?" * len(chunk))
        db.execute(
            f"UPDATE studies SET missing_count = missing_count + 1 WHERE pmid IN ({marks})", chunk
        )
    cur = db.execute(
        "UPDATE studies SET deleted = 1, deleted_reason = 'no longer returned by NCBI', "
        "last_updated = ? WHERE deleted = 0 AND missing_count >= 2",
        [now],
    )
    return cur.rowcount


def clear_missing(db: Database, pmids: Iterable[str]) -> None:
    """Reset the miss counter of PMIDs NCBI did return."""
    for chunk in _chunks(list(pmids), 500):
        marks = ",".join("?" * len(chunk))
        # only rows that need it: an UPDATE re-indexes the row's FTS entry
        db.execute(f"UPDATE studies SET missing_count = 0 WHERE missing_count > 0 AND pmid IN ({marks})", chunk)


def add_pending(db: Database, source: str, pmids: Sequence[str], *, now: str | None = None) -> None:
    """Keep PMIDs that efetch did not return, for the source's next run to ask again."""
    now = now or utcnow()
    db.conn.executemany(
        "INSERT OR IGNORE INTO pending_pmids (source, pmid, first_missed, last_tried, attempts) "
        "VALUES (?, ?, ?, ?, 1)",
        [(source, pmid, now, now) for pmid in pmids],
    )


def pending_pmids(db: Database, source: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT pmid FROM pending_pmids WHERE source = ? ORDER BY first_missed, pmid", [source]
    )]  # fmt: skip


def settle_pending(
    db: Database, source: str, asked: Sequence[str], returned: Iterable[str], *, now: str | None = None
) -> None:
    """Drop the pending PMIDs PubMed returned (or withdrew); count another try for the others."""
    returned = set(returned)
    now = now or utcnow()
    db.conn.executemany(
        "DELETE FROM pending_pmids WHERE source = ? AND pmid = ?", [(source, p) for p in returned]
    )
    db.conn.executemany(
        "UPDATE pending_pmids SET attempts = attempts + 1, last_tried = ? WHERE source = ? AND pmid = ?",
        [(now, source, p) for p in asked if p not in returned],
    )


# --- sources and runs -----------------------------------------------------------


def ensure_source(db: Database, name: str, **fields: Any) -> dict[str, Any]:
    """Create or refresh a configured source, keeping its harvest state."""
    with write_tx(db):
        db["sources"].upsert({"name": name, **fields}, pk="name")
    return get_source(db, name)


def get_source(db: Database, name: str) -> dict[str, Any]:
    return dict(db["sources"].get(name))


def update_source(db: Database, name: str, **fields: Any) -> None:
    """Update harvest state; call inside the batch's transaction so they commit together."""
    db["sources"].update(name, fields)


def start_run(db: Database, source: str, *, query_version: str | None = None) -> int:
    """Record a run as ``running`` and commit, so a killed run is visible afterwards; close
    this source's earlier runs whose process died as ``interrupted``."""
    now = utcnow()
    with write_tx(db):
        dead = [r["id"] for r in db.query(
            "SELECT id, pid FROM runs WHERE source = ? AND status = 'running'", [source]
        ) if not pid_alive(r["pid"])]  # fmt: skip
        for run_id in dead:
            db["runs"].update(run_id, {"status": "interrupted", "finished": now,
                                       "error": "the process ended without closing this run (killed or crashed)"})  # fmt: skip
        return db["runs"].insert(
            {
                "source": source,
                "started": now,
                "status": "running",
                "query_version": query_version,
                "pid": os.getpid(),
            }
        ).last_pk


def finish_run(
    db: Database, run_id: int, *, status: str, error: str | None = None, **counts: int
) -> None:
    """Close a run row and the source's summary (last success, failures in a row)."""
    now = utcnow()
    with write_tx(db):
        db["runs"].update(run_id, {"status": status, "finished": now, "error": error, **counts})
        source = db["runs"].get(run_id)["source"]
        src = get_source(db, source)
        fields: dict[str, Any] = {"last_status": status, "last_error": error}
        if status in ("ok", "unchanged", "partial"):
            fields.update(last_success=now, consecutive_failures=0)
        else:
            fields["consecutive_failures"] = (src.get("consecutive_failures") or 0) + 1
        update_source(db, source, **fields)


def add_run_counts(db: Database, run_id: int, **counts: int) -> None:
    """Add a committed batch's counts to its run row (inside that batch's transaction)."""
    sets = ", ".join(f"{k} = coalesce({k}, 0) + ?" for k in counts)
    db.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*counts.values(), run_id])

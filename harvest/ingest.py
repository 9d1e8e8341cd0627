"""Writing parsed records in batches, and importing files (PubMed XML, MEDLINE text).

Every batch is one ``BEGIN IMMEDIATE`` transaction holding the studies, their sightings,
tombstones, the run's counts and (when given) the caller's cursor move, so a process
killed at any point leaves either the whole batch or none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvest import store
from harvest.medline import MedlineError, parse_medline
from harvest.models import Deletion, Study
from harvest.pubmed_xml import PubmedXMLError, parse_pubmed_xml

# Called with the ids of new or revised studies inside the batch transaction (tagging).
OnChanged = Callable[[Database, list[int]], Any]

IMPORT_BATCH = 2000


@dataclass
class BatchCounts:
    found: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def add(self, other: BatchCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def write_batch(
    db: Database,
    items: Iterable[Study | Deletion],
    *,
    run_id: int | None,
    how: str | None = None,
    on_changed: OnChanged | None = None,
    resolve: store.Resolver | None = None,
) -> BatchCounts:
    """Save one batch inside the caller's transaction and add its counts to the run."""
    studies = _latest_versions(i for i in items if isinstance(i, Study))
    deletions = [i.pmid for i in items if isinstance(i, Deletion)]  # type: ignore[union-attr]
    saved = store.save_studies(db, studies, run_id=run_id, how=how, resolve=resolve)
    counts = BatchCounts(
        found=len(studies),
        new=saved.new,
        updated=saved.updated,
        unchanged=saved.unchanged,
        deleted=store.mark_deleted(db, deletions, reason="DeleteCitation") if deletions else 0,
    )
    if on_changed is not None and saved.changed_ids:
        on_changed(db, saved.changed_ids)
    if run_id is not None:
        store.add_run_counts(db, run_id, **counts.as_dict())
    return counts


def _latest_versions(studies: Iterable[Study]) -> list[Study]:
    """Keep one record per PMID in a batch: the highest version, else the last one.

    Update files can carry the same PMID twice; inserting both would break identity.
    """
    by_pmid: dict[str, Study] = {}
    out: list[Study] = []
    for s in studies:
        if s.pmid is None:
            out.append(s)
            continue
        prev = by_pmid.get(s.pmid)
        if prev is None or s.pmid_version >= prev.pmid_version:
            by_pmid[s.pmid] = s
    return out + list(by_pmid.values())


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class ImportResult:
    path: str
    counts: BatchCounts = field(default_factory=BatchCounts)
    error: str | None = None


def sniff_format(path: Path) -> str:
    """``xml`` for PubMed XML (plain or gzip), ``medline`` for PubMed-format text."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:2] == b"\x1f\x8b" or head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "xml"
    return "medline"


def iter_file(path: Path) -> Iterator[Study | Deletion]:
    """Parse one file of either kind, streaming."""
    if sniff_format(path) == "xml":
        return parse_pubmed_xml(path, name=path.name)
    return parse_medline(path, name=path.name)


def import_file(
    db: Database,
    path: str | os.PathLike[str],
    *,
    on_changed: OnChanged | None = None,
    batch_size: int = IMPORT_BATCH,
) -> ImportResult:
    """Import one file as one run of the ``import`` source.

    A malformed file keeps the records before the fault (they are committed batch by
    batch) and reports the parser's position in ``error``.
    """
    path = Path(path)
    result = ImportResult(str(path))
    source = "import"
    if not db["sources"].count_where("name = ?", [source]):
        store.ensure_source(db, source, kind="file", query="harvest import")
    run_id = store.start_run(db, source, query_version=path.name)
    pending: list[Study | Deletion] = []
    try:
        for item in iter_file(path):
            pending.append(item)
            if len(pending) >= batch_size:
                result.counts.add(_commit(db, pending, run_id, path, on_changed))
                pending = []
    except (PubmedXMLError, MedlineError, OSError, EOFError) as exc:
        result.error = str(exc) if not isinstance(exc, OSError) else f"{path}: {exc}"
    if pending:  # the good records read before a fault are kept
        result.counts.add(_commit(db, pending, run_id, path, on_changed))
    store.finish_run(db, run_id, status="error" if result.error else "ok", error=result.error)
    return result


def _commit(
    db: Database, items: list[Study | Deletion], run_id: int, path: Path, on_changed: OnChanged | None
) -> BatchCounts:
    with store.write_tx(db):
        return write_batch(db, items, run_id=run_id, how=f"file:{path.name}", on_changed=on_changed)

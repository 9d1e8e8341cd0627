"""What ``harvest status`` reports: per-source health read from the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlite_utils import Database

from harvest.lock import pid_alive

_SQL = """
SELECT s.*, r.id AS run_id, r.started, r.finished, r.status AS run_status, r.found, r.new,
       r.updated, r.deleted, r.unavailable, r.error AS run_error, r.pid, r.query_version AS run_qv,
       (SELECT count(*) FROM pending_pmids p WHERE p.source = s.name) AS pending
FROM sources s
LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE source = s.name)
ORDER BY s.kind, s.name
"""


def source_status(db: Database, *, now: datetime) -> list[dict[str, Any]]:
    """One dict per source with its last run and the warnings a cron owner needs."""
    rows = []
    for row in db.query(_SQL):
        row = dict(row)
        warnings = []
        if row["run_status"] == "running" and not pid_alive(row["pid"]):
            row["run_status"] = "interrupted"
            again = "import the file again" if row["kind"] == "file" else "the next run resumes"
            warnings.append(f"last run was interrupted (killed or crashed); {again}")
        expected = row.get("expected_hours")
        if expected and row["kind"] in ("pubmed", "feed"):
            age = _hours_since(row["last_success"], now)
            if age is None:
                warnings.append("has never succeeded")
            elif age > expected:
                warnings.append(f"no success for {age:.0f} h (expected every {expected} h)")
        if row["kind"] == "file":
            warnings += _failed_files(db, row["name"])
        if row["pending"]:
            warnings.append(f"{row['pending']} PMID(s) listed by PubMed but not yet returned by "
                            "efetch; each run asks for them again")  # fmt: skip
        if row.get("feed_state") in ("failing", "gone"):
            warnings.append(_feed_warning(row))
        row["warnings"] = warnings
        rows.append(row)
    return rows


def _feed_warning(row: dict[str, Any]) -> str:
    """A failing feed's HTTP status or, when the last try recorded none, the error instead.

    No status means no complete reply: no connection at all (DNS failure, refused), or a
    reply cut off by a time or size limit (the fetch records no status for those either).
    """
    state, status = row["feed_state"], row.get("last_http_status")
    if status is not None:
        return f"feed is {state} (HTTP {status}); check its URL in harvest.toml"
    why = "no complete HTTP reply was received"
    if error := row.get("last_error") or row.get("run_error"):
        why += f" (last error: {error})"
    return f"feed is {state}: {why}; check its URL in harvest.toml and the network"


def _failed_files(db: Database, source: str) -> list[str]:
    """Files whose latest import did not finish: a later good import of another file must
    not hide them."""
    failed = list(db.query(
        "SELECT r.query_version AS file, r.error FROM runs r WHERE r.source = ? "
        "AND r.status IN ('error', 'interrupted') AND r.id = (SELECT max(id) FROM runs "
        "WHERE source = r.source AND query_version = r.query_version) ORDER BY r.id",
        [source],
    ))  # fmt: skip
    return [f"last import of {f['file']} failed: "
            + (f["error"] or "interrupted").removeprefix(f"{f['file']}: ") for f in failed]


def _hours_since(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (now - then).total_seconds() / 3600


def format_row(row: dict[str, Any]) -> str:
    """Two or three lines per source, readable in a terminal or a cron mail."""
    head = f"{row['name']} [{row['kind']}]: last run {row['run_status'] or 'never'}"
    if row["started"]:
        head += f" at {row['started']}"
        head += (
            f" (found {row['found']}, new {row['new']}, updated {row['updated']}, "
            f"deleted {row['deleted']}, unavailable {row['unavailable']})"
        )
    lines = [head, f"    last success: {row['last_success'] or 'never'}"]
    if row.get("cursor"):
        lines[-1] += f"; cursor {row['cursor']}"
    if row["run_error"]:
        lines.append(f"    last error: {row['run_error']}")
    lines += [f"    WARNING: {w}" for w in row["warnings"]]
    return "\n".join(lines)


def totals(db: Database) -> dict[str, int]:
    return dict(next(db.query(
        "SELECT count(*) AS studies, coalesce(sum(deleted), 0) AS deleted, "
        "coalesce(sum(retracted), 0) AS retracted FROM studies"
    )))  # fmt: skip


def format_totals(t: dict[str, int]) -> str:
    return f"{t['studies']} studies stored ({t['deleted']} deleted, {t['retracted']} retracted)"

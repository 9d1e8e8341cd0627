"""Incremental PubMed harvesting of one topic query through E-utilities.

Each run searches date windows (entry date for new records and, after the first run,
modification date for revisions and retractions), bisects any window whose ``Count``
exceeds what PubMed's esearch will list (9,999), fetches every window from the history
server in batches, checks each batch against the PMIDs it should hold, and commits
batch by batch. The cursor, the end of the last fully committed window, moves only in
the same transaction as the data that justifies it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlite_utils import Database

from harvest import identity, store
from harvest.config import NcbiSettings, Topic
from harvest.eutils import EutilsClient, EutilsError, EutilsStaleHistory, SearchResult
from harvest.ingest import BatchCounts, OnChanged, write_batch
from harvest.models import Deletion, Study
from harvest.pubmed_xml import PubmedXMLError, parse_pubmed_xml

log = logging.getLogger(__name__)

# PubMed's esearch lists at most this many IDs, however large Count is (field notes 3.2).
ESEARCH_CAP = 9999
DATE_FMT = "%Y/%m/%d"
# PubMed dates its records on the US Eastern calendar.
PUBMED_TZ = "America/New_York"
# Without the time zone database (no tzdata), standard time: never a day ahead of Eastern.
_EASTERN_STANDARD = timezone(timedelta(hours=-5), "EST")
Progress = Callable[[int], None]


class HarvestError(Exception):
    """A source could not be harvested; the run row says why."""


# A single day can hold more records than esearch lists (NLM revises records in bulk, and a
# broad query's entry dates can pile up on one day): that day is then split by a second date.
_SPLIT_DAY_BY = {"mdat": "edat", "edat": "pdat"}
_EARLIEST = date(1700, 1, 1)  # before any PubMed entry or publication date


@dataclass(frozen=True)
class Window:
    datetype: str  # "edat" (added), "mdat" (revised), or "pdat" (published) when splitting a day
    start: date
    end: date
    day: tuple[str, date] | None = None  # (datetype, day) the records must also have

    def halves(self) -> tuple[Window, Window]:
        mid = self.start + (self.end - self.start) // 2
        return (
            Window(self.datetype, self.start, mid, self.day),
            Window(self.datetype, mid + timedelta(days=1), self.end, self.day),
        )

    def by_second_date(self) -> Window | None:
        """This one-day window split by another date, or None when it already is."""
        second = _SPLIT_DAY_BY.get(self.datetype)
        if self.day is not None or second is None:
            return None
        return Window(second, _EARLIEST, self.end + timedelta(days=366), (self.datetype, self.start))

    def term(self, query: str) -> str:
        """The query with this window's fixed day, if any (E-utilities takes one date range)."""
        if self.day is None:
            return query
        datetype, day = self.day
        return f"({query}) AND {day:%Y/%m/%d}[{datetype}]"

    def __str__(self) -> str:
        within = f"{self.day[0]} {self.day[1]}, " if self.day else ""
        return f"{within}{self.datetype} {self.start}..{self.end}"


@dataclass
class TopicResult:
    source: str
    status: str = "ok"
    counts: BatchCounts = field(default_factory=BatchCounts)
    unavailable: list[str] = field(default_factory=list)  # this run's, now pending
    pending: int = 0  # PMIDs of earlier runs PubMed has still not returned
    withdrawn: list[str] = field(default_factory=list)  # gone from NCBI (reconcile)
    tombstoned: int = 0
    windows: int = 0
    error: str | None = None


def harvest_topic(
    db: Database,
    client: EutilsClient,
    topic: Topic,
    ncbi: NcbiSettings,
    *,
    today: date | None = None,
    full: bool = False,
    reconcile: bool = False,
    on_changed: OnChanged | None = None,
    progress: Progress | None = None,
) -> TopicResult:
    """Harvest one topic incrementally; never raises for NCBI trouble (see the result).

    ``reconcile`` also compares the stored PMIDs of this topic with everything the
    query returns today, to notice records NCBI withdrew (E-utilities does not report
    deletions: a deleted PMID simply disappears).
    """
    today = today or pubmed_today()
    name = topic.source_name
    src = store.ensure_source(
        db,
        name,
        kind="pubmed",
        topic=topic.name,
        query=topic.query,
        expected_hours=ncbi.expected_hours,
    )
    run_id = store.start_run(db, name, query_version=topic.query_version)
    result = TopicResult(name)
    # A changed query may match old records: backfill again rather than trust the cursor.
    changed_query = src.get("query_version") not in (None, topic.query_version)
    cursor = None if (full or changed_query or not src.get("cursor")) else src["cursor"]
    try:
        _retry_pending(db, client, topic, run_id, ncbi, result, on_changed)
        backfill = cursor is None
        for window in _plan(cursor, today, ncbi):
            _harvest_window(db, client, topic, window, run_id, ncbi, result, on_changed, progress,
                            advance_cursor=backfill)  # fmt: skip
        with store.write_tx(db):
            store.update_source(
                db, name, cursor=today.strftime(DATE_FMT), query_version=topic.query_version
            )
        if reconcile:
            _reconcile(db, client, topic, ncbi, today, result)
        if result.unavailable or result.withdrawn:
            with store.write_tx(db):
                missing = result.unavailable + result.withdrawn
                result.tombstoned = store.record_missing(db, missing)
        if result.unavailable:
            result.status = "partial"
            result.error = f"{len(result.unavailable)} PMID(s) listed but not returned by efetch"
    except (EutilsError, PubmedXMLError, HarvestError) as exc:
        result.status, result.error = "error", str(exc)
    except Exception as exc:  # a bug or a database fault: still close the run, then the next topic
        log.exception("%s: harvest failed", name)
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
    store.finish_run(
        db, run_id, status=result.status, error=result.error,
        unavailable=len(result.unavailable), deleted=result.counts.deleted + result.tombstoned,
    )  # fmt: skip
    return result


def pubmed_today(now: datetime | None = None) -> date:
    """Today on PubMed's calendar (US Eastern), whatever the host's time zone: a host ahead
    of it would otherwise set the cursor to a day on which PubMed is still adding records."""
    now = now or datetime.now(UTC)
    try:
        zone: ZoneInfo | timezone = ZoneInfo(PUBMED_TZ)
    except ZoneInfoNotFoundError:
        zone = _EASTERN_STANDARD
    return now.astimezone(zone).date()


def _plan(cursor: str | None, today: date, ncbi: NcbiSettings) -> list[Window]:
    """Windows to search: a backfill by entry date, or the overlap since the cursor."""
    if cursor is None:
        return [Window("edat", _parse_date(ncbi.backfill_from), today)]
    # At least a day back: a cursor written on a host ahead of Eastern time (before
    # pubmed_today) can be a day ahead of PubMed's calendar.
    start = _parse_date(cursor) - timedelta(days=max(ncbi.overlap_days, 1))
    # Revisions (corrections, new MeSH, retractions) arrive with a new modification date.
    return [Window("edat", start, today), Window("mdat", start, today)]


def _parse_date(text: str) -> date:
    """``YYYY/MM/DD``, ``YYYY/MM`` or ``YYYY`` (E-utilities' forms) to a date."""
    year, month, day = ([int(p) for p in text.replace("-", "/").split("/")] + [1, 1])[:3]
    return date(year, month, day)


def _search(client: EutilsClient, term: str, window: Window) -> SearchResult:
    return client.esearch(
        window.term(term),
        datetype=window.datetype,
        mindate=window.start.strftime(DATE_FMT),
        maxdate=window.end.strftime(DATE_FMT),
        usehistory=True,
        retmax=ESEARCH_CAP,
    )


def split_windows(
    client: EutilsClient, term: str, window: Window
) -> Iterator[tuple[Window, SearchResult]]:
    """Yield windows whose results all fit under the esearch cap, bisecting as needed."""
    found = _search(client, term, window)
    if len(found.ids) < min(found.count, ESEARCH_CAP):
        found = _search(client, term, window)  # a short listing (field notes 3.4): ask once more
        if len(found.ids) < min(found.count, ESEARCH_CAP):
            raise HarvestError(
                f"esearch listed {len(found.ids)} of {found.count} PMIDs for {window}; "
                "the next run will ask again"
            )
    if found.count <= ESEARCH_CAP:
        yield window, found
        return
    if window.start == window.end:
        split = window.by_second_date()
        if split is None:
            raise HarvestError(
                f"{found.count} records have {window}: more than PubMed will list "
                f"at once ({ESEARCH_CAP}), even split by two dates; narrow the query"
            )
        held = 0
        for part, part_found in split_windows(client, term, split):
            held += part_found.count
            yield part, part_found
        if held < found.count:  # a record outside the second date's range would be lost
            raise HarvestError(
                f"{window} split by {split.datetype} holds {held} of its {found.count} records; "
                "the next run will ask again"
            )
        return
    for half in window.halves():
        yield from split_windows(client, term, half)


def _harvest_window(
    db: Database,
    client: EutilsClient,
    topic: Topic,
    window: Window,
    run_id: int,
    ncbi: NcbiSettings,
    result: TopicResult,
    on_changed: OnChanged | None,
    progress: Progress | None,
    *,
    advance_cursor: bool,
) -> None:
    """Fetch and save every part of a window.

    During a backfill the parts come oldest first, so the cursor can move to the end of
    each part in the transaction of its last batch: a killed backfill resumes there.
    """
    for part, found in split_windows(client, topic.query, window):
        result.windows += 1
        starts = list(range(0, len(found.ids), ncbi.batch_size)) or [0]
        for start in starts:
            expected = found.ids[start : start + ncbi.batch_size]
            items: list[Study | Deletion] = []
            unavailable: list[str] = []
            if expected:
                items, found, unavailable = _fetch_batch(client, found, start, expected)
            result.unavailable += unavailable
            with store.write_tx(db):
                counts = write_batch(
                    db, items, run_id=run_id, how=str(part),
                    on_changed=on_changed, resolve=identity.resolve,
                )  # fmt: skip
                store.add_pending(db, topic.source_name, unavailable)  # with the cursor's move
                # Not within a split day: its parts run by another date, whose ends are no
                # place for the backfill to resume; the cursor moves after the day's next part.
                if advance_cursor and start == starts[-1] and part.day is None:
                    store.update_source(db, topic.source_name, cursor=part.end.strftime(DATE_FMT),
                                        query_version=topic.query_version)  # fmt: skip
            result.counts.add(counts)
            if progress:
                progress(len(expected))


def _reconcile(
    db: Database, client: EutilsClient, topic: Topic, ncbi: NcbiSettings, today: date,
    result: TopicResult,
) -> None:  # fmt: skip
    """Stored PMIDs this topic found before but the query no longer lists, and that
    efetch no longer returns, count a miss (two misses in a row tombstone them)."""
    window = Window("edat", _parse_date(ncbi.backfill_from), today)
    listed = {pmid for _, found in split_windows(client, topic.query, window) for pmid in found.ids}
    stored = {r[0] for r in db.execute(
        "SELECT DISTINCT s.pmid FROM studies s JOIN sightings g ON g.study_id = s.id "
        "JOIN runs r ON r.id = g.run_id WHERE r.source = ? AND s.deleted = 0 AND s.pmid IS NOT NULL",
        [topic.source_name],
    )}  # fmt: skip
    absent = sorted(stored - listed, key=int)
    for start in range(0, len(absent), ncbi.batch_size):
        ask = absent[start : start + ncbi.batch_size]
        got = {i.pmid for i in _efetch_ids(client, ask, "efetch (reconcile)")}
        result.withdrawn += [p for p in ask if p not in got]
    with store.write_tx(db):
        store.clear_missing(db, sorted(listed & stored))
        # A pending PMID the query no longer lists was withdrawn before we ever got it.
        store.settle_pending(db, topic.source_name, [], set(store.pending_pmids(db, topic.source_name)) - listed)


def _fetch_batch(
    client: EutilsClient, found: SearchResult, start: int, expected: list[str]
) -> tuple[list[Study | Deletion], SearchResult, list[str]]:
    """Fetch one batch and make it whole: (records, the search to page on, unavailable PMIDs).

    Pages come from the history server while the WebEnv lives. Once it has expired (an
    empty page where records were promised is how expiry can look too), this batch and the
    rest of the part are fetched by ID: a new search would list records added since and
    shift every later page. PMIDs missing from a reply are asked for once more by ID;
    those still missing are returned as unavailable rather than failing the run.
    """
    items: list[Study | Deletion] | None = None
    if found.webenv and found.query_key:
        try:
            items = _efetch_history(client, found, start, len(expected))
        except EutilsStaleHistory as exc:
            log.warning("%s; fetching the rest of this window by PMID", exc)
            found = replace(found, webenv=None, query_key=None)
    if items is None:
        items = _efetch_ids(client, expected, "efetch (by id)")
    got = {i.pmid for i in items if isinstance(i, Study)}
    missing = [p for p in expected if p not in got]
    if missing:
        items += _efetch_ids(client, missing, "efetch (by id, again)")
        got = {i.pmid for i in items if isinstance(i, Study)}
    return items, found, [p for p in missing if p not in got]


def _efetch_ids(client: EutilsClient, pmids: list[str], name: str) -> list[Study | Deletion]:
    return list(parse_pubmed_xml(client.efetch_ids(pmids), name=name))


def _retry_pending(
    db: Database, client: EutilsClient, topic: Topic, run_id: int, ncbi: NcbiSettings,
    result: TopicResult, on_changed: OnChanged | None,
) -> None:  # fmt: skip
    """Ask again for the PMIDs earlier runs were promised but not given, and save those
    PubMed returns now; the rest stay pending for the next run."""
    pending = store.pending_pmids(db, topic.source_name)
    for start in range(0, len(pending), ncbi.batch_size):
        ask = pending[start : start + ncbi.batch_size]
        items = _efetch_ids(client, ask, "efetch (pending)")
        with store.write_tx(db):
            counts = write_batch(db, items, run_id=run_id, how="pending", on_changed=on_changed,
                                 resolve=identity.resolve)  # fmt: skip
            store.settle_pending(db, topic.source_name, ask, [i.pmid for i in items if isinstance(i, Study)])
        result.counts.add(counts)
    result.pending = len(store.pending_pmids(db, topic.source_name))


def _efetch_history(
    client: EutilsClient, found: SearchResult, start: int, count: int
) -> list[Study | Deletion]:
    body = client.efetch(
        webenv=found.webenv, query_key=found.query_key, retstart=start, retmax=count
    )
    items = list(parse_pubmed_xml(body, name=f"efetch retstart={start}"))
    if count and not items:
        # An empty set where records were promised is how an expired WebEnv can look.
        raise EutilsStaleHistory("efetch returned no records for a non-empty history page")
    return items

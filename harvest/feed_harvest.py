"""Harvesting feeds into the store: one source at a time, then the DOI->PMID upgrade.

For each configured feed: record a run, fetch conditionally (:mod:`harvest.feeds`),
parse (:mod:`harvest.feed_parse`), keep a journal feed's entries only when they match
one of its topics' rules (the rest are counted as ``skipped``), and save the entries
with their sightings, the entry->study map and the new validators in one transaction.
A feed that fails is recorded as failing (``gone`` after a 410, or repeated 404s) and the next
feed still runs. Nothing here prints; :func:`harvest_feeds` returns one
:class:`FeedResult` per source for the CLI to show.

The upgrade step then looks up feed-only studies' DOIs in PubMed (``"<doi>"[doi]``
ORed, in batches) and merges each PubMed record found into the same row: PubMed's fields
win, the feed's first-seen date and sighting stay.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests
from sqlite_utils import Database

from harvest import identity, store
from harvest.config import ConfigError, Settings
from harvest.feed_config import Feed, FeedsConfig, load_feeds
from harvest.feed_parse import FeedEntry, FeedParseError, ParsedFeed, parse_feed
from harvest.feeds import FetchError, fetch_feed, user_agent
from harvest.ingest import BatchCounts, OnChanged, write_batch
from harvest.models import Study
from harvest.pubmed_xml import PubmedXMLError, parse_pubmed_xml

if TYPE_CHECKING:
    from harvest.eutils import EutilsClient

__all__ = ["FeedResult", "UPGRADE_SOURCE", "harvest_feed", "harvest_feeds", "upgrade_dois"]

UPGRADE_SOURCE = "feeds:pubmed-upgrade"


@dataclass
class FeedResult:
    """What one source did, for one line of CLI output and for tests."""

    source: str
    status: str  # ok, unchanged, error, gone, disabled, skipped
    found: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # journal entries off every topic of the feed
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    http_status: int | None = None
    url: str | None = None
    moved_to: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    detail: str | None = None  # e.g. how many DOIs the upgrade looked up

    @property
    def failed(self) -> bool:
        return self.status in ("error", "gone")

    def line(self) -> str:
        """``feed:jospt: ok: found 20, new 2, updated 1, unchanged 2, skipped 15 (0.4 s)``."""
        counts = ", ".join(
            f"{k} {getattr(self, k)}"
            for k in ("found", "new", "updated", "unchanged", "skipped")
            if getattr(self, k) or k == "found"
        )
        text = f"{self.source}: {self.status}"
        if self.status in ("ok", "unchanged"):
            extra = f"{self.detail}; " if self.detail else ""
            text += f": {counts} ({extra}{self.seconds:.1f} s)"
        elif self.status in ("error", "gone"):
            text += f" ({self.seconds:.1f} s)"
        if self.moved_to:
            text += f"; moved permanently to {self.moved_to}"
        if self.error:
            text += f"; {self.error}"
        if self.warnings:
            text += f"; warning: {'; '.join(self.warnings)}"
        return text

    __str__ = line


def harvest_feeds(
    db: Database,
    settings: Settings,
    *,
    session: requests.Session | None = None,
    client: EutilsClient | None = None,
    only: Iterable[str] | None = None,
    upgrade: bool = True,
    on_changed: OnChanged | None = None,
    now: datetime | None = None,
    config: FeedsConfig | None = None,
) -> list[FeedResult]:
    """Harvest every configured feed (or those named in ``only``), then upgrade DOIs.

    ``session`` is the requests session for feeds (one is made and closed if None);
    ``client`` an :class:`harvest.eutils.EutilsClient` for the upgrade (one is made from
    the settings if None and NCBI_EMAIL is set; otherwise the upgrade is skipped).
    ``now`` (default: the current time) is the day feed dates are checked against and
    the time of the feeds' sightings and entries (runs and the upgrade use the clock).
    Raises :class:`ConfigError` for a bad ``[[feeds]]`` section or an unknown name.
    """
    config = config or load_feeds(settings)
    feeds = list(config.feeds)
    if only is not None:
        wanted = {n.removeprefix("feed:") for n in only}
        unknown = wanted - {f.name for f in feeds}
        if unknown:
            raise ConfigError(f"unknown feed(s): {', '.join(sorted(unknown))} (configured: "
                              f"{', '.join(f.name for f in feeds) or 'none'})")  # fmt: skip
        feeds = [f for f in feeds if f.name in wanted]
    own_session = session is None
    session = session or requests.Session()
    results = []
    try:
        ua = user_agent(settings.ncbi.email)
        for feed in feeds:
            results.append(_guarded(db, feed, config, session, ua, now, on_changed))
    finally:
        if own_session:
            session.close()
    if upgrade:
        result = _upgrade_with(db, settings, config, client, on_changed)
        if result is not None:
            results.append(result)
    return results


def _guarded(
    db: Database,
    feed: Feed,
    config: FeedsConfig,
    session: requests.Session,
    ua: str,
    now: datetime | None,
    on_changed: OnChanged | None,
) -> FeedResult:
    """One feed; an unexpected exception is that feed's failure, never the run's."""
    if not feed.enabled:
        why = "no URL yet" if not feed.url else "enabled = false"
        return FeedResult(feed.source_name, "disabled", error=f"{why} in the configuration")
    try:
        return harvest_feed(db, feed, config, session=session, user_agent_string=ua, now=now,
                            on_changed=on_changed)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one bad feed must not stop the others
        if db.conn.in_transaction:
            db.conn.rollback()
        return FeedResult(feed.source_name, "error", error=f"{type(exc).__name__}: {exc}")


def harvest_feed(
    db: Database,
    feed: Feed,
    config: FeedsConfig,
    *,
    session: requests.Session,
    user_agent_string: str | None = None,
    now: datetime | None = None,
    on_changed: OnChanged | None = None,
) -> FeedResult:
    """Fetch, parse, filter and save one feed; failures are recorded, not raised."""
    started = time.monotonic()
    opts = config.options
    name = feed.source_name
    src = _source(db, feed, config)
    if src.get("feed_state") == "gone":
        count = src.get("not_found_count") or 1
        return FeedResult(name, "skipped", url=src["fetch_url"], error=(
            f"gone (last answer HTTP {src.get('last_http_status')}, {count} in a row of 404 or "
            "410); fix or remove its url in the configuration"))
    url = src.get("fetch_url") or feed.url
    run_id = store.start_run(db, name, query_version=_version(feed.url))
    result = FeedResult(name, "ok", url=url, run_id=run_id)
    try:
        try:
            fetched = fetch_feed(session, url, etag=src.get("etag"),
                                 last_modified=src.get("last_modified"), limits=opts.limits,
                                 user_agent_string=user_agent_string)  # fmt: skip
        except FetchError as exc:
            return _failed(db, result, src, opts.gone_after, exc, http_status=exc.status,
                           not_found=exc.kind == "not-found")  # fmt: skip
        result.http_status, result.moved_to = fetched.status, fetched.moved_to
        moved = fetched.moved_to
        if moved and url.lower().startswith("https:") and moved.lower().startswith("http:"):
            moved = None  # a permanent move to plain http is followed, never stored
        state = {"fetch_url": moved or url, "last_http_status": fetched.status,
                 "not_found_count": 0, "feed_state": "ok"}  # fmt: skip
        if fetched.not_modified:
            with store.write_tx(db):
                store.update_source(db, name, **state)
            result.status = "unchanged"
            store.finish_run(db, run_id, status="unchanged")
            return result
        try:
            parsed = parse_feed(fetched.content, fetched.headers, journal=feed.journal, now=now)
        except FeedParseError as exc:
            return _failed(db, result, src, opts.gone_after, exc, http_status=fetched.status)
        with store.write_tx(db):
            _save_parsed(db, feed, config, parsed, result, on_changed, now=now)
            # A truncated read keeps no validators, or a 304 would hide the dropped entries.
            validators = ({"etag": None, "last_modified": None} if parsed.truncated else
                          {"etag": fetched.etag, "last_modified": fetched.last_modified})
            store.update_source(db, name, **validators, **state)
            _record_counts(db, result)
        store.finish_run(db, run_id, status="ok")
        return result
    except Exception as exc:  # noqa: BLE001 - a bug or a database error: this feed fails
        if db.conn.in_transaction:
            db.conn.rollback()
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        result.found = result.new = result.updated = result.unchanged = result.skipped = 0
        store.finish_run(db, run_id, status="error", error=result.error)
        return result
    finally:
        result.seconds = time.monotonic() - started


def _source(db: Database, feed: Feed, config: FeedsConfig) -> dict[str, Any]:
    """The feed's source row; a feed new or re-pointed in the configuration starts afresh."""
    src = store.ensure_source(
        db, feed.source_name, kind="feed", topic=",".join(feed.topics), query=feed.url,
        query_version=_version(feed.url), feed_kind=feed.kind,
        expected_hours=config.options.expected_hours,
    )  # fmt: skip
    if src.get("fetch_url_for") != feed.url:  # forget the old address's state
        src = _reset_source(db, feed.source_name, feed.url)
    return src


def _record_counts(db: Database, result: FeedResult) -> None:
    store.add_run_counts(db, result.run_id, found=result.found, new=result.new,  # type: ignore[arg-type]
                         updated=result.updated, unchanged=result.unchanged,
                         skipped=result.skipped)  # fmt: skip
    if result.warnings:
        db["runs"].update(result.run_id, {"warnings": "; ".join(result.warnings)})


def _failed(
    db: Database,
    result: FeedResult,
    src: dict[str, Any],
    gone_after: int,
    exc: Exception,
    *,
    http_status: int | None,
    not_found: bool = False,
) -> FeedResult:
    count = (src.get("not_found_count") or 0) + 1 if not_found else 0
    # 410 is the publisher saying the feed is gone for good; a 404 may be a passing fault.
    said_gone = not_found and http_status == 410
    gone = said_gone or (not_found and count >= gone_after)
    message = str(exc)
    if said_gone:
        message += ": the publisher says the feed is gone for good; fix or remove its url in the configuration"
    elif not_found:
        message += (f": the feed is gone after {count} such answers in a row; fix or remove its "
                    f"url in the configuration" if gone else
                    f" ({count} of {gone_after} in a row before it counts as gone)")  # fmt: skip
    result.status = "gone" if gone else "error"
    result.error, result.http_status = message, http_status
    with store.write_tx(db):
        store.update_source(db, result.source, not_found_count=count, last_http_status=http_status,
                            feed_state="gone" if gone else "failing")  # fmt: skip
    store.finish_run(db, result.run_id, status=result.status, error=message)  # type: ignore[arg-type]
    return result


def _reset_source(db: Database, name: str, url: str) -> dict[str, Any]:
    with store.write_tx(db):
        store.update_source(db, name, fetch_url=url, fetch_url_for=url, etag=None,
                            last_modified=None, feed_state=None, not_found_count=0)  # fmt: skip
    return store.get_source(db, name)


def _version(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()[:12]


# --- saving ---------------------------------------------------------------------------


def on_topic(feed: Feed, config: FeedsConfig, entry: FeedEntry) -> bool:
    """A journal feed's entry is kept when a rule of any of the feed's topics matches."""
    if feed.kind != "journal":
        return True
    return any(config.rules[t].matches(entry.match_text) for t in feed.topics if t in config.rules)


def _save_parsed(
    db: Database,
    feed: Feed,
    config: FeedsConfig,
    parsed: ParsedFeed,
    result: FeedResult,
    on_changed: OnChanged | None,
    *,
    now: datetime | None = None,
) -> None:
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if now else store.utcnow()
    result.found = len(parsed.entries)
    result.warnings += parsed.warnings
    changed: list[int] = []
    keyless_titles = Counter(_title(e) for e in parsed.entries if not (e.guid or e.link))
    guids = frozenset(e.guid for e in parsed.entries if e.guid)
    for entry in parsed.entries:
        if not on_topic(feed, config, entry):
            result.skipped += 1
            continue
        saved = save_entry(db, feed.source_name, entry, run_id=result.run_id, now=stamp,
                           title_repeated=keyless_titles[_title(entry)] > 1,
                           fetch_guids=guids)  # fmt: skip
        result.new += saved.new
        result.updated += saved.updated
        result.unchanged += saved.unchanged
        changed += saved.changed_ids
    if on_changed is not None and changed:
        on_changed(db, sorted(set(changed)))


def _title(entry: FeedEntry) -> str:
    return identity.normalize_title(entry.study.title)


def _entry_key(entry: FeedEntry, *, title_repeated: bool = False) -> str | None:
    if entry.guid or entry.link:
        return entry.guid
    # Neither GUID nor link: the title identifies it in its feed (rows are per feed). The
    # date only when the fetch repeats the title: some feeds regenerate pubDate per fetch.
    basis = _title(entry) + (f"|{entry.published_raw or ''}" if title_repeated else "")
    return "title:" + hashlib.sha1(basis.encode()).hexdigest()


def save_entry(
    db: Database,
    source: str,
    entry: FeedEntry,
    *,
    run_id: int | None,
    now: str | None = None,
    title_repeated: bool = False,
    fetch_guids: frozenset[str] = frozenset(),
) -> store.SaveResult:
    """Save one entry inside the caller's transaction, resolving its identity.

    The entry is first looked up in its feed's own history (same GUID, or same link
    when a feed changes GUIDs, or same title and year when GUID and link are both
    unknown), then by PMID, DOI and fuzzy title via :func:`harvest.identity.resolve`.
    A GUID reused for an unrelated article is not trusted: the known study must be
    compatible with the entry. ``fetch_guids`` are the GUIDs of the whole fetch.
    """
    now = now or store.utcnow()
    guid = _entry_key(entry, title_repeated=title_repeated)
    known = _known_entry(db, source, guid, entry.link)
    if known is None and entry.guid:
        # A GUID that changes on every fetch: identity.resolve will not match a short
        # title ("Erratum") without authors, but the feed's own row with it is this entry.
        known = _same_title_entry(db, source, entry, fetch_guids)

    def resolver(db: Database, row: dict[str, Any]) -> dict[str, Any] | None:
        if known is not None and known["study_id"] is not None:
            try:
                existing = store.existing_row(db, known["study_id"])
            except StopIteration:
                existing = None
            if existing is not None and identity.compatible(existing, row):
                return existing
        return identity.resolve(db, row)

    saved = store.save_studies(db, [entry.study], run_id=run_id, how=source, now=now,
                               resolve=resolver)  # fmt: skip
    study_id = saved.seen_ids[0] if saved.seen_ids else None
    values = {
        "source": source, "guid": guid, "link": entry.link, "study_id": study_id,
        "title": entry.study.title, "published_raw": entry.published_raw,
        "published": entry.published, "updated_raw": entry.updated_raw, "updated": entry.updated,
        "last_seen": now,
    }  # fmt: skip
    row = known if known is not None and known["study_id"] in (None, study_id) else None
    if row is None:
        # A reused GUID pointed elsewhere: this entry's own row, if it has one.
        row = next(db.query(
            "SELECT id FROM feed_entries WHERE source = ? AND study_id = ? AND "
            "(guid = ? OR link = ?) ORDER BY id LIMIT 1", [source, study_id, guid, entry.link],
        ), None)  # fmt: skip
    if row is None and study_id is not None:
        # A GUID that changes on every fetch: this feed's row for the same study and title.
        row = next((r for r in db.query(
            "SELECT id, title FROM feed_entries WHERE source = ? AND study_id = ? ORDER BY id",
            [source, study_id]) if identity.normalize_title(r["title"]) == _title(entry)), None)
    if row is not None:
        db.execute("UPDATE feed_entries SET times_seen = times_seen + 1 WHERE id = ?", [row["id"]])
        db["feed_entries"].update(row["id"], values)
    else:
        db["feed_entries"].insert({**values, "first_seen": now, "times_seen": 1})
    return saved


def _known_entry(db: Database, source: str, guid: str | None, link: str | None) -> dict | None:
    if guid:
        for row in db.query(
            "SELECT * FROM feed_entries WHERE source = ? AND guid = ? ORDER BY id LIMIT 1",
            [source, guid],
        ):
            return row
    if link:
        for row in db.query(
            "SELECT * FROM feed_entries WHERE source = ? AND link = ? ORDER BY id DESC LIMIT 1",
            [source, link],
        ):
            return row
    return None


def _same_title_entry(
    db: Database, source: str, entry: FeedEntry, fetch_guids: frozenset[str]
) -> dict | None:
    """This feed's row with the entry's normalized title and the same date as the feed wrote
    it, unless its link differs or its GUID is in this fetch (then it is another entry, such
    as a second "Erratum"). A GUID that changes on every fetch leaves the item's date as it
    was; another item of the same title (next week's erratum) has its own. Undated items
    match undated ones: a feed that dates nothing and rotates GUIDs gives nothing else."""
    title = _title(entry)
    if not title:
        return None
    for row in db.query(
        "SELECT * FROM feed_entries WHERE source = ? AND study_id IS NOT NULL "
        "AND coalesce(published_raw, '') = ? ORDER BY id",
        [source, entry.published_raw or ""],
    ):
        if (identity.normalize_title(row["title"]) == title
                and not (entry.link and row["link"]) and row["guid"] not in fetch_guids):
            return row
    return None


# --- the DOI -> PMID upgrade ------------------------------------------------------------


def _upgrade_with(
    db: Database,
    settings: Settings,
    config: FeedsConfig,
    client: EutilsClient | None,
    on_changed: OnChanged | None,
) -> FeedResult | None:
    if not _upgrade_candidates(db, config.options.upgrade_max, None):
        return None
    own = client is None
    if own:
        from harvest.eutils import EutilsClient, EutilsConfig, EutilsError

        try:
            client = EutilsClient(EutilsConfig.from_settings(settings.ncbi))
        except EutilsError as exc:
            return FeedResult(UPGRADE_SOURCE, "skipped",
                              error=f"DOI lookup in PubMed skipped: {exc}")  # fmt: skip
    try:
        return upgrade_dois(db, client, batch=config.options.upgrade_batch,
                            limit=config.options.upgrade_max, on_changed=on_changed)  # fmt: skip
    finally:
        if own and client is not None:
            client.close()


def _upgrade_candidates(db: Database, limit: int, cursor: str | None) -> list[tuple[int, str]]:
    """Up to ``limit`` (study id, DOI) to look up: rows added since the last look-up first
    (oldest first), then the rest in turn from where the last run stopped, so DOIs PubMed
    never has cannot keep older rows from ever being asked again."""
    rows = db.execute(
        "SELECT id, doi FROM studies WHERE pmid IS NULL AND doi IS NOT NULL AND deleted = 0 "
        "ORDER BY id"
    ).fetchall()
    # A DOI with quotes or spaces cannot be quoted in a PubMed query (and is not a DOI).
    rows = [(i, d) for i, d in rows if d and not any(c in d for c in '"[] \t\n')]
    newest, below = _parse_upgrade_cursor(cursor)
    new = [r for r in rows if r[0] > newest]
    old = [r for r in reversed(rows) if r[0] <= newest]
    turn = [r for r in old if below is None or r[0] < below] + [
        r for r in old if below is not None and r[0] >= below
    ]
    return (new + turn)[:limit]


def _parse_upgrade_cursor(cursor: str | None) -> tuple[int, int | None]:
    """(highest study id looked up, where the turn through older ids goes on below), read
    from the words :func:`_next_upgrade_cursor` writes; anything else starts afresh."""
    match = _UPGRADE_CURSOR.fullmatch((cursor or "").strip())
    if match is None:
        return 0, None
    return int(match["to"]), (int(match["below"]) if match["below"] else None)


_UPGRADE_CURSOR = re.compile(r"looked up study ids to (?P<to>\d+)(?:, next below (?P<below>\d+))?")


def _next_upgrade_cursor(cursor: str | None, done: list[tuple[int, str]]) -> str:
    newest, below = _parse_upgrade_cursor(cursor)
    for study_id, _ in done:  # new ids come in ascending order, then the turn's descending
        if study_id > newest:
            newest = study_id
        else:
            below = study_id
    # Shown by `harvest status`, so in words.
    return f"looked up study ids to {newest}" + (f", next below {below}" if below is not None else "")


def upgrade_dois(
    db: Database,
    client: EutilsClient,
    *,
    batch: int = 50,
    limit: int = 500,
    on_changed: OnChanged | None = None,
) -> FeedResult:
    """Look up feed-only DOIs in PubMed and merge the records found into their rows.

    One ``"<doi>"[doi] OR ...`` search per batch, then an efetch by PMID; only records
    whose DOI was asked for are saved (a loose match never adds an unrelated study),
    and they join their feed row through the DOI (:func:`harvest.store.save_studies`).
    """
    from harvest.eutils import EutilsError

    started = time.monotonic()
    src = store.ensure_source(db, UPGRADE_SOURCE, kind="feed-upgrade", topic=None,
                              query='"<doi>"[doi] OR ... for feed-only studies')  # fmt: skip
    cursor = src.get("cursor")
    picked = _upgrade_candidates(db, limit, cursor)
    dois = [doi for _, doi in picked]
    run_id = store.start_run(db, UPGRADE_SOURCE)
    result = FeedResult(UPGRADE_SOURCE, "ok", run_id=run_id)
    total = BatchCounts()
    try:
        for start in range(0, len(picked), batch):
            chunk = picked[start : start + batch]
            items = _look_up_dois(client, [doi for _, doi in chunk])
            cursor = _next_upgrade_cursor(cursor, chunk)
            with store.write_tx(db):
                if items:
                    total.add(write_batch(db, items, run_id=run_id, how="doi upgrade",
                                          on_changed=on_changed, resolve=identity.resolve))  # fmt: skip
                # With the batch, so a failed run resumes at the batch it could not do.
                store.update_source(db, UPGRADE_SOURCE, cursor=cursor)
        store.finish_run(db, run_id, status="ok")
    except (EutilsError, PubmedXMLError) as exc:
        result.status, result.error = "error", f"DOI lookup in PubMed failed: {exc}"
        store.finish_run(db, run_id, status="error", error=result.error)
    result.found, result.new, result.updated, result.unchanged = (
        total.found, total.new, total.updated, total.unchanged)  # fmt: skip
    result.detail = f"{len(dois)} feed-only DOI(s) looked up"
    result.seconds = time.monotonic() - started
    return result


def _look_up_dois(client: EutilsClient, dois: list[str]) -> list[Study]:
    """PubMed's records for these DOIs: only those whose DOI was asked for (a loose match
    never adds an unrelated study)."""
    wanted = {d.lower() for d in dois}
    term = " OR ".join(f'"{d}"[doi]' for d in dois)
    found = client.esearch(term, usehistory=False, retmax=max(len(dois) * 2, 20))
    if not found.ids:
        return []
    body = client.efetch_ids(found.ids)
    return [s for s in parse_pubmed_xml(body, name="efetch (doi upgrade)")
            if isinstance(s, Study) and s.doi and s.doi.lower() in wanted]  # fmt: skip

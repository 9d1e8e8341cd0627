"""Feeds end to end: a local feed host, a real SQLite store, and the fake E-utilities.

Each test runs :func:`harvest.feed_harvest.harvest_feeds` as ``harvest run`` would and
checks the database: studies, sightings, the entry map, the source's state and its runs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from fake_feeds import FakeFeeds, Reply, fixture
from fake_ncbi import Fault
from lxml import etree

import harvest
from harvest import feed_parse, identity, store
from harvest.config import ConfigError, load_settings
from harvest.eutils import EutilsClient, EutilsConfig
from harvest.feed_config import load_feeds
from harvest.feed_harvest import UPGRADE_SOURCE, harvest_feeds
from harvest.models import Study
from harvest.pubmed_xml import parse_pubmed_xml


@pytest.fixture
def feed_host():
    """A fake feed host on an ephemeral 127.0.0.1 port, for one test."""
    with FakeFeeds() as fake:
        yield fake


PACKAGED = Path(harvest.__file__).parent / "harvest.toml"
FAST = {"connect_timeout": 2, "read_timeout": 1, "max_seconds": 3, "max_bytes": 5_000_000,
        "gone_after": 2, "upgrade_batch": 2}
# The PubMed record used for merging: real, from the shared update file, on trigger points.
MERGE_PMID, MERGE_DOI = "34092588", "10.3233/bmr-200068"


def settings_for(tmp_path, feeds, *, options=FAST, rules=None):
    base = load_settings(PACKAGED, db=tmp_path / "t.db", env={})
    raw = {**base.raw, "feeds": feeds, "feed_options": options}
    if rules is not None:
        raw["feed_match"] = rules
    return dataclasses.replace(base, raw=raw)


def journal(name, url, **kw):
    return {"name": name, "kind": "journal", "url": url, **kw}


def search(name, url, topic="dry_needling"):
    return {"name": name, "kind": "pubmed-search", "url": url, "topic": topic}


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "t.db")


def by_source(results):
    return {r.source: r for r in results}


def rows(db, sql, params=()):
    return [dict(r) for r in db.query(sql, params)]


def test_shapes_end_to_end_with_topic_filter(db, tmp_path, feed_host):
    urls = {
        "pm": feed_host.route("/pm", Reply(body=fixture("pubmed_search_rss.xml"), etag='"pm1"')),
        "aim": feed_host.route("/aim", Reply(body=fixture("aim_rss10_prism.xml"),
                                             content_type="text/xml; charset=ISO-8859-1")),
        "els": feed_host.route("/els", Reply(body=fixture("elsevier_rss20_content.xml"))),
        "bmc": feed_host.route("/bmc", Reply(body=fixture("bmc_atom.xml"),
                                             content_type="application/atom+xml",
                                             last_modified="Mon, 16 Nov 2026 09:00:00 GMT")),
    }
    settings = settings_for(tmp_path, [
        search("pm", urls["pm"]), journal("aim", urls["aim"], journal="Acupunct Med"),
        journal("els", urls["els"], journal="Complement Ther Med"), journal("bmc", urls["bmc"]),
    ])
    results = by_source(harvest_feeds(db, settings, upgrade=False))
    assert {k: (r.status, r.found, r.new, r.skipped) for k, r in results.items()} == {
        "feed:pm": ("ok", 3, 3, 0),
        "feed:aim": ("ok", 4, 2, 2),  # trigger point acupuncture and the off-topic item skipped
        "feed:els": ("ok", 4, 2, 2),
        "feed:bmc": ("ok", 4, 2, 1),  # the IMS review is already known from the PubMed feed
    }
    assert results["feed:bmc"].unchanged + results["feed:bmc"].updated == 1
    assert db["studies"].count == 9
    # The IMS review: one study, seen by two feeds, PubMed RSS's PMID kept.
    ims = rows(db, "SELECT * FROM studies WHERE doi = '10.1186/s12998-021-00396-z'")
    assert len(ims) == 1 and ims[0]["pmid"] == "34579747"
    assert db["sightings"].count_where("study_id = ?", [ims[0]["id"]]) == 2
    # Text is plain; the journal comes from the feed or the configuration.
    for s in rows(db, "SELECT title, abstract, journal, record_source FROM studies"):
        assert "<" not in s["title"] and "<" not in (s["abstract"] or "")
        assert s["record_source"] == "feed"
    els = rows(db, "SELECT journal, year FROM studies WHERE title LIKE 'Effects of Dry Needling on Muscle%'")
    assert els == [{"journal": "Complement Ther Med", "year": 2021}]
    # Validators, state and runs
    src = {r["name"]: r for r in rows(db, "SELECT * FROM sources")}
    assert src["feed:pm"]["etag"] == '"pm1"' and src["feed:bmc"]["last_modified"] == "Mon, 16 Nov 2026 09:00:00 GMT"
    assert src["feed:aim"]["feed_kind"] == "journal" and src["feed:aim"]["feed_state"] == "ok"
    assert src["feed:aim"]["kind"] == "feed" and src["feed:aim"]["last_status"] == "ok"
    run = rows(db, "SELECT status, found, new, skipped FROM runs WHERE source = 'feed:aim'")
    assert run == [{"status": "ok", "found": 4, "new": 2, "skipped": 2}]
    assert db["feed_entries"].count == 3 + 2 + 2 + 3
    assert results["feed:pm"].line().startswith("feed:pm: ok: found 3, new 3")


def test_conditional_get_then_304_unchanged(db, tmp_path, feed_host):
    url = feed_host.route("/f", Reply(body=fixture("pubmed_search_rss.xml"), etag='"e1"',
                                      last_modified="Mon, 16 Nov 2026 10:00:00 GMT"))
    settings = settings_for(tmp_path, [search("f", url)])
    first = harvest_feeds(db, settings, upgrade=False)[0]
    second = harvest_feeds(db, settings, upgrade=False)[0]
    assert (first.status, second.status) == ("ok", "unchanged")
    sent = feed_host.requests_to("/f")[1].headers
    assert sent["if-none-match"] == '"e1"' and sent["if-modified-since"] == "Mon, 16 Nov 2026 10:00:00 GMT"
    assert [r["status"] for r in rows(db, "SELECT status FROM runs ORDER BY id")] == ["ok", "unchanged"]
    assert db["studies"].count == 3
    src = store.get_source(db, "feed:f")
    assert (src["last_status"], src["etag"], src["consecutive_failures"]) == ("unchanged", '"e1"', 0)


def test_301_moves_the_feed_and_later_runs_go_straight_there(db, tmp_path, feed_host):
    new = feed_host.route("/new", Reply(body=fixture("bmc_atom.xml")))
    old = feed_host.route("/old", Reply(status=301, headers={"Location": new}))
    settings = settings_for(tmp_path, [search("moved", old, topic="prolotherapy")])
    result = harvest_feeds(db, settings, upgrade=False)[0]
    assert result.status == "ok" and result.moved_to == new and "moved permanently" in result.line()
    assert store.get_source(db, "feed:moved")["fetch_url"] == new
    harvest_feeds(db, settings, upgrade=False)
    assert len(feed_host.requests_to("/old")) == 1 and len(feed_host.requests_to("/new")) == 2
    # Changing the configured URL starts over from it.
    other = feed_host.route("/other", Reply(body=fixture("bmc_atom.xml")))
    harvest_feeds(db, settings_for(tmp_path, [search("moved", other, topic="prolotherapy")]),
                  upgrade=False)
    assert store.get_source(db, "feed:moved")["fetch_url"] == other


def test_a_410_marks_the_feed_gone_at_once(db, tmp_path, feed_host):
    dead = feed_host.route("/dead", Reply(status=410, body=b"<html>gone</html>", content_type="text/html"))
    settings = settings_for(tmp_path, [search("dead", dead)])
    r1 = by_source(harvest_feeds(db, settings, upgrade=False))
    assert r1["feed:dead"].status == "gone" and "gone for good" in r1["feed:dead"].error
    src = store.get_source(db, "feed:dead")
    assert (src["feed_state"], src["last_http_status"]) == ("gone", 410)
    r2 = by_source(harvest_feeds(db, settings, upgrade=False))
    assert r2["feed:dead"].status == "skipped" and len(feed_host.requests_to("/dead")) == 1
    assert r2["feed:dead"].error.startswith("gone (last answer HTTP 410, 1 in a row of 404 or 410)")


def test_repeated_not_found_marks_the_feed_gone_without_stopping_others(db, tmp_path, feed_host):
    status = 404
    dead = feed_host.route("/dead", Reply(status=status, body=b"<html>no</html>", content_type="text/html"))
    good = feed_host.route("/good", Reply(body=fixture("pubmed_search_rss.xml")))
    settings = settings_for(tmp_path, [search("dead", dead), search("good", good)])
    r1 = by_source(harvest_feeds(db, settings, upgrade=False))
    assert r1["feed:dead"].status == "error" and "1 of 2" in r1["feed:dead"].error
    assert store.get_source(db, "feed:dead")["feed_state"] == "failing"
    r2 = by_source(harvest_feeds(db, settings, upgrade=False))
    assert r2["feed:dead"].status == "gone" and r2["feed:dead"].failed
    src = store.get_source(db, "feed:dead")
    assert (src["feed_state"], src["last_status"], src["last_http_status"]) == ("gone", "gone", status)
    assert src["consecutive_failures"] == 2 and "gone" in src["last_error"]
    r3 = by_source(harvest_feeds(db, settings, upgrade=False))
    assert r3["feed:dead"].status == "skipped" and "fix or remove" in r3["feed:dead"].error
    assert len(feed_host.requests_to("/dead")) == 2  # a gone feed is not fetched again
    assert all(r["feed:good"].status in ("ok", "unchanged") for r in (r1, r2, r3))
    assert db["studies"].count == 3


def test_hostile_feeds_each_fail_or_pass_safely_and_nothing_else_is_lost(db, tmp_path, feed_host, shared_data):
    canary = feed_host.url("/canary")
    rss = shared_data / "rss"
    routes = {
        "good": Reply(body=fixture("pubmed_search_rss.xml")),
        "xxe-file": Reply(body=fixture("hostile_xxe_file.xml")),
        "xxe-http": Reply(body=fixture("hostile_xxe_http.xml").replace(b"CANARY_URL", canary.encode())),
        "laughs": Reply(body=fixture("billion_laughs.xml")),
        "script": Reply(body=fixture("hostile_script.xml")),
        "dates": Reply(body=fixture("bad_dates.xml")),
        "huge": Reply(body=b"<rss>", stream_bytes=50 * 1024 * 1024, declare_length=False),
        "endless": Reply(body=b"<rss><channel>", endless=True),
        "drip": Reply(drip=0.05),
        "stalled": Reply(body=b"<rss/>", stall=15),
        "html": Reply(body=fixture("html_page.html"), content_type="text/html; charset=utf-8"),
        "truncated": Reply(body=(rss / "aim_bmj_recent_rss10_TRUNCATED.xml").read_bytes(), content_type="text/xml"),
        "errorbody": Reply(body=(rss / "fund_gov_tw_rss_error_body.xml").read_bytes()),
    }
    feeds = [search(name, feed_host.route(f"/{name}", reply)) for name, reply in routes.items()]
    settings = settings_for(tmp_path, feeds)
    tracemalloc.start()
    start = time.monotonic()
    try:
        results = by_source(harvest_feeds(db, settings, upgrade=False))
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded: each misbehaving feed costs at most its budget (3 s) plus one read timeout.
    assert elapsed < 20
    assert peak < 80_000_000
    status = {k.removeprefix("feed:"): (r.status, r.error or "") for k, r in results.items()}
    assert status["good"][0] == "ok"
    for name in ("xxe-file", "xxe-http", "laughs", "script", "dates"):
        assert status[name][0] == "ok", (name, status[name])
    assert status["huge"][0] == "error" and "5,000,000-byte limit" in status["huge"][1]
    assert status["endless"][0] == "error" and ("limit" in status["endless"][1])
    assert status["drip"][0] == "error" and "time limit" in status["drip"][1]
    assert status["stalled"][0] == "error" and "timed out" in status["stalled"][1]
    assert status["html"][0] == "error" and "HTML page" in status["html"][1]
    assert status["truncated"][0] == "error" and "no entries" in status["truncated"][1]
    assert status["errorbody"][0] == "error" and "oops! server is temporary error" in status["errorbody"][1]
    # Why is on the source, for `harvest status`.
    src = store.get_source(db, "feed:drip")
    assert src["feed_state"] == "failing" and "time limit" in src["last_error"]
    # No entity made us fetch anything, and no file content got in.
    assert feed_host.requests_to("/canary/dtd") == [] and not [
        r for r in feed_host.requests if r.path.startswith("/canary")]
    blob = json.dumps(rows(db, "SELECT * FROM studies") + rows(db, "SELECT * FROM feed_entries")).lower()
    for bad in ("root:x", "lollollol", "<script", "onclick", "onerror", "javascript:", "<iframe"):
        assert bad not in blob, bad
    # An ill-formed (bozo) feed keeps its entries and says so on its run.
    assert "ill-formed" in rows(db, "SELECT warnings FROM runs WHERE source = 'feed:xxe-file'")[0]["warnings"]
    # (its pmid: identifier joins it to the good feed's study of that PMID; one feed only
    # fills another's blanks, and there are none, so the study is unchanged)
    xxe = results["feed:xxe-file"]
    assert (xxe.new, xxe.updated, xxe.unchanged) == (0, 0, 1) and xxe.warnings
    # Bad dates: raw kept, parsed null.
    dates = {r["link"].rsplit("/", 1)[1]: (r["published_raw"] or r["updated_raw"], r["published"] or r["updated"])
             for r in rows(db, "SELECT * FROM feed_entries WHERE source = 'feed:dates'")}
    assert dates["month13"] == ("2026-13-45", None) and dates["good"][1] == "2004-01-26T21:31:00Z"
    # Nothing else lost: the good feed's studies are all there.
    assert db["studies"].count_where("pmid IN ('36920827', '23690322', '34579747')") == 3


def test_duplicate_and_changing_guids_keep_one_row_each(db, tmp_path, feed_host):
    url = feed_host.route("/g", Reply(body=fixture("guids_v1.xml")), Reply(body=fixture("guids_v2.xml")))
    settings = settings_for(tmp_path, [search("g", url)])
    first = harvest_feeds(db, settings, upgrade=False)[0]
    second = harvest_feeds(db, settings, upgrade=False)[0]
    assert (first.found, first.new) == (7, 5)
    assert (second.found, second.new) == (7, 0)
    assert db["studies"].count == 5
    entries = rows(db, "SELECT guid, link, times_seen FROM feed_entries ORDER BY id")
    assert len(entries) == 5
    a = entries[0]
    assert a["guid"] == "tag:example.org,2026:a-0002-session-81f3"  # the new GUID, same entry
    assert a["link"] == "example.org/articles/a" and a["times_seen"] == 2
    # The two articles sharing "dup-guid" stay two studies.
    dup = rows(db, "SELECT study_id FROM feed_entries WHERE guid = 'dup-guid'")
    assert len({d["study_id"] for d in dup}) == 2
    # Each study sighted once per run.
    assert db["sightings"].count == 10


def _merge_record(shared_data) -> bytes:
    """The real PubmedArticle of MERGE_PMID, as an efetch reply would hold it."""
    path = shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"
    with gzip.open(path) as fh:
        for _, el in etree.iterparse(fh, tag="PubmedArticle", resolve_entities=False, no_network=True):
            if el.findtext("MedlineCitation/PMID") == MERGE_PMID:
                return b"<PubmedArticleSet>" + etree.tostring(el) + b"</PubmedArticleSet>"
            el.clear()
    raise AssertionError("record not found")


@pytest.fixture(scope="module")
def merge_xml(shared_data) -> bytes:
    return _merge_record(shared_data)


def _journal_entry_feed(title: str, doi: str | None) -> bytes:
    ident = f"<id>https://doi.org/{doi}</id>" if doi else "<id>urn:x:bmr-entry</id>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>J Back Musculoskelet Rehabil</title><id>urn:x</id>
<updated>2021-05-01T00:00:00Z</updated>
<entry>{ident}<title>{title}</title><link href="https://content.iospress.com/articles/bmr/entry"/>
<published>2021-05-01T00:00:00Z</published><author><name>Hideaki Hasuo</name></author>
<summary>Latent trigger points in the upper trapezius.</summary></entry></feed>""".encode()


RULES = {"dry_needling": {"any": ["trigger point*"]}}


def test_feed_entry_then_its_pubmed_record_is_one_study(db, tmp_path, feed_host, fake_ncbi, merge_xml):
    pubmed = next(s for s in parse_pubmed_xml(merge_xml) if isinstance(s, Study))
    assert pubmed.doi == MERGE_DOI
    url = feed_host.route("/bmr", Reply(body=_journal_entry_feed(pubmed.title.upper().rstrip("."), MERGE_DOI),
                                        content_type="application/atom+xml"))
    settings = settings_for(tmp_path, [journal("bmr", url, topics=["dry_needling"])], rules=RULES)
    # Feed times are given; the upgrade's sighting takes the clock, which is later.
    first = harvest_feeds(db, settings, upgrade=False, now=datetime(2021, 6, 1, 8, tzinfo=UTC))
    assert first[0].new == 1
    feed_row = rows(db, "SELECT * FROM studies")[0]
    assert (feed_row["pmid"], feed_row["record_source"]) == (None, "feed")

    fake_ncbi.load_records(merge_xml)
    fake_ncbi.register_term(f'"{MERGE_DOI}"[doi]', {MERGE_PMID})
    client = EutilsClient(EutilsConfig(base_url=fake_ncbi.base_url, email="t@example.org",
                                       api_key="test0123456789abcdef", read_timeout=2))
    results = by_source(harvest_feeds(db, settings, client=client,
                                      now=datetime(2021, 6, 20, 8, tzinfo=UTC)))
    up = results[UPGRADE_SOURCE]
    assert (up.status, up.found, up.new, up.updated) == ("ok", 1, 0, 1)
    assert results["feed:bmr"].status == "ok"
    studies = rows(db, "SELECT * FROM studies")
    assert len(studies) == 1
    s = studies[0]
    # PubMed's fields win; the feed's first sighting date stays.
    assert (s["pmid"], s["doi"], s["record_source"]) == (MERGE_PMID, MERGE_DOI, "pubmed")
    assert s["title"] == pubmed.title and s["abstract"] == pubmed.abstract
    assert json.loads(s["authors"]) == pubmed.authors
    assert s["first_seen"] == "2021-06-01T08:00:00Z"
    sightings = rows(db, "SELECT r.source, s.how, s.seen_at FROM sightings s JOIN runs r ON r.id = s.run_id "
                         "ORDER BY s.seen_at, r.id")
    assert [(x["source"], x["seen_at"]) for x in sightings][:2] == [
        ("feed:bmr", "2021-06-01T08:00:00Z"), ("feed:bmr", "2021-06-20T08:00:00Z")]
    assert {x["source"] for x in sightings} == {"feed:bmr", UPGRADE_SOURCE}
    esearch = fake_ncbi.requests_to("esearch")[0].params
    assert esearch["term"] == f'"{MERGE_DOI}"[doi]'
    # Nothing left to upgrade: the next run makes no PubMed request.
    before = len(fake_ncbi.requests)
    harvest_feeds(db, settings, client=client)
    assert len(fake_ncbi.requests) == before


def test_pubmed_record_first_then_feed_entry_without_doi(db, tmp_path, feed_host, merge_xml):
    pubmed = next(s for s in parse_pubmed_xml(merge_xml) if isinstance(s, Study))
    with store.write_tx(db):
        store.save_studies(db, [pubmed], now="2026-10-01T00:00:00Z")
    # The publisher's title case, no DOI, a byline in "First Last" form.
    feed_title = pubmed.title.rstrip(".").title()
    url = feed_host.route("/bmr", Reply(body=_journal_entry_feed(feed_title, None),
                                        content_type="application/atom+xml"))
    settings = settings_for(tmp_path, [journal("bmr", url, topics=["dry_needling"])], rules=RULES)
    result = harvest_feeds(db, settings, upgrade=False)[0]
    assert (result.new, result.updated + result.unchanged) == (0, 1)
    s = rows(db, "SELECT * FROM studies")
    assert len(s) == 1 and s[0]["title"] == pubmed.title and s[0]["first_seen"] == "2026-10-01T00:00:00Z"
    assert s[0]["url"] == "https://content.iospress.com/articles/bmr/entry"  # a blank filled by the feed


def test_feed_without_doi_then_pubmed_save_with_the_resolver(db, tmp_path, feed_host, merge_xml):
    pubmed = next(s for s in parse_pubmed_xml(merge_xml) if isinstance(s, Study))
    url = feed_host.route("/bmr", Reply(body=_journal_entry_feed(pubmed.title.rstrip("."), None),
                                        content_type="application/atom+xml"))
    settings = settings_for(tmp_path, [journal("bmr", url, topics=["dry_needling"])], rules=RULES)
    harvest_feeds(db, settings, upgrade=False)
    with store.write_tx(db):
        saved = store.save_studies(db, [pubmed], resolve=identity.resolve)
    assert (saved.new, saved.updated) == (0, 1)
    assert db["studies"].count == 1


def test_upgrade_failure_is_reported_and_keeps_feed_rows(db, tmp_path, feed_host, fake_ncbi):
    url = feed_host.route("/bmc", Reply(body=fixture("bmc_atom.xml")))
    settings = settings_for(tmp_path, [search("bmc", url, topic="prolotherapy")])
    fake_ncbi.fail("esearch", times=10, with_=Fault.status(500))
    client = EutilsClient(EutilsConfig(base_url=fake_ncbi.base_url, email="t@example.org", max_tries=2,
                                       backoff_base=0.01, backoff_max=0.02, read_timeout=2,
                                       api_key="test0123456789abcdef"))
    results = by_source(harvest_feeds(db, settings, client=client))
    assert results["feed:bmc"].status == "ok"
    assert results[UPGRADE_SOURCE].status == "error" and "DOI lookup" in results[UPGRADE_SOURCE].error
    assert db["studies"].count == 4
    assert store.get_source(db, UPGRADE_SOURCE)["last_status"] == "error"


def test_upgrade_is_skipped_without_an_email(db, tmp_path, feed_host):
    url = feed_host.route("/bmc", Reply(body=fixture("bmc_atom.xml")))
    settings = settings_for(tmp_path, [search("bmc", url, topic="prolotherapy")])
    results = by_source(harvest_feeds(db, settings))
    assert results[UPGRADE_SOURCE].status == "skipped" and "NCBI_EMAIL" in results[UPGRADE_SOURCE].error
    assert not results[UPGRADE_SOURCE].failed


def test_an_unexpected_error_fails_only_that_feed(db, tmp_path, feed_host):
    a = feed_host.route("/a", Reply(body=fixture("pubmed_search_rss.xml")))
    # A character reference past U+10FFFF: feedparser itself raises ValueError on it.
    b = feed_host.route("/b", Reply(body=_one_item_feed(f"{TITLE}<description>&#x110000;</description>")))
    # A database error while saving its second entry (as a full disk or a bug would give):
    # a real SQLite one, after the first entry's study, sighting and entry row are written.
    c = feed_host.route("/c", Reply(body=fixture("bmc_atom.xml")))
    db.execute("CREATE TRIGGER refuse_c BEFORE INSERT ON feed_entries WHEN NEW.source = 'feed:c' "
               "AND (SELECT count(*) FROM feed_entries WHERE source = 'feed:c') > 0 "
               "BEGIN SELECT RAISE(ABORT, 'no room for feed c'); END")
    settings = settings_for(tmp_path, [search("a", a), search("b", b),
                                       search("c", c, topic="prolotherapy")])
    results = by_source(harvest_feeds(db, settings, upgrade=False))
    assert results["feed:a"].status == "ok"
    assert results["feed:b"].status == "error"
    assert "ValueError: chr() arg not in range(0x110000)" in results["feed:b"].error
    c_result = results["feed:c"]
    assert c_result.status == "error" and "IntegrityError: no room for feed c" in c_result.error
    assert (c_result.found, c_result.new) == (0, 0)
    for name in ("feed:b", "feed:c"):
        runs = rows(db, "SELECT status FROM runs WHERE source = ?", [name])
        assert [r["status"] for r in runs] == ["error"]
    # Nothing of feed c stays: its first entry went with its transaction.
    assert db["studies"].count == 3 and db["sightings"].count == 3
    assert db["feed_entries"].count_where("source = 'feed:c'") == 0
    assert not db.conn.in_transaction


def test_disabled_feeds_are_reported_not_fetched(db, tmp_path):
    settings = settings_for(tmp_path, [{"name": "later", "kind": "pubmed-search", "topic": "ims",
                                        "url": "", "enabled": False}])
    (r,) = harvest_feeds(db, settings, upgrade=False)
    assert (r.status, r.failed) == ("disabled", False) and "no URL yet" in r.error
    assert db["sources"].count == 0


def test_only_selects_feeds_and_rejects_unknown_names(db, tmp_path, feed_host):
    a = feed_host.route("/a", Reply(body=fixture("pubmed_search_rss.xml")))
    b = feed_host.route("/b", Reply(body=fixture("bmc_atom.xml")))
    settings = settings_for(tmp_path, [search("a", a), search("b", b, topic="prolotherapy")])
    assert [r.source for r in harvest_feeds(db, settings, only=["feed:b"], upgrade=False)] == ["feed:b"]
    with pytest.raises(ConfigError, match="unknown feed"):
        harvest_feeds(db, settings, only=["nope"], upgrade=False)


def test_shipped_configuration_is_valid():
    config = load_feeds(load_settings(PACKAGED, env={}))
    names = {f.name for f in config.feeds}
    assert {"jospt", "acupuncture-in-medicine", "jbmt", "bmc-msk", "pain-medicine"} <= names
    assert {"pubmed-ims", "pubmed-dry-needling", "pubmed-prolotherapy"} <= names
    assert set(config.rules) == {"ims", "dry_needling", "prolotherapy"}
    assert all(f.url.startswith("https://") for f in config.feeds if f.enabled)
    rule = config.rules["dry_needling"]
    assert rule.matches("Effects of dry-needling on stiffness") and not rule.matches("Knee surgery")
    assert config.rules["prolotherapy"].matches("Dextrose prolotherapy in knee OA")
    assert config.rules["ims"].matches("Gunn's IMS for chronic low back pain")
    assert not config.rules["ims"].matches("IMS Health prescription data")


@pytest.mark.parametrize("feed, message", [
    ({"name": "x", "kind": "blog", "url": "https://e.org/f"}, "kind must be one of"),
    ({"name": "x", "kind": "journal", "url": "ftp://e.org/f"}, "url must be an http or https URL"),
    ({"name": "x", "kind": "journal", "url": ""}, "or set enabled = false"),
    ({"name": "X!", "kind": "journal", "url": "https://e.org/f"}, "name must be lower-case"),
    ({"name": "x", "kind": "journal", "url": "https://e.org/f", "topics": ["yoga"]}, "unknown topic 'yoga'"),
    ({"name": "x", "kind": "pubmed-search", "url": "https://e.org/f"}, "needs topic"),
    ({"name": "x", "kind": "journal", "url": "https://e.org/f", "colour": "red"}, "unknown key"),
])
def test_feed_config_errors_name_the_key(tmp_path, feed, message):
    with pytest.raises(ConfigError, match=message):
        load_feeds(settings_for(tmp_path, [feed]))


def test_config_errors_for_options_and_rules(tmp_path):
    with pytest.raises(ConfigError, match=r"\[feed_options\] max_bytes must be a positive integer"):
        load_feeds(settings_for(tmp_path, [], options={"max_bytes": -1}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[feed_options\]: speed"):
        load_feeds(settings_for(tmp_path, [], options={"speed": 1}))
    with pytest.raises(ConfigError, match=r"add \[feed_match.ims\]"):
        load_feeds(settings_for(tmp_path, [journal("j", "https://e.org/f", topics=["ims"])],
                                rules={"dry_needling": {"any": ["dry needl*"]}}))
    with pytest.raises(ConfigError, match=r"\[feed_match.ims\]: any must be a list"):
        load_feeds(settings_for(tmp_path, [], rules={"ims": {"any": "IMS"}}))
    with pytest.raises(ConfigError, match=r"name 'a' is used twice"):
        load_feeds(settings_for(tmp_path, [journal("a", "https://e.org/1"), journal("a", "https://e.org/2")]))


def _one_item_feed(item: str) -> bytes:
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>J</title>'
            f"<item>{item}</item></channel></rss>").encode()


TITLE = "<title>Dry needling for neck pain in office workers: a randomized trial</title>"


def test_no_guid_no_link_and_a_pubdate_regenerated_per_fetch_is_one_entry(db, tmp_path, feed_host):
    replies = [Reply(body=_one_item_feed(f"{TITLE}<pubDate>{d} Jan 2026 08:00:00 GMT</pubDate>"))
               for d in ("05", "06", "07")]
    settings = settings_for(tmp_path, [search("f", feed_host.route("/f", *replies))])
    news = [harvest_feeds(db, settings, upgrade=False)[0].new for _ in replies]
    assert news == [1, 0, 0]
    assert db["studies"].count == 1
    assert rows(db, "SELECT times_seen FROM feed_entries") == [{"times_seen": 3}]


def test_a_guid_changing_per_fetch_without_a_link_keeps_one_entry_row(db, tmp_path, feed_host):
    replies = [Reply(body=_one_item_feed(f'{TITLE}<guid isPermaLink="false">{g}</guid>'))
               for g in ("s1", "s2", "s3")]
    settings = settings_for(tmp_path, [search("f", feed_host.route("/f", *replies))])
    for _ in replies:
        harvest_feeds(db, settings, upgrade=False)
    assert db["studies"].count == 1
    assert rows(db, "SELECT guid, times_seen FROM feed_entries") == [{"guid": "s3", "times_seen": 3}]


def test_a_truncated_feed_keeps_no_validators(db, tmp_path, feed_host):
    # One entry over the cap; all off the journal's topic, so only reading them costs time.
    cap = feed_parse.MAX_ENTRIES
    items = "".join(f"<item><title>Knee arthroplasty outcomes, cohort {i}</title>"
                    f"<link>https://j.example.org/a/{i}</link></item>" for i in range(cap + 1))
    body = ('<?xml version="1.0"?><rss version="2.0"><channel><title>J</title>'
            f"{items}</channel></rss>").encode()
    url = feed_host.route("/f", Reply(body=body, etag='"e1"',
                                      last_modified="Mon, 16 Nov 2026 10:00:00 GMT"))
    settings = settings_for(tmp_path, [journal("f", url, topics=["dry_needling"])], rules=RULES)
    first = harvest_feeds(db, settings, upgrade=False)[0]
    assert (first.found, first.skipped) == (cap, cap)
    assert first.warnings == [f"more than {cap} entries: only the first {cap} read"]
    src = store.get_source(db, "feed:f")
    assert (src["etag"], src["last_modified"]) == (None, None)
    harvest_feeds(db, settings, upgrade=False)
    assert "if-none-match" not in feed_host.requests_to("/f")[1].headers


def test_a_permanent_move_from_https_to_http_is_not_stored(db, tmp_path, feed_host):
    with FakeFeeds(tls=True) as secure, requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = secure.cafile
        http = feed_host.route("/f", Reply(body=fixture("bmc_atom.xml")))
        https = secure.route("/f", Reply(status=301, headers={"Location": http}))
        assert https.startswith("https://") and http.startswith("http://")
        settings = settings_for(tmp_path, [search("f", https, topic="prolotherapy")])
        first = harvest_feeds(db, settings, session=session, upgrade=False)[0]
        assert (first.status, first.found, first.moved_to) == ("ok", 4, http)
        assert store.get_source(db, "feed:f")["fetch_url"] == https
        harvest_feeds(db, settings, session=session, upgrade=False)
        assert len(secure.requests_to("/f")) == 2 and len(feed_host.requests_to("/f")) == 2

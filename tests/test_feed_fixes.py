"""Feed defects from a code review, each checked through the real parser and store.

The feeds imitate real shapes that no recorded feed here shows: an RSS 2.0 item whose
``<guid isPermaLink="false">`` is a fresh UUID on every fetch (some CMS feeds regenerate
it), a GUID URL with a ``&amp;`` query separator, and dc:identifier lists as BMJ's RSS 1.0
carries them (../shared/data/rss/aim_bmj_recent_rss10_TRUNCATED.xml).
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from fake_feeds import FakeFeeds, Reply

import harvest
from harvest import store
from harvest.config import ConfigError, load_settings
from harvest.eutils import EutilsClient, EutilsConfig
from harvest.feed_config import MatchRule, load_feeds, phrase_pattern
from harvest.feed_harvest import UPGRADE_SOURCE, harvest_feeds, upgrade_dois
from harvest.feed_parse import parse_feed
from harvest.models import Study

PACKAGED = Path(harvest.__file__).parent / "harvest.toml"
FAST = {"connect_timeout": 2, "read_timeout": 1, "max_seconds": 3, "max_bytes": 5_000_000}


@pytest.fixture
def feed_host():
    with FakeFeeds() as fake:
        yield fake


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "t.db")


def settings_for(tmp_path, feeds, *, rules=None):
    base = load_settings(PACKAGED, db=tmp_path / "t.db", env={})
    raw = {**base.raw, "feeds": feeds, "feed_options": FAST}
    if rules is not None:
        raw["feed_match"] = rules
    return dataclasses.replace(base, raw=raw)


def search_feed(url):
    return {"name": "f", "kind": "pubmed-search", "url": url, "topic": "dry_needling"}


def rss(*items: str) -> bytes:
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>J</title>'
            + "".join(f"<item>{i}</item>" for i in items) + "</channel></rss>").encode()


def item(title: str, guid: str, date: str = "Mon, 05 Jan 2026 08:00:00 GMT") -> str:
    return f'<title>{title}</title><guid isPermaLink="false">{guid}</guid><pubDate>{date}</pubDate>'


def fresh_guid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def run_feed(db, tmp_path, feed_host, bodies: list[bytes]) -> list[int]:
    url = feed_host.route("/f", *(Reply(body=b) for b in bodies))
    settings = settings_for(tmp_path, [search_feed(url)])
    return [harvest_feeds(db, settings, upgrade=False)[0].new for _ in bodies]


# --- 1. a short title whose GUID changes on every fetch ---------------------------------


def test_a_short_title_with_a_guid_changing_per_fetch_stays_one_study(db, tmp_path, feed_host):
    short = "Dry needling for sciatica"  # 4 words: too short for the fuzzy identity match
    bodies = [rss(item(short, fresh_guid())) for _ in range(3)]
    assert run_feed(db, tmp_path, feed_host, bodies) == [1, 0, 0]
    assert db["studies"].count == 1
    assert [r["times_seen"] for r in db.query("SELECT times_seen FROM feed_entries")] == [3]


def test_two_same_short_titles_with_changing_guids_stay_two(db, tmp_path, feed_host):
    # Two errata in one feed, both without link or author: one row each, fetch after fetch.
    bodies = [rss(item("Erratum", fresh_guid()), item("Erratum", fresh_guid())) for _ in range(3)]
    assert run_feed(db, tmp_path, feed_host, bodies) == [2, 0, 0]
    assert db["studies"].count == 2
    assert [r["times_seen"] for r in db.query("SELECT times_seen FROM feed_entries")] == [3, 3]


def test_a_new_entry_with_an_old_short_title_is_not_taken_for_it(db, tmp_path, feed_host):
    bodies = [
        rss(item("Erratum", "e1", "Mon, 05 Jan 2026 08:00:00 GMT")),
        # A second erratum while the first is still listed under its own, stable GUID.
        rss(item("Erratum", "e2", "Mon, 12 Jan 2026 08:00:00 GMT"),
            item("Erratum", "e1", "Mon, 05 Jan 2026 08:00:00 GMT")),
        # Another one a year later: a different year is a different work.
        rss(item("Erratum", fresh_guid(), "Tue, 05 Jan 2027 08:00:00 GMT")),
    ]
    assert run_feed(db, tmp_path, feed_host, bodies) == [1, 1, 1]
    got = {r["guid"]: r["study_id"] for r in db.query("SELECT guid, study_id FROM feed_entries")}
    assert len(got) == 3 and len(set(got.values())) == 3 and {"e1", "e2"} <= set(got)
    assert got["e1"] == min(got.values())  # the first erratum kept its study


def test_next_weeks_erratum_is_not_taken_for_one_that_left_the_feed(db, tmp_path, feed_host):
    # stable GUIDs; the first erratum has rolled off the feed when the second arrives
    first, second = item("Erratum", "e1", "Mon, 05 Jan 2026 08:00:00 GMT"), item(
        "Erratum", "e2", "Mon, 12 Jan 2026 08:00:00 GMT")
    assert run_feed(db, tmp_path, feed_host, [rss(first), rss(second), rss(first, second)]) == [1, 1, 0]
    rows = [dict(r) for r in db.query("SELECT guid, study_id, times_seen FROM feed_entries ORDER BY id")]
    assert rows == [{"guid": "e1", "study_id": 1, "times_seen": 2}, {"guid": "e2", "study_id": 2, "times_seen": 2}]


def test_a_short_title_under_another_link_is_another_work(db, tmp_path, feed_host):
    link = "<link>https://j.example/article/{}</link>"
    bodies = [rss(item("Erratum", "e1") + link.format(1)),
              rss(item("Erratum", fresh_guid()) + link.format(2))]
    assert run_feed(db, tmp_path, feed_host, bodies) == [1, 1]


# --- 2. an empty group in [feed_match] ------------------------------------------------


@pytest.mark.parametrize("rule", [{"all": [[]]}, {"any": ["dry needl*"], "all": [["IMS"], []]}])
def test_an_empty_all_group_is_a_config_error(tmp_path, rule):
    feeds = [{"name": "j", "kind": "journal", "url": "https://example.org/rss",
              "topics": ["dry_needling"]}]
    settings = settings_for(tmp_path, feeds, rules={"dry_needling": rule})
    with pytest.raises(ConfigError, match=r"harvest\.toml: \[feed_match\.dry_needling\]: all has "
                                          r"an empty group"):
        load_feeds(settings)


def test_an_empty_group_matches_nothing():
    rule = MatchRule(topic="ims", all=((), (phrase_pattern("IMS"), phrase_pattern("needl*"))))
    assert not rule.matches("Cardiac surgery outcomes in 2025")
    assert rule.matches("IMS needling for shoulder pain")


# --- 3. GUIDs and raw dates keep the XML's text ---------------------------------------


def test_guid_and_raw_date_are_not_decoded_twice():
    body = rss(
        '<title>Dry needling for neck pain: a randomized trial</title>'
        '<guid isPermaLink="false">https://x.org/a?id=5&amp;sect=3</guid>'
        '<pubDate>Mon, 05 Jan 2026 08:00:00 GMT</pubDate>',
        '<title>Prolotherapy for knee osteoarthritis: a cohort</title>'
        '<guid isPermaLink="false">https://x.org/a?id=6&amp;copy=2&amp;para=1</guid>'
        '<pubDate>Spring 2026 &amp;copy=1</pubDate>',
    )
    first, second = parse_feed(body).entries
    assert first.guid == "https://x.org/a?id=5&sect=3"
    assert second.guid == "https://x.org/a?id=6&copy=2&para=1"
    assert second.published_raw == "Spring 2026 &copy=1"


def test_extra_identifiers_are_found_by_a_guid_with_an_ampersand():
    # Two dc:identifiers (feedparser keeps only the last): the DOI comes from the second
    # pass, keyed by the item's GUID, which must be the same string in both passes.
    body = ('<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            "<channel><title>J</title><item>"
            "<title>Dry needling for neck pain: a randomized trial</title>"
            '<guid isPermaLink="false">https://j.example/a?id=5&amp;sect=3</guid>'
            "<dc:identifier>doi:10.1136/acupmed-2025-011234</dc:identifier>"
            "<dc:identifier>pmid:39000001</dc:identifier>"
            "</item></channel></rss>").encode()
    (entry,) = parse_feed(body).entries
    assert (entry.study.doi, entry.study.pmid) == ("10.1136/acupmed-2025-011234", "39000001")


# --- 4. the DOI -> PMID upgrade goes round every feed-only DOI ------------------------


def _feed_only(db, n: int, first: int = 1) -> list[str]:
    dois = [f"10.9999/never-in-pubmed.{i}" for i in range(first, first + n)]
    with store.write_tx(db):
        store.save_studies(db, [Study(title=f"Dry needling study number {i} of a series",
                                      doi=d, record_source="feed")
                                for i, d in zip(range(first, first + n), dois, strict=True)])
    return dois


def _asked(fake_ncbi, since: int) -> list[str]:
    terms = [r.params["term"] for r in fake_ncbi.requests_to("esearch")[since:]]
    return [t.strip().strip('"').split('"')[0] for term in terms for t in term.split(" OR ")]


def test_upgrade_turns_through_every_doi_and_asks_new_ones_first(db, fake_ncbi):
    # None of these DOIs is in PubMed (the fake holds no records): each look-up finds nothing.
    old = _feed_only(db, 5)
    client = EutilsClient(EutilsConfig(base_url=fake_ncbi.base_url, email="t@example.org",
                                       api_key="test0123456789abcdef", read_timeout=2))
    asked: list[list[str]] = []
    for _ in range(3):
        since = len(fake_ncbi.requests_to("esearch"))
        result = upgrade_dois(db, client, batch=2, limit=2)
        assert result.status == "ok"
        asked.append(_asked(fake_ncbi, since))
    assert all(len(a) == 2 for a in asked)
    assert set(old) <= {d for a in asked for d in a}  # not the same newest two every run
    new = _feed_only(db, 1, first=6)
    since = len(fake_ncbi.requests_to("esearch"))
    upgrade_dois(db, client, batch=2, limit=2)
    assert _asked(fake_ncbi, since)[0] == new[0]  # never looked up: asked before the others
    assert "looked up" in store.get_source(db, UPGRADE_SOURCE)["cursor"]


@pytest.mark.parametrize(("cursor", "parsed"), [
    ("looked up study ids to 120, next below 57", (120, 57)),
    ("looked up study ids to 5", (5, None)),
    ("looked up study ids to 1,200", (0, None)),  # edited by hand: start afresh, not (1, 200)
    ("2026-01-01", (0, None)),
    (None, (0, None)),
])  # fmt: skip
def test_the_upgrade_cursor_is_read_by_its_words(cursor, parsed):
    from harvest.feed_harvest import _parse_upgrade_cursor

    assert _parse_upgrade_cursor(cursor) == parsed

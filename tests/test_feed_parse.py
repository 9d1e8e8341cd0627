"""harvest.feed_parse: the real feed shapes, identifiers, dates, sanitizing, failures."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime

import pytest
from fake_feeds import fixture

from harvest.feed_parse import (
    FeedParseError,
    checked_date,
    clean_url,
    html_to_text,
    link_key,
    parse_feed,
    split_authors,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
XML = {"content-type": "application/xml"}


def parse(name: str, **kw):
    return parse_feed(fixture(name), XML, now=NOW, **kw)


def test_pubmed_search_rss():
    feed = parse("pubmed_search_rss.xml")
    assert feed.version == "rss20" and feed.warnings == []
    first, second, third = feed.entries
    s = first.study
    assert (s.title, s.pmid, s.doi, s.journal, s.year, s.pub_date) == (
        "Dry Needling for Low Back Pain.", "36920827", None, "Am Fam Physician", 2023, "2023-03-15")
    assert s.authors == ["Radi R", "Ng W", "Simcoe R"]
    assert s.record_source == "feed"
    # Tracking parameters are dropped from the stored link; the key drops scheme and www.
    assert s.url == "https://pubmed.ncbi.nlm.nih.gov/36920827/"
    assert first.link == "pubmed.ncbi.nlm.nih.gov/36920827" and first.guid == "pubmed:36920827"
    assert "<" not in s.abstract and "Am Fam Physician." in s.abstract
    # Several dc:identifier values: feedparser keeps only the last, we keep them all.
    assert (second.study.pmid, second.study.doi) == ("23690322", "10.1370/afm.1504")
    assert (third.study.pmid, third.study.doi) == ("34579747", "10.1186/s12998-021-00396-z")
    assert third.study.journal == "Chiropractic & Manual Therapies"


def test_rss10_prism_latin1():
    feed = parse("aim_rss10_prism.xml", journal="Acupunct Med")
    assert feed.version == "rss10"
    edwards, itoh, bjsm, _off = feed.entries
    assert edwards.study.authors == ["Edwards J", "Knowles N"]
    assert edwards.study.journal == "Acupuncture in Medicine"
    assert edwards.study.url == "http://aim.bmj.com/cgi/content/short/21/3/80"
    assert "Café" in edwards.study.abstract  # ISO-8859-1 decoded
    # PRISM date, not parsed by feedparser, parsed strictly here
    assert (edwards.published_raw, edwards.published) == ("2003-09-01", "2003-09-01T00:00:00Z")
    assert bjsm.study.doi == "10.1136/bjsm.2008.052761"
    assert bjsm.study.authors == ["Rabago D", "Best TM"]
    assert itoh.study.doi is None and itoh.study.pmid is None


def test_rss20_content_encoded():
    feed = parse("elsevier_rss20_content.xml", journal="Complement Ther Med")
    first = feed.entries[0]
    assert first.study.title.startswith("Dry needling in the management of myofascial trigger points")
    assert first.study.abstract == "Placeholder abstract on dry needling for myofascial trigger points."
    assert first.study.journal == "Complement Ther Med"
    assert first.study.url == "https://www.sciencedirect.com/science/article/pii/S0965229917300001"
    assert first.published == "2017-07-01T00:00:00Z" and first.study.year == 2017
    assert first.study.authors == ["Luis Espejo-Antúnez"]


def test_atom_with_doi_ids():
    feed = parse("bmc_atom.xml")
    assert feed.version == "atom10"
    dois = [e.study.doi for e in feed.entries]
    assert dois == ["10.1186/s12891-019-2905-5", "10.1186/s12906-018-2226-5",
                    "10.1186/s12998-021-00396-z", "10.1016/j.acuroe.2021.04.004"]
    assert feed.entries[0].study.abstract == "Placeholder abstract on prolotherapy for lateral epicondylalgia."
    assert feed.entries[2].study.authors == ["Maryam Hadizadeh"]


def test_real_truncated_feed_fails_with_reason(shared_data):
    body = (shared_data / "rss" / "aim_bmj_recent_rss10_TRUNCATED.xml").read_bytes()
    with pytest.raises(FeedParseError, match="no entries"):
        parse_feed(body, {"content-type": "text/xml"}, now=NOW)


def test_real_error_body_fails_with_its_message(shared_data):
    body = (shared_data / "rss" / "fund_gov_tw_rss_error_body.xml").read_bytes()
    with pytest.raises(FeedParseError, match="error message.*oops! server is temporary error"):
        parse_feed(body, XML, now=NOW)


def test_real_escaping_feed_keeps_literal_text(shared_data):
    body = (shared_data / "rss" / "diveintomark_rss20-b.xml").read_bytes()
    entry = parse_feed(body, XML, now=NOW).entries[0]
    assert entry.study.title == "1 < 2"
    # Escaped markup is text: Datasette shows "<b>" escaped, nothing is rendered.
    assert entry.study.abstract.startswith("1 < 2, 3 < 4. In HTML, <b> starts a bold phrase")


def test_html_page_is_a_failure():
    with pytest.raises(FeedParseError, match="not a feed: an HTML page"):
        parse_feed(fixture("html_page.html"), {"content-type": "text/html; charset=utf-8"}, now=NOW)


@pytest.mark.parametrize("body", [b"", b"   ", b"not xml at all", b"<rss version='2.0'><channel></channel></rss>"])
def test_empty_or_entryless_bodies_fail(body):
    with pytest.raises(FeedParseError):
        parse_feed(body, XML, now=NOW)


def test_ill_formed_feed_keeps_entries_with_a_warning():
    body = fixture("pubmed_search_rss.xml").replace(b"<title>Dry Needling for Low Back Pain.</title>",
                                                    b"<title>Dry Needling &nbsp; for Low Back Pain.</title><b>")
    feed = parse_feed(body, XML, now=NOW)
    assert feed.entries and feed.warnings and "ill-formed" in feed.warnings[0]


def test_parse_refuses_strings():
    with pytest.raises(TypeError):
        parse_feed("https://example.org/feed.xml", XML)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["hostile_xxe_file.xml", "hostile_xxe_http.xml", "billion_laughs.xml"])
def test_entities_are_never_expanded(name):
    body = fixture(name).replace(b"CANARY_URL", b"http://127.0.0.1:9")
    tracemalloc.start()
    start = time.monotonic()
    try:
        feed = parse_feed(body, XML, now=NOW)
    except FeedParseError:
        feed = None
    elapsed = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20_000_000
    if feed is not None:
        text = " ".join(f"{e.study.title} {e.study.abstract}" for e in feed.entries)
        assert "root:" not in text and "lollollol" not in text


def test_scripts_and_handlers_never_survive():
    feed = parse("hostile_script.xml")
    first, second = feed.entries
    fields = [e.study.title for e in feed.entries] + [e.study.abstract or "" for e in feed.entries]
    blob = " ".join(fields).lower()
    for bad in ("<script", "onclick", "onerror", "javascript:", "<iframe", "url(", "<style", "document.cookie"):
        assert bad not in blob, bad
    assert first.study.title == "Dry needling for neck pain: a randomized trial"
    assert first.study.abstract == "Prolotherapy works\n\ndata"  # content:encoded, defanged
    assert first.study.url is None  # a javascript: link is not a link
    assert first.study.journal == "Pain Med" and first.guid == "script-1"
    assert first.study.authors == ["Smith J"]
    assert second.study.title == "Prolotherapy bold versus saline"
    # Doubly escaped markup is text once decoded, and a script tag even as text is dropped.
    assert second.study.abstract == "plain text"


def test_dates_are_raw_plus_checked_utc():
    feed = parse("bad_dates.xml")
    got = {e.study.url.rsplit("/", 1)[1]: (e.published_raw or e.updated_raw, e.published or e.updated)
           for e in feed.entries}
    assert got["month13"] == ("2026-13-45", None)
    assert got["june31"] == ("Thu, 31 Jun 2004 10:00:00 GMT", None)
    assert got["tomorrow"] == ("tomorrow", None)
    assert got["future"] == ("Fri, 01 Jan 2100 00:00:00 GMT", None)
    assert got["1800"] == ("Wed, 01 Jan 1800 00:00:00 GMT", None)
    assert got["hour25"] == ("2024-01-01T25:00:00Z", None)
    # EST is UTC-5: calendar.timegm on feedparser's UTC tuple, not time.mktime
    assert got["good"] == ("Mon, 26 Jan 2004 16:31:00 EST", "2004-01-26T21:31:00Z")
    by_url = {e.study.url.rsplit("/", 1)[1]: e.study for e in feed.entries}
    assert by_url["month13"].year is None and by_url["month13"].pub_date is None
    assert by_url["good"].pub_date == "2004-01-26"


def test_checked_date_offsets_and_overflow():
    assert checked_date("2019-11-05T10:00:00+01:00", (2019, 11, 5, 9, 0, 0, 1, 309, 0), now=NOW) == "2019-11-05T09:00:00Z"
    # feedparser rolls 2026-13-45 into 2027-01-01: the raw string says otherwise
    assert checked_date("2026-13-45", (2027, 1, 1, 0, 0, 0, 4, 1, 0), now=NOW) is None
    assert checked_date("Sat, 29 Feb 2025 00:00:00 GMT", (2025, 3, 1, 0, 0, 0, 5, 60, 0), now=NOW) is None
    assert checked_date(None, None, now=NOW) is None


def test_identifier_sources():
    body = b"""<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title>
    <item><title>A trial of dry needling in shoulder pain</title><link>https://onlinelibrary.wiley.com/doi/full/10.1002/pmrj.12974?af=R</link></item>
    <item><title>Prolotherapy in knee pain, a trial</title><link>https://www.ncbi.nlm.nih.gov/pmc/articles/PMC5952445/</link><guid>https://doi.org/10.1186/S12906-018-2226-5</guid></item>
    <item><title>IMS in back pain, a trial</title><link>https://www.ncbi.nlm.nih.gov/pubmed/8043247</link><description>see doi:10.1097/00002060-199407000-00006.</description></item>
    <item><title>Two DOIs in a summary are references</title><link>https://example.org/x</link><description>10.1000/a1 and 10.1000/b2</description></item>
    <item><title>Identifier forms</title><link>https://example.org/y</link><dc:identifier>info:pmid/17718644</dc:identifier><dc:identifier>pmc:PMC6416864</dc:identifier><dc:identifier>https://dx.doi.org/10.1089%2Facm.2006.6371</dc:identifier></item>
    </channel></rss>"""
    e = [x.study for x in parse_feed(body, XML, now=NOW).entries]
    assert (e[0].doi, e[0].pmid) == ("10.1002/pmrj.12974", None)
    assert (e[1].doi, e[1].pmcid) == ("10.1186/s12906-018-2226-5", "PMC5952445")
    # A DOI only in the summary text is not the entry's: it may be another article's.
    assert (e[2].pmid, e[2].doi) == ("8043247", None)
    assert e[3].doi is None
    assert (e[4].pmid, e[4].pmcid, e[4].doi) == ("17718644", "PMC6416864", "10.1089/acm.2006.6371")


def test_html_to_text_and_links():
    assert html_to_text("<p>A &amp; B</p><p>C<br>D</p><script>x()</script>") == "A & B\n\nC D"
    assert html_to_text("<style>p{}</style><iframe>inner</iframe>ok") == "ok"
    assert clean_url("javascript:alert(1)") is None
    assert clean_url("HTTPS://Example.org/a?utm_source=x&id=3#frag") == "https://example.org/a?id=3"
    assert link_key("http://www.example.org/a/?utm_medium=rss") == link_key("https://example.org/a")


def test_split_authors():
    assert split_authors(["Edwards, J., Knowles, N."]) == ["Edwards J", "Knowles N"]
    assert split_authors(["Smith, John"]) == ["Smith, John"]
    assert split_authors(["A Author; B Author"]) == ["A Author", "B Author"]
    assert split_authors(["Radi R"]) == ["Radi R"]
    # "&" joins names as "and" does: one name per person, never "John & Doe"
    assert split_authors(["Smith, John & Doe, Jane"]) == ["Smith, John", "Doe, Jane"]
    assert split_authors(["Smith J & Jones K"]) == ["Smith J", "Jones K"]


def test_entity_bomb_behind_a_long_comment_is_not_expanded():
    # feedparser 6.0.14 strips entity declarations only when no tag precedes the DOCTYPE:
    # a "<x>" inside a comment before it lets the bomb reach expat, which expands it to its
    # amplification limit (over a second of CPU per feed, measured). We drop the whole
    # internal subset first.
    base = fixture("billion_laughs.xml")
    i = base.index(b"<!DOCTYPE")
    body = base[:i] + b"<!-- <x> -->\n" + base[i:]
    start = time.monotonic()
    feed = parse_feed(body, XML, now=NOW)
    assert time.monotonic() - start < 0.5
    assert "lollol" not in feed.entries[0].study.title + (feed.entries[0].study.abstract or "")


def test_a_giant_feed_is_read_up_to_the_entry_cap_in_bounded_time():
    item = (b"<item><title>Dry needling trial %d</title><link>https://example.org/a/%d</link>"
            b"<description>&lt;p&gt;Summary &lt;b&gt;text&lt;/b&gt;.&lt;/p&gt;</description></item>\n")
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            + b"".join(item % (i, i) for i in range(100_000)) + b"</channel></rss>")
    assert len(body) > 15_000_000
    start = time.monotonic()
    feed = parse_feed(body, XML, now=NOW)
    assert time.monotonic() - start < 5
    assert len(feed.entries) == 1000 and feed.entries[-1].study.title == "Dry needling trial 999"
    assert feed.warnings == ["more than 1000 entries: only the first 1000 read"]


def _rss(items: str) -> bytes:
    return (b'<?xml version="1.0"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            b"<channel><title>J</title>" + items.encode() + b"</channel></rss>")


def test_items_sharing_a_link_or_guid_keep_their_own_identifiers():
    # A table of contents whose items all link to the issue page, or share one GUID: each
    # item's dc:identifier values are its own, never the first item's.
    body = _rss("""
    <item><title>Dry needling for neck pain in adults: a trial</title><link>https://j.example/toc</link>
      <dc:identifier>doi:10.1000/AAA</dc:identifier></item>
    <item><title>Manual therapy for knee osteoarthritis: a cohort</title><link>https://j.example/toc</link>
      <dc:identifier>doi:10.1000/BBB</dc:identifier></item>
    <item><title>Prolotherapy for tendinopathy: a review</title><guid>g</guid><link>https://j.example/c</link>
      <dc:identifier>doi:10.1000/CCC</dc:identifier></item>
    <item><title>Cupping for back pain: a pilot trial</title><guid>g</guid><link>https://j.example/d</link>
      <dc:identifier>doi:10.1000/DDD</dc:identifier></item>""")
    got = [e.study.doi for e in parse_feed(body, XML, now=NOW).entries]
    assert got == ["10.1000/aaa", "10.1000/bbb", "10.1000/ccc", "10.1000/ddd"]


def test_a_correction_does_not_take_the_doi_its_summary_cites():
    body = _rss("""<item><title>Correction to: Dry needling for neck pain: a randomized trial</title>
      <guid>e1</guid><link>https://j.example/article/e1</link><description>An amendment to this paper has
      been published and can be accessed via the original article https://doi.org/10.1186/s1-021-1.</description></item>""")
    (entry,) = parse_feed(body, XML, now=NOW).entries
    assert entry.study.doi is None


def test_pub_date_is_the_calendar_date_as_written():
    body = _rss("""<item><title>Dry needling for neck pain: a randomized trial</title><guid>a1</guid>
      <pubDate>Thu, 01 Jan 2026 00:00:00 +1000</pubDate></item>
      <item><title>Cupping for back pain: a pilot trial</title><guid>a2</guid>
      <pubDate>Wed, 31 Dec 2025 20:00:00 -0500</pubDate></item>""")
    first, second = parse_feed(body, XML, now=NOW).entries
    assert first.published == "2025-12-31T14:00:00Z"  # the instant stays UTC
    assert (first.study.pub_date, first.study.year) == ("2026-01-01", 2026)
    assert second.published == "2026-01-01T01:00:00Z"
    assert (second.study.pub_date, second.study.year) == ("2025-12-31", 2025)


def test_tag_like_plain_text_does_not_cut_the_rest_of_the_field():
    body = _rss("""<item><title>Effect size &lt;object of 0.5 in dry needling</title><guid>a1</guid>
      <description>Results: p &amp;lt; 0.05. The &amp;lt;object of the study was pain. The &amp;lt;object&amp;gt;
      named. Conclusion: it works.</description></item>""")
    (entry,) = parse_feed(body, XML, now=NOW).entries
    assert entry.study.title == "Effect size <object of 0.5 in dry needling"
    assert entry.study.abstract == ("Results: p < 0.05. The <object of the study was pain. "
                                    "The named. Conclusion: it works.")


def test_a_truncated_feed_says_so():
    item = b"<item><title>Dry needling trial %d</title><link>https://example.org/a/%d</link></item>"
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            + b"".join(item % (i, i) for i in range(1001)) + b"</channel></rss>")
    assert parse_feed(body, XML, now=NOW).truncated
    assert not parse("bmc_atom.xml").truncated

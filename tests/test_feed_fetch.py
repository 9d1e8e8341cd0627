"""harvest.feeds: conditional GET, redirects, limits and refusals, against a local server."""

from __future__ import annotations

import socket
import time
import tracemalloc

import pytest
import requests
from fake_feeds import FakeFeeds, Reply, fixture

from harvest.feeds import FetchError, FetchLimits, fetch_feed, user_agent


@pytest.fixture
def feed_host():
    """A fake feed host on an ephemeral 127.0.0.1 port, for one test."""
    with FakeFeeds() as fake:
        yield fake


FAST = FetchLimits(connect_timeout=2, read_timeout=1, max_seconds=3)


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def test_first_fetch_sends_user_agent_and_no_validators(feed_host, session):
    url = feed_host.route("/f", Reply(body=fixture("pubmed_search_rss.xml"), etag='"v1"',
                                      last_modified="Mon, 16 Nov 2026 10:00:00 GMT"))
    got = fetch_feed(session, url, limits=FAST, user_agent_string=user_agent("ops@example.org"))
    assert got.status == 200 and not got.not_modified
    assert got.content == fixture("pubmed_search_rss.xml")
    assert (got.etag, got.last_modified) == ('"v1"', "Mon, 16 Nov 2026 10:00:00 GMT")
    assert got.headers["content-type"].startswith("application/rss+xml")
    sent = feed_host.requests_to("/f")[0].headers
    assert sent["user-agent"].startswith("doesitwork/") and "mailto:ops@example.org" in sent["user-agent"]
    assert "if-none-match" not in sent and "if-modified-since" not in sent
    assert "rss+xml" in sent["accept"]


def test_conditional_get_sends_validators_and_304_is_unchanged(feed_host, session):
    url = feed_host.route("/f", Reply(body=b"<rss/>", etag='"v1"',
                                      last_modified="Mon, 16 Nov 2026 10:00:00 GMT"))
    got = fetch_feed(session, url, etag='"v1"', last_modified="Mon, 16 Nov 2026 10:00:00 GMT",
                     limits=FAST)
    assert got.not_modified and got.content == b""
    # A 304 keeps the validators we had.
    assert (got.etag, got.last_modified) == ('"v1"', "Mon, 16 Nov 2026 10:00:00 GMT")
    sent = feed_host.requests_to("/f")[0].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Mon, 16 Nov 2026 10:00:00 GMT"


def test_last_modified_alone_gives_304(feed_host, session):
    url = feed_host.route("/f", Reply(body=b"<rss/>", last_modified="Sun, 15 Nov 2026 10:00:00 GMT"))
    assert fetch_feed(session, url, last_modified="Sun, 15 Nov 2026 10:00:00 GMT",
                      limits=FAST).not_modified


def test_permanent_redirect_reports_new_url(feed_host, session):
    new = feed_host.route("/new", Reply(body=b"<rss/>"))
    old = feed_host.route("/old", Reply(status=301, headers={"Location": "/new"}))
    got = fetch_feed(session, old, limits=FAST)
    assert got.url == new and got.moved_to == new


def test_temporary_redirect_does_not_move_the_feed(feed_host, session):
    feed_host.route("/new", Reply(body=b"<rss/>"))
    mid = feed_host.route("/mid", Reply(status=302, headers={"Location": "/new"}))
    old = feed_host.route("/old", Reply(status=301, headers={"Location": mid}))
    got = fetch_feed(session, old, limits=FAST)
    assert got.url.endswith("/new") and got.moved_to is None


def test_redirect_loop_and_redirect_to_file_are_refused(feed_host, session):
    loop = feed_host.route("/loop", Reply(status=302, headers={"Location": "/loop"}))
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, loop, limits=FAST)
    assert exc.value.kind == "redirects"
    sneaky = feed_host.route("/sneaky", Reply(status=301, headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, sneaky, limits=FAST)
    assert exc.value.kind == "bad-url"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/feed", "feed://x/y",
                                 "javascript:alert(1)", "http:///nohost"])
def test_only_http_and_https(session, url):
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert exc.value.kind == "bad-url"


@pytest.mark.parametrize("status", [404, 410])
def test_not_found_and_gone(feed_host, session, status):
    url = feed_host.route("/f", Reply(status=status, body=b"<html>gone</html>", content_type="text/html"))
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert (exc.value.kind, exc.value.status) == ("not-found", status)


def test_server_error_is_an_http_failure(feed_host, session):
    url = feed_host.route("/f", Reply(status=503, body=b"busy", content_type="text/plain"))
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert (exc.value.kind, exc.value.status) == ("http", 503)


def test_declared_50mb_body_is_refused_before_reading(feed_host, session):
    url = feed_host.route("/big", Reply(body=b"<rss>", stream_bytes=50 * 1024 * 1024))
    start = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert exc.value.kind == "too-large"
    assert time.monotonic() - start < 2


def test_undeclared_50mb_body_is_cut_at_the_cap_in_bounded_memory(feed_host, session):
    url = feed_host.route("/big", Reply(body=b"<rss>", stream_bytes=50 * 1024 * 1024,
                                        declare_length=False))
    limits = FetchLimits(connect_timeout=2, read_timeout=2, max_seconds=20, max_bytes=20_000_000)
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(FetchError) as exc:
            fetch_feed(session, url, limits=limits)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.kind == "too-large" and "20,000,000" in str(exc.value)
    assert elapsed < 15
    assert peak < 60_000_000  # the 20 MB buffer and its copy, never the 50 MB body


def test_endless_stream_is_cut(feed_host, session):
    url = feed_host.route("/endless", Reply(body=b"<rss><channel>", endless=True))
    limits = FetchLimits(connect_timeout=2, read_timeout=1, max_seconds=3, max_bytes=2_000_000)
    start = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=limits)
    assert exc.value.kind in ("too-large", "too-slow")
    assert time.monotonic() - start < 5


def test_drip_feed_hits_the_time_budget(feed_host, session):
    url = feed_host.route("/drip", Reply(drip=0.05))
    start = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert exc.value.kind == "too-slow"
    assert time.monotonic() - start < FAST.max_seconds + FAST.read_timeout + 1


def test_stalled_server_hits_the_read_timeout(feed_host, session):
    url = feed_host.route("/stall", Reply(body=b"<rss/>", stall=10))
    start = time.monotonic()
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, url, limits=FAST)
    assert exc.value.kind == "timeout"
    assert time.monotonic() - start < FAST.read_timeout + 1.5


def test_connection_refused(session):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, f"http://127.0.0.1:{port}/feed", limits=FAST)
    assert exc.value.kind == "connection"


def test_gzip_body_is_decoded(feed_host, session):
    url = feed_host.route("/gz", Reply(body=fixture("bmc_atom.xml"), gzip=True))
    assert fetch_feed(session, url, limits=FAST).content == fixture("bmc_atom.xml")


def test_gzip_bomb_is_cut_at_the_decoded_size(feed_host, session):
    url = feed_host.route("/bomb", Reply(body=b"<rss>" + b" " * 50_000_000, gzip=True))
    limits = FetchLimits(connect_timeout=2, read_timeout=2, max_seconds=10, max_bytes=5_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as exc:
            fetch_feed(session, url, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.kind == "too-large"
    assert peak < 40_000_000


# -- connection failures say why, not where ----------------------------------------------

LONG_PATH = "/feeds/" + "very-long-journal-section-name/" * 8 + "rss.xml?format=rss&limit=100"


def test_a_refused_connection_names_the_cause(session):
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, f"http://127.0.0.1:{port}{LONG_PATH}", limits=FAST)
    assert exc.value.kind == "connection"
    message = str(exc.value)
    assert message.startswith("connection failed: ") and "Connection refused" in message
    assert "very-long-journal" not in message  # the URL is on the error already


def test_an_unresolvable_host_names_the_cause(session):
    # .invalid never resolves (RFC 6761), so this fails the same offline and online.
    with pytest.raises(FetchError) as exc:
        fetch_feed(session, f"https://feeds.doesitwork.invalid{LONG_PATH}", limits=FAST)
    assert exc.value.kind == "connection"
    assert str(exc.value).startswith(
        "connection failed: Failed to resolve 'feeds.doesitwork.invalid'"
    )
    assert "(NameResolutionError)" in str(exc.value)

"""The E-utilities client against a fake NCBI (tests/fake_ncbi.py) on a loopback port.

Checklist items 1-13 of the field notes (section 4), as far as the client owns them;
bisection, reconciliation and tombstones belong to the harvester's tests.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests
from fake_ncbi import PUBMED_HEAD, FakeNCBI, Fault, ids_in

from harvest.eutils import (
    ConfigError,
    EutilsClient,
    EutilsConfig,
    EutilsHTTPError,
    EutilsStaleHistory,
    EutilsTransientError,
    EutilsUnreachable,
    SearchResult,
)

EMAIL = "harvester@example.org"
KEY = "0123456789abcdefSECRETKEY"
RECORD_FILES = [
    "pubmed1.xml",
    "pubmed2.xml",
    "pubmed4.xml",
    "pubmed5.xml",
    "pubmed6.xml",
    "pubmed7.xml",
]


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def make_client(fake: FakeNCBI | str, **overrides: object) -> EutilsClient:
    """A client tuned for speed: fast pacing, millisecond backoff, unless a test says otherwise."""
    kwargs = {k: overrides.pop(k) for k in ("sleep", "clock", "rng") if k in overrides}
    settings: dict[str, object] = dict(
        base_url=fake if isinstance(fake, str) else fake.base_url,
        email=EMAIL,
        requests_per_second=50,
        backoff_base=0.01,
        backoff_max=0.5,
        connect_timeout=2,
        read_timeout=5,
    )
    settings.update(overrides)
    return EutilsClient(EutilsConfig(**settings), **kwargs)  # type: ignore[arg-type]


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """The most requests that fall in any closed window of ``width`` seconds."""
    times = sorted(times)
    return max(
        (sum(1 for u in times[i:] if u - t <= width) for i, t in enumerate(times)), default=0
    )


@pytest.fixture
def eutils_data(shared_data: Path) -> Path:
    return shared_data / "eutils"


@pytest.fixture
def corpus(fake_ncbi: FakeNCBI, eutils_data: Path) -> FakeNCBI:
    """The fake holding the 8 real records of biopython/pubmed*.xml plus 42 clones of one.

    Entry dates spread over January 2024, modification dates over February 2024.
    """
    for name in RECORD_FILES:
        fake_ncbi.load_records(eutils_data / "biopython" / name)
    fake_ncbi.add_clones("27797938", range(40000001, 40000043))
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="edat")
    fake_ncbi.spread_dates(date(2024, 2, 1), date(2024, 2, 29), field="mdat")
    return fake_ncbi


def _search(client: EutilsClient) -> SearchResult:
    return client.esearch(
        "dry needling", datetype="edat", mindate="2024/01/01", maxdate="2024/01/31"
    )


def page(client: EutilsClient, result: SearchResult, retstart: int, retmax: int) -> bytes:
    assert result.webenv and result.query_key
    return client.efetch(
        webenv=result.webenv, query_key=result.query_key, retstart=retstart, retmax=retmax
    )


# -- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("email", [None, ""])
def test_missing_email_is_a_config_error(email: str | None) -> None:
    with pytest.raises(ConfigError, match="NCBI_EMAIL is not set.*contact e-mail"):
        EutilsClient(EutilsConfig(email=email))


def test_config_repr_hides_the_key() -> None:
    assert KEY not in repr(EutilsConfig(email=EMAIL, api_key=KEY))


# -- the happy path -----------------------------------------------------------------


def test_esearch_with_history_then_efetch_pages(corpus: FakeNCBI) -> None:
    client = make_client(corpus, requests_per_second=None)  # NCBI's real 3/s pacing
    jan_10 = {p for p in corpus.pmids if corpus.record(p).edat <= date(2024, 1, 10)}
    assert 5 < len(jan_10) < 50  # the window really filters

    result = client.esearch(
        "dry needling", datetype="edat", mindate="2024/01/01", maxdate="2024/01/10"
    )
    assert result.count == len(jan_10)
    assert result.ids == []  # retmax=0: the IDs stay on the history server
    assert result.webenv and result.webenv.startswith("MCID_") and result.query_key == "1"
    assert result.warnings == []

    pages = [page(client, result, start, 7) for start in range(0, result.count, 7)]
    fetched = [pmid for page in pages for pmid in ids_in(page)]
    assert sorted(fetched) == sorted(jan_10)  # every record once, no duplicates
    assert all(page.startswith(PUBMED_HEAD) for page in pages)

    reqs = corpus.requests
    assert [r.endpoint for r in reqs] == ["esearch"] + ["efetch"] * math.ceil(len(jan_10) / 7)
    assert client.requests_made == len(reqs) == len(client.request_times)
    search = reqs[0]
    assert search.method == "GET"
    assert search.params["usehistory"] == "y"
    assert (search.params["datetype"], search.params["mindate"], search.params["maxdate"]) == (
        "edat",
        "2024/01/01",
        "2024/01/10",
    )
    assert [r.params["retstart"] for r in reqs[1:]] == [str(s) for s in range(0, result.count, 7)]
    for r in reqs:
        assert r.params["db"] == "pubmed"
        assert r.params["tool"] == "doesitwork" and r.params["email"] == EMAIL
        assert "api_key" not in r.params
        assert (
            r.headers["User-Agent"].startswith("doesitwork/") and EMAIL in r.headers["User-Agent"]
        )
    for r in reqs[1:]:
        assert (r.params["WebEnv"], r.params["query_key"], r.params["retmode"]) == (
            result.webenv,
            "1",
            "xml",
        )
    assert max_in_window([r.time for r in reqs]) <= 3


def test_esearch_lists_ids_newest_first(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    result = client.esearch(
        "dry needling",
        datetype="mdat",
        mindate="2024/02/01",
        maxdate="2024/02/29",
        usehistory=False,
        retmax=5,
    )
    assert result.count == len(corpus.pmids)
    assert result.ids == sorted(corpus.pmids, key=int, reverse=True)[:5]
    assert result.webenv is None and "usehistory" not in corpus.requests[0].params


def test_registered_term_matches_only_its_pmids(corpus: FakeNCBI) -> None:
    corpus.register_term("ischemic compression", {"27797938", "29963580"})
    result = make_client(corpus).esearch("ischemic compression", retmax=20)
    assert sorted(result.ids) == ["27797938", "29963580"] and result.count == 2


def test_efetch_ids_always_posts_and_skips_unknown_pmids(
    corpus: FakeNCBI, eutils_data: Path
) -> None:
    client = make_client(corpus)
    body = client.efetch_ids(["30108519", "99999999", "12091962"])
    assert ids_in(body) == ["30108519", "12091962"]
    (req,) = corpus.requests
    assert req.method == "POST" and req.params["id"] == "30108519,99999999,12091962"
    assert "?" not in req.path
    with pytest.raises(ValueError):
        client.efetch_ids([])


def test_fake_replies_are_shaped_like_recorded_ones(corpus: FakeNCBI, eutils_data: Path) -> None:
    # Checks the fake itself: same XML declaration and DOCTYPE lines as the recorded
    # replies, and each record served byte for byte as NCBI sent it.
    raw_search = requests.get(
        corpus.base_url + "esearch.fcgi", params={"term": "x"}, timeout=5
    ).content
    efetched = make_client(corpus).efetch_ids(["12091962"])
    recorded_search = (eutils_data / "biopython" / "esearch2.xml").read_bytes()
    recorded_fetch = (eutils_data / "biopython" / "pubmed1.xml").read_bytes()
    assert raw_search.splitlines()[:2] == recorded_search.splitlines()[:2]
    assert efetched.splitlines()[:2] == recorded_fetch.splitlines()[:2]
    start = recorded_fetch.index(b"<PubmedArticle>")
    end = recorded_fetch.index(b"</PubmedArticle>", start) + len(b"</PubmedArticle>")
    assert recorded_fetch[start:end] in efetched


def test_long_terms_are_posted(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    long_term = " OR ".join(f'"trigger point {i}"[tiab]' for i in range(80))
    assert len(long_term) > 1500
    client.esearch("dry needling")
    client.esearch(long_term)
    short, long_ = corpus.requests
    assert short.method == "GET"
    assert long_.method == "POST" and long_.params["term"] == long_term and "?" not in long_.path


def test_esearch_reads_the_recorded_history_reply(fake_ncbi: FakeNCBI, eutils_data: Path) -> None:
    fake_ncbi.fail("esearch", with_=Fault.body(eutils_data / "biopython" / "esearch2.xml"))
    result = make_client(fake_ncbi).esearch("cancer", retmax=100)
    assert result.count == 42249 and len(result.ids) == 100 and result.ids[0] == "41297076"
    assert (result.webenv, result.query_key) == ("MCID_6927d6e7fee3e90f880ec190", "1")


# -- empty results and warnings -------------------------------------------------------


def test_phrase_not_found_is_an_empty_result(fake_ncbi: FakeNCBI, eutils_data: Path) -> None:
    fake_ncbi.register_term("abcXYZ", [])
    client = make_client(fake_ncbi)
    generated = client.esearch("abcXYZ")
    fake_ncbi.fail("esearch", with_=Fault.body(eutils_data / "biopython" / "esearch8.xml"))
    recorded = client.esearch("abcXYZ")
    for result in (generated, recorded):
        assert (result.count, result.ids, result.webenv) == (0, [], None)
        assert "PhraseNotFound: abcXYZ" in result.warnings
        assert "OutputMessage: No items found." in result.warnings
    assert client.requests_made == 2 and client.retry_delays == []


def test_field_not_found_only_is_a_warning_not_a_failure(
    fake_ncbi: FakeNCBI, eutils_data: Path
) -> None:
    # esearch8.xml with FieldNotFound in place of PhraseNotFound (the other benign ErrorList child).
    body = (
        (eutils_data / "biopython" / "esearch8.xml")
        .read_bytes()
        .replace(b"PhraseNotFound", b"FieldNotFound")
    )
    fake_ncbi.fail("esearch", with_=Fault.body(body))
    result = make_client(fake_ncbi).esearch("abcXYZ")
    assert result.count == 0 and result.warnings[0] == "FieldNotFound: abcXYZ"
    assert fake_ncbi.requests[0].fault == "reply" and len(fake_ncbi.requests) == 1


def test_pubmed_cap_9999_on_the_real_daily_file(fake_ncbi: FakeNCBI, shared_data: Path) -> None:
    daily = shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"
    loaded = set(fake_ncbi.load_records(daily))  # an update file may carry a PMID twice
    assert len(loaded) > 9999
    client = make_client(fake_ncbi)

    result = client.esearch("all", retmax=10000)
    assert result.count == len(loaded)  # the true total, so truncation is detectable
    assert len(result.ids) == 9999
    assert (
        "OutputMessage: Restrictions achieved. start and count adjusted to 0, 9999"
        in result.warnings
    )

    with pytest.raises(EutilsHTTPError, match="cannot be larger than 9998"):
        client.esearch("all", retstart=9999, retmax=10)
    assert client.requests_made == 2  # the cap is permanent: not retried

    tail = page(client, result, 9999, 500)
    assert len(ids_in(tail)) == len(loaded) - 9999  # the fake's history pages past the cap


# -- transient faults: retried, then the right answer ---------------------------------


def _transient_faults(data: Path) -> dict[str, Fault]:
    errors = data / "errors"
    backend_pubmed = next(
        line.strip("# ").strip()
        for line in (errors / "esearch_error_backend_failed_pubmed.txt").read_text().splitlines()
        if "<ERROR>" in line
    )
    return {
        "500 html": Fault.status(500),
        "502": Fault.status(502, body=b"<html><body>502 Bad Gateway</body></html>"),
        "503": Fault.status(503),
        "400 proxy_stream": Fault.status(
            400,
            body=(
                "<eFetchResult><ERROR>Error: CEFetchPApplication::proxy_stream(): "
                "Failed to connect to "
                "PubOne service. Try again later.</ERROR></eFetchResult>"
            ),
        ),
        "reset": Fault.reset(),
        "content-length short": Fault.short_body(),
        "cut mid-tag": Fault.truncated(),
        "200 empty": Fault.empty_body(),
        "200 html page": Fault.body(data / "biopython" / "pubmed3.html"),
        "200 ERROR taxonomy": Fault.body(errors / "esearch_error_backend_failed_taxonomy.xml"),
        "200 ERROR pubmed": Fault.body(f"<eSearchResult>{backend_pubmed}</eSearchResult>"),
        "200 json error": Fault.body(errors / "rate_limit_exceeded_documented.json"),
        "200 json esearchresult": Fault.body(
            '{"esearchresult":{"ERROR":"Search Backend failed: Unable to open connection"}}',
            content_type="application/json",
        ),
    }


FAULT_NAMES = [
    "500 html",
    "502",
    "503",
    "400 proxy_stream",
    "reset",
    "content-length short",
    "cut mid-tag",
    "200 empty",
    "200 html page",
    "200 ERROR taxonomy",
    "200 ERROR pubmed",
    "200 json error",
    "200 json esearchresult",
]


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_esearch_retries_transient_faults(corpus: FakeNCBI, eutils_data: Path, name: str) -> None:
    client = make_client(corpus)
    corpus.fail("esearch", times=2, with_=_transient_faults(eutils_data)[name])
    result = _search(client)
    # Never "0 results" from a failure: the true count and a usable history.
    assert result.count == len(corpus.pmids) and result.webenv
    assert [r.fault for r in corpus.requests] == [corpus.requests[0].fault] * 2 + [None]
    assert client.requests_made == 3 and len(client.retry_delays) == 2


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_efetch_retries_transient_faults(corpus: FakeNCBI, eutils_data: Path, name: str) -> None:
    client = make_client(corpus)
    result = _search(client)
    clean = page(client, result, 0, 20)
    corpus.fail("efetch", times=1, with_=_transient_faults(eutils_data)[name])
    again = page(client, result, 0, 20)
    assert again == clean and len(ids_in(again)) == 20
    assert [r.fault is not None for r in corpus.requests_to("efetch")] == [False, True, False]
    assert client.requests_made == 4


def test_efetch_ids_retries_a_truncated_body(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    corpus.fail("efetch", with_=Fault.truncated())
    body = client.efetch_ids(["27797938", "29963580"])
    assert ids_in(body) == ["27797938", "29963580"]
    assert [r.method for r in corpus.requests] == ["POST", "POST"]


# Hand-made (no recorded sample): a reply that lists nothing although Count says there is
# something, and a history search without its WebEnv. Both must be retried, never read as
# "no results".
HOLLOW_REPLIES = {
    "count without ids": b"<eSearchResult><Count>50</Count><RetMax>0</RetMax><RetStart>0</RetStart>"
    b"<QueryKey>1</QueryKey><WebEnv>MCID_0</WebEnv><IdList/></eSearchResult>",
    "history without webenv": b"<eSearchResult><Count>50</Count><RetMax>20</RetMax>"
    b"<RetStart>0</RetStart>"
    b"<IdList><Id>1</Id></IdList></eSearchResult>",
}


@pytest.mark.parametrize("name", HOLLOW_REPLIES)
def test_hollow_esearch_replies_are_retried(corpus: FakeNCBI, name: str) -> None:
    client = make_client(corpus)
    corpus.fail("esearch", with_=Fault.body(HOLLOW_REPLIES[name]))
    result = client.esearch("dry needling", retmax=20)
    assert result.count == len(corpus.pmids) and len(result.ids) == 20 and result.webenv
    assert len(corpus.requests) == 2


def test_gives_up_after_max_tries_saying_what_and_how_often(corpus: FakeNCBI) -> None:
    client = make_client(corpus, max_tries=4)
    corpus.fail("esearch", times=10, with_=Fault.status(503))
    with pytest.raises(EutilsTransientError) as info:
        _search(client)
    assert info.value.tries == 4 and "4 tries" in str(info.value) and "HTTP 503" in str(info.value)
    assert len(corpus.requests) == client.requests_made == 4


def test_429_waits_at_least_retry_after_then_gives_up(corpus: FakeNCBI, eutils_data: Path) -> None:
    clock = FakeTime()
    client = make_client(
        corpus,
        max_tries=5,
        backoff_base=1.0,
        backoff_max=60,
        sleep=clock.sleep,
        clock=clock.monotonic,
        rng=random.Random(7),
    )
    body = eutils_data / "errors" / "rate_limit_exceeded_documented.json"
    corpus.fail("esearch", times=5, with_=Fault.status(429, retry_after=2, body=body))
    with pytest.raises(EutilsTransientError, match="HTTP 429.*API rate limit exceeded") as info:
        _search(client)
    assert info.value.tries == 5 and len(corpus.requests) == 5
    assert len(client.retry_delays) == 4 and all(d >= 2 for d in client.retry_delays)
    assert len(set(client.retry_delays)) > 1  # jitter, not a fixed pause


def test_429_honours_a_real_retry_after_of_one_second(corpus: FakeNCBI, eutils_data: Path) -> None:
    client = make_client(corpus, backoff_base=0.01, backoff_max=5)
    body = eutils_data / "errors" / "rate_limit_exceeded_observed.json"
    corpus.fail("esearch", with_=Fault.status(429, retry_after=1, body=body))
    started = time.monotonic()
    assert _search(client).count == len(corpus.pmids)
    first, second = corpus.requests
    assert second.time - first.time >= 1.0
    assert time.monotonic() - started < 3


def test_retry_after_beyond_backoff_max_stops_at_once(corpus: FakeNCBI) -> None:
    clock = FakeTime()
    client = make_client(corpus, backoff_max=30, sleep=clock.sleep, clock=clock.monotonic)
    corpus.fail("esearch", times=5, with_=Fault.status(429, retry_after=3600))
    with pytest.raises(EutilsTransientError, match="Retry-After 3600"):
        _search(client)
    assert len(corpus.requests) == 1 and not any(s >= 30 for s in clock.sleeps)


def test_backoff_grows_exponentially_with_full_jitter(corpus: FakeNCBI) -> None:
    clock = FakeTime()
    client = make_client(
        corpus,
        max_tries=6,
        backoff_base=1.0,
        backoff_max=8.0,
        sleep=clock.sleep,
        clock=clock.monotonic,
        rng=random.Random(1),
    )
    corpus.fail("efetch", times=5, with_=Fault.status(502))
    client.efetch_ids(["27797938"])
    delays = client.retry_delays
    assert len(delays) == 5
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(8.0, 2**attempt)  # the cap doubles, up to backoff_max
    assert sum(delays) > 2  # not back-to-back like Bio.Entrez
    assert [s for s in clock.sleeps if s in delays] == delays  # really slept, in order


def test_backoff_envelope_keeps_growing_on_average() -> None:
    # Many seeded runs: the mean delay of try n+1 is about twice that of try n.
    means = []
    for attempt in range(1, 5):
        client = EutilsClient(
            EutilsConfig(email=EMAIL, backoff_base=1.0), rng=random.Random(attempt)
        )
        means.append(sum(client._backoff(attempt, None) or 0 for _ in range(2000)) / 2000)
    for lower, higher in zip(means, means[1:], strict=False):
        assert 1.6 < higher / lower < 2.4


def test_read_timeout_fires_on_a_stalled_reply(corpus: FakeNCBI) -> None:
    client = make_client(corpus, read_timeout=0.3)
    corpus.fail("esearch", with_=Fault.stall(5))
    started = time.monotonic()
    assert _search(client).count == len(corpus.pmids)
    assert time.monotonic() - started < 2


def test_a_server_that_never_answers_ends_the_call(
    corpus: FakeNCBI, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(corpus, read_timeout=0.3, max_tries=3)
    corpus.fail("efetch", times=3, with_=Fault.stall(5))
    started = time.monotonic()
    with pytest.raises(EutilsTransientError, match="timed out") as info:
        client.efetch_ids(["27797938"])
    assert info.value.tries == 3 and time.monotonic() - started < 3
    assert "timed out" in caplog.text  # each retry is logged


def test_after_two_requests_get_no_reply_the_client_asks_no_more(corpus: FakeNCBI) -> None:
    """NCBI down: two requests in a row spend their tries; the rest of the run fails at once,
    without its own tries and timeouts (a cron run of three topics and the DOI look-up would
    wait them all out)."""
    client = make_client(corpus, read_timeout=0.3, max_tries=2)
    corpus.fail("*", times=4, with_=Fault.stall(5))
    for _ in range(2):
        with pytest.raises(EutilsTransientError, match="timed out"):
            client.efetch_ids(["27797938"])
    made, started = client.requests_made, time.monotonic()
    with pytest.raises(EutilsUnreachable, match="not asked: NCBI gave no complete reply earlier"):
        client.esearch("dry needling")
    assert client.requests_made == made == 4 and time.monotonic() - started < 0.1
    assert len(corpus.requests_to("esearch")) == 0


def test_one_slow_request_on_a_server_that_answers_does_not_stop_the_run(corpus: FakeNCBI) -> None:
    client = make_client(corpus, read_timeout=0.3, max_tries=2)
    assert client.esearch("dry needling").count >= 0  # NCBI answers...
    corpus.fail("efetch", times=2, with_=Fault.stall(5))
    with pytest.raises(EutilsTransientError, match="timed out"):  # ...but this one is slow
        client.efetch_ids(["27797938"])
    assert client.esearch("dry needling").count >= 0 and client.unreachable is None
    corpus.fail("efetch", times=2, with_=Fault.stall(5))  # a reply in between resets the count
    with pytest.raises(EutilsTransientError, match="timed out"):
        client.efetch_ids(["27797938"])
    assert client.unreachable is None


def test_a_server_that_answers_with_errors_is_still_asked(corpus: FakeNCBI) -> None:
    client = make_client(corpus, max_tries=2)
    corpus.fail("efetch", times=2, with_=Fault.status(503))
    with pytest.raises(EutilsTransientError, match="HTTP 503"):
        client.efetch_ids(["27797938"])
    assert client.esearch("dry needling").count >= 0 and client.unreachable is None


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/entrez/eutils/"


def test_connection_refused_is_retried_then_reported() -> None:
    clock = FakeTime()
    client = make_client(_closed_port_url(), max_tries=3, sleep=clock.sleep, clock=clock.monotonic)
    with pytest.raises(EutilsTransientError, match="connection failed") as info:
        client.esearch("dry needling")
    assert client.requests_made == 3 and len(client.retry_delays) == 2 and info.value.tries == 3


# A query long enough that requests' "Max retries exceeded with url: ..." filled the old
# 300-character cut, leaving no room for the cause.
LONG_TERM = " OR ".join(f'"intramuscular stimulation {n}"[tiab]' for n in range(12))


def test_a_refused_connection_names_the_cause_not_the_query_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = _closed_port_url()
    port = url.split(":")[2].split("/")[0]
    client = make_client(url, max_tries=2)
    with pytest.raises(EutilsTransientError) as info:
        client.esearch(LONG_TERM)
    message = str(info.value)
    assert message.startswith("esearch: connection failed: ")
    assert "Connection refused" in message and f"127.0.0.1:{port}" in message
    assert "esearch.fcgi" not in message and "intramuscular" not in message
    assert message.endswith("gave up after 2 tries")
    # The retry line carries the same short cause, not the URL.
    retry_line = caplog.records[-1].getMessage()
    assert "Connection refused" in retry_line and "intramuscular" not in retry_line


def test_an_unresolvable_host_names_the_cause_not_the_query_url() -> None:
    # .invalid never resolves (RFC 6761), so this fails the same offline and online.
    client = make_client("http://eutils.doesitwork.invalid/entrez/eutils/", max_tries=1)
    with pytest.raises(EutilsTransientError) as info:
        client.esearch(LONG_TERM)
    message = str(info.value)
    assert message.startswith(
        "esearch: connection failed: Failed to resolve 'eutils.doesitwork.invalid'"
    )
    assert "(NameResolutionError)" in message and "intramuscular" not in message


# -- slow and oversized replies: a whole-reply budget and a size cap ----------------


def test_a_dripping_reply_is_cut_at_max_seconds_retried_then_reported(
    corpus: FakeNCBI, caplog: pytest.LogCaptureFixture
) -> None:
    # Each gap (0.1 s) is well inside read_timeout, so only max_seconds can end a try.
    client = make_client(corpus, read_timeout=0.5, max_seconds=1, max_tries=3)
    corpus.fail("esearch", times=3, with_=Fault.drip(0.1))
    started = time.monotonic()
    with pytest.raises(EutilsTransientError, match=r"took longer than 1 s") as info:
        _search(client)
    elapsed = time.monotonic() - started
    assert info.value.tries == 3 and len(corpus.requests) == 3
    assert 3 * 1.0 <= elapsed < 3 * (1.0 + 0.5)  # budget x tries, plus at most a gap each
    assert caplog.text.count("took longer than 1 s") == 2  # each retry is logged


def test_a_slow_reply_within_max_seconds_still_parses(corpus: FakeNCBI) -> None:
    client = make_client(corpus, read_timeout=0.5, max_seconds=5)
    corpus.fail("esearch", with_=Fault.drip(0.02, chunk=200))
    result = _search(client)
    assert result.count == len(corpus.pmids) and len(corpus.requests) == 1


def test_a_stall_mid_body_hits_the_read_timeout(corpus: FakeNCBI) -> None:
    client = make_client(corpus, read_timeout=0.3, max_seconds=5, max_tries=2)
    corpus.fail("efetch", times=2, with_=Fault.drip(2, chunk=500))
    started = time.monotonic()
    with pytest.raises(EutilsTransientError) as info:
        client.efetch_ids(["27797938"])
    assert info.value.last_problem.startswith("timed out")
    assert len(corpus.requests) == 2 and time.monotonic() - started < 2


def test_a_reply_over_max_bytes_fails_at_once(corpus: FakeNCBI) -> None:
    client = make_client(corpus, max_bytes=10_000)
    result = _search(client)
    with pytest.raises(EutilsHTTPError, match=r"larger than the 10,000-byte limit") as info:
        page(client, result, 0, 20)  # real records: well over 10 KB, with a Content-Length
    assert info.value.status == 200
    assert len(corpus.requests_to("efetch")) == 1 and client.retry_delays == []
    assert len(ids_in(page(make_client(corpus), result, 0, 20))) == 20  # fine without the cap


def test_an_endless_reply_without_content_length_is_cut_off_at_max_bytes(
    corpus: FakeNCBI,
) -> None:
    client = make_client(corpus, max_bytes=1_000_000)
    corpus.fail("efetch", times=3, with_=Fault.endless())
    started = time.monotonic()
    with pytest.raises(EutilsHTTPError, match=r"larger than the 1,000,000-byte limit.*not retried"):
        client.efetch_ids(["27797938", "29963580"])
    assert len(corpus.requests_to("efetch")) == 1 and client.retry_delays == []
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("setting", [{"max_seconds": 0}, {"max_bytes": 0}])
def test_budget_and_cap_must_be_positive(setting: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        EutilsClient(EutilsConfig(email=EMAIL, **setting))  # type: ignore[arg-type]


# -- permanent errors: raised at once ----------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 414])
def test_other_4xx_are_not_retried(corpus: FakeNCBI, status: int) -> None:
    client = make_client(corpus)
    corpus.fail(
        "esearch", with_=Fault.status(status, body="Bad Request: something about the query")
    )
    with pytest.raises(EutilsHTTPError, match=f"HTTP {status}.*something about the query") as info:
        _search(client)
    assert info.value.status == status and len(corpus.requests) == 1 and client.retry_delays == []


def test_id_list_is_empty_is_not_retried(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    with pytest.raises(EutilsHTTPError, match="ID list is empty") as info:
        client.efetch_ids(["0", "abc"])
    assert info.value.status == 400 and len(corpus.requests) == 1


def test_invalid_db_name_in_a_200_is_not_retried(corpus: FakeNCBI, eutils_data: Path) -> None:
    client = make_client(corpus)
    corpus.fail("esearch", with_=Fault.body(eutils_data / "biopython" / "epost2.xml"))
    with pytest.raises(EutilsHTTPError, match="Invalid db name specified"):
        _search(client)
    assert len(corpus.requests) == 1


# -- history ------------------------------------------------------------------------


def test_expired_webenv_raises_stale_history_without_retrying(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    result = _search(client)
    corpus.expire_webenvs()
    with pytest.raises(EutilsStaleHistory, match="Unable to obtain query #1"):
        page(client, result, 0, 20)
    assert len(corpus.requests_to("efetch")) == 1
    fresh = _search(client)  # what the caller does: search again
    body = page(client, fresh, 0, 20)
    assert len(ids_in(body)) == 20


def test_expired_webenv_fault_and_the_empty_set_variant(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    result = _search(client)
    corpus.fail("efetch", at=1, with_=Fault.expired_webenv())
    corpus.fail("efetch", at=2, with_=Fault.expired_webenv(empty=True))
    with pytest.raises(EutilsStaleHistory):
        page(client, result, 0, 20)
    # An empty set at retstart>0 is returned as is: only the caller knows records were expected.
    body = page(client, result, 20, 20)
    assert ids_in(body) == [] and len(corpus.requests_to("efetch")) == 2


def test_a_batch_missing_records_is_returned_for_the_caller_to_reconcile(corpus: FakeNCBI) -> None:
    client = make_client(corpus)
    result = _search(client)
    corpus.fail("efetch", with_=Fault.missing_records(3))
    body = page(client, result, 0, 20)
    assert len(ids_in(body)) == 17 and len(corpus.requests_to("efetch")) == 1
    corpus.fail("efetch", with_=Fault.missing_records(pmids=["27797938"]))
    assert ids_in(client.efetch_ids(["27797938", "29963580"])) == ["29963580"]


# -- the API key ----------------------------------------------------------------------


def test_api_key_is_sent_but_never_shown(
    corpus: FakeNCBI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(corpus, api_key=KEY, max_tries=2)
    assert _search(client).count == len(corpus.pmids)
    (req,) = corpus.requests
    assert req.params["api_key"] == KEY and req.method == "POST" and "?" not in req.path

    echo = f'{{"error":"API rate limit exceeded","api-key":"{KEY}","count":"11","limit":"10"}}'
    failures: list[Exception] = []
    corpus.fail("esearch", times=2, with_=Fault.status(429, retry_after=0, body=echo))
    with pytest.raises(EutilsTransientError) as info:
        _search(client)
    failures.append(info.value)
    corpus.fail("efetch", with_=Fault.status(400, body=f"<ERROR>bad request api_key={KEY}</ERROR>"))
    with pytest.raises(EutilsHTTPError) as http_info:
        client.efetch_ids(["1"])
    failures.append(http_info.value)
    refused = make_client(_closed_port_url(), api_key=KEY, max_tries=2)
    with pytest.raises(EutilsTransientError) as info:
        refused.esearch("dry needling")
    failures.append(info.value)

    for exc in failures:
        assert KEY not in str(exc) and KEY not in repr(exc.args)
    assert "API rate limit exceeded" in str(failures[0])
    assert KEY not in caplog.text and "retrying" in caplog.text


# -- the rate limit --------------------------------------------------------------------


def test_no_more_than_3_requests_in_any_second_without_a_key(corpus: FakeNCBI) -> None:
    client = make_client(corpus, requests_per_second=None)
    started = time.monotonic()
    for _ in range(7):
        client.esearch("dry needling")
    assert time.monotonic() - started >= 6 * 0.36
    assert max_in_window([r.time for r in corpus.requests]) <= 3
    assert max_in_window(client.request_times) <= 3


def test_no_more_than_10_requests_in_any_second_with_a_key(eutils_data: Path) -> None:
    with FakeNCBI(enforce_rate_limit=True) as fake:
        fake.load_records(eutils_data / "biopython" / "pubmed1.xml")
        client = make_client(fake, requests_per_second=None, api_key=KEY)
        for _ in range(14):
            client.esearch("dry needling")
        assert max_in_window([r.time for r in fake.requests]) <= 10
        assert max_in_window([r.time for r in fake.requests], width=0.5) >= 4  # not paced at 3/s
        assert all(r.fault is None for r in fake.requests)  # no 429 from the fake


def test_the_fake_answers_429_to_a_client_that_goes_too_fast(eutils_data: Path) -> None:
    with FakeNCBI(enforce_rate_limit=True) as fake:
        client = make_client(fake, requests_per_second=20, max_tries=1)
        with pytest.raises(EutilsTransientError, match="HTTP 429"):
            for _ in range(5):
                client.esearch("dry needling")
        assert [r.fault for r in fake.requests] == [None, None, None, "rate_limit"]


def _two_clients(fake: FakeNCBI, rate_file: Path | None, each: int) -> None:
    clients = [make_client(fake, requests_per_second=None, rate_file=rate_file) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(client: EutilsClient) -> None:
        barrier.wait()
        for _ in range(each):
            client.esearch("dry needling")

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)


def test_a_shared_rate_file_keeps_two_clients_within_the_budget(
    corpus: FakeNCBI, tmp_path: Path
) -> None:
    rate_file = tmp_path / "eutils.rate"
    _two_clients(corpus, rate_file, each=4)
    times = [r.time for r in corpus.requests]
    assert len(times) == 8
    assert max_in_window(times) <= 3
    assert float(rate_file.read_text()) > 0  # the last reserved slot, in wall time


def test_without_the_rate_file_two_clients_would_exceed_it(corpus: FakeNCBI) -> None:
    # The control for the test above: its window check does catch two uncoordinated clients.
    _two_clients(corpus, None, each=3)
    assert max_in_window([r.time for r in corpus.requests]) > 3


def test_a_garbage_or_far_future_rate_file_does_not_block(corpus: FakeNCBI, tmp_path: Path) -> None:
    rate_file = tmp_path / "eutils.rate"
    client = make_client(corpus, requests_per_second=None, rate_file=rate_file)
    for content in ("not a number", str(time.time() + 86400)):
        rate_file.write_text(content)
        started = time.monotonic()
        client.esearch("dry needling")
        assert time.monotonic() - started < 1

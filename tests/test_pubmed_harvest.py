"""Incremental PubMed harvesting against a fake E-utilities server holding real records.

Each test asserts the end state of the database, the requests made and their rate.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from fake_ncbi import Fault

from harvest import pubmed, status, store
from harvest.config import NcbiSettings, Topic
from harvest.eutils import EutilsClient, EutilsConfig
from harvest.pubmed_xml import parse_pubmed_xml

TODAY = date(2024, 3, 31)
TOPIC = Topic(name="dry_needling", title="Dry needling", query='"dry needling"[tiab]')


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


def client_for(fake, **kw) -> EutilsClient:
    """A client on the fake; with a key (10 requests/s) unless a test checks the 3/s budget."""
    cfg = dict(base_url=fake.base_url, email="test@example.org", api_key="test0123456789abcdef", backoff_base=0.05,
               backoff_max=0.2, read_timeout=2.0, connect_timeout=2.0)
    cfg.update(kw)
    return EutilsClient(EutilsConfig(**cfg))


def ncbi(**kw) -> NcbiSettings:
    return NcbiSettings(**{"batch_size": 3, "backfill_from": "2024/01/01", **kw})


@pytest.fixture
def small_corpus(fake_ncbi, shared_data):
    """Real efetch records from Biopython's recorded replies, entry dates in January 2024."""
    pmids = []
    for name in ("pubmed1.xml", "pubmed2.xml", "pubmed4.xml", "pubmed6.xml", "pubmed7.xml"):
        pmids += fake_ncbi.load_records(shared_data / "eutils" / "biopython" / name)
    pmids = sorted(set(pmids), key=int)
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="edat")
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="mdat")
    return pmids


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "e.db")


def stored_pmids(db) -> list[str]:
    return sorted((r["pmid"] for r in db["studies"].rows), key=int)


def test_backfill_then_incremental(db, fake_ncbi, small_corpus):
    client = client_for(fake_ncbi, api_key=None)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    assert (result.status, result.error) == ("ok", None)
    assert stored_pmids(db) == small_corpus
    assert result.counts.new == len(small_corpus)
    src = store.get_source(db, TOPIC.source_name)
    assert src["cursor"] == "2024/03/31" and src["query_version"] == TOPIC.query_version
    run = db["runs"].get(result_run_id(db))
    assert (run["status"], run["found"], run["new"], run["query_version"]) == (
        "ok", len(small_corpus), len(small_corpus), TOPIC.query_version)
    first = fake_ncbi.requests_to("esearch")[0].params
    assert (first["datetype"], first["mindate"], first["maxdate"]) == ("edat", "2024/01/01", "2024/03/31")
    assert first["tool"] == "doesitwork" and first["email"] == "test@example.org"
    assert max_in_window([r.time for r in fake_ncbi.requests]) <= 3
    assert db["sightings"].count == len(small_corpus)

    # A day later: one new record (a clone of a real one) and one revised record.
    before = len(fake_ncbi.requests)
    fake_ncbi.add_clones(small_corpus[0], ["99000001"], edat=date(2024, 4, 1), mdat=date(2024, 4, 1))
    revised = small_corpus[1]
    rec = fake_ncbi.record(revised)
    rec.xml = rec.xml.replace(b"<ArticleTitle>", b"<ArticleTitle>REVISED ", 1)
    fake_ncbi.set_dates([revised], mdat=date(2024, 4, 1))
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=date(2024, 4, 1))
    assert result.status == "ok"
    assert (result.counts.new, result.counts.updated) == (1, 1)
    assert "99000001" in stored_pmids(db)
    row = next(db["studies"].rows_where("pmid = ?", [revised]))
    assert row["title"].startswith("REVISED ")
    searches = [r.params for r in fake_ncbi.requests[before:] if r.endpoint == "esearch"]
    assert [(p["datetype"], p["mindate"], p["maxdate"]) for p in searches] == [
        ("edat", "2024/03/28", "2024/04/01"),  # cursor minus the 3-day overlap
        ("mdat", "2024/03/28", "2024/04/01"),
    ]
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/04/01"
    assert db["studies"].count == len(small_corpus) + 1


def result_run_id(db) -> int:
    return db.execute("SELECT max(id) FROM runs").fetchone()[0]


def test_count_over_cap_bisects_and_union_equals_count(db, fake_ncbi, shared_data):
    pmids = fake_ncbi.load_records(shared_data / "pubmed" / "pubmed21n1298-even.xml.gz")
    unique = set(pmids)
    assert len(unique) > pubmed.ESEARCH_CAP
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 20), field="edat")
    client = client_for(fake_ncbi)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 20))
    assert result.status == "ok", result.error
    assert result.windows >= 2
    assert set(stored_pmids(db)) == unique  # the union of the windows equals Count
    assert db["studies"].count == len(unique)
    assert max_in_window([r.time for r in fake_ncbi.requests]) <= 10
    # The whole window was over the cap; every window actually fetched fitted under it.
    edats = [fake_ncbi.record(p).edat for p in unique]

    def count(req) -> int:
        lo, hi = (date(*map(int, req.params[k].split("/"))) for k in ("mindate", "maxdate"))
        return sum(lo <= d <= hi for d in edats)

    searches = fake_ncbi.requests_to("esearch")
    assert count(searches[0]) == len(unique)
    fetched = {r.params["WebEnv"] for r in fake_ncbi.requests_to("efetch") if "WebEnv" in r.params}
    assert len(fetched) == result.windows
    assert all(count(r) <= pubmed.ESEARCH_CAP for r in searches[1:])


@pytest.fixture
def over_cap_backfilled(db, fake_ncbi, shared_data):
    """The 10,362 records of the update file, backfilled with entry dates over 2024/01/01-20;
    on 2024/01/21 NLM revises them all (a bulk revision: one modification date)."""
    unique = set(fake_ncbi.load_records(shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"))
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 20), field="edat")
    fake_ncbi.spread_dates(date(2024, 1, 1), date(2024, 1, 20), field="mdat")
    client = client_for(fake_ncbi)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 20))
    assert result.status == "ok", result.error
    revised = set()
    for pmid in unique:
        record = fake_ncbi.record(pmid)
        if b"<ArticleTitle>" in record.xml:  # not book records, nor an empty title
            record.xml = record.xml.replace(b"<ArticleTitle>", b"<ArticleTitle>Revised: ", 1)
            revised.add(pmid)
    fake_ncbi.set_dates(unique, mdat=date(2024, 1, 21))
    return unique, revised, client


def test_a_day_over_the_cap_is_split_by_a_second_date(db, fake_ncbi, over_cap_backfilled):
    unique, revised, client = over_cap_backfilled
    assert len(revised) > pubmed.ESEARCH_CAP
    before = len(fake_ncbi.requests)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 21))
    assert result.status == "ok", result.error
    assert result.counts.updated == len(revised) and result.counts.new == 0
    titles = dict(db.execute("SELECT pmid, title FROM studies"))
    assert set(titles) == unique
    assert {p for p, t in titles.items() if t.startswith("Revised: ")} == revised
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/01/21"
    # The revised day was bisected by entry date within it; the parts that fit under the cap
    # (the ones fetched) hold every record of that day exactly once.
    searches = [r.params for r in fake_ncbi.requests[before:] if r.endpoint == "esearch"]
    split = [p for p in searches if p["term"] == f"({TOPIC.query}) AND 2024/01/21[mdat]"]
    assert split and all(p["datetype"] == "edat" for p in split)
    edats = [fake_ncbi.record(p).edat for p in unique]
    parts = [n for n in (_count_in(p, edats) for p in split) if n <= pubmed.ESEARCH_CAP]
    assert sum(parts) == len(unique)


def test_a_backfill_failing_after_a_split_day_resumes_from_a_date_in_range(db, tmp_path, fake_ncbi, shared_data):
    """The parts of a split day run by publication date: their ends (back to 1700, up to a
    year ahead) must never become the backfill cursor, or the next run resumes in the future
    and never asks for the records entered after that day."""
    unique = sorted(set(fake_ncbi.load_records(shared_data / "pubmed" / "pubmed21n1298-even.xml.gz")), key=int)
    day, late = unique[:10100], unique[10100:]
    fake_ncbi.set_dates(day, edat=date(2024, 1, 10))
    fake_ncbi.spread_dates(date(2023, 6, 1), date(2024, 1, 10), field="pdat", pmids=day)
    fake_ncbi.set_dates(late, edat=date(2024, 1, 15))
    client = client_for(fake_ncbi)
    scratch = store.open_db(tmp_path / "scratch.db")  # counts the efetches of a whole backfill
    assert pubmed.harvest_topic(scratch, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 20)).status == "ok"
    efetches = len(fake_ncbi.requests_to("efetch"))
    # This time every try of the last efetch (the late records') fails.
    fake_ncbi.fail("efetch", at=range(2 * efetches, 2 * efetches + 5), with_=Fault.status(500))
    failed = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 20))
    assert failed.status == "error"
    cursor = store.get_source(db, TOPIC.source_name)["cursor"]
    assert "2024/01/01" <= cursor < "2024/01/15", cursor
    resumed = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 20))
    assert resumed.status == "ok", resumed.error
    assert set(stored_pmids(db)) == set(unique)


def test_a_split_day_whose_parts_miss_records_is_an_error(db, fake_ncbi, over_cap_backfilled):
    unique, _, client = over_cap_backfilled
    # Five records revised that day have an entry date outside the range the day is split by.
    fake_ncbi.set_dates(sorted(unique)[:5], edat=date(2026, 1, 1))
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 21))
    assert result.status == "error"
    assert f"split by edat holds {len(unique) - 5} of its {len(unique)} records" in result.error
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/01/20"


def _count_in(params, dates) -> int:
    lo, hi = (date(*map(int, params[k].split("/"))) for k in ("mindate", "maxdate"))
    return sum(lo <= d <= hi for d in dates)


def test_a_day_over_the_cap_by_both_dates_is_a_clear_error_and_keeps_the_cursor(db, fake_ncbi, over_cap_backfilled):
    unique, _, client = over_cap_backfilled
    fake_ncbi.set_dates(unique, edat=date(2024, 1, 21))
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(batch_size=500), today=date(2024, 1, 21))
    assert result.status == "error"
    assert "have mdat 2024-01-21, edat 2024-01-21..2024-01-21" in result.error
    assert "even split by two dates; narrow the query" in result.error
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/01/20"


def test_rate_limit_429_retry_after_is_honoured(db, fake_ncbi, small_corpus, shared_data):
    body = shared_data / "eutils" / "errors" / "rate_limit_exceeded_documented.json"
    fake_ncbi.fail("efetch", times=1, with_=Fault.status(429, retry_after=1, body=body))
    client = client_for(fake_ncbi, backoff_max=5, api_key=None)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    assert result.status == "ok", result.error
    assert stored_pmids(db) == small_corpus
    efetches = fake_ncbi.requests_to("efetch")
    assert efetches[1].time - efetches[0].time >= 1.0  # waited at least Retry-After
    assert max_in_window([r.time for r in fake_ncbi.requests]) <= 3


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.status(502), Fault.status(503), Fault.reset(), Fault.short_body(),
     Fault.truncated(), Fault.empty_body()],
    ids=["500", "502", "503", "reset", "short", "truncated", "empty"],
)
def test_transient_faults_are_retried(db, fake_ncbi, small_corpus, fault):
    fake_ncbi.fail("efetch", times=2, with_=fault)
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert result.status == "ok"
    assert stored_pmids(db) == small_corpus
    batches = -(-len(small_corpus) // 3)
    assert len(fake_ncbi.requests_to("efetch")) == batches + 2


def test_error_inside_200_is_never_zero_results(db, fake_ncbi, small_corpus, shared_data):
    """An <ERROR> in a 200 on every try fails the run and leaves the cursor alone."""
    err = shared_data / "eutils" / "errors" / "esearch_error_backend_failed_taxonomy.xml"
    fake_ncbi.fail("esearch", times=99, with_=Fault.body(err))
    result = pubmed.harvest_topic(db, client_for(fake_ncbi, max_tries=3), TOPIC, ncbi(), today=TODAY)
    assert result.status == "error"
    assert "Search Backend failed" in result.error and "3 tries" in result.error
    assert db["studies"].count == 0
    assert store.get_source(db, TOPIC.source_name)["cursor"] is None
    run = db["runs"].get(result_run_id(db))
    assert run["status"] == "error" and "Search Backend failed" in run["error"]
    assert len(fake_ncbi.requests_to("esearch")) == 3


def test_failure_mid_run_keeps_committed_batches_and_cursor(db, fake_ncbi, small_corpus):
    fake_ncbi.fail("efetch", at=[2, 3, 4], with_=Fault.status(503))
    result = pubmed.harvest_topic(db, client_for(fake_ncbi, max_tries=3), TOPIC, ncbi(), today=TODAY)
    assert result.status == "error"
    newest_first = sorted(small_corpus, key=int, reverse=True)  # PubMed's esearch order
    assert stored_pmids(db) == sorted(newest_first[:3], key=int)  # the first batch committed
    assert store.get_source(db, TOPIC.source_name)["cursor"] is None
    # The next run completes, with no duplicates.
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert result.status == "ok"
    assert stored_pmids(db) == small_corpus
    assert (result.counts.new, result.counts.unchanged) == (len(small_corpus) - 3, 3)


def test_phrase_not_found_is_a_real_empty_result(db, fake_ncbi, small_corpus):
    fake_ncbi.register_term(TOPIC.query, [])
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert result.status == "ok" and result.counts.found == 0
    assert len(fake_ncbi.requests) == 1
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/03/31"


def test_missing_records_refetched_once_then_unavailable(db, fake_ncbi, small_corpus):
    gone, flaky = sorted(small_corpus, key=int, reverse=True)[:2]  # in the first batch
    fake_ncbi.fail("efetch", at=1, with_=Fault.missing_records(pmids=[gone, flaky]))
    # The refetch by ID still lacks one of them: NCBI no longer has it.
    fake_ncbi.fail("efetch", at=2, with_=Fault.missing_records(pmids=[gone]))
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert result.status == "partial"
    assert result.unavailable == [gone]
    assert stored_pmids(db) == [p for p in small_corpus if p != gone]
    by_id = fake_ncbi.requests_to("efetch")[1]
    assert by_id.method == "POST" and by_id.params["id"] == f"{gone},{flaky}"
    run = db["runs"].get(result_run_id(db))
    assert (run["status"], run["unavailable"]) == ("partial", 1)
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/03/31"


@pytest.mark.parametrize("empty", [False, True], ids=["error", "empty-set"])
def test_expired_webenv_fetches_the_rest_of_the_window_by_pmid(db, fake_ncbi, small_corpus, empty):
    fake_ncbi.fail("efetch", at=2, with_=Fault.expired_webenv(empty=empty))
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert result.status == "ok", result.error
    assert stored_pmids(db) == small_corpus
    # No second search: it could list records added since and shift every later page.
    assert len(fake_ncbi.requests_to("esearch")) == 1
    newest_first = sorted(small_corpus, key=int, reverse=True)
    after = fake_ncbi.requests_to("efetch")[2:]
    assert [(r.method, r.params["id"].split(",")) for r in after] == [
        ("POST", newest_first[3:6]), ("POST", newest_first[6:])]
    assert db["studies"].count == len(small_corpus)


def test_records_added_while_the_webenv_expires_lose_nothing(db, fake_ncbi, small_corpus):
    """Newer records sort first: a fresh search after the expiry would push the window's
    oldest records past the pages still to fetch."""
    added = ["99000001", "99000002", "99000003"]

    def after_first_batch(done: int) -> None:
        if added[0] not in fake_ncbi.pmids:
            fake_ncbi.add_clones(small_corpus[0], added, edat=TODAY, mdat=TODAY)
            fake_ncbi.expire_webenvs()

    client = client_for(fake_ncbi)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY, progress=after_first_batch)
    assert result.status == "ok", result.error
    assert stored_pmids(db) == small_corpus  # every record the search listed
    assert pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY).status == "ok"
    assert stored_pmids(db) == small_corpus + added  # the new ones, by the next run's overlap


def test_a_pmid_efetch_never_returns_is_kept_pending_and_fetched_next_run(db, fake_ncbi, small_corpus):
    oldest = small_corpus[0]  # alone in the last batch of three
    # The history page holding it comes back empty, and so do both requests for it by ID.
    fake_ncbi.fail("efetch", at=[3, 4, 5], with_=Fault.missing_records(pmids=[oldest]))
    client = client_for(fake_ncbi)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    assert (result.status, result.unavailable, result.pending) == ("partial", [oldest], 0)
    assert stored_pmids(db) == small_corpus[1:]
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/03/31"  # moved on...
    assert store.pending_pmids(db, TOPIC.source_name) == [oldest]  # ...but it is not forgotten
    (row,) = status.source_status(db, now=datetime.now(UTC))
    assert "1 PMID(s) listed by PubMed but not yet returned by efetch" in "\n".join(row["warnings"])

    before = len(fake_ncbi.requests)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=date(2024, 4, 1))
    assert (result.status, result.counts.new, result.pending) == ("ok", 1, 0)
    assert stored_pmids(db) == small_corpus
    assert store.pending_pmids(db, TOPIC.source_name) == []
    retry = fake_ncbi.requests[before]
    assert (retry.endpoint, retry.method, retry.params["id"]) == ("efetch", "POST", oldest)


def test_a_pending_pmid_still_missing_stays_pending(db, fake_ncbi, small_corpus):
    oldest = small_corpus[0]
    fake_ncbi.fail("efetch", at=[3, 4, 5, 6], with_=Fault.missing_records(pmids=[oldest]))
    client = client_for(fake_ncbi)
    pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=date(2024, 4, 1))
    assert (result.status, result.pending) == ("ok", 1)
    row = db["pending_pmids"].get((TOPIC.source_name, oldest))
    assert row["attempts"] == 2
    # The query stops listing it: withdrawn before we ever got it, so no longer pending.
    fake_ncbi.register_term(TOPIC.query, small_corpus[1:])
    fake_ncbi.fail("efetch", times=10, with_=Fault.missing_records(pmids=[oldest]))
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=date(2024, 4, 2), reconcile=True)
    assert (result.status, store.pending_pmids(db, TOPIC.source_name)) == ("ok", [])


@pytest.mark.parametrize("times", [1, 2])
def test_esearch_listing_fewer_ids_than_its_count_is_asked_again(db, fake_ncbi, small_corpus, shared_data,
                                                                times):
    """A real reply (with a WebEnv) listing 100 IDs of its Count, where 9,999 were asked for."""
    short = shared_data / "eutils" / "biopython" / "esearch2.xml"
    fake_ncbi.fail("esearch", times=times, with_=Fault.body(short))
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi(), today=TODAY)
    assert len(fake_ncbi.requests_to("esearch")) == 2
    if times == 1:
        assert result.status == "ok" and stored_pmids(db) == small_corpus
    else:
        assert result.status == "error" and "esearch listed 100 of 42249 PMIDs" in result.error
        assert fake_ncbi.requests_to("efetch") == [] and db["studies"].count == 0
        assert store.get_source(db, TOPIC.source_name)["cursor"] is None


def test_an_unexpected_error_closes_the_run_as_failed(db, fake_ncbi, small_corpus):
    settings = ncbi(backfill_from="2024-13-01")  # no such month: a ValueError deep in the run
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, settings, today=TODAY)
    assert result.status == "error" and result.error.startswith("ValueError: ")
    run = db["runs"].get(result_run_id(db))
    assert (run["status"], run["finished"] is not None) == ("error", True)


def test_delete_citation_and_retraction_from_update_file(db, shared_data):
    """DeleteCitation tombstones stored PMIDs; nothing is dropped."""
    items = list(parse_pubmed_xml(shared_data / "pubmed" / "pubmed21n1298-even.xml.gz"))
    deleted = [i.pmid for i in items if not hasattr(i, "title")]
    assert len(deleted) == 20
    # Pretend we had stored the deleted PMIDs earlier (clones of a real record).
    template = next(i for i in items if hasattr(i, "title"))
    from dataclasses import replace

    with store.write_tx(db):
        store.save_studies(db, [replace(template, pmid=p) for p in deleted])
    from harvest.ingest import write_batch

    with store.write_tx(db):
        counts = write_batch(db, items, run_id=None)
    assert counts.deleted == 20
    rows = list(db["studies"].rows_where("deleted = 1"))
    assert sorted(r["pmid"] for r in rows) == sorted(deleted)
    assert {r["deleted_reason"] for r in rows} == {"DeleteCitation"}


def test_query_change_triggers_backfill(db, fake_ncbi, small_corpus):
    client = client_for(fake_ncbi)
    pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    changed = Topic(name=TOPIC.name, title=TOPIC.title, query=TOPIC.query + ' OR "IMS"[tiab]')
    before = len(fake_ncbi.requests)
    pubmed.harvest_topic(db, client, changed, ncbi(), today=TODAY)
    first = fake_ncbi.requests[before].params
    assert first["mindate"] == "2024/01/01"  # from the backfill start, not the cursor
    assert store.get_source(db, TOPIC.source_name)["query_version"] == changed.query_version


def test_reconcile_tombstones_records_ncbi_no_longer_returns(db, fake_ncbi, small_corpus):
    client = client_for(fake_ncbi)
    pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY)
    gone = small_corpus[0]
    fake_ncbi.register_term(TOPIC.query, [p for p in small_corpus if p != gone])
    for attempt in (1, 2):
        fake_ncbi.fail("efetch", times=1, with_=Fault.missing_records(pmids=[gone]))
        result = pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=TODAY, reconcile=True)
        assert result.status == "ok" and result.withdrawn == [gone]
        row = next(db["studies"].rows_where("pmid = ?", [gone]))
        assert (row["missing_count"], row["deleted"]) == (attempt, int(attempt == 2))
    assert row["deleted_reason"] == "no longer returned by NCBI"
    assert db["runs"].get(result_run_id(db))["deleted"] == 1
    assert db["studies"].count == len(small_corpus)  # tombstoned, never dropped


# A host ahead of US Eastern time (Tokyo): at this instant it is already 1 April there
# while PubMed, on the Eastern calendar, is still adding records dated 31 March.
LATE_EASTERN = datetime(2024, 3, 31, 22, 30, tzinfo=ZoneInfo("America/New_York"))


class _TokyoDate(date):
    @classmethod
    def today(cls) -> date:
        return LATE_EASTERN.astimezone(ZoneInfo("Asia/Tokyo")).date()


class _TokyoDatetime(datetime):
    @classmethod
    def now(cls, tz=None) -> datetime:
        local = LATE_EASTERN.astimezone(ZoneInfo("Asia/Tokyo"))
        return local.astimezone(tz) if tz else local.replace(tzinfo=None)


def test_the_cursor_day_is_pubmeds_eastern_day_not_the_hosts(db, fake_ncbi, small_corpus, monkeypatch):
    monkeypatch.setattr(pubmed, "date", _TokyoDate)
    monkeypatch.setattr(pubmed, "datetime", _TokyoDatetime, raising=False)
    result = pubmed.harvest_topic(db, client_for(fake_ncbi), TOPIC, ncbi())  # today from the clock
    assert result.status == "ok", result.error
    assert fake_ncbi.requests_to("esearch")[0].params["maxdate"] == "2024/03/31"
    assert store.get_source(db, TOPIC.source_name)["cursor"] == "2024/03/31"


def test_pubmed_today_without_a_time_zone_database_is_never_ahead(monkeypatch):
    def missing(key):
        raise pubmed.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(pubmed, "ZoneInfo", missing)
    # 03:30 UTC on 1 April is 23:30 on 31 March in New York (EDT); EST says 22:30.
    assert pubmed.pubmed_today(datetime(2024, 4, 1, 3, 30, tzinfo=UTC)) == date(2024, 3, 31)


def test_an_overlap_of_zero_still_searches_the_day_before_the_cursor(db, fake_ncbi, small_corpus):
    client = client_for(fake_ncbi)
    assert pubmed.harvest_topic(db, client, TOPIC, ncbi(), today=date(2024, 3, 31)).status == "ok"
    # A cursor one day ahead of PubMed's calendar, as a host ahead of Eastern time wrote it,
    # and a record PubMed entered late on 31 March (Eastern).
    with store.write_tx(db):
        store.update_source(db, TOPIC.source_name, cursor="2024/04/01")
    fake_ncbi.add_clones(small_corpus[0], ["99000002"], edat=date(2024, 3, 31), mdat=date(2024, 3, 31))
    result = pubmed.harvest_topic(db, client, TOPIC, ncbi(overlap_days=0), today=date(2024, 4, 1))
    assert result.status == "ok", result.error
    assert "99000002" in stored_pmids(db)

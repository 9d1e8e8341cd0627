"""harvest.identity: normalization, the same-work rule, the resolver, and the dedup benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harvest import identity, store
from harvest.identity import first_author_tokens, normalize_title, same_work, title_kind
from harvest.models import Study

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dedup.py"


def rec(title, authors=(), year=None, **kw):
    return {"title": title, "authors": list(authors), "year": year, **kw}


def test_normalize_title():
    assert normalize_title("Dry Needling\u2013Induced Pneumothorax.") == "dry needling induced pneumothorax"
    assert normalize_title("[Study of adherence to the gluten-free diet].") == "study of adherence to the gluten free diet"
    assert normalize_title("A <i>randomised</i> trial &amp; more") == normalize_title("A randomized trial and more")
    assert normalize_title("Behaviour of Fernández") == "behavior of fernandez"
    assert normalize_title(None) == ""


def test_title_kind():
    assert title_kind("Correction to: Current clinical practice of ECT") == "erratum"
    assert title_kind("Erratum-Health Disparities among Australia's Remote-Dwelling People") == "erratum"
    assert title_kind("Commentary on: Using Nasal Self-Esteem to Predict Revision") == "comment"
    assert title_kind("Growth Hormone Use in Childhood and Adult Cardiovascular Disease-Reply.") == "comment"
    assert title_kind("Twice-daily chemoradiotherapy - Authors' reply.") == "comment"
    assert title_kind("X: study protocol for a randomized trial") == "protocol"
    assert title_kind("Dry needling for low back pain") is None


def test_first_author_forms():
    assert first_author_tokens(["Fernández-de-Las-Peñas C"])[0] == {"fernandez", "las", "penas"}
    assert first_author_tokens('["Radi R"]')[0] == {"radi"}
    assert first_author_tokens(["Edwards, J."])[0] == {"edwards"}
    assert first_author_tokens(["C. Chan Gunn"])[0] == {"gunn"}
    assert first_author_tokens([]) is None


@pytest.mark.parametrize("a, b", [
    (rec("Dry Needling for Low Back Pain.", ["Radi R"], 2023), rec("Dry needling for low back pain", ["Rebecca Radi"], 2023)),
    (rec("Lidocaine injection versus dry needling to myofascial trigger point. The importance of the local twitch response", ["Hong CZ"], 1994),
     rec("Lidocaine Injection Versus Dry Needling to Myofascial Trigger Point: The Importance of the Local Twitch Response", ["Chang-Zern Hong"], 1994)),
    (rec("The efficacy of intramuscular electrical stimulation in the management of patients with myofascial pain syndrome: a systematic review", ["Hadizadeh M"], 2021),
     rec("The efficacy of intramuscular electrical stimulation in the management of patients with myofascial pain syndrome", ["Maryam Hadizadeh"], 2022)),
    (rec("Any title at all", doi="10.1/x"), rec("A completely different title", doi="10.1/X")),
])
def test_same_work_true(a, b):
    assert same_work(a, b) and same_work(b, a)


@pytest.mark.parametrize("a, b", [
    (rec("Dry Needling for Low Back Pain.", ["Radi R"], 2023), rec("Trigger Point Injection for Low Back Pain.", ["Lehn C"], 2023)),
    (rec("Efficacy of X versus saline for knee osteoarthritis: a protocol for a triple-blinded randomized controlled trial", ["Sit RWS"], 2018),
     rec("Efficacy of X versus saline for knee osteoarthritis: a triple-blinded randomized controlled trial", ["Sit RWS"], 2019)),
    (rec("ETOIMS for myofascial pain syndrome in a football player", ["Chu J"], 2004),
     rec("ETOIMS for myofascial pain syndrome in a basketball player", ["Chu J"], 2004)),
    (rec("Same title of an ordinary length here", pmid="1"), rec("Same title of an ordinary length here", pmid="2")),
    (rec("Same title of an ordinary length here", doi="10.1/a"), rec("Same title of an ordinary length here", doi="10.1/b")),
    (rec("Correction."), rec("Correction.")),
    (rec("A qualitative study on the elderly during the lockdown - Part 1."), rec("A qualitative study on the elderly during the lockdown - Part 2.")),
    (rec("Dry needling in the management of myofascial trigger points", [], 2010), rec("Dry needling in the management of myofascial trigger points", [], 2017)),
])
def test_same_work_false(a, b):
    assert not same_work(a, b) and not same_work(b, a)


def test_preprint_doi_does_not_veto():
    journal = rec("Intra-articular prolotherapy with perineural injection in knee osteoarthritis: a randomized trial",
                  ["Fu Y"], 2024, doi="10.1186/s13018-024-04762-4")
    preprint = rec("Intra-articular prolotherapy combined with perineural injection for knee osteoarthritis: a randomised trial",
                   ["Fu Y"], 2023, doi="10.21203/rs.3.rs-0000000/v1")
    assert same_work(journal, preprint)


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "t.db")


def save(db, *studies, resolve=None):
    with store.write_tx(db):
        return store.save_studies(db, studies, resolve=resolve)


def test_a_reused_guid_is_not_trusted_for_a_similar_but_different_title():
    neck = {"title": "Dry needling for neck pain in office workers: a randomized controlled trial",
            "year": 2024}
    knee = {**neck, "title": neck["title"].replace("neck", "knee")}
    assert not identity.compatible(neck, knee)  # scores over 85, but a content word is swapped
    assert identity.compatible(neck, {**neck, "title": neck["title"].upper() + "."})


def test_resolve_by_doi_among_pubmed_rows_and_by_title(db):
    save(db, Study(title="Dextrose prolotherapy for knee osteoarthritis: a randomized controlled trial.",
                   pmid="23690322", doi="10.1370/afm.1504", authors=["Rabago D"], year=2013))
    # A feed entry with the DOI: save_studies alone only matches DOIs of feed-only rows.
    feed = Study(title="Dextrose Prolotherapy for Knee Osteoarthritis", doi="10.1370/afm.1504",
                 record_source="feed", url="https://example.org/a")
    assert save(db, feed, resolve=identity.resolve).new == 0
    # Without a DOI, by title, year and first author.
    feed2 = Study(title="Dextrose prolotherapy for knee osteoarthritis: a randomised controlled trial",
                  authors=["David Rabago"], year=2013, record_source="feed")
    assert save(db, feed2, resolve=identity.resolve).new == 0
    row = db["studies"].get(1)
    assert db["studies"].count == 1 and row["pmid"] == "23690322" and row["url"] == "https://example.org/a"
    assert row["title"] == "Dextrose prolotherapy for knee osteoarthritis: a randomized controlled trial."
    # A protocol with the same main title is a different study.
    proto = Study(title="Dextrose prolotherapy for knee osteoarthritis: protocol for a randomized controlled trial",
                  authors=["Rabago D"], year=2012, record_source="feed")
    assert save(db, proto, resolve=identity.resolve).new == 1


def test_resolve_never_joins_two_pmids(db):
    save(db, Study(title="Evaluation of the Impact of Body Position on Primary Central Sleep Apnea Syndrome.",
                   pmid="32527712", authors=["Oktay Arslan B"], year=2021))
    again = Study(title="Evaluation of the Impact of Body Position on Primary Central Sleep Apnea Syndrome.",
                  pmid="34088390", authors=["Oktay Arslan B"], year=2021)
    assert save(db, again, resolve=identity.resolve).new == 1


def _rows(db):
    return [dict(r) for r in db.query("SELECT id, pmid, doi, deleted, deleted_reason FROM studies ORDER BY id")]


def test_a_feed_never_brings_a_tombstone_back(db):
    from harvest.feed_harvest import save_entry
    from harvest.feed_parse import FeedEntry

    title = "Dry needling of the upper trapezius in chronic neck pain: a randomised trial"
    # NLM deletes 201, a duplicate citation of 202 (same DOI).
    save(db, Study(title=title, pmid="201", doi="10.1/dup", authors=["Smith J"], year=2026),
         Study(title=title, pmid="202", doi="10.1/dup", authors=["Smith J"], year=2026))
    with store.write_tx(db):
        store.mark_deleted(db, ["201"], reason="DeleteCitation")
    # A journal feed lists the article: it belongs to the live record, not the deleted one.
    store.ensure_source(db, "feed:j", kind="feed")
    entry = FeedEntry(study=Study(title=title, doi="10.1/dup", authors=["Smith J"], year=2026,
                                  record_source="feed"), guid="g", link="https://j.org/a")
    with store.write_tx(db):
        save_entry(db, "feed:j", entry, run_id=None)
    assert _rows(db) == [
        {"id": 1, "pmid": "201", "doi": "10.1/dup", "deleted": 1, "deleted_reason": "DeleteCitation"},
        {"id": 2, "pmid": "202", "doi": "10.1/dup", "deleted": 0, "deleted_reason": None},
    ]
    assert [r["study_id"] for r in db.query("SELECT study_id FROM feed_entries")] == [2]
    # PubMed returning the deleted PMID does bring it back.
    save(db, Study(title=title, pmid="201", doi="10.1/dup", authors=["Smith J"], year=2026))
    assert _rows(db)[0]["deleted"] == 0


def test_a_feed_entry_for_a_deleted_record_joins_it_without_a_duplicate(db):
    title = "Prolotherapy for lateral epicondylalgia: a randomised trial"
    save(db, Study(title=title, pmid="111", doi="10.1000/abc", authors=["Rabago D"], year=2020))
    with store.write_tx(db):
        store.mark_deleted(db, ["111"], reason="DeleteCitation")
    feed = Study(title="Prolotherapy for tennis elbow", doi="10.1000/abc", record_source="feed")
    assert save(db, feed, resolve=identity.resolve).new == 0  # not a second study
    assert _rows(db) == [{"id": 1, "pmid": "111", "doi": "10.1000/abc", "deleted": 1,
                          "deleted_reason": "DeleteCitation"}]  # fmt: skip
    # PubMed returns the PMID: the one row is live again, and nothing else holds the DOI.
    save(db, Study(title=title, pmid="111", doi="10.1000/abc", authors=["Rabago D"], year=2020),
         resolve=identity.resolve)
    assert _rows(db) == [{"id": 1, "pmid": "111", "doi": "10.1000/abc", "deleted": 0, "deleted_reason": None}]


def test_a_merged_feed_row_stays_merged_when_its_feed_sees_it_again(db):
    from harvest.feed_harvest import save_entry
    from harvest.feed_parse import FeedEntry

    pubmed = Study(title="Effect of dry needling on chronic neck pain in office workers", pmid="111",
                   authors=["Smith J"], year=2026)
    save(db, pubmed, resolve=identity.resolve)
    store.ensure_source(db, "feed:j", kind="feed")

    def entry():  # worded too differently for a title match
        return FeedEntry(study=Study(title="Trigger point needling versus sham in desk workers: an RCT",
                                     doi="10.1/x", authors=["Smith J"], year=2026, record_source="feed"),
                         guid="g1", link="https://j.org/a1")  # fmt: skip

    with store.write_tx(db):
        save_entry(db, "feed:j", entry(), run_id=None)
    # PubMed gives the record its DOI: the feed-only row is merged into it.
    save(db, Study(title=pubmed.title, pmid="111", doi="10.1/x", authors=["Smith J"], year=2026,
                   date_revised="2026-11-01"), resolve=identity.resolve)
    merged = [{"id": 1, "pmid": "111", "doi": "10.1/x", "deleted": 0, "deleted_reason": None},
              {"id": 2, "pmid": None, "doi": "10.1/x", "deleted": 1, "deleted_reason": "merged into study 1"}]
    assert _rows(db) == merged
    with store.write_tx(db):
        save_entry(db, "feed:j", entry(), run_id=None)  # the next fetch
    assert _rows(db) == merged
    assert [dict(r) for r in db.query("SELECT study_id, times_seen FROM feed_entries")] == [
        {"study_id": 1, "times_seen": 2}]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dedup", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dedup_benchmark_meets_its_targets():
    bench = _bench()
    pairs = bench.load()
    assert len(pairs) >= 40
    assert sum(p["label"] == "duplicate" for p in pairs) >= 20
    assert sum(p["label"] == "distinct" for p in pairs) >= 20
    for title_only in (False, True):
        s = bench.score(pairs, title_only=title_only)
        assert s["precision"] >= 0.95 and s["recall"] >= 0.95, (title_only, s["errors"])

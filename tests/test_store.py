"""The store: schema, identity, revisions, tombstones, FTS consistency, refusing foreign DBs."""

from __future__ import annotations

import json
import sqlite3

import pytest

from harvest import schema, store
from harvest.models import Correction, MeshHeading, Study


def fts_ok(db) -> None:
    """FTS5 integrity-check raises on any drift between the index and the table."""
    # rank = 1 compares the index with the table's rows; without it drift goes unseen.
    db.execute("INSERT INTO studies_fts(studies_fts, rank) VALUES('integrity-check', 1)")
    assert db["studies_fts_docsize"].count == db["studies"].count


def search(db, query: str) -> list[str]:
    sql = "SELECT s.pmid FROM studies_fts f JOIN studies s ON s.id = f.rowid WHERE studies_fts MATCH ?"
    return sorted(r[0] for r in db.execute(sql, [query]))


def save(db, *studies: Study, run_id=None):
    with store.write_tx(db):
        return store.save_studies(db, studies, run_id=run_id, now="2026-01-01T00:00:00Z")


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "t.db")


def study(pmid="1", **kw) -> Study:
    base = dict(title="Dry needling for neck pain: a randomized trial", pmid=pmid, year=2020,
                journal="J Orthop Sports Phys Ther", authors=["Smith J"],
                mesh=[MeshHeading("Dry Needling", True), MeshHeading("Neck Pain")],
                keywords=["trigger point"])
    base.update(kw)
    return Study(**base)


def test_migrations_idempotent_and_wal(tmp_path):
    path = tmp_path / "t.db"
    db = store.open_db(path)
    applied = [m.name for m in schema.migrations.applied(db)]
    db.conn.close()
    db = store.open_db(path)
    assert [m.name for m in schema.migrations.applied(db)] == applied
    assert applied[:3] == ["m001_studies", "m002_sources_runs", "m003_tags"]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"studies_ai", "studies_ad", "studies_au"} <= triggers


def test_new_study_row(db):
    result = save(db, study(corrections=[Correction("ErratumIn", "2", "J 2021")]))
    assert (result.new, result.updated, result.unchanged) == (1, 0, 0)
    row = db["studies"].get(1)
    assert row["pmid"] == "1" and row["retracted"] == 0 and row["deleted"] == 0
    assert row["mesh_text"] == "Dry Needling*; Neck Pain"
    assert json.loads(row["mesh"])[0] == {"descriptor": "Dry Needling", "major": True, "qualifiers": []}
    assert json.loads(row["corrections"]) == [{"ref_type": "ErratumIn", "pmid": "2", "ref_source": "J 2021"}]
    assert row["first_seen"] == row["last_updated"] == "2026-01-01T00:00:00Z"
    fts_ok(db)


def test_same_record_twice_is_unchanged(db):
    save(db, study())
    result = save(db, study())
    assert (result.new, result.updated, result.unchanged) == (0, 0, 1)
    assert db["studies"].count == 1


def test_revision_updates_row_keeps_first_seen_and_fts(db):
    save(db, study())
    with store.write_tx(db):
        r = store.save_studies(db, [study(title="Retracted: prolotherapy for knees",
                                          publication_types=["Retracted Publication"])],
                               now="2026-02-01T00:00:00Z")
    assert (r.new, r.updated) == (0, 1)
    row = db["studies"].get(1)
    assert row["first_seen"] == "2026-01-01T00:00:00Z"
    assert row["last_updated"] == "2026-02-01T00:00:00Z"
    assert row["retracted"] == 1
    assert search(db, "prolotherapy") == ["1"]
    assert search(db, "title:neck") == []  # the old title is gone from the index
    fts_ok(db)


def test_retraction_in_comments_corrections(db):
    save(db, study(corrections=[Correction("RetractionIn", "99")]))
    assert db["studies"].get(1)["retracted"] == 1


def test_older_pmid_version_never_replaces_newer(db):
    save(db, study(pmid_version=2, title="Version two"))
    r = save(db, study(pmid_version=1, title="Version one"))
    assert r.unchanged == 1
    assert db["studies"].get(1)["title"] == "Version two"


def test_tombstones_and_missing(db):
    save(db, study("1"), study("2"), study("3"))
    with store.write_tx(db):
        assert store.mark_deleted(db, ["1", "404"], reason="DeleteCitation") == 1
        assert store.record_missing(db, ["2"]) == 0  # one miss is not enough
        assert store.record_missing(db, ["2"]) == 1
    rows = {r["pmid"]: r for r in db["studies"].rows}
    assert [rows[p]["deleted"] for p in "123"] == [1, 1, 0]
    assert rows["1"]["deleted_reason"] == "DeleteCitation"
    assert rows["2"]["deleted_reason"] == "no longer returned by NCBI"
    assert db["studies"].count == 3  # never dropped
    # Seen again: alive again.
    r = save(db, study("1"))
    assert r.updated == 1 and db["studies"].get(1)["deleted"] == 0
    fts_ok(db)


def test_feed_row_upgraded_by_pubmed_record_via_doi(db):
    feed = Study(title="Dry needling for neck pain", doi="10.1/x", url="https://j.org/a",
                 record_source="feed", abstract="Feed summary")
    save(db, feed)
    pubmed = study("77", doi="10.1/x", abstract=None)
    r = save(db, pubmed)
    assert (r.new, r.updated) == (0, 1)
    row = db["studies"].get(1)
    assert row["pmid"] == "77" and row["record_source"] == "pubmed"
    assert row["title"] == pubmed.title  # PubMed's fields win
    assert row["abstract"] == "Feed summary"  # ... but never blank a field
    assert row["url"] == "https://j.org/a"
    assert db["studies"].count == 1
    fts_ok(db)


def test_a_feed_only_study_is_folded_in_when_pubmed_gives_its_doi(db):
    """The feed entry came first with a DOI and a publisher's wording PubMed's record (no DOI
    yet) does not match; the PubMed revision that adds the DOI makes them one study."""
    from harvest import reading_lists

    save(db, study("111", title="Dry needling for chronic neck pain: a randomised trial"))
    feed = Study(title="Effects of trigger point needling in office workers", doi="10.1000/d",
                 url="https://j.example/d", record_source="feed")
    store.ensure_source(db, "feed:j", kind="feed")
    run = store.start_run(db, "feed:j")
    save(db, feed, run_id=run)
    gone = 2
    with store.write_tx(db):
        db.execute("INSERT INTO tags (study_id, facet, value, origin, rule_id, evidence, negated, created) "
                   "VALUES (?, 'design', 'rct', 'manual', 'manual', 'checked', 0, 'x')", [gone])
    reading_lists.create_list(db, "to read", study_ids=[gone])

    r = save(db, study("111", title="Dry needling for chronic neck pain: a randomised trial",
                       doi="10.1000/d", pmid_version=1, abstract=None))
    assert r.updated == 1
    keep, old = db["studies"].get(1), db["studies"].get(gone)
    assert (keep["doi"], keep["url"], keep["deleted"]) == ("10.1000/d", "https://j.example/d", 0)
    assert (old["deleted"], old["deleted_reason"]) == (1, "merged into study 1")
    assert [s["study_id"] for s in db["sightings"].rows_where("run_id = ?", [run])] == [1]
    assert [t["study_id"] for t in db["tags"].rows_where("origin = 'manual'")] == [1]
    assert [i["study_id"] for i in db["reading_list_items"].rows] == [1]
    assert db.execute("SELECT count(*) FROM studies WHERE doi = '10.1000/d' AND deleted = 0").fetchone()[0] == 1
    fts_ok(db)


def test_two_feeds_describing_one_work_only_fill_each_others_blanks(db):
    a = Study(title="Dry needling for neck pain", doi="10.1000/x1", journal="Acupunct Med",
              record_source="feed")
    b = Study(title="Dry Needling for Neck Pain.", doi="10.1000/x1", journal="Acupuncture in Medicine",
              abstract="From feed B", record_source="feed")
    save(db, a)
    assert save(db, b).updated == 1  # fills the blank abstract
    assert save(db, a).unchanged == 1 and save(db, b).unchanged == 1  # then no churn
    row = db["studies"].get(1)
    assert (row["journal"], row["title"], row["abstract"]) == ("Acupunct Med", a.title, "From feed B")


def test_two_pubmed_records_sharing_a_doi_do_not_merge_into_one_feed_row(db):
    """Publishers reuse DOIs (an erratum and its article): one batch holding both PMIDs."""
    save(db, Study(title="Dry needling for neck pain", doi="10.1/x", record_source="feed"))
    r = save(db, study("111", doi="10.1/x"), study("222", doi="10.1/x", title="Erratum"))
    assert (r.new, r.updated) == (1, 1)
    assert sorted(row["pmid"] for row in db["studies"].rows) == ["111", "222"]
    assert db["studies"].get(1)["pmid"] == "111"  # the first claims the feed row
    fts_ok(db)


def test_a_record_returned_again_unchanged_is_no_longer_missing(db):
    save(db, study("2"))
    with store.write_tx(db):
        store.record_missing(db, ["2"])  # one miss...
    r = save(db, study("2"))  # ...then PubMed returns it, with nothing new
    assert r.unchanged == 1 and db["studies"].get(1)["missing_count"] == 0
    with store.write_tx(db):
        assert store.record_missing(db, ["2"]) == 0  # a later miss is a first miss again
    assert db["studies"].get(1)["deleted"] == 0
    fts_ok(db)


def test_feed_never_overrides_pubmed(db):
    save(db, study("5", doi="10.1/y"))
    feed = Study(title="DRY NEEDLING!", pmid="5", record_source="feed", abstract="new text")
    r = save(db, feed)
    row = db["studies"].get(1)
    assert row["title"] == study().title
    assert row["abstract"] == "new text"  # a blank is filled
    assert r.updated == 1


def test_sightings(db):
    src = store.ensure_source(db, "pubmed:x", kind="pubmed")
    assert src["name"] == "pubmed:x"
    run1 = store.start_run(db, "pubmed:x")
    save(db, study("1"), study("2"), run_id=run1)
    save(db, study("1"), run_id=run1)  # same run: one sighting
    assert db["sightings"].count == 2
    store.finish_run(db, run1, status="ok", found=2)
    src = store.get_source(db, "pubmed:x")
    assert src["last_status"] == "ok" and src["last_success"]
    run2 = store.start_run(db, "pubmed:x")
    store.finish_run(db, run2, status="error", error="boom")
    assert store.get_source(db, "pubmed:x")["consecutive_failures"] == 1


def test_fts_consistent_with_plain_sqlite_writer(tmp_path):
    """A writer that is not sqlite-utils (recursive_triggers off) must not corrupt the index."""
    path = tmp_path / "t.db"
    db = store.open_db(path)
    save(db, study("1"), study("2"))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE studies SET title = 'Prolotherapy trial' WHERE pmid = '1'")
    conn.execute("DELETE FROM studies WHERE pmid = '2'")
    conn.commit()
    fts_ok(db)
    assert search(db, "prolotherapy") == ["1"]


def test_fts_survives_repeated_upserts(db):
    for i in range(5):
        save(db, study("1", title=f"Title revision {i}"), study("2", title=f"Other {i}"))
    fts_ok(db)
    assert search(db, "revision") == ["1"]
    assert search(db, "porter stemming needle") == []
    assert search(db, "needle") == ["1", "2"]  # porter: "needling" matches "needle"


def test_refuses_foreign_database(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    with pytest.raises(store.StoreError, match="not made by doesitwork"):
        store.open_db(path)
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


def test_refuses_non_sqlite_file(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("hello, this is not a database" * 100)
    with pytest.raises(store.StoreError, match="not a usable SQLite database"):
        store.open_db(path)


def test_unwritable_path(tmp_path):
    """A database path below a regular file cannot be created: a clear error, no traceback."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(store.StoreError, match="cannot create the database folder"):
        store.open_db(blocker / "sub" / "t.db")


def test_missing_db_without_create(tmp_path):
    with pytest.raises(store.StoreError, match="no such database"):
        store.open_db(tmp_path / "nope.db", create=False)


def test_an_older_revision_of_a_record_never_rolls_it_back(db):
    """An old export or baseline imported after newer harvests: same PMID and version, an
    earlier DateRevised. It must not put the old title back nor clear the retraction."""
    newer = study(title="Dry needling RCT", date_revised="2026-03-01",
                  publication_types=["Journal Article", "Retracted Publication"],
                  corrections=[Correction("RetractionIn", "999")])
    save(db, newer)
    older = study(title="Dry needling RCT (old title)", date_revised="2019-01-01",
                  publication_types=["Journal Article"], record_source="medline")
    assert save(db, older).unchanged == 1
    row = db["studies"].get(1)
    assert (row["title"], row["retracted"], row["date_revised"]) == ("Dry needling RCT", 1, "2026-03-01")
    # A later revision still replaces it; NLM's undated copy (records gain a DateRevised and
    # never lose it) is an older one; a feed's entry for the PMID still merges (fills blanks).
    assert save(db, study(title="Dry needling RCT, corrected", date_revised="2026-04-01")).updated == 1
    assert save(db, study(title="Undated copy", date_revised=None)).unchanged == 1
    assert save(db, study(title="From a feed", date_revised=None, record_source="feed",
                          pmcid="PMC123")).updated == 1  # fmt: skip
    row = db["studies"].get(1)
    assert (row["title"], row["pmcid"]) == ("Dry needling RCT, corrected", "PMC123")


def test_an_older_copy_does_not_undo_a_deletion(db):
    save(db, study("1", date_revised="2026-03-01"))
    with store.write_tx(db):
        store.mark_deleted(db, ["1"], reason="DeleteCitation")
    assert save(db, study("1", date_revised="2019-01-01")).unchanged == 1
    assert db["studies"].get(1)["deleted"] == 1
    assert save(db, study("1", date_revised="2026-03-01")).updated == 1  # NLM's current record
    assert db["studies"].get(1)["deleted"] == 0

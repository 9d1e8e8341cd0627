"""What tagging reaches: a conclusion negation stays in its clause; deleted studies (tombstones)
are not re-tagged and not shown in the browsing views, but keep their tags for exports; `harvest tag` names studies without a PMID.

Real records only: PubMed records of ../shared/data/pubmed/pubmed21n1298-even.xml.gz (read in
place, skipped when absent) and PMID-less records of ../shared/data/topic/records.jsonl, saved
as the feed-only rows a journal feed makes of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from harvest import schema, store
from harvest.cli import cli
from harvest.demo import record_to_study
from harvest.models import Study
from harvest.store import study_to_row
from harvest.synthesis import load_studies
from harvest.tagging import conclusion, load_ruleset, set_manual, study_summaries, tag_studies

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PUBMED_FILE = SHARED / "pubmed" / "pubmed21n1298-even.xml.gz"
TOPIC_FILE = SHARED / "topic" / "records.jsonl"
REAL = {
    "34091340": "conclusion section: 'N1 not only reduced N losses, but also increased NUE ...'",
    "34023802": "conclusion: '... composting not only increases the uses of digestate, but also enhances ...'",
    "34094044": "conclusion: 'It can not only help children to relieve symptoms ... but also help improve ...'",
    "32862866": "sentence 'While there is no doubt that allo-HSCT benefits patients ...'",
    "34092112": "sentence '... would not be inferior but improved in patients ...'",
    "34029674": "RCT, foot reflexology, 60 patients (publisher record)",
    "33989798": "systematic review and meta-analysis, 1668 participants",
}
# Topic records without a PMID: two with only a DOI (one stored in capitals, as its source
# wrote it), one with only a title.
FEED_DOI = "10.2522/ptj.20130255"
COCHRANE_DOI = "10.1002/14651858.CD004059.pub3"
FEED_TITLE = "Superficial dry needling and active stretching in the treatment of myofascial pain"


@pytest.fixture(scope="module")
def rs():
    return load_ruleset()


@pytest.fixture(scope="module")
def real() -> dict[str, Study]:
    if not PUBMED_FILE.exists():
        pytest.skip(f"shared PubMed file not found at {PUBMED_FILE} (see ../shared/data/README.md)")
    from harvest.pubmed_xml import parse_pubmed_xml

    found = {s.pmid: s for s in parse_pubmed_xml(PUBMED_FILE) if isinstance(s, Study) and s.pmid in REAL}
    assert set(found) == set(REAL)
    return found


def row_of(study: Study) -> dict[str, Any]:
    return {**study_to_row(study), "id": 1}


def sentence_with(study: Study, phrase: str) -> str:
    return next(s for s in re.split(r"(?<=\.)\s+", study.abstract or "") if phrase in s)


# ------------------------------------------------------------------ conclusion negation


@pytest.mark.parametrize("pmid", ["34091340", "34023802", "34094044"])
def test_not_only_is_no_negation(rs, real, pmid):
    value, cue_id, sentence, _where = conclusion(row_of(real[pmid]), rs)
    assert "not only" in sentence.lower()
    assert (value, cue_id) == ("favours_intervention", "conclusion.favours_intervention")


@pytest.mark.parametrize("pmid, phrase", [
    ("32862866", "there is no doubt that"),  # "no doubt" negates nothing
    ("34092112", "would not be inferior but improved"),  # "but" starts the clause of "improved"
])  # fmt: skip
def test_a_negation_does_not_reach_past_its_clause_or_a_pseudo_negation(rs, real, pmid, phrase):
    sentence = sentence_with(real[pmid], phrase)
    row = {"id": 1, "title": real[pmid].title, "abstract": f"CONCLUSIONS: {sentence}"}
    assert conclusion(row, rs)[0] == "favours_intervention"


@pytest.mark.parametrize("sentence", [
    # Hand-made: the corpus has no "not, however," conclusion; a connective set off by commas
    # is an aside inside the clause, so the negation before it still reaches the cue.
    "Dry needling was not, however, more effective than sham needling.",
    "Prolotherapy did not, though, improve pain at 12 weeks.",
    "Dry needling didn't, however, improve pain.",  # a contraction negates too
])  # fmt: skip
def test_a_connective_set_off_by_commas_does_not_end_the_clause(rs, sentence):
    row = {"id": 1, "title": "A randomized trial", "abstract": f"CONCLUSIONS: {sentence}"}
    assert conclusion(row, rs)[0] == "no_difference"


@pytest.mark.parametrize("sentence", [
    # Hand-made, the common comma splice: ", however," between two clauses.
    "Dry needling was not painful, however, it was effective.",
    "Dry needling is not a cure, however, it is effective in reducing pain.",
])  # fmt: skip
def test_a_comma_spliced_however_still_starts_a_clause(rs, sentence):
    row = {"id": 1, "title": "A randomized trial", "abstract": f"CONCLUSIONS: {sentence}"}
    assert conclusion(row, rs)[0] == "favours_intervention"


# --------------------------------------------------------------------- deleted studies


@pytest.fixture
def tombstoned(tmp_path, real):
    """The real RCT and review, tagged, with a manual tag on the RCT; then NLM deletes the RCT."""
    db = store.open_db(tmp_path / "t.db")
    with store.write_tx(db):
        store.save_studies(db, [real["34029674"], real["33989798"]])
    tag_studies(db)
    set_manual(db, "34029674", "conclusion", "favours_control", note="read the full text")
    with store.write_tx(db):
        assert store.mark_deleted(db, ["34029674"], reason="deleted by NLM") == 1
    rct = db.execute("SELECT id FROM studies WHERE pmid = '34029674'").fetchone()[0]
    return db, rct


def tag_rows(db, sid: int) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.execute(
        "SELECT facet, value, origin, rule_id FROM tags WHERE study_id = ? ORDER BY 1, 2, 3", [sid])]  # fmt: skip


def test_retag_leaves_deleted_studies_as_they_were(tombstoned):
    db, rct = tombstoned
    before = tag_rows(db, rct)
    assert ("conclusion", "favours_control", "manual", "manual") in before
    assert ("design", "rct", "rule", "design.text.rct") in before or any(
        r[0] == "design" and r[2] != "manual" for r in before)
    assert tag_studies(db) == 1  # the review only
    assert tag_studies(db, [rct]) == 0
    assert tag_rows(db, rct) == before  # neither dropped nor re-derived
    # The record comes back: it is tagged again and the researcher's tag is in force.
    db.execute("UPDATE studies SET deleted = 0, deleted_reason = NULL WHERE id = ?", [rct])
    tag_studies(db, [rct])
    assert study_summaries(db, [rct])[rct]["conclusion"] == "favours_control"
    assert study_summaries(db, [rct])[rct]["design"] == "rct"


def test_browsing_views_leave_deleted_studies_out_and_exports_keep_their_tags(tombstoned, tmp_path):
    db, rct = tombstoned
    for view in ("study_tags_summary", "studies_tagged"):
        col = "id" if view == "studies_tagged" else "study_id"
        ids = {r[0] for r in db.execute(f"SELECT {col} FROM {view}")}
        assert rct not in ids and len(ids) == 1, view
    assert [s.pmid for s in load_studies(db)] == ["33989798"]  # synthesis
    # What the tombstone is tagged stays readable: export --include-deleted shows it.
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    db.close()
    out = invoke("export", "--db", path, "--format", "jsonl", "--include-deleted", "--design", "rct")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [(r["pmid"], r["deleted"], r["design"], r["conclusion"]) for r in rows] == [
        ("34029674", True, "rct", "favours_control")]  # fmt: skip
    out = invoke("export", "--db", path, "--format", "jsonl", "--design", "rct")
    assert out.exit_code == 0 and out.output == ""


def test_the_migration_updates_a_database_made_before_it(tombstoned):
    db, rct = tombstoned
    path = db.conn.execute("PRAGMA database_list").fetchone()[2]
    # The database as it was before m202: m201's views, m202 not recorded as applied.
    schema.m201_tags_views(db)
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm202_tags_views_live_studies'")
    db.conn.commit()
    assert rct in {r[0] for r in db.execute("SELECT study_id FROM study_tags_summary")}
    db.close()
    db = store.open_db(path)  # applies the pending migration
    assert [r[0] for r in db.execute("SELECT pmid FROM study_tags_summary")] == ["33989798"]
    assert rct in {r[0] for r in db.execute("SELECT study_id FROM study_tags_effective")}


# ------------------------------------------------------------- feed-only studies, CLI


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), env={"NCBI_EMAIL": None})


@pytest.fixture
def feed_db(tmp_path) -> tuple[str, dict[str, int]]:
    """Two PMID-less topic records as a journal feed stores them, and one PubMed record."""
    if not TOPIC_FILE.exists():
        pytest.skip(f"topic records not found at {TOPIC_FILE}")
    records = [json.loads(line) for line in TOPIC_FILE.read_text("utf-8").splitlines() if line.strip()]
    by_doi = next(r for r in records if r.get("doi") == FEED_DOI and not r.get("pmid"))
    by_title = next(r for r in records if r["title"].startswith(FEED_TITLE) and not r.get("pmid"))
    cochrane = next(r for r in records if r.get("doi") == COCHRANE_DOI and not r.get("pmid"))
    with_pmid = next(r for r in records if r.get("pmid"))
    studies = [record_to_study(r) for r in (by_doi, by_title, cochrane, with_pmid)]
    for s in studies[:3]:
        s.record_source = "feed"
    path = tmp_path / "f.db"
    db = store.open_db(path)
    with store.write_tx(db):
        store.save_studies(db, studies)
    tag_studies(db)
    ids = {
        "doi": db.execute("SELECT id FROM studies WHERE doi = ? AND pmid IS NULL", [FEED_DOI]).fetchone()[0],
        "title": db.execute("SELECT id FROM studies WHERE doi IS NULL AND pmid IS NULL").fetchone()[0],
        "cochrane": db.execute("SELECT id FROM studies WHERE doi = ?", [COCHRANE_DOI]).fetchone()[0],
        "pmid": int(with_pmid["pmid"]),
    }
    db.close()
    return str(path), ids


def manual_tags(path: str, sid: int) -> list[tuple[Any, ...]]:
    db = Database(path)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT facet, value, negated, evidence FROM tags WHERE study_id = ? AND origin = 'manual' "
            "ORDER BY facet, value", [sid])]  # fmt: skip
    finally:
        db.close()


def test_tag_sets_unsets_and_explains_a_feed_only_study_by_doi_or_id(feed_db):
    path, ids = feed_db
    # A DOI as a reader copies it (any case, with or without a resolver prefix).
    r = invoke("tag", "--db", path, "--set", "doi:10.2522/PTJ.20130255", "design=rct",
               "--note", "randomised, per the title")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert re.search(r"^design\s+rct\s+\[manual\] randomised, per the title$", r.output, re.M)
    assert manual_tags(path, ids["doi"]) == [("design", "rct", 0, "randomised, per the title")]
    r = invoke("tag", "--db", path, "--unset", "doi:https://doi.org/" + FEED_DOI,
               "condition=plantar_heel_pain")  # fmt: skip
    assert r.exit_code == 0, r.output
    # A DOI stored in capitals is found from the lower-case form a resolver link shows.
    r = invoke("tag", "--db", path, "--set", "doi:" + COCHRANE_DOI.lower(), "design=systematic_review")
    assert r.exit_code == 0, r.output
    assert manual_tags(path, ids["cochrane"]) == [("design", "systematic_review", 0, "set by a researcher")]
    # A title-only row by its id.
    sid = ids["title"]
    r = invoke("tag", "--db", path, "--set", f"id:{sid}", "comparator=exercise_physio")
    assert r.exit_code == 0, r.output
    assert manual_tags(path, sid) == [("comparator", "exercise_physio", 0, "set by a researcher")]
    r = invoke("tag", "--db", path, "--explain", f"id:{sid}")
    assert r.exit_code == 0 and "[manual]" in r.output and "dry_needling" in r.output, r.output
    # The tags survive a re-tag of everything.
    assert invoke("tag", "--db", path).exit_code == 0
    assert manual_tags(path, sid) == [("comparator", "exercise_physio", 0, "set by a researcher")]
    assert ("condition", "plantar_heel_pain", 1, "unset by a researcher") in manual_tags(path, ids["doi"])


def test_a_doi_link_or_bare_doi_names_a_study_and_values_take_any_case(feed_db):
    path, ids = feed_db
    for ref in ("https://doi.org/" + COCHRANE_DOI, COCHRANE_DOI.lower()):  # pasted from a browser
        r = invoke("tag", "--db", path, "--set", ref, "design=RCT")
        assert r.exit_code == 0, (ref, r.output)
        assert manual_tags(path, ids["cochrane"]) == [("design", "rct", 0, "set by a researcher")]


def test_a_bare_number_is_still_a_pmid_and_unknown_references_are_clear(feed_db):
    path, ids = feed_db
    r = invoke("tag", "--db", path, "--explain", str(ids["pmid"]))
    assert r.exit_code == 0 and r.output.startswith("intervention"), r.output
    # A bare number is never read as a row id, even when such a row exists.
    r = invoke("tag", "--db", path, "--explain", str(ids["title"]))
    assert r.exit_code == 1 and f"unknown PMID {ids['title']}" in r.output
    for ref, message in (
        ("doi:10.9999/nothing.here", "unknown DOI 10.9999/nothing.here"),
        ("doi:not-a-doi", "not a DOI"),
        ("id:99999", "unknown study id:99999"),
        ("id:²", "unknown study id:²"),  # str.isdigit() is true for "²": no int() traceback
        ("pmid:١", "not a study reference"),
        ("dry-needling", "not a study reference"),
    ):
        r = invoke("tag", "--db", path, "--set", ref, "design=rct")
        assert r.exit_code == 1 and message in r.output, (ref, r.output)
    assert "doi:10.xxxx/" in invoke("tag", "--help").output


def test_a_manual_tag_under_a_renamed_value_follows_the_rename(tmp_path):
    from harvest import store

    path = tmp_path / "old.db"
    db = store.open_db(path)
    with store.write_tx(db):
        db["studies"].insert({"title": "Dry needling for musculoskeletal pain", "deleted": 0,
                              "first_seen": "2026-01-01T00:00:00Z", "last_updated": "2026-01-01T00:00:00Z"})
        db["tags"].insert({"study_id": 1, "facet": "condition", "value": "chronic_musculoskeletal_pain",
                           "origin": "manual", "created": "2026-01-01T00:00:00Z"})  # fmt: skip
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm203_tags_musculoskeletal_pain'")
    db.conn.close()
    db = store.open_db(path)  # the upgrade
    assert [(r["value"], r["origin"]) for r in db.query("SELECT value, origin FROM tags")] == [
        ("musculoskeletal_pain", "manual")]
    db.conn.close()
    r = invoke("tag", "--db", str(path), "--unset", "id:1", "condition=musculoskeletal_pain")
    assert r.exit_code == 0, r.output

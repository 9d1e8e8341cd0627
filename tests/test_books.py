"""NCBI Bookshelf records (StatPearls, GeneReviews chapters; whole books and reports): parsed
as chapters and books with their publisher, stored (migration m007), and exported as
chapters and books in every format, not as journal articles.

tests/fixtures/book_article.xml is hand-made in the shape of an efetch reply (the shared real
corpus holds no PubmedBookArticle): 90000002 is a chapter (ContributionDate 2004-03-19 in a
book started in 1993), 90000004 a whole report with a publisher but no place.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from datafiles import FIXTURES, data_file
from workbench_fixture import import_files, make_older_db, records_by_pmid

from harvest import export, ingest, store
from harvest.medline import parse_medline
from harvest.models import Study
from harvest.pubmed_xml import parse_pubmed_xml

BOOKS = FIXTURES / "book_article.xml"
MEDLINE_FIXTURE = FIXTURES / "medline_synthetic.nbib"  # two journal articles
CHAPTER, REPORT = "90000002", "90000004"
BOOK_COLUMNS = ("work_type", "publisher", "publisher_place")


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book fixture and, beside it, the MEDLINE fixture's two journal articles."""
    return import_files(tmp_path_factory.mktemp("books") / "evidence.db", [BOOKS, MEDLINE_FIXTURE])


@pytest.fixture
def records(db_path: Path) -> dict[str, dict[str, Any]]:
    return records_by_pmid(db_path)


# --- parsing and storing -------------------------------------------------------------------


def test_import_stores_chapter_and_book_with_publisher_and_the_chapters_own_date(db_path):
    db = store.open_db(db_path)
    rows = {r["pmid"]: r for r in db.query("SELECT * FROM studies")}
    chapter, report = rows[CHAPTER], rows[REPORT]
    assert (chapter["work_type"], chapter["publisher"], chapter["publisher_place"]) == (
        "chapter", "University of Somewhere", "Somewhere (XX)")  # fmt: skip
    assert chapter["journal"] == "SynthReviews®"  # the book it is in
    # PubMed cites a chapter by its ContributionDate; the book's PubDate (1993) is the book's
    assert (chapter["pub_date"], chapter["year"]) == ("2004-03-19", 2004)
    assert (report["work_type"], report["publisher"], report["publisher_place"]) == (
        "book", "Synthetic Agency for Health Technology", None)  # fmt: skip
    assert (report["journal"], report["pub_date"]) == (None, "2018-09-14")
    for pmid in ("90000006", "90000014"):  # journal articles: none of it
        assert [rows[pmid][c] for c in BOOK_COLUMNS] == [None, None, None]


def test_a_chapter_without_contribution_date_falls_back_to_the_books_date():
    text = BOOKS.read_bytes()
    start, end = text.index(b"<ContributionDate>"), text.index(b"</ContributionDate>")
    chapter = next(parse_pubmed_xml(text[:start] + text[end + len(b"</ContributionDate>"):]))
    assert (chapter.work_type, chapter.pub_date, chapter.year) == ("chapter", "1993", 1993)


# A MEDLINE ("PubMed format") export of the same two records, hand-made in the shape of
# PubMed's exports of Bookshelf records (PMIDs 20301770, 21249755): TI the chapter, BTI the
# book, PB/PL its publisher, DP the book's date, CTDT the chapter's, DRDT its revision.
MEDLINE_BOOKS = """\
PMID- 90000002
STAT- Publisher
DRDT- 20251002
CTDT- 20040319
PB  - University of Somewhere
DP  - 1993
TI  - Myofascial Pain Syndrome Overview
BTI - SynthReviews(R)
AB  - CLINICAL CHARACTERISTICS: Trigger points are tender nodules.
FED - Editor, Edith P
ED  - Editor EP
FAU - Writer, Wanda
AU  - Writer W
CN  - Synthetic Pain Consortium
LA  - eng
PT  - Review
PT  - Book Chapter
PL  - Somewhere (XX)
OT  - trigger point
EDAT- 2010/03/20 06:00
CRDT- 2010/03/20 06:00
AID - NBK900002 [bookaccession]

PMID- 90000004
STAT- Publisher
PB  - Synthetic Agency for Health Technology
DP  - 2018 Sep 14
BTI - Prolotherapy for Chronic Low Back Pain: A Review of Clinical Effectiveness
AB  - A rapid review of prolotherapy.
FAU - Reviewer, Rae
AU  - Reviewer R
LA  - eng
PT  - Review
PT  - Book
EDAT- 2018/09/14 06:00
AID - 10.5555/synth-report-4 [doi]
AID - NBK900004 [bookaccession]
"""


def test_medline_book_records_map_as_the_xml_does():
    chapter, report = parse_medline(io.StringIO(MEDLINE_BOOKS))
    xml_chapter, xml_report = parse_pubmed_xml(BOOKS)
    for got, want in ((chapter, xml_chapter), (report, xml_report)):
        assert (got.title, got.work_type, got.publisher, got.publisher_place, got.pub_date, got.year) == (
            want.title, want.work_type, want.publisher, want.publisher_place, want.pub_date, want.year)  # fmt: skip
    assert chapter.journal == "SynthReviews(R)"  # BTI, as PubMed writes it in this format
    assert chapter.date_revised == xml_chapter.date_revised == "2025-10-02"
    assert report.journal is None and report.doi == "10.5555/synth-report-4"


def test_a_journal_records_pl_is_its_country_not_a_publisher_place():
    (study,) = parse_medline(data_file("medline", "pubmed_result1.txt"))  # real: "PL  - England"
    assert (study.work_type, study.publisher, study.publisher_place) == (None, None, None)
    assert study.journal  # still its journal


# --- exports ---------------------------------------------------------------------------------


def test_ris_chap_and_book_with_rispy(records):
    import rispy

    entries = {e["accession_number"]: e for e in rispy.loads(export.to_ris(records.values()))}
    chapter, report = entries[f"PMID:{CHAPTER}"], entries[f"PMID:{REPORT}"]
    assert chapter["type_of_reference"] == "CHAP"
    assert chapter["title"] == "Myofascial Pain Syndrome Overview"
    assert chapter["secondary_title"] == "SynthReviews®"  # T2: the book (Zotero's bookTitle)
    assert (chapter["publisher"], chapter["place_published"]) == ("University of Somewhere", "Somewhere (XX)")
    assert (chapter["year"], chapter["date"]) == ("2004", "2004/03/19")
    assert report["type_of_reference"] == "BOOK"
    assert report["publisher"] == "Synthetic Agency for Health Technology"
    assert "secondary_title" not in report and "place_published" not in report
    article = entries["PMID:90000006"]
    assert article["type_of_reference"] == "JOUR"
    assert "publisher" not in article and "place_published" not in article


def test_bibtex_incollection_and_book_with_bibtexparser(records):
    import bibtexparser

    library = bibtexparser.parse_string(export.to_bibtex(records.values()))
    assert not library.failed_blocks
    entries = {e.key: e for e in library.entries}
    chapter, report = entries[f"pmid{CHAPTER}"], entries[f"pmid{REPORT}"]
    assert chapter.entry_type == "incollection"
    assert chapter["booktitle"] == "SynthReviews®"
    assert (chapter["publisher"], chapter["address"], chapter["year"]) == (
        "University of Somewhere", "Somewhere (XX)", "2004")  # fmt: skip
    assert "journal" not in chapter.fields_dict
    assert report.entry_type == "book"
    assert report["publisher"] == "Synthetic Agency for Health Technology"
    assert "journal" not in report.fields_dict and "address" not in report.fields_dict
    article = entries["pmid90000006"]
    assert article.entry_type == "article" and article["journal"] == records["90000006"]["journal"]
    assert not {"booktitle", "publisher", "address"} & set(article.fields_dict)


def test_csljson_chapter_and_book_validate_against_the_schema(records):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((FIXTURES / "csl-data.json").read_text("utf-8"))
    items = json.loads(export.to_csljson(records.values()))
    jsonschema.validate(items, schema)
    by_id = {item["id"]: item for item in items}
    chapter, report = by_id[f"pmid{CHAPTER}"], by_id[f"pmid{REPORT}"]
    assert chapter["type"] == "chapter"
    assert chapter["container-title"] == "SynthReviews®"
    assert (chapter["publisher"], chapter["publisher-place"]) == ("University of Somewhere", "Somewhere (XX)")
    assert chapter["issued"] == {"date-parts": [[2004, 3, 19]]}
    assert report["type"] == "book"
    assert report["publisher"] == "Synthetic Agency for Health Technology"
    assert "container-title" not in report and "publisher-place" not in report
    article = by_id["pmid90000006"]
    assert article["type"] == "article-journal" and "publisher" not in article


def test_csv_and_jsonl_carry_the_new_columns(records, db_path):
    rows = {r["pmid"]: r for r in csv.DictReader(io.StringIO(export.to_csv(records.values())))}
    assert [rows[CHAPTER][c] for c in BOOK_COLUMNS] == ["chapter", "University of Somewhere", "Somewhere (XX)"]
    assert [rows[REPORT][c] for c in BOOK_COLUMNS] == ["book", "Synthetic Agency for Health Technology", ""]
    assert [rows["90000006"][c] for c in BOOK_COLUMNS] == ["", "", ""]
    assert rows[CHAPTER]["year"] == "2004"
    db = store.open_db(db_path)
    lines = [json.loads(line) for line in export.to_jsonl(export.iter_studies(db))]
    by_pmid = {s["pmid"]: s for s in lines}
    assert [by_pmid[CHAPTER][c] for c in BOOK_COLUMNS] == ["chapter", "University of Somewhere", "Somewhere (XX)"]
    assert by_pmid["90000006"]["work_type"] is None


def test_vancouver_markdown_and_html_cite_a_chapter_in_its_book(records):
    chapter, report = records[CHAPTER], records[REPORT]
    cited, whole = export.bibliography([chapter, report])  # Vancouver, NLM's Citing Medicine
    assert cited.startswith("1.Writer W, Synthetic Pain Consortium. Myofascial Pain Syndrome Overview. "
                            "In: SynthReviews® [Internet]. Somewhere (XX): University of Somewhere; "
                            "2004 Mar 19.")  # fmt: skip
    assert "Effectiveness [Internet]. Synthetic Agency for Health Technology; 2018 Sep 14." in whole
    md = export.to_markdown([chapter, report])
    assert "In: SynthReviews® \\[Internet\\]. Somewhere (XX): University of Somewhere; 2004 Mar 19." in md
    html = export.to_html([chapter])
    assert "In: SynthReviews® [Internet]. Somewhere (XX): University of Somewhere; 2004 Mar 19." in html
    (apa,) = export.bibliography([chapter], style="apa")
    assert apa.startswith("Writer, W., & Synthetic Pain Consortium. (2004). Myofascial Pain Syndrome Overview. "
                          "In SynthReviews®. University of Somewhere.")  # fmt: skip


# --- upgrading a database made before m007 ----------------------------------------------------

_BEFORE_M007_ALWAYS = tuple(k for k in store._MERGE_FIELDS if k not in BOOK_COLUMNS + (
    "volume", "issue", "pages", "journal_abbrev"))  # fmt: skip
_BEFORE_M007_GROUPS = (("volume", "issue", "pages"), ("journal_abbrev",))


def _pre_m007_hash(row: dict[str, Any]) -> str:
    """store._hash as the version before m007 computed it."""
    values = [row.get(k) for k in _BEFORE_M007_ALWAYS]
    for group in _BEFORE_M007_GROUPS:
        if any(row.get(k) is not None for k in group):
            values += [row.get(k) for k in group]
    return hashlib.sha1(repr(tuple(values)).encode()).hexdigest()


def _make_pre_m007_db(path: Path) -> None:
    """A database as the version before m007 left it: no work_type/publisher columns, the book
    fixture stored as that version parsed it (the chapter as an article of 1993) and the two
    MEDLINE journal articles, all with the hashes that version computed."""
    studies = [*parse_pubmed_xml(BOOKS), *parse_medline(MEDLINE_FIXTURE)]
    for study in studies:
        if study.work_type == "chapter":
            study.pub_date, study.year = "1993", 1993  # that version dated it by the book
    make_older_db(path, migrations=["m007_studies_work_type_publisher"], columns=BOOK_COLUMNS,
                  studies=studies, hash_row=_pre_m007_hash)  # fmt: skip


def test_migration_adds_the_columns_and_a_reimport_updates_only_the_book_records_once(tmp_path):
    path = tmp_path / "old.db"
    _make_pre_m007_db(path)
    db = store.open_db(path)
    assert set(BOOK_COLUMNS) <= set(db["studies"].columns_dict)
    assert "m007_studies_work_type_publisher" in {m.name for m in store.schema.migrations.applied(db)}
    assert db["studies"].count == 4
    # ADD COLUMN, not transform(): the FTS triggers are still there and the index agrees
    triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"studies_ai", "studies_ad", "studies_au"} <= triggers
    db.execute("INSERT INTO studies_fts(studies_fts, rank) VALUES('integrity-check', 1)")

    # a journal article hashes as it did before m007, so an upgrade alone changes nothing
    located = store.study_to_row(Study(title="T", pmid="1", volume="3", journal_abbrev="J"))
    assert store._hash(located) == _pre_m007_hash(located)
    journals = ingest.import_file(db, MEDLINE_FIXTURE, force=True)
    assert (journals.counts.updated, journals.counts.unchanged) == (0, 2), journals  # hash as before
    books = ingest.import_file(db, BOOKS, force=True)
    assert (books.counts.new, books.counts.updated, books.counts.unchanged) == (0, 2, 0), books
    row = db["studies"].get(db.execute("SELECT id FROM studies WHERE pmid = ?", [CHAPTER]).fetchone()[0])
    assert (row["work_type"], row["publisher"], row["pub_date"], row["first_seen"]) == (
        "chapter", "University of Somewhere", "2004-03-19", "2026-01-01T00:00:00Z")  # fmt: skip
    again = ingest.import_file(db, BOOKS, force=True)
    assert (again.counts.updated, again.counts.unchanged) == (0, 2), again

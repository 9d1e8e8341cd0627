"""Volume, issue and pages: parsed from every source, stored, migrated, exported.

Real records (the PubMed update file, efetch replies, MEDLINE exports) are read in place from
../shared/data; the MEDLINE and feed fixtures are the hand-made ones in tests/fixtures.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from datafiles import FIXTURES, data_file
from fake_feeds import fixture
from workbench_fixture import import_files, make_older_db, records_by_pmid

from harvest import export, ingest, store
from harvest.cli import cli
from harvest.feed_parse import parse_feed
from harvest.medline import parse_medline
from harvest.models import Study
from harvest.pubmed_xml import parse_pubmed_xml

MEDLINE_FIXTURE = FIXTURES / "medline_synthetic.nbib"


def where(study: Study) -> tuple[str | None, str | None, str | None]:
    return study.volume, study.issue, study.pages


# --- parsing ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def update_file_by_pmid() -> dict[str, Study]:
    wanted = {"16384580", "25609688", "29744390", "29775638", "34002764", "33689800", "31647768"}
    path = data_file("pubmed", "pubmed21n1298-even.xml.gz")
    return {r.pmid: r for r in parse_pubmed_xml(path) if isinstance(r, Study) and r.pmid in wanted}


@pytest.mark.parametrize(
    ("pmid", "expected"),
    [
        ("16384580", ("356", "3", "625-37")),  # J Mol Biol: MedlinePgn abbreviates the last page
        ("25609688", ("8", "2", "e002851")),  # an electronic article number
        ("29744390", ("3", None, "10")),  # Wellcome Open Res: no issue
        ("29775638", (None, None, None)),  # a Publisher record ahead of print: no volume yet
        ("34002764", ("41", "Suppl 1", "S61-S68")),  # a supplement
        ("33689800", ("98", None, "53-62.e3")),
        ("31647768", ("125", "10", "e71-e72")),
    ],
)
def test_update_file_volume_issue_pages(update_file_by_pmid, pmid, expected):
    assert where(update_file_by_pmid[pmid]) == expected


def test_efetch_replies_volume_issue_pages():
    got = {}
    for name in ("pubmed1.xml", "pubmed2.xml", "pubmed4.xml", "pubmed6.xml", "pubmed7.xml"):
        got.update({s.pmid: where(s) for s in parse_pubmed_xml(data_file("eutils", "biopython", name))})
    assert got == {
        "12091962": ("17", "1", "113-25"),  # MedlinePgn wins over StartPage 113 / EndPage 125
        "9997": ("446", "1", "179-91"),
        "11748933": ("42", "4", "244-55"),
        "11700088": ("153", "1", "117-23"),
        "27797938": ("66", "6", "1116-1122"),
        "30108519": ("9", None, "1034"),
        "29963580": ("5", "2", "026002"),
    }


def test_start_and_end_page_without_medline_pgn():
    # pubmed1.xml's first record (real) with its MedlinePgn taken out: the DTD makes it optional
    # beside StartPage/EndPage, and no recorded reply lacks it.
    text = data_file("eutils", "biopython", "pubmed1.xml").read_bytes()
    assert text.count(b"<MedlinePgn>113-25</MedlinePgn>") == 1
    first = next(parse_pubmed_xml(text.replace(b"<MedlinePgn>113-25</MedlinePgn>", b"")))
    assert where(first) == ("17", "1", "113-125")
    single = text.replace(b"<EndPage>125</EndPage><MedlinePgn>113-25</MedlinePgn>", b"")
    assert where(next(parse_pubmed_xml(single))) == ("17", "1", "113")


def test_medline_vi_ip_pg():
    with_location, without = parse_medline(MEDLINE_FIXTURE)
    assert where(with_location) == ("12", "3", "101-110")
    assert where(without) == (None, None, None)
    found = {}
    for name in ("pubmed_result1.txt", "pubmed_result2.txt", "pubmed_result3.txt"):
        found.update({s.pmid: where(s) for s in parse_medline(data_file("medline", name))})
    assert found == {
        "12230038": ("3", "3", "296-302"),
        "16403221": ("7", None, "10"),
        "16377612": ("22", "5", "616-7"),
        "14871861": ("20", "9", "1453-4"),
        "14630660": ("19", "17", "2308-10"),
        "23039619": ("39", "10", "5795-813"),
    }


def test_feed_prism_volume_number_pages():
    feed = parse_feed(fixture("aim_rss10_prism.xml"), {"content-type": "application/xml"})
    edwards, itoh, *_ = feed.entries
    assert where(edwards.study) == ("21", "3", "80")  # prism:volume, prism:number, prism:startingPage
    assert where(itoh.study) == (None, None, None)


def test_feed_prism_ending_page_and_page_range():
    # Hand-made: a PRISM 2.0 RSS 2.0 table of contents as Atypon-hosted journals write one.
    body = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel>
<title>J</title><link>https://example.org/</link><description>toc</description>
<item><title>One</title><link>https://example.org/1</link><prism:volume>54</prism:volume>
<prism:number>2</prism:number><prism:startingPage>61</prism:startingPage>
<prism:endingPage>70</prism:endingPage></item>
<item><title>Two</title><link>https://example.org/2</link><prism:pageRange>e1-e9</prism:pageRange></item>
</channel></rss>"""
    one, two = parse_feed(body, {"content-type": "application/rss+xml"}).entries
    assert where(one.study) == ("54", "2", "61-70")
    assert where(two.study) == (None, None, "e1-e9")


# --- the store ----------------------------------------------------------------------------

# The merge fields a content hash covered before volume, issue and pages existed: the hashes
# stored in every existing database were made from these.
_OLD_HASHED = (
    "pmid", "pmid_version", "doi", "pmcid", "title", "abstract", "journal", "pub_date",
    "year", "authors", "languages", "publication_types", "mesh", "mesh_text", "keywords",
    "keywords_text", "medline_status", "date_revised", "corrections", "url", "retracted",
)  # fmt: skip


def _old_hash(row: dict[str, Any]) -> str:
    return hashlib.sha1(repr(tuple([row.get(k) for k in _OLD_HASHED])).encode()).hexdigest()


def _make_pre_upgrade_db(path: Path) -> None:
    """A database as the version before m004 left it: no volume/issue/pages (nor the later
    journal_abbrev) columns, the MEDLINE fixture's two records stored with the hashes that
    version computed."""
    studies = list(parse_medline(MEDLINE_FIXTURE))
    for study in studies:
        study.journal_abbrev = None  # as that version parsed it
    make_older_db(path, migrations=["m004_studies_volume_issue_pages", "m005_studies_journal_abbrev"],
                  columns=("volume", "issue", "pages", "journal_abbrev"), studies=studies,
                  hash_row=_old_hash)  # fmt: skip


def test_an_existing_database_gains_the_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    _make_pre_upgrade_db(path)
    db = store.open_db(path)
    assert {"volume", "issue", "pages", "journal_abbrev"} <= set(db["studies"].columns_dict)
    applied = {m.name for m in store.schema.migrations.applied(db)}
    assert {"m004_studies_volume_issue_pages", "m005_studies_journal_abbrev"} <= applied
    assert db["studies"].count == 2
    assert [r["volume"] for r in db.query("SELECT volume FROM studies")] == [None, None]
    # ADD COLUMN, not transform(): the FTS triggers are still there and the index agrees
    triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"studies_ai", "studies_ad", "studies_au"} <= triggers
    db.execute("INSERT INTO studies_fts(studies_fts, rank) VALUES('integrity-check', 1)")


def test_reimport_after_upgrade_fills_the_new_fields_once_and_leaves_other_rows_unchanged(tmp_path):
    path = tmp_path / "old.db"
    _make_pre_upgrade_db(path)
    db = store.open_db(path)
    first = ingest.import_file(db, MEDLINE_FIXTURE)
    # 90000006 gains VI/IP/PG and its TA abbreviation; 90000014 gains its TA abbreviation only:
    # both are real changes, each stored once.
    assert (first.counts.new, first.counts.updated, first.counts.unchanged) == (0, 2, 0), first
    rows = {r["pmid"]: r for r in db.query("SELECT * FROM studies")}
    assert (rows["90000006"]["volume"], rows["90000006"]["issue"], rows["90000006"]["pages"]) == ("12", "3", "101-110")
    assert (rows["90000006"]["journal_abbrev"], rows["90000014"]["journal_abbrev"]) == ("Synth Pain J",) * 2
    again = ingest.import_file(db, MEDLINE_FIXTURE, force=True)
    assert (again.counts.updated, again.counts.unchanged) == (0, 2), again


def test_a_record_without_the_later_fields_keeps_the_hash_it_always_had():
    # Each schema change's fields enter the hash only when set: a row stored before m004
    # (no location) or before m005 (no abbreviation) is not "updated" by an upgrade alone.
    bare = store.study_to_row(Study(title="T", pmid="1"))
    assert store._hash(bare) == _old_hash(bare)
    located = store.study_to_row(Study(title="T", pmid="1", volume="3", pages="1-9"))
    before_m005 = _OLD_HASHED + ("volume", "issue", "pages")
    assert store._hash(located) == hashlib.sha1(repr(tuple(located.get(k) for k in before_m005)).encode()).hexdigest()


# --- exports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MEDLINE fixture (90000006 with VI/IP/PG, 90000014 without) and efetch pubmed1.xml
    (real: 12091962 and 9997, whose MedlinePgn abbreviates the last page)."""
    files = [MEDLINE_FIXTURE, data_file("eutils", "biopython", "pubmed1.xml")]
    return import_files(tmp_path_factory.mktemp("loc") / "evidence.db", files)


@pytest.fixture
def records(db_path: Path) -> dict[str, dict[str, Any]]:
    return records_by_pmid(db_path)


def _ris_record(text: str, pmid: str) -> list[str]:
    (block,) = [b for b in text.split("ER  - ") if f"AN  - PMID:{pmid}\n" in b]
    return block.strip().splitlines()


def test_ris_vl_is_sp_ep(records):
    import rispy

    text = export.to_ris([records["9997"], records["90000006"], records["90000014"]])
    lines = _ris_record(text, "9997")
    assert {"VL  - 446", "IS  - 1", "SP  - 179", "EP  - 191"} <= set(lines)  # MedlinePgn 179-91
    assert {"VL  - 12", "IS  - 3", "SP  - 101", "EP  - 110"} <= set(_ris_record(text, "90000006"))
    assert not [x for x in _ris_record(text, "90000014") if x[:2] in ("VL", "IS", "SP", "EP")]
    parsed = rispy.loads(text)
    assert (parsed[0]["volume"], parsed[0]["number"], parsed[0]["start_page"], parsed[0]["end_page"]) == (
        "446", "1", "179", "191")


def test_ris_pages_that_are_not_one_range_stay_whole():
    rec = {"id": 1, "title": "T", "tags": {}, "volume": "98", "pages": "53-62.e3"}
    lines = export.to_ris([rec]).splitlines()
    assert "SP  - 53-62.e3" in lines and not [x for x in lines if x.startswith(("EP", "IS"))]
    rec = {"id": 1, "title": "T", "tags": {}, "volume": "8", "issue": "2", "pages": "e002851"}
    lines = export.to_ris([rec]).splitlines()
    assert "SP  - e002851" in lines and not [x for x in lines if x.startswith("EP")]


def test_bibtex_volume_number_pages(records):
    import bibtexparser

    text = export.to_bibtex([records["9997"], records["90000014"]])
    library = bibtexparser.parse_string(text)
    with_loc, without = library.entries
    assert (with_loc["volume"], with_loc["number"], with_loc["pages"]) == ("446", "1", "179--191")
    assert "\tvolume = {446},\n\tnumber = {1},\n\tpages = {179--191}," in text
    assert not {"volume", "number", "pages"} & set(without.fields_dict)


def test_csljson_volume_issue_page(records):
    jsonschema = pytest.importorskip("jsonschema")
    items = json.loads(export.to_csljson([records["9997"], records["90000006"], records["90000014"]]))
    jsonschema.validate(items, json.loads((FIXTURES / "csl-data.json").read_text("utf-8")))
    first, second, third = items
    assert (first["volume"], first["issue"], first["page"]) == ("446", "1", "179-191")
    assert (second["volume"], second["issue"], second["page"]) == ("12", "3", "101-110")
    assert not {"volume", "issue", "page"} & set(third)


def test_journal_title_and_abbreviation_go_where_reference_managers_look(records):
    import rispy

    entry = rispy.loads(export.to_ris([records["9997"]]))[0]
    # Zotero: T2 is the publication title, JO the journal abbreviation
    assert (entry["secondary_title"], entry["journal_name"]) == ("Biochimica et biophysica acta", "Biochim Biophys Acta")
    item = export.to_csl_items([records["9997"]])[0]
    assert (item["container-title"], item["container-title-short"]) == ("Biochimica et biophysica acta", "Biochim Biophys Acta")
    assert "shortjournal = {Biochim Biophys Acta}" in export.to_bibtex([records["9997"]])


def test_csv_volume_issue_pages_columns(records):
    rows = list(csv.DictReader(io.StringIO(export.to_csv([records["9997"], records["90000014"]]))))
    assert list(rows[0])[5:10] == ["journal", "journal_abbrev", "volume", "issue", "pages"]
    assert (rows[0]["journal"], rows[0]["journal_abbrev"]) == ("Biochimica et biophysica acta", "Biochim Biophys Acta")
    assert (rows[0]["volume"], rows[0]["issue"], rows[0]["pages"]) == ("446", "1", "179-91")
    assert (rows[1]["volume"], rows[1]["issue"], rows[1]["pages"]) == ("", "", "")


def test_vancouver_markdown_journal_year_volume_issue_pages(records):
    md = export.to_markdown([records["9997"], records["90000006"], records["90000014"], records["12091962"]])
    refs = [line for line in md.splitlines() if re.match(r"\d+\. ", line)]
    assert refs[0] == (
        "1. Strekas TC. Magnetic studies of Chromatium flavocytochrome C552. A mechanism for "
        "heme-flavin interaction. Biochim Biophys Acta \\[Internet\\]. 1976 Sep 28;446(1):179-91. "
        "Available from: https://pubmed.ncbi.nlm.nih.gov/9997/"
    )
    # Vancouver writes NLM's title abbreviation (MedlineTA, MEDLINE's TA)
    assert "Synth Pain J \\[Internet\\]. 2020 Mar 15;12(3):101-110. Available from: " in refs[1]
    # no volume, issue or pages: the date ends the source part, without an empty ";"
    assert "Synth Pain J \\[Internet\\]. 1998 Dec. Available from: " in refs[2]
    assert "Soc Justice \\[Internet\\]. 1990;17(1):113-25. Available" in refs[3]
    assert not [r for r in refs if ";." in r or re.search(r"\d{4}[A-Z]", r)]


def test_vancouver_html_has_the_same_source_part(records):
    html = export.to_html([records["9997"]])
    assert "Biochim Biophys Acta [Internet]. 1976 Sep 28;446(1):179-91. Available" in html


def _rec(**kw: Any) -> dict[str, Any]:
    return {"id": 1, "title": "A trial.", "authors": ["Smith J"], "journal": "J Pain", "tags": {}, **kw}


@pytest.mark.parametrize(
    ("fields", "source"),
    [
        ({"pub_date": "2018-09-14", "year": 2018, "volume": "19", "issue": "9", "pages": "1006-14"},
         "J Pain. 2018 Sep 14;19(9):1006-14."),
        ({"pub_date": "2018-09", "year": 2018, "volume": "19", "pages": "e0123"},
         "J Pain. 2018 Sep;19:e0123."),
        ({"pub_date": "2018", "year": 2018, "issue": "Suppl 1", "pages": "S1-S9"},
         "J Pain. 2018;(Suppl 1):S1-S9."),
        ({"pub_date": "2018-01-05", "year": 2018, "pages": "10"}, "J Pain. 2018 Jan 5:10."),
        ({"pub_date": "2024", "year": 2024}, "J Pain. 2024."),
        ({"pub_date": "2018-05", "year": 2018, "volume": "19"}, "J Pain. 2018 May;19."),
    ],
)  # fmt: skip
def test_vancouver_source_part_in_nlm_form(fields, source):
    (ref,) = export.bibliography([_rec(**fields)])
    assert ref == f"1.Smith J. A trial. {source} "


def test_apa_gets_volume_issue_and_full_pages():
    (ref,) = export.bibliography([_rec(pub_date="2018-09-14", year=2018, volume="19", issue="9",
                                       pages="1006-14")], style="apa")  # fmt: skip
    assert ref == "Smith, J. (2018). A trial. J Pain, 19(9), 1006–1014."


@pytest.mark.parametrize(
    ("pages", "first", "last"),
    [
        ("101-10", "101", "110"),
        ("625-37", "625", "637"),
        ("1453-4", "1453", "1454"),
        ("99-101", "99", "101"),
        ("S61-8", "S61", "S68"),
        ("S61-S68", "S61", "S68"),
        ("e71-e72", "e71", "e72"),
        ("e002851", "e002851", None),
        ("53-62.e3", "53-62.e3", None),
        ("1-10; discussion 11-2", "1-10; discussion 11-2", None),
        ("XII-XV", "XII-XV", None),
        ("110-9", "110", "119"),
        ("", None, None),
        (None, None, None),
        ("1" * 5000 + "-2", "1" * 5000 + "-2", None),  # not a page range: kept whole, no error
    ],
)
def test_page_range(pages, first, last):
    assert export.page_range(pages) == (first, last)


def test_jsonl_export_carries_volume_issue_pages(db_path):
    r = CliRunner().invoke(cli, ["export", "--db", str(db_path), "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    got = {d["pmid"]: (d["volume"], d["issue"], d["pages"]) for d in map(json.loads, r.output.splitlines())}
    assert got == {
        "90000006": ("12", "3", "101-110"),
        "90000014": (None, None, None),
        "12091962": ("17", "1", "113-25"),
        "9997": ("446", "1", "179-91"),
    }


def test_datasette_renderers_carry_them(db_path):
    pytest.importorskip("datasette")
    from datasette.app import Datasette

    from harvest import serve

    ds = Datasette([str(db_path)], metadata=serve.build_metadata(serve.DEFAULT_METADATA, "evidence"),
                   plugins_dir=str(serve.DEFAULT_PLUGINS_DIR))  # fmt: skip
    ris = asyncio.run(ds.client.get("/evidence/studies.ris?pmid=9997")).text
    assert {"VL  - 446", "IS  - 1", "SP  - 179", "EP  - 191"} <= set(ris.splitlines())
    bib = asyncio.run(ds.client.get("/evidence/studies_tagged.bib?pmid=9997")).text
    assert "pages = {179--191}" in bib

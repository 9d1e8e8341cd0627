"""Exports round-trip through the libraries reference managers use; reading lists; the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from datetime import UTC
from typing import Any

import pytest
from click.testing import CliRunner
from datafiles import FIXTURES
from workbench_fixture import AWKWARD, LIST_NAME, LIST_NOTE, LIST_PMIDS, build_fixture_db

from harvest import export, reading_lists
from harvest.store import open_db, write_tx


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_db(tmp_path_factory.mktemp("wbx") / "evidence.db")


@pytest.fixture
def db(db_path: Path) -> Any:
    d = open_db(db_path)
    yield d
    d.conn.close()


@pytest.fixture
def records(db: Any) -> list[dict[str, Any]]:
    return export.export_records(db)


def _by_pmid(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["pmid"]: r for r in records if r["pmid"]}


def test_fixture_holds_the_awkward_titles(records: list[dict[str, Any]]) -> None:
    titles = {r["pmid"]: r["title"] for r in records}
    assert "0.02%" in titles["33737034"] and "Heme & RAGE" in titles["33565264"]
    assert "{Mo6I8}" in titles["34095938"] and "T2∗" in titles["33821504"]
    assert set(AWKWARD) <= set(titles)


def _pubmed_form(name: str) -> str:
    """"Fu, Y." or "Smith, S. R." back to PubMed's "Fu Y", "Smith SR"; other names as they are."""
    family, sep, given = name.rpartition(", ")
    if sep and re.fullmatch(r"(?:\w\. ?)+", given):
        return f"{family} {given.replace('.', '').replace(' ', '')}"
    return name


def test_ris_round_trip_with_rispy(records: list[dict[str, Any]]) -> None:
    import rispy

    text = export.to_ris(records)
    assert text.startswith("TY  - JOUR")
    parsed = rispy.loads(text)
    assert len(parsed) == len(records)
    for rec, entry in zip(records, parsed, strict=True):
        assert entry["title"] == rec["title"]
        # "Family, G. R." as RIS asks (Zotero files a name without a comma as an organisation)
        assert [_pubmed_form(a) for a in entry.get("authors", [])] == rec["authors"]
        assert all(", " in a for a in entry.get("authors", []) if " " in a and a.split()[-1].isupper())
        assert entry.get("doi") == rec["doi"]
        assert set(export.tag_keywords(rec)) <= set(entry["keywords"])
        assert entry["notes"] == [export.tag_note(rec)]
        if rec["tags"].get("design"):
            assert f"Design: {rec['tags']['design']}" in entry["notes"][0]
        if rec["pmid"]:
            assert entry["accession_number"] == f"PMID:{rec['pmid']}"
            assert f"https://pubmed.ncbi.nlm.nih.gov/{rec['pmid']}/" in entry["urls"]


def test_bibtex_round_trip_with_bibtexparser(records: list[dict[str, Any]]) -> None:
    import bibtexparser

    text = export.to_bibtex(records)
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks, [b.error for b in library.failed_blocks]
    assert len(library.entries) == len(records)
    for rec, entry in zip(records, library.entries, strict=True):
        assert entry.key == export.citation_key(rec)
        assert _bib_text(entry["title"]) == rec["title"]
        assert export.bibtex_unescape(entry["note"]) == export.tag_note(rec)
        keywords = export.bibtex_unescape(entry["keywords"]).split(", ")
        assert set(export.tag_keywords(rec)) <= set(keywords)
        if rec["doi"]:
            assert entry["doi"] == rec["doi"]
    # braces stay balanced however odd the title
    assert "\\{{Mo6I8}\\}" in text and "0.02\\%" in text and "Heme \\& {RAGE}" in text


def _bib_text(value: str) -> str:
    """A BibTeX title as a reader sees it: case-protecting braces dropped, then unescaped."""
    return export.bibtex_unescape(re.sub(r"(?<!\\)\{((?:[^{}\\]|\\.)+)\}", r"\1", value))


def test_bibtex_escape_round_trip() -> None:
    nasty = r"50% & {braces} #1 under_score ~ ^ \back $x$ — β T2∗"
    assert export.bibtex_unescape(export.bibtex_escape(nasty)) == nasty


def test_bibtex_lone_braces_leave_the_next_entries_whole() -> None:
    import bibtexparser

    first = _rec(title="Scores {0-10 on a scale", abstract="Scores were {0-10 on the NRS; x} y.")
    second = _rec(id=2, pmid="2", title="Second study")
    text = export.to_bibtex([first, second])
    # BibTeX itself counts every brace, a backslash before it or not.
    depth = [0]
    for ch in text:
        depth.append(depth[-1] + (ch == "{") - (ch == "}"))
    assert min(depth) == 0 and depth[-1] == 0
    assert all(line.startswith("@") for line in text.splitlines() if depth[text.index(line)] == 0 and line)
    entries = bibtexparser.parse_string(text).entries
    assert [e.key for e in entries] == ["pmid1", "pmid2"]
    assert export.bibtex_unescape(entries[0]["abstract"]) == first["abstract"]


def test_csljson_validates_and_renders_with_citeproc(records: list[dict[str, Any]]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((FIXTURES / "csl-data.json").read_text("utf-8"))
    items = json.loads(export.to_csljson(records))
    jsonschema.validate(items, schema)
    assert len(items) == len(records)
    for rec, item in zip(records, items, strict=True):
        assert item["title"] == rec["title"]
        assert item["custom"]["doesitwork"]["tags"] == json.loads(json.dumps(rec["tags"]))
        assert item["note"] == export.tag_note(rec)
        if rec["pmid"]:
            assert item["PMID"] == rec["pmid"]
    for style in export.STYLES:
        refs = export.bibliography(records, style=style)
        assert len(refs) == len(records)
        for rec, ref in zip(records, refs, strict=True):
            # the title survives formatting (APA may re-case; compare case-insensitively)
            core = rec["title"].rstrip(".").lower()
            assert core[:40] in ref.lower(), (style, rec["title"], ref)


def test_vancouver_and_apa_look_right(db: Any) -> None:
    rec = export.load_records(db, export.ids_for_pmids(db, ["23690322"]))
    van = export.bibliography(rec, style="vancouver")[0]
    apa = export.bibliography(rec, style="apa")[0]
    assert re.search(r"Rabago D\b.*Dextrose prolotherapy for knee osteoarthritis", van)
    assert "2013" in van and "(2013)" in apa and apa.startswith("Rabago, D.")


def test_markdown_and_html_bibliographies(records: list[dict[str, Any]]) -> None:
    md = export.to_markdown(records[:5], style="apa", title="Knee")
    assert md.startswith("# Knee") and md.count("\n1. ") + md.count("\n5. ") == 2
    assert "[PubMed](https://pubmed.ncbi.nlm.nih.gov/" in md
    html = export.to_html(records[:5])
    from lxml import etree

    etree.fromstring(html.split("\n", 1)[1].encode(), etree.HTMLParser())
    assert html.count("<li>") == 5


def test_atom_ids_are_stable(db: Any, records: list[dict[str, Any]]) -> None:
    from lxml import etree

    one = export.to_atom(records, feed_id="urn:x")
    again = export.to_atom(export.export_records(db), feed_id="urn:x")
    assert one == again
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = etree.fromstring(one.encode())
    ids = feed.xpath("//a:entry/a:id/text()", namespaces=ns)
    assert len(ids) == len(set(ids)) == len(records)
    assert export.ATOM_ID_PREFIX + "pmid:23690322" in ids
    titles = feed.xpath("//a:entry/a:title/text()", namespaces=ns)
    assert {r["title"] for r in records} == set(titles)


def test_filters(db: Any) -> None:
    rcts = export.select_study_ids(db, interventions=["prolotherapy"], designs=["rct"])
    sql = ("SELECT study_id FROM study_tags_effective WHERE facet='design' AND value='rct' AND "
           "study_id IN (SELECT study_id FROM study_tags_effective WHERE facet='intervention' "
           "AND value='prolotherapy')")  # fmt: skip
    assert sorted(rcts) == sorted(r[0] for r in db.execute(sql))
    assert export.select_study_ids(db, sql=sql) == rcts  # ordered newest first as well
    assert export.select_study_ids(db, since="2999-01-01") == []
    assert export.select_study_ids(db, search='"dry needling" AND pneumothorax')
    assert export.select_study_ids(db, list_name=LIST_NAME) == export.ids_for_pmids(db, LIST_PMIDS)
    for bad in ("NEAR(", "pain AND", "NOT pain"):  # misplaced operators are still reported
        with pytest.raises(export.ExportError, match="not a valid full-text query"):
            export.select_study_ids(db, search=bad)
    # words as typed: an unclosed quote is closed, punctuation is quoted (test_workbench_demo)
    assert export.select_study_ids(db, search='"dry needling') == export.select_study_ids(
        db, search='"dry needling"')
    assert export.select_study_ids(db, search="dry-needling") == export.select_study_ids(
        db, search='"dry needling"')
    assert export.select_study_ids(db, search="a'; drop") == export.select_study_ids(
        db, search="a AND drop")
    with pytest.raises(export.ExportError, match="SELECT"):
        export.select_study_ids(db, sql="DELETE FROM studies")
    with pytest.raises(export.ExportError):
        export.select_study_ids(db, sql="SELECT 1 AS id; DELETE FROM studies")
    with pytest.raises(export.ExportError, match="readonly|read-only|attempt to write"):
        export.select_study_ids(db, sql="WITH x AS (SELECT 1) INSERT INTO tags (study_id) SELECT 1")
    assert db.execute("SELECT count(*) FROM studies").fetchone()[0] == len(list(export.iter_studies(db)))


def test_reading_list_survives_a_revision(db_path: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.db"
    shutil.copy(db_path, copy)
    db = open_db(copy)
    pmid = LIST_PMIDS[0]
    sid = export.ids_for_pmids(db, [pmid])[0]
    with write_tx(db):  # a revised record updates its row in place (store.save_studies)
        db.execute("UPDATE studies SET title = title || ' (revised)', pmid_version = 2 WHERE id = ?", [sid])
    items = reading_lists.list_items(db, LIST_NAME)
    assert [i["pmid"] for i in items] == LIST_PMIDS and items[0]["note"] == LIST_NOTE
    assert items[0]["title"].endswith("(revised)")
    with pytest.raises(reading_lists.ReadingListError, match="already exists"):
        reading_lists.create_list(db, LIST_NAME)
    with pytest.raises(reading_lists.ReadingListError, match="unknown PMID"):
        reading_lists.add_items(db, LIST_NAME, ["1"])
    assert reading_lists.remove_items(db, LIST_NAME, [pmid]) == 1
    assert [i["pmid"] for i in reading_lists.list_items(db, LIST_NAME)] == LIST_PMIDS[1:]
    db.conn.close()


def _cli() -> Any:
    import click

    from harvest.cli import cli
    from harvest.cli_workbench import export_cmd, list_group, serve_cmd

    group = click.Group(commands={**cli.commands})  # a copy: the real group is left alone
    for cmd in (export_cmd, list_group, serve_cmd):
        group.add_command(cmd)
    return group


def test_cli_list_and_export(db_path: Path, tmp_path: Path) -> None:
    import shutil

    import rispy

    db_file = tmp_path / "evidence.db"
    shutil.copy(db_path, db_file)
    run = CliRunner().invoke
    cli = _cli()
    r = run(cli, ["list", "create", "dn rcts", "--from-query", "--intervention", "dry_needling",
                  "--design", "rct", "--db", str(db_file)])  # fmt: skip
    assert r.exit_code == 0, r.output
    n = int(re.search(r"with (\d+) studies", r.output).group(1))
    assert n > 0
    r = run(cli, ["list", "add", "dn rcts", "38705988", "--note", "not DN but useful", "--db", str(db_file)])
    assert r.exit_code == 0, r.output
    r = run(cli, ["list", "show", "dn rcts", "--db", str(db_file)])
    assert "note: not DN but useful" in r.output and f"{n + 1} studies" in r.output
    out = tmp_path / "dn.ris"
    r = run(cli, ["export", "--format", "ris", "--list", "dn rcts", "-o", str(out), "--db", str(db_file)])
    assert r.exit_code == 0, r.output
    assert len(rispy.loads(out.read_text("utf-8"))) == n + 1
    for fmt in sorted(export.FORMATS):
        r = run(cli, ["export", "--format", fmt, "--design", "rct", "--since", "2000-01-01",
                      "--db", str(db_file)])  # fmt: skip
        assert r.exit_code == 0 and r.output, (fmt, r.output)
    atom = [run(cli, ["export", "--format", "atom", "--intervention", "dry_needling", "--db",
                      str(db_file)]).output for _ in range(2)]  # fmt: skip
    assert atom[0] == atom[1] and atom[0].count("<entry>") > 0
    r = run(cli, ["export", "--search", "NEAR(", "--db", str(db_file)])
    assert r.exit_code == 1 and "not a valid full-text query" in r.output
    r = run(cli, ["export", "--list", "nope", "--db", str(db_file)])
    assert r.exit_code == 2 and "no reading list named 'nope'" in r.output
    r = run(cli, ["list", "remove", "dn rcts", "38705988", "--db", str(db_file)])
    assert r.exit_code == 0 and f"{n} studies left" in r.output
    r = run(cli, ["serve", "--db", str(db_file), "--print-command", "--host", "0.0.0.0"])
    assert "default_allow_sql off" in r.output and "--host 0.0.0.0" in r.output
    assert " -i " not in r.output and "immutable" not in r.output


# --- reviewer's defects: escaping, injection, names, identifiers, dates ---------------------


def _rec(**fields: Any) -> dict[str, Any]:
    """A minimal record as load_records returns it, for format edge cases."""
    rec: dict[str, Any] = {"id": 1, "pmid": "1", "doi": None, "pmcid": None, "title": "A trial.",
                           "authors": ["Smith JA"], "journal": "J Test", "year": 2020,
                           "pub_date": "2020-01-02", "abstract": None, "keywords": [],
                           "languages": [], "retracted": False, "tags": {}}  # fmt: skip
    rec.update(fields)
    return rec


def test_html_bibliography_escapes_record_text() -> None:
    rec = _rec(title="Heme & RAGE <script>alert(1)</script>", journal="J <Pain> & Co",
               authors=["O'Neil B", "Writing Committee for the <UK>"])  # fmt: skip
    for style in export.STYLES:
        page = export.to_html([rec], style=style)
        assert "<script>" not in page and "<Pain>" not in page and "<UK>" not in page, page
        assert "Heme &amp; RAGE &lt;script&gt;" in page and "J &lt;Pain&gt; &amp; Co" in page
        assert "&amp;amp;" not in page and "&amp;lt;" not in page  # escaped once
    # plain text (Markdown) is left alone: _md_escape handles it
    assert "J <Pain> & Co" in export.bibliography([rec])[0]


def test_links_stay_inside_their_attributes() -> None:
    from lxml import etree

    url = 'https://example.org/a?b="c"&d=<e>'  # a feed's link is not ours to trust
    rec = _rec(pmid=None, doi=None, url=url, first_seen="2026-11-24T00:00:00Z")
    atom = export.to_atom([rec], link=url)
    links = etree.fromstring(atom.encode()).findall(".//{http://www.w3.org/2005/Atom}entry/{*}link")
    assert [link.get("href") for link in links] == [url]
    assert etree.fromstring(atom.encode()).find("{*}link").get("href") == url  # rel="self"
    for style in export.STYLES:
        page = export.to_html([{**rec, "doi": '10.1/x"y'}], style=style)
        assert 'href="https://doi.org/10.1/x&quot;y"' in page and 'x"y"' not in page


def test_csv_neutralises_formula_cells() -> None:
    import csv
    import io

    rec = _rec(title="=HYPERLINK(\"http://x\",\"y\")", journal="+cmd|' /C calc'!A0",
               authors=["@SUM(1+1)"], abstract="-2+3",
               tags={"sample_size": -5, "conclusion": "\tx", "design": "-"})  # fmt: skip
    row = next(csv.DictReader(io.StringIO(export.to_csv([rec]))))
    assert row["title"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert row["journal"] == "'+cmd|' /C calc'!A0" and row["authors"] == "'@SUM(1+1)"
    assert row["conclusion"] == "'\tx" and row["design"] == "'-"
    assert row["sample_size"] == "-5"  # a number is no formula
    assert row["pmid"] == "1" and row["pub_date"] == "2020-01-02"


@pytest.mark.parametrize(
    ("name", "csl"),
    [
        ("Smith JA", {"family": "Smith", "given": "J. A."}),
        ("van der Berg H", {"family": "van der Berg", "given": "H."}),
        ("O'Neil B", {"family": "O'Neil", "given": "B."}),
        ("de la Cruz Romero J", {"family": "de la Cruz Romero", "given": "J."}),
        ("Writing Committee for the UK", {"literal": "Writing Committee for the UK"}),
        ("ESPGHAN Committee on Nutrition GI", {"literal": "ESPGHAN Committee on Nutrition GI"}),
        ("PROSPECT Study Group", {"literal": "PROSPECT Study Group"}),
        ("Knee OA Trialists Network AU", {"literal": "Knee OA Trialists Network AU"}),
    ],
)
def test_split_author_keeps_collective_names_literal(name: str, csl: dict[str, str]) -> None:
    assert export._split_author(name) == csl
    bib = export._bib_name(name)
    assert bib == (f"{csl['family']}, {csl['given']}" if "family" in csl else "{" + name + "}")


def test_bibtex_braces_in_doi_and_url_are_percent_encoded() -> None:
    import bibtexparser

    doi = "10.1002/(SICI)1097-4636(199812)43:4<456::AID-JBM16}3.0.CO;2-N"  # a lone brace
    rec = _rec(doi=doi, pmid=None, url="https://example.org/a{b}")
    library = bibtexparser.parse_string(export.to_bibtex([rec]))
    assert not library.failed_blocks
    entry = library.entries[0]
    assert entry["doi"] == doi.replace("{", "%7B").replace("}", "%7D")
    assert entry["url"] == "https://doi.org/" + entry["doi"]
    assert "abstract" not in entry.fields_dict and entry["journal"] == "J Test"


def test_ris_multiline_abstract_and_note_stay_in_their_record() -> None:
    import rispy

    abstract = "BACKGROUND: Knees.\n\nMETHODS: We randomised.\nER  - \n\nRESULTS: Better."
    recs = [_rec(abstract=abstract, tags={"conclusion": "works\nER  - "}), _rec(id=2, pmid="2")]
    parsed = rispy.loads(export.to_ris(recs))
    assert len(parsed) == 2
    assert parsed[0]["abstract"] == "BACKGROUND: Knees. METHODS: We randomised. ER  - RESULTS: Better."
    assert parsed[0]["notes"] == ["doesitwork: Design: unknown; Conclusion: works ER  -"]
    assert parsed[1]["accession_number"] == "PMID:2"


def test_since_with_an_offset_compares_in_utc(db: Any) -> None:
    from datetime import datetime, timedelta, timezone

    newest = db.execute("SELECT max(first_seen) FROM studies WHERE deleted = 0").fetchone()[0]
    sql = "SELECT id FROM studies WHERE first_seen = ? AND deleted = 0"
    ids = [r[0] for r in db.execute(sql, [newest])]
    instant = datetime.strptime(newest, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    local = instant.astimezone(timezone(timedelta(hours=5))).isoformat()  # same instant, +05:00
    assert sorted(export.select_study_ids(db, since=local)) == sorted(ids)
    assert export.parse_since(local) == newest
    assert export.parse_since("2026-01-01") == "2026-01-01"  # a date alone stays a date
    with pytest.raises(export.ExportError, match="not an ISO date"):
        export.parse_since("last week")


def test_bibtex_title_protects_acronyms() -> None:
    import bibtexparser

    rec = _rec(title="An RCT of MRI-guided care in COVID-19 (IMS trial) by McDonald & co: PE_PGRS.")
    entry = bibtexparser.parse_string(export.to_bibtex([rec])).entries[0]
    assert entry["title"] == (
        "An {RCT} of {MRI-guided} care in {COVID-19} ({IMS} trial) by {McDonald} \\& co: {PE\\_PGRS}."
    )
    assert _bib_text(entry["title"]) == rec["title"]

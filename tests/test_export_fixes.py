"""Reviewers' defects in exports, searches and reading lists, checked on the bundled demo sample."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from workbench_fixture import build_demo_fixture_db

from harvest import export, reading_lists
from harvest.store import open_db


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_fixture_db(tmp_path_factory.mktemp("fixes") / "demo.db")


@pytest.fixture
def db_file(demo_path: Path, tmp_path: Path) -> Path:
    """A copy each test may write (reading lists)."""
    copy = tmp_path / "demo.db"
    shutil.copy(demo_path, copy)
    return copy


@pytest.fixture
def db(db_file: Path) -> Any:
    d = open_db(db_file)
    yield d
    d.conn.close()


def _cli() -> Any:
    import click

    from harvest.cli import cli
    from harvest.cli_workbench import export_cmd, list_group

    group = click.Group(commands={**cli.commands})  # a copy: the real group is left alone
    for cmd in (export_cmd, list_group):
        group.add_command(cmd)
    return group


def _run(*args: str) -> Any:
    return CliRunner().invoke(_cli(), list(args))


def _fts(db: Any, query: str) -> list[int]:
    sql = "SELECT rowid FROM studies_fts WHERE studies_fts MATCH ? ORDER BY rowid"
    return [r[0] for r in db.execute(sql, [query])]


# 1. --sql returning something other than study ids


def test_sql_id_column_of_titles_is_a_clear_error(db: Any, db_file: Path) -> None:
    sql = "select title as id from studies"
    with pytest.raises(export.ExportError, match="--sql: column id must hold study ids"):
        export.select_study_ids(db, sql=sql)
    for args in (["export", "--format", "jsonl"], ["list", "create", "bad", "--from-query"]):
        r = _run(*args, "--sql", sql, "--db", str(db_file))
        assert r.exit_code == 1, r.output
        assert "--sql: column id must hold study ids (integers)" in r.output
        assert not isinstance(r.exception, ValueError) and "Traceback" not in r.output
    # ids as text still name studies, as before
    want = [r[0] for r in db.execute("SELECT id FROM studies WHERE deleted = 0")]
    got = export.select_study_ids(db, sql="select cast(id as text) as study_id from studies")
    assert sorted(got) == sorted(want)


# 2. reading lists keep the order their items were given


def test_list_keeps_the_order_items_were_given(db: Any, db_file: Path) -> None:
    ids = [r[0] for r in db.execute("SELECT id FROM studies WHERE deleted = 0 ORDER BY id LIMIT 4")]
    given = [ids[2], ids[0], ids[3], ids[1]]  # neither id order nor its reverse
    reading_lists.create_list(db, "ordered")
    reading_lists.add_items(db, "ordered", [f"id:{i}" for i in given])  # one call: one `added` second
    assert [i["study_id"] for i in reading_lists.list_items(db, "ordered")] == given
    assert export.select_study_ids(db, list_name="ordered") == given
    r = _run("export", "--list", "ordered", "--format", "csv", "--db", str(db_file))
    assert r.exit_code == 0, r.output
    pmids = [line.split(",")[0] for line in r.output.splitlines()[1:]]
    by_id = dict(db.execute("SELECT id, pmid FROM studies"))
    assert pmids == [by_id[i] or "" for i in given]


def test_list_from_a_query_keeps_the_query_order(db: Any, db_file: Path) -> None:
    r = _run("list", "create", "recent", "--from-query", "--search", "needling", "--db", str(db_file))
    assert r.exit_code == 0, r.output
    wanted = export.select_study_ids(db, search="needling")  # newest first
    assert len(wanted) > 2 and wanted != sorted(wanted)  # so the check below means something
    assert [i["study_id"] for i in reading_lists.list_items(db, "recent")] == wanted
    assert export.select_study_ids(db, list_name="recent") == wanted


# 3. a search that starts with, or holds only, exclusions


def test_a_leading_minus_excludes(db: Any) -> None:
    assert export.fts_query("-knee needling") == "needling NOT knee"
    assert export.fts_query('-"knee pain" needling') == 'needling NOT "knee pain"'
    assert export.fts_query('needling -"knee pain"') == 'needling NOT "knee pain"'
    # NOT binds tighter than OR: the exclusion applies to the whole search
    assert export.fts_query("-knee needling OR pain") == "( needling OR pain ) NOT knee"
    assert export.fts_query("-title:needling") == "-title:needling"  # a column filter, as before
    found = export.select_study_ids(db, search="-knee needling")
    assert set(found) == set(_fts(db, "needling NOT knee"))
    assert set(_fts(db, "needling")) - set(found), "the sample has a needling study about the knee"


@pytest.mark.parametrize("typed", ["-knee", "-knee -shoulder", '-"knee pain" NOT shoulder'])
def test_a_search_of_exclusions_alone_is_refused(db: Any, db_file: Path, typed: str) -> None:
    message = f"a search needs at least one word to find; {typed!r} only excludes"
    with pytest.raises(export.ExportError) as err:
        export.select_study_ids(db, search=typed)
    assert str(err.value) == message
    r = _run("export", "--search", typed, "--db", str(db_file))
    assert r.exit_code == 1 and message in r.output, r.output
    r = _run("list", "create", "x", "--from-query", "--search", typed, "--db", str(db_file))
    assert r.exit_code == 1 and message in r.output, r.output
    with pytest.raises(sqlite3.OperationalError):  # and what Datasette is given, FTS5 rejects
        _fts(db, export.fts_query(typed))


# 4. French guillemets make a phrase like curly quotes


def test_guillemets_make_a_phrase(db: Any) -> None:
    assert export.fts_query("«dry needling»") == '"dry needling"'
    assert export.fts_query("«pain needling» OR knee") == '"pain needling" OR knee'
    phrase = export.select_study_ids(db, search="« dry needling »")
    assert phrase and set(phrase) == set(_fts(db, '"dry needling"'))


# 5. a large BibTeX export logs no bibtexparser warning


def test_large_bibtex_export_logs_nothing(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    records = export.load_records(db, export.select_study_ids(db))
    # bibtexparser warns from 10,000 entries: the real records, repeated under new ids
    many = [{**records[n % len(records)], "id": n, "pmid": str(n)} for n in range(1, 10_001)]
    with caplog.at_level(logging.WARNING):
        text = export.to_bibtex(many)
    assert not [r for r in caplog.records if r.name.startswith("bibtexparser")], caplog.text
    assert text.count("\n@") + text.startswith("@") == len(many)
    assert many[0]["title"] == records[1]["title"]  # the records were left as they were


# 6. options a format would ignore are usage errors


@pytest.mark.parametrize("fmt,option,message", [
    ("csv", ["--alert-on", "tagged"], "--alert-on applies to --format atom, not csv (which has no alert dates)"),
    ("ris", ["--alert-on", "added"], "--alert-on applies to --format atom, not ris"),
    ("ris", ["--title", "X"], "--title applies to --format markdown, html or atom, not ris (which has no title)"),
    ("bibtex", ["--title", "X"], "not bibtex (which has no title)"),
    ("jsonl", ["--style", "apa"], "--style applies to --format markdown or html, not jsonl"),
])  # fmt: skip
def test_options_a_format_ignores_are_usage_errors(db_file: Path, fmt: str, option: list[str],
                                                   message: str) -> None:  # fmt: skip
    r = _run("export", "--format", fmt, *option, "--db", str(db_file))
    assert r.exit_code == 2 and message in r.output, r.output


@pytest.mark.parametrize("fmt,options", [
    ("atom", ["--title", "X", "--alert-on", "tagged"]), ("markdown", ["--title", "X"]),
    ("html", ["--title", "X", "--style", "apa"]),
])  # fmt: skip
def test_options_a_format_uses_are_taken(db_file: Path, fmt: str, options: list[str]) -> None:
    r = _run("export", "--format", fmt, *options, "--db", str(db_file))
    assert r.exit_code == 0 and "X" in r.output, r.output


# 7. csl-json is another name for csljson


def test_csl_json_is_an_alias(db_file: Path) -> None:
    alias = _run("export", "--format", "csl-json", "--db", str(db_file))
    plain = _run("export", "--format", "csljson", "--db", str(db_file))
    assert alias.exit_code == 0 and plain.exit_code == 0, alias.output
    assert alias.output == plain.output and alias.output.startswith("[")


# 8. BibTeX: @misc without a journal


def _rec(**fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": 7, "pmid": "7", "doi": None, "pmcid": None, "title": "A trial.",
                           "authors": ["Smith JA"], "journal": "J Test", "year": 2020,
                           "pub_date": "2020-01-02", "abstract": None, "keywords": [],
                           "languages": [], "retracted": False, "tags": {}}  # fmt: skip
    rec.update(fields)
    return rec


def test_bibtex_entry_without_a_journal_is_misc() -> None:
    import bibtexparser

    recs = [_rec(), _rec(id=8, pmid=None, journal=None, title="A feed item.")]
    entries = bibtexparser.parse_string(export.to_bibtex(recs)).entries
    assert [(e.entry_type, e.key) for e in entries] == [("article", "pmid7"), ("misc", "study8")]
    assert "journal" not in entries[1].fields_dict and entries[0]["journal"] == "J Test"


# 9. bibliography titles are escaped


def test_markdown_and_html_titles_are_escaped() -> None:
    title = "Knee <b>OA</b> & *stuff*"
    md = export.to_markdown([_rec()], title=title)
    assert md.splitlines()[0] == r"# Knee \<b\>OA\</b\> & \*stuff\*"
    page = export.to_html([_rec()], title=title)
    assert "<title>Knee &lt;b&gt;OA&lt;/b&gt; &amp; *stuff*</title>" in page and "<b>" not in page
    assert export.to_markdown([_rec()], title="two\nlines").splitlines()[0] == "# two lines"


# 10. an invalid search is explained in plain words


@pytest.mark.parametrize("typed,explained", [
    ("(", "the brackets ( ) hold nothing to search for"),
    ("pain AND", "AND needs something to search for after it"),
    ("AND pain", "AND needs something to search for before it"),
    ("pain AND OR knee", "AND OR: two operators with nothing between them"),
    ("pain (knee OR)", "OR needs something to search for after it"),
    ("NOT knee", "NOT needs something to search for before it"),
])  # fmt: skip
def test_invalid_search_says_what_is_wrong(db: Any, db_file: Path, typed: str, explained: str) -> None:
    with pytest.raises(export.ExportError) as err:
        export.select_study_ids(db, search=typed)
    assert str(err.value) == f"search {typed!r} is not a valid full-text query: {explained}"
    r = _run("export", "--search", typed, "--db", str(db_file))
    assert r.exit_code == 1 and explained in r.output and "fts5" not in r.output, r.output


def test_other_fts5_errors_keep_fts5s_words(db: Any) -> None:
    # what the explanation does not know, FTS5 says (here about a "+" the researcher typed)
    with pytest.raises(export.ExportError, match='not a valid full-text query: fts5: syntax error near "[+]"'):
        export.select_study_ids(db, search="a + + b")


@pytest.mark.parametrize(("typed", "query"), [
    ("-knee AND needling", "needling NOT knee"),  # the operator joined the exclusion
    ("-knee OR needling", "needling NOT knee"),
    ("(needling) -knee", "( needling ) NOT knee"),  # no "AND NOT" the user never typed
    ('"a “b” c"', '"a “b” c"'),  # curly quotes inside a straight phrase are characters
])  # fmt: skip
def test_exclusions_beside_operators_and_groups(typed: str, query: str) -> None:
    assert export.fts_query(typed) == query


def test_balanced_braces_stay_plain_escapes_that_latex_decoders_know() -> None:
    # \{ \} where the field's braces balance (pylatexenc, bibtexparser's decoder and
    # Zotero read them); the brace commands only where one is unbalanced
    assert export.bibtex_escape("a {b} c") == r"a \{b\} c"
    assert export.bibtex_escape("x } y {") == r"x \textbraceright{} y \textbraceleft{}"
    assert export.bibtex_title("Cluster [{Mo6I8}] in RCT") == r"Cluster [\{{Mo6I8}\}] in {RCT}"


def _awkward_study(db: Any) -> list[dict[str, Any]]:
    """A feed-only study as a hostile feed or a hand-made MEDLINE file can leave it: a control
    character in the title, LaTeX specials in personal surnames, no PMID, DOI or link."""
    from harvest import store
    from harvest.models import Study

    study = Study(title="Dry needling\x0b trial\x01", authors=["Percent% P", "Brace{ B", "Back\\slash A",
                  "Amp & Co C"], year=2024, record_source="feed", journal="J Awk")  # fmt: skip
    with store.write_tx(db):
        saved = store.save_studies(db, [study], now="2026-01-01T00:00:00Z")
    return export.load_records(db, saved.changed_ids)


def test_control_characters_never_reach_an_export(db: Any) -> None:
    from lxml import etree

    (rec,) = _awkward_study(db)
    assert rec["title"] == "Dry needling trial"
    feed = etree.fromstring(export.to_atom([rec]).encode())  # lxml refuses U+000B in XML
    assert feed.findtext("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}title") == rec["title"]


def test_an_atom_entry_without_a_link_has_content(db: Any) -> None:
    from lxml import etree

    ns = {"a": "http://www.w3.org/2005/Atom"}
    (rec,) = _awkward_study(db)
    entry = etree.fromstring(export.to_atom([rec]).encode()).find("a:entry", ns)
    assert entry.find("a:link", ns) is None  # RFC 4287 4.1.1: then content is required
    assert entry.find("a:content", ns).text == entry.find("a:summary", ns).text != ""
    (with_pmid,) = db.execute("SELECT min(id) FROM studies WHERE pmid IS NOT NULL").fetchone()
    linked = export.load_records(db, [with_pmid])
    entry = etree.fromstring(export.to_atom(linked).encode()).find("a:entry", ns)
    assert entry.find("a:link", ns) is not None and entry.find("a:content", ns) is None


def test_latex_specials_in_personal_surnames_are_escaped(db: Any) -> None:
    import bibtexparser

    (rec,) = _awkward_study(db)
    text = export.to_bibtex([rec])
    assert r"Percent\%, P. and Brace\textbraceleft{}, B. and Back\textbackslash{}slash, A." in text
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks and len(library.entries) == 1
    names = library.entries[0]["author"].split(" and ")
    assert [export.bibtex_unescape(n) for n in names[:3]] == ["Percent%, P.", "Brace{, B.", "Back\\slash, A."]
    assert names[3] == r"Amp \& Co, C."


def test_ris_names_are_family_comma_given(db: Any) -> None:
    import rispy

    (rec,) = _awkward_study(db)
    (entry,) = rispy.loads(export.to_ris([rec]))
    assert entry["authors"] == ["Percent%, P.", "Brace{, B.", "Back\\slash, A.", "Amp & Co, C."]


def test_a_feeds_family_comma_given_names_are_split_for_citation_managers(db: Any) -> None:
    import rispy

    from harvest import store
    from harvest.models import Study

    groups = ["Writing Group, for the Trial", "NICE, Guideline Development Team", "Pfizer, Inc"]
    study = Study(title="Dry needling and pain", authors=["Espejo-Antúnez, Luis", *groups],
                  year=2024, record_source="feed", journal="J Awk")  # fmt: skip
    with store.write_tx(db):
        saved = store.save_studies(db, [study], now="2026-01-01T00:00:00Z")
    (rec,) = export.load_records(db, saved.changed_ids)
    (item,) = export.to_csl_items([rec])
    assert item["author"] == [{"family": "Espejo-Antúnez", "given": "Luis"}, *({"literal": g} for g in groups)]
    assert "author = {Espejo-Antúnez, Luis and {Writing Group, for the Trial} and" in export.to_bibtex([rec])
    (entry,) = rispy.loads(export.to_ris([rec]))
    assert entry["authors"] == ["Espejo-Antúnez, Luis", *groups]

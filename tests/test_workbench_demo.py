"""The workbench on the bundled demo sample: runs in any clone (no ../shared data needed).

Datasette in-process with our metadata and plugin (search, canned queries, facets, the
export renderers and their refusals), ``harvest export --search`` and ``harvest serve``'s
command. The tests against the larger real-data fixture are in test_workbench_datasette.py.
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from click.testing import CliRunner
from workbench_fixture import (
    LIST_NAME, LIST_NOTE, LIST_PMIDS, build_demo_fixture_db, datasette_for, expected, get, rows,
)

pytest.importorskip("datasette")
from datasette.app import Datasette  # noqa: E402

from harvest import export, serve  # noqa: E402
from harvest.store import open_db  # noqa: E402


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_fixture_db(tmp_path_factory.mktemp("wbd") / "evidence.db")


@pytest.fixture(scope="module")
def ds(db_path: Path) -> Datasette:
    return datasette_for(db_path)


def fts(db_path: Path, match: str) -> list[int]:
    """Live studies FTS5 matches for a query written in FTS5 syntax by hand."""
    return sorted(expected(db_path, "SELECT id FROM studies WHERE deleted = 0 AND id IN "
                                    "(SELECT rowid FROM studies_fts WHERE studies_fts MATCH ?)",
                           [match]))  # fmt: skip


def _cli() -> Any:
    import click

    from harvest.cli import cli
    from harvest.cli_workbench import export_cmd, list_group, serve_cmd

    group = click.Group(commands={**cli.commands})  # a copy: the real group is left alone
    for cmd in (export_cmd, list_group, serve_cmd):
        group.add_command(cmd)
    return group


# --- basic workbench tests on the demo sample ------------------------------------------------


def test_metadata_titles_every_table_and_view(ds: Datasette, db_path: Path) -> None:
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")["databases"]["evidence"]
    names = expected(db_path, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                              "AND name NOT LIKE 'studies_fts%' AND name NOT LIKE '\\_%' ESCAPE '\\'")  # fmt: skip
    assert not [n for n in names if not meta["tables"].get(n, {}).get("title")]
    assert "Studies with their tags" in get(ds, "/evidence/studies_tagged").text
    for name, query in meta["queries"].items():
        assert query["title"]
        page = get(ds, f"/evidence/{name}")
        # every canned query opens without its parameters and without an error
        assert page.status_code == 200, (name, page.text[:300])
        assert "syntax error" not in page.text and "Invalid SQL" not in page.text, name


def test_studies_view_facets_and_links(ds: Datasette, db_path: Path) -> None:
    got = rows(ds, "/evidence/studies_tagged.json")
    assert len(got) == expected(db_path, "SELECT count(*) FROM studies WHERE deleted = 0")[0]
    years = [r["year"] or 0 for r in got]
    assert years == sorted(years, reverse=True)
    rec = next(r for r in got if r["pmid"] == "38705988")
    assert rec["pubmed_url"] == "https://pubmed.ncbi.nlm.nih.gov/38705988/"
    assert rec["doi_url"] == "https://doi.org/10.1186/s13018-024-04762-4"
    facets = get(ds, "/evidence/studies_tagged.json?_size=0").json()["facet_results"]
    assert set(facets) >= {"interventions", "conditions", "design", "year", "journal", "sources"}
    counts = {f["value"]: f["count"] for f in facets["interventions"]["results"]}
    assert counts["dry_needling"] == len(expected(
        db_path, "SELECT DISTINCT study_id FROM study_tags_effective "
                 "WHERE facet = 'intervention' AND value = 'dry_needling'"))  # fmt: skip
    filtered = rows(ds, "/evidence/studies_tagged.json?interventions__arraycontains=dry_needling&design=rct")
    assert filtered and all("dry_needling" in json.loads(r["interventions"]) and r["design"] == "rct"
                            for r in filtered)  # fmt: skip


def test_database_page_and_facet_suggestions_are_tidy(ds: Datasette, db_path: Path) -> None:
    page = get(ds, "/evidence")
    box = re.search(r'<textarea id="sql-editor" name="sql">([^<]*)', page.text)
    # Datasette fills the SQL box with the first visible table: not the migrations log.
    assert box and "_sqlite_migrations" not in box[1]
    tables = {t["name"]: t for t in get(ds, "/evidence.json").json()["tables"]}
    assert tables["_sqlite_migrations"]["hidden"]
    # No suggestions, as harvest serve runs it: Datasette named first_seen twice, as a column
    # and as a date, once a database's timestamps fall in a few different seconds.
    assert get(ds, "/evidence/studies_tagged.json").json()["suggested_facets"] == []
    from harvest import serve

    cmd = serve.prepare(serve.ServeOptions(db_path=db_path))
    assert " ".join(cmd).count("--setting suggest_facets off") == 1
    assert "comparators" in get(ds, "/evidence/studies_tagged.json?_size=0").json()["facet_results"]


def test_tag_view_descriptions_say_what_the_views_do_with_deleted_studies(
    db_path: Path, tmp_path: Path
) -> None:
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")["databases"]["evidence"]
    assert "live" in meta["tables"]["study_tags_summary"]["description"]
    assert "deleted study keeps" in meta["tables"]["study_tags_effective"]["description"]
    # ...which is what the views do (migration m202), on a copy with one study deleted.
    copy = tmp_path / "copy.db"
    with sqlite3.connect(db_path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    gone = expected(copy, "SELECT min(study_id) FROM study_tags_effective")[0]
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE studies SET deleted = 1 WHERE id = ?", [gone])
    assert gone not in expected(copy, "SELECT study_id FROM study_tags_summary")
    assert gone in expected(copy, "SELECT study_id FROM study_tags_effective")


def test_canned_queries(ds: Datasette, db_path: Path) -> None:
    got = rows(ds, "/evidence/latest_rcts.json?intervention=dry_needling")
    want = expected(db_path, "SELECT study_id FROM study_tags_effective WHERE facet = 'design' "
                             "AND value = 'rct' AND study_id IN (SELECT study_id FROM "
                             "study_tags_effective WHERE facet = 'intervention' AND value = 'dry_needling')")  # fmt: skip
    assert got and sorted(r["id"] for r in got) == sorted(want)
    got = rows(ds, f"/evidence/reading_list.json?list={quote_plus(LIST_NAME)}")
    assert [r["pmid"] for r in got] == LIST_PMIDS and {r["note"] for r in got} == {LIST_NOTE}
    assert rows(ds, "/evidence/evidence_map.json")


@pytest.mark.parametrize("ext,fmt", [("ris", "ris"), ("bib", "bibtex"), ("csljson", "csljson")])
def test_renderers_match_the_exporter(ds: Datasette, db_path: Path, ext: str, fmt: str) -> None:
    r = get(ds, f"/evidence/studies_tagged.{ext}?design=rct&_size=3")  # every row, not the page
    assert r.status_code == 200 and r.headers["content-type"] == export.FORMATS[fmt].content_type
    ids = sorted(row["id"] for row in rows(ds, "/evidence/studies_tagged.json?design=rct"))
    assert len(ids) > 3
    db = open_db(db_path)
    try:
        assert r.text == export.render(fmt, export.load_records(db, ids))
    finally:
        db.conn.close()


# --- searching as researchers write: hyphens, apostrophes, and FTS5 syntax --------------------

# what a researcher types -> the FTS5 query it must find the same studies as
SEARCHES = {
    "dry-needling": '"dry needling"',
    "low-back pain": '"low back" AND pain',
    "trigger-point AND dry-needling": '"trigger point" AND "dry needling"',
    "Gunn's": "gunn",
    "dry needling": "dry AND needling",
    '"dry needling"': '"dry needling"',
    'prolotherapy OR "dry needling"': 'prolotherapy OR "dry needling"',
    "NEAR(dry needling, 1)": "NEAR(dry needling, 1)",
    "needl*": "needl*",
    "dry-needl*": '"dry needl" *',
    "title:needling": "title:needling",
    "needling NOT shoulder": "needling NOT shoulder",
    "(prolotherapy OR dextrose) knee": "(prolotherapy OR dextrose) AND knee",
    '"unclosed phrase': '"unclosed phrase"',
}


@pytest.mark.parametrize("typed", sorted(SEARCHES))
def test_search_takes_words_as_typed_and_fts5_syntax(ds: Datasette, db_path: Path, typed: str) -> None:
    want = fts(db_path, SEARCHES[typed])
    r = get(ds, f"/evidence/studies_tagged.json?_search={quote_plus(typed)}&_shape=objects&_size=max")
    assert r.status_code == 200, r.text[:300]
    assert sorted(row["id"] for row in r.json()["rows"]) == want
    got = rows(ds, f"/evidence/search_studies.json?q={quote_plus(typed)}")
    assert sorted(row["id"] for row in got) == want
    db = open_db(db_path)
    try:
        assert sorted(export.select_study_ids(db, search=typed)) == want
    finally:
        db.conn.close()
    if typed in ("dry-needling", "low-back pain", "needl*", "dry needling"):
        assert want  # the sample holds these


def test_search_box_page_shows_results_for_a_hyphenated_word(ds: Datasette) -> None:
    page = get(ds, "/evidence/studies_tagged?_search=dry-needling")
    assert page.status_code == 200 and "Invalid SQL" not in page.text
    assert "search matches &#34;dry-needling&#34;" in page.text and "<table" in page.text
    raw = get(ds, "/evidence/studies_tagged.json?_search=dry-needling&_searchmode=raw")
    assert raw.status_code == 400  # raw mode hands the text to FTS5 untouched, as documented


def test_an_empty_search_box_is_no_search(ds: Datasette, db_path: Path) -> None:
    everything = sorted(r["id"] for r in rows(ds, "/evidence/studies_tagged.json"))
    assert everything  # the sample is not empty
    for blank in ("_search=", "_search=+", "_search=%20%09", "_search_title="):
        got = rows(ds, f"/evidence/studies_tagged.json?{blank}")
        assert sorted(r["id"] for r in got) == everything, blank
    page = get(ds, "/evidence/studies_tagged?_search=&_sort=id")
    assert page.status_code == 200 and "search matches" not in page.text
    assert "sorted by id" in page.text  # the other arguments still count
    # Words still search, and a blank argument beside them changes nothing.
    assert rows(ds, "/evidence/studies_tagged.json?_search=dry-needling&_search_title=") == rows(
        ds, "/evidence/studies_tagged.json?_search=dry-needling"
    )


def test_search_query_without_words_shows_no_error(ds: Datasette) -> None:
    for path in ("/evidence/search_studies", "/evidence/search_studies?q=", "/evidence/search_studies?q=+"):
        page = get(ds, path)
        assert page.status_code == 200, page.text[:300]
        assert "syntax error" not in page.text and "0 results" in page.text
    assert get(ds, "/evidence/search_studies.json").status_code == 400  # a download needs words


def test_a_misplaced_operator_is_still_reported(ds: Datasette, db_path: Path) -> None:
    r = get(ds, "/evidence/studies_tagged.json?_search=pain+AND")
    assert r.status_code == 400 and "syntax error" in r.json()["error"]
    db = open_db(db_path)
    try:
        with pytest.raises(export.ExportError, match="not a valid full-text query"):
            export.select_study_ids(db, search="pain AND")
    finally:
        db.conn.close()


@pytest.mark.parametrize("query", [
    "prolotherapy", '"dry needling"', "prolotherapy OR knee", "NEAR(dry needling, 10)", "needl*",
    "^dry", "title:needling", "-title:needling", "{title abstract}:needling", "dry + needling",
    '"dry needl" *', "needling NOT shoulder", "(dry OR wet) AND needling", "title:(dry OR wet)",
    '"back pa" *', "title : needling", "title:NEAR(dry needling, 3)", "NEAR(dry needling,5)",
])  # fmt: skip
def test_fts_query_keeps_valid_fts5_syntax(db_path: Path, query: str) -> None:
    assert export.fts_query(query) == query  # what FTS5 accepts is passed on as typed
    assert fts(db_path, query)  # ...and finds something, so the check above means something


@pytest.mark.parametrize("typed,query", [
    ("dry-needling", '"dry-needling"'), ("Gunn's", "Gunn"), ("", '""'), ("  ", '""'),
    ('"oops', '"oops"'), ("x-ray OR pain-free", '"x-ray" OR "pain-free"'),
    ("Pain: a review", '"Pain:" a review'), ("dry-needl*", '"dry-needl" *'),
    ("title:dry-needling", 'title:"dry-needling"'), ("a (b OR c)", "a AND ( b OR c )"),
    ("NEAR(dry-needling neck,5)", 'NEAR ( "dry-needling" neck , 5 )'), (")) x", "x"),
])  # fmt: skip
def test_fts_query_quotes_what_fts5_would_misread(typed: str, query: str) -> None:
    assert export.fts_query(typed) == query


@pytest.mark.parametrize("typed,same_as", [
    # a possessive next to valid syntax: only the possessive changes, the syntax stays
    ("needling's \"dry needl\" *", 'needling "dry needl" *'),
    ("title : needling's", "title : needling"),
    ("title:NEAR(dry needling's, 3)", "title:NEAR(dry needling, 3)"),
    # punctuation pasted with a title is not a search term
    ("needling (dry), shoulder", "needling AND ( dry ) AND shoulder"),
    # web-search exclusion
    ("needling -shoulder", "needling NOT shoulder"),
])  # fmt: skip
def test_searches_as_typed_find_what_they_say(db_path: Path, typed: str, same_as: str) -> None:
    assert fts(db_path, export.fts_query(typed)) == fts(db_path, same_as)
    assert fts(db_path, same_as)  # a search that finds something, so the comparison means something


def test_demo_keeps_the_sample_citations_volume_issue_pages(db_path: Path) -> None:
    # "J Endod. 2023 Feb;49(2):129-136. Epub 2022 Nov 29" in the sample
    where = "FROM studies WHERE pmid = '36455705'"
    assert [expected(db_path, f"SELECT {c} {where}") for c in ("volume", "issue", "pages")] == [
        ["49"], ["2"], ["129-136"]]
    located = expected(db_path, "SELECT count(*) FROM studies WHERE pages IS NOT NULL")[0]
    assert located >= 25  # most sample citations name their pages (29 studies hold them)


def test_a_search_finds_authors(db_path: Path) -> None:
    # "Gunn" is an author in the sample (Gunn's 1980 trial), named in no title or abstract
    by_author = expected(db_path, "SELECT id FROM studies WHERE authors LIKE '%Gunn%' AND deleted = 0")
    assert by_author and set(by_author) <= set(fts(db_path, "Gunn"))
    assert fts(db_path, "authors:Gunn") == sorted(by_author)


def test_curly_quotes_make_a_phrase(db_path: Path) -> None:
    # Phones and word processors type “ ”; FTS5 would read them as part of the words.
    assert export.fts_query("“pain needling” OR „low back”") == '"pain needling" OR "low back"'
    assert fts(db_path, '"pain needling"') != fts(db_path, "pain needling")  # phrase ≠ words here


def test_a_possessive_finds_the_plain_name_too() -> None:
    # The index's own tokenizer (harvest.schema: porter) reads "Gunn's" as gunn + s.
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(title, tokenize='porter')")
    titles = ["Gunn's intramuscular stimulation", "Gunn IMS for low back pain",
              "Gunn’s approach to myofascial pain", "Dry needling of the neck"]  # fmt: skip
    conn.executemany("INSERT INTO t (title) VALUES (?)", [(t,) for t in titles])
    for typed in ("Gunn's", "Gunn’s", "GUNN'S", "title:Gunn's", "Gunn's AND pain"):
        query = export.fts_query(typed)
        found = {r[0] for r in conn.execute("SELECT title FROM t WHERE t MATCH ?", [query])}
        want = set(titles[:3]) if "pain" not in typed else set(titles[1:3])
        assert found == want, (typed, query)
    # A quoted phrase stays exact: only the possessive spelling.
    quoted = export.fts_query('"Gunn\'s intramuscular"')
    found = [r[0] for r in conn.execute("SELECT title FROM t WHERE t MATCH ?", [quoted])]
    assert found == titles[:1]


def test_fts_query_knows_the_index_columns() -> None:
    from harvest.schema import FTS_COLUMNS

    assert export._FTS_COLUMNS == set(FTS_COLUMNS)  # column filters are kept for these only
    assert export.fts_query("pain:x") == '"pain:x"' and export.fts_query(None) == '""'


def test_export_search_cli(db_path: Path) -> None:
    run = CliRunner().invoke
    for typed in ("dry-needling", "Gunn's", "low-back pain"):
        r = run(_cli(), ["export", "--format", "jsonl", "--search", typed, "--db", str(db_path)])
        assert r.exit_code == 0, r.output
        assert len(r.stdout.splitlines()) == len(fts(db_path, SEARCHES[typed]))
    r = run(_cli(), ["export", "--search", "pain AND", "--db", str(db_path)])
    assert r.exit_code == 1 and "not a valid full-text query" in r.output


HOSTILE = ["search_studies?q=%22unterminated", "search_studies?q=a%27%3B+DROP+TABLE+studies%3B--",
           "search_studies?q=NEAR(", "search_studies?q=%29%29%29+OR+", "studies_tagged?_search=%22oops",
           "studies_tagged?_search=NEAR(", "studies_tagged?_search=a%27%3B+DROP+TABLE+studies%3B--",
           "new_since?since=%27%3B+DELETE+FROM+studies%3B--", "reading_list?list=x%27+OR+1%3D1--"]  # fmt: skip


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_parameters_never_write(ds: Datasette, db_path: Path, query: str) -> None:
    def state() -> list[Any]:  # rows, not file bytes: in WAL mode a write may not reach the file
        return [expected(db_path, sql)[0] for sql in (
            "SELECT count(*) || ':' || total(length(title)) || ':' || total(deleted) FROM studies",
            "SELECT count(*) || ':' || total(negated) FROM tags",
            "SELECT count(*) FROM reading_list_items", "SELECT count(*) FROM reading_lists")]  # fmt: skip

    before = state()
    r = get(ds, f"/evidence/{query}")
    assert r.status_code in (200, 400), r.text[:500]
    assert "Traceback" not in r.text and "Error 500" not in r.text
    if r.status_code == 400:
        assert re.search(r"syntax error|unterminated string|Invalid SQL|is not a date|no reading list named", r.text)
    assert state() == before


# --- downloads that cannot be studies are refused with a 400 and a plain reason -------------


@pytest.mark.parametrize("path,reason", [
    ("evidence_map.ris", "evidence_map is not a list of studies"),
    ("evidence_map.atom", "evidence_map is not a list of studies"),
    ("evidence_map.bib", "evidence_map is not a list of studies"),
    ("runs.ris", "runs is not a list of studies"),
    ("sources.csljson", "sources is not a list of studies"),
    ("search_studies.ris", "q: a download needs words to search for"),
    ("search_studies.atom?q=", "q: a download needs words to search for"),
    ("search_studies.ris?q=pain+AND", "the query failed"),
    ("evidence.ris?sql=select+1+as+x", "this query does not return studies"),
])  # fmt: skip
def test_downloads_that_are_not_studies_are_refused(ds: Datasette, path: str, reason: str) -> None:
    r = get(ds, "/evidence/" + path if not path.startswith("evidence.") else "/" + path)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert reason in r.text.replace("&#39;", "'")
    assert "(id, study_id or pmid)" not in r.text and "content-disposition" not in r.headers


def test_search_results_download(ds: Datasette, db_path: Path) -> None:
    r = get(ds, "/evidence/search_studies.ris?q=dry-needling")
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('.ris"')
    assert r.text.count("TY  - ") == len(fts(db_path, '"dry needling"')) > 0


# --- harvest serve: the printed command runs, and -p 0 prints the real port ------------------


def test_printed_serve_command_runs(db_path: Path, tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = CliRunner(env=env).invoke(_cli(), ["serve", "--db", str(db_path), "--print-command"])
    assert r.exit_code == 0, r.output
    cmd = shlex.split(r.stdout.strip())
    meta = Path(cmd[cmd.index("--metadata") + 1])
    assert meta.is_file() and meta.is_relative_to(tmp_path / "cache" / "doesitwork" / "serve")
    assert str(meta) in r.stderr
    # the command, run after `harvest serve` returned, serves our metadata and search
    out = subprocess.run([*cmd, "--get", "/evidence/search_studies.json?q=dry-needling&_shape=objects"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads(out.stdout)["rows"]) == len(fts(db_path, '"dry needling"')) > 0


def test_serve_port_0_prints_the_port_it_serves_on(db_path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import harvest.cli_workbench as cw

    started: list[list[str]] = []

    class FakeDatasette:
        def __init__(self, cmd: list[str], **_: Any) -> None:
            started.append(cmd)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(cw.subprocess, "Popen", FakeDatasette)
    monkeypatch.setattr(cw.signal, "signal", lambda *_: None)
    r = CliRunner(env={"XDG_CACHE_HOME": str(tmp_path)}).invoke(
        _cli(), ["serve", "--db", str(db_path), "-p", "0"])
    assert r.exit_code == 0, r.output
    port = started[0][started[0].index("--port") + 1]
    assert port != "0" and f"http://127.0.0.1:{port}/" in r.stderr and ":0/" not in r.stderr

"""The canned queries never drop rows or answer a bad parameter with an empty result.

A search returns every match (Datasette's row limit cuts the page, saying so; the downloads
hold every match, and a selection over the download cap is refused, not cut). A ``since``
that is not a date, an unknown reading list or intervention is a 400 with the reason in
every format, as ``harvest export`` refuses them; blank and valid values work as before.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from datafiles import SHARED_DATA
from workbench_fixture import (
    LIST_NAME, LIST_PMIDS, build_demo_fixture_db, datasette_for, expected, get, rows,
)

pytest.importorskip("datasette")
from datasette.app import Datasette  # noqa: E402

from harvest import export, ingest, serve  # noqa: E402
from harvest.store import open_db  # noqa: E402

UPDATE_FILE = SHARED_DATA / "pubmed" / "pubmed21n1298-even.xml.gz"
FORMATS = ["", ".json", ".ris", ".bib", ".csljson", ".atom"]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_fixture_db(tmp_path_factory.mktemp("wbq") / "evidence.db")


@pytest.fixture(scope="module")
def ds(db_path: Path) -> Datasette:
    return datasette_for(db_path)


def _records(db_path: Path, ids: list[int]) -> list[dict[str, Any]]:
    db = open_db(db_path)
    try:
        return export.load_records(db, ids)
    finally:
        db.conn.close()


def _cli_ids(db_path: Path, **filters: Any) -> list[int]:
    """What ``harvest export`` selects with these filters."""
    db = open_db(db_path)
    try:
        return export.select_study_ids(db, **filters)
    finally:
        db.conn.close()


def _search_ids(db_path: Path, typed: str) -> list[int]:
    """The search query's rows, in its order, read straight from the file."""
    sql = ("SELECT t.id FROM studies_tagged t WHERE t.id IN (SELECT rowid FROM studies_fts "
           "WHERE studies_fts MATCH ?) ORDER BY t.year DESC, t.id DESC")  # fmt: skip
    return expected(db_path, sql, [export.fts_query(typed)])


# --- a search is never cut short in silence --------------------------------------------------


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real NLM update file imported whole: 10,362 studies, thousands match "patients"."""
    if not UPDATE_FILE.exists():
        pytest.skip(f"real test data not found: {UPDATE_FILE} (see ../shared/data/README.md)")
    path = tmp_path_factory.mktemp("wbbig") / "evidence.db"
    db = open_db(path)
    try:
        assert ingest.import_file(db, UPDATE_FILE).error is None
    finally:
        db.conn.close()
    return path


def test_a_large_search_is_truncated_visibly_and_downloads_every_match(big_db: Path) -> None:
    ds = datasette_for(big_db)  # Datasette's default 1,000-row limit, as harvest serve sets it
    want = _search_ids(big_db, "patients")
    assert sorted(want) == sorted(_cli_ids(big_db, search="patients")) and len(want) > 1000
    page = get(ds, "/evidence/search_studies.json?q=patients&_shape=objects").json()
    assert page["truncated"] is True and len(page["rows"]) == 1000
    assert [r["id"] for r in page["rows"]] == want[:1000]
    assert "returning more than 1,000 rows" in get(ds, "/evidence/search_studies?q=patients").text
    records = _records(big_db, want)
    ris = get(ds, "/evidence/search_studies.ris?q=patients")
    assert ris.status_code == 200 and ris.text == export.render("ris", records)
    csl = get(ds, "/evidence/search_studies.csljson?q=patients")
    assert csl.status_code == 200 and len(csl.json()) == len(want)


def _plugin(ds: Datasette) -> Any:
    """The plugin module Datasette registered (one per process, whichever instance loaded it)."""
    from datasette.plugins import pm

    assert ds.plugins_dir  # Datasette registers the plugins folder when it is made
    return pm.get_plugin("doesitwork_exports.py")


@pytest.fixture()
def small(db_path: Path) -> Datasette:
    """The demo database with a two-row page, so that every download goes past the page."""
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")
    return Datasette([str(db_path)], metadata=meta, plugins_dir=str(serve.DEFAULT_PLUGINS_DIR),
                     settings={"max_returned_rows": 2})  # fmt: skip


@pytest.mark.parametrize("path", ["search_studies.ris?q=dry-needling", "latest_rcts.bib?intervention=",
                                  "studies_tagged.ris?design=rct&_size=2"])  # fmt: skip
def test_a_download_over_the_cap_is_refused_not_cut(small: Datasette, path: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    whole = get(small, f"/evidence/{path}")
    assert whole.status_code == 200
    count = len(re.findall(r"^(?:TY  - |@\w+\{)", whole.text, flags=re.M))  # RIS or BibTeX records
    assert count > 3  # more than the two rows on the page and the cap set below
    monkeypatch.setattr(_plugin(small), "MAX_EXPORT_ROWS", count)
    assert get(small, f"/evidence/{path}").text == whole.text  # exactly at the cap: all of it
    monkeypatch.setattr(_plugin(small), "MAX_EXPORT_ROWS", 3)
    r = get(small, f"/evidence/{path}")
    assert r.status_code == 400, r.text[:300]
    assert "selects more than 3 studies" in html.unescape(r.text)
    assert "content-disposition" not in r.headers


# --- a bad parameter is refused with the reason, in every format -----------------------------

BAD = {
    "reading_list?list=nope": "no reading list named 'nope'; lists: knee OA",
    "new_since?since=garbage": "'garbage' is not a date",
    "new_since?since=2024-13-45": "'2024-13-45' is not a date",
    "latest_rcts?intervention=dry-needling": "unknown intervention value 'dry-needling'; values are:",
    "reviews_by_intervention?intervention=acupuncturez": "unknown intervention value 'acupuncturez",
}


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("query", sorted(BAD))
def test_a_bad_parameter_is_refused_with_the_reason(ds: Datasette, query: str, ext: str) -> None:
    r = get(ds, "/evidence/" + query.replace("?", f"{ext}?", 1))
    assert r.status_code == 400, (r.status_code, r.text[:300])
    text = r.json()["error"] if ext == ".json" else html.unescape(r.text)
    assert BAD[query] in text
    assert "content-disposition" not in r.headers


BLANK = [("reading_list", ""), ("reading_list", "?list="), ("new_since", ""), ("new_since", "?since=+"),
         ("search_studies", ""), ("search_studies", "?q=")]  # fmt: skip


@pytest.mark.parametrize(("name", "query"), BLANK)
def test_blank_parameters_are_the_empty_form_on_the_page(ds: Datasette, name: str, query: str) -> None:
    r = get(ds, f"/evidence/{name}{query}")
    assert r.status_code == 200 and "<form" in r.text


@pytest.mark.parametrize("ext", [e for e in FORMATS if e] + [".csv"])
@pytest.mark.parametrize(("name", "query"), BLANK)
def test_a_download_without_its_needed_parameter_is_refused(ds: Datasette, name: str, query: str,
                                                            ext: str) -> None:  # fmt: skip
    r = get(ds, f"/evidence/{name}{ext}{query}")
    assert r.status_code == 400, (r.status_code, r.text[:300])
    text = r.json()["error"] if ext == ".json" else html.unescape(r.text)
    assert "a download needs" in text and "none was given" in text
    assert "content-disposition" not in r.headers


def test_a_blank_optional_parameter_still_downloads_everything(ds: Datasette, db_path: Path) -> None:
    everything = rows(ds, "/evidence/latest_rcts.json?intervention=")
    assert everything and everything == rows(ds, "/evidence/latest_rcts.json")


def test_valid_parameters_still_select_the_studies(ds: Datasette, db_path: Path) -> None:
    got = rows(ds, f"/evidence/reading_list.json?list={quote_plus(LIST_NAME)}")
    assert [r["pmid"] for r in got] == LIST_PMIDS
    r = get(ds, f"/evidence/reading_list.ris?list={quote_plus(LIST_NAME)}")
    assert r.status_code == 200 and r.text.count("TY  - ") == len(LIST_PMIDS)
    live = sorted(_cli_ids(db_path))
    assert sorted(r["id"] for r in rows(ds, "/evidence/new_since.json?since=2000-01-01")) == live
    assert rows(ds, "/evidence/new_since.json?since=2999-01-01") == []
    lower = rows(ds, "/evidence/latest_rcts.json?intervention=dry_needling")
    assert lower and rows(ds, "/evidence/latest_rcts.json?intervention=Dry_Needling+") == lower
    assert sorted(r["id"] for r in lower) == sorted(
        _cli_ids(db_path, interventions=["dry_needling"], designs=["rct"]))


def test_since_reads_an_iso_time_as_the_cli_does(ds: Datasette, db_path: Path) -> None:
    """A time with an offset is compared in UTC, as first_seen is stored (and as
    ``harvest export --since`` compares it), not as text."""
    first = max(expected(db_path, "SELECT first_seen FROM studies WHERE deleted = 0"))
    moment = datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    for since in (moment.astimezone(timezone(timedelta(hours=2))).isoformat(),  # same instant
                  moment.strftime("%Y-%m-%d %H:%M:%S")):  # fmt: skip
        want = sorted(_cli_ids(db_path, since=since))
        assert want  # the newest studies, at least
        got = rows(ds, f"/evidence/new_since.json?since={quote_plus(since)}")
        assert sorted(r["id"] for r in got) == want, since


def test_a_query_a_user_adds_keeps_its_own_parameters(db_path: Path) -> None:
    # The checks belong to our shipped queries: a researcher's query may use :list and
    # :since for other things (PMIDs, a year).
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")
    meta["databases"]["evidence"]["queries"].update({
        "by_pmids": {"sql": "select id, pmid, title from studies "
                            "where (',' || :list || ',') like ('%,' || pmid || ',%')"},
        "since_year": {"sql": "select id, title from studies where year >= cast(:since as integer)"},
    })  # fmt: skip
    ds = Datasette([str(db_path)], metadata=meta, plugins_dir=str(serve.DEFAULT_PLUGINS_DIR))
    pmids = expected(db_path, "SELECT pmid FROM studies WHERE pmid IS NOT NULL ORDER BY id LIMIT 2")
    r = get(ds, f"/evidence/by_pmids.json?list={','.join(pmids)}&_shape=array")
    assert r.status_code == 200 and sorted(x["pmid"] for x in r.json()) == sorted(pmids)
    r = get(ds, "/evidence/since_year.json?since=2020&_shape=array")
    assert r.status_code == 200 and len(r.json()) == len(expected(db_path, "SELECT id FROM studies WHERE year >= 2020"))
    assert get(ds, "/evidence/new_since.json?since=2020").status_code == 400  # ours still checked


@pytest.mark.parametrize("path", [
    "/evidence/studies_tagged?_search=-knee", "/evidence/studies_tagged.json?_search=-knee+-shoulder",
    "/evidence/search_studies?q=-knee", "/evidence/search_studies.ris?q=-knee",
])  # fmt: skip
def test_a_search_that_only_excludes_is_refused_in_plain_words(ds: Datasette, path: str) -> None:
    r = get(ds, path)
    assert r.status_code == 400 and "needs at least one word to find" in html.unescape(r.text), r.text[:300]


def test_a_search_with_an_exclusion_still_finds(ds: Datasette, db_path: Path) -> None:
    found = rows(ds, "/evidence/studies_tagged.json?_search=needling+-knee")
    assert found and len(found) == len(_cli_ids(db_path, search="needling -knee"))

"""Datasette in-process: our metadata, canned queries, facets, search and export renderers."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from workbench_fixture import (
    LIST_NAME, LIST_NOTE, LIST_PMIDS, build_fixture_db, datasette_for, expected, get, rows,
)

pytest.importorskip("datasette")
from datasette.app import Datasette  # noqa: E402

from harvest import export, serve  # noqa: E402


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_db(tmp_path_factory.mktemp("wb") / "evidence.db")


@pytest.fixture(scope="module")
def ds(db_path: Path) -> Datasette:
    return datasette_for(db_path)


def test_metadata_titles_every_table_and_view(ds: Datasette, db_path: Path) -> None:
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")["databases"]["evidence"]
    names = expected(db_path, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                              "AND name NOT LIKE 'studies_fts%' AND name NOT LIKE '\\_%' ESCAPE '\\'")  # fmt: skip
    missing = [n for n in names if not meta["tables"].get(n, {}).get("title")]
    assert not missing, f"tables without a title in db/metadata.yml: {missing}"
    tagged_cols = get(ds, "/evidence/studies_tagged.json?_size=0").json()["columns"]
    assert set(tagged_cols) <= set(meta["tables"]["studies_tagged"]["columns"])
    studies_cols = expected(db_path, "SELECT name FROM pragma_table_info('studies')")
    assert set(studies_cols) <= set(meta["tables"]["studies"]["columns"])
    page = get(ds, "/evidence/studies_tagged").text
    assert "Studies with their tags" in page
    for query in meta["queries"].values():
        assert query["title"]


def test_studies_view_newest_first_with_links(ds: Datasette) -> None:
    got = rows(ds, "/evidence/studies_tagged.json")
    years = [r["year"] or 0 for r in got]
    assert years == sorted(years, reverse=True)
    rec = next(r for r in got if r["pmid"] == "38705988")
    assert rec["pubmed_url"] == "https://pubmed.ncbi.nlm.nih.gov/38705988/"
    assert rec["doi_url"] == "https://doi.org/10.1186/s13018-024-04762-4"
    assert rec["pmc_url"] == "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC11071214/"
    assert json.loads(rec["interventions"]) == ["prolotherapy"]
    assert rec["design"] == "rct"
    html = get(ds, "/evidence/studies_tagged").text
    assert 'href="https://pubmed.ncbi.nlm.nih.gov/38705988/"' in html


def test_facets(ds: Datasette, db_path: Path) -> None:
    d = get(ds, "/evidence/studies_tagged.json?_size=0").json()
    facets = d["facet_results"]
    assert set(facets) >= {"interventions", "conditions", "design", "year", "journal", "sources"}
    assert not d.get("facets_timed_out")
    counts = {f["value"]: f["count"] for f in facets["interventions"]["results"]}
    assert counts["dry_needling"] == len(expected(
        db_path, "SELECT DISTINCT e.study_id FROM study_tags_effective e JOIN studies s ON "
                 "s.id = e.study_id WHERE s.deleted = 0 AND facet = 'intervention' AND value = 'dry_needling'"))  # fmt: skip
    filtered = rows(ds, "/evidence/studies_tagged.json?interventions__arraycontains=dry_needling&design=rct")
    assert filtered and all("dry_needling" in json.loads(r["interventions"]) and r["design"] == "rct"
                            for r in filtered)  # fmt: skip


def test_search_raw_mode(ds: Datasette, db_path: Path) -> None:
    phrase = rows(ds, "/evidence/studies_tagged.json?_search=%22dry+needling%22")
    want = expected(db_path, "SELECT rowid FROM studies_fts WHERE studies_fts MATCH '\"dry needling\"'")
    assert sorted(r["id"] for r in phrase) == sorted(
        i for i in want if i in {r["id"] for r in rows(ds, "/evidence/studies_tagged.json")})
    both = rows(ds, "/evidence/studies_tagged.json?_search=prolotherapy+AND+knee")
    either = rows(ds, "/evidence/studies_tagged.json?_search=prolotherapy+OR+knee")
    assert both and len(either) > len(both)
    near = rows(ds, "/evidence/studies_tagged.json?_search=NEAR(dry+needling%2C+1)")
    assert near


CANNED = {
    "search_studies?q=prolotherapy":
        "SELECT s.id FROM studies s WHERE deleted = 0 AND s.id IN "
        "(SELECT rowid FROM studies_fts WHERE studies_fts MATCH 'prolotherapy')",
    "latest_rcts?intervention=":
        "SELECT study_id FROM study_tags_effective e JOIN studies s ON s.id = e.study_id "
        "WHERE s.deleted = 0 AND facet = 'design' AND value = 'rct'",
    "latest_rcts?intervention=dry_needling":
        "SELECT study_id FROM study_tags_effective WHERE facet = 'design' AND value = 'rct' "
        "AND study_id IN (SELECT study_id FROM study_tags_effective WHERE facet = 'intervention' "
        "AND value = 'dry_needling')",
    "reviews_by_intervention?intervention=prolotherapy":
        "SELECT study_id FROM study_tags_effective WHERE facet = 'design' AND value IN "
        "('systematic_review', 'meta_analysis') AND study_id IN (SELECT study_id FROM "
        "study_tags_effective WHERE facet = 'intervention' AND value = 'prolotherapy')",
    "new_this_week": "SELECT id FROM studies WHERE deleted = 0",
    "new_since?since=2000-01-01": "SELECT id FROM studies WHERE deleted = 0",
    "new_since?since=2999-01-01": "SELECT id FROM studies WHERE 0",
    "retracted_studies": "SELECT id FROM studies WHERE retracted = 1",
}


@pytest.mark.parametrize("query", sorted(CANNED))
def test_canned_query_returns_expected_studies(ds: Datasette, db_path: Path, query: str) -> None:
    got = rows(ds, f"/evidence/{query.replace('?', '.json?', 1) if '?' in query else query + '.json'}")
    want = expected(db_path, CANNED[query])
    assert sorted(r["id"] for r in got) == sorted(set(want))
    if "search_studies" not in query:
        assert got or query.endswith("2999-01-01")


def test_retracted_and_reading_list_queries(ds: Datasette) -> None:
    assert [r["pmid"] for r in rows(ds, "/evidence/retracted_studies.json")] == ["31031480"]
    got = rows(ds, f"/evidence/reading_list.json?list={LIST_NAME.replace(' ', '+')}")
    assert [r["pmid"] for r in got] == LIST_PMIDS
    assert {r["note"] for r in got} == {LIST_NOTE}


def test_evidence_map(ds: Datasette, db_path: Path) -> None:
    got = rows(ds, "/evidence/evidence_map.json")
    cell = next(r for r in got if (r["intervention"], r["condition"], r["design"])
                == ("prolotherapy", "knee_osteoarthritis", "rct"))  # fmt: skip
    want = expected(db_path, """
        SELECT count(DISTINCT i.study_id) FROM study_tags_effective i
        JOIN study_tags_effective c ON c.study_id = i.study_id AND c.facet = 'condition'
        JOIN study_tags_effective d ON d.study_id = i.study_id AND d.facet = 'design'
        WHERE i.facet = 'intervention' AND i.value = 'prolotherapy'
          AND c.value = 'knee_osteoarthritis' AND d.value = 'rct'""")[0]
    assert cell["studies"] == want > 0


@pytest.mark.parametrize("ext,fmt", [("ris", "ris"), ("bib", "bibtex"), ("csljson", "csljson"),
                                     ("atom", "atom")])  # fmt: skip
def test_renderers_match_the_exporter(ds: Datasette, db_path: Path, ext: str, fmt: str) -> None:
    r = get(ds, f"/evidence/latest_rcts.{ext}?intervention=dry_needling")
    assert r.status_code == 200
    assert r.headers["content-type"] == export.FORMATS[fmt].content_type
    ids = [row["id"] for row in rows(ds, "/evidence/latest_rcts.json?intervention=dry_needling")]
    from harvest.store import open_db

    db = open_db(db_path)
    try:
        records = export.load_records(db, ids)
    finally:
        db.conn.close()
    if fmt == "atom":
        from lxml import etree

        feed = etree.fromstring(r.content)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        entry_ids = feed.xpath("//a:entry/a:id/text()", namespaces=ns)
        assert sorted(entry_ids) == sorted(export.atom_id(rec) for rec in records)
        assert get(ds, "/evidence/latest_rcts.atom?intervention=dry_needling").content == r.content
    else:
        assert r.text == export.render(fmt, records)


def test_table_export_is_the_whole_filtered_table_not_the_page(ds: Datasette, db_path: Path) -> None:
    # Three rows a page: the export holds every row the filter selects, in id order.
    r = get(ds, "/evidence/studies_tagged.ris?design=rct&_size=3")
    assert r.status_code == 200
    ids = sorted(row["id"] for row in rows(ds, "/evidence/studies_tagged.json?design=rct"))
    assert len(ids) > 3
    from harvest.store import open_db

    db = open_db(db_path)
    try:
        assert r.text == export.render("ris", export.load_records(db, ids))
    finally:
        db.conn.close()


@pytest.mark.parametrize("page", ["_size=5", "_size=5&_sort_desc=year", "_size=7&_next=2023,23"])
def test_a_sorted_table_export_holds_each_row_once(ds: Datasette, db_path: Path, page: str) -> None:
    """The studies table sorts by year (ties): Datasette's own pages repeat and skip rows
    there, so the export must not follow them (even when asked from a later page)."""
    r = get(ds, f"/evidence/studies.ris?{page}")
    assert r.status_code == 200
    titles = re.findall(r"^TI  - (.*)$", r.text, flags=re.M)
    want = expected(db_path, "SELECT title FROM studies")
    assert len(want) > 7 and sorted(titles) == sorted(want)


def test_atom_feed_ids_differ_by_filter_and_ignore_paging(ds: Datasette) -> None:
    from lxml import etree

    def feed_id(path: str) -> str:
        return etree.fromstring(get(ds, path).content).findtext("{http://www.w3.org/2005/Atom}id")

    rct = feed_id("/evidence/studies_tagged.atom?design=rct")
    assert rct != feed_id("/evidence/studies_tagged.atom?design=case_report")
    assert rct == feed_id("/evidence/studies_tagged.atom?design=rct&_size=3")
    assert feed_id("/evidence/latest_rcts.atom?intervention=ims") != feed_id(
        "/evidence/latest_rcts.atom?intervention=prolotherapy")


def test_query_export_is_not_cut_at_max_returned_rows(db_path: Path) -> None:
    meta = serve.build_metadata(serve.DEFAULT_METADATA, "evidence")
    small = Datasette([str(db_path)], metadata=meta, plugins_dir=str(serve.DEFAULT_PLUGINS_DIR),
                      settings={"max_returned_rows": 3})  # fmt: skip
    page = get(small, "/evidence/latest_rcts.json?intervention=&_shape=objects").json()
    assert page["truncated"] and len(page["rows"]) == 3  # what the query page shows
    r = get(small, "/evidence/latest_rcts.ris?intervention=")
    want = expected(db_path, """SELECT id FROM studies_tagged WHERE design = 'rct'
                                ORDER BY year DESC, pub_date DESC, id DESC LIMIT 100""")
    assert len(want) > 3
    from harvest.store import open_db

    db = open_db(db_path)
    try:
        assert r.text == export.render("ris", export.load_records(db, want))
    finally:
        db.conn.close()


def test_an_atom_alert_feed_holds_the_page_only(ds: Datasette) -> None:
    from lxml import etree

    feed = etree.fromstring(get(ds, "/evidence/studies_tagged.atom?design=rct&_size=3").content)
    assert len(feed.findall("{http://www.w3.org/2005/Atom}entry")) == 3


def test_renderer_links_only_where_rows_are_studies(ds: Datasette) -> None:
    assert 'href="/evidence/studies_tagged.ris"' in get(ds, "/evidence/studies_tagged").text
    assert ".ris" not in get(ds, "/evidence/runs").text
    assert ".ris" not in get(ds, "/evidence/evidence_map").text


HOSTILE = [
    "search_studies?q=%22unterminated",
    "search_studies?q=a%27%3B+DROP+TABLE+studies%3B--",
    "search_studies?q=NEAR(",
    "search_studies?q=%29%29%29+OR+",
    "new_since?since=%27%3B+DELETE+FROM+studies%3B--",
    "reading_list?list=x%27+OR+1%3D1--",
    "latest_rcts?intervention=%27%29%3B+DROP+TABLE+tags%3B--",
    "studies_tagged?_search=%22oops",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_parameters_give_a_clear_page_and_never_write(ds: Datasette, db_path: Path,
                                                               query: str) -> None:  # fmt: skip
    before = hashlib.sha1(db_path.read_bytes()).hexdigest()
    counts = expected(db_path, "SELECT (SELECT count(*) FROM studies) || '/' || (SELECT count(*) FROM tags)")
    r = get(ds, f"/evidence/{query}")
    assert r.status_code in (200, 400), r.text[:500]
    assert "Traceback" not in r.text and "Error 500" not in r.text
    if r.status_code == 400:
        assert re.search(r"syntax error|unterminated string|Invalid SQL|is not a date|"
                         r"no reading list named|unknown intervention value", r.text)  # fmt: skip
    else:
        assert "<table" in r.text or "0 rows" in r.text or "No results" in r.text or "<p" in r.text
    if "since=" in query or "list=" in query or "intervention=" in query:
        # refused with the reason, not an empty result (see test_workbench_queries.py)
        as_json = get(ds, f"/evidence/{query.replace('?', '.json?', 1)}")
        assert r.status_code == 400 and as_json.status_code == 400
    assert expected(db_path, "SELECT (SELECT count(*) FROM studies) || '/' || (SELECT count(*) FROM tags)") == counts
    assert hashlib.sha1(db_path.read_bytes()).hexdigest() == before


def test_arbitrary_sql_cannot_write(ds: Datasette) -> None:
    r = get(ds, "/evidence.json?sql=DELETE+FROM+studies")
    assert r.status_code == 400 and "SELECT" in r.json()["error"]
    r = get(ds, "/evidence.json?sql=select+1%3B+delete+from+studies")
    assert r.status_code == 400

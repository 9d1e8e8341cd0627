"""The database schema, declared once as named sqlite-utils ``Migrations``.

This is the only module with DDL. Migrations are applied on every open and are
idempotent; a new schema change is a new named migration at the end, never an edit
of an applied one. Never ``transform()`` the ``studies`` table without re-creating
its FTS triggers (sqlite-utils drops them silently): use :func:`ensure_fts`.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("doesitwork")

# Columns the full-text index covers; Datasette finds ``studies_fts`` by itself.
FTS_COLUMNS = ["title", "abstract", "keywords_text", "mesh_text", "authors"]


@migrations()
def m001_studies(db: Database) -> None:
    db["studies"].create(
        {
            "id": int,
            "pmid": str,
            "pmid_version": int,
            "doi": str,
            "pmcid": str,
            "title": str,
            "abstract": str,
            "journal": str,
            "pub_date": str,
            "year": int,
            "authors": str,  # JSON list of "Last Initials"
            "languages": str,  # JSON list of ISO 639-2 codes
            "publication_types": str,  # JSON list
            "mesh": str,  # JSON list of {descriptor, major, qualifiers}
            "mesh_text": str,  # "; "-joined descriptors, "*" on major topics (FTS, display)
            "keywords": str,  # JSON list
            "keywords_text": str,  # "; "-joined (FTS, display)
            "medline_status": str,
            "date_revised": str,
            "corrections": str,  # JSON list of {ref_type, pmid, ref_source}
            "url": str,
            "record_source": str,
            "retracted": int,
            "deleted": int,
            "deleted_reason": str,
            "missing_count": int,  # consecutive reconciliations in which NCBI lacked it
            "content_hash": str,
            "first_seen": str,
            "last_updated": str,
        },
        pk="id",
        not_null={"title", "first_seen", "last_updated"},
        defaults={"retracted": 0, "deleted": 0, "missing_count": 0, "pmid_version": 1},
    )
    # A PMID is never stored twice (SQLite allows many NULLs for feed-only rows).
    db["studies"].create_index(["pmid"], unique=True)
    db["studies"].create_index(["doi"])
    db["studies"].create_index(["year"])
    db["studies"].create_index(["last_updated"])
    # The index as this migration first made it: an applied migration must not change
    # behind its name (m006 adds the authors).
    ensure_fts(db, ["title", "abstract", "keywords_text", "mesh_text"])


@migrations()
def m002_sources_runs(db: Database) -> None:
    db["sources"].create(
        {
            "name": str,  # e.g. "pubmed:dry_needling", "feed:jospt"
            "kind": str,  # "pubmed" or "feed"
            "topic": str,
            "query": str,  # PubMed query text or feed URL
            "query_version": str,  # hash of the query text
            "cursor": str,  # PubMed: end (YYYY/MM/DD) of the last committed window
            "etag": str,
            "last_modified": str,
            "expected_hours": int,  # how often it should succeed (status warns past it)
            "last_success": str,
            "last_status": str,
            "last_error": str,
            "consecutive_failures": int,
        },
        pk="name",
        defaults={"consecutive_failures": 0},
    )
    db["runs"].create(
        {
            "id": int,
            "source": str,
            "started": str,
            "finished": str,
            "status": str,  # running, ok, partial, unchanged, error
            "found": int,
            "new": int,
            "updated": int,
            "unchanged": int,
            "deleted": int,
            "unavailable": int,
            "skipped": int,  # e.g. journal-feed entries off topic
            "error": str,
            "query_version": str,
            "pid": int,
        },
        pk="id",
        foreign_keys=[("source", "sources", "name")],
        defaults={
            "found": 0,
            "new": 0,
            "updated": 0,
            "unchanged": 0,
            "deleted": 0,
            "unavailable": 0,
            "skipped": 0,
        },
    )
    db["runs"].create_index(["source", "started"])
    db["sightings"].create(
        {"run_id": int, "study_id": int, "seen_at": str, "how": str},
        pk=("run_id", "study_id"),
        foreign_keys=[("run_id", "runs", "id"), ("study_id", "studies", "id")],
    )
    db["sightings"].create_index(["study_id"])


@migrations()
def m003_tags(db: Database) -> None:
    db["tags"].create(
        {
            "study_id": int,
            "facet": str,  # intervention, condition, design, comparator, ...
            "value": str,
            "detail": str,  # sub-value, e.g. "electrical" for an IMS variant
            "origin": str,  # nlm, rule, manual
            "rule_id": str,
            "ruleset_version": str,
            "evidence": str,  # matched text span or MeSH heading
            "negated": int,  # manual "--unset": hides this automatic value
            "created": str,
        },
        pk=("study_id", "facet", "value", "origin"),
        foreign_keys=[("study_id", "studies", "id")],
        defaults={"negated": 0},
    )
    db["tags"].create_index(["facet", "value"])


def ensure_fts(db: Database, columns: list[str] | None = None) -> None:
    """(Re)create the FTS5 index (on ``FTS_COLUMNS`` unless told) and its sync triggers,
    then rebuild it.

    Safe to call after any table change; it is how a future migration must restore
    the triggers that ``transform()`` drops.
    """
    db["studies"].enable_fts(
        columns or FTS_COLUMNS, fts_version="FTS5", tokenize="porter", create_triggers=True, replace=True
    )
    db["studies"].rebuild_fts()


def apply(db: Database) -> None:
    """Apply pending migrations; a no-op on an up-to-date database."""
    migrations.apply(db)


# --- feeds (harvest/feed_harvest.py) ---------------------------------------------------


@migrations()
def m101_feeds_entries(db: Database) -> None:
    # One row per entry a feed has shown: how a GUID or link seen again finds its study,
    # with the entry's dates as the feed wrote them (raw) and as parsed (UTC, or null).
    db["feed_entries"].create(
        {
            "id": int,
            "source": str,  # sources.name, e.g. "feed:jospt"
            "guid": str,  # the entry's id/guid as given (changes on some feeds)
            "link": str,  # normalized link: no scheme, www., tracking parameters
            "study_id": int,
            "title": str,
            "published_raw": str,
            "published": str,  # ISO 8601 UTC, null when unparseable or implausible
            "updated_raw": str,
            "updated": str,
            "first_seen": str,
            "last_seen": str,
            "times_seen": int,
        },
        pk="id",
        foreign_keys=[("source", "sources", "name"), ("study_id", "studies", "id")],
        defaults={"times_seen": 1},
    )
    db["feed_entries"].create_index(["source", "guid"])
    db["feed_entries"].create_index(["source", "link"])
    db["feed_entries"].create_index(["study_id"])


@migrations()
def m102_feeds_source_state(db: Database) -> None:
    sources = db["sources"]
    columns = sources.columns_dict
    for name, kind in (
        ("feed_kind", str),  # "pubmed-search" or "journal"
        ("fetch_url", str),  # where the feed now lives (a 301 moves it)
        ("fetch_url_for", str),  # the configured URL that fetch_url derives from
        ("feed_state", str),  # ok, failing, gone
        ("last_http_status", int),
    ):
        if name not in columns:
            sources.add_column(name, kind)
    if "not_found_count" not in columns:
        # consecutive 404/410 answers; at the configured count the feed is "gone"
        sources.add_column("not_found_count", int, not_null_default=0)
    if "warnings" not in db["runs"].columns_dict:
        db["runs"].add_column("warnings", str)  # e.g. a bozo feed read loosely


# --- imports (harvest/ingest.py) -------------------------------------------------------


@migrations()
def m003a_imported_files(db: Database) -> None:
    # NLM's update files never change once published: a file whose bytes were imported
    # completely before is skipped unless --force (the re-import of a 100 MB file is then
    # a checksum, not a parse).
    db["imported_files"].create(
        {"sha1": str, "name": str, "size": int, "run_id": int, "records": int, "imported": str},
        pk="sha1",
        foreign_keys=[("run_id", "runs", "id")],
    )


# --- tags (harvest/tagging.py) ---------------------------------------------------------

# The facets with one value per study; harvest.tagging.SINGLE_VALUED_FACETS says the same
# (a test keeps them in step).
_SINGLE_VALUED = "'design', 'population', 'sample_size', 'conclusion'"


@migrations()
def m201_tags_views(db: Database) -> None:
    _create_tag_views(db, live_only=False)


def _create_tag_views(db: Database, *, live_only: bool) -> None:
    """``study_tags_effective`` and ``study_tags_summary`` for m201 and m202, which differ
    only by ``live_only``: m202 leaves deleted studies (tombstones) out of the summary."""
    # What a study is tagged, after researchers' overrides, in SQL so that Datasette shows
    # what the export carries. A manual tag replaces every automatic value of a single-valued
    # facet; a manual "unset" (negated = 1) hides that automatic value; manual wins over an
    # automatic tag of the same value.
    db.create_view(
        "study_tags_effective",
        f"""
        SELECT t.study_id, s.pmid, t.facet, t.value, t.detail, t.origin, t.rule_id,
               t.ruleset_version, t.evidence, t.created
        FROM tags t JOIN studies s ON s.id = t.study_id
        WHERE t.negated = 0 AND (
          t.origin = 'manual' OR (
            NOT EXISTS (SELECT 1 FROM tags m WHERE m.study_id = t.study_id AND m.facet = t.facet
                        AND m.value = t.value AND m.origin = 'manual')
            AND NOT (t.facet IN ({_SINGLE_VALUED}) AND EXISTS (
                SELECT 1 FROM tags m WHERE m.study_id = t.study_id AND m.facet = t.facet
                AND m.origin = 'manual' AND m.negated = 0))))
        """,
        replace=True,
    )
    one = (
        "(SELECT e.value FROM study_tags_effective e WHERE e.study_id = s.id AND e.facet = '{f}' "
        "ORDER BY e.origin = 'manual' DESC, e.origin = 'nlm' DESC LIMIT 1) AS {f}"
    )
    many = (
        "(SELECT group_concat(DISTINCT e.value) FROM study_tags_effective e "
        "WHERE e.study_id = s.id AND e.facet = '{f}') AS {col}"
    )
    columns = ",\n".join(
        [one.format(f="design")]
        + [many.format(f=f, col=c) for f, c in (("intervention", "interventions"),
                                                 ("condition", "conditions"),
                                                 ("comparator", "comparators"))]
        + [one.format(f=f) for f in ("population", "sample_size", "conclusion")]
        + [many.format(f="flag", col="flags")]
    )  # fmt: skip
    db.create_view(
        "study_tags_summary",
        f"SELECT s.id AS study_id, s.pmid, s.title, s.year,\n{columns}\nFROM studies s"
        + ("\nWHERE s.deleted = 0" if live_only else ""),
        replace=True,
    )


# --- workbench (harvest/reading_lists.py, harvest/export.py, Datasette) ----------------


@migrations()
def m301_workbench_reading_lists(db: Database) -> None:
    # Items point at studies.id, which a revision never changes (store.save_studies updates
    # in place), so a list keeps its items and notes when its studies are revised.
    db["reading_lists"].create(
        {"id": int, "name": str, "description": str, "query": str, "created": str, "updated": str},
        pk="id",
        not_null={"name", "created"},
    )
    db["reading_lists"].create_index(["name"], unique=True)
    db["reading_list_items"].create(
        {"list_id": int, "study_id": int, "note": str, "added": str},
        pk=("list_id", "study_id"),
        foreign_keys=[("list_id", "reading_lists", "id"), ("study_id", "studies", "id")],
    )
    db["reading_list_items"].create_index(["study_id"])


@migrations()
def m302_workbench_studies_tagged(db: Database) -> None:
    # One row per live study with its effective tags as readable columns (JSON arrays for
    # the many-valued facets, so Datasette can facet on them) and links out.
    many = (
        "(SELECT json_group_array(value) FROM (SELECT DISTINCT e.value FROM study_tags_effective e"
        " WHERE e.study_id = s.id AND e.facet = '{f}' ORDER BY e.value)) AS {col}"
    )
    one = (
        "(SELECT e.value FROM study_tags_effective e WHERE e.study_id = s.id AND e.facet = '{f}'"
        " ORDER BY e.origin = 'manual' DESC, e.origin = 'nlm' DESC LIMIT 1)"
    )
    db.create_view(
        "studies_tagged",
        f"""
        SELECT s.id, s.pmid, s.title, s.year, s.pub_date, s.journal,
          {one.format(f="design")} AS design,
          {many.format(f="intervention", col="interventions")},
          {many.format(f="condition", col="conditions")},
          {many.format(f="comparator", col="comparators")},
          {one.format(f="population")} AS population,
          CAST({one.format(f="sample_size")} AS INTEGER) AS sample_size,
          {one.format(f="conclusion")} AS conclusion,
          {many.format(f="flag", col="flags")},
          (SELECT json_group_array(source) FROM (SELECT DISTINCT r.source FROM sightings g
             JOIN runs r ON r.id = g.run_id WHERE g.study_id = s.id ORDER BY r.source)) AS sources,
          (SELECT group_concat(a.value, '; ') FROM json_each(s.authors) a) AS authors,
          s.doi, s.pmcid, s.retracted,
          CASE WHEN s.pmid IS NOT NULL THEN 'https://pubmed.ncbi.nlm.nih.gov/' || s.pmid || '/' END
            AS pubmed_url,
          CASE WHEN s.doi IS NOT NULL THEN 'https://doi.org/' || s.doi END AS doi_url,
          CASE WHEN s.pmcid IS NOT NULL
            THEN 'https://www.ncbi.nlm.nih.gov/pmc/articles/' || s.pmcid || '/' END AS pmc_url,
          s.first_seen,
          (SELECT min(t.created) FROM tags t WHERE t.study_id = s.id) AS first_tagged,
          s.last_updated
        FROM studies s
        WHERE s.deleted = 0
        """,
        replace=True,
    )


# --- PubMed harvest state (harvest/pubmed.py) -------------------------------------------


@migrations()
def m401_pending_pmids(db: Database) -> None:
    # PMIDs a search listed but efetch did not return even when asked twice (a short reply:
    # field notes 3.4). The cursor moves on, so they are kept here and asked for again at
    # the start of the topic's next run until PubMed returns them.
    db["pending_pmids"].create(
        {"source": str, "pmid": str, "first_missed": str, "last_tried": str, "attempts": int},
        pk=("source", "pmid"),
        foreign_keys=[("source", "sources", "name")],
    )



# --- tags: tombstones out of the tag views (harvest/tagging.py) ---------------------------


@migrations()
def m202_tags_views_live_studies(db: Database) -> None:
    # study_tags_summary without deleted studies (tombstones), like studies_tagged: a
    # tombstone must not count in Datasette's per-study tag facets. study_tags_effective
    # keeps them: it is what a study is tagged, and `export --include-deleted` reads it.
    _create_tag_views(db, live_only=True)


# --- studies: where in the journal (harvest/pubmed_xml.py, medline.py, feed_parse.py) --------


@migrations()
def m004_studies_volume_issue_pages(db: Database) -> None:
    # Volume, issue and pages as the source writes them (pages in NLM's MedlinePgn form,
    # "101-10"), for the reference-manager exports. Plain ADD COLUMNs: no transform(), so the
    # FTS triggers stay. Existing rows fill them when their record is next saved (store.py).
    columns = db["studies"].columns_dict
    for name in ("volume", "issue", "pages"):
        if name not in columns:
            db["studies"].add_column(name, str)


@migrations()
def m005_studies_journal_abbrev(db: Database) -> None:
    # NLM's journal title abbreviation (MedlineTA), for Vancouver references and the RIS JO
    # field; filled like m004's columns when a record is next saved.
    if "journal_abbrev" not in db["studies"].columns_dict:
        db["studies"].add_column("journal_abbrev", str)


# --- tags: renamed vocabulary values (harvest/rules/ruleset.toml) ---------------------------


@migrations()
def m203_tags_musculoskeletal_pain(db: Database) -> None:
    # Rule set 2026.4 renamed the condition chronic_musculoskeletal_pain (its rules never
    # required chronicity) to musculoskeletal_pain. Automatic tags follow at the next re-tag;
    # a researcher's manual tag must not be stranded under a value no command accepts.
    old, new = "chronic_musculoskeletal_pain", "musculoskeletal_pain"
    db.execute("UPDATE OR IGNORE tags SET value = ? WHERE facet = 'condition' AND value = ?", [new, old])
    db.execute("DELETE FROM tags WHERE facet = 'condition' AND value = ?", [old])  # already had both


# --- full-text search: authors (harvest/export.py fts_query, Datasette's search box) --------


@migrations()
def m006_fts_authors(db: Database) -> None:
    # Researchers search by author ("Gunn"). The index is rebuilt with the authors column
    # (the JSON list's names tokenize as words); ensure_fts recreates its triggers too.
    ensure_fts(db)


# --- studies: what kind of work, and a book's publisher (harvest/pubmed_xml.py, medline.py) ---


@migrations()
def m007_studies_work_type_publisher(db: Database) -> None:
    # NCBI Bookshelf records (StatPearls, GeneReviews chapters; whole books and reports): what
    # kind of work ("chapter", "book"; NULL for a journal article), and the book's publisher
    # and its place, so that exports write @incollection/CHAP and @book/BOOK, not articles.
    # Plain ADD COLUMNs as in m004; filled when a book record is next saved (store.py).
    columns = db["studies"].columns_dict
    for name in ("work_type", "publisher", "publisher_place"):
        if name not in columns:
            db["studies"].add_column(name, str)

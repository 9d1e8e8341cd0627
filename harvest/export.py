"""Exports of the evidence base: one module behind ``harvest export`` and Datasette's renderers.

:func:`select_study_ids` picks studies (tag filters, a date, an FTS query, a reading list,
read-only SQL), :func:`load_records` turns ids into records carrying their effective tags,
and :func:`render` writes them as JSONL, CSV, RIS (rispy), BibTeX (bibtexparser 2),
CSL-JSON, a formatted bibliography (citeproc-py with the bundled Vancouver and APA styles,
as Markdown or HTML) or an Atom alert feed with stable entry ids. Our tags travel in each
format's keyword and note fields so they survive a trip through a reference manager.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import html as html_lib
import io
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from sqlite_utils import Database

from harvest.schema import FTS_COLUMNS

_JSON_COLUMNS = ("authors", "languages", "publication_types", "mesh", "keywords", "corrections")

_SOURCES_SQL = """
SELECT s.study_id, group_concat(DISTINCT r.source) AS sources
FROM sightings s JOIN runs r ON r.id = s.run_id
GROUP BY s.study_id
"""

# Tag facets carried as keywords, in this order; single-valued ones go in the note too.
TAG_FACETS = ("design", "interventions", "conditions", "comparators", "population", "flags")
KEYWORD_PREFIX = {
    "design": "design",
    "interventions": "intervention",
    "conditions": "condition",
    "comparators": "comparator",
    "population": "population",
    "flags": "flag",
}
STYLES = ("vancouver", "apa")
# Atom entry ids: stable across runs and revisions, so a feed reader shows a study once.
ATOM_ID_PREFIX = "tag:doesitwork,2026:"


class ExportError(Exception):
    """A filter or query that cannot be run (an FTS syntax error, a writing --sql, ...)."""


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str


FORMATS: dict[str, Format] = {
    "jsonl": Format("jsonl", "jsonl", "application/x-ndjson; charset=utf-8"),
    "csv": Format("csv", "csv", "text/csv; charset=utf-8"),
    "ris": Format("ris", "ris", "application/x-research-info-systems; charset=utf-8"),
    "bibtex": Format("bibtex", "bib", "application/x-bibtex; charset=utf-8"),
    "csljson": Format("csljson", "csljson", "application/vnd.citationstyles.csl+json; charset=utf-8"),
    "markdown": Format("markdown", "md", "text/markdown; charset=utf-8"),
    "html": Format("html", "html", "text/html; charset=utf-8"),
    "atom": Format("atom", "atom", "application/atom+xml; charset=utf-8"),
}
# Other names a format goes by: the help and README call it CSL-JSON.
FORMAT_ALIASES = {"csl-json": "csljson"}


# --- every stored study as a dict (for scripts and notebooks; the CLI exports by id) -------


def iter_studies(db: Database, *, include_deleted: bool = True) -> Iterator[dict[str, Any]]:
    """One dict per study, lists decoded, with the names of the sources that saw it."""
    sources = {r["study_id"]: r["sources"].split(",") for r in db.query(_SOURCES_SQL)}
    where = "" if include_deleted else "WHERE deleted = 0"
    for row in db.query(f"SELECT * FROM studies {where} ORDER BY id"):
        yield _decode(row, sources.get(row["id"], []))


# Characters XML 1.0 forbids (C0 controls but tab and newlines, lone surrogates, U+FFFE/F):
# a MEDLINE file or a feed can carry them, and one would make an Atom feed unreadable and
# stop LaTeX on a BibTeX file.
_INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        return _INVALID_CHARS.sub("", value)
    if isinstance(value, list):
        return [_clean_text(v) for v in value]
    return value


def _decode(row: dict[str, Any], sources: Iterable[str]) -> dict[str, Any]:
    out = {key: _clean_text(value) for key, value in row.items()}
    for col in _JSON_COLUMNS:
        out[col] = _clean_text(json.loads(out[col])) if out.get(col) else []
    out["retracted"] = bool(out["retracted"])
    out["deleted"] = bool(out["deleted"])
    out["sources"] = sorted(sources)
    for col in ("content_hash", "mesh_text", "keywords_text", "missing_count"):
        out.pop(col, None)
    return out


def to_jsonl(studies: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line; tag summaries (design, interventions, conditions,
    comparators, population, sample_size, conclusion, flags) are top-level fields."""
    for study in studies:
        flat = {k: v for k, v in study.items() if k != "tags"}
        flat.update(study.get("tags") or {})
        yield json.dumps(flat, ensure_ascii=False) + "\n"


# --- choosing studies --------------------------------------------------------------------


# Columns of ``studies_fts`` (harvest.schema.FTS_COLUMNS) a search may name as a filter.
_FTS_COLUMNS = frozenset(FTS_COLUMNS)
# FTS5 reads letters, digits, "_" and any non-ASCII character as part of a word; outside
# double quotes anything else is syntax ("dry-needling" reads as "dry", then a filter on a
# column "needling"; "Gunn's" is a syntax error).
_FTS_WORD = r"[A-Za-z0-9_\x1a\u0080-\U0010ffff]+"
_FTS_TOKENS = re.compile(r'"(?:[^"]|"")*"?|[()]|-?\{[^{}"()]*\}|[^\s"()]+')
_FTS_PHRASE = re.compile(r'"(?:[^"]|"")*"')
_FTS_COLUMN_FILTER = re.compile(rf"(-?(?:{_FTS_WORD}|\{{[^{{}}]*\}}))\s*:(.*)", re.S)


def fts_query(text: str | None) -> str:
    """A researcher's search as an FTS5 query: plain words, hyphenated terms and
    apostrophes work as typed, FTS5 syntax still works.

    A search FTS5 accepts as it is (checked on an empty in-memory index with the same
    columns) is used unchanged, so every form of its syntax means what FTS5 says. Otherwise
    it is rewritten: a term holding characters FTS5 reads as syntax is quoted as a phrase
    (``dry-needling`` becomes ``"dry-needling"``, which the tokenizer splits into the phrase
    "dry needling", the same tokens the index holds). Kept as they are: "quoted phrases" (an
    unclosed quote is closed; curly quotes “…” and guillemets «…» are read as straight ones
    when the search has no straight ones), AND, OR, NOT, NEAR(a b, N), prefix*, ^initial,
    ``+``, parentheses (unbalanced ones are dropped or closed) and column filters naming a ``studies_fts`` column
    (``title:needling``, ``-{abstract mesh_text}:knee``). A term next to a parenthesised group
    gets the AND that FTS5 requires there. A possessive outside quotes (``Gunn's``) searches
    its bare word (``Gunn``). ``-word`` or ``-"phrase"`` excludes, as in web search, also
    first (``-knee needling`` is ``needling NOT knee``); exclusions alone (``-knee``) become
    ``NOT knee``, which FTS5 rejects (:func:`search_error` explains it). An empty search
    becomes ``""``, which matches nothing (callers treat a blank search as no search); a
    misplaced operator (``pain AND``) is left for FTS5 to report.
    """
    return _fts_query("" if text is None else str(text))


@functools.lru_cache(maxsize=512)  # Datasette calls it for every facet of a search page
def _fts_query(text: str) -> str:
    # Curly quotes count as straight ones unless the search has straight ones: then they are
    # characters inside a phrase ("a “b” c") or beside one, and stay as typed.
    text = text.translate(_SEARCH_CHARS if '"' not in text else _NUL_ONLY)
    text = _bare_possessives(text)
    if text.strip() and _fts5_accepts(text):
        return text
    return _fts_rewrite(text)


# Curly double quotes and French guillemets (what word processors and phones type) delimit
# a phrase as " does; FTS5 would read them as part of a word. NUL ends a C string, so it is
# a space here.
_SEARCH_CHARS = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"',
                               "\u00bb": '"', "\x00": " "})  # fmt: skip
_NUL_ONLY = str.maketrans({"\x00": " "})

# FTS5 takes "Gunn’s" (curly apostrophe) as one bareword, the phrase "gunn s", and "Gunn's" as
# a syntax error: outside double quotes both become the bare word before anything else.
_POSSESSIVE = re.compile(r"(\w)['’][sS]\b")
_QUOTED = re.compile(r'("(?:[^"]|"")*"?)')


def _bare_possessives(text: str) -> str:
    parts = _QUOTED.split(text)  # odd items are quoted phrases, kept exactly
    return "".join(p if i % 2 else _POSSESSIVE.sub(r"\1", p) for i, p in enumerate(parts))


# The same columns and tokenizer as studies_fts: FTS5 checks column names when it parses.
_FTS_PROBE = f"CREATE VIRTUAL TABLE t USING fts5({', '.join(sorted(_FTS_COLUMNS))}, tokenize='porter')"


def _fts5_accepts(text: str) -> bool:
    """Whether FTS5 parses ``text`` (syntax and column names), without touching the data."""
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        probe.execute(_FTS_PROBE)
        try:
            probe.execute("SELECT 1 FROM t WHERE t MATCH ?", (text,)).fetchall()
        except (sqlite3.Error, UnicodeEncodeError):
            return False
    return True


def _fts_rewrite(text: str) -> str:
    """:func:`fts_query` for a search FTS5 rejects as typed."""
    tokens = _FTS_TOKENS.findall(text)
    excluded, skip = _leading_exclusions(tokens)
    tokens = tokens[skip:]
    if excluded and tokens and tokens[0] in ("AND", "OR"):
        tokens = tokens[1:]  # "-knee AND needling": the operator joined the exclusion
    out: list[str] = []
    last = ""  # "term" (a term, phrase or ")"), "prefix" (a column filter) or "" (operator)
    depth = 0
    near_depth = -1  # the depth inside an open NEAR( ... ) group
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if _fts_noise(tok, nxt):
            continue  # punctuation alone ("," "." "-"): as a phrase it would match nothing
        if tok == "(":
            if last == "term":
                out.append("AND")
            if out and out[-1] == "NEAR":
                near_depth = depth + 1
            depth += 1
            out.append(tok)
            last = ""
            continue
        if tok == ")":
            if depth:
                near_depth = -1 if near_depth == depth else near_depth
                depth -= 1
                out.append(tok)
                last = "term"
            continue
        if (last == "term" and out[-1] == ")" and tok not in ("AND", "OR", "NOT", "+")
                and not (tok.startswith("-") and len(tok) > 1)):  # "(x) -knee" is x NOT knee
            out.append("AND")
        if tok in ("AND", "OR", "NOT", "+") or (tok == "NEAR" and nxt == "("):
            out.append(tok)
            last = ""
        elif tok.startswith('"'):
            out.append(tok if _FTS_PHRASE.fullmatch(tok) else tok + '"')
            last = "term"
        elif tok == "-" and _fts_columns_ok(nxt):
            out.append(tok)
            last = "prefix"
        elif tok.startswith(("{", "-{")) and nxt.startswith(":") and _fts_columns_ok(tok + ":"):
            out.append(tok)
            last = "prefix"
        elif tok.startswith(":") and out and out[-1].endswith("}") and last == "prefix":
            out.append(":" + (_fts_term(tok[1:]) if tok[1:] else ""))
            last = "term" if tok[1:] else "prefix"
        elif (m := _FTS_COLUMN_FILTER.fullmatch(tok)) and _fts_columns_ok(tok):
            out.append(m[1] + ":" + (_fts_term(m[2]) if m[2] else ""))
            last = "term" if m[2] else "prefix"
        elif depth == near_depth and "," in tok:
            # NEAR(a b, 10): the distance follows a comma
            parts = [p for p in re.split(r"(,)", tok) if p]
            out += [p if p == "," or p.isdigit() else _fts_term(p) for p in parts]
            last = "term"
        elif tok == "-" and last == "term" and nxt.startswith('"'):  # needling -"knee pain"
            out.append("NOT")
            last = ""
        elif tok.startswith("-") and last == "term":  # "needling -shoulder", as in web search
            out += ["NOT", _fts_term(tok[1:])]
        else:
            out.append(_fts_term(tok))
            last = "term"
    out += [")"] * depth
    return _with_exclusions(out, excluded)


def _leading_exclusions(tokens: Sequence[str]) -> tuple[list[str], int]:
    """The ``-word`` and ``-"phrase"`` a search starts with ("-knee needling"): web-search
    exclusions, not words to find (a column filter, ``-title:knee``, is not one). Returns
    them as FTS5 terms, and how many tokens they took."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok, nxt = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "-" and nxt.startswith('"'):
            out.append(nxt if _FTS_PHRASE.fullmatch(nxt) else nxt + '"')
            i += 2
        elif (tok[:1] == "-" and re.search(r"\w", tok) and not tok.startswith("-{")
              and not _fts_columns_ok(tok)):  # fmt: skip
            out.append(_fts_term(tok[1:]))
            i += 1
        else:
            break
    return out, i


def _with_exclusions(out: list[str], excluded: list[str]) -> str:
    """The rewritten search followed by NOT each leading exclusion: "-knee needling" is
    "needling NOT knee". Exclusions alone stay "NOT knee", which FTS5 rejects: it cannot
    search for everything but a word (:func:`search_error` says so)."""
    if excluded and out and _top_level_or(out):
        out = ["(", *out, ")"]  # NOT binds tighter than OR: exclude from the whole search
    out = out + [w for term in excluded for w in ("NOT", term)]
    return " ".join(out) or '""'


def _top_level_or(tokens: Sequence[str]) -> bool:
    depth = 0
    for tok in tokens:
        depth += (tok == "(") - (tok == ")")
        if tok == "OR" and depth == 0:
            return True
    return False


def _fts_noise(tok: str, nxt: str) -> bool:
    """A token with no word in it that is not syntax: dropped from a rewritten search."""
    if tok in ("(", ")", "+") or tok.startswith(('"', "{", "-{", ":")) or re.search(r"\w", tok):
        return False
    return not (tok == "-" and (_fts_columns_ok(nxt) or nxt.startswith('"')))


_FTS_OPERATORS = ("AND", "OR", "NOT")


def search_error(search: str, exc: Exception | str) -> str:
    """Why FTS5 rejected a search, in plain words where that is cheap to tell, else in
    FTS5's own (which may name a character the researcher did not type)."""
    if only_excludes(search):
        return f"a search needs at least one word to find; {search!r} only excludes"
    problem = _fts_problem(fts_query(search))
    return f"search {search!r} is not a valid full-text query: {problem or exc}"


def only_excludes(search: str) -> bool:
    """True for a web-style search that only excludes ("-knee", "-knee -shoulder"); a
    typed "NOT knee" is a misplaced operator, explained as such."""
    if not search.lstrip().startswith("-"):
        return False
    tokens = _FTS_TOKENS.findall(fts_query(search))
    return bool(tokens) and len(tokens) % 2 == 0 and all(t == "NOT" for t in tokens[::2])


def _fts_problem(query: str) -> str | None:
    """An operator or bracket with nothing to search for beside it, as FTS5 will reject it."""
    tokens = _FTS_TOKENS.findall(query)
    prev = ""
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "(" and nxt == ")":
            return "the brackets ( ) hold nothing to search for"
        if tok in _FTS_OPERATORS:
            if prev in _FTS_OPERATORS:
                return f"{prev} {tok}: two operators with nothing between them"
            if prev in ("", "("):
                return f"{tok} needs something to search for before it"
            if nxt in ("", ")"):
                return f"{tok} needs something to search for after it"
        elif tok.endswith(":") and nxt in ("", ")", *_FTS_OPERATORS):
            return f"the column filter {tok} has nothing to search for after it"
        prev = tok
    return None


def _fts_columns_ok(filter_text: str) -> bool:
    """True if a column filter (``title:``, ``-{title abstract}:``) names only real columns."""
    m = _FTS_COLUMN_FILTER.fullmatch(filter_text)
    if not m:
        return False
    names = m[1].lstrip("-").strip("{}").split()
    return bool(names) and all(n.lower() in _FTS_COLUMNS for n in names)


def _fts_term(term: str) -> str:
    """A word as it is (with its prefix ``*`` or initial ``^``), or else quoted as a phrase.
    (Possessives were made bare words before: :func:`_bare_possessives`.)"""
    caret, body, star = re.fullmatch(r"(\^?)(.*?)(\*?)", term, re.S).groups()
    if re.fullmatch(_FTS_WORD, body):
        return term
    if not body:  # "*" or "^" alone: a phrase without words, which FTS5 ignores
        return f'"{term}"'
    return f'{caret}"{body}"' + (" *" if star else "")


def select_study_ids(
    db: Database,
    *,
    interventions: Sequence[str] = (),
    conditions: Sequence[str] = (),
    designs: Sequence[str] = (),
    since: str | None = None,
    search: str | None = None,
    list_name: str | None = None,
    sql: str | None = None,
    include_deleted: bool = False,
) -> list[int]:
    """Ids of the studies matching every given filter, newest first (a list keeps its order).

    Several values of one tag filter are alternatives (OR); different filters combine with
    AND. ``since`` compares with the date a study was first stored (ISO date or timestamp).
    ``search`` is words as typed or an FTS5 query (AND/OR/NEAR, "phrases"; see
    :func:`fts_query`). ``sql`` runs read-only and must return a ``study_id``, ``id`` or
    ``pmid`` column.
    """
    where: list[str] = [] if include_deleted else ["s.deleted = 0"]
    args: list[Any] = []
    for facet, values in (("intervention", interventions), ("condition", conditions),
                          ("design", designs)):  # fmt: skip
        if values:
            marks = ",".join("?" * len(values))
            where.append(
                "s.id IN (SELECT study_id FROM study_tags_effective "
                f"WHERE facet = ? AND value IN ({marks}))"
            )
            args += [facet, *values]
    if since:
        where.append("s.first_seen >= ?")
        args.append(parse_since(since))
    if search and search.strip():  # a blank search is no search, as in Datasette
        if only_excludes(search):  # FTS5 cannot search for "everything but"
            raise ExportError(search_error(search, ""))
        where.append("s.id IN (SELECT rowid FROM studies_fts WHERE studies_fts MATCH ?)")
        args.append(fts_query(search))
    order = "s.year DESC, s.pub_date DESC, s.id DESC"
    join = ""
    if list_name is not None:
        from harvest.reading_lists import get_list  # a list lives in the same database

        lst = get_list(db, list_name)
        join = "JOIN reading_list_items i ON i.study_id = s.id AND i.list_id = ?"
        args.insert(0, lst["id"])
        order = "i.added, i.rowid"  # rowid: the order items were added within one second
    if sql:
        where.append(f"s.id IN ({','.join('?' * len(ids))})" if (ids := sql_study_ids(db, sql)) else "0")
        args += ids
    clause = "WHERE " + " AND ".join(where) if where else ""
    query = f"SELECT s.id FROM studies s {join} {clause} ORDER BY {order}"
    try:
        return [r[0] for r in db.execute(query, args).fetchall()]
    except (sqlite3.OperationalError, UnicodeEncodeError) as exc:  # encode: bytes not UTF-8
        if search:
            raise ExportError(search_error(search, exc)) from exc
        raise


def parse_since(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()  # a date alone compares as a prefix
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ExportError(f"--since {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    # first_seen is stored as UTC "...Z" text, so compare like with like (naive means UTC)
    moment = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sql_study_ids(db: Database, sql: str) -> list[int]:
    """Run a researcher's SELECT with the connection set query-only; return its study ids."""
    if not re.match(r"\s*(select|with)\b", sql, re.I):
        raise ExportError("--sql must be a SELECT (or WITH ... SELECT) statement")
    conn = db.conn
    if conn.in_transaction:
        raise ExportError("--sql cannot run inside an open transaction")
    conn.execute("PRAGMA query_only = ON")
    try:
        cur = conn.execute(sql)
        names = [d[0].lower() for d in cur.description or ()]
        rows = cur.fetchall()
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise ExportError(f"--sql failed: {exc}") from exc
    finally:
        conn.execute("PRAGMA query_only = OFF")
    if "study_id" in names or "id" in names:
        name = "study_id" if "study_id" in names else "id"
        col = names.index(name)
        return [_sql_study_id(name, r[col]) for r in rows if r[col] is not None]
    if "pmid" in names:
        col = names.index("pmid")
        return ids_for_pmids(db, [str(r[col]) for r in rows if r[col] is not None])
    raise ExportError("--sql must return a study_id, id or pmid column")


def _sql_study_id(column: str, value: Any) -> int:
    """A --sql row's study id; anything but an integer is the query's mistake, not ours."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    shown = repr(value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "...")
    raise ExportError(f"--sql: column {column} must hold study ids (integers), not {shown}")


def ids_for_pmids(db: Database, pmids: Sequence[str]) -> list[int]:
    """Study ids for PMIDs, in the given order (unknown PMIDs are left out)."""
    found: dict[str, int] = {}
    for i in range(0, len(pmids), 500):
        chunk = list(pmids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        for sid, pmid in db.execute(f"SELECT id, pmid FROM studies WHERE pmid IN ({marks})", chunk):
            found[pmid] = sid
    return [found[p] for p in pmids if p in found]


# --- records -----------------------------------------------------------------------------


def load_records(db: Database, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Full records for these study ids, in this order: the study, its sources and tags."""
    from harvest.tagging import study_summaries

    ids = list(dict.fromkeys(int(i) for i in ids))
    rows: dict[int, dict[str, Any]] = {}
    sources: dict[int, list[str]] = {}
    tagged: dict[int, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for r in db.query(f"SELECT * FROM studies WHERE id IN ({marks})", chunk):
            rows[r["id"]] = r
        for r in db.query(
            f"SELECT DISTINCT g.study_id, r.source FROM sightings g JOIN runs r ON r.id = g.run_id "
            f"WHERE g.study_id IN ({marks})",
            chunk,
        ):
            sources.setdefault(r["study_id"], []).append(r["source"])
        for r in db.query(
            f"SELECT study_id, min(created) AS first_tagged FROM tags WHERE study_id IN ({marks}) "
            "GROUP BY study_id",
            chunk,
        ):
            tagged[r["study_id"]] = r["first_tagged"]
    summaries = study_summaries(db, list(rows)) if rows else {}
    out = []
    for sid in ids:
        if sid in rows:
            rec = _decode(rows[sid], sources.get(sid, []))
            rec["tags"] = summaries.get(sid, {})
            rec["first_tagged"] = tagged.get(sid)
            out.append(rec)
    return out


def export_records(db: Database, **filters: Any) -> list[dict[str, Any]]:
    """:func:`select_study_ids` then :func:`load_records`."""
    return load_records(db, select_study_ids(db, **filters))


def tag_keywords(rec: dict[str, Any]) -> list[str]:
    """Our tags as ``facet: value`` keywords, e.g. ``intervention: dry_needling``."""
    tags = rec.get("tags") or {}
    out = []
    for key in TAG_FACETS:
        value = tags.get(key)
        for v in value if isinstance(value, list) else [value] if value else []:
            out.append(f"{KEYWORD_PREFIX[key]}: {v}")
    return out


def tag_note(rec: dict[str, Any]) -> str:
    """Design, sample size and conclusion in one human-readable line (RIS N1, BibTeX note)."""
    tags = rec.get("tags") or {}
    parts = [f"Design: {tags.get('design') or 'unknown'}"]
    if tags.get("sample_size") is not None:
        parts.append(f"Sample size: {tags['sample_size']}")
    if tags.get("conclusion"):
        parts.append(f"Conclusion: {tags['conclusion']}")
    if tags.get("interventions"):
        parts.append("Interventions: " + ", ".join(tags["interventions"]))
    if tags.get("conditions"):
        parts.append("Conditions: " + ", ".join(tags["conditions"]))
    if rec.get("retracted"):
        parts.append("RETRACTED")
    return "doesitwork: " + "; ".join(parts)


def _urls(rec: dict[str, Any]) -> list[str]:
    urls = []
    if rec.get("pmid"):
        urls.append(f"https://pubmed.ncbi.nlm.nih.gov/{rec['pmid']}/")
    if rec.get("doi"):
        urls.append(f"https://doi.org/{rec['doi']}")
    if rec.get("pmcid"):
        urls.append(f"https://www.ncbi.nlm.nih.gov/pmc/articles/{rec['pmcid']}/")
    if rec.get("url") and rec["url"] not in urls:
        urls.append(rec["url"])
    return urls


# Words that mark a collective author ("Writing Committee for the UK"), not a family name.
_NOT_A_FAMILY = re.compile(
    r"\b(?:for|the|of|and|on|in)\b|\b(?i:group|committee|consortium|collaborat\w*|network"
    r"|investigators|society|association|team|study)\b"
)
# ... and, after "Name, ", words no given name holds ("NICE, Guideline Development Team",
# "Pfizer, Inc"). Not tested on PubMed's "Last Initials": "Gómez-Hospital JA", "Corp N".
_NOT_A_GIVEN = re.compile(
    _NOT_A_FAMILY.pattern + r"|\b(?i:inc|ltd|llc|corp|institute|university|hospital"
    r"|foundation|council|panel|force|organi[sz]ation|agency|department|development)\b"
)


def _is_family(text: str) -> bool:
    # up to 4 words keeps "de la Cruz Romero"; a group name ending in "UK" or "GI" fails
    return len(text.split()) <= 4 and not _NOT_A_FAMILY.search(text)


def _split_author(name: str) -> dict[str, str]:
    """PubMed's "Last Initials", or a feed's "Family, Given", into CSL's family/given; a
    collective name (or any other form) stays literal."""
    parts = name.rsplit(" ", 1)
    if (len(parts) == 2 and parts[1].isalpha() and parts[1].isupper() and len(parts[1]) <= 4
            and _is_family(parts[0])):  # fmt: skip
        # "SR" -> "S. R." so that CSL styles initialize both (Vancouver prints "SR")
        return {"family": parts[0], "given": " ".join(f"{c}." for c in parts[1])}
    family, comma, given = name.partition(", ")
    if comma and _is_family(family) and _GIVEN.fullmatch(given) and not _NOT_A_GIVEN.search(given):
        return {"family": family, "given": given}
    return {"literal": name}


# A feed's given names after "Family, ": "John", "Mary Ann", "J.-P.", "José M." (no digits,
# no further comma: "Writing Group, for the Trial" is not a person).
_GIVEN = re.compile(r"[^\W\d_][\w.'\-]*(?: [^\W\d_][\w.'\-]*){0,3}")


def _date_parts(rec: dict[str, Any]) -> list[int]:
    m = re.match(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", rec.get("pub_date") or "")
    if m:
        return [int(g) for g in m.groups() if g]
    return [rec["year"]] if rec.get("year") else []


# A simple page range, each end an optional letter prefix and digits: "101-10", "S61-S68".
# At most 9 digits a side: a longer "page" is not a page range (and int() of it is slow).
_PAGE_RANGE = re.compile(r"([A-Za-z]*)(\d{1,9})-([A-Za-z]*)(\d{1,9})")
_NLM_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def page_range(pages: str | None) -> tuple[str | None, str | None]:
    """(first, last) page of a stored ``pages`` value, the last page written out in full.

    NLM abbreviates the last page ("101-10" is 101 to 110, "S61-8" is S61 to S68); reference
    managers want both ends in full. A single page or article number ("e0123") has no last
    page; a value that is not one simple range ("1-10; discussion 11-2", "53-62.e3") comes
    back whole as the first, so that nothing is lost.
    """
    text = (pages or "").strip()
    if not text:
        return None, None
    m = _PAGE_RANGE.fullmatch(text)
    if m is None:
        return text, None
    prefix, first, last_prefix, last = m.groups()
    if last_prefix and last_prefix != prefix:
        return text, None
    if len(last) < len(first):
        last = first[: len(first) - len(last)] + last
    if int(last) < int(first):
        return text, None
    return prefix + first, prefix + last


def full_pages(pages: str | None, dash: str = "-") -> str | None:
    """``pages`` with an abbreviated range written out ("101-10" -> "101-110")."""
    first, last = page_range(pages)
    return f"{first}{dash}{last}" if last else first


def nlm_date(rec: dict[str, Any]) -> str | None:
    """The publication date as NLM (and Vancouver) write it: "2018 Sep 14", "2018 Mar", "2018"."""
    parts = _date_parts(rec)
    if not parts:
        return None
    out = [str(parts[0])]
    if len(parts) > 1 and 1 <= parts[1] <= 12:
        out.append(_NLM_MONTHS[parts[1] - 1])
        if len(parts) > 2:
            out.append(str(parts[2]))
    return " ".join(out)


def nlm_location(rec: dict[str, Any]) -> str:
    """What follows the date in a Vancouver/NLM reference: ";12(3):101-10", ";12:e0123",
    ";(3):101-10", ":101-10" (pages only), or "" when the record has none of them."""
    volume, issue, pages = rec.get("volume"), rec.get("issue"), rec.get("pages")
    where = (volume or "") + (f"({issue})" if issue else "")
    return (f";{where}" if where else "") + (f":{pages}" if pages else "")


def citation_key(rec: dict[str, Any]) -> str:
    return f"pmid{rec['pmid']}" if rec.get("pmid") else f"study{rec['id']}"


# --- formats -----------------------------------------------------------------------------


_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    # spreadsheets run a text cell starting with = + - @ TAB CR as a formula (OWASP CSV injection)
    return "'" + value if isinstance(value, str) and value.startswith(_CSV_FORMULA_START) else value


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    """One row per study with the tag columns a spreadsheet user filters on."""
    buf = io.StringIO()
    cols = ["pmid", "doi", "pmcid", "title", "authors", "journal", "journal_abbrev", "volume",
            "issue", "pages", "work_type", "publisher", "publisher_place",
            "year", "pub_date", "design",
            "interventions", "conditions", "comparators", "population", "sample_size",
            "conclusion", "flags", "retracted", "first_seen", "url"]  # fmt: skip
    w = csv.DictWriter(buf, cols, lineterminator="\n")
    w.writeheader()
    for rec in records:
        tags = rec.get("tags") or {}
        row = {c: rec.get(c) for c in cols}
        row["authors"] = "; ".join(rec.get("authors") or [])
        row["url"] = (_urls(rec) or [None])[0]
        for c in ("design", "population", "sample_size", "conclusion"):
            row[c] = tags.get(c)
        for c in ("interventions", "conditions", "comparators", "flags"):
            row[c] = "; ".join(tags.get(c) or [])
        row["retracted"] = int(bool(rec.get("retracted")))
        w.writerow({c: _csv_cell(v) for c, v in row.items()})
    return buf.getvalue()


# What kind of work (the stored work_type) → each format's type; None is a journal article.
_RIS_TYPES = {None: "JOUR", "chapter": "CHAP", "book": "BOOK"}
_CSL_TYPES = {None: "article-journal", "chapter": "chapter", "book": "book"}
_BIB_TYPES: dict[str | None, str] = {"chapter": "incollection", "book": "book"}


def _work_type(rec: dict[str, Any]) -> str | None:
    """"chapter" or "book" for an NCBI Bookshelf record, None for a journal article (or a
    value this version does not know, which is exported as before)."""
    kind = rec.get("work_type")
    return kind if kind in ("chapter", "book") else None


def to_ris_entries(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for rec in records:
        kind = _work_type(rec)
        e: dict[str, Any] = {
            "type_of_reference": _RIS_TYPES[kind],
            "id": citation_key(rec),
            "title": rec["title"],
            "authors": [_ris_name(a) for a in rec.get("authors") or []],
            "keywords": tag_keywords(rec) + list(rec.get("keywords") or []),
            "notes": [_one_line(tag_note(rec))],
        }
        # T2 is the journal's title (Zotero's publicationTitle), JO its standard abbreviation;
        # in a CHAP record T2 is the book's title (Zotero's bookTitle)
        if rec.get("journal"):
            e["secondary_title"] = rec["journal"]
        if rec.get("journal_abbrev"):
            e["journal_name"] = rec["journal_abbrev"]
        if kind and rec.get("publisher"):
            e["publisher"] = rec["publisher"]  # PB
        if kind and rec.get("publisher_place"):
            e["place_published"] = rec["publisher_place"]  # CY
        if rec.get("volume"):
            e["volume"] = rec["volume"]
        if rec.get("issue"):
            e["number"] = rec["issue"]
        first_page, last_page = page_range(rec.get("pages"))
        if first_page:
            e["start_page"] = first_page
        if last_page:
            e["end_page"] = last_page
        if rec.get("year"):
            e["year"] = str(rec["year"])
        if rec.get("pub_date"):
            e["date"] = rec["pub_date"].replace("-", "/")
        if rec.get("abstract"):
            e["abstract"] = _one_line(rec["abstract"])
        if rec.get("doi"):
            e["doi"] = rec["doi"]
        if rec.get("pmid"):
            e["accession_number"] = f"PMID:{rec['pmid']}"
        if urls := _urls(rec):
            e["urls"] = urls
        if rec.get("languages"):
            e["language"] = rec["languages"][0]
        entries.append(e)
    return entries


def _ris_name(author: str) -> str:
    """"Family, Given" as RIS asks: Zotero files a name without a comma as an organisation."""
    a = _split_author(author)
    return f"{a['family']}, {a['given']}" if "family" in a else a["literal"]


def _one_line(text: str) -> str:
    """Lines joined with a space: a line inside a field that looks like "ER  - " ends a record."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def to_ris(records: Iterable[dict[str, Any]]) -> str:
    import rispy

    class _Writer(rispy.RisWriter):
        # rispy numbers each reference ("1."); EndNote and Zotero expect TY first.
        def set_header(self, count: int) -> str:
            return ""

    return rispy.dumps(to_ris_entries(records), implementation=_Writer)


_BIB_SPECIAL = re.compile(r"([\\{}%&$#_~^])")
_BIB_REPL = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# BibTeX counts every brace, escaped or not, so a field with an unbalanced one ("scores
# {0-10") would swallow the rest of the file: there, braces are written as commands. \{ \}
# elsewhere, since more readers (LaTeX decoders, Zotero) know them.
_BIB_BRACES = {"{": r"\textbraceleft{}", "}": r"\textbraceright{}"}


def bibtex_escape(text: str, *, balanced: bool | None = None) -> str:
    """Escape LaTeX's special characters; non-ASCII stays UTF-8 (biber and Zotero read it).
    ``balanced``: whether the whole field's braces balance, when ``text`` is a part of it."""
    balanced = _balanced(text) if balanced is None else balanced
    table = _BIB_REPL if balanced else {**_BIB_REPL, **_BIB_BRACES}
    return _BIB_SPECIAL.sub(lambda m: table.get(m.group(1), "\\" + m.group(1)), text)


def _balanced(text: str) -> bool:
    if "{" not in text and "}" not in text:  # nearly every field: no per-character walk
        return True
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False
    return depth == 0


_BIB_BACK = {command: char for char, command in {**_BIB_REPL, **_BIB_BRACES}.items()}
_BIB_UNESCAPE = re.compile("|".join(map(re.escape, _BIB_BACK)) + r"|\\([{}%&$#_])")


def bibtex_unescape(text: str) -> str:
    """Undo :func:`bibtex_escape` (for reading our own exports back)."""
    return _BIB_UNESCAPE.sub(lambda m: m.group(1) or _BIB_BACK[m.group(0)], text)


# A word with two or more capitals (RCT, COVID-19, McDonald): styles would lowercase it.
_BIB_ACRONYM = re.compile(r"(?<![\w-])((?=[\w-]*[A-Z][\w-]*[A-Z])[\w-]+)")


def bibtex_title(text: str) -> str:
    """An escaped title with acronyms braced, so that BibTeX styles keep their capitals."""
    parts = _BIB_ACRONYM.split(text)  # odd items are the acronyms
    whole = _balanced(text)  # one choice of brace escapes for the whole title
    escaped = [bibtex_escape(p, balanced=whole) for p in parts]
    return "".join("{" + e + "}" if i % 2 else e for i, e in enumerate(escaped))


def _bib_verbatim(text: str) -> str:
    # a brace in a DOI (Wiley's SICI DOIs) would end the field; %7B/%7D resolve the same
    return text.replace("{", "%7B").replace("}", "%7D")


def _bib_name(author: str) -> str:
    a = _split_author(author)
    # a collective author is braced whole, so BibTeX does not split it into names
    if "family" in a:  # a feed's or a MEDLINE file's surname may hold &, % or a brace
        return f"{bibtex_escape(a['family'])}, {a['given']}"
    return "{" + bibtex_escape(a["literal"]) + "}"


def to_bibtex(records: Iterable[dict[str, Any]]) -> str:
    import bibtexparser
    from bibtexparser.middlewares import default_unparse_stack
    from bibtexparser.model import Entry, Field

    library = bibtexparser.Library()
    for rec in records:
        kind = _work_type(rec)
        fields = {
            "title": rec["title"],
            "author": " and ".join(map(_bib_name, rec.get("authors") or [])),
            # a chapter's book is its booktitle (@incollection), not a journal
            "journal": rec.get("journal") if kind is None else None,
            "booktitle": rec.get("journal") if kind == "chapter" else None,
            "shortjournal": rec.get("journal_abbrev"),  # biblatex; BibTeX ignores it
            "publisher": rec.get("publisher") if kind else None,
            "address": rec.get("publisher_place") if kind else None,
            "volume": rec.get("volume"),
            "number": rec.get("issue"),
            "pages": full_pages(rec.get("pages"), "--"),
            "year": str(rec["year"]) if rec.get("year") else None,
            "doi": rec.get("doi"),
            "pmid": rec.get("pmid"),
            "pmcid": rec.get("pmcid"),
            "url": (_urls(rec) or [None])[0],
            "abstract": rec.get("abstract"),
            "keywords": ", ".join(tag_keywords(rec) + list(rec.get("keywords") or [])),
            "note": tag_note(rec),
        }
        out = []
        for key, value in fields.items():
            if not value:
                continue
            # author names are already BibTeX syntax; url/doi are verbatim fields
            if key == "author":
                text = value
            elif key in ("url", "doi"):
                text = _bib_verbatim(value)
            elif key == "title":
                text = bibtex_title(value)
            else:
                text = bibtex_escape(value)
            out.append(Field(key, text))  # bibtexparser adds the enclosing braces
        # A Bookshelf chapter is @incollection (booktitle, publisher), a whole book @book;
        # @article requires a journal (BibTeX warns without one), @misc does not.
        entry_type = _BIB_TYPES.get(kind) or ("article" if rec.get("journal") else "misc")
        library.add(Entry(entry_type, citation_key(rec), out))
    # the library is ours to change: an in-place stack spares a deep copy of every entry
    # (and bibtexparser's warning about it on large exports)
    stack = default_unparse_stack(allow_inplace_modification=True)
    return bibtexparser.write_string(library, unparse_stack=stack)


def to_csl_items(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSL-JSON items (valid against the CSL-JSON schema); tags in ``note`` and ``custom``."""
    items = []
    for rec in records:
        kind = _work_type(rec)
        item: dict[str, Any] = {
            "id": citation_key(rec),
            "type": _CSL_TYPES[kind],
            "title": rec["title"],
            "note": tag_note(rec),
            "keyword": ", ".join(tag_keywords(rec) + list(rec.get("keywords") or [])),
            "custom": {"doesitwork": {"study_id": rec["id"], "tags": rec.get("tags") or {}}},
        }
        if rec.get("authors"):
            item["author"] = [_split_author(a) for a in rec["authors"]]
        if parts := _date_parts(rec):
            item["issued"] = {"date-parts": [parts]}
        for key, csl in (("journal", "container-title"), ("journal_abbrev", "container-title-short"),
                         ("volume", "volume"), ("issue", "issue"),
                         ("doi", "DOI"), ("pmid", "PMID"), ("pmcid", "PMCID"),
                         ("abstract", "abstract")):  # fmt: skip
            if rec.get(key):
                item[csl] = rec[key]
        if kind:  # a chapter's container-title (above) is its book's title
            for key, csl in (("publisher", "publisher"), ("publisher_place", "publisher-place")):
                if rec.get(key):
                    item[csl] = rec[key]
        if pages := full_pages(rec.get("pages")):
            item["page"] = pages
        if urls := _urls(rec):
            item["URL"] = urls[0]
        if rec.get("languages"):
            item["language"] = rec["languages"][0]
        items.append(item)
    return items


def to_csljson(records: Iterable[dict[str, Any]]) -> str:
    return json.dumps(to_csl_items(records), ensure_ascii=False, indent=1) + "\n"


def style_path(style: str) -> str:
    """The bundled CSL file of a style (``vancouver`` or ``apa``)."""
    if style not in STYLES:
        raise ExportError(f"unknown citation style {style!r}; choose one of {', '.join(STYLES)}")
    return str(resources.files("harvest") / "csl" / f"{style}.csl")


def bibliography(records: Sequence[dict[str, Any]], *, style: str = "vancouver",
                 html: bool = False) -> list[str]:  # fmt: skip
    """Formatted references, one string per study in the given order (citeproc-py)."""
    import warnings

    from citeproc import (Citation, CitationItem, CitationStylesBibliography,
                          CitationStylesStyle, formatter)  # fmt: skip
    from citeproc.source.json import CiteProcJSON

    items = []
    # Vancouver: citeproc-py runs the parts of the style's text date together ("2018Sept14")
    # and leaves the date's ";" when there is no volume ("2018;."); it also mangles NLM's
    # short page ranges ("101-10"). So the date goes in as NLM writes it, and the location
    # ("2018 Sep 14;12(3):101-10") is put in its place after rendering, in NLM's form.
    vancouver: dict[str, tuple[str, str]] = {}
    for rec, item in zip(records, to_csl_items(records), strict=True):
        # citeproc-py knows the CSL variables, not our extensions
        item = {k: v for k, v in item.items() if k not in ("custom", "keyword", "note")}
        if style == "vancouver" and (when := nlm_date(rec)):
            item["issued"] = {"literal": when}
            for key in ("volume", "issue", "page"):
                item.pop(key, None)
            location = nlm_location(rec)
            vancouver[item["id"]] = (when, html_lib.escape(location, quote=False) if html else location)
        items.append(_html_escape_csl(item) if html else item)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # citeproc-py warns about every unsupported element
        source = CiteProcJSON(items)
        csl = CitationStylesStyle(style_path(style), validate=False)
        bib = CitationStylesBibliography(csl, source, formatter.html if html else formatter.plain)
        for item in items:
            bib.register(Citation([CitationItem(item["id"])]))
        # sorted styles (APA) reorder; we keep the caller's order by key
        rendered = {str(k): str(e) for k, e in zip(bib.keys, bib.bibliography(), strict=True)}
    out = []
    for item in items:
        ref = rendered[item["id"].lower()] if item["id"].lower() in rendered else rendered[item["id"]]
        if item["id"] in vancouver:
            when, location = vancouver[item["id"]]
            # the style writes "<date>;" then the (here empty) volume, issue and pages, then "."
            at = ref.rfind(f"{when};.")
            if at >= 0:
                ref = f"{ref[:at]}{when}{location}.{ref[at + len(when) + 2:]}"
        out.append(ref)
    return out


def _html_escape_csl(value: Any) -> Any:
    """Every string in a CSL item HTML-escaped: citeproc-py's html formatter inserts them raw."""
    if isinstance(value, str):
        return html_lib.escape(value, quote=False)
    if isinstance(value, list):
        return [_html_escape_csl(v) for v in value]
    if isinstance(value, dict):
        return {k: _html_escape_csl(v) for k, v in value.items()}
    return value


def to_markdown(records: Sequence[dict[str, Any]], *, style: str = "vancouver",
                title: str = "Reading list") -> str:  # fmt: skip
    """A numbered Markdown bibliography with links and our tags under each reference."""
    lines = [f"# {_md_escape(' '.join(title.split()))}", ""]  # a heading is one line
    for n, (rec, ref) in enumerate(zip(records, bibliography(records, style=style), strict=True), 1):
        ref = re.sub(r"^\d+\.\s*", "", ref.strip())  # Vancouver numbers; the list numbers too
        lines.append(f"{n}. {_md_escape(ref)}")
        links = " · ".join(f"[{label}]({url})" for label, url in _labelled_urls(rec))
        if links:
            lines.append(f"   {links}")
        lines.append(f"   *{_md_escape(tag_note(rec).removeprefix('doesitwork: '))}*")
        lines.append("")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return re.sub(r"([\\`*_\[\]<>|])", r"\\\1", text)


def _labelled_urls(rec: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    if rec.get("pmid"):
        out.append(("PubMed", f"https://pubmed.ncbi.nlm.nih.gov/{rec['pmid']}/"))
    if rec.get("doi"):
        out.append(("DOI", f"https://doi.org/{rec['doi']}"))
    if rec.get("pmcid"):
        out.append(("PMC", f"https://www.ncbi.nlm.nih.gov/pmc/articles/{rec['pmcid']}/"))
    return out


def to_html(records: Sequence[dict[str, Any]], *, style: str = "vancouver",
            title: str = "Reading list") -> str:  # fmt: skip
    """A standalone HTML page with the formatted bibliography."""
    refs = bibliography(records, style=style, html=True)
    items = []
    for rec, ref in zip(records, refs, strict=True):
        ref = re.sub(r"^\d+\.\s*", "", ref.strip())
        links = " · ".join(f'<a href={_attr(u)}>{lbl}</a>' for lbl, u in _labelled_urls(rec))
        note = xml_escape(tag_note(rec).removeprefix("doesitwork: "))
        items.append(f"<li>{ref}<br>{links}<br><em>{note}</em></li>")
    body = "\n".join(items)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{xml_escape(title)}</title></head>\n<body><h1>{xml_escape(title)}</h1>\n"
            f"<ol>\n{body}\n</ol>\n</body></html>\n")  # fmt: skip


def atom_id(rec: dict[str, Any]) -> str:
    """A study's Atom entry id: by PMID when it has one, else by its database id."""
    return ATOM_ID_PREFIX + (f"pmid:{rec['pmid']}" if rec.get("pmid") else f"study:{rec['id']}")


def to_atom(records: Sequence[dict[str, Any]], *, title: str = "doesitwork: new studies",
            feed_id: str = ATOM_ID_PREFIX + "feed:all", link: str | None = None,
            updated_field: str = "first_seen") -> str:  # fmt: skip
    """An Atom feed, newest first; each entry's ``updated`` is when we first stored the study
    (or when its tags were last written, with ``updated_field="first_tagged"``: re-tagging
    rewrites automatic tags, so that time moves, while the entry id never does)."""

    def stamp(rec: dict[str, Any]) -> str:
        return rec.get(updated_field) or rec.get("first_seen") or rec["last_updated"]

    recs = sorted(records, key=stamp, reverse=True)
    updated = stamp(recs[0]) if recs else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"<title>{xml_escape(title)}</title>",
        f"<id>{xml_escape(feed_id)}</id>",
        f"<updated>{updated}</updated>",
        "<author><name>doesitwork</name></author>",
        "<generator>doesitwork</generator>",
    ]
    if link:
        out.append(f'<link rel="self" href={_attr(link)}/>')
    for rec in recs:
        urls = _urls(rec)
        summary = tag_note(rec).removeprefix("doesitwork: ")
        if rec.get("journal"):
            summary = f"{rec['journal']} {rec.get('year') or ''}. {summary}"
        out += [
            "<entry>",
            f"<id>{xml_escape(atom_id(rec))}</id>",
            f"<title>{xml_escape(rec['title'])}</title>",
            f"<updated>{stamp(rec)}</updated>",
            *(f'<link href={_attr(u)}/>' for u in urls[:1]),
            *(f"<category term={_attr(k)}/>" for k in tag_keywords(rec)),
            f"<summary>{xml_escape(summary)}</summary>",
            # RFC 4287 4.1.1: an entry with no alternate link must have content
            *([] if urls else [f'<content type="text">{xml_escape(summary)}</content>']),
            "</entry>",
        ]
    out.append("</feed>")
    return "\n".join(out) + "\n"


def _attr(value: str) -> str:
    return '"' + xml_escape(value, {'"': "&quot;"}) + '"'


def render(fmt: str, records: Sequence[dict[str, Any]], *, style: str = "vancouver",
           title: str | None = None, **atom: Any) -> str:  # fmt: skip
    """Write records in one of :data:`FORMATS` (or :data:`FORMAT_ALIASES`)."""
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt == "jsonl":
        return "".join(to_jsonl(records))
    if fmt == "csv":
        return to_csv(records)
    if fmt == "ris":
        return to_ris(records)
    if fmt == "bibtex":
        return to_bibtex(records)
    if fmt == "csljson":
        return to_csljson(records)
    if fmt == "markdown":
        return to_markdown(records, style=style, title=title or "Reading list")
    if fmt == "html":
        return to_html(records, style=style, title=title or "Reading list")
    if fmt == "atom":
        return to_atom(records, title=title or "doesitwork: new studies", **atom)
    raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")

"""Datasette output renderers: any table, view or query whose rows carry a study id
(an ``id`` column beside ``title``, a ``study_id`` or a ``pmid`` column) downloads as
``.ris``, ``.bib``, ``.csljson`` or ``.atom``. The files come from ``harvest.export``, the same
module behind ``harvest export``, so both give identical records with our tags.

Search: the SQL function ``escape_fts`` (which Datasette applies to ``?_search=`` in its
default "escaped" search mode, and the "Search studies" query applies to ``q``) is replaced
by ``harvest.export.fts_query``, the reading ``harvest export --search`` uses: words as typed
(``dry-needling``, ``Gunn's``) and FTS5 syntax (OR, NEAR, "phrases", prefix*) both work.
Datasette's own escaping quotes every word, so OR and NEAR would be searched as words.
A blank ``?_search=`` (or ``?_search_<column>=``) is dropped before Datasette reads it, so an
empty search box means no search (all rows), not a search for nothing.

Canned-query parameters are checked as the CLI checks its options: a ``since`` that is not a
date, an unknown reading ``list`` or ``intervention`` is answered with HTTP 400 and the reason
in every format, not with an empty result. A blank one is the query's empty form on its page,
but a download (``.json``, ``.csv``, ``.ris``…) without the ``since``, ``list`` or ``q`` it
needs is refused too: an empty file would read as "nothing new".
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_plus, urlencode

from datasette import hookimpl
from datasette.plugins import pm
from datasette.utils import await_me_maybe, derive_named_parameters, tilde_decode
from datasette.utils.asgi import BadRequest, Request, Response
from markupsafe import Markup
from sqlite_utils import Database

from harvest import export, reading_lists, tagging

_RENDERERS = {"ris": "ris", "bib": "bibtex", "csljson": "csljson", "atom": "atom"}


def _id_column(columns: list[str]) -> str | None:
    if "study_id" in columns:
        return "study_id"
    if "id" in columns and "title" in columns:
        return "id"
    if "pmid" in columns:
        return "pmid"
    return None


_STUDY_TABLES = ("studies", "studies_tagged", "study_tags_summary", "study_tags_effective",
                 "reading_list_items", "sightings")  # fmt: skip


def _can_render(columns: list[str], table: str | None) -> bool:
    if table and table not in _STUDY_TABLES:
        return False  # an "id" column of runs, sources, ... is not a study id
    return _id_column(columns) is not None


def _not_studies(name: str | None, ext: str) -> str:
    if name is None:  # SQL typed on the database page
        return (f"this query does not return studies: a .{ext} download needs the studies' "
                "id (with title), study_id or pmid column")  # fmt: skip
    return (f"{name} is not a list of studies: the .{ext} download works on studies, "
            "studies_tagged, search results and reading lists")  # fmt: skip


# A named parameter a query's full-text MATCH reads: "match :q", "match escape_fts(:q)".
_MATCH_PARAM = re.compile(r"\bmatch\s+(?:\w+\s*\(\s*)?:(\w+)", re.I)


def _refuse(data: dict[str, Any], columns: list[str], table: str | None, name: str | None,
            ext: str) -> None:  # fmt: skip
    """Raise a 400 (Datasette's error page) instead of saving an error text as the file: a
    download of something that is not studies, of a search without words, of a failed query."""
    query = data.get("query") or {}
    params = query.get("params") or {}
    empty = [p for p in _MATCH_PARAM.findall(query.get("sql") or "")
             if not str(params.get(p) or "").strip()]  # fmt: skip
    if empty and not table:
        raise BadRequest(f"{name or 'this query'}: type a search first (?{empty[0]}=...); "
                         "an empty search has no results to download")  # fmt: skip
    if data.get("error"):
        raise BadRequest(f"{name or 'this query'}: the query failed, nothing to download "
                         f"({data['error']})")  # fmt: skip
    if not _can_render(columns, table):
        raise BadRequest(_not_studies(name, ext))


_PAGING_ARGS = ("_next", "_size", "_shape", "_sort", "_sort_desc")

# An export holds up to this many rows (the evidence base holds a few thousand studies): a
# table or view export follows Datasette's pages, a query's is re-run without its row cap.
# A selection larger than this is refused (HTTP 400), never cut short in silence.
MAX_EXPORT_ROWS = 50_000


def _refuse_over_cap(keys: list[Any], name: str, ext: str) -> None:
    """A reference-manager file has no place for a warning, so a cut file would drop rows
    unseen: refuse instead, saying why."""
    if len(keys) > MAX_EXPORT_ROWS:
        raise BadRequest(f"{name} selects more than {MAX_EXPORT_ROWS:,} studies, the most a "
                         f".{ext} download holds: narrow the filters or the search, or use "
                         "harvest export")  # fmt: skip


def _args_except(request: Any, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The request's query arguments (repeats kept) without ``names``."""
    return [(k, v) for k in request.args.keys() if k not in names for v in request.args.getlist(k)]


async def _all_keys(datasette: Any, request: Any, col: str, sort: str | None) -> list[Any]:
    """The id column of every row the filters select, as Datasette's own "stream all rows"
    CSV does, not of the page on screen.

    The pages are fetched again from the start, ordered by a unique column: Datasette 0.65
    orders the first page of a sorted table by the sort column alone but later pages by the
    sort column and the key, so following the screen's pages repeats some rows and skips
    others when values tie (years do).
    """
    base = request.path.rsplit(".", 1)[0] + ".json"
    args = _args_except(request, _PAGING_ARGS)
    if sort:
        args.append(("_sort", sort))
    keys: list[Any] = []
    token: str | None = None
    while True:  # one row past the cap is enough to know the selection is too large
        paging = [("_next", token)] if token else []
        query = urlencode([*args, *paging, ("_size", "max"), ("_shape", "objects")])
        page = (await datasette.client.get(f"{base}?{query}")).json()
        keys += [row[col] for row in page.get("rows", []) if row.get(col) is not None]
        token = page.get("next")
        if not token or len(keys) > MAX_EXPORT_ROWS:
            return keys


async def _all_query_keys(datasette: Any, database: str, query: dict[str, Any], col: str) -> list[Any]:
    """A query's id column without Datasette's max_returned_rows cut (same SQL, same
    parameters, same time limit): a reading list should not silently stop at row 1,000."""
    results = await datasette.get_database(database).execute(
        query["sql"], query.get("params") or {}, truncate=False
    )
    return [row[col] for row in results.rows if row[col] is not None]


def _feed_id(request: Any) -> str:
    """The same page with the same filters gives the same feed id (a reader keeps one
    subscription); other filters give another feed."""
    path = request.path.rsplit(".", 1)[0]
    args = sorted(_args_except(request, ("_next", "_size")))
    return f"{export.ATOM_ID_PREFIX}datasette:{path}" + (f"?{urlencode(args)}" if args else "")


def _make_render(fmt: str):
    # Datasette passes only the arguments a callback names (no **kwargs)
    async def render(datasette: Any, database: str, columns: list[str], rows: list[Any],
                     request: Any, table: str | None, query_name: str | None,
                     data: dict[str, Any]) -> Response:
        ext = request.path.rsplit(".", 1)[-1]
        _refuse(data, columns, table, query_name or table, ext)
        col = _id_column(columns)
        assert col is not None  # _refuse checked it
        keys = [row[col] for row in rows if row[col] is not None]
        name = query_name or table or "query"
        # A reading list holds every row selected; an alert feed is the page, newest first.
        if fmt != "atom" and (data.get("next") or "_next" in request.args):
            keys = await _all_keys(datasette, request, col, "id" if "id" in columns else None)
        elif fmt != "atom" and data.get("truncated") and data.get("query"):
            keys = await _all_query_keys(datasette, database, data["query"], col)
        _refuse_over_cap(keys, name, ext)

        def load(conn: Any) -> str:
            db = Database(conn)
            ids = export.ids_for_pmids(db, [str(k) for k in keys]) if col == "pmid" else keys
            records = export.load_records(db, ids)
            if fmt == "atom":
                return export.render("atom", records, title=f"doesitwork: {name}",
                                     feed_id=_feed_id(request), link=str(request.url))
            return export.render(fmt, records)

        body = await datasette.get_database(database).execute_fn(load)
        spec = export.FORMATS[fmt]
        headers = {}
        if fmt != "atom":
            headers["content-disposition"] = f'attachment; filename="{name}.{spec.extension}"'
        return Response(body, content_type=spec.content_type, headers=headers)

    return render


def since_utc(value: Any) -> str | None:
    """``since`` as ``harvest export --since`` reads it (a date, or an ISO time as UTC text
    like ``first_seen``); NULL, so no rows, when blank or not a date."""
    text = "" if value is None else str(value).strip()
    try:
        return export.parse_since(text) if text else None
    except export.ExportError:
        return None


@hookimpl(trylast=True)  # after Datasette's own escape_fts, so that this one is kept
def prepare_connection(conn: Any) -> None:
    conn.create_function("escape_fts", 1, export.fts_query, deterministic=True)
    conn.create_function("since_utc", 1, since_utc, deterministic=True)


# --- canned-query parameters: a bad value is a 400 with the reason, as in the CLI ----------


async def _check_since(db: Any, value: str) -> None:
    if since_utc(value) is None:
        raise BadRequest(f"since: {value!r} is not a date (YYYY-MM-DD, or an ISO date and time)")


async def _check_list(db: Any, value: str) -> None:
    try:
        await db.execute_fn(lambda conn: reading_lists.get_list(Database(conn), value))
    except reading_lists.ReadingListError as exc:
        raise BadRequest(f"list: {exc}") from None


async def _check_intervention(db: Any, value: str) -> None:
    try:  # the queries compare lower(trim(:intervention)), as the CLI reads --intervention
        tagging.load_ruleset().check_value("intervention", value.strip().lower())
    except tagging.TagError as exc:
        raise BadRequest(f"intervention: {exc}") from None


def _check_searches(scope: dict[str, Any]) -> None:
    """A table search (``_search``, ``_search_<column>``) that only excludes ("-knee") is
    refused in plain words, as ``harvest export --search`` refuses it: FTS5 cannot search for
    everything but a word, and its own error names a NOT the user never typed."""
    args = Request(scope, None).args
    for key in args.keys():
        if key.startswith("_search") and key != "_searchmode":
            _refuse_exclusions_only(args.get(key) or "")


def _refuse_exclusions_only(search: str) -> None:
    if export.only_excludes(search):
        raise BadRequest(export.search_error(search, ""))


async def _check_search(db: Any, value: str) -> None:
    _refuse_exclusions_only(value)


# Our shipped canned queries' parameters, by (query, parameter): a query a user adds to the
# metadata may use the same names for something else (a comma-separated :list of PMIDs).
_PARAM_CHECKS = {
    ("new_since", "since"): _check_since,
    ("reading_list", "list"): _check_list,
    ("latest_rcts", "intervention"): _check_intervention,
    ("reviews_by_intervention", "intervention"): _check_intervention,
    ("search_studies", "q"): _check_search,
}
# Without these a query selects nothing; its page then shows the empty form.
_NEEDED = {
    ("new_since", "since"): "a date (YYYY-MM-DD, or an ISO date and time)",
    ("reading_list", "list"): "a reading list's name",
    ("search_studies", "q"): "words to search for",
}
# Datasette's route for a table, view or canned query, with an optional format extension.
_QUERY_PATH = re.compile(r"^/(?P<database>[^/.]+)/(?P<name>[^/.]+)(?P<ext>\.\w+)?$")


async def _check_query_params(datasette: Any, scope: dict[str, Any]) -> None:
    """Raise BadRequest if the request is for a canned query and one of its parameters in
    ``_PARAM_CHECKS`` holds a bad value, or a download lacks one in ``_NEEDED`` (on the
    query's page a blank one is its empty form, left alone)."""
    path, base = scope.get("path", ""), datasette.setting("base_url")
    if base != "/" and path.startswith(base):
        path = "/" + path[len(base):]
    match = _QUERY_PATH.match(path)
    if not match or not (scope.get("query_string") or match["ext"]):
        return
    try:
        db = datasette.get_database(route=tilde_decode(match["database"]))
    except KeyError:
        return
    query = await datasette.get_canned_query(db.name, tilde_decode(match["name"]), None)
    if not query:
        return
    args = Request(scope, None).args
    for param in query.get("params") or await derive_named_parameters(db, query["sql"]):
        value = args.get(param) or ""
        check = _PARAM_CHECKS.get((query["name"], param))
        if check is not None and value.strip():
            await check(db, value)
        elif match["ext"] and (needed := _NEEDED.get((query["name"], param))) and not value.strip():
            raise BadRequest(f"{param}: a download needs {needed}; none was given")


async def _send_error(datasette: Any, request: Any, send: Any, exc: Exception) -> None:
    """Datasette's own error reply (a page, or JSON for .json), as if a view had raised it."""
    await datasette.invoke_startup()  # its templates may not be set up before a first request
    for hook in pm.hook.handle_exception(datasette=datasette, request=request, exception=exc):
        response = await await_me_maybe(hook)
        if response is not None:
            await response.asgi_send(send)
            return


def _drop_blank_searches(query_string: bytes) -> bytes:
    """The query string without ``_search``/``_search_<column>`` arguments that hold no words.

    Datasette 0.65 turns a present but empty ``_search`` into a MATCH (no rows, "search
    matches \"\""); submitting the table page's search box empty sends exactly that.
    The other arguments are kept byte for byte.
    """
    parts = query_string.split(b"&")
    kept = []
    for part in parts:
        key, _, value = part.partition(b"=")
        name = unquote_plus(key.decode("latin-1"))
        if (name == "_search" or name.startswith("_search_")) and not unquote_plus(
            value.decode("latin-1")
        ).strip():
            continue
        kept.append(part)
    return b"&".join(kept) if len(kept) != len(parts) else query_string


@hookimpl
def asgi_wrapper(datasette: Any) -> Any:
    def wrap(app: Any) -> Any:
        async def checked_request(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                if b"_search" in scope.get("query_string", b""):
                    scope = {**scope, "query_string": _drop_blank_searches(scope["query_string"])}
                try:
                    _check_searches(scope)
                    await _check_query_params(datasette, scope)
                except BadRequest as exc:
                    await _send_error(datasette, Request(scope, receive), send, exc)
                    return
            await app(scope, receive, send)

        return checked_request

    return wrap


@hookimpl
def register_output_renderer(datasette: Any) -> list[dict[str, Any]]:
    return [
        {"extension": ext, "render": _make_render(fmt), "can_render": _can_render}
        for ext, fmt in _RENDERERS.items()
    ]


# Datasette 0.65 lists every column description above the table, which pushes the rows
# off the first screen of our 25-column view: fold the list into a <details>, and keep
# titles readable in a wide table.
_FOLD_DESCRIPTIONS = """
document.querySelectorAll("dl.column-descriptions").forEach(function (dl) {
  var details = document.createElement("details");
  details.className = "column-descriptions-folded";
  var summary = document.createElement("summary");
  summary.textContent = "What each column means";
  dl.parentNode.insertBefore(details, dl);
  details.appendChild(summary);
  details.appendChild(dl);
});
var style = document.createElement("style");
style.textContent = "td.col-title { min-width: 24em; } td.col-abstract { min-width: 40em; }";
document.head.appendChild(style);
"""


@hookimpl
def extra_body_script(template: str) -> str:
    return _FOLD_DESCRIPTIONS if template in ("table.html", "query.html") else ""


_ARRAY_COLUMNS = {"interventions", "conditions", "comparators", "flags", "sources"}


@hookimpl
def render_cell(value: Any, column: str) -> str | None:
    """Tag lists are JSON arrays (so Datasette can facet on them); show them as plain text."""
    if column in _ARRAY_COLUMNS and isinstance(value, str) and value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            return None
        if isinstance(items, list):
            # an empty string would fall back to Datasette's own "[]"
            return ", ".join(str(i) for i in items) or Markup("&nbsp;")
    return None

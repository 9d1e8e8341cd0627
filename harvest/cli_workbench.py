"""The researchers' workbench commands: ``export``, ``list`` and ``serve`` (wiring and printing only).

Registered on the ``harvest`` group in ``harvest/cli.py``. This module does not import
``harvest.cli`` (that would be circular), so it carries its own ``--db/--config`` decorator
with the same precedence.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harvest import export, reading_lists, serve, tagging
from harvest.cli_common import common_options, open_or_fail, output_error
from harvest.config import Settings
from harvest.store import StoreError


_Values = tuple[str, ...]
# The formats that format citations (export.render passes --style only to these).
_STYLED_FORMATS = ("markdown", "html")
# The formats export.render gives a title, and the one whose entries --alert-on dates.
_TITLED_FORMATS = ("markdown", "html", "atom")
_ALERT_FORMATS = ("atom",)
# Each export option that only some formats use: (parameter, those formats, what others lack).
_FORMAT_OPTIONS = (("style", _STYLED_FORMATS, "no citation style"),
                   ("title", _TITLED_FORMATS, "no title"),
                   ("alert_on", _ALERT_FORMATS, "no alert dates"))  # fmt: skip


def _tag_values(facet: str) -> Callable[[click.Context, click.Parameter, _Values], _Values]:
    """An option callback checking values against the rule set's vocabulary, so a typo is
    a usage error rather than an empty result; values are matched case-insensitively."""

    def check(ctx: click.Context, param: click.Parameter, values: _Values) -> _Values:
        rules = tagging.load_ruleset()
        try:
            return tuple(rules.check_value(facet, v.strip().lower()) for v in values)
        except tagging.TagError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc

    return check


def _check_since(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--since must be an ISO date or time: a usage error (exit 2) otherwise."""
    if value is not None:
        try:
            export.parse_since(value)
        except export.ExportError as exc:
            raise click.BadParameter(f"{value!r} is not an ISO date (YYYY-MM-DD)",
                                     ctx=ctx, param=param) from exc  # fmt: skip
    return value


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The study filters shared by ``export`` and ``list create --from-query``."""
    options = [
        click.option("--intervention", "interventions", multiple=True,
                     callback=_tag_values("intervention"),
                     help="Tag value, e.g. dry_needling, ims, prolotherapy (repeat for OR)."),
        click.option("--condition", "conditions", multiple=True,
                     callback=_tag_values("condition"),
                     help="Tag value, e.g. low_back_pain (repeat for OR)."),
        click.option("--design", "designs", multiple=True, callback=_tag_values("design"),
                     help="Tag value, e.g. rct, systematic_review (repeat for OR)."),
        click.option("--since", callback=_check_since,
                     help="Only studies first stored on or after this date (YYYY-MM-DD)."),
        click.option("--search", help="Full-text search: words as written (dry-needling, Gunn's) "
                                      'or FTS5 syntax (AND, OR, NOT, NEAR, "phrase", prefix*).'),
        click.option("--sql", help="Read-only SELECT returning a study_id, id or pmid column."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


_FILTER_KEYS = ("interventions", "conditions", "designs", "since", "search", "sql")


def _filters(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in _FILTER_KEYS if kwargs.get(k)}


def _format_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--format by its canonical name (csl-json is csljson)."""
    return export.FORMAT_ALIASES.get(value, value)


def _reject_unused_options(ctx: click.Context, fmt: str) -> None:
    """An option the chosen format would ignore is a usage error (exit 2), not a silent no-op."""
    for name, formats, lacks in _FORMAT_OPTIONS:
        if fmt not in formats and ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            allowed = " or ".join(formats) if len(formats) < 3 else (
                ", ".join(formats[:-1]) + " or " + formats[-1])  # fmt: skip
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --format {allowed}, "
                                   f"not {fmt} (which has {lacks})")  # fmt: skip


@click.command(name="export")
@common_options
@click.option("--format", "fmt", type=click.Choice(sorted([*export.FORMATS, *export.FORMAT_ALIASES])),
              default="jsonl", show_default=True, callback=_format_name,
              help="Output format (markdown/html: a formatted bibliography).")  # fmt: skip
@filter_options
@click.option("--list", "list_name", help="Only the studies on this reading list, in its order.")
@click.option("--style", type=click.Choice(export.STYLES), default="vancouver", show_default=True,
              help="Citation style for markdown and html.")  # fmt: skip
@click.option("--title", help="Title of the bibliography or Atom feed.")
@click.option("--alert-on", type=click.Choice(["added", "tagged"]), default="added", show_default=True,
              help="Atom: date entries by when a study was added, or when it was tagged.")  # fmt: skip
@click.option("--include-deleted", is_flag=True, help="Also export tombstoned (deleted) studies.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Write here instead of standard output.")  # fmt: skip
def export_cmd(settings: Settings, fmt: str, list_name: str | None, style: str,
               title: str | None, alert_on: str, include_deleted: bool, output: str,
               **kwargs: Any) -> None:  # fmt: skip
    """Export studies with their tags as RIS, BibTeX, CSL-JSON, CSV, JSONL, Markdown, HTML or Atom.

    \b
    Examples:
      harvest export --format ris --intervention dry_needling --design rct -o dn-rcts.ris
      harvest export --format markdown --style apa --list "knee OA" -o knee.md
      harvest export --format atom --search 'prolotherapy AND knee' --since 2026-01-01

    \b
    Exit status: 0 written; 1 a failure at run time (an invalid --search or --sql, an
    output file that cannot be written); 2 a usage error: an unknown tag value or
    --list, a --since that is not a date, --style with a format other than markdown/html,
    --title with one other than markdown/html/atom, --alert-on with one other than atom.
    """
    _reject_unused_options(click.get_current_context(), fmt)
    db = open_or_fail(settings, create=False, read_only=True)
    if list_name is not None:
        _require_list(db, list_name, param_hint="--list")
    try:
        records = export.export_records(
            db, list_name=list_name, include_deleted=include_deleted, **_filters(kwargs)
        )
        atom_opts: dict[str, Any] = {}
        if fmt == "atom":
            query = {"list": list_name, **_filters(kwargs)}
            # the same filters give the same feed id, so a reader keeps one subscription
            key = hashlib.sha1(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]
            atom_opts["feed_id"] = f"{export.ATOM_ID_PREFIX}export:{key}"
            atom_opts["updated_field"] = "first_seen" if alert_on == "added" else "first_tagged"
        text = export.render(fmt, records, style=style, title=title, **atom_opts)
    except (export.ExportError, reading_lists.ReadingListError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        with click.open_file(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:  # a missing folder, a full disk, no permission
        raise output_error(output, exc) from exc
    if output != "-":
        click.echo(f"{len(records)} studies written to {output} ({fmt})", err=True)


@click.group(name="list")
def list_group() -> None:
    """Named reading lists stored in the database."""


@list_group.command(name="create")
@common_options
@click.argument("name")
@click.option("--description", help="What the list is for.")
@click.option("--from-query", is_flag=True,
              help="Fill the list with the studies matching the filters (saved with the list).")  # fmt: skip
@filter_options
def list_create(settings: Settings, name: str, description: str | None, from_query: bool,
                **kwargs: Any) -> None:  # fmt: skip
    """Create a reading list, empty or filled from a query."""
    db = open_or_fail(settings, create=False)
    filters = _filters(kwargs)
    if filters and not from_query:
        raise click.UsageError("filters need --from-query")
    try:
        ids = export.select_study_ids(db, **filters) if from_query else []
        lst = reading_lists.create_list(db, name, description=description,
                                        query=filters or None, study_ids=ids)  # fmt: skip
    except (export.ExportError, reading_lists.ReadingListError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created reading list {lst['name']!r} with {len(ids)} studies")


_STUDY_REFS = ("STUDY is a PMID (or pmid:N), doi:10.xxxx/... or id:N (the studies.id of a row "
               "without a PMID, such as a feed entry; `harvest list show` prints each item's). "
               "Exit status: 0 done; 1 a STUDY that matches nothing (nothing is changed); 2 a "
               "usage error, such as an unknown list NAME.")


@list_group.command(name="add", help=f"""Add studies to a reading list.

{_STUDY_REFS}

\b
Examples:
  harvest list add "knee OA" 29764447 doi:10.2522/ptj.20130255 --note "to read"
  harvest list add "knee OA" id:812
""")
@common_options
@click.argument("name")
@click.argument("refs", nargs=-1, required=True, metavar="STUDY...")
@click.option("--note", help="A note kept with these items (replaces an earlier note).")
def list_add(settings: Settings, name: str, refs: tuple[str, ...], note: str | None) -> None:
    db = open_or_fail(settings, create=False)
    _require_list(db, name)
    try:
        added = reading_lists.add_items(db, name, list(refs), note=note)
    except reading_lists.ReadingListError as exc:
        raise click.ClickException(str(exc)) from exc
    total = len(reading_lists.list_items(db, name))
    click.echo(f"{name}: {added} added; {total} studies on the list")


def _require_list(db: Any, name: str, param_hint: str = "NAME") -> None:
    """An unknown list name is a bad argument or option value (exit 2)."""
    try:
        reading_lists.get_list(db, name)
    except reading_lists.ReadingListError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from exc


@list_group.command(name="remove", help=f"""Remove studies from a reading list, or delete the list.

{_STUDY_REFS}

\b
Examples:
  harvest list remove "knee OA" 29764447 id:812
  harvest list remove "knee OA" --delete-list
""")
@common_options
@click.argument("name")
@click.argument("refs", nargs=-1, metavar="[STUDY...]")
@click.option("--delete-list", is_flag=True, help="Delete the whole list (give no STUDY).")
def list_remove(settings: Settings, name: str, refs: tuple[str, ...], delete_list: bool) -> None:
    if delete_list and refs:
        raise click.UsageError("give STUDY references to remove, or --delete-list, not both")
    if not delete_list and not refs:
        raise click.UsageError("give STUDY references (PMID, doi:..., id:N) to remove, "
                               "or --delete-list to delete the whole list")  # fmt: skip
    db = open_or_fail(settings, create=False)
    _require_list(db, name)
    try:
        if delete_list:
            reading_lists.delete_list(db, name)
            click.echo(f"deleted reading list {name!r}")
            return
        removed = reading_lists.remove_items(db, name, list(refs))
    except reading_lists.ReadingListError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: removed {removed}, {len(reading_lists.list_items(db, name))} studies left")


@list_group.command(name="show")
@common_options
@click.argument("name", required=False)
def list_show(settings: Settings, name: str | None) -> None:
    """Show a reading list's studies and notes (all lists without NAME).

    Each study is shown by the reference `list add/remove` and `tag` take: its PMID, else
    doi:..., else id:N.
    """
    db = open_or_fail(settings, create=False, read_only=True)
    if name is None:
        lists = reading_lists.all_lists(db)
        if not lists:
            click.echo("no reading lists yet (harvest list create NAME)")
        for lst in lists:
            click.echo(f"{lst['name']}: {lst['items']} studies"
                       + (f" — {lst['description']}" if lst["description"] else ""))  # fmt: skip
        return
    _require_list(db, name)
    items = reading_lists.list_items(db, name)
    click.echo(f"{name}: {len(items)} studies")
    for it in items:
        flags = " [RETRACTED]" if it["retracted"] else ""
        flags += " [deleted]" if it["deleted"] else ""
        ref = f"PMID {it['pmid']:>9}" if it["pmid"] else it["ref"]  # doi:… or id:N otherwise
        click.echo(f"  {ref:<14}  {it['year'] or '    '}  {it['title'][:80]}{flags}")
        if it["note"]:
            click.echo(f"      note: {it['note']}")


@click.command(name="serve")
@common_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but loopback turns arbitrary SQL off.")  # fmt: skip
@click.option("-p", "--port", default=8001, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")  # fmt: skip
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=serve.DEFAULT_METADATA, show_default=True, help="Datasette metadata.")  # fmt: skip
@click.option("--plugins-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=serve.DEFAULT_PLUGINS_DIR, show_default=True,
              help="Folder of Datasette plugins (our .ris/.bib/.csljson/.atom renderers).")  # fmt: skip
@click.option("--sql-time-limit-ms", default=2000, show_default=True, type=click.IntRange(1),
              help="Stop any SQL statement after this many milliseconds.")  # fmt: skip
@click.option("--allow-sql/--no-sql", default=None,
              help="Allow arbitrary read-only SQL (default: only on 127.0.0.1).")  # fmt: skip
@click.option("--print-command", is_flag=True,
              help="Print the Datasette command (runnable later) instead of running it.")  # fmt: skip
def serve_cmd(settings: Settings, host: str, port: int, metadata: Path, plugins_dir: Path,
              sql_time_limit_ms: int, allow_sql: bool | None, print_command: bool) -> None:  # fmt: skip
    """Serve the database read-only in Datasette, with our metadata, queries and exports."""
    if port == 0 and not print_command:
        port = serve.free_port(host)  # so the address printed below is the real one
    options = serve.ServeOptions(
        db_path=Path(settings.db_path), host=host, port=port, metadata=metadata,
        plugins_dir=plugins_dir, sql_time_limit_ms=sql_time_limit_ms, allow_sql=allow_sql,
    )  # fmt: skip
    try:
        cmd = serve.prepare(options)
    except (serve.ServeError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    if print_command:
        click.echo(shlex.join(cmd))
        click.echo(f"(it reads the metadata written to {serve.metadata_file(options.db_path)};"
                   " print the command again after editing the metadata)", err=True)  # fmt: skip
        return
    where = serve.url(host, port) if port else f"{host} on a port the system chooses (see below)"
    click.echo(f"Serving {settings.db_path} read-only at {where} (Ctrl-C stops)", err=True)
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())  # pass a stop on to Datasette
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    sys.exit(code)

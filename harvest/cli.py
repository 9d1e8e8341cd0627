"""The ``harvest`` command line: wiring and printing only; the work is in the modules."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from harvest import __version__, demo, ingest, status, store, tagging
from harvest.cli_common import (
    EXIT_LOCKED,
    CannotWrite,
    ConfigFailure,
    common_options,
    open_or_fail,
    output_error,
)
from harvest.cli_workbench import export_cmd, list_group, serve_cmd
from harvest.config import ConfigError, Settings
from harvest.lock import AlreadyRunning, harvest_lock
from harvest.store import StoreError

if TYPE_CHECKING:
    from harvest.feed_config import FeedsConfig

# Exit statuses cron wrappers can tell apart: EXIT_LOCKED (75, EX_TEMPFAIL: another run
# holds the lock), EXIT_CONFIG (78, EX_CONFIG, in cli_common), EXIT_CANTCREAT (73, in
# cli_common: the database or its lock cannot be written) and a failed source (1).
EXIT_SOURCE_FAILED = 1


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (click's test runner swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _configure_logging(*, quiet: bool = False) -> None:
    """Log records to stderr as ``harvest: message``: warnings and up, errors only if quiet.

    Idempotent (one handler, its level adjusted), so repeated invocations in one process
    do not print each line twice.
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("harvest: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="harvest")
def cli() -> None:
    """doesitwork: harvest PubMed and journal feeds on IMS, dry needling and prolotherapy."""
    _configure_logging()


@cli.command()
@common_options
@click.option(
    "--source", "sources", multiple=True, metavar="NAME",
    help="Only these sources: 'pubmed', 'feeds', or a name such as pubmed:ims or feed:jospt "
    "(repeatable).",
)  # fmt: skip
@click.option("--full", is_flag=True, help="Ignore stored cursors and backfill every query.")
@click.option(
    "--reconcile", is_flag=True,
    help="Also check stored PMIDs against what NCBI still returns (weekly; tombstones withdrawn ones).",
)  # fmt: skip
@click.option("--report", "make_report", is_flag=True, help="Build the HTML report afterwards.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
def run(
    settings: Settings, sources: tuple[str, ...], full: bool, reconcile: bool,
    make_report: bool, quiet: bool,
) -> None:  # fmt: skip
    """Harvest every configured source (for cron): PubMed queries, then feeds.

    \b
    Exit status: 0 all sources succeeded; 1 a source failed (the others still ran), or
    the --report could not be built; 2 a bad option such as an unknown --source; 73 the
    database, its folder or its lock file cannot be written (nothing was done); 75 another
    run holds the lock (nothing was done) or the database stayed locked by another writer;
    78 the configuration is invalid or NCBI_EMAIL is not set (nothing was done).
    """
    _configure_logging(quiet=quiet)
    topics, feeds_config, feed_names = _select_sources(settings, sources)
    # Configuration first: a bad setup must not create the database or its lock file.
    client = _eutils_client(settings) if topics else None
    _check_writable(settings.db_path)  # nor may a database we cannot write
    _refuse_foreign(settings.db_path)  # nor a file that is not ours (no lock file beside it)
    try:
        with contextlib.ExitStack() as locked:
            _take_lock(locked, settings.db_path)
            db = open_or_fail(settings)
            failed = _run_pubmed(db, client, settings, topics, full, reconcile, quiet)
            if feeds_config is not None:
                failed |= _run_feeds(db, client, settings, feeds_config, feed_names, quiet)
        if make_report:
            failed |= _report(settings.db_path, quiet) is None
    except AlreadyRunning as exc:
        click.echo(f"harvest run: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    if failed:
        sys.exit(EXIT_SOURCE_FAILED)


def _check_writable(db_path: Any) -> None:
    """Refuse (exit 73) before the lock file is made if the database, or the folder where it,
    its WAL and its lock file live, cannot be written: a harvest would fail on every source."""
    path = os.fspath(db_path)
    try:
        for name in (path, f"{path}.lock"):
            if os.path.exists(name):
                os.close(os.open(name, os.O_RDWR))  # opens, never changes, the file
    except OSError as exc:
        raise CannotWrite(f"cannot write {exc.filename or path}: {exc.strerror or exc}; "
                          "nothing was done") from exc  # fmt: skip
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # the first existing folder: the rest gets made
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CannotWrite(f"cannot write {db_path}: its folder {folder} is not writable "
                          "(the database, its WAL and its lock file are made there); "
                          "nothing was done")  # fmt: skip


def _refuse_foreign(db_path: Any) -> None:
    """A file that is not our database is refused before its lock file is made beside it
    (an empty or missing file is fine: run creates the database)."""
    path = Path(db_path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        store.open_read_only(path).conn.close()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _take_lock(stack: contextlib.ExitStack[Any], db_path: Any) -> None:
    """Enter ``harvest_lock`` on ``stack``; an OS error making the lock file is exit 73."""
    try:
        stack.enter_context(harvest_lock(db_path))
    except OSError as exc:
        raise CannotWrite(f"cannot create the lock file {exc.filename or f'{db_path}.lock'}: "
                          f"{exc.strerror or exc}; nothing was done") from exc  # fmt: skip


def _select_sources(
    settings: Settings, names: tuple[str, ...]
) -> tuple[list[Any], FeedsConfig | None, list[str] | None]:
    """What ``--source`` picks: the topics, the feeds' configuration (None: no feeds), and
    which feeds (None: all). Every name is checked here, before anything runs."""
    if not names:
        return list(settings.topics.values()), _feeds_config(settings), None
    topics, feeds, want_all_feeds = [], [], False
    for name in names:
        if name == "pubmed":
            topics += settings.topics.values()
        elif name == "feeds":
            want_all_feeds = True
        elif name.startswith("pubmed:") and name[7:] in settings.topics:
            topics.append(settings.topics[name[7:]])
        elif name.startswith("feed:"):
            feeds.append(name)
        else:
            raise click.BadParameter(
                f"unknown source {name!r}: use pubmed, feeds, pubmed:TOPIC "
                f"({', '.join(settings.topics)}) or feed:NAME", param_hint="--source",
            )  # fmt: skip
    unique_topics = list({t.name: t for t in topics}.values())
    if not (want_all_feeds or feeds):
        return unique_topics, None, None
    config = _feeds_config(settings)
    configured = [f.name for f in config.feeds]
    for name in feeds:
        if name[5:] not in configured:
            raise click.BadParameter(
                f"unknown feed {name!r}: configured feeds are "
                f"{', '.join(configured) or 'none'}", param_hint="--source",
            )  # fmt: skip
    return unique_topics, config, None if want_all_feeds else feeds


def _feeds_config(settings: Settings) -> FeedsConfig:
    from harvest.feed_config import load_feeds  # lazily, as the other harvesting modules

    try:
        return load_feeds(settings)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from exc


def _report(db_path: Any, quiet: bool) -> Path | None:
    """Build the HTML report and return its path; a failure is reported (None), not raised,
    after a harvest."""
    from harvest.report import ReportError, build_report

    try:
        path = build_report(db_path)
    except ReportError as exc:
        click.echo(f"report: {exc}", err=True)
        return None
    if not quiet:
        click.echo(f"Report written to {path}")
    return path


def _eutils_client(settings: Settings) -> Any:
    """The E-utilities client; its request budget is shared by this user's processes
    through a rate file (``[ncbi] rate_file``, default in the user's cache folder)."""
    from harvest.eutils import EutilsClient, EutilsConfig, EutilsError

    try:
        return EutilsClient(EutilsConfig.from_settings(settings.ncbi))
    except EutilsError as exc:  # only its configuration is checked here (e.g. no NCBI_EMAIL)
        raise ConfigFailure(str(exc)) from exc


def _run_pubmed(
    db: Any, client: Any, settings: Settings, topics: list[Any], full: bool, reconcile: bool,
    quiet: bool,
) -> bool:  # fmt: skip
    from harvest import pubmed

    failed = False
    for topic in topics:
        with _Progress(topic.source_name, quiet) as bar:
            result = pubmed.harvest_topic(
                db, client, topic, settings.ncbi, full=full, reconcile=reconcile,
                on_changed=tagging.tag_studies, progress=bar,
            )  # fmt: skip
        failed |= result.status == "error"
        if not quiet or result.status != "ok":
            extra = f"{result.windows} window(s)"
            if result.pending:
                extra += f", {result.pending} PMID(s) still pending from earlier runs"
            click.echo(_summary_line(result.source, result.status, result.counts.as_dict(),
                                     result.error, extra=extra))  # fmt: skip
    return failed


def _run_feeds(
    db: Any, client: Any, settings: Settings, config: FeedsConfig, names: list[str] | None,
    quiet: bool,
) -> bool:  # fmt: skip
    from harvest.feed_harvest import harvest_feeds

    try:
        results = harvest_feeds(db, settings, client=client, only=names, config=config,
                                on_changed=tagging.tag_studies)  # fmt: skip
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from exc
    for result in results:
        if not quiet or result.failed or result.warnings:
            click.echo(result.line())
    return any(r.failed for r in results)


class _Progress:
    """A one-line record counter on a terminal; silent in cron logs.

    A bar needs a total, and a harvest learns its total window by window, so this
    counts records as batches commit instead.
    """

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.count = label, 0
        self.live = not quiet and sys.stderr.isatty()

    def __enter__(self) -> Callable[[int], None] | None:
        return self.update if self.live else None

    def update(self, n: int) -> None:
        self.count += n
        click.echo(f"\r{self.label}: {self.count} records", nl=False, err=True)

    def __exit__(self, *exc: object) -> None:
        if self.live and self.count:
            click.echo("\r\033[K", nl=False, err=True)  # clear the line for the summary


def _summary_line(
    name: str, state: str, counts: dict[str, int], error: str | None, *, extra: str = ""
) -> str:
    parts = [f"{k} {v}" for k, v in counts.items() if k in ("found", "new", "updated", "deleted")]
    line = f"{name}: {state}: " + ", ".join(parts)
    if extra:
        line += f" ({extra})"
    if error:
        line += f"; {error}"
    return line


@cli.command(name="import")
@common_options
@click.option("--force", is_flag=True, help="Re-read files whose exact bytes were imported before.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def import_(settings: Settings, files: tuple[str, ...], force: bool) -> None:
    """Import PubMed XML (plain or .gz) and MEDLINE (.nbib/.txt) files.

    A malformed file keeps the records before the fault and the next file is still read;
    the exit status is 1 if any file failed. A file already imported completely (same
    SHA-1) is skipped unless --force.
    """
    db = open_or_fail(settings)
    failed = False
    for path in files:
        result = ingest.import_file(db, path, force=force, on_changed=tagging.tag_studies)
        if result.skipped:
            click.echo(f"{path}: skipped: these exact bytes were imported before (--force to redo)")
            continue
        state = "error" if result.error else "ok"
        failed |= result.error is not None
        click.echo(_summary_line(path, state, result.counts.as_dict(), result.error))
    if failed:
        sys.exit(EXIT_SOURCE_FAILED)


@cli.command(name="status")
@click.option("--check", is_flag=True,
              help="Also check the file: SQLite's quick check, and the full-text index against "
                   "the studies (exit 1 on a problem). Reads every row: seconds per 100,000.")  # fmt: skip
@common_options
def status_(settings: Settings, check: bool) -> None:
    """Show each source: last success, last run's counts, last error, warnings."""
    db = open_or_fail(settings, create=False, read_only=True)
    rows = status.source_status(db, now=datetime.now(UTC))
    if not rows:
        click.echo(f"{settings.db_path}: no sources harvested yet (run `harvest run`)")
    for row in rows:
        click.echo(status.format_row(row))
    if rows:
        click.echo(status.format_totals(status.totals(db)))
    if check:
        problems, unchecked = store.check_database(db)
        for line in problems + unchecked:
            click.echo(f"check: {line}")
        verdict = "PROBLEMS FOUND" if problems else "incomplete" if unchecked else "ok"
        click.echo(f"check: {verdict} ({settings.db_path})")
        if problems:
            sys.exit(EXIT_SOURCE_FAILED)


@cli.command(name="demo")
@click.option(
    "--db",
    "db_path",
    default="db/demo.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to build the demo database (rebuilt from scratch).",
)
def demo_(db_path: str) -> None:
    """Build an offline demo database from the bundled sample of real records.

    \b
    Exit status: 0 built, with its report; 1 PATH is another file (refused, nothing
    changed), or the database or its report folder cannot be written (the message
    names the path and the reason); 2 a bad option.
    """
    try:
        db = demo.build_demo(db_path, on_changed=tagging.tag_studies)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # e.g. a folder that cannot be made
        raise output_error(db_path, exc) from exc
    info = demo.summarize(db)
    click.echo(f"Built {db_path} from the bundled sample of real on-topic records:")
    click.echo(
        f"  {info['studies']} studies ({info['first_year']}–{info['last_year']}), "
        f"{info['with_pmid']} with a PMID, {info['with_doi']} with a DOI, "
        f"{info['with_abstract']} with an abstract"
    )
    for row in db.query(
        "SELECT year, title FROM studies ORDER BY year DESC, id LIMIT 5"
    ):
        click.echo(f"  {row['year']}  {row['title'][:90]}")
    report = _report(db_path, quiet=False)
    if report is None:
        sys.exit(EXIT_SOURCE_FAILED)
    harvest, db = _harvest_command(), shlex.quote(db_path)
    click.echo("Explore it:")
    click.echo(f"  the \"does it work?\" report, to open in a browser: {report}")
    click.echo(f"  {harvest} serve --db {db}   # browse and search it in Datasette")
    click.echo(f"  {harvest} export --db {db} --format markdown -o demo.md   # a bibliography")
    click.echo(f"  {harvest} status --db {db}")


def _harvest_command() -> str:
    """How to run this ``harvest`` in the hints we print: ``harvest`` when that name on PATH
    is this program, else the path it was started by (e.g. ``.venv/bin/harvest`` when the
    virtualenv is not activated), else ``python -m harvest`` with this interpreter."""
    argv0 = sys.argv[0] if sys.argv else ""
    running = (os.path.realpath(argv0)
               if os.path.basename(argv0) == "harvest" and os.path.isfile(argv0) else None)  # fmt: skip
    on_path = shutil.which("harvest")
    if on_path and (running is None or os.path.realpath(on_path) == running):
        return "harvest"
    if running:
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m harvest"


@cli.command(name="tag")
@common_options
@click.option("--explain", "explain_ref", metavar="STUDY",
              help="Print each tag of this study with its origin, rule and evidence.")  # fmt: skip
@click.option("--all", "show_all", is_flag=True,
              help="With --explain: also the automatic tags a manual one overrides.")  # fmt: skip
@click.option("--set", "set_tag", nargs=2, metavar="STUDY FACET=VALUE",
              help="Record a researcher's tag; it overrides automatic ones and survives re-tagging.")  # fmt: skip
@click.option("--unset", "unset_tag", nargs=2, metavar="STUDY FACET=VALUE",
              help="Hide an automatic tag for good (re-tagging never brings it back).")  # fmt: skip
@click.option("--note", help="Why, for --set/--unset; stored as the tag's evidence.")
def tag_(
    settings: Settings, explain_ref: str | None, show_all: bool,
    set_tag: tuple[str, str] | None, unset_tag: tuple[str, str] | None, note: str | None,
) -> None:  # fmt: skip
    """Re-tag every study after a rule change, or explain, set and unset one study's tags.

    STUDY is a PMID, doi:10.xxxx/... or id:N (the studies.id of a row without a PMID, such as
    a feed entry with only a title). Deleted studies are not re-tagged: they keep the tags
    they had, manual and automatic.

    \b
    Examples:
      harvest tag                                   # re-tag all (manual tags are kept)
      harvest tag --explain 29764447
      harvest tag --set 29764447 design=rct --note "checked the full text"
      harvest tag --unset 35420007 intervention=acupuncture
      harvest tag --set doi:10.2522/ptj.20130255 design=rct   # a feed-only study
      harvest tag --explain id:812

    \b
    Exit status: 0 done; 1 a STUDY that matches nothing; 2 a usage error, such as an
    unknown facet or value, or --all/--note without --explain/--set/--unset.
    """
    if set_tag and unset_tag:
        raise click.UsageError("give --set or --unset, not both (one tag change per command)")
    if note is not None and not (set_tag or unset_tag):
        raise click.UsageError("--note needs --set or --unset (it is stored with that tag change)")
    if show_all and not (explain_ref or set_tag or unset_tag):
        raise click.UsageError("--all needs --explain STUDY (or --set/--unset, which explain "
                               "the study afterwards); without them tag re-tags every study")  # fmt: skip
    change = None
    if set_tag or unset_tag:
        change = _facet_value(*(set_tag or unset_tag), option="--set" if set_tag else "--unset")  # type: ignore[misc]
    db = open_or_fail(settings, create=False)
    try:
        if change:
            ref, facet, value = change
            if set_tag:
                tagging.set_manual(db, ref, facet, value, note=note)
            else:
                tagging.unset_manual(db, ref, facet, value, note=note)
            explain_ref = explain_ref or ref
        if explain_ref:
            for row in tagging.explain(db, explain_ref, include_suppressed=show_all):
                click.echo(_explain_line(row))
            return
        started = time.perf_counter()
        count = tagging.tag_studies(db)
        seconds = time.perf_counter() - started
        version = tagging.load_ruleset().version
        click.echo(f"Tagged {count} studies with rule set {version} in {seconds:.1f} s")
    except tagging.TagError as exc:
        raise click.ClickException(str(exc)) from exc


def _facet_value(ref: str, pair: str, *, option: str) -> tuple[str, str, str]:
    """STUDY and FACET=VALUE of --set/--unset, the pair checked against the rule set's
    vocabulary: a typo is a usage error (exit 2) before the database is opened."""
    facet, sep, value = pair.partition("=")
    if not sep or not facet.strip() or not value.strip():
        raise click.BadParameter(f"expected FACET=VALUE, got {pair!r}", param_hint=option)
    facet, value = facet.strip(), value.strip()
    try:
        tagging.load_ruleset().check_value(facet, value)
    except tagging.RuleSetError as exc:  # a broken rule file is not the user's typo
        raise click.ClickException(str(exc)) from exc
    except tagging.TagError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
    return ref, facet, value


def _explain_line(row: dict[str, Any]) -> str:
    origin = row["origin"] if row["origin"] == "manual" else f"{row['origin']} {row['rule_id']}"
    value = row["value"] + (f" ({row['detail']})" if row["detail"] else "")
    line = f"{row['facet']:<13} {value:<28} [{origin}] {row['evidence'] or ''}"
    if not row["effective"]:
        line += f"  -- not in effect: {row['reason']}"
    return line


@cli.command(name="report")
@common_options
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False),
    help="Folder for the HTML report (default: reports/ beside the database, e.g. db/reports/).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
def report_(settings: Settings, out_dir: str | None, quiet: bool) -> None:
    """Execute the notebooks against the database and write a self-contained HTML report.

    \b
    The report answers "does it work?" per intervention and condition from the tagged
    studies: designs, participants, review and trial conclusions, verdicts with reasons.
    It is an automated map of the literature, not medical advice.

    \b
    Exit status: 0 written; 1 no such database, a notebook failed, or the folder cannot
    be made or written (the message names the path and the reason); 2 a bad option.
    """
    from harvest.report import ReportError, build_report

    _configure_logging(quiet=quiet)
    try:
        path = build_report(settings.db_path, out_dir)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        click.echo(f"Report written to {path}")


# The workbench commands (export, list, serve) live in their own module.
cli.add_command(export_cmd)
cli.add_command(list_group)
cli.add_command(serve_cmd)

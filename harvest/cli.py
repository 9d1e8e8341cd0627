"""The ``harvest`` command line: wiring and printing only; the work is in the modules."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from harvest import __version__, demo, export, ingest, status
from harvest.config import ConfigError, Settings, load_settings
from harvest.lock import AlreadyRunning, harvest_lock
from harvest.store import StoreError, open_db

# A distinct exit status for "another run holds the lock", so cron wrappers can tell it
# from a failure (75 is EX_TEMPFAIL in sysexits.h: try again later).
EXIT_LOCKED = 75
EXIT_SOURCE_FAILED = 1


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--config`` for every command that opens the database."""

    @click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False),
        help="SQLite database (default: $HARVEST_DB, else [database] path, else db/evidence.db).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="harvest.toml to use (default: $HARVEST_CONFIG, ./harvest.toml, else built-in).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, db_path: str | None, config_path: str | None, **kwargs: Any) -> Any:
        try:
            settings = load_settings(config_path, db=db_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        return func(*args, settings=settings, **kwargs)

    return wrapper


def _open(settings: Settings, *, create: bool = True):  # noqa: ANN202
    try:
        return open_db(settings.db_path, create=create)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="harvest")
def cli() -> None:
    """doesitwork: harvest PubMed and journal feeds on IMS, dry needling and prolotherapy."""


@cli.command()
@common_options
@click.option("--full", is_flag=True, help="Ignore stored cursors and backfill every query.")
@click.option(
    "--reconcile", is_flag=True,
    help="Also check stored PMIDs against what NCBI still returns (weekly; tombstones withdrawn ones).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
def run(settings: Settings, full: bool, reconcile: bool, quiet: bool) -> None:
    """Harvest every configured source (for cron): PubMed queries, then feeds.

    \b
    Exit status: 0 all sources succeeded; 1 a source failed (the others still ran);
    75 another run holds the lock (nothing was done).
    """
    from harvest import pubmed
    from harvest.eutils import EutilsClient, EutilsConfig, EutilsError

    try:
        with harvest_lock(settings.db_path):
            db = _open(settings)
            try:
                client = EutilsClient(_eutils_config(settings, EutilsConfig))
            except EutilsError as exc:
                raise click.ClickException(str(exc)) from exc
            failed = False
            for topic in settings.topics.values():
                with _progress(topic.source_name, quiet) as bar:
                    result = pubmed.harvest_topic(
                        db, client, topic, settings.ncbi, full=full, reconcile=reconcile,
                        progress=bar,
                    )  # fmt: skip
                failed |= result.status == "error"
                if not quiet or result.status != "ok":
                    click.echo(_summary_line(result.source, result.status, result.counts.as_dict(),
                                             result.error, extra=f"{result.windows} window(s)"))  # fmt: skip
    except AlreadyRunning as exc:
        click.echo(f"harvest run: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    if failed:
        sys.exit(EXIT_SOURCE_FAILED)


def _eutils_config(settings: Settings, config_cls: type) -> Any:
    n = settings.ncbi
    return config_cls(
        base_url=n.base_url,
        email=n.email,
        api_key=n.api_key,
        tool=n.tool,
        rate_file=Path(f"{settings.db_path}.ncbi-rate"),
    )


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(label: str, quiet: bool) -> Any:
    """A progress bar on a terminal only: cron logs stay one line per source."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    bar = click.progressbar(length=None, label=label, file=sys.stderr)  # type: ignore[arg-type]

    class _Bar:
        def __enter__(self) -> Callable[[int], None]:
            bar.__enter__()
            return bar.update

        def __exit__(self, *exc: object) -> None:
            bar.__exit__(*exc)

    return _Bar()


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
    db = _open(settings)
    failed = False
    for path in files:
        result = ingest.import_file(db, path, force=force)
        if result.skipped:
            click.echo(f"{path}: skipped: these exact bytes were imported before (--force to redo)")
            continue
        state = "error" if result.error else "ok"
        failed |= result.error is not None
        click.echo(_summary_line(path, state, result.counts.as_dict(), result.error))
    if failed:
        sys.exit(EXIT_SOURCE_FAILED)


@cli.command(name="status")
@common_options
def status_(settings: Settings) -> None:
    """Show each source: last success, last run's counts, last error, warnings."""
    db = _open(settings, create=False)
    rows = status.source_status(db, now=datetime.now(UTC))
    if not rows:
        click.echo(f"{settings.db_path}: no sources harvested yet (run `harvest run`)")
        return
    for row in rows:
        click.echo(status.format_row(row))
    click.echo(status.format_totals(status.totals(db)))


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
    """Build an offline demo database from the bundled sample of real records."""
    try:
        db = demo.build_demo(db_path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
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
    click.echo(f"Explore it: harvest status --db {db_path}; harvest export --db {db_path}")


@cli.command(name="export")
@common_options
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True,
    help="Output format.",
)  # fmt: skip
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Write here instead of standard output.")  # fmt: skip
@click.option("--live-only", is_flag=True, help="Leave out deleted (tombstoned) studies.")
def export_(settings: Settings, fmt: str, output: Any, live_only: bool) -> None:
    """Export studies, one JSON object per line."""
    db = _open(settings, create=False)
    for line in export.to_jsonl(export.iter_studies(db, include_deleted=not live_only)):
        output.write(line)


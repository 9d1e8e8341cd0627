"""``harvest report``: the "Does it work?" HTML report (printing only; the work is in
:mod:`harvest.report`). Registered in ``harvest/cli.py`` with ``cli.add_command(report)``."""

from __future__ import annotations

import click

from harvest.config import ConfigError, load_settings


@click.command(name="report")
@click.option(
    "--db", "db_path", type=click.Path(dir_okay=False),
    help="SQLite database (default: $HARVEST_DB, else [database] path, else db/evidence.db).",
)  # fmt: skip
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="harvest.toml to use (default: $HARVEST_CONFIG, ./harvest.toml, else built-in).",
)  # fmt: skip
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False),
    help="Folder for the HTML report (default: reports/ beside the database, e.g. db/reports/).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
def report(db_path: str | None, config_path: str | None, out_dir: str | None, quiet: bool) -> None:
    """Execute the notebooks against the database and write a self-contained HTML report.

    \b
    The report answers "does it work?" per intervention and condition from the tagged
    studies: designs, participants, review and trial conclusions, verdicts with reasons.
    It is an automated map of the literature, not medical advice.
    """
    from harvest.report import ReportError, build_report

    try:
        settings = load_settings(config_path, db=db_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        path = build_report(settings.db_path, out_dir)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        click.echo(f"Report written to {path}")

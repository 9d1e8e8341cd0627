"""Options and helpers shared by the command modules (``cli``, ``cli_workbench``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from sqlite_utils import Database

from harvest.config import ConfigError, Settings, load_settings
from harvest.store import StoreError, open_db


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


def open_or_fail(settings: Settings, *, create: bool = True) -> Database:
    """Open the database, turning a store error into a clean CLI error."""
    try:
        return open_db(settings.db_path, create=create)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc

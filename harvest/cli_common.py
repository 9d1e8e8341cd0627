"""Options and helpers shared by the command modules (``cli``, ``cli_workbench``)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any

import click
from sqlite_utils import Database

from harvest.config import ConfigError, Settings, load_settings
from harvest.store import StoreError, open_db

# 75 is EX_TEMPFAIL in sysexits.h (try again later): another run holds the lock, or
# another writer held SQLite's write lock past the busy timeout.
EXIT_LOCKED = 75
# 73 is EX_CANTCREAT: the database or its lock file cannot be written (a read-only file,
# folder or file system); nothing was done.
EXIT_CANTCREAT = 73
# 78 is EX_CONFIG: the configuration (file or environment) is missing or invalid.
EXIT_CONFIG = 78
BUSY_MESSAGE = "database is busy: another process held its write lock too long; try again later"


class CannotWrite(click.ClickException):
    """The database, its folder or its lock file cannot be written: exit status 73."""

    exit_code = EXIT_CANTCREAT


def output_error(path: object, exc: OSError, what: str = "cannot write") -> click.ClickException:
    """An OS error on a path the user gave (or its default), as a message naming the path
    and the reason instead of a traceback."""
    where = exc.filename if exc.filename is not None else path
    return click.ClickException(f"{where}: {what} ({exc.strerror or exc})")


class ConfigFailure(click.ClickException):
    """A configuration error: exit status 78, so cron can tell it from a failed source."""

    exit_code = EXIT_CONFIG


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
            raise ConfigFailure(str(exc)) from exc
        try:
            return func(*args, settings=settings, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise _busy_error() from exc

    return wrapper


def _is_busy(exc: BaseException | None) -> bool:
    """SQLITE_BUSY after the busy timeout: another writer kept the lock."""
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


def _busy_error() -> click.ClickException:
    error = click.ClickException(BUSY_MESSAGE)
    error.exit_code = EXIT_LOCKED
    return error


def open_or_fail(settings: Settings, *, create: bool = True, read_only: bool = False) -> Database:
    """Open the database, turning a store error into a clean CLI error (``read_only``: the
    command only reads, so a file we may not write is fine)."""
    try:
        return open_db(settings.db_path, create=create, read_only=read_only)
    except StoreError as exc:
        # open_db wraps SQLite errors; a busy lock (e.g. during a migration) is not a bad file
        if _is_busy(exc.__cause__):
            raise _busy_error() from exc
        raise click.ClickException(str(exc)) from exc

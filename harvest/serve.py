"""Build the Datasette command that serves the evidence base to researchers.

Datasette (0.65.x: canned queries, facets and plugin settings live in metadata) serves the
live database *mutable*, i.e. opened ``mode=ro`` and re-read as cron writes (WAL), never
``immutable`` (field notes 3.8: an immutable file that changes can give wrong results). It
binds to 127.0.0.1 unless told otherwise, cannot write (no write canned queries), and every
SQL statement has a time limit. Arbitrary SQL is allowed on loopback only, by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harvest import config, shared_dir
from harvest.store import open_db

REPO_DB_DIR = shared_dir("db")
DEFAULT_METADATA = REPO_DB_DIR / "metadata.yml"
DEFAULT_PLUGINS_DIR = REPO_DB_DIR / "plugins"
# The name db/metadata.yml uses for the database; re-keyed to the served file's name.
METADATA_DB_KEY = "evidence"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeError(Exception):
    """A missing database, metadata file or plugins folder."""


@dataclass
class ServeOptions:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8001
    metadata: Path = DEFAULT_METADATA
    plugins_dir: Path = DEFAULT_PLUGINS_DIR
    sql_time_limit_ms: int = 2000
    facet_time_limit_ms: int = 1000
    allow_sql: bool | None = None  # None: only when bound to loopback
    max_returned_rows: int = 1000


def database_name(db_path: Path) -> str:
    """Datasette names a database after its file, without the extension."""
    return db_path.name.rsplit(".", 1)[0]


def build_metadata(metadata_path: Path, db_name: str) -> dict[str, Any]:
    """Our metadata with its database section (and links) re-keyed to ``db_name``."""
    try:
        meta = yaml.safe_load(metadata_path.read_text("utf-8"))
    except OSError as exc:
        raise ServeError(f"{metadata_path}: cannot read the Datasette metadata ({exc})") from exc
    databases = meta.get("databases") or {}
    if METADATA_DB_KEY in databases and db_name != METADATA_DB_KEY:
        databases[db_name] = databases.pop(METADATA_DB_KEY)
    if "description_html" in meta:
        meta["description_html"] = meta["description_html"].replace(
            f"/{METADATA_DB_KEY}/", f"/{db_name}/"
        )
    return meta


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/doesitwork/serve``, else ``~/.cache/doesitwork/serve``."""
    return config.cache_dir(os.environ if env is None else env) / "serve"


def metadata_file(db_path: Path, directory: Path | None = None) -> Path:
    """Where the generated metadata for this database is written: one file per database
    (by its absolute path), kept so that a printed command still runs later, and rewritten
    by every ``harvest serve``. ``directory`` defaults to :func:`cache_dir`."""
    key = hashlib.sha1(str(db_path.resolve()).encode()).hexdigest()[:10]
    return (directory or cache_dir()) / f"{database_name(db_path)}-{key}.metadata.json"


def free_port(host: str) -> int:
    """A port free on ``host`` now (0 if the system cannot say), so that ``--port 0`` can
    print the address it serves at; another program could take it first, in which case
    Datasette stops with an error rather than serving elsewhere."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.bind(addr)
            return int(sock.getsockname()[1])
    except OSError:
        return 0


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def prepare(options: ServeOptions, directory: Path | None = None) -> list[str]:
    """Bring the schema up to date (views the metadata names), write the generated metadata
    to :func:`metadata_file` (in ``directory``, else the user's cache folder) and return the
    Datasette command line."""
    db_path = options.db_path
    if not db_path.exists():
        raise ServeError(f"{db_path}: no such database (run `harvest run`, `import` or `demo`)")
    if not options.plugins_dir.is_dir():
        raise ServeError(f"{options.plugins_dir}: no such Datasette plugins folder")
    open_db(db_path, create=False, read_only=True).conn.close()  # Datasette only reads
    meta = build_metadata(options.metadata, database_name(db_path))
    meta_file = metadata_file(db_path, directory)
    partial = meta_file.with_name(f".{meta_file.name}.{os.getpid()}")
    try:
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(meta, ensure_ascii=False, indent=1), "utf-8")
        os.replace(partial, meta_file)  # a Datasette starting now reads the old or the new file
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise ServeError(f"{meta_file}: cannot write the Datasette metadata ({exc})") from exc
    allow_sql = options.allow_sql
    if allow_sql is None:
        allow_sql = options.host in LOOPBACK
    settings = {
        "sql_time_limit_ms": options.sql_time_limit_ms,
        "facet_time_limit_ms": options.facet_time_limit_ms,
        "max_returned_rows": options.max_returned_rows,
        # Our metadata lists the facets researchers use. Datasette's suggestions named a
        # column twice (first_seen as a column and as a date once a database holds a few
        # runs), offered JSON arrays as plain strings, and cost a query per column per page.
        "suggest_facets": "off",
        "default_allow_sql": "on" if allow_sql else "off",
        # a CSV stream ignores max_returned_rows; keep it for local use only
        "allow_csv_stream": "on" if allow_sql else "off",
        "allow_download": "off",
    }
    cmd = [
        sys.executable, "-m", "datasette", "serve", str(db_path),
        "--metadata", str(meta_file),
        "--plugins-dir", str(options.plugins_dir),
        "--host", options.host, "--port", str(options.port),
    ]  # fmt: skip
    for key, value in settings.items():
        cmd += ["--setting", key, str(value)]
    return cmd


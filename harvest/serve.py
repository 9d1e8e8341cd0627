"""Build the Datasette command that serves the evidence base to researchers.

Datasette (0.65.x: canned queries, facets and plugin settings live in metadata) serves the
live database *mutable*, i.e. opened ``mode=ro`` and re-read as cron writes (WAL), never
``immutable`` (field notes 3.8: an immutable file that changes can give wrong results). It
binds to 127.0.0.1 unless told otherwise, cannot write (no write canned queries), and every
SQL statement has a time limit. Arbitrary SQL is allowed on loopback only, by default.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harvest import shared_dir
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


def prepare(options: ServeOptions, workdir: Path) -> list[str]:
    """Bring the schema up to date (views the metadata names), write the generated metadata
    into ``workdir`` and return the Datasette command line."""
    db_path = options.db_path
    if not db_path.exists():
        raise ServeError(f"{db_path}: no such database (run `harvest run`, `import` or `demo`)")
    if not options.plugins_dir.is_dir():
        raise ServeError(f"{options.plugins_dir}: no such Datasette plugins folder")
    open_db(db_path, create=False).conn.close()
    meta = build_metadata(options.metadata, database_name(db_path))
    meta_file = workdir / "metadata.json"
    meta_file.write_text(json.dumps(meta, ensure_ascii=False, indent=1), "utf-8")
    allow_sql = options.allow_sql
    if allow_sql is None:
        allow_sql = options.host in LOOPBACK
    settings = {
        "sql_time_limit_ms": options.sql_time_limit_ms,
        "facet_time_limit_ms": options.facet_time_limit_ms,
        "max_returned_rows": options.max_returned_rows,
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


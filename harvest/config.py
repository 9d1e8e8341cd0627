"""Configuration: ``harvest.toml`` plus environment variables, validated early.

Precedence: command-line flag > environment > TOML file > built-in default. The TOML
file is found at ``--config``, else ``$HARVEST_CONFIG``, else ``./harvest.toml``, else the
copy shipped inside the package. Secrets (``NCBI_API_KEY``) and the contact e-mail come
from the environment so that the file can be committed; there is never a built-in address.

NCBI's request budget is per IP address (or per API key), not per database, so the file
that paces requests across processes is per user by default (``ncbi.rate`` in the user's
cache directory), shared by every harvest this user runs on the host.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_BASE_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"


class ConfigError(Exception):
    """A missing, unreadable or invalid configuration."""


@dataclass(frozen=True)
class Topic:
    """One treatment: its PubMed query and a human title."""

    name: str
    title: str
    query: str

    @property
    def query_version(self) -> str:
        """A short hash of the normalized query text, recorded with every run."""
        text = " ".join(self.query.split())
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def source_name(self) -> str:
        return f"pubmed:{self.name}"


@dataclass(frozen=True)
class NcbiSettings:
    base_url: str = DEFAULT_BASE_URL
    tool: str = "doesitwork"
    email: str | None = None
    api_key: str | None = None
    batch_size: int = 500
    overlap_days: int = 3
    backfill_from: str = "1900/01/01"
    expected_hours: int = 26
    # Where processes reserve request slots; load_settings fills in default_rate_file().
    rate_file: Path | None = None
    # Seconds to connect, and of silence tolerated while reading; tries per request.
    connect_timeout: float = 10
    read_timeout: float = 30
    max_tries: int = 5


@dataclass(frozen=True)
class Settings:
    db_path: Path
    ncbi: NcbiSettings
    topics: dict[str, Topic]
    config_path: str
    # The whole parsed file, for sections other modules own (e.g. ``feeds``).
    raw: dict[str, Any] = field(default_factory=dict)


def find_config(explicit: str | os.PathLike[str] | None = None) -> tuple[str, bytes]:
    """Return (where, TOML bytes) following the documented search order."""
    for candidate in (explicit, os.environ.get("HARVEST_CONFIG")):
        if candidate:
            path = Path(candidate)
            try:
                return str(path), path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from exc
    local = Path("harvest.toml")
    if local.is_file():
        return str(local), local.read_bytes()
    packaged = resources.files("harvest") / "harvest.toml"
    return "(built-in harvest.toml)", packaged.read_bytes()


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    db: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Read the configuration and the environment into :class:`Settings`."""
    env = dict(os.environ) if env is None else env
    where, data = find_config(config)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    ncbi = _ncbi(raw.get("ncbi", {}), env, where)
    topics = _topics(raw.get("topics", {}), where)
    db_path = db or env.get("HARVEST_DB") or _database_path(raw.get("database", {}), where)
    return Settings(
        db_path=Path(db_path), ncbi=ncbi, topics=topics, config_path=where, raw=raw
    )


def _database_path(section: Any, where: str) -> str:
    """``[database] path``, checked: a TOML number or list would fail later as a TypeError."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [database] must be a table")
    path = section.get("path") or "db/evidence.db"
    if not isinstance(path, str):
        raise ConfigError(f"{where}: [database] path must be a string, not {path!r}")
    return path


def _ncbi(section: dict[str, Any], env: dict[str, str], where: str) -> NcbiSettings:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [ncbi] must be a table")
    if "api_key" in section:
        raise ConfigError(f"{where}: put the API key in NCBI_API_KEY, not in the file")
    unknown = set(section) - set(NcbiSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [ncbi]: {', '.join(sorted(unknown))}")
    values = {**section}
    values["base_url"] = env.get("NCBI_EUTILS_URL") or section.get("base_url") or DEFAULT_BASE_URL
    values["email"] = env.get("NCBI_EMAIL") or section.get("email") or None
    values["api_key"] = env.get("NCBI_API_KEY") or None
    values["rate_file"] = _rate_file(env.get("NCBI_RATE_FILE") or section.get("rate_file"), env, where)
    if values["email"] and not re.fullmatch(r"[^@\s]+@[^@\s]+", values["email"]):
        raise ConfigError(f"NCBI e-mail {values['email']!r} does not look like an address")
    for key in ("batch_size", "overlap_days", "expected_hours"):
        if key in values and (not isinstance(values[key], int) or values[key] < 0):
            raise ConfigError(f"{where}: [ncbi] {key} must be a non-negative integer")
    for key in ("connect_timeout", "read_timeout"):
        value = values.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{where}: [ncbi] {key} must be a positive number of seconds")
    if not isinstance(values.get("max_tries", 1), int) or values.get("max_tries", 1) < 1:
        raise ConfigError(f"{where}: [ncbi] max_tries must be an integer of at least 1")
    if not 1 <= values.get("batch_size", 500) <= 10000:
        raise ConfigError(f"{where}: [ncbi] batch_size must be between 1 and 10000")
    if "backfill_from" in values:
        values["backfill_from"] = _backfill_from(values["backfill_from"], where)
    return NcbiSettings(**values)


def default_rate_file(env: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/doesitwork/ncbi.rate``, else ``~/.cache/doesitwork/ncbi.rate``.

    Nothing is created here: the E-utilities client creates the folder on first use.
    """
    return cache_dir(env) / "ncbi.rate"


def cache_dir(env: Mapping[str, str]) -> Path:
    """This user's cache folder for doesitwork: ``$XDG_CACHE_HOME/doesitwork``, else
    ``~/.cache/doesitwork`` (not created here)."""
    cache = env.get("XDG_CACHE_HOME") or ""
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(cache) if os.path.isabs(cache) else _home(env) / ".cache"
    return base / "doesitwork"


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _rate_file(value: Any, env: Mapping[str, str], where: str) -> Path:
    """``NCBI_RATE_FILE`` or ``[ncbi] rate_file`` (``~`` allowed), else the per-user default."""
    if value is None or value == "":
        return default_rate_file(env)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: [ncbi] rate_file must be a path string, not {value!r}")
    if value == "~" or value.startswith("~/"):
        return _home(env) / value[2:]
    return Path(value).expanduser()  # ~user/...


def _backfill_from(value: Any, where: str) -> str:
    """E-utilities' ``YYYY/MM/DD`` (or ``YYYY/MM``, ``YYYY``); a TOML date is accepted too."""
    if isinstance(value, date):  # backfill_from = 2020-01-01, unquoted
        return value.strftime("%Y/%m/%d")
    parts = str(value).replace("-", "/").split("/")
    try:
        if not 1 <= len(parts) <= 3 or len(parts[0]) != 4:
            raise ValueError
        date(*[int(p) for p in parts], *[1] * (3 - len(parts)))
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: [ncbi] backfill_from must be a date such as 2000/01/01, not {value!r}"
        ) from None
    return "/".join(parts)


def _topics(section: dict[str, Any], where: str) -> dict[str, Topic]:
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{where}: no [topics.*] defined; nothing to harvest")
    topics = {}
    for name, body in section.items():
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ConfigError(f"{where}: topic name {name!r} must be lower-case letters, digits, _")
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(f"{where}: [topics.{name}] needs a non-empty query")
        topics[name] = Topic(name=name, title=body.get("title", name), query=" ".join(query.split()))
    return topics

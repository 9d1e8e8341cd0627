"""The feeds' part of ``harvest.toml``: ``[[feeds]]``, ``[feed_options]``, ``[feed_match.*]``.

Read from :attr:`harvest.config.Settings.raw` and validated here, early, with errors
that name the table and key (raised as :class:`harvest.config.ConfigError`, which the
CLI already reports). The format::

    [feed_options]            # all optional
    connect_timeout = 10      # seconds
    read_timeout = 30         # seconds, per wait on the socket
    max_seconds = 60          # whole-feed budget
    max_bytes = 20_000_000    # body cut off beyond this
    gone_after = 2            # consecutive 404s before a feed counts as gone (a 410 at once)
    expected_hours = 26       # `harvest status` warns past this without success
    upgrade_batch = 50        # DOIs per PubMed search in the DOI->PMID upgrade
    upgrade_max = 500         # DOIs looked up per run

    [feed_match.dry_needling] # one per topic; journal feeds keep entries that match
    any = ["dry needl*", "trigger point needl*"]   # phrases; * ends a word stem
    all = [["IMS", "needl*"]]                      # every phrase of one group
    none = ["veterinary"]                          # vetoes a match

    [[feeds]]
    name = "jospt"            # lower-case letters, digits, - and _; source "feed:jospt"
    kind = "journal"          # or "pubmed-search" (already on topic)
    url = "https://..."       # http or https
    topics = ["dry_needling"] # journal: default every topic; pubmed-search: topic = "..."
    journal = "J Orthop Sports Phys Ther"  # for entries that do not name it
    enabled = true
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harvest.config import ConfigError, Settings
from harvest.feeds import FetchLimits

__all__ = ["Feed", "FeedOptions", "FeedsConfig", "MatchRule", "load_feeds"]

KINDS = ("pubmed-search", "journal")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_FEED_KEYS = {"name", "kind", "url", "topic", "topics", "journal", "title", "enabled"}
_MATCH_KEYS = {"any", "all", "none"}


@dataclass(frozen=True)
class MatchRule:
    """A topic's text rule over an entry's title and summary (case-insensitive)."""

    topic: str
    any: tuple[re.Pattern[str], ...] = ()
    all: tuple[tuple[re.Pattern[str], ...], ...] = ()
    none: tuple[re.Pattern[str], ...] = ()

    def matches(self, text: str) -> bool:
        # An empty group would be all([]), True: it matches nothing instead.
        hit = any(p.search(text) for p in self.any) or any(
            group and all(p.search(text) for p in group) for group in self.all
        )
        return hit and not any(p.search(text) for p in self.none)


@dataclass(frozen=True)
class Feed:
    name: str
    kind: str
    url: str
    topics: tuple[str, ...]
    journal: str | None = None
    title: str | None = None
    enabled: bool = True

    @property
    def source_name(self) -> str:
        return f"feed:{self.name}"


_FETCH_DEFAULTS = FetchLimits()


@dataclass(frozen=True)
class FeedOptions:
    # The fetch limits default to the fetcher's own, so the two never drift apart.
    connect_timeout: float = _FETCH_DEFAULTS.connect_timeout
    read_timeout: float = _FETCH_DEFAULTS.read_timeout
    max_seconds: float = _FETCH_DEFAULTS.max_seconds
    max_bytes: int = _FETCH_DEFAULTS.max_bytes
    gone_after: int = 2
    expected_hours: int = 26
    upgrade_batch: int = 50
    upgrade_max: int = 500

    @property
    def limits(self) -> FetchLimits:
        return FetchLimits(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_seconds=self.max_seconds,
            max_bytes=self.max_bytes,
        )


@dataclass(frozen=True)
class FeedsConfig:
    feeds: tuple[Feed, ...] = ()
    options: FeedOptions = field(default_factory=FeedOptions)
    rules: dict[str, MatchRule] = field(default_factory=dict)

    def feed(self, name: str) -> Feed:
        for f in self.feeds:
            if f.name == name:
                return f
        raise KeyError(name)


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A phrase as a word-bounded, case-insensitive regex: spaces and hyphens interchange,
    a trailing ``*`` on a word matches any ending ("needl*" finds needle, needling)."""
    words = [w for w in re.split(r"[\s\-]+", phrase.strip()) if w]
    if not words:
        raise ValueError("empty phrase")
    parts = []
    for w in words:
        stem = w.endswith("*")
        core = re.escape(w.rstrip("*"))
        if not core:
            raise ValueError(f"phrase {phrase!r} has a bare '*'")
        parts.append(core + (r"\w*" if stem else ""))
    tail = "" if words[-1].endswith("*") else r"(?!\w)"
    return re.compile(r"(?<!\w)" + r"[\s\-\u2010-\u2015]+".join(parts) + tail, re.IGNORECASE)


def load_feeds(settings: Settings) -> FeedsConfig:
    """Parse and validate the feeds' sections of the configuration."""
    raw, where = settings.raw, settings.config_path
    options = _options(raw.get("feed_options", {}), where)
    rules = _rules(raw.get("feed_match", {}), settings, where)
    feeds_raw = raw.get("feeds", [])
    if not isinstance(feeds_raw, list):
        raise ConfigError(f"{where}: feeds must be an array of tables ([[feeds]])")
    feeds: list[Feed] = []
    seen: set[str] = set()
    for i, body in enumerate(feeds_raw, 1):
        feed = _feed(body, i, settings, where)
        if feed.name in seen:
            raise ConfigError(f"{where}: [[feeds]] #{i}: name {feed.name!r} is used twice")
        seen.add(feed.name)
        if feed.kind == "journal" and feed.enabled:
            missing = [t for t in feed.topics if t not in rules]
            if missing:
                raise ConfigError(
                    f"{where}: [[feeds]] {feed.name}: journal feeds need a topic rule; "
                    f"add [feed_match.{missing[0]}]"
                )
        feeds.append(feed)
    return FeedsConfig(feeds=tuple(feeds), options=options, rules=rules)


def _feed(body: Any, i: int, settings: Settings, where: str) -> Feed:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: [[feeds]] #{i} must be a table")
    label = f"[[feeds]] #{i}"
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: {label}: name must be lower-case letters, digits, - or _")
    label = f"[[feeds]] {name}"
    unknown = set(body) - _FEED_KEYS
    if unknown:
        raise ConfigError(f"{where}: {label}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: {label}: kind must be one of {', '.join(KINDS)}")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: {label}: enabled must be true or false")
    url = body.get("url", "")
    if not isinstance(url, str):
        raise ConfigError(f"{where}: {label}: url must be a string")
    url = url.strip()
    if url or enabled:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: {label}: url must be an http or https URL"
                              + ("" if url else " (or set enabled = false)"))  # fmt: skip
    if "topic" in body and "topics" in body:
        raise ConfigError(f"{where}: {label}: give topic or topics, not both")
    topics = body.get("topics", [body["topic"]] if "topic" in body else None)
    if topics is None:
        if kind == "pubmed-search":
            raise ConfigError(f"{where}: {label}: a pubmed-search feed needs topic = \"...\"")
        topics = list(settings.topics)
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
        raise ConfigError(f"{where}: {label}: topics must be a non-empty list of topic names")
    for t in topics:
        if t not in settings.topics:
            raise ConfigError(f"{where}: {label}: unknown topic {t!r} (known: "
                              f"{', '.join(settings.topics)})")  # fmt: skip
    for key in ("journal", "title"):
        if key in body and not isinstance(body[key], str):
            raise ConfigError(f"{where}: {label}: {key} must be a string")
    return Feed(name=name, kind=kind, url=url, topics=tuple(topics), journal=body.get("journal"),
                title=body.get("title"), enabled=enabled)  # fmt: skip


def _options(section: Any, where: str) -> FeedOptions:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [feed_options] must be a table")
    fields = FeedOptions.__dataclass_fields__
    unknown = set(section) - set(fields)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(f"{where}: unknown key(s) in [feed_options]: {names}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        want_int = fields[key].type in ("int", int)
        ok = isinstance(value, int) if want_int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value <= 0:
            kind = "a positive integer" if want_int else "a positive number"
            raise ConfigError(f"{where}: [feed_options] {key} must be {kind}")
        values[key] = value
    return FeedOptions(**values)


def _rules(section: Any, settings: Settings, where: str) -> dict[str, MatchRule]:
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: [feed_match] must hold one table per topic")
    rules = {}
    for topic, body in section.items():
        label = f"[feed_match.{topic}]"
        if topic not in settings.topics:
            raise ConfigError(f"{where}: {label}: unknown topic {topic!r}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {label} must be a table")
        unknown = set(body) - _MATCH_KEYS
        if unknown:
            raise ConfigError(f"{where}: {label}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            any_ = tuple(map(phrase_pattern, _strings(body.get("any", []), where, label, "any")))
            none = tuple(map(phrase_pattern, _strings(body.get("none", []), where, label, "none")))
            groups = body.get("all", [])
            if not isinstance(groups, list):
                raise ConfigError(f"{where}: {label}: all must be a list of lists of phrases")
            if any(g == [] for g in groups):
                # An empty group has no phrase to require, so it would match every entry.
                raise ConfigError(f"{where}: {label}: all has an empty group []; give each "
                                  f"group at least one phrase")  # fmt: skip
            all_ = tuple(
                tuple(phrase_pattern(p) for p in _strings(g, where, label, "all"))
                for g in groups
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from exc
        if not any_ and not all_:
            raise ConfigError(f"{where}: {label}: needs at least one phrase in any or all")
        rules[topic] = MatchRule(topic=topic, any=any_, all=all_, none=none)
    return rules


def _strings(value: Any, where: str, label: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: {label}: {key} must be a list of non-empty strings")
    return value

"""Explainable tags: intervention, condition, design, comparator, population, sample size,
conclusion (and retraction/erratum flags) for every study.

The vocabularies and rules are data (``harvest/rules/*.toml``, see the README there); this
module only interprets them. Every tag carries its origin (``nlm`` when it comes from NLM's
index — publication types, MeSH, correction links —, ``rule`` when from the text), the id of
the rule that gave it, the rule-set version and the evidence (matched text span, sentence or
index heading). A researcher's manual tag (origin ``manual``) overrides automatic ones and
survives re-tagging; an "unset" is a manual row with ``negated = 1`` that hides an automatic
value.

:func:`classify` is pure (a ``studies`` row in, tags out). :func:`tag_studies` writes them,
inside the caller's transaction when one is open.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from harvest.store import utcnow, write_tx

__all__ = [
    "AUTOMATIC_ORIGINS",
    "RuleSet",
    "RuleSetError",
    "SINGLE_VALUED_FACETS",
    "Tag",
    "TagError",
    "classify",
    "clear_manual",
    "explain",
    "load_ruleset",
    "resolve_study",
    "set_manual",
    "study_summaries",
    "study_summary",
    "tag_studies",
    "unset_manual",
]

AUTOMATIC_ORIGINS = ("nlm", "rule")
# Mirrors the ``multi = false`` facets of rules/ruleset.toml; the SQL views (schema.py,
# m201_tags_views, m202_tags_views_live_studies) hard-code the same list and a test keeps
# the three in step.
SINGLE_VALUED_FACETS = ("design", "population", "sample_size", "conclusion")
# Columns of ``studies`` the classifier reads.
ROW_COLUMNS = (
    "id", "pmid", "title", "abstract", "keywords", "journal", "publication_types", "mesh",
    "medline_status", "corrections", "retracted", "record_source",
)  # fmt: skip
_FACET_ORDER = (
    "flag", "intervention", "condition", "population", "design", "comparator", "sample_size",
    "conclusion",
)  # fmt: skip
_EVIDENCE_WIDTH = 70
_MAX_EVIDENCE = 3


class TagError(Exception):
    """A tagging request that cannot be honoured: unknown PMID, facet or value."""


class RuleSetError(TagError):
    """A rule file that cannot be used (bad TOML, unknown value, broken pattern)."""


@dataclass(frozen=True, slots=True)
class Tag:
    """One automatic tag, as :func:`classify` returns it and ``tags`` stores it."""

    facet: str
    value: str
    detail: str | None
    origin: str  # "nlm" | "rule"
    rule_id: str
    ruleset_version: str
    evidence: str | None


# ------------------------------------------------------------------------- fast patterns
#
# A rule set holds several hundred case-insensitive patterns; run naively (re.IGNORECASE on
# every field) a full re-tag manages ~120 studies/s. Two things make it ~20x faster without
# changing what matches:
# 1. Each pattern is lower-cased (outside escapes) and run on the lower-cased text without
#    IGNORECASE, and a leading \b before a literal is checked in Python instead, so that the
#    regex engine's literal-prefix search applies.
# 2. From each pattern's parse tree we derive words (or word prefixes, or substrings) that any
#    match must contain; a study's tokens then say which patterns can possibly match, and only
#    those run. A pattern we cannot analyse simply always runs.

try:  # CPython's regex parser; if it is unavailable every pattern just always runs
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover
    _sre = _sre_parse = None  # type: ignore[assignment]



def _lower_pattern(pattern: str) -> str:
    """Lower-case a regex's literals, leaving escapes (\\b, \\S, \\W...) and group syntax."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if pattern.startswith("(?P<", i) or pattern.startswith("(?P=", i):
            j = pattern.index(">" if pattern[i + 3] == "<" else ")", i)
            out.append(pattern[i : j + 1])
            i = j + 1
            continue
        out.append(c.lower())
        i += 1
    return "".join(out)


def _word_first(item: Any) -> bool:
    """Whether a parsed item can only match a word character: a letter/digit literal or \\d."""
    op, av = item
    if op is _sre.LITERAL:
        return chr(av).isalnum()
    if op is _sre.IN:
        return all(sop is _sre.CATEGORY and sav in (_sre.CATEGORY_DIGIT, _sre.CATEGORY_UNI_DIGIT) for sop, sav in av)
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1:
        sub = _items(av[2])
        return len(sub) == 1 and _word_first(sub[0])
    return False


def _is_wordch(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Pat:
    """One compiled pattern, with the keys a text must contain for it to match."""

    __slots__ = ("idx", "source", "rx", "lower", "strip_b", "keys", "subkeys", "extra", "lid")

    def __init__(self, idx: int, source: str) -> None:
        self.idx = idx
        self.source = source
        self.lower = "(?-i" not in source and "(?i" not in source
        lowered = _lower_pattern(source)
        self.strip_b = False
        parsed = None
        if _sre_parse is not None:
            try:
                parsed = _sre_parse.parse(lowered)
            except Exception:  # noqa: BLE001 - any parser trouble: run the pattern always
                parsed = None
        if self.lower:
            body = lowered
            if (
                parsed is not None and body.startswith(r"\b") and len(parsed.data) >= 2
                and parsed.data[0] == (_sre.AT, _sre.AT_BOUNDARY)
                and _word_first(parsed.data[1])
            ):  # fmt: skip  (a top-level "a|b" would parse as one BRANCH, not AT first)
                body, self.strip_b = body[2:], True
            self.rx = re.compile(body)
        else:
            self.rx = re.compile(source, re.IGNORECASE)
        groups = sorted(_groups(parsed.data, False), key=lambda g: -g[0]) if parsed is not None else []
        # the most selective group is indexed; a few more are checked per record
        self.keys = groups[0][1] if groups else None
        self.extra = [g[1] for g in groups[1:4]]
        self.subkeys = tuple(k for kind, k in self.keys or () if kind == "sub")
        self.lid = -1  # the _PatList it belongs to

    def finditer(self, doc: _Doc, fname: str) -> Iterable[re.Match[str]]:
        if self.lower and doc.low_ok:
            text = doc.low[fname]
        else:
            text = doc.fields[fname]
            if self.lower:  # lower-casing changed lengths: fall back to IGNORECASE
                return re.finditer(self.source, text, re.IGNORECASE)
        if not self.strip_b:
            return self.rx.finditer(text)
        return self._word_start_matches(text)

    def _word_start_matches(self, text: str) -> list[re.Match[str]]:
        """Matches that start a word (the pattern's leading \\b, dropped for speed). A match
        starting mid-word is retried one character on, not skipped past: it may have covered
        a real match ("researched and searched PubMed")."""
        out: list[re.Match[str]] = []
        pos = 0
        while (m := self.rx.search(text, pos)) is not None:
            if m.start() and _is_wordch(text[m.start() - 1]):
                pos = m.start() + 1
                continue
            out.append(m)
            pos = m.end() if m.end() > m.start() else m.end() + 1
        return out


Group = tuple[float, list[tuple[str, str]]]


def _groups(items: Any, word_start: bool) -> list[Group]:
    """Key groups a match of this sequence must satisfy: each group is a list of keys of
    which the text must contain one (a group from an alternation has several)."""
    return _walk(items, word_start)[0]


def _walk(items: Any, word_start: bool) -> tuple[list[Group], bool]:
    """(groups, whether a word may start right after the sequence)."""
    groups: list[Group] = []
    run: list[str] = []
    run_ws = word_start
    ws = word_start

    def flush(end_boundary: bool) -> None:
        nonlocal run
        if run:
            groups.extend(_run_keys("".join(run), run_ws, end_boundary))
        run = []

    for op, av in items:
        if op is _sre.LITERAL:
            if not run:
                run_ws = ws
            run.append(chr(av))
            ws = not chr(av).isalnum()
            continue
        if op is _sre.AT:
            flush(av in (_sre.AT_BOUNDARY, _sre.AT_END, _sre.AT_END_STRING))
            ws = av in (_sre.AT_BOUNDARY, _sre.AT_BEGINNING, _sre.AT_BEGINNING_STRING)
            continue
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            continue  # zero width: the run and word-start state carry on
        flush(False)
        if op is _sre.SUBPATTERN:
            sub_groups, ws = _walk(_items(av[-1]), ws)
            groups.extend(sub_groups)
        elif op is _sre.BRANCH:
            g, ends = _branch_keys(av[1], ws)
            if g is not None:
                groups.append(g)
            ws = ends
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", None)):
            lo, _hi, sub = av
            sub_groups, ends = _walk(_items(sub), ws)
            if lo >= 1:
                groups.extend(sub_groups)
                ws = ends
            else:  # skipped or taken: a word starts after it only if it does either way
                ws = ws and ends
        elif op is _sre.IN:
            ws = _non_word_only([(op, av)])
        else:
            ws = False
    flush(False)
    return [g for g in groups if g[0] > 1.0], ws


def _items(sub: Any) -> Any:
    return sub.data if hasattr(sub, "data") else sub


def _branch_keys(branches: Any, ws: bool) -> tuple[Group | None, bool]:
    keys: list[tuple[str, str]] = []
    worst = float("inf")
    ends_all = True
    ok = True
    for b in branches:
        gs, ends = _walk(_items(b), ws)
        ends_all = ends_all and ends
        if not gs:
            ok = False
            continue
        score, k = max(gs, key=lambda g: g[0])
        keys.extend(k)
        worst = min(worst, score)
    return ((worst, list(dict.fromkeys(keys))) if ok else None), ends_all


def _non_word_only(items: Any) -> bool:
    for op, av in items:
        if op is _sre.IN:
            for sop, sav in av:
                if sop is _sre.LITERAL and not chr(sav).isalnum():
                    continue
                if sop is _sre.CATEGORY and sav in (_sre.CATEGORY_SPACE, _sre.CATEGORY_NOT_WORD,
                                                    _sre.CATEGORY_UNI_SPACE, _sre.CATEGORY_UNI_NOT_WORD):  # fmt: skip
                    continue
                return False
        elif op is _sre.LITERAL and not chr(av).isalnum():
            continue
        else:
            return False
    return True


def _run_keys(text: str, starts_word: bool, end_boundary: bool) -> list[Group]:
    """Keys from a literal run: each word that starts there is required (as a whole word, or
    as a word prefix when the run ends mid-word); with no such word, the run as a substring."""
    out: list[Group] = []
    for m in re.finditer(r"[^\W_]+", text):
        word = m.group(0)
        at_start = (m.start() == 0 and starts_word) or (m.start() > 0 and not text[m.start() - 1].isalnum())
        if not at_start:
            continue
        complete = m.end() < len(text) or end_boundary
        if complete:
            out.append((1.0 if word in _COMMON else 10.0 + len(word), [("tok", word)]))
        elif len(word) >= 3:
            out.append((1.0 if word in _COMMON else 8.0 + min(len(word), 10), [("pre", word[:10])]))
    if not out and len(text.strip()) >= 3:  # a run inside a word: "ation", "muscular "
        out.append((float(min(len(text), 8)) / 2 + 1.0, [("sub", text)]))
    return out


# Words in almost every abstract: useless as keys, so a pattern prefers any other word.
_COMMON = frozenset(
    "a an the this that these those our we us i it its of and or in on to at by as for from with "
    "was were is are be been being has have had not no than then after between "
    "during which who all both more most current study patients results data "
    "using used group groups one two three total also may can".split()
)


class _PatList:
    """A rule's patterns (any may match)."""

    __slots__ = ("pats", "lid", "lazy")

    def __init__(self, pats: list[_Pat], lid: int) -> None:
        self.pats = pats
        self.lid = lid
        for p in pats:
            p.lid = lid
        # substring-keyed patterns are not in the word index: checked per record
        self.lazy = [p for p in pats if p.subkeys]

    def possible(self, doc: _Doc) -> list[_Pat]:
        """The patterns of this list the record's words allow, in list order."""
        cached = doc.possible.get(self.lid)
        if cached is not None:
            return cached
        pats = doc.by_list.get(self.lid, [])
        if self.lazy:
            pats = sorted(
                {*pats, *(p for p in self.lazy if any(doc.has_sub(k) for k in p.subkeys))},
                key=lambda p: p.idx,
            )
        found = [
            p for p in pats
            if not p.extra or all(any(doc.has_key(kind, k) for kind, k in g) for g in p.extra)
        ]  # fmt: skip
        doc.possible[self.lid] = found
        return found

    def finditer(self, doc: _Doc, fname: str) -> Iterator[re.Match[str]]:
        """Matches in one field, pattern by pattern (so overlapping matches of two patterns
        are both seen), each pattern's in text order."""
        if not doc.fields[fname]:
            return
        for p in self.possible(doc):
            yield from p.finditer(doc, fname)

    def search_doc(self, doc: _Doc) -> bool:
        return any(
            next(p.finditer(doc, f), None) is not None
            for p in self.possible(doc)
            for f in ("title", "abstract", "keywords")
            if doc.fields[f]
        )


_ASCII_WORDS = bytes(
    c if (48 <= c <= 57 or 97 <= c <= 122) else 32 for c in range(256)
)  # lower-case ASCII letters and digits stay, everything else splits words


class _PatternIndex:
    """Every fast pattern of a rule set, indexed by its keys.

    A record's text is reduced to ASCII words (any other character splits words, which can
    only add candidates, never hide one); a whole-word key must be one of those words, a
    prefix key must start one.
    """

    def __init__(self) -> None:
        self.pats: list[_Pat] = []
        self.by_tok: dict[bytes, list[int]] = {}
        # prefix keys compared on their first 3 letters (keys of 3-4 letters) or 5 letters
        self.by_pre3: dict[bytes, list[int]] = {}
        self.by_pre5: dict[bytes, list[int]] = {}
        self.always: list[int] = []
        self.n_lists = 0

    def add(self, patterns: Sequence[str]) -> _PatList | None:
        if not patterns:
            return None
        out = []
        for source in patterns:
            p = _Pat(len(self.pats), source)
            self.pats.append(p)
            keys = p.keys
            if keys is not None and not all(k.isascii() for _kind, k in keys):
                keys = [("sub", k) for _kind, k in keys]  # non-ASCII: plain substring checks
                p.subkeys = tuple(k for _kind, k in keys)
            if keys is None:
                self.always.append(p.idx)
            else:
                for kind, key in keys:
                    k = key.encode()
                    if kind == "tok":
                        self.by_tok.setdefault(k, []).append(p.idx)
                    elif kind == "pre" and len(k) >= 5:
                        self.by_pre5.setdefault(k[:5], []).append(p.idx)
                    elif kind == "pre":
                        self.by_pre3.setdefault(k[:3], []).append(p.idx)
                    # "sub" keys are checked lazily, per record, when the rule is consulted
            out.append(p)
        self.n_lists += 1
        return _PatList(out, self.n_lists - 1)

    def candidates(self, low_text: str) -> tuple[set[int], set[bytes], set[bytes], set[bytes]]:
        """The patterns this text can match, and its words."""
        tokens = set(low_text.encode("ascii", "replace").translate(_ASCII_WORDS).split())
        found = set(self.always)
        pre5 = {t[:5] for t in tokens}
        pre3 = {t[:3] for t in pre5}
        for table, keys in ((self.by_tok, tokens), (self.by_pre5, pre5), (self.by_pre3, pre3)):
            for k in keys & table.keys():
                found.update(table[k])
        return found, tokens, pre5, pre3


# ----------------------------------------------------------------------------- rule set


@dataclass(slots=True)
class _MatchRule:
    """A rule of a multi-valued facet (intervention, condition, comparator, flag)."""

    id: str
    value: str
    detail: str | None
    pats: _PatList | None
    fields: tuple[str, ...]
    mesh: frozenset[str]
    pubtype: frozenset[str]
    corrections: frozenset[str]
    retracted_column: bool
    unless_before: re.Pattern[str] | None
    unless_after: re.Pattern[str] | None
    window: int
    requires_text: _PatList | None
    unless_text: _PatList | None
    requires_near: re.Pattern[str] | None
    near: int
    not_if_intervention: frozenset[str]


@dataclass(slots=True)
class _FacetPlan:
    """Which rules of a facet a record can possibly trigger, precomputed."""

    rule_of: dict[int, int]  # pattern index -> rule position
    pattern_ids: frozenset[int]
    sub_rules: tuple[int, ...]  # rules with substring-keyed (lazily checked) patterns
    index_rules: tuple[int, ...]
    mesh: frozenset[str]
    pubtype: frozenset[str]
    corrections: frozenset[str]
    retracted: bool


def _plan(rules: list[_MatchRule]) -> _FacetPlan:
    rule_of: dict[int, int] = {}
    sub_rules = []
    for ri, r in enumerate(rules):
        for p in r.pats.pats if r.pats else ():
            rule_of[p.idx] = ri
            if p.subkeys or p.keys is None:
                sub_rules.append(ri)
    index_rules = tuple(
        ri for ri, r in enumerate(rules) if r.mesh or r.pubtype or r.corrections or r.retracted_column
    )
    return _FacetPlan(
        rule_of=rule_of,
        pattern_ids=frozenset(rule_of),
        sub_rules=tuple(dict.fromkeys(sub_rules)),
        index_rules=index_rules,
        mesh=frozenset().union(*(r.mesh for r in rules)),
        pubtype=frozenset().union(*(r.pubtype for r in rules)),
        corrections=frozenset().union(*(r.corrections for r in rules)),
        retracted=any(r.retracted_column for r in rules),
    )


@dataclass(slots=True)
class _DesignRule:
    id: str
    value: str
    detail: str | None
    title: _PatList | None
    abstract: _PatList | None
    journal: _PatList | None
    min_hits: int
    population: frozenset[str]
    skip_population: frozenset[str]
    require_population: frozenset[str]
    fallback: bool
    unless_before: re.Pattern[str] | None
    unless_after: re.Pattern[str] | None
    unless_match: re.Pattern[str] | None
    unless_title: re.Pattern[str] | None = None  # the rule does not apply when the title has one
    pattern_ids: frozenset[int] = frozenset()
    lazy: bool = False  # has substring-keyed or unindexed patterns: always consult

    def __post_init__(self) -> None:
        pats = [p for pl in (self.title, self.abstract, self.journal) if pl for p in pl.pats]
        self.pattern_ids = frozenset(p.idx for p in pats)
        self.lazy = any(p.subkeys or p.keys is None for p in pats)


@dataclass(slots=True)
class _IndexRule:
    """Publication-type or MeSH rule of a single-valued facet (design, population)."""

    id: str
    value: str
    pubtype: tuple[str, ...] = ()
    mesh_all: frozenset[str] = frozenset()
    mesh_any: frozenset[str] = frozenset()
    mesh_none: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Refine:
    id: str
    source: str
    targets: frozenset[str]
    unindexed_only: bool


@dataclass(slots=True)
class _Verb:
    rank: int
    label: str
    regex: re.Pattern[str]


@dataclass(slots=True)
class _Cue:
    id: str
    value: str
    weight: float
    negatable: bool
    regex: re.Pattern[str]
    # What a negated cue counts as: "no_difference" ("did not improve"), or None for nothing
    # at all ("not harmful" is no evidence of harm, nor of no difference).
    when_negated: str | None = "no_difference"


@dataclass
class RuleSet:
    """The loaded, compiled rule files. ``version`` is stored with every automatic tag."""

    version: str
    declared_version: str
    path: str
    facets: dict[str, dict[str, Any]]
    match_rules: dict[str, list[_MatchRule]]
    facet_plan: dict[str, _FacetPlan]
    index: _PatternIndex
    design_pubtypes: list[_IndexRule]
    design_mesh: list[_IndexRule]
    design_refine: list[_Refine]
    design_rules: list[_DesignRule]
    population_mesh: list[_IndexRule]
    population_terms: list[tuple[str, str, float, _PatList]]
    population_title_weight: float
    comparator_designs: frozenset[str]
    comparator_context: re.Pattern[str] | None
    sample_size: dict[str, Any]
    conclusion: dict[str, Any]
    rule_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def single_valued(self) -> tuple[str, ...]:
        return tuple(f for f, spec in self.facets.items() if not spec["multi"])

    def check_value(self, facet: str, value: str) -> str:
        """Validate a (facet, value) pair a researcher typed; returns the value normalised."""
        if facet not in self.facets:
            raise TagError(f"unknown facet {facet!r}; facets are: {', '.join(self.facets)}")
        values = self.facets[facet]["values"]
        value = str(value).strip()
        if values == "integer":
            if not value.isdigit():
                raise TagError(f"{facet} must be a whole number of participants, not {value!r}")
            return str(int(value))
        if value.lower() in values:  # "RCT" is rct: export's filters take either case too
            return value.lower()
        raise TagError(f"unknown {facet} value {value!r}; values are: {', '.join(values)}")


def load_ruleset(path: str | Path | None = None) -> RuleSet:
    """Load and compile the rule files: the package's own when ``path`` is None, else the
    folder (or its ``ruleset.toml``) at ``path``."""
    if path is None:
        return _default_ruleset()
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not (folder / "ruleset.toml").is_file():
        raise RuleSetError(f"{folder}: no ruleset.toml here")
    files = {f.name: f.read_bytes() for f in sorted(folder.glob("*.toml"))}
    return _build_ruleset(files, str(folder))


@lru_cache(maxsize=1)
def _default_ruleset() -> RuleSet:
    folder = resources.files("harvest") / "rules"
    files = {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    }
    return _build_ruleset(files, str(folder))


def _build_ruleset(files: dict[str, bytes], where: str) -> RuleSet:
    digest = hashlib.sha1()
    parsed: dict[str, dict[str, Any]] = {}
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
        try:
            parsed[name] = tomllib.loads(files[name].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RuleSetError(f"{where}/{name}: not valid TOML ({exc})") from exc
    head = parsed.pop("ruleset.toml", None)
    if head is None:
        raise RuleSetError(f"{where}: ruleset.toml is missing")
    declared = str(head.get("version") or "0")
    facets = {}
    for name, spec in (head.get("facets") or {}).items():
        values = spec.get("values")
        if values != "integer" and not (isinstance(values, list) and values):
            raise RuleSetError(f"{where}/ruleset.toml: facet {name} needs a list of values")
        facets[name] = {"multi": bool(spec.get("multi", True)), "values": values}
    by_facet: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, data in parsed.items():
        facet = data.get("facet")
        if facet not in facets:
            raise RuleSetError(f"{where}/{name}: facet {facet!r} is not declared in ruleset.toml")
        if facet in by_facet:
            raise RuleSetError(f"{where}/{name}: facet {facet} already defined in {by_facet[facet][0]}")
        by_facet[facet] = (name, data)
    b = _Builder(facets, where)
    match_rules: dict[str, list[_MatchRule]] = {}
    for facet in ("intervention", "condition", "comparator", "flag"):
        name, data = by_facet.get(facet, ("", {}))
        b.file = name
        b.defines = data.get("define", {})
        match_rules[facet] = [b.match_rule(facet, r) for r in data.get("rule", [])]
    # design
    name, data = by_facet.get("design", ("", {}))
    b.file, b.defines = name, data.get("define", {})
    design_pubtypes = [b.index_rule("design", r) for r in data.get("pubtype", [])]
    design_mesh = [b.index_rule("design", r) for r in data.get("mesh", [])]
    design_refine = [
        _Refine(
            id=r["id"], source=b.value("design", r["from"], r["id"]),
            targets=frozenset(b.value("design", v, r["id"]) for v in r["to"]),
            unindexed_only=bool(r.get("unindexed_only", False)),
        )
        for r in data.get("refine", [])
    ]  # fmt: skip
    design_rules = [b.design_rule(r) for r in data.get("rule", [])]
    if not design_rules or not design_rules[-1].fallback:
        raise RuleSetError(f"{where}/{name}: the last design rule must be the fallback")
    # population
    name, data = by_facet.get("population", ("", {}))
    b.file, b.defines = name, data.get("define", {})
    population_mesh = [b.index_rule("population", r) for r in data.get("mesh", [])]
    population_terms = []
    for r in data.get("term", []):
        b.claim(r["id"])
        population_terms.append(
            (r["id"], b.value("population", r["value"], r["id"]), float(r.get("weight", 1.0)),
             b.fast(b.patterns(r, "text"), r["id"]))
        )  # fmt: skip
    # comparator settings
    _, cdata = by_facet.get("comparator", ("", {}))
    comparator_designs = frozenset(cdata.get("designs", []))
    comparator_context = b.union(cdata.get("context", []))
    # sample size and conclusion: interpreted by their own functions below
    name, sdata = by_facet.get("sample_size", ("", {}))
    b.file, b.defines = name, sdata.get("define", {})
    sample_size = _compile_sample_size(sdata, b)
    name, cdata2 = by_facet.get("conclusion", ("", {}))
    b.file, b.defines = name, cdata2.get("define", {})
    conclusion = _compile_conclusion(cdata2, b)
    return RuleSet(
        version=f"{declared}+{digest.hexdigest()[:8]}",
        declared_version=declared,
        path=where,
        facets=facets,
        match_rules=match_rules,
        facet_plan={f: _plan(rules) for f, rules in match_rules.items()},
        index=b.index,
        design_pubtypes=design_pubtypes,
        design_mesh=design_mesh,
        design_refine=design_refine,
        design_rules=design_rules,
        population_mesh=population_mesh,
        population_terms=population_terms,
        population_title_weight=float(data.get("title_weight", 3.0)),
        comparator_designs=comparator_designs,
        comparator_context=comparator_context,
        sample_size=sample_size,
        conclusion=conclusion,
        rule_ids=frozenset(b.ids),
    )


class _Builder:
    """Compiles rule tables, reporting errors with file and rule id."""

    def __init__(self, facets: dict[str, dict[str, Any]], where: str) -> None:
        self.facets = facets
        self.where = where
        self.file = ""
        self.defines: dict[str, list[str]] = {}
        self.ids: set[str] = set()
        self.index = _PatternIndex()

    def fail(self, rule_id: str, message: str) -> RuleSetError:
        return RuleSetError(f"{self.where}/{self.file}: rule {rule_id}: {message}")

    def claim(self, rule_id: str) -> None:
        if not rule_id:
            raise RuleSetError(f"{self.where}/{self.file}: a rule has no id")
        if rule_id in self.ids:
            raise self.fail(rule_id, "duplicate rule id")
        self.ids.add(rule_id)

    def value(self, facet: str, value: str, rule_id: str) -> str:
        values = self.facets[facet]["values"]
        if values != "integer" and value not in values:
            raise self.fail(rule_id, f"value {value!r} is not in the {facet} vocabulary")
        return value

    def patterns(self, table: dict[str, Any], key: str) -> list[str]:
        """A rule's pattern list, with ``@name`` entries expanded from ``[define]`` and
        case-sensitive rules wrapped in ``(?-i:...)``."""
        out: list[str] = []
        for p in table.get(key, []) or []:
            if p.startswith("@"):
                if p[1:] not in self.defines:
                    raise self.fail(table.get("id", "?"), f"{p} is not in [define]")
                out.extend(self.defines[p[1:]])
            else:
                out.append(p)
        if table.get("case_sensitive"):
            out = [f"(?-i:{p})" for p in out]
        return out

    def regex(self, patterns: Sequence[str], rule_id: str) -> re.Pattern[str] | None:
        if not patterns:
            return None
        for p in patterns:
            try:
                re.compile(p, re.IGNORECASE)
            except re.error as exc:
                raise self.fail(rule_id, f"bad pattern {p!r}: {exc}") from exc
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)

    def fast(self, patterns: Sequence[str], rule_id: str) -> _PatList | None:
        self.regex(patterns, rule_id)  # validates, with the rule's name in the error
        return self.index.add(patterns)

    def lowered(self, patterns: Sequence[str], rule_id: str) -> re.Pattern[str] | None:
        """One regex for lower-cased text (faster than IGNORECASE); patterns must not use
        case-sensitive groups."""
        self.regex(patterns, rule_id)
        if not patterns:
            return None
        return re.compile("|".join(f"(?:{_lower_pattern(p)})" for p in patterns))

    def union(self, patterns: Sequence[str]) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None

    def match_rule(self, facet: str, r: dict[str, Any]) -> _MatchRule:
        rid = r.get("id", "")
        self.claim(rid)
        fields = tuple(r.get("fields", ("title", "abstract", "keywords")))
        if not set(fields) <= {"title", "abstract", "keywords"}:
            raise self.fail(rid, f"unknown field in {fields}")
        return _MatchRule(
            id=rid,
            value=self.value(facet, r.get("value", ""), rid),
            detail=r.get("detail"),
            pats=self.fast(self.patterns(r, "text"), rid),
            fields=fields,
            mesh=frozenset(m.lower() for m in r.get("mesh", [])),
            pubtype=frozenset(p.lower() for p in r.get("pubtype", [])),
            corrections=frozenset(c.lower() for c in r.get("corrections", [])),
            retracted_column=bool(r.get("retracted_column", False)),
            unless_before=self.regex(self.patterns(r, "unless_before"), rid),
            unless_after=self.regex(self.patterns(r, "unless_after"), rid),
            window=int(r.get("window", 40)),
            requires_text=self.fast(self.patterns(r, "requires_text"), rid),
            unless_text=self.fast(self.patterns(r, "unless_text"), rid),
            requires_near=self.regex(self.patterns(r, "requires_near"), rid),
            near=int(r.get("near", 120)),
            not_if_intervention=frozenset(r.get("not_if_intervention", [])),
        )

    def index_rule(self, facet: str, r: dict[str, Any]) -> _IndexRule:
        rid = r.get("id", "")
        self.claim(rid)
        return _IndexRule(
            id=rid,
            value=self.value(facet, r.get("value", ""), rid),
            pubtype=tuple(r.get("pubtype", [])),
            mesh_all=frozenset(m.lower() for m in r.get("mesh_all", [])),
            mesh_any=frozenset(m.lower() for m in r.get("mesh_any", [])),
            mesh_none=frozenset(m.lower() for m in r.get("mesh_none", [])),
        )

    def design_rule(self, r: dict[str, Any]) -> _DesignRule:
        rid = r.get("id", "")
        self.claim(rid)
        return _DesignRule(
            id=rid,
            value=self.value("design", r.get("value", ""), rid),
            detail=r.get("detail"),
            title=self.fast(self.patterns(r, "title"), rid),
            abstract=self.fast(self.patterns(r, "abstract"), rid),
            journal=self.fast(self.patterns(r, "journal"), rid),
            min_hits=int(r.get("min_hits", 1)),
            population=frozenset(r.get("population", [])),
            skip_population=frozenset(r.get("skip_population", [])),
            require_population=frozenset(r.get("require_population", [])),
            fallback=bool(r.get("fallback", False)),
            unless_before=self.regex(self.patterns(r, "unless_before"), rid),
            unless_after=self.regex(self.patterns(r, "unless_after"), rid),
            unless_match=self.regex(self.patterns(r, "unless_match"), rid),
            unless_title=self.regex(self.patterns(r, "unless_title"), rid),
        )


def _compile_sample_size(data: dict[str, Any], b: _Builder) -> dict[str, Any]:
    rid = data.get("id", "sample_size.text")
    b.claim(rid)
    persons = data.get("person_nouns", [])
    units = data.get("unit_nouns", [])
    mods = int(data.get("max_modifiers", 5))
    noun = rf"(?P<noun>{'|'.join(persons)})\b"
    unit = rf"(?P<noun>{'|'.join(units)})\b"
    stop = r"(?:studies|study|trials?|articles?|reports?|RCTs?|cohorts?|with|of|and|or|in|from|to|were|was|who|had|at|for|the|a|an|on|by|per|than|aged?|each|group|groups|arm|arms)"
    modifiers = rf"(?:(?!{stop}\b)[A-Za-z][\w/+'’-]*[ ,]+){{0,{mods}}}?"
    return {
        "id": rid,
        "designs": frozenset(data.get("designs", [])),
        "skip_sections": b.regex(data.get("skip_sections", []), rid),
        "skip_sentence": b.lowered(b.patterns(data, "skip_sentence"), rid),
        "exclude_before": b.regex(b.patterns(data, "exclude_before"), rid),
        # anchored right after a number: "  consecutive adult patients"
        "person": re.compile(rf"\s+{modifiers}{noun}", re.IGNORECASE),
        # "410 of (the planned) 775 participants were randomised": 410 is the count
        "of_total": re.compile(
            rf"\s+of\s+(?:the\s+)?(?:planned|targeted|target|eligible|screened|intended)\s+\d[\d,]*\s+{modifiers}{noun}",
            re.IGNORECASE,
        ),
        "unit": re.compile(rf"\s+{modifiers}{unit}", re.IGNORECASE),
        # "adults (n = 60)": the "(n = 60)" part, then the noun just before it
        "n_equals": re.compile(r"[(\[]\s*(?:total\s+)?[nN]\s*=\s*(\d[\d,]*)\s*[)\];,]"),
        "noun_before": re.compile(rf"\b{noun}\s*$", re.IGNORECASE),
        "verbs": [
            _Verb(int(v["rank"]), v.get("label", ""), b.regex(v.get("text", []), rid))
            for v in sorted(data.get("verb", []), key=lambda v: -int(v["rank"]))
        ],
    }


def _compile_conclusion(data: dict[str, Any], b: _Builder) -> dict[str, Any]:
    cues = []
    for c in data.get("cue", []):
        b.claim(c["id"])
        when_negated = c.get("when_negated", "no_difference")
        cues.append(
            _Cue(c["id"], b.value("conclusion", c["value"], c["id"]), float(c.get("weight", 1.0)),
                 bool(c.get("negatable", False)), b.regex(b.patterns(c, "text"), c["id"]),
                 None if when_negated == "skip" else b.value("conclusion", when_negated, c["id"]))
        )  # fmt: skip
    tie = list(data.get("tie_order", []))
    return {
        "designs": frozenset(data.get("designs", [])),
        "sections": re.compile(
            r"^(?:" + "|".join(data.get("sections", [])) + r")$", re.IGNORECASE
        ),
        "skip_sections": b.regex(data.get("skip_sections", []), "conclusion"),
        "skip_sentence": b.regex(b.patterns(data, "skip_sentence"), "conclusion"),
        "closing": int(data.get("closing_sentences", 2)),
        "negators": b.regex(b.patterns(data, "negators"), "conclusion"),
        "negation_window": int(data.get("negation_window", 30)),
        "not_negations": b.regex(b.patterns(data, "not_negations"), "conclusion"),
        "clause_breaks": b.regex(b.patterns(data, "clause_breaks"), "conclusion"),
        "tie_rank": {v: i for i, v in enumerate(tie)},
        "cues": cues,
    }


# ------------------------------------------------------------------------------ the record

# Numbers as digits (1,234 / 503 875 / 1234) or words (Sixty, One-hundred-and-sixty-four).
_UNITS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip


# Digits first (a character-class prefix the regex engine scans for quickly), then checked
# for what stands around them; number words are looked up word by word.
_DIGITS = re.compile(
    r"\d(?:\d{0,2}(?:,\d{3})+(?!\d)|\d{0,2}(?:[ \u2009\u202f\u00a0]\d{3})+(?![\d.,])|\d*)"
)
_WORD = re.compile(r"[A-Za-z]+")
_NUMWORDS = frozenset([*_UNITS, *_TENS, "hundred", "thousand"])
_NUMWORDS_BYTES = frozenset(w.encode() for w in _NUMWORDS)
_ANY_DIGIT = re.compile(r"\d")


def _numbers(sentence: str, words_possible: Iterable[str] = _NUMWORDS) -> Iterator[tuple[int, int, int]]:
    """(start, end, value) of each number in a sentence, digits or words."""
    n = len(sentence)
    for m in _DIGITS.finditer(sentence):
        s, e = m.span()
        if s and (sentence[s - 1].isalnum() or sentence[s - 1] in "._,"):
            continue
        if e < n and (sentence[e].isalnum() or sentence[e] in "%_" or (sentence[e] in ".," and e + 1 < n and sentence[e + 1].isdigit())):
            continue
        value = _parse_number(m.group(0))
        if value is not None:
            yield s, e, value
    if not words_possible:
        return
    low = sentence.lower()
    if not any(w in low for w in words_possible):
        return
    words = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD.finditer(sentence)]
    i = 0
    while i < len(words):
        s, e, w = words[i]
        if w not in _NUMWORDS or (s and sentence[s - 1].isalnum()):
            i += 1
            continue
        j = i
        while j + 1 < len(words):
            gap = sentence[words[j][1] : words[j + 1][0]]
            nxt = words[j + 1][2]
            if gap in (" ", "-") and nxt in _NUMWORDS:
                j += 1
            elif gap in (" ", "-") and nxt == "and" and j + 2 < len(words) and words[j + 2][2] in _NUMWORDS \
                    and sentence[words[j + 1][1] : words[j + 2][0]] in (" ", "-"):
                j += 2
            else:
                break
        end = words[j][1]
        value = _parse_number(sentence[s:end])
        if value is not None:
            yield s, end, value
        i = j + 1


def _parse_number(text: str) -> int | None:
    digits = re.sub(r"[,\s\u2009\u202f\u00a0]", "", text)
    if digits.isdigit():
        return int(digits)
    total, current = 0, 0
    for word in re.split(r"[\s-]+", text.lower()):
        if word in ("and", ""):
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word == "thousand":
            total += (current or 1) * 1000
            current = 0
        else:
            return None
    return total + current or None


_SECTION_LABEL = re.compile(r"^([A-Z][A-Za-z][A-Za-z ,/&’'()-]{0,60}?):\s+(?=\S)")
_SENTENCE_END = re.compile(r"[.!?][\"”’)]?\s+(?=[A-Z0-9\[(“\"‘'])")


class _Doc:
    """The parts of a ``studies`` row the rules read, prepared once."""

    __slots__ = (
        "row", "use_index", "title", "abstract", "keywords", "fields", "pubtypes", "mesh",
        "mesh_display", "corrections", "medline", "_sections", "_sentences", "_starts", "_alltext", "low",
        "low_ok", "_candidates", "_index", "_lowall", "_subs", "tokens", "pre5", "pre3", "possible",
        "by_list",
    )  # fmt: skip

    def __init__(self, row: dict[str, Any], use_index: bool, index: _PatternIndex | None = None) -> None:
        self.row = row
        self._index = index
        self._candidates: set[int] | None = None
        self._lowall: str | None = None
        self._subs: dict[str, bool] = {}
        self.tokens: set[bytes] = set()
        self.possible: dict[int, list[_Pat]] = {}  # per pattern list, see _PatList.possible
        self.by_list: dict[int, list[_Pat]] = {}  # candidate patterns, by pattern list
        self.pre5: set[bytes] = set()
        self.pre3: set[bytes] = set()
        self.use_index = use_index
        self.title = (row.get("title") or "").strip()
        self.abstract = (row.get("abstract") or "").strip()
        kw = _json_list(row.get("keywords"))
        self.keywords = "; ".join(str(k) for k in kw)
        self.fields = {
            "title": self.title, "abstract": self.abstract, "keywords": self.keywords,
            "journal": (row.get("journal") or "").strip(),
        }  # fmt: skip
        self.low = {k: v.lower() for k, v in self.fields.items()}
        self.low_ok = all(len(self.low[k]) == len(v) for k, v in self.fields.items())
        self.medline = (row.get("medline_status") or "") == "MEDLINE"
        if use_index:
            self.pubtypes = [str(p) for p in _json_list(row.get("publication_types"))]
            mesh = _json_list(row.get("mesh"))
            self.mesh_display = {}
            for m in mesh:
                if isinstance(m, dict):
                    raw = str(m.get("descriptor", ""))
                    major = bool(m.get("major")) or any(
                        q.get("major") for q in m.get("qualifiers", []) if isinstance(q, dict)
                    )
                else:  # "Term* / qualifier" strings, as PubMed displays them
                    raw, major = str(m), False
                # "Acupuncture Therapy* / adverse effects": descriptor, "*" for a major topic
                name = raw.split(" / ")[0].strip()
                major = major or "*" in raw
                name = name.rstrip("*").strip()
                self.mesh_display[name.lower()] = name + ("*" if major else "")
            self.mesh = frozenset(self.mesh_display)
            self.corrections = frozenset(
                str(c.get("ref_type", "")).lower()
                for c in _json_list(row.get("corrections"))
                if isinstance(c, dict)
            )
        else:
            self.pubtypes, self.mesh, self.mesh_display = [], frozenset(), {}
            self.corrections = frozenset()
        self._sections: list[tuple[str | None, str, int]] | None = None
        self._sentences: list[tuple[int, int, str | None]] | None = None
        self._starts: list[int] | None = None
        self._alltext: str | None = None

    @property
    def candidates(self) -> set[int]:
        """Indexes of the patterns whose keys this record's text contains."""
        if self._candidates is None:
            index = self._index or load_ruleset().index
            self._lowall = "\n".join(self.low.values())
            self._candidates, self.tokens, self.pre5, self.pre3 = index.candidates(self._lowall)
            pats = index.pats
            for i in sorted(self._candidates):
                p = pats[i]
                self.by_list.setdefault(p.lid, []).append(p)
        return self._candidates

    def has_key(self, kind: str, key: str) -> bool:
        """Whether the text holds this key (see _PatternIndex); conservative."""
        if kind == "sub" or not key.isascii():
            return self.has_sub(key)
        k = key.encode()
        if kind == "tok":
            return k in self.tokens
        return (k[:5] in self.pre5) if len(k) >= 5 else (k[:3] in self.pre3)

    def has_sub(self, key: str) -> bool:
        found = self._subs.get(key)
        if found is None:
            if self._lowall is None:
                self._lowall = "\n".join(self.low.values())
            found = self._subs[key] = key in self._lowall
        return found

    @property
    def alltext(self) -> str:
        if self._alltext is None:
            self._alltext = "\n".join(t for t in (self.title, self.abstract, self.keywords) if t)
        return self._alltext

    @property
    def sections(self) -> list[tuple[str | None, str, int]]:
        """(label or None, text, offset in abstract) per abstract paragraph."""
        if self._sections is None:
            out = []
            pos = 0
            for para in re.split(r"\n\s*\n", self.abstract):
                start = self.abstract.find(para, pos)
                pos = start + len(para)
                m = _SECTION_LABEL.match(para)
                if m and len(m.group(1).split()) <= 6:
                    out.append((m.group(1).strip(), para[m.end():], start + m.end()))
                else:
                    out.append((None, para, start))
            self._sections = out
        return self._sections

    @property
    def sentences(self) -> list[tuple[int, int, str | None]]:
        """(start, end, section label) of each abstract sentence."""
        if self._sentences is None:
            out = []
            for label, text, offset in self.sections:
                start = 0
                for m in _SENTENCE_END.finditer(text):
                    end = m.start() + 1
                    if text[m.start()] == "." and _is_abbreviation_end(text, m.start()):
                        continue
                    out.append((offset + start, offset + end, label))
                    start = m.end()
                if text[start:].strip():
                    out.append((offset + start, offset + len(text.rstrip()), label))
            self._sentences = out
        return self._sentences

    def sentence_at(self, pos: int) -> tuple[int, int, str | None]:
        sentences = self.sentences
        if self._starts is None:  # sentences are in order: bisect, not a scan per match
            self._starts = [s[0] for s in sentences]
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and pos < max(sentences[i][1], sentences[i][0] + 1):
            return sentences[i]
        return (max(0, pos - 200), min(len(self.abstract), pos + 200), None)


_ABBREV = frozenset("e.g i.e al vs approx fig figs no ca cf resp dr mr ms mrs st ref refs".split())


def _is_abbreviation_end(text: str, dot: int) -> bool:
    """Whether the full stop at ``dot`` ends an abbreviation ("et al.", "e.g.", "vs.")."""
    start = dot
    while start > 0 and not text[start - 1].isspace() and dot - start < 8:
        start -= 1
    return text[start:dot].lower().lstrip("([") in _ABBREV


def _json_list(value: Any) -> list[Any]:
    if not value:
        return []
    if isinstance(value, list):
        return value
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        return []
    return out if isinstance(out, list) else []


def _snippet(field_name: str, text: str, start: int, end: int, width: int = _EVIDENCE_WIDTH) -> str:
    a = max(0, start - width)
    z = min(len(text), end + width)
    # widen to word boundaries
    while a > 0 and text[a - 1].isalnum():
        a -= 1
    while z < len(text) and text[z].isalnum():
        z += 1
    body = f"{text[a:start]}[{text[start:end]}]{text[end:z]}"
    body = " ".join(body.split())
    return f"{field_name}: {'…' if a > 0 else ''}{body}{'…' if z < len(text) else ''}"


# ------------------------------------------------------------------------------ classify


class _Acc:
    """Collects tags, one per (facet, value, origin), merging details and evidence."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.items: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(self, facet: str, value: str, origin: str, rule_id: str, evidence: str | None,
            detail: str | None = None) -> None:  # fmt: skip
        key = (facet, value, origin)
        item = self.items.get(key)
        if item is None:
            self.items[key] = {
                "details": [detail] if detail else [],
                "rule_ids": [rule_id],
                "evidence": [evidence] if evidence else [],
            }
            return
        if detail and detail not in item["details"]:
            item["details"].append(detail)
        if rule_id not in item["rule_ids"]:
            item["rule_ids"].append(rule_id)
        if evidence and evidence not in item["evidence"] and len(item["evidence"]) < _MAX_EVIDENCE:
            item["evidence"].append(evidence)

    def values(self, facet: str) -> set[str]:
        return {v for (f, v, _o) in self.items if f == facet}

    def tags(self) -> list[Tag]:
        order = {f: i for i, f in enumerate(_FACET_ORDER)}
        out = []
        for (facet, value, origin), item in self.items.items():
            out.append(
                Tag(
                    facet=facet,
                    value=value,
                    detail=",".join(sorted(item["details"])) or None,
                    origin=origin,
                    rule_id=",".join(item["rule_ids"]),
                    ruleset_version=self.version,
                    evidence=" | ".join(item["evidence"]) or None,
                )
            )
        out.sort(key=lambda t: (order.get(t.facet, 99), t.value, t.origin))
        return out


def classify(row: dict[str, Any], ruleset: RuleSet | None = None, *, use_index: bool = True) -> list[Tag]:
    """Tag one ``studies`` row (lists as stored: JSON strings). Pure: no database access.

    ``use_index=False`` hides what NLM's indexing gives (publication types, MeSH, correction
    links, the retracted column): the text-only path feed and publisher records take, and the
    one the design benchmark measures.
    """
    rs = ruleset or load_ruleset()
    doc = _Doc(row, use_index, rs.index)
    acc = _Acc(rs.version)
    for facet in ("flag", "intervention", "condition"):
        _match_facet(doc, rs, facet, acc)
    population = _population(doc, rs, acc)
    design = _design(doc, rs, population, acc)
    if design in rs.comparator_designs:
        _match_facet(doc, rs, "comparator", acc, context=rs.comparator_context,
                     interventions=acc.values("intervention"))  # fmt: skip
    if design in rs.sample_size["designs"]:
        found = sample_size(doc, rs)
        if found:
            n, label, sentence = found
            acc.add("sample_size", str(n), "rule", rs.sample_size["id"], sentence, label)
    if design in rs.conclusion["designs"]:
        found_c = conclusion(doc, rs)
        if found_c:
            value, rule_id, sentence, where = found_c
            acc.add("conclusion", value, "rule", rule_id, sentence, where)
    return acc.tags()


def _match_facet(doc: _Doc, rs: RuleSet, facet: str, acc: _Acc, *,
                 context: re.Pattern[str] | None = None,
                 interventions: set[str] | None = None) -> None:  # fmt: skip
    plan = rs.facet_plan[facet]
    # only the rules a record can trigger: by its words, its lazily checked substrings, and its
    # index data (most records trigger none of a facet's rules)
    todo = {plan.rule_of[i] for i in doc.candidates & plan.pattern_ids}
    todo.update(plan.sub_rules)
    indexed = doc.use_index and (
        bool(doc.mesh & plan.mesh) or any(p.lower() in plan.pubtype for p in doc.pubtypes)
        or bool(doc.corrections & plan.corrections) or (plan.retracted and doc.row.get("retracted"))
    )  # fmt: skip
    if indexed:
        todo.update(plan.index_rules)
    rules = rs.match_rules.get(facet, [])
    for ri in sorted(todo):
        rule = rules[ri]
        if rule.not_if_intervention and interventions and rule.not_if_intervention & interventions:
            continue
        # index evidence
        if indexed:
            index_ev = _index_evidence(doc, rule)
            if index_ev and not (rule.unless_text and rule.unless_text.search_doc(doc)):
                if not rule.requires_text or rule.requires_text.search_doc(doc):
                    acc.add(facet, rule.value, "nlm", rule.id, index_ev, rule.detail)
        if rule.pats is None or not rule.pats.possible(doc):
            continue
        hit = _text_hit(doc, rule, context)
        if hit:
            acc.add(facet, rule.value, "rule", rule.id, hit, rule.detail)


def _index_evidence(doc: _Doc, rule: _MatchRule) -> str | None:
    if rule.mesh:
        found = sorted(doc.mesh_display[m] for m in rule.mesh & doc.mesh)
        if found:
            return "MeSH: " + "; ".join(found)
    if rule.pubtype:
        for p in doc.pubtypes:
            if p.lower() in rule.pubtype:
                return f"Publication type: {p}{_pt_source(doc)}"
    if rule.corrections:
        found = sorted(rule.corrections & doc.corrections)
        if found:
            return "NLM correction link: " + ", ".join(found)
    if rule.retracted_column and doc.row.get("retracted"):
        return "Record marked retracted"
    return None


def _pt_source(doc: _Doc) -> str:
    status = doc.row.get("medline_status")
    if doc.medline:
        return " (NLM, MEDLINE-indexed)"
    return f" (publisher-supplied; status {status})" if status else ""


def _text_hit(doc: _Doc, rule: _MatchRule, context: re.Pattern[str] | None) -> str | None:
    assert rule.pats is not None
    checked_doc = False
    for fname in rule.fields:
        text = doc.fields[fname]
        if not text:
            continue
        for m in rule.pats.finditer(doc, fname):
            s, e = m.span()
            if rule.unless_before and rule.unless_before.search(text[max(0, s - rule.window) : s]):
                continue
            if rule.unless_after and rule.unless_after.search(text[e : e + rule.window]):
                continue
            if rule.requires_near and not rule.requires_near.search(
                text[max(0, s - rule.near) : e + rule.near]
            ):
                continue
            if context is not None and fname != "title":
                if fname == "abstract":
                    a, z, _ = doc.sentence_at(s)
                    sentence = text[a:z]
                else:
                    sentence = text
                if not context.search(sentence):
                    continue
            if not checked_doc:
                if rule.requires_text and not rule.requires_text.search_doc(doc):
                    return None
                if rule.unless_text and rule.unless_text.search_doc(doc):
                    return None
                checked_doc = True
            return _snippet(fname, text, s, e)
    return None


# -- population


def _population(doc: _Doc, rs: RuleSet, acc: _Acc) -> str | None:
    if doc.use_index and doc.mesh:
        for r in rs.population_mesh:
            if _mesh_rule_holds(doc, r):
                acc.add("population", r.value, "nlm", r.id, _mesh_rule_evidence(doc, r))
                return r.value
    scores: dict[str, float] = {}
    first: dict[str, tuple[str, str]] = {}
    tw = rs.population_title_weight
    # each term counts once per field (its presence, not its frequency)
    for rid, value, weight, pats in rs.population_terms:
        for p in pats.possible(doc):
            for fname, mult in (("title", tw), ("abstract", 1.0)):
                text = doc.fields[fname]
                if not text:
                    continue
                m = next(iter(p.finditer(doc, fname)), None)
                if m is None:
                    continue
                scores[value] = scores.get(value, 0.0) + weight * mult
                if value not in first:
                    first[value] = (rid, _snippet(fname, text, *m.span(), width=40))
    if not scores:
        return None
    best = max(scores, key=lambda v: (scores[v], v == "human"))
    rid, ev = first[best]
    summary = ", ".join(f"{v} {scores[v]:g}" for v in sorted(scores, key=lambda v: -scores[v]))
    acc.add("population", best, "rule", rid, f"{ev} (scores: {summary})")
    return best


def _mesh_rule_holds(doc: _Doc, r: _IndexRule) -> bool:
    if r.mesh_all and not r.mesh_all <= doc.mesh:
        return False
    if r.mesh_any and not (r.mesh_any & doc.mesh):
        return False
    if r.mesh_none & doc.mesh:
        return False
    return bool(r.mesh_all or r.mesh_any)


def _mesh_rule_evidence(doc: _Doc, r: _IndexRule) -> str:
    have = sorted(doc.mesh_display[m] for m in (r.mesh_all | r.mesh_any) & doc.mesh)
    text = "MeSH: " + "; ".join(have)
    if r.mesh_none:
        text += " (without " + ", ".join(sorted(m.title() for m in r.mesh_none)[:3]) + ")"
    return text


# -- design


def _design(doc: _Doc, rs: RuleSet, population: str | None, acc: _Acc) -> str:
    index_value = None
    if doc.use_index:
        for r in rs.design_pubtypes:
            hit = next((p for p in doc.pubtypes if p in r.pubtype), None)
            if hit:
                index_value = (r.value, r.id, f"Publication type: {hit}{_pt_source(doc)}")
                break
        if index_value is None and doc.mesh:
            for r in rs.design_mesh:
                if _mesh_rule_holds(doc, r):
                    index_value = (r.value, r.id, _mesh_rule_evidence(doc, r))
                    break
    if index_value is not None:
        value, rid, ev = index_value
        refine = [f for f in rs.design_refine if f.source == value]
        refine = [f for f in refine if not (f.unindexed_only and doc.medline)]
        if refine:
            text_value, text_rid, text_ev, text_detail = _design_text(doc, rs, population)
            if any(text_value in f.targets for f in refine):
                acc.add("design", text_value, "rule", text_rid,
                        f"{text_ev} (refines {ev})", text_detail)  # fmt: skip
                return text_value
        acc.add("design", value, "nlm", rid, ev)
        return value
    value, rid, ev, detail = _design_text(doc, rs, population)
    acc.add("design", value, "rule", rid, ev, detail)
    return value


def _design_text(doc: _Doc, rs: RuleSet, population: str | None) -> tuple[str, str, str, str | None]:
    for rule in rs.design_rules:
        if rule.fallback:
            why = "no abstract; " if not doc.abstract else ""
            return rule.value, rule.id, f"{why}no design cue in title or abstract", rule.detail
        if rule.population:
            if population in rule.population:
                return rule.value, rule.id, f"population tagged {population}", rule.detail
            continue
        if population in rule.skip_population:
            continue
        if rule.require_population and population not in rule.require_population:
            continue
        if not rule.lazy and rule.pattern_ids.isdisjoint(doc.candidates):
            continue
        if rule.unless_title and doc.fields["title"] and rule.unless_title.search(doc.fields["title"]):
            continue
        hits: list[str] = []
        seen: set[str] = set()
        for fname, pats in (("title", rule.title), ("abstract", rule.abstract), ("journal", rule.journal)):
            if pats is None:
                continue
            text = doc.fields[fname]
            if not text:
                continue
            for m in pats.finditer(doc, fname):
                s, e = m.span()
                if rule.unless_before and rule.unless_before.search(text[max(0, s - 60) : s]):
                    continue
                if rule.unless_after and rule.unless_after.search(text[e : e + 60]):
                    continue
                if rule.unless_match and rule.unless_match.search(m.group(0)):
                    continue
                key = m.group(0).lower()
                if key in seen:
                    continue
                seen.add(key)
                hits.append(_snippet(fname, text, s, e))
                if len(hits) >= rule.min_hits:
                    break
            if len(hits) >= rule.min_hits:
                break
        if len(hits) >= rule.min_hits:
            return rule.value, rule.id, " | ".join(hits), rule.detail
    raise AssertionError("the design rules end with a fallback")  # checked at load time


# -- sample size


def sample_size(doc_or_row: _Doc | dict[str, Any], rs: RuleSet | None = None) -> tuple[int, str, str] | None:
    """The participant count of an abstract: (count, how it was counted, the sentence)."""
    rs = rs or load_ruleset()
    doc = doc_or_row if isinstance(doc_or_row, _Doc) else _Doc(doc_or_row, False, rs.index)
    cfg = rs.sample_size
    if not doc.abstract:
        return None
    text = doc.abstract
    candidates: list[dict[str, Any]] = []
    doc.candidates  # noqa: B018 - computes the record's word set
    words_possible = [w.decode() for w in doc.tokens & _NUMWORDS_BYTES]
    for si, (a, z, label) in enumerate(doc.sentences):
        if label and cfg["skip_sections"] and cfg["skip_sections"].search(label):
            continue
        sentence = text[a:z]
        if not words_possible and not _ANY_DIGIT.search(sentence):
            continue
        if cfg["skip_sentence"] and cfg["skip_sentence"].search(sentence.lower()):
            continue
        found: list[tuple[int, int, int, str, bool]] = []  # start, end, n, noun, unit?
        for s, e, n in _numbers(sentence, words_possible):
            for kind in ("person", "unit", "of_total"):
                m = cfg[kind].match(sentence, e)
                if m:
                    found.append((s, m.end(), n, m.group("noun"), kind == "unit"))
                    break
        for m in cfg["n_equals"].finditer(sentence):
            nb = cfg["noun_before"].search(sentence, max(0, m.start() - 40), m.start())
            if nb:
                found.append((m.start(1), m.end(), _parse_number(m.group(1)) or 0, nb.group("noun"), False))
        for s, e, n, noun, is_unit in found:
            if not n or n > 10_000_000:
                continue
            before = sentence[max(0, s - 40) : s]
            if cfg["exclude_before"] and cfg["exclude_before"].search(before):
                continue
            rank, vlabel = _verb_rank(cfg, sentence, s, e)
            candidates.append({
                "rank": rank, "label": vlabel, "n": n, "si": si, "pos": s, "unit": is_unit,
                "noun": noun.lower().rstrip("s"),
                "total": bool(re.search(r"total of\s*$", before, re.IGNORECASE)),
            })  # fmt: skip
    persons = [c for c in candidates if not c["unit"]]
    pool = persons or candidates
    if not pool:
        return None
    by_sentence: dict[int, list[dict[str, Any]]] = {}
    for c in pool:
        by_sentence.setdefault(c["si"], []).append(c)
    options = []
    for si, cs in by_sentence.items():
        top = max(c["rank"] for c in cs)
        tops = list({c["pos"]: c for c in cs if c["rank"] == top}.values())
        ns = [c["n"] for c in tops]
        # Randomised counts of the same noun in one sentence are arms: "89 women were randomized
        # to A, and 87 women were randomized to placebo". A count that is the sum of the others
        # is their total: "60 patients (30 women and 30 men)".
        same_noun = len({c["noun"] for c in tops}) == 1
        if top == 3 and len(ns) > 1 and same_noun and sum(ns) - max(ns) != max(ns):
            n = sum(ns)
        else:
            n = max(ns)
        options.append((top, any(c["total"] for c in tops), n, -si, tops[0]["label"], si))
    options.sort(reverse=True)
    _rank, _total, n, _neg, vlabel, si = options[0]
    a, z, _ = doc.sentences[si]
    return n, vlabel or "mentioned", " ".join(text[a:z].split())


_CLAUSE_END = re.compile(r"[,;:()]|\b(?:of whom|of which|whereas|while|but)\b")


def _verb_rank(cfg: dict[str, Any], sentence: str, start: int, end: int) -> tuple[int, str]:
    """The verb that governs a count: the nearest one after it ("226 patients were randomly
    assigned"), else the nearest before it ("we randomly assigned 62 patients")."""
    after = sentence[end : end + 90]
    before = sentence[max(0, start - 50) : start]
    # verbs of the count's own clause ("were enrolled and randomized") count together
    clause = _CLAUSE_END.split(after, 1)[0]
    in_clause = [(v.rank, v.label) for v in cfg["verbs"] if v.regex.search(clause)]
    if in_clause:
        return max(in_clause)
    best: tuple[int, int, str] | None = None  # (distance, rank, label)
    for verb in cfg["verbs"]:
        m = verb.regex.search(after)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), verb.rank, verb.label)
    if best is None:
        for verb in cfg["verbs"]:
            for m in verb.regex.finditer(before):
                d = len(before) - m.end()
                if best is None or d < best[0]:
                    best = (d, verb.rank, verb.label)
    return (best[1], best[2]) if best else (0, "")


# -- conclusion


def conclusion(doc_or_row: _Doc | dict[str, Any], rs: RuleSet | None = None) -> tuple[str, str, str, str] | None:
    """Which way the abstract concludes: (value, cue id, sentence, where it was read)."""
    rs = rs or load_ruleset()
    doc = doc_or_row if isinstance(doc_or_row, _Doc) else _Doc(doc_or_row, False, rs.index)
    cfg = rs.conclusion
    if not doc.abstract:
        return None
    text = doc.abstract
    sents = doc.sentences
    chosen = [s for s in sents if s[2] and cfg["sections"].match(s[2].strip())]
    where = "conclusion section"
    if chosen:
        last_label = chosen[-1][2]
        chosen = [s for s in chosen if s[2] == last_label]
    else:
        where = "closing sentences"
        usable = [
            s for s in sents
            if not (s[2] and cfg["skip_sections"] and cfg["skip_sections"].search(s[2]))
            and not (cfg["skip_sentence"] and cfg["skip_sentence"].search(text[s[0] : s[1]]))
        ]  # fmt: skip
        chosen = usable[-cfg["closing"] :]
    for a, z, _label in chosen:
        sentence = text[a:z]
        if cfg["skip_sentence"] and cfg["skip_sentence"].search(sentence):
            continue
        scores: dict[str, float] = {}
        first_id: dict[str, str] = {}
        breaks = _clause_starts(cfg, sentence)
        for cue in cfg["cues"]:
            for m in cue.regex.finditer(sentence):
                value: str | None = cue.value
                if cue.negatable and _negated(cfg, sentence, m.start(), breaks):
                    value = cue.when_negated
                if value is None:
                    continue
                scores[value] = scores.get(value, 0.0) + cue.weight
                first_id.setdefault(value, cue.id)
        if scores:
            rank = cfg["tie_rank"]
            best = max(scores, key=lambda v: (scores[v], -rank.get(v, 99)))
            return best, first_id[best], " ".join(sentence.split()), where
    return None


def _clause_starts(cfg: dict[str, Any], sentence: str) -> list[int]:
    """Where each clause after the first begins (", but", ";", " whereas " ...), ascending."""
    if not cfg["clause_breaks"]:
        return []
    return [m.end() for m in cfg["clause_breaks"].finditer(sentence)]


def _negated(cfg: dict[str, Any], sentence: str, cue_start: int, breaks: list[int]) -> bool:
    """A negator in the ``negation_window`` characters before the cue, within the cue's own
    clause: "pain did not change, but function improved" leaves "improved" positive."""
    if not cfg["negators"]:
        return False
    i = bisect.bisect_right(breaks, cue_start) - 1
    clause = breaks[i] if i >= 0 else 0
    lo = max(clause, cue_start - cfg["negation_window"])
    # "not only", "no doubt": negation words that negate nothing; searched from the clause
    # start so that a phrase the window cuts in two is still seen whole.
    ignored = [] if not cfg["not_negations"] else [
        m.span() for m in cfg["not_negations"].finditer(sentence, clause, cue_start)
    ]  # fmt: skip
    for n in cfg["negators"].finditer(sentence, lo, cue_start):
        if not any(a <= n.start() and n.end() <= z for a, z in ignored):
            return True
    return False


# ------------------------------------------------------------------------------ database

_INSERT = (
    "INSERT INTO tags (study_id, facet, value, detail, origin, rule_id, ruleset_version, "
    "evidence, negated, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
)
_BATCH = 500
# Tombstoned studies are not re-tagged: they keep the tags they had when deleted, which
# `export --include-deleted` shows (study_tags_summary and studies_tagged hide them).
_LIVE = "coalesce(deleted, 0) = 0"
_LIVE_IDS = f"study_id IN (SELECT id FROM studies WHERE {_LIVE})"


def tag_studies(
    db: Database, study_ids: Iterable[int] | None = None, *, ruleset: RuleSet | None = None,
    workers: int | None = None,
) -> int:  # fmt: skip
    """Re-tag these studies (all when None): replace their automatic tags, keep manual ones.

    Deleted studies (tombstones) are left as they are: their tags, automatic and manual,
    stay as they were when the record was deleted, and are in force again (re-tagged) if
    the record comes back.

    Runs inside the caller's transaction when one is open (the harvesters call it in the
    batch transaction, so a batch and its tags commit together); otherwise takes its own.
    A full re-tag of a large database may classify in ``workers`` forked processes (default:
    one per CPU beyond the first, at most 4, only with 3 or more CPUs; the database is only
    touched by this process); ``workers=1`` stays in one process. Returns the number of
    studies tagged.
    """
    rs = ruleset or load_ruleset()
    ctx = nullcontext() if db.conn.in_transaction else write_tx(db)
    cols = ", ".join(ROW_COLUMNS)
    count = 0
    with ctx:
        conn = db.conn
        if study_ids is None:
            conn.execute(f"DELETE FROM tags WHERE origin IN ('nlm', 'rule') AND {_LIVE_IDS}")
            total = conn.execute(f"SELECT count(*) FROM studies WHERE {_LIVE}").fetchone()[0]
            cursor = conn.execute(f"SELECT {cols} FROM studies WHERE {_LIVE} ORDER BY id")
            chunks = iter(lambda: cursor.fetchmany(_BATCH), [])
            n_workers = _workers(workers, total)
            if n_workers > 1:
                return _write_parallel(conn, rs, chunks, n_workers)
            for rows in chunks:
                count += _write_tags(conn, rs, [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows])
            return count
        ids = list(dict.fromkeys(int(i) for i in study_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            conn.execute(
                f"DELETE FROM tags WHERE origin IN ('nlm', 'rule') AND study_id IN ({marks}) "
                f"AND {_LIVE_IDS}", chunk
            )
            rows = conn.execute(
                f"SELECT {cols} FROM studies WHERE id IN ({marks}) AND {_LIVE}", chunk
            ).fetchall()
            count += _write_tags(conn, rs, [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows])
    return count


def _write_tags(conn: Any, rs: RuleSet, rows: list[dict[str, Any]]) -> int:
    now = utcnow()
    conn.executemany(_INSERT, [(*p, now) for p in _tag_params(rs, rows)])
    return len(rows)


def _tag_params(rs: RuleSet, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    params = []
    for row in rows:
        for t in classify(row, rs):
            params.append(
                (row["id"], t.facet, t.value, t.detail, t.origin, t.rule_id, t.ruleset_version, t.evidence)
            )
    return params


# Classification is pure, so a full re-tag can fan out to forked worker processes; only this
# process talks to SQLite. Below this many studies the fork is not worth it.
_PARALLEL_MIN = 4000
_WORKER_RULESET: RuleSet | None = None


def _workers(requested: int | None, total: int) -> int:
    if requested is not None:
        n = max(1, requested)
    elif total < _PARALLEL_MIN or (os.cpu_count() or 1) < 3:
        return 1  # the parent process needs a CPU of its own to feed workers and write
    else:
        n = min(4, (os.cpu_count() or 1) - 1)
    return n if n > 1 and "fork" in multiprocessing.get_all_start_methods() else 1


def _classify_rows(raw: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    assert _WORKER_RULESET is not None
    return _tag_params(_WORKER_RULESET, [dict(zip(ROW_COLUMNS, r, strict=True)) for r in raw])


def _write_parallel(conn: Any, rs: RuleSet, chunks: Iterator[list[Any]], n_workers: int) -> int:
    global _WORKER_RULESET
    _WORKER_RULESET = rs  # inherited by the forked workers
    count = 0
    now = utcnow()
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(n_workers) as pool:
            sizes: list[int] = []

            def counted() -> Iterator[list[Any]]:
                for rows in chunks:
                    sizes.append(len(rows))
                    yield [tuple(r) for r in rows]

            for params in pool.imap(_classify_rows, counted()):
                conn.executemany(_INSERT, [(*p, now) for p in params])
            count = sum(sizes)
    finally:
        _WORKER_RULESET = None
    return count


STUDY_REF_HELP = ("a PMID, doi:10.xxxx/... (or the DOI's https://doi.org/ link) or id:N "
                  "(the studies.id of a row without a PMID)")
_DOI_FORMS = ("10.", "https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi.org/")


def resolve_study(db: Database, ref: str | int) -> int:
    """The ``studies.id`` a researcher's reference names: a bare number is a PMID,
    ``pmid:N`` too, ``doi:10.xxxx/...`` a DOI (feed-only rows often have nothing else),
    ``id:N`` the row itself (for rows with neither). Raises :class:`TagError` when nothing
    or more than one live study matches."""
    text = str(ref).strip()
    if text.lower().startswith(_DOI_FORMS):  # a DOI as a resolver link shows it, or bare
        return _by_doi(db, text)
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower() if sep else ""
    if not sep or kind == "pmid":
        return _by_pmid(db, rest.strip() if sep else text)
    if kind == "id":
        return _by_row_id(db, rest.strip())
    if kind == "doi":
        return _by_doi(db, rest)
    raise TagError(f"not a study reference: {text!r}; give {STUDY_REF_HELP}")


_ASCII_DIGITS = re.compile(r"[0-9]+")


def _by_pmid(db: Database, pmid: str) -> int:
    if not _ASCII_DIGITS.fullmatch(pmid):  # str.isdigit() also takes "²" and "١"
        raise TagError(f"not a study reference: {pmid!r}; give {STUDY_REF_HELP}")
    row = db.execute("SELECT id FROM studies WHERE pmid = ?", [pmid]).fetchone()
    if row is None:
        raise TagError(f"unknown PMID {pmid}: no such study in the database")
    return int(row[0])


def _by_row_id(db: Database, sid: str) -> int:
    row = (db.execute("SELECT id FROM studies WHERE id = ?", [int(sid)]).fetchone()
           if _ASCII_DIGITS.fullmatch(sid) else None)  # fmt: skip
    if row is None:
        raise TagError(f"unknown study id:{sid}: no such row in the studies table")
    return int(row[0])


def _by_doi(db: Database, raw: str) -> int:
    from harvest.pubmed_xml import normalize_doi  # here: tagging alone must not load lxml

    doi = normalize_doi(raw)
    if doi is None:
        raise TagError(f"not a DOI: {raw.strip()!r} (expected doi:10.xxxx/...)")
    # Stored DOIs are lower-case from parsers but as given from other sources: the exact
    # (indexed) lookup first, a case-insensitive scan only when it finds nothing.
    sql = "SELECT id, coalesce(deleted, 0) FROM studies WHERE {} ORDER BY id"
    rows = db.execute(sql.format("doi = ?"), [doi]).fetchall() or db.execute(
        sql.format("lower(doi) = ?"), [doi]
    ).fetchall()
    if not rows:
        raise TagError(f"unknown DOI {doi}: no such study in the database")
    # A feed row folded into its PubMed record stays as a tombstone with the same DOI.
    live = [r[0] for r in rows if not r[1]] or [r[0] for r in rows]
    if len(live) > 1:
        ids = ", ".join(f"id:{i}" for i in live)
        raise TagError(f"DOI {doi} matches {len(live)} studies ({ids}); name one by its id")
    return int(live[0])


def set_manual(
    db: Database, ref: str | int, facet: str, value: str, *, note: str | None = None,
    detail: str | None = None, ruleset: RuleSet | None = None,
) -> None:  # fmt: skip
    """Record a researcher's tag. For a single-valued facet (design, population, sample size,
    conclusion) it replaces the automatic value and any earlier manual one."""
    rs = ruleset or load_ruleset()
    value = rs.check_value(facet, value)
    ctx = nullcontext() if db.conn.in_transaction else write_tx(db)
    with ctx:
        sid = resolve_study(db, ref)
        if facet in rs.single_valued:
            db.conn.execute(
                "DELETE FROM tags WHERE study_id = ? AND facet = ? AND origin = 'manual' "
                "AND negated = 0 AND value != ?",
                [sid, facet, value],
            )
        db.conn.execute(
            "INSERT OR REPLACE INTO tags (study_id, facet, value, detail, origin, rule_id, "
            "ruleset_version, evidence, negated, created) VALUES (?, ?, ?, ?, 'manual', 'manual', "
            "NULL, ?, 0, ?)",
            [sid, facet, value, detail, note or "set by a researcher", utcnow()],
        )


def unset_manual(
    db: Database, ref: str | int, facet: str, value: str, *, note: str | None = None,
    ruleset: RuleSet | None = None,
) -> None:  # fmt: skip
    """Hide a value: a manual row with ``negated = 1`` (it also replaces a manual set of the
    same value). Re-tagging never brings the value back."""
    rs = ruleset or load_ruleset()
    value = rs.check_value(facet, value)
    ctx = nullcontext() if db.conn.in_transaction else write_tx(db)
    with ctx:
        sid = resolve_study(db, ref)
        db.conn.execute(
            "INSERT OR REPLACE INTO tags (study_id, facet, value, detail, origin, rule_id, "
            "ruleset_version, evidence, negated, created) VALUES (?, ?, ?, NULL, 'manual', "
            "'manual', NULL, ?, 1, ?)",
            [sid, facet, value, note or "unset by a researcher", utcnow()],
        )


def clear_manual(db: Database, ref: str | int, facet: str, value: str | None = None) -> int:
    """Forget manual tags (sets and unsets) of a facet, or of one value: the automatic tags
    show again. Returns how many manual rows were removed."""
    rs = load_ruleset()
    if facet not in rs.facets:
        raise TagError(f"unknown facet {facet!r}; facets are: {', '.join(rs.facets)}")
    ctx = nullcontext() if db.conn.in_transaction else write_tx(db)
    with ctx:
        sid = resolve_study(db, ref)
        sql = "DELETE FROM tags WHERE study_id = ? AND facet = ? AND origin = 'manual'"
        args: list[Any] = [sid, facet]
        if value is not None:
            sql += " AND value = ?"
            args.append(rs.check_value(facet, value))
        return db.conn.execute(sql, args).rowcount


# The rule of precedence, in SQL so that Datasette shows the same thing (views in schema.py).
_EFFECTIVE_SQL = """
SELECT t.study_id, t.facet, t.value, t.detail, t.origin, t.rule_id, t.ruleset_version,
       t.evidence, t.negated, t.created,
       CASE
         WHEN t.origin = 'manual' AND t.negated = 1 THEN 'unset by a researcher'
         WHEN t.origin = 'manual' THEN NULL
         WHEN EXISTS (SELECT 1 FROM tags m WHERE m.study_id = t.study_id AND m.facet = t.facet
                      AND m.value = t.value AND m.origin = 'manual' AND m.negated = 1)
           THEN 'hidden by a manual unset'
         WHEN EXISTS (SELECT 1 FROM tags m WHERE m.study_id = t.study_id AND m.facet = t.facet
                      AND m.value = t.value AND m.origin = 'manual')
           THEN 'confirmed by a manual tag'
         WHEN t.facet IN ({single}) AND EXISTS (
                SELECT 1 FROM tags m WHERE m.study_id = t.study_id AND m.facet = t.facet
                AND m.origin = 'manual' AND m.negated = 0)
           THEN 'overridden by a manual tag'
       END AS suppressed
FROM tags t WHERE t.study_id = ?
""".format(single=", ".join(f"'{f}'" for f in SINGLE_VALUED_FACETS))


def explain(db: Database, ref: str | int, *, include_suppressed: bool = False) -> list[dict[str, Any]]:
    """Each effective tag of a study (``ref`` as :func:`resolve_study` reads it) with its
    origin, rule id, rule-set version and evidence; ``pmid`` is None for a feed-only row.

    With ``include_suppressed`` also the automatic tags a manual one overrides or hides, and
    the manual unsets, each with ``effective = False`` and the reason.
    """
    sid = resolve_study(db, ref)
    pmid = db.execute("SELECT pmid FROM studies WHERE id = ?", [sid]).fetchone()[0]
    order = {f: i for i, f in enumerate(_FACET_ORDER)}
    origin_order = {"manual": 0, "nlm": 1, "rule": 2}
    out = []
    for r in db.query(_EFFECTIVE_SQL, [sid]):
        effective = r["suppressed"] is None
        if not effective and not include_suppressed:
            continue
        out.append(
            {
                "pmid": pmid,
                "facet": r["facet"],
                "value": r["value"],
                "detail": r["detail"],
                "origin": r["origin"],
                "rule_id": r["rule_id"],
                "ruleset_version": r["ruleset_version"],
                "evidence": r["evidence"],
                "created": r["created"],
                "effective": effective,
                **({} if effective else {"reason": r["suppressed"]}),
            }
        )
    out.sort(key=lambda d: (order.get(d["facet"], 99), not d["effective"], d["value"],
                            origin_order.get(d["origin"], 9)))  # fmt: skip
    return out


def study_summary(db: Database, study_id: int) -> dict[str, Any]:
    """The effective tags of one study in the shape the JSONL export carries."""
    return study_summaries(db, [study_id]).get(study_id) or _empty_summary()


def _empty_summary() -> dict[str, Any]:
    return {
        "design": None, "interventions": [], "intervention_details": {}, "conditions": [],
        "comparators": [], "population": None, "sample_size": None, "conclusion": None,
        "flags": [],
    }  # fmt: skip


def study_summaries(db: Database, study_ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """:func:`study_summary` for many studies (all when None) in one query; for exports."""
    where, args = "", []
    if study_ids is not None:
        ids = list(dict.fromkeys(int(i) for i in study_ids))
        if not ids:
            return {}
        where, args = f"WHERE study_id IN ({','.join('?' * len(ids))})", ids
    out: dict[int, dict[str, Any]] = {}
    prio = {"manual": 0, "nlm": 1, "rule": 2}
    single_best: dict[tuple[int, str], int] = {}
    for r in db.query(f"SELECT * FROM study_tags_effective {where}", args):
        s = out.setdefault(r["study_id"], _empty_summary())
        facet, value = r["facet"], r["value"]
        if facet in ("design", "population", "conclusion", "sample_size"):
            p = prio.get(r["origin"], 9)
            key = (r["study_id"], facet)
            if key in single_best and single_best[key] <= p:
                continue
            single_best[key] = p
            s[facet] = int(value) if facet == "sample_size" and str(value).isdigit() else value
        else:
            plural = {"intervention": "interventions", "condition": "conditions",
                      "comparator": "comparators", "flag": "flags"}.get(facet)  # fmt: skip
            if plural is None:
                continue
            if value not in s[plural]:
                s[plural].append(value)
            if facet == "intervention" and r["detail"]:
                details = set(filter(None, (s["intervention_details"].get(value) or "").split(",")))
                details |= set(r["detail"].split(","))
                s["intervention_details"][value] = ",".join(sorted(details))
    for s in out.values():
        for k in ("interventions", "conditions", "comparators", "flags"):
            s[k].sort()
    if study_ids is not None:
        for i in ids:
            out.setdefault(i, _empty_summary())
    return out


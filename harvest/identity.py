"""Is this the same work? Title normalization, fuzzy matching and the store's resolver.

A feed entry joins an existing study by PMID, else DOI, else a fuzzy match of its
normalized title checked against year and first author; otherwise it is new. The rules
were tuned on the labelled pairs in ``benchmarks/labels/dedup_pairs.jsonl`` (see
``benchmarks/results/dedup.md``): true duplicates differ in case, punctuation, HTML,
spelling (randomised/randomized), a dropped or added subtitle, or a preprint's wording;
the near misses that must stay apart are corrections, comments and replies that repeat
the article's title, protocols and their trials, numbered parts, and a group's sibling
papers whose titles share a long prefix.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any

from rapidfuzz import fuzz, process
from sqlite_utils import Database

from harvest.store import existing_row

__all__ = [
    "first_author_tokens",
    "normalize_title",
    "resolve",
    "same_work",
    "title_kind",
]

# Full-title similarity (rapidfuzz ratio, 0-100) above which two titles are one work
# when nothing else (kind, numbers, year, first author, identifiers) disagrees.
TITLE_RATIO = 93
# A title shorter than this many words must match exactly: "In Regard to Alam et al." vs
# "In Regard to Salama et al." score 96.
MIN_FUZZY_WORDS = 5
# A main title (before the subtitle) this long may stand for the whole title.
MIN_MAIN_WORDS = 5
# Preprint and journal versions are reworded more; they must agree on first author.
PREPRINT_TOKEN_SET = 88
PREPRINT_DOI_PREFIXES = (
    "10.1101/",  # bioRxiv, medRxiv
    "10.21203/",  # Research Square
    "10.2139/",  # SSRN
    "10.20944/",  # Preprints.org
    "10.31219/",  # OSF Preprints
    "10.31234/",  # PsyArXiv
    "10.48550/",  # arXiv
    "10.22541/",  # Authorea
    "10.1590/scielopreprints",
)
PREPRINT_JOURNALS = ("medrxiv", "biorxiv", "research square", "ssrn", "preprints", "arxiv")

_SUBTITLE_SPLIT = re.compile(r"\s*(?::|\?|\s[-–—]{1,2}\s|\.\s)\s*")
_KINDS = (
    ("erratum", re.compile(
        r"^(?:author\s+|publisher\s+)?(?:correction|corrigendum|erratum|errata)\b|\berratum\b"
        r"|^correction\s+to\b", re.I)),
    ("retraction", re.compile(
        r"^(?:retraction|retraction\s+note|notice\s+of\s+retraction|expression\s+of\s+concern"
        r"|withdrawn|withdrawal)\b", re.I)),
    ("comment", re.compile(
        r"^(?:comments?\s+on|commentary(?:\s+on)?|re\s*[:.]|in\s+regard\s+to|letter\b|response\b"
        r"|reply\b|in\s+reply|in\s+response|authors?'?\s+reply|editorial\s+comment)"
        r"|[-–—:]\s*(?:authors?'?\s+)?(?:reply|response)\.?$|\[(?:letter|comment)\]", re.I)),
    ("protocol", re.compile(r"\bprotocol\b", re.I)),
)  # fmt: skip
_SPELLING = ((re.compile(r"(?<=[a-z]{3})is(e|ed|es|ing|ation|ations)\b"), r"iz\1"),
             (re.compile(r"(?<=[a-z]{3})our\b"), "or"),
             (re.compile(r"(?<=[a-z]{2})tre\b"), "ter"))  # fmt: skip
_STOP_NUMBERS = {"19"}  # "COVID-19" is a name, not a count
# Words that make a different work of the same study when only one title has them.
_DISCRIMINATORS = {
    "update", "updated", "pilot", "feasibility", "secondary", "post", "hoc", "cost", "economic",
    "followup", "follow", "extension", "interim", "preliminary", "phase", "part", "protocol",
    "erratum", "correction", "corrigendum", "retraction", "retracted", "reply", "response",
    "comment", "commentary", "letter", "editorial", "abstract", "abstracts", "supplement",
}  # fmt: skip
_STOPWORDS = {"a", "an", "the", "of", "in", "on", "for", "and", "or", "with", "to", "by", "at",
              "from", "as", "vs", "versus", "is", "are", "its", "their", "within", "into",
              "after", "among", "using", "via"}  # fmt: skip
# Study designs, most specific first; a title names at most one that counts.
_DESIGNS = (
    ("protocol", re.compile(r"\bprotocol\b")),
    ("review", re.compile(r"\b(?:systematic review|meta analys[ie]s|umbrella review|scoping review"
                          r"|narrative review|literature review|review)\b")),
    ("trial", re.compile(r"\b(?:trial|rct|randomized|randomly)\b")),
    ("case", re.compile(r"\bcase (?:report|series)\b")),
    ("cohort", re.compile(r"\b(?:cohort|cross sectional|observational|survey|qualitative)\b")),
)


@functools.lru_cache(maxsize=200_000)
def normalize_title(title: str | None) -> str:
    """Lower-case ASCII words: accents, HTML remnants, punctuation and UK spelling folded.

    PubMed wraps translated titles in brackets and ends titles with a period; publishers
    use typographic dashes and title case. None of that tells two works apart.
    """
    if not title:
        return ""
    text = re.sub(r"<[^>]{0,200}>", " ", title)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("&amp;", " and ").replace("&", " and ")
    text = text.replace("ß", "ss").replace("æ", "ae").replace("ø", "o")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    for pattern, repl in _SPELLING:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


def main_title(title: str | None) -> str:
    """The normalized part before the first subtitle separator (``:``, ``?``, a dash)."""
    if not title:
        return ""
    stripped = title.strip().strip("[]").strip()
    return normalize_title(_SUBTITLE_SPLIT.split(stripped, maxsplit=1)[0])


def title_kind(title: str | None) -> str | None:
    """``erratum``, ``retraction``, ``comment``, ``protocol`` or None (an article)."""
    text = (title or "").strip().strip("[]").strip()
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return None


def design(norm: str) -> str | None:
    """The study design a normalized title names (protocol, review, trial...), if any."""
    for name, pattern in _DESIGNS:
        if pattern.search(norm):
            return name
    return None


def _words(norm: str) -> set[str]:
    return {w for w in norm.split() if w not in _STOPWORDS}


def _substituted(only_a: set[str], only_b: set[str]) -> bool:
    """True when a content word of one title was replaced by an unrelated one in the other.

    Formatting never does that (case, punctuation and spelling are normalized away);
    a sibling paper does ("football player" / "basketball player").
    """
    def unmatched(xs: set[str], ys: set[str]) -> bool:
        return any(all(fuzz.ratio(x, y) < 80 for y in ys) for x in xs)

    return bool(only_a and only_b) and (unmatched(only_a, only_b) or unmatched(only_b, only_a))


def _numbers(norm: str) -> set[str]:
    return {t for t in norm.split() if t.isdigit() and t not in _STOP_NUMBERS}


def _authors(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [a for a in value if isinstance(a, str) and a.strip()]


def first_author_tokens(authors: Any) -> tuple[set[str], set[str]] | None:
    """(surname words, all name words) of the first author, folded to ASCII lower case.

    Handles PubMed's "Fernández-de-Las-Peñas C", a publisher's "Edwards, J." and a plain
    "César Fernández-de-las-Peñas"; initials never count as a surname.
    """
    names = _authors(authors)
    if not names:
        return None
    name = unicodedata.normalize("NFKD", names[0])
    name = "".join(c for c in name if not unicodedata.combining(c))
    if "," in name:
        surname_part = name.split(",", 1)[0]
    else:
        words = name.split()
        if len(words) > 1 and re.fullmatch(r"[A-Z]{1,3}\.?", words[-1]):
            surname_part = " ".join(words[:-1])  # PubMed: "Last Initials"
        else:
            surname_part = words[-1] if words else ""
    def toks(s: str) -> set[str]:
        return {t for t in re.split(r"[^a-z]+", s.lower()) if len(t) >= 2}

    all_words = toks(name)
    surname = {t for t in toks(surname_part) if len(t) >= 3} or toks(surname_part)
    if not surname:
        return None
    return surname, all_words


def authors_agree(a: Any, b: Any) -> bool | None:
    """True/False when both first authors are known, None when either is missing."""
    ta, tb = first_author_tokens(a), first_author_tokens(b)
    if ta is None or tb is None:
        return None
    return bool(ta[0] & tb[1]) or bool(tb[0] & ta[1])


def _is_preprint(row: dict[str, Any]) -> bool:
    doi = (row.get("doi") or "").lower()
    journal = (row.get("journal") or "").lower()
    return doi.startswith(PREPRINT_DOI_PREFIXES) or any(j in journal for j in PREPRINT_JOURNALS)


def _year(row: dict[str, Any]) -> int | None:
    y = row.get("year")
    try:
        return int(y) if y not in (None, "") else None
    except (TypeError, ValueError):
        return None


def same_work(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Do two records (``studies`` rows or dicts alike) describe one work?

    Identifiers decide first: different PMIDs never merge, nor do different DOIs unless
    one is a preprint's. Then the titles, after checks that veto a fuzzy match: their
    kinds (erratum, comment, protocol...), the numbers in them, the year (one year apart
    is allowed: online first vs issue), and the first author when both have one.
    """
    if a.get("pmid") and b.get("pmid"):
        return str(a["pmid"]) == str(b["pmid"])
    preprint = _is_preprint(a) != _is_preprint(b)
    if a.get("doi") and b.get("doi"):
        if a["doi"].lower() == b["doi"].lower():
            return True
        if not preprint:
            return False
    ta, tb = normalize_title(a.get("title")), normalize_title(b.get("title"))
    if not ta or not tb:
        return False
    if title_kind(a.get("title")) != title_kind(b.get("title")):
        return False
    ya, yb = _year(a), _year(b)
    if ya and yb and abs(ya - yb) > (2 if preprint else 1):
        return False
    agree = authors_agree(a.get("authors"), b.get("authors"))
    if agree is False:
        return False
    if ta == tb:
        # "Correction." or "Editorial" alone says nothing about which one.
        return len(ta.split()) >= MIN_FUZZY_WORDS or agree is True
    na, nb = _numbers(ta), _numbers(tb)
    if na and nb and na != nb:
        return False
    short = min(len(ta.split()), len(tb.split()))
    if short < MIN_FUZZY_WORDS:
        return False
    wa, wb = _words(ta), _words(tb)
    if (wa ^ wb) & _DISCRIMINATORS:
        return False
    da, db = design(ta), design(tb)
    if da and db and da != db:
        return False
    if not preprint and _substituted(wa - wb, wb - wa):
        return False
    if fuzz.ratio(ta, tb) >= TITLE_RATIO or fuzz.token_sort_ratio(ta, tb) >= 97:
        return True
    # A subtitle dropped or added: the main titles agree and are long enough to identify.
    ma, mb = main_title(a.get("title")), main_title(b.get("title"))
    long_main = min(len(ma.split()), len(mb.split())) >= MIN_MAIN_WORDS
    if long_main and agree is True and (ma == mb or ma == tb or mb == ta):
        return True
    if preprint and agree is True and fuzz.token_set_ratio(ta, tb) >= PREPRINT_TOKEN_SET:
        return True
    return False


# --- the resolver for store.save_studies ---------------------------------------------

_CANDIDATE_SQL = "SELECT id, title FROM studies WHERE deleted = 0"
_ROW_SQL = "SELECT id, pmid, doi, title, year, authors, journal FROM studies WHERE id = ?"
# How many of the closest titles get the full check.
_CANDIDATES = 15
_CANDIDATE_CUTOFF = 70


def resolve(db: Database, row: dict[str, Any]) -> dict[str, Any] | None:
    """Find the study a new row belongs to, for ``store.save_studies(resolve=...)``.

    ``save_studies`` has already looked up the PMID, and the DOI among feed-only rows;
    this adds the DOI (a feed entry meeting its PubMed record, live ones first; never a
    merged feed-only shell) and the fuzzy title match. Returns
    :func:`harvest.store.existing_row` or None.
    """
    if row.get("pmid"):
        hit = db.execute("SELECT id FROM studies WHERE pmid = ?", [row["pmid"]]).fetchone()
        if hit:
            return existing_row(db, hit[0])
        # Past its own PMID, a PubMed record can only absorb a feed-only row (by DOI or
        # title); without any, one indexed look-up spares the rest on a bulk import.
        if db.execute("SELECT 1 FROM studies WHERE pmid IS NULL LIMIT 1").fetchone() is None:
            return None
    if row.get("doi"):
        for hit in db.execute(
            # live rows first; a deleted PubMed record still owns its DOI (a feed entry attaches
            # to it, without reviving it), a merged feed-only shell does not
            "SELECT id, pmid FROM studies WHERE doi = ? AND (deleted = 0 OR pmid IS NOT NULL) "
            "ORDER BY deleted, pmid IS NULL, id",
            [row["doi"]],
        ):
            if not (row.get("pmid") and hit[1] and str(hit[1]) != str(row["pmid"])):
                return existing_row(db, hit[0])
    match = best_title_match(db, row)
    return existing_row(db, match) if match is not None else None


def best_title_match(db: Database, row: dict[str, Any]) -> int | None:
    """The id of the study whose title, year and first author match ``row``, if any."""
    sql, params = _CANDIDATE_SQL, []
    year = _year(row)
    if year:
        sql += " AND (year IS NULL OR year BETWEEN ? AND ?)"
        params = [year - 2, year + 2]
    if row.get("pmid"):
        sql += " AND pmid IS NULL"  # a row with a PMID only ever absorbs feed-only rows
    rows = db.execute(sql, params).fetchall()  # tuples: 10k rows in a few ms
    if not rows:  # e.g. a PubMed record when no feed-only rows exist: skip the normalising
        return None
    title = normalize_title(row.get("title"))
    if not title:
        return None
    ids = [study_id for study_id, _ in rows]
    choices = [normalize_title(candidate) for _, candidate in rows]
    ranked = process.extract(title, choices, scorer=fuzz.token_set_ratio,
                             score_cutoff=_CANDIDATE_CUTOFF, limit=_CANDIDATES)  # fmt: skip
    best: tuple[float, int] | None = None
    for _choice, _score, index in ranked:
        if ids[index] == row.get("id"):
            continue
        cand = next(db.query(_ROW_SQL, [ids[index]]))
        if same_work(row, cand):
            score = fuzz.ratio(title, choices[index])
            if best is None or score > best[0]:
                best = (score, cand["id"])
    return best[1] if best else None


def compatible(existing: dict[str, Any], row: dict[str, Any]) -> bool:
    """Could ``row`` be a new description of ``existing`` (no identifier or title clash)?

    Used before trusting a feed's GUID or link: a GUID reused for another article
    must not overwrite the first one's study.
    """
    for key in ("pmid", "doi"):
        a, b = existing.get(key), row.get(key)
        if a and b and str(a).lower() != str(b).lower():
            return False
    if existing.get("pmid") and existing.get("pmid") == row.get("pmid"):
        return True
    if existing.get("doi") and row.get("doi") and existing["doi"].lower() == row["doi"].lower():
        return True
    ta, tb = normalize_title(existing.get("title")), normalize_title(row.get("title"))
    # No bare similarity shortcut: "... neck pain ..." and "... knee pain ..." score over 85,
    # and only same_work's vetoes (swapped content words, numbers, title kinds) tell them apart.
    return bool(ta and tb) and (ta == tb or same_work(existing, row))



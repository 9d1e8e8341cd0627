"""Feed bytes to :class:`~harvest.models.Study` records: parsing and normalizing only.

feedparser reads the fetched bytes (wrapped in ``BytesIO``, never a URL or a string it
might open) with the response headers. A bozo feed is a warning and keeps its good
entries; a body with no entries is a failure whose reason says what it was (an HTML
page, an ``<ERROR>`` body, a truncated or empty feed).

Every text field is stored as plain text: feedparser sanitizes HTML content, then we
flatten it to text, dropping script, style and embedded objects with their content.
Dates keep the raw string beside a UTC value computed with ``calendar.timegm``
(feedparser's tuples are UTC); a date the raw string contradicts (feedparser rolls
``2026-13-45`` over to 2027-01-01), before 1900 or far in the future becomes null.

Identifiers come from ``prism:doi``, every ``dc:identifier`` (feedparser keeps only the
last of several, so a second, entity-free lxml pass collects them all), GUIDs, links
(doi.org, publisher ``/10.x/`` paths, PubMed and PMC links); never from the text, where a
DOI is as often another article's (a correction cites the original).
"""

from __future__ import annotations

import calendar
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import feedparser
from lxml import etree
from lxml import html as lxml_html

from harvest.models import Study, join_pages
from harvest.pubmed_xml import normalize_doi

__all__ = [
    "FeedEntry",
    "FeedParseError",
    "ParsedFeed",
    "html_to_text",
    "link_key",
    "clean_url",
    "parse_feed",
]

# More entries than any table of contents or search feed carries: the rest are dropped.
MAX_ENTRIES = 1000
# Longest text kept per field (a summary is not a full text).
MAX_TEXT = 20_000
# Journals date issues ahead of time, but not by more than a quarter.
FUTURE_TOLERANCE = timedelta(days=92)
EARLIEST_YEAR = 1900

_DC = "http://purl.org/dc/elements/1.1/"
_PRISM_NS = (
    "http://purl.org/rss/1.0/modules/prism/",
    "http://prismstandard.org/namespaces/basic/2.0/",
    "http://prismstandard.org/namespaces/basic/2.1/",
    "http://prismstandard.org/namespaces/basic/3.0/",
    "http://prismstandard.org/namespaces/1.2/basic/",
)
_RDF_ABOUT = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about"
_SCAN_PARSER_OPTS = dict(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True
)
_PMID_ID = re.compile(r"^\s*(?:info:)?(?:pmid|pubmed)[:/]\s*(\d{1,9})\s*$", re.IGNORECASE)
_PMID_LINK = re.compile(
    r"^https?://(?:www\.)?(?:pubmed\.ncbi\.nlm\.nih\.gov/|ncbi\.nlm\.nih\.gov/pubmed/)(\d{1,9})(?:[/?#]|$)",
    re.IGNORECASE,
)
_PMC = re.compile(r"(?:^|[/:=\s])(PMC\d{3,10})(?:[/?#\s]|$)", re.IGNORECASE)
_TRACKING_PARAMS = {"fc", "ff", "v", "af", "rss", "feed", "ref", "referrer", "src", "dgcid",
                    "cmpid", "campaign", "mc_cid", "mc_eid"}  # fmt: skip
_TAG_BLOCKS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5",
               "h6", "blockquote", "section", "article", "dd", "dt", "hr", "pre"}  # fmt: skip
_DROP_WITH_CONTENT = {"script", "style", "iframe", "object", "embed", "noscript", "template",
                      "svg", "frame", "frameset", "applet", "head", "title"}  # fmt: skip
_DANGEROUS_TEXT = re.compile(
    r"<\s*(script|style|iframe|object|embed|applet|frame)\b.*?(?:<\s*/\s*\1\s*>|\Z)"
    r"|<\s*/?\s*(?:script|style|iframe|object|embed|applet|frame)\b[^>]*>",
    re.IGNORECASE | re.DOTALL,
)
# The same elements as tag-shaped text left after decoding (doubly escaped markup): a whole
# element or a lone tag goes, never the rest of the field ("<object of the study" is text).
_NAMES = "script|style|iframe|object|embed|applet|frame"
_DANGEROUS_TAG_TEXT = re.compile(
    rf"<\s*({_NAMES})\b[^<>]*>(?:(?!<\s*(?:{_NAMES})\b).)*?<\s*/\s*\1\s*>"
    rf"|<\s*/?\s*(?:{_NAMES})\b[^<>]*>",
    re.IGNORECASE | re.DOTALL,
)
# A tag in a GUID or raw date, e.g. "<b>", never "<" followed by a digit or space.
_TAG_SHAPED = re.compile(r"<[A-Za-z/!?][^<>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# Character references to UTF-16 surrogates (&#xD800;) crash feedparser 6.0.14 outright.
_SURROGATE_REF = re.compile(
    rb"&#(?:[xX]0*[dD][89a-fA-F][0-9a-fA-F]{2}"  # hex D800-DFFF
    rb"|0*(?:5529[6-9]|55[3-9]\d\d|56\d{3}|57[0-2]\d\d|573[0-3]\d|5734[0-3]));"  # 55296-57343
)
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_ISO_DATE = re.compile(r"^\s*(\d{4})-(\d{1,2})(?:-(\d{1,2}))?(?:[T ](\d{1,2}):(\d{2}))?")
_RFC_DATE = re.compile(r"(\d{1,2})\s+([A-Za-z]{3})[a-z]*\.?,?\s+(\d{2,4})(?:\s+(\d{1,2}):(\d{2}))?")
# A DOCTYPE with an internal subset: the only place entities can be declared. feedparser
# strips entity declarations it recognizes, but a slightly mangled bomb gets past that and
# expat then expands it up to its amplification limit (seconds of CPU per feed); feeds do
# not need declared entities, so the whole declaration goes before parsing.
_ENTRY_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?(?:item|entry)\s*>")
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_INTERNAL_SUBSET = re.compile(rb"<!DOCTYPE\b[^\[>]*\[.*?\]\s*>", re.IGNORECASE | re.DOTALL)
_ERROR_BODY = re.compile(rb"<\s*error\b[^>]*>(.*?)<\s*/\s*error\s*>", re.IGNORECASE | re.DOTALL)
_HTML_HEAD = re.compile(rb"<\s*(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)


class FeedParseError(Exception):
    """The body is not a usable feed; the message says what it was instead."""


@dataclass
class FeedEntry:
    """One entry: the study it describes plus what identifies the entry in its feed."""

    study: Study
    guid: str | None
    link: str | None  # normalized for matching (see :func:`link_key`)
    published_raw: str | None = None
    published: str | None = None  # ISO 8601 UTC, or None when unparseable or implausible
    updated_raw: str | None = None
    updated: str | None = None
    # Title and summary as plain text, for the journal feeds' topic rules.
    match_text: str = ""


@dataclass
class ParsedFeed:
    version: str
    title: str | None
    entries: list[FeedEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False  # entries past MAX_ENTRIES were dropped


# --- text -----------------------------------------------------------------------------


_HTML_PARSER = lxml_html.HTMLParser(
    no_network=True, remove_comments=True, remove_pis=True, huge_tree=False, recover=True
)


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, paragraphs kept.

    Script, style and embedded objects go with their content; what remains can only be
    text, which Datasette escapes. Paragraphs are separated by one blank line. lxml's
    HTML parser (libxml2, no network) does the work: the stdlib parser took seconds on a
    tag-dense 20 MB feed, and feedparser's own sanitizer tens of seconds.
    """
    if "<" not in html and "&" not in html:
        return _tidy(html)
    html = _CONTROL.sub("", html)  # libxml2 refuses them, and they are never text
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div", parser=_HTML_PARSER)
        # Done by libxml2 where possible: a Python walk over every element took seconds.
        etree.strip_elements(root, *_DROP_WITH_CONTENT, with_tail=False)
        for el in root.iter(*_TAG_BLOCKS):
            if el.tag == "br":
                el.tail = "\n" + (el.tail or "")
            else:
                el.text = "\n\n" + (el.text or "")
                el.tail = "\n\n" + (el.tail or "")
        text = etree.tostring(root, method="text", encoding="unicode")
    except (etree.LxmlError, ValueError):
        # Not parseable as HTML at all: every tag-like run goes, with script bodies.
        text = re.sub(r"<[^>]*>", " ", _DANGEROUS_TEXT.sub(" ", html))
    return _tidy(text)


def _tidy(text: str) -> str:
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text)).replace("\r", "")
    text = _DANGEROUS_TAG_TEXT.sub("", text)  # not _DANGEROUS_TEXT: it cut to the field's end
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)[:MAX_TEXT].strip()


def _plain(detail: dict[str, Any] | None, value: str | None = None) -> str | None:
    """A feedparser text construct as plain text, according to its declared type."""
    if not isinstance(value, str):
        value = None
    if isinstance(detail, dict):
        value = detail.get("value") if isinstance(detail.get("value"), str) else None
        kind = str(detail.get("type") or "text/plain").lower()
    else:
        kind = "text/html"
    if not value:
        return None
    if "html" in kind or "xml" in kind:
        text = html_to_text(value)
    else:
        # Plain text stays literal ("1 < 2"), but a script tag never survives.
        text = _tidy(value)
    return text or None


def _one_line(text: str | None) -> str | None:
    """Already plain text (a title) on one line."""
    return " ".join(_tidy(text).split()) or None if text else None


def _short_field(text: str | None) -> str | None:
    """A name or journal: feedparser leaves these unsanitized, and no markup belongs in
    them, so any tag is dropped (a literal "<b>" only survives in titles and summaries,
    where feedparser says the text is plain)."""
    return _one_line(html_to_text(text)) if text else None


def _literal_field(text: str | None) -> str | None:
    """A GUID or raw date as the XML says it: feedparser already decoded its entities, and
    a second, HTML decoding turns "?id=5&sect=3" into "?id=5§=3" (no ";" needed), so
    the stored GUID would never equal the real one. Only markup is dropped: script-like
    elements with their content (as in every field), then any other tag."""
    text = _one_line(text)
    return _one_line(_TAG_SHAPED.sub("", text)) if text and "<" in text else text


# --- links and identifiers ------------------------------------------------------------


def clean_url(url: str | None) -> str | None:
    """An http(s) link without fragment and tracking parameters; anything else is None."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _TRACKING_PARAMS and not k.lower().startswith("utm_")
    ]
    netloc = parts.netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", urlencode(query), ""))


def link_key(url: str | None) -> str | None:
    """The form links are compared in: no scheme, no ``www.``, no trailing slash."""
    cleaned = clean_url(url)
    if cleaned is None:
        return None
    parts = urlsplit(cleaned)
    host = parts.netloc.removeprefix("www.")
    path = parts.path.rstrip("/")
    return host + path + (f"?{parts.query}" if parts.query else "")


def _doi_from_link(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(unquote(url.strip()))
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    path = parts.path
    if host.endswith("doi.org"):
        return normalize_doi(path.lstrip("/"))
    # Publisher pages put the DOI in the path: /doi/10.x/y, /article/10.x/y, /articles/10.x/y
    m = re.search(r"/(10\.\d{4,9}/.+)$", path)
    if m:
        doi = re.sub(r"/(?:abstract|full|pdf|epdf|fulltext|html)/?$", "", m.group(1))
        return normalize_doi(doi.rstrip("/"))
    return None


def _doi_from_identifier(value: str) -> str | None:
    v = value.strip()
    low = v.lower()
    for prefix in ("info:doi/", "doi:", "urn:doi:", "doi "):
        if low.startswith(prefix):
            return normalize_doi(v[len(prefix) :])
    if low.startswith(("http://", "https://")):
        return _doi_from_link(v)
    return normalize_doi(v) if low.startswith("10.") else None


@dataclass
class _Ids:
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None


def _str(value: Any) -> str | None:
    """A field's value when it is text: hostile feeds make feedparser return odd shapes."""
    return value if isinstance(value, str) and value.strip() else None


def _links(entry: dict[str, Any]) -> list[str]:
    links = [_str(entry.get("link"))]
    for lnk in entry.get("links") or []:
        if isinstance(lnk, dict):
            links.append(_str(lnk.get("href")))
    return [u for u in links if u]


def _identifiers(entry: dict[str, Any], extra: list[str]) -> _Ids:
    """DOI, PMID and PMCID from the entry's identifier fields, in order of trust."""
    ids = _Ids()
    # The entry's own dc:identifier first: the scanned ones are matched by GUID or link.
    identifiers = [entry["dc_identifier"]] if _str(entry.get("dc_identifier")) else []
    identifiers += [v for v in extra if _str(v)]
    guid = _str(entry.get("id")) or ""
    links = _links(entry)
    doi_candidates = [normalize_doi(_str(entry.get("prism_doi")))]
    doi_candidates += [_doi_from_identifier(v) for v in identifiers]
    doi_candidates += [_doi_from_identifier(guid)] + [_doi_from_link(u) for u in links]
    # Not from the summary text: a correction's summary cites the original's DOI.
    ids.doi = next((d for d in doi_candidates if d), None)
    for value in [*identifiers, guid]:
        m = _PMID_ID.match(value or "")
        if m:
            ids.pmid = m.group(1).lstrip("0") or None
            break
    if ids.pmid is None:
        for url in links + [guid]:
            m = _PMID_LINK.match(url.strip())
            if m:
                ids.pmid = m.group(1).lstrip("0") or None
                break
    for value in [*identifiers, guid, *links]:
        m = _PMC.search(value or "")
        if m:
            ids.pmcid = m.group(1).upper()
            break
    return ids


def _scan_identifiers(content: bytes) -> dict[str, list[str]]:
    """Every ``dc:identifier``/``prism:doi`` per item, keyed by the item's GUID/about/link.

    A second parse only for what feedparser drops; the parser neither resolves entities
    nor loads DTDs nor touches the network, and a broken body yields what it can.
    """
    out: dict[str, list[str]] = {}
    try:
        root = etree.fromstring(content, etree.XMLParser(**_SCAN_PARSER_OPTS))
        if root is not None:
            _scan_items(root, out)
    except (etree.LxmlError, ValueError, UnicodeError):
        pass  # garbage in a broken body: keep what was found, feedparser has the rest
    return out


def _localname(el: etree._Element) -> str:
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _scan_items(root: etree._Element, out: dict[str, list[str]]) -> None:
    items_per_key: dict[str, int] = {}
    for item in root.iter():
        if _localname(item) not in ("item", "entry"):
            continue
        values: list[str] = []
        keys: list[str] = []
        about = item.get(_RDF_ABOUT)
        if about:
            keys.append(about.strip())
        for child in item:
            if not isinstance(child.tag, str):
                continue
            local = _localname(child)
            namespace = child.tag[1:].split("}", 1)[0] if child.tag.startswith("{") else ""
            text = (child.text or "").strip()
            if (namespace == _DC and local == "identifier") or (
                namespace in _PRISM_NS and local == "doi"
            ):
                if text:
                    values.append(text)
            elif local in ("guid", "id") and text:
                keys.append(text)
            elif local == "link":
                href = (child.get("href") or text).strip()
                if href:
                    keys.append(href)
        for key in set(keys):
            out.setdefault(key, values)
            items_per_key[key] = items_per_key.get(key, 0) + 1
    # A key several items share (an issue's contents page as link, a reused GUID) names
    # none of them: each would get the first item's identifiers.
    for key, count in items_per_key.items():
        if count > 1:
            del out[key]


# --- dates ----------------------------------------------------------------------------


def checked_date(raw: str | None, parsed: Any, *, now: datetime) -> str | None:
    """ISO 8601 UTC of feedparser's parsed tuple, or None when it cannot be trusted."""
    if not raw or not parsed:
        return None
    try:
        when = datetime.fromtimestamp(calendar.timegm(tuple(parsed)[:9]), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None
    if when.year < EARLIEST_YEAR or when > now + FUTURE_TOLERANCE:
        return None
    if not _raw_agrees(raw, when):
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_date(raw: str | None, *, now: datetime) -> str | None:
    """A strict ISO 8601 date or date-time (PRISM's form) as UTC, or None."""
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(text) if len(text) > 10 else datetime.fromisoformat(
            text[:10] if len(text) == 10 else "invalid"
        )
    except ValueError:
        return None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when.year < EARLIEST_YEAR or when > now + FUTURE_TOLERANCE:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _named_parts(raw: str) -> tuple[int, int, int, str | None, str | None] | None:
    """(year, month, day, hour, minute) as the raw date writes them; None for another
    format. An unknown month name is month 0, which no date accepts."""
    m = _ISO_DATE.match(raw)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3) or 1), m.group(4), m.group(5)
    m = _RFC_DATE.search(raw)
    if not m:
        return None
    y = int(m.group(3))
    if y < 100:
        y += 2000 if y < 50 else 1900
    return y, _MONTHS.get(m.group(2).lower(), 0), int(m.group(1)), m.group(4), m.group(5)


def _named_day(raw: str | None) -> date | None:
    """The calendar date the raw string names, in its own time zone, or None."""
    parts = _named_parts(raw) if raw else None
    try:
        return date(*parts[:3]) if parts else None
    except ValueError:
        return None


def _raw_agrees(raw: str, when: datetime) -> bool:
    """False when the raw date names an impossible day or time, or a different day.

    feedparser normalizes overflow (month 13, day 45, hour 25) into a later, plausible
    date; a time-zone offset may move the UTC day by one, nothing more.
    """
    parts = _named_parts(raw)
    if parts is None:
        return True  # another format feedparser understood; the range check still applies
    hh, mm = parts[3], parts[4]
    if hh is not None and (int(hh) > 23 or int(mm) > 59):
        return False
    named = _named_day(raw)
    return named is not None and abs((when.date() - named).days) <= 1


# --- authors --------------------------------------------------------------------------

_INITIALS = re.compile(r"^(?:[A-Z][a-z]?\.?\s?-?){1,4}$")


def split_authors(names: Iterable[str]) -> list[str]:
    """Author strings as a list, splitting publisher lists such as "Edwards, J., Knowles, N."."""
    out: list[str] = []
    for raw in names:
        name = _short_field(raw or "")
        if not name:
            continue
        parts = [p.strip() for p in re.split(r"\s*;\s*|\s+(?:and|&)\s+", name) if p.strip()]
        for part in parts:
            pieces = [p.strip() for p in part.split(",")]
            if len(pieces) >= 2 and len(pieces) % 2 == 0 and all(
                _INITIALS.match(pieces[i]) for i in range(1, len(pieces), 2)
            ):
                for i in range(0, len(pieces), 2):
                    initials = re.sub(r"[.\s]", "", pieces[i + 1])
                    out.append(f"{pieces[i]} {initials}")
            else:
                out += [p for p in pieces if p] if len(pieces) > 2 else [part]
    return out


# --- entries --------------------------------------------------------------------------


def _entry_text(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    """(title, abstract) as plain text; ``content:encoded`` beats the summary."""
    title = _one_line(_plain(entry.get("title_detail"), entry.get("title")))
    content = entry.get("content") or []
    body = None
    for part in content if isinstance(content, list) else []:
        body = _plain(part) if isinstance(part, dict) else None
        if body:
            break
    summary = _plain(entry.get("summary_detail"), entry.get("summary"))
    return title, body or summary


def _location(entry: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(volume, issue, pages) from PRISM, which feedparser keeps under lower-cased keys
    (``prism:startingPage`` is ``prism_startingpage``); pages as "first-last" like PubMed's."""
    volume = _short_field(_str(entry.get("prism_volume")))
    issue = _short_field(_str(entry.get("prism_number")))
    first = _short_field(_str(entry.get("prism_startingpage")))
    last = _short_field(_str(entry.get("prism_endingpage")))
    if first:
        pages = join_pages(first, last)
    else:
        pages = _short_field(_str(entry.get("prism_pagerange")))
    return volume, issue, pages


def _entry(
    entry: dict[str, Any],
    feed_info: dict[str, Any],
    extra_ids: dict[str, list[str]],
    *,
    journal: str | None,
    now: datetime,
) -> FeedEntry | None:
    # A plain dict: FeedParserDict maps a missing "published" to "updated" (deprecated),
    # which would make an entry's update date pass for its publication date.
    entry = dict(entry)
    title, abstract = _entry_text(entry)
    if not title:
        return None
    raw_guid = _str(entry.get("id"))
    guid = _literal_field(raw_guid)
    links = _links(entry)
    url = next((c for c in (clean_url(u) for u in links) if c), None)
    extra: list[str] = []
    for key in (raw_guid, _str(entry.get("link"))):
        if key and key.strip() in extra_ids:
            extra = extra_ids[key.strip()]
            break
    ids = _identifiers(entry, extra)
    published_raw = _str(entry.get("published"))
    published = checked_date(published_raw, entry.get("published_parsed"), now=now)
    if published_raw is None:
        # RSS 1.0 tables of contents date items with PRISM, which feedparser leaves raw.
        published_raw = _str(entry.get("prism_publicationdate")) or _str(
            entry.get("prism_coverdate")
        )
        published = _iso_date(published_raw, now=now)
    updated_raw = _str(entry.get("updated"))
    updated = checked_date(updated_raw, entry.get("updated_parsed"), now=now)
    when = published or updated
    # The issue date as written ("01 Jan 2026 00:00 +1000" is 2026), not its UTC day.
    day = _named_day(published_raw if published else updated_raw) if when else None
    day_text = day.isoformat() if day else (when[:10] if when else None)
    authors = split_authors(a.get("name", "") for a in entry.get("authors") or []
                            if isinstance(a, dict))  # fmt: skip
    if not authors and _str(entry.get("author")):
        authors = split_authors([entry["author"]])
    journal_name = (_str(entry.get("prism_publicationname")) or _str(entry.get("dc_source"))
                    or _str(feed_info.get("prism_publicationname")) or journal)  # fmt: skip
    volume, issue, pages = _location(entry)
    study = Study(
        title=title,
        pmid=ids.pmid,
        doi=ids.doi,
        pmcid=ids.pmcid,
        abstract=abstract,
        journal=_short_field(journal_name),
        volume=volume,
        issue=issue,
        pages=pages,
        pub_date=day_text,
        year=int(day_text[:4]) if day_text else None,
        authors=authors,
        url=url,
        record_source="feed",
    )
    return FeedEntry(
        study=study,
        guid=guid,
        link=link_key(url),
        published_raw=_literal_field(published_raw),
        published=published,
        updated_raw=_literal_field(updated_raw),
        updated=updated,
        match_text=f"{title}\n{abstract or ''}",
    )


def _failure_reason(content: bytes, headers: dict[str, str], parsed: Any) -> str:
    head = content[:65536]
    m = _ERROR_BODY.search(head)
    if m:
        message = html_to_text(m.group(1).decode("utf-8", "replace"))[:200]
        return f"the body is an error message, not entries: {message or '<ERROR>'}"
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if _HTML_HEAD.search(head[:4096]) or (ctype == "text/html" and not parsed.get("version")):
        return f"not a feed: an HTML page ({ctype or 'no Content-Type'})"
    if not content.strip():
        return "empty body"
    if parsed.get("bozo"):
        exc = parsed.get("bozo_exception")
        return f"not a readable feed, no entries ({type(exc).__name__}: {exc})"
    return "the feed has no entries"


def _first_entries(content: bytes) -> tuple[bytes, bool]:
    """The body cut after its MAX_ENTRIES-th entry, so a giant feed parses in bounded time
    (feedparser needs seconds per 10,000 entries); True when something was cut."""
    ends = _ENTRY_END.finditer(content)
    for count, m in enumerate(ends, 1):
        if count == MAX_ENTRIES:
            if next(ends, None) is None:
                return content, False
            return content[: m.end()], True
    return content, False


def _without_internal_subset(content: bytes) -> bytes:
    if not _ENTITY_DECL.search(content):
        return content
    m = _INTERNAL_SUBSET.search(content)
    return content[: m.start()] + content[m.end() :] if m else content


def parse_feed(
    content: bytes,
    headers: dict[str, str] | None = None,
    *,
    journal: str | None = None,
    now: datetime | None = None,
) -> ParsedFeed:
    """Parse a fetched feed body; raise :class:`FeedParseError` when it holds no entries.

    ``journal`` names the journal of a table-of-contents feed whose entries do not.
    """
    if not isinstance(content, bytes):
        raise TypeError("parse_feed takes the fetched bytes, never a URL or a string")
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    now = now or datetime.now(UTC)
    response_headers = {k: headers[k] for k in ("content-type", "content-language") if k in headers}
    capped, cut = _first_entries(content)
    safe = _SURROGATE_REF.sub(b"&#xFFFD;", _without_internal_subset(capped))
    try:
        # We keep plain text only (html_to_text), so feedparser's sanitizer and URI
        # resolution, which cost tens of seconds on a tag-dense 20 MB feed, are off.
        parsed = feedparser.parse(io.BytesIO(safe), response_headers=response_headers,
                                  sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # noqa: BLE001 - feedparser has crashed on garbage encodings
        raise FeedParseError(f"unreadable body ({type(exc).__name__}: {exc})"[:300]) from exc
    warnings: list[str] = []
    if not parsed.entries:
        raise FeedParseError(_failure_reason(content, headers, parsed))
    if cut:
        # (the cut body ends mid-document, so feedparser's bozo flag is ours: not reported)
        warnings.append(f"more than {MAX_ENTRIES} entries: only the first {MAX_ENTRIES} read")
    elif parsed.get("bozo"):
        problem = parsed.get("bozo_exception")
        warnings.append(
            f"ill-formed feed, read loosely ({type(problem).__name__}: {problem})"[:300]
        )
    extra_ids = _scan_identifiers(content)
    feed_info = dict(parsed.get("feed") or {})  # plain dict, as for entries
    entries: list[FeedEntry] = []
    untitled = 0
    for raw in parsed.entries[:MAX_ENTRIES]:
        item = _entry(raw, feed_info, extra_ids, journal=journal, now=now)
        if item is None:
            untitled += 1
        else:
            entries.append(item)
    if len(parsed.entries) > MAX_ENTRIES and not cut:
        warnings.append(f"more than {MAX_ENTRIES} entries: only the first {MAX_ENTRIES} read")
    if untitled:
        warnings.append(f"{untitled} entr{'y' if untitled == 1 else 'ies'} without a title skipped")
    if not entries:
        raise FeedParseError("no entry has a title")
    return ParsedFeed(
        version=parsed.get("version") or "",
        title=_one_line(_plain(feed_info.get("title_detail"), feed_info.get("title"))),
        entries=entries,
        warnings=warnings,
        truncated=cut or len(parsed.entries) > MAX_ENTRIES,
    )

"""Streaming parser for PubMed XML (``PubmedArticleSet``): efetch replies and NLM baseline/update files.

Why a parser of our own rather than ``Bio.Entrez.read``: the update files are ~100 MB each and
``Entrez.read`` builds the whole document in memory and needs the exact DTD version on disk (or the
network). Here the bytes stream through in small pieces, the parts of a record the store never
reads are cut out first (:class:`_UnusedElementsCut`), and lxml's ``iterparse`` hands us one
record at a time: we map it to a :class:`~harvest.models.Study` and throw the subtree away, so
memory stays flat and no DTD is ever read. The input is untrusted (it crosses the network), so
entities are never expanded from outside the document and a document that declares its own
entities is refused outright: real PubMed XML never does.
"""

from __future__ import annotations

import calendar
import contextlib
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from lxml import etree

from harvest.models import Correction, Deletion, MeshHeading, Study, join_pages

try:  # ISA-L's gzip reader decompresses about twice as fast as zlib's, with the same API.
    from isal.igzip import IGzipFile as _GzipFile
    from isal.isal_zlib import error as _isal_error

    _CORRUPT_INPUT: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, _isal_error)
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    _GzipFile = gzip.GzipFile  # type: ignore[misc,assignment]
    _CORRUPT_INPUT = (EOFError, OSError, zlib.error)

__all__ = [
    "PubmedXMLError",
    "normalize_doi",
    "normalize_pmcid",
    "parse_date_text",
    "parse_pubmed_xml",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ROOT_TAGS = ("PubmedArticleSet", "PubmedBookArticleSet")
# The only elements iterparse reports to us; everything else is read from inside these subtrees.
_EVENT_TAGS = ("PubmedArticle", "PubmedBookArticle", "DeleteCitation")
_MATHML_PREFIX = "{http://www.w3.org/1998/Math/MathML}"
_MATHML_ANY = _MATHML_PREFIX + "*"
_LXML_POSITION_SUFFIX = re.compile(r",? line \d+, column \d+$")

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
# "1998 Dec-1999 Jan", "2003 Jan 15", "2000 Spring", "2021 Apr-Jun 01": the start of the range wins.
_DATE_TEXT = re.compile(r"(?P<year>\d{4})(?:[ ]+(?P<month>[A-Za-z]+|\d{1,2})(?:[ ]+(?P<day>\d{1,2})(?!\d))?)?")
_WHOLE_YEAR = re.compile(r"\s+jan(?:uary)?\s*-\s*dec(?:ember)?\s*$", re.IGNORECASE)
_PMCID = re.compile(r"^(?:PMC)?(\d+)(?:\.\d+)?$")
# No DOI holds whitespace or a double quote (old SICI-based ones do hold < and >): such a
# value is junk, and would break out of the attributes and URLs a DOI is written into.
_NOT_IN_DOI = re.compile(r'[\s"]')
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi.org/", "doi:")


class PubmedXMLError(ValueError):
    """The input is not (well-formed, safe) PubMed XML.

    Carries the file ``name`` ("<bytes>" for an in-memory reply) and, when the XML parser knows it,
    the ``line`` and ``column`` of the failure, so an operator can open the file at the right place.
    Records before the failure have already been yielded; the caller decides whether to keep them.
    """

    def __init__(self, name: str, message: str, *, line: int | None = None, column: int | None = None) -> None:
        self.name = name
        self.line = line
        self.column = column
        self.reason = message
        super().__init__(f"{name}: {message}")


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def parse_pubmed_xml(
    source: bytes | str | os.PathLike[str] | BinaryIO, *, name: str | None = None
) -> Iterator[Study | Deletion]:
    """Yield one :class:`Study` per ``PubmedArticle``/``PubmedBookArticle`` and one
    :class:`Deletion` per PMID of each ``DeleteCitation``, in document order.

    ``source`` is raw bytes (an efetch reply), a path (``str`` or ``os.PathLike``), or a binary file
    object. Gzip is recognised by its magic bytes, not by the file name, because downloads get
    renamed and HTTP layers sometimes hand over still-compressed bodies. ``name`` labels errors
    (defaults to the file name or ``"<bytes>"``).

    This is a generator: the file is opened on the first ``next()`` and closed when iteration ends.
    On malformed input it raises :class:`PubmedXMLError` at the point of failure, after yielding
    every complete record before it.
    """
    with contextlib.ExitStack() as stack:
        stream, label = _open_source(source, name, stack)
        yield from _iter_records(stream, label)


def normalize_doi(text: str | None) -> str | None:
    """Return the DOI in the one form we compare on (``10.xxxx/...``, lower-case), or ``None``.

    DOIs are case-insensitive by definition, and sources decorate them differently
    (``https://doi.org/``, ``doi:``, stray spaces); deduplication across PubMed, MEDLINE exports and
    feeds only works if they all agree on one spelling. Anything that does not look like a DOI
    after that clean-up (or holding whitespace or a double quote) is ``None`` rather than a
    junk key.
    """
    if text is None:
        return None
    doi = text.strip().lower()
    changed = True
    while changed:
        changed = False
        for prefix in _DOI_PREFIXES:
            if doi.startswith(prefix):
                doi = doi[len(prefix) :].strip()
                changed = True
    if not doi.startswith("10.") or "/" not in doi or _NOT_IN_DOI.search(doi):
        return None
    return doi


def normalize_pmcid(text: str | None) -> str | None:
    """Return "PMC" + digits, or ``None``.

    PubMed sometimes versions the PMCID ("PMC7938335.2" for a revised Wellcome Open Research
    article) while MEDLINE exports and PMC links use the bare ID; matching needs one form.
    """
    match = _PMCID.match((text or "").strip().upper())
    return f"PMC{match[1]}" if match else None


def parse_date_text(text: str | None) -> str | None:
    """Turn a free-text PubMed date into an ISO partial date ("YYYY", "YYYY-MM" or "YYYY-MM-DD").

    Used for ``MedlineDate`` here and for the MEDLINE ``DP`` field. For a range
    ("1998 Dec-1999 Jan") the start is kept, except that "2021 Jan-Dec" is just "2021"; seasons
    ("2000 Spring") give only the year; a day is kept only when it directly follows the month and
    exists ("Feb 30" keeps the month). Returns ``None`` when no year can be found.
    """
    if not text:
        return None
    match = _DATE_TEXT.search(text)
    if match is None:
        return None
    if _WHOLE_YEAR.match(text[match.end("year") :]):
        return match["year"]  # "2021 Jan-Dec" is the year, not January
    month = _month_number(match["month"])
    day = _day_number(match["day"]) if month else None
    return _iso(match["year"], month, day)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


class _Rejoined(io.RawIOBase):
    """A non-seekable stream with its sniffed first bytes put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _UnusedElementsCut:
    """A binary stream of PubMed XML with the elements the store never reads cut out.

    libxml2 spends most of a parse building nodes, and in NLM's files a record's history
    dates and reference lists (both in its PubmedData) are over a third of the bytes (37% of
    pubmed21n1298), so they are cut from the bytes before the parser sees them. Each cut
    becomes its newlines, so the parser's line numbers stay true. Cutting by tag is safe
    because a ``<`` in PubMed XML's text is always escaped, and NLM's XML has no comments or
    CDATA sections; in a document that did, the worst a cut could do is drop content from a
    document that is not PubMed's. A PubmedData left open at the end (a truncated file) is
    passed on unchanged, so the parser reports it; so is one that grows past ``_MAX_SPAN``,
    which bounds memory on an endless stream.
    """

    # Small enough that a corrupt gzip stream, which loses the read that hit the fault,
    # loses few records; large enough that the per-read bookkeeping costs nothing.
    _CHUNK = 1 << 16
    _MAX_SPAN = 4 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._out = b""
        self._at = 0
        self._pending = b""
        self._eof = False
        self._error: BaseException | None = None
        self._last = b""  # the end of what was handed out so far

    def read(self, size: int = -1) -> bytes:
        while self._at >= len(self._out):
            if self._eof:
                error, self._error = self._error, None
                if error is not None:  # raised only after the bytes before it are out
                    raise error
                return b""
            self._fill()
        end = len(self._out) if size is None or size < 0 else self._at + size
        data = self._out[self._at : end]
        self._at += len(data)
        return data

    def _fill(self) -> None:
        try:
            data = self._raw.read(self._CHUNK)
        except _CORRUPT_INPUT as exc:
            self._error, data = exc, b""
        self._at = 0
        if not data:
            self._out, self._pending, self._eof = self._pending, b"", True
            if (self._last + self._out).endswith(_RECORD_ENDS):
                self._out += b" "  # so a record cut off right after its end tag is seen as whole
        elif len(self._pending) > self._MAX_SPAN:
            self._out, self._pending = self._pending + data, b""
        else:
            self._out, self._pending = _cut_unused(self._pending + data)
        self._last = (self._last + self._out)[-32:]


# The elements cut by _UnusedElementsCut all live in a record's PubmedData, so only that
# region is searched for them, and each byte is scanned about once: a search per element
# name would read the reference lists (a third of the file) several times.
_REGION = (b"<PubmedData>", b"</PubmedData>")
_HISTORY = (b"<History>", b"</History>")  # PubmedData's first child, per the DTD
_REFERENCES = (b"<ReferenceList>", b"</ReferenceList>")
_RECORD_ENDS = (b"</PubmedArticle>", b"</PubmedBookArticle>", b"</DeleteCitation>")


def _cut_unused(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with the unused elements of every complete PubmedData replaced by their
    newlines, and the tail that must wait for more input (a PubmedData not closed yet)."""
    out: list[bytes] = []
    pos = 0
    while (start := data.find(_REGION[0], pos)) >= 0:
        end = data.find(_REGION[1], start)
        if end < 0:
            break
        out.append(data[pos:start])
        _cut_region(data, start, end, out)
        pos = end
    else:  # no PubmedData left; keep back a start tag cut in two
        start = data.rfind(b"<", max(pos, len(data) - len(_REGION[0])))
        start = len(data) if start < 0 else start
    out.append(data[pos:start])
    return b"".join(out), data[start:]


def _cut_region(data: bytes, pos: int, end: int, out: list[bytes]) -> None:
    """Append ``data[pos:end]`` to ``out`` without its History and reference lists, each
    replaced by its newlines. A span whose end is missing is left for the parser to report;
    markup inside a span is never parsed, so a fault there, in content we do not read, is not."""
    spans = []
    history = data.find(_HISTORY[0], pos, min(end, pos + 256))
    if history >= 0 and (stop := data.find(_HISTORY[1], history, end)) >= 0:
        spans.append((history, stop + len(_HISTORY[1])))
    # Reference lists close a PubmedData (the DTD puts them last), so one span runs from the
    # first one's start to the last one's end: nested lists need no counting, and the bytes
    # between are searched backwards from the region's end, not read through.
    first = data.find(_REFERENCES[0], pos, end)
    if first >= 0 and (stop := data.rfind(_REFERENCES[1], first, end)) >= 0:
        spans.append((first, stop + len(_REFERENCES[1])))
    for first, stop in sorted(spans):
        if first < pos:  # overlapping spans: only in a document that is not PubMed's
            continue
        out.append(data[pos:first])
        out.append(b"\n" * data.count(b"\n", first, stop))
        pos = stop
    out.append(data[pos:end])


def _open_source(
    source: bytes | str | os.PathLike[str] | BinaryIO, name: str | None, stack: contextlib.ExitStack
) -> tuple[BinaryIO, str]:
    """Open ``source`` as a decompressed binary stream, registering anything we open on ``stack``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw: BinaryIO = io.BytesIO(bytes(source))
        label = name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        if isinstance(source, str) and source.lstrip().startswith("<"):
            raise TypeError("parse_pubmed_xml() takes XML content as bytes; a str is read as a path")
        raw = stack.enter_context(open(source, "rb"))
        label = name or os.path.basename(os.fspath(source))
    elif hasattr(source, "read"):
        raw = source
        label = name or os.path.basename(str(getattr(source, "name", "<stream>")))
    else:
        raise TypeError(f"cannot parse PubMed XML from {type(source).__name__}")
    raw = _with_head_put_back(raw)
    head = _peek(raw, 2)
    if not head:
        raise PubmedXMLError(label, "empty input (0 bytes): not PubMed XML")
    if head == _GZIP_MAGIC:
        raw = stack.enter_context(_GzipFile(fileobj=raw, mode="rb"))
    return _UnusedElementsCut(raw), label  # type: ignore[return-value]


def _with_head_put_back(raw: BinaryIO) -> BinaryIO:
    """Make the first bytes of ``raw`` readable twice (once to sniff, once to parse)."""
    seekable = getattr(raw, "seekable", None)
    if seekable is not None and seekable():
        return raw
    head = b""
    while len(head) < 2:  # a socket-like stream may hand out fewer bytes than asked for
        chunk = raw.read(2 - len(head))
        if not chunk:
            break
        head += chunk
    return _Rejoined(head, raw)  # type: ignore[return-value]


def _peek(raw: BinaryIO, size: int) -> bytes:
    if isinstance(raw, _Rejoined):
        return raw._head[:size]
    position = raw.tell()
    head = raw.read(size)
    raw.seek(position)
    return head


# --------------------------------------------------------------------------------------------
# The record loop
# --------------------------------------------------------------------------------------------


def _iter_records(stream: BinaryIO, label: str) -> Iterator[Study | Deletion]:
    """Map each record once the next one starts, or once the document ends.

    Waiting for a record's *start* event rather than its *end*: with only start events,
    lxml calls into Python (taking the GIL) once per element instead of twice, which is 6%
    of the whole parse. A record is complete when the next record starts or the document
    closes; after a fault, only if text or an element follows it (:func:`_closed`).
    """
    parser = etree.iterparse(
        stream,
        events=("start",),
        tag=_EVENT_TAGS,
        resolve_entities=False,  # entity references stay unexpanded nodes (we drop them)
        no_network=True,
        load_dtd=False,  # the DOCTYPE may name any DTD version; we never read it
        dtd_validation=False,
        huge_tree=False,  # keep libxml2's depth/size/amplification limits
        remove_comments=True,
        remove_pis=True,
    )
    count = 0
    pending: etree._Element | None = None  # the last record started
    error: BaseException | None = None
    try:
        for _, elem in parser:
            if pending is None:  # before anything is yielded (entities stay unexpanded meanwhile)
                _refuse_declared_entities(elem, label)
            else:
                records = _take(pending)
                count += len(records)
                yield from records
            pending = elem
    except (etree.XMLSyntaxError, *_CORRUPT_INPUT) as exc:
        error = exc
    if pending is not None and (error is None or _closed(pending)):
        records = _take(pending)
        count += len(records)
        yield from records
    if isinstance(error, etree.XMLSyntaxError):
        raise _syntax_error(label, error, parser.error_log) from error
    if error is not None:
        # gzip raises these for a truncated or corrupt stream; the XML parser never saw the end.
        raise PubmedXMLError(label, f"unreadable input after {count} records: {error}") from error
    if pending is None and parser.root is not None:
        _refuse_declared_entities(parser.root, label)
    _check_root(parser.root, label)


def _take(elem: etree._Element) -> list[Study | Deletion]:
    """The records of a finished element, which is then freed."""
    records = _records_of(elem)
    _release(elem)
    return records


def _closed(elem: etree._Element) -> bool:
    """Whether the parser got past ``elem``'s end tag before a fault.

    Text or an element after it proves it; PubMed XML puts a newline after every record,
    and the input stream adds a space when a file ends right after one (a truncated
    download), so only a record glued to malformed bytes is not kept.
    """
    return elem.tail is not None or elem.getnext() is not None


def _records_of(elem: etree._Element) -> list[Study | Deletion]:
    tag = elem.tag
    if tag == "PubmedArticle":
        return [_article(elem)]
    if tag == "PubmedBookArticle":
        return [_book_article(elem)]
    return [Deletion(pmid) for pmid in _texts(elem.iterchildren("PMID"))]  # DeleteCitation


def _release(elem: etree._Element) -> None:
    """Free a finished record and every earlier sibling, so memory stays flat on huge files."""
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _refuse_declared_entities(elem: etree._Element, label: str) -> None:
    """Reject a DOCTYPE internal subset that declares entities (XXE, billion laughs).

    NLM's files and efetch replies only ever name an external DTD; a document that declares its
    own entities is either hostile or not PubMed's, and failing fast beats guessing.
    """
    dtd = elem.getroottree().docinfo.internalDTD
    if dtd is None:
        return
    names = [entity.name for entity in dtd.iterentities()]
    if names:
        raise PubmedXMLError(
            label,
            f"DOCTYPE declares entities ({', '.join(names[:5])}); PubMed XML never does, refusing to parse",
            line=elem.getroottree().getroot().sourceline,
        )


def _check_root(root: etree._Element | None, label: str) -> None:
    if root is None or root.tag in _ROOT_TAGS:
        return
    detail = _flatten(root.find(".//ERROR"))
    message = f"not PubMed XML: root element is <{root.tag}>, expected <PubmedArticleSet>"
    if detail:
        message += f" (ERROR: {detail})"
    raise PubmedXMLError(label, message, line=root.sourceline)


def _syntax_error(label: str, exc: etree.XMLSyntaxError, log: etree._ListErrorLog) -> PubmedXMLError:
    """Report the first real error libxml2 logged: the exception text is sometimes a knock-on
    ("no element found (line 0)") rather than the cause."""
    first = next((entry for entry in log if entry.level >= etree.ErrorLevels.ERROR), None)
    if first is not None:
        line, column, message = first.line, first.column, first.message
    else:
        line, column = exc.position if exc.position else (None, None)
        message = _LXML_POSITION_SUFFIX.sub("", exc.msg or str(exc))
    if line:
        return PubmedXMLError(
            label, f"malformed XML at line {line}, column {column}: {message}", line=line, column=column
        )
    return PubmedXMLError(label, f"malformed XML: {message}")


# --------------------------------------------------------------------------------------------
# Element helpers
#
# Speed matters here (a baseline file is ~30,000 records), so fields are read by walking each
# element's children once (_index, iterchildren: C-level in lxml) rather than one ElementPath
# find() per field.
# --------------------------------------------------------------------------------------------



def _index(elem: etree._Element | None) -> dict[str, etree._Element]:
    """The first child of each tag, in one pass over the children (cheaper than a find() per field)."""
    if elem is None:
        return {}
    index: dict[str, etree._Element] = {}
    for child in elem:
        tag = child.tag
        if tag not in index:
            index[tag] = child
    return index


def _all(index: dict[str, etree._Element], tag: str) -> list[etree._Element]:
    """Every child with ``tag``, starting from the first one :func:`_index` found: cheaper
    than ``iterchildren(tag)`` because most such tags occur once or not at all."""
    first = index.get(tag)
    return [] if first is None else [first, *first.itersiblings(tag)]


def _children(elem: etree._Element | None, tag: str) -> Iterator[etree._Element]:
    return iter(()) if elem is None else elem.iterchildren(tag)


def _flatten(elem: etree._Element | None) -> str:
    """Element text with inline markup (<i>, <sup>, MathML...) flattened and whitespace collapsed.

    Unexpanded entity references contribute nothing: their meaning lives in a DTD we don't read.
    """
    if elem is None:
        return ""
    if not len(elem):
        text = elem.text
        if not text:
            return ""
        # Inlined _clean: this is the hottest path of the parser (most elements are plain text).
        if text.isprintable() and text[0] != " " and text[-1] != " " and "  " not in text:
            return text
        return " ".join(text.split())
    if next(elem.iter(_MATHML_ANY), None) is None:  # libxml2 joins the text nodes, in C
        return " ".join(etree.tostring(elem, method="text", encoding=str, with_tail=False).split())
    parts: list[str] = []
    _collect_text(elem, parts)
    return " ".join("".join(parts).split())


def _clean(text: str | None) -> str:
    """Whitespace-collapsed ``text``; cheap when it is already clean (the common case)."""
    if not text:
        return ""
    if text.isprintable() and text[0] != " " and text[-1] != " " and "  " not in text:
        return text
    return " ".join(text.split())


def _collect_text(elem: etree._Element, parts: list[str]) -> None:
    if elem.text:
        parts.append(elem.text)
    for child in elem:
        if isinstance(child.tag, str):
            if child.tag.startswith(_MATHML_PREFIX):
                parts.append(_mathml_text(child))
            else:
                _collect_text(child, parts)
        if child.tail:
            parts.append(child.tail)


def _mathml_text(elem: etree._Element) -> str:
    """MathML is pretty-printed token by token; its whitespace is layout, not text ("V̇O2max")."""
    parts = [(elem.text or "").strip()]
    for child in elem:
        if isinstance(child.tag, str):
            parts.append(_mathml_text(child))
        parts.append((child.tail or "").strip())
    return "".join(parts)


def _texts(elems: Iterable[etree._Element]) -> list[str]:
    """Flattened, non-empty texts of ``elems``."""
    return [text for text in map(_flatten, elems) if text]


def _first_text(index: dict[str, etree._Element], *tags: str) -> str | None:
    """Flattened text of the first of ``tags`` that has any."""
    for tag in tags:
        text = _flatten(index.get(tag))
        if text:
            return text
    return None


def _child_text(elem: etree._Element | None, tag: str) -> str | None:
    """Flattened text of ``elem``'s first ``tag`` child, read without indexing the others."""
    for child in () if elem is None else elem:
        if child.tag == tag:
            return _flatten(child) or None
    return None


def _to_int(text: str | None, default: int) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------


def _month_number(text: str | None) -> int | None:
    if not text:
        return None
    text = text.strip().lower()
    if text.isdigit():
        number = int(text)
        return number if 1 <= number <= 12 else None
    return _MONTHS.get(text) or _MONTHS.get(text[:3])


def _day_number(text: str | None) -> int | None:
    if not text or not text.strip().isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= 31 else None


def _iso(year: str | None, month: int | None, day: int | None) -> str | None:
    if not year or not (year := year.strip()).isdigit() or len(year) != 4:
        return None
    if month is None:
        return year
    if day is None or (day > 28 and day > calendar.monthrange(int(year), month)[1]):
        return f"{year}-{month:02d}"  # no day, or an impossible one ("Feb 30"): keep the month
    return f"{year}-{month:02d}-{day:02d}"


def _text_of(elem: etree._Element | None) -> str | None:
    return None if elem is None else elem.text


def _pages(pagination: etree._Element | None) -> str | None:
    """MedlinePgn as NLM writes it ("101-10", "e0123"), else StartPage[-EndPage]."""
    if pagination is None or not len(pagination):
        return None
    last = pagination[-1]  # the DTD puts MedlinePgn last, after StartPage and EndPage
    if last.tag == "MedlinePgn" and (text := _clean(last.text)):
        return text
    start = end = None
    for child in pagination:
        if child.tag == "StartPage":
            start = _clean(child.text)
        elif child.tag == "EndPage":
            end = _clean(child.text)
    if not start:
        return None
    return join_pages(start, end)


def _structured_date(elem: etree._Element | None) -> str | None:
    """ISO partial date of a Year/Month/Day (or MedlineDate) element such as PubDate or DateRevised."""
    if elem is None:
        return None
    texts = {child.tag: child.text for child in reversed(elem)}  # reversed: the first of a tag wins
    year = texts.get("Year")
    if not year:
        return parse_date_text(texts.get("MedlineDate"))
    month = _month_number(texts.get("Month"))
    day = _day_number(texts.get("Day")) if month else None
    return _iso(year, month, day)


def _pub_date(issue_date: etree._Element | None, article: etree._Element) -> str | None:
    """JournalIssue/PubDate; the electronic ArticleDate only when the issue date has no year."""
    found = _structured_date(issue_date)
    if found:
        return found
    for article_date in article.iterchildren("ArticleDate"):
        if article_date.get("DateType") == "Electronic":
            return _structured_date(article_date)
    return None


def _year(iso: str | None) -> int | None:
    return int(iso[:4]) if iso else None


# --------------------------------------------------------------------------------------------
# Field groups
# --------------------------------------------------------------------------------------------


def _pmid(elem: etree._Element | None) -> tuple[str | None, int]:
    if elem is None:
        return None, 1
    return (elem.text or "").strip() or None, _to_int(elem.get("Version"), 1)


def _abstract_text(abstract: etree._Element | None) -> str | None:
    """Paragraphs of one Abstract/OtherAbstract: "LABEL: text" when labelled, joined by blank lines."""
    paragraphs = []
    for part in _children(abstract, "AbstractText"):
        text = _flatten(part)
        if not text:
            continue
        label = (part.get("Label") or "").strip()
        paragraphs.append(f"{label}: {text}" if label else text)
    return "\n\n".join(paragraphs) or None


def _abstract(abstract: etree._Element | None, others: Iterable[etree._Element]) -> str | None:
    """The Abstract; OtherAbstract (often a translation) only when there is no Abstract at all."""
    if abstract is not None:
        return _abstract_text(abstract)
    for other in others:
        text = _abstract_text(other)
        if text:
            return text
    return None


def _author_name(author: etree._Element) -> str | None:
    """"LastName Initials" as PubMed shows it, or the CollectiveName of a group author."""
    last = initials = fore = collective = None
    for child in author:  # one pass, and no call per part: this runs for every author
        tag = child.tag
        if tag == "LastName":
            last = child.text if not len(child) else _flatten(child)
        elif tag == "Initials":
            initials = child.text if not len(child) else _flatten(child)
        elif tag == "ForeName":
            fore = child
        elif tag == "CollectiveName":
            collective = child
        elif tag == "AffiliationInfo":
            break  # the DTD puts the name parts first; affiliations (most children) are not read
    if not last or last.isspace():
        return _flatten(collective) or None
    if not initials or initials.isspace():
        # A few records lack Initials; derive them from ForeName rather than drop them.
        initials = "".join(part[0].upper() for part in re.split(r"[\s\-.]+", _flatten(fore)) if part)
    return _clean(f"{last} {initials}" if initials else last)  # one clean-up for both parts


def _authors(owner: etree._Element | None) -> list[str]:
    """Authors of valid entries; editor lists (books) are not authors."""
    names = []
    for author_list in _children(owner, "AuthorList"):
        if author_list.get("Type", "authors") != "authors":
            continue
        for author in author_list.iterchildren("Author"):
            if author.get("ValidYN") != "N" and (name := _author_name(author)):
                names.append(name)
    return names


def _mesh(heading_list: etree._Element | None) -> list[MeshHeading]:
    headings = []
    for heading in _children(heading_list, "MeshHeading"):
        descriptor = next(heading.iterchildren("DescriptorName"), None)
        name = _flatten(descriptor)
        if not name:
            continue
        qualifiers = [
            (text, qualifier.get("MajorTopicYN") == "Y")
            for qualifier in heading.iterchildren("QualifierName")
            if (text := _flatten(qualifier))
        ]
        headings.append(MeshHeading(name, descriptor.get("MajorTopicYN") == "Y", qualifiers))
    return headings


def _keywords(keyword_lists: Iterable[etree._Element]) -> list[str]:
    return [text for keywords in keyword_lists for text in _texts(keywords.iterchildren("Keyword"))]


def _corrections(links: etree._Element | None) -> list[Correction]:
    corrections = []
    for link in _children(links, "CommentsCorrections"):
        parts = _index(link)
        corrections.append(
            Correction(
                ref_type=(link.get("RefType") or "").strip(),
                pmid=(_text_of(parts.get("PMID")) or "").strip() or None,
                ref_source=_flatten(parts.get("RefSource")) or None,
            )
        )
    return corrections


def _ids(id_lists: Iterable[etree._Element], locations: etree._Element | None) -> tuple[str | None, str | None]:
    """(DOI, PMCID) from the record's own ArticleIdList(s) (never its references'), the DOI falling
    back to a valid ``ELocationID`` child of ``locations``."""
    doi = pmcid = None
    for id_list in id_lists:
        for article_id in id_list.iterchildren("ArticleId"):
            id_type = article_id.get("IdType")
            if id_type == "doi" and doi is None:
                doi = normalize_doi(article_id.text)
            elif id_type == "pmc" and pmcid is None:
                pmcid = normalize_pmcid(article_id.text)
    if doi is None:
        for location in _children(locations, "ELocationID"):
            if location.get("EIdType") == "doi" and location.get("ValidYN") != "N":
                doi = normalize_doi(location.text)
                if doi:
                    break
    return doi, pmcid


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _article(record: etree._Element) -> Study:
    """Map one ``PubmedArticle``."""
    parts = _index(record)
    citation = parts.get("MedlineCitation")
    if citation is None:
        citation = etree.Element("MedlineCitation")
    cited = _index(citation)
    article = cited.get("Article")
    if article is None:
        article = etree.Element("Article")
    fields = _index(article)
    journal = _index(fields.get("Journal"))
    issue = _index(journal.get("JournalIssue"))
    pmid, version = _pmid(cited.get("PMID"))
    doi, pmcid = _ids(_children(parts.get("PubmedData"), "ArticleIdList"), article)
    pub_date = _pub_date(issue.get("PubDate"), article)
    # NLM's title abbreviation ("J Mol Biol"), as Vancouver references write it
    abbrev = _child_text(cited.get("MedlineJournalInfo"), "MedlineTA") or _first_text(journal, "ISOAbbreviation")
    return Study(
        title=_first_text(fields, "ArticleTitle", "VernacularTitle") or "",
        pmid=pmid,
        pmid_version=version,
        doi=doi,
        pmcid=pmcid,
        abstract=_abstract(fields.get("Abstract"), _all(cited, "OtherAbstract")),
        journal=_first_text(journal, "Title") or abbrev,
        journal_abbrev=abbrev,
        volume=_first_text(issue, "Volume"),
        issue=_first_text(issue, "Issue"),
        pages=_pages(fields.get("Pagination")),
        pub_date=pub_date,
        year=_year(pub_date),
        authors=_authors(article),
        languages=_texts(_all(fields, "Language")),
        publication_types=_texts(_children(fields.get("PublicationTypeList"), "PublicationType")),
        mesh=_mesh(cited.get("MeshHeadingList")),
        keywords=_keywords(_all(cited, "KeywordList")),
        medline_status=citation.get("Status"),
        date_revised=_structured_date(cited.get("DateRevised")),
        corrections=_corrections(cited.get("CommentsCorrectionsList")),
        record_source="pubmed",
    )


def _book_article(record: etree._Element) -> Study:
    """Map one ``PubmedBookArticle`` (NCBI Bookshelf: a chapter, or a whole book).

    A record with an ArticleTitle is a chapter (``work_type="chapter"``): that is its title,
    and the book's title stands where a journal would. Without one it is a whole book or
    report (``work_type="book"``) titled by its BookTitle. Both carry the book's publisher and
    its place (Book/Publisher), which the exports need for @incollection/CHAP and @book/BOOK.
    """
    parts = _index(record)
    document = parts.get("BookDocument")
    if document is None:
        document = etree.Element("BookDocument")
    fields = _index(document)
    book = fields.get("Book")
    if book is None:
        book = etree.Element("Book")
    about_book = _index(book)
    pmid, version = _pmid(fields.get("PMID"))
    id_lists = [*_children(parts.get("PubmedBookData"), "ArticleIdList"), *document.iterchildren("ArticleIdList")]
    doi, pmcid = _ids(id_lists, book)
    chapter_title = _first_text(fields, "ArticleTitle", "VernacularTitle")
    book_title = _flatten(about_book.get("BookTitle")) or None
    publisher = _index(about_book.get("Publisher"))
    # A chapter is dated by its own ContributionDate, as PubMed and Bookshelf cite it
    # (NLM's Citing Medicine: "Writer W. Title. 2004 Mar 19. In: SynthReviews [Internet].
    # Somewhere: Univ; 1993-."): the book's PubDate is when a living book (GeneReviews since
    # 1993, StatPearls re-dated every year) started or was last issued, not when this chapter
    # was written, so it is only the fallback. A whole book is dated by its PubDate.
    pub_date = None
    if chapter_title:
        pub_date = _structured_date(fields.get("ContributionDate"))
    pub_date = pub_date or _structured_date(about_book.get("PubDate"))
    return Study(
        title=chapter_title or book_title or "",
        pmid=pmid,
        pmid_version=version,
        doi=doi,
        pmcid=pmcid,
        abstract=_abstract(fields.get("Abstract"), ()),
        journal=book_title if chapter_title else None,
        work_type="chapter" if chapter_title else "book",
        publisher=_first_text(publisher, "PublisherName"),
        publisher_place=_first_text(publisher, "PublisherLocation"),
        pub_date=pub_date,
        year=_year(pub_date),
        authors=_authors(document) or _authors(book),
        languages=_texts(document.iterchildren("Language")),
        publication_types=_texts(document.iterchildren("PublicationType")),
        mesh=_mesh(fields.get("MeshHeadingList")),
        keywords=_keywords(document.iterchildren("KeywordList")),
        medline_status=None,
        date_revised=_structured_date(fields.get("DateRevised")),
        corrections=_corrections(fields.get("CommentsCorrectionsList")),
        record_source="pubmed",
    )

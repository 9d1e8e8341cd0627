"""MEDLINE text import: PubMed's "Save → PubMed format" files (``.nbib``/``.txt``).

Why: people build reading lists in the PubMed web interface and export them this way; importing the
export must give the same :class:`~harvest.models.Study` as harvesting the same PMIDs as XML, so
the two can be deduplicated and compared. ``Bio.Medline.parse`` splits records and fields; before
it sees the text we check every line is MEDLINE-shaped (an XML reply or a binary file saved under
``.txt`` by mistake must fail loudly, not import as empty records) and rejoin wrapped lines, which
``Bio.Medline`` would otherwise split into extra list items for fields such as ``CIN`` or ``OT``.

A download cut at a line boundary still looks like MEDLINE, so the last record must end the way
PubMed ends records: with its ``SO`` (source) line, or, for a Bookshelf record (GeneReviews and
other book chapters have no ``SO``), with its ``AID - NBK… [bookaccession]`` line. Only the last
record is held to this: any record followed by another was evidently written in full.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
from collections.abc import Iterable, Iterator
from typing import TextIO

from Bio import Medline

from harvest.models import Correction, MeshHeading, Study
from harvest.pubmed_xml import normalize_doi, normalize_pmcid, parse_date_text

__all__ = ["MedlineError", "parse_medline"]

# "PMID- 123", "TI  - Title", "AU  - Name": a tag of up to four characters, padded, then "- ".
_FIELD_LINE = re.compile(r"^[A-Z](?:[A-Z0-9]{3}|[A-Z0-9]{2} |[A-Z0-9] {2}| {3})-(?: |$)")
_TAGGED_ID = re.compile(r"(\S+)\s*\[(\w+)\]")
_LINKED_PMID = re.compile(r"\s*PMID:\s*(\d+)\s*\.?\s*$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})")
# How PubMed ends a record: the source line, or a Bookshelf record's accession.
_RECORD_END = re.compile(r"^SO  -|^AID - NBK\d+ \[bookaccession\]$")

# MEDLINE comment/correction tags → the RefType the XML uses for the same link.
_CORRECTION_TAGS = {
    "CON": "CommentOn",
    "CIN": "CommentIn",
    "EIN": "ErratumIn",
    "EFR": "ErratumFor",
    "CRI": "CorrectedandRepublishedIn",
    "CRF": "CorrectedandRepublishedFrom",
    "ECI": "ExpressionOfConcernIn",
    "ECF": "ExpressionOfConcernFor",
    "PRIN": "PartialRetractionIn",
    "PROF": "PartialRetractionOf",
    "RPI": "RepublishedIn",
    "RPF": "RepublishedFrom",
    "RIN": "RetractionIn",
    "ROF": "RetractionOf",
    "RRI": "RetractedandRepublishedIn",
    "RRF": "RetractedandRepublishedFrom",
    "UIN": "UpdateIn",
    "UOF": "UpdateOf",
    "SPIN": "SummaryForPatientsIn",
    "ORI": "OriginalReportIn",
}


class MedlineError(ValueError):
    """The input is not a MEDLINE (PubMed format) export.

    Names the file, the record number (1-based, counting blank-line separated records) and the line,
    so a user who picked the wrong file sees which one and where it stops looking like MEDLINE.
    """

    def __init__(
        self, name: str, message: str, *, record: int | None = None, line: int | None = None,
        pmid: str | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.record = record
        self.line = line
        self.pmid = pmid
        self.reason = message
        where = ", ".join(
            part for part in (f"record {record}" if record else "", f"line {line}" if line else "") if part
        )
        super().__init__(f"{name}: {where + ': ' if where else ''}{message}")


def parse_medline(source: str | os.PathLike[str] | TextIO, *, name: str | None = None) -> Iterator[Study]:
    """Yield one :class:`Study` (``record_source="medline"``) per record of a MEDLINE export.

    ``source`` is a path or an open text file. Raises :class:`MedlineError` as soon as a line is
    not MEDLINE-shaped (XML, HTML, binary, an error message), when the file holds no record at
    all (PubMed never saves an empty export, so an empty file means a failed download), or when
    the last record stops short of its ``SO`` line (a cut download); the records before it are
    yielded first.
    """
    with contextlib.ExitStack() as stack:
        lines, label = _open_text(source, name, stack)
        checked = _LogicalLines(lines, label)
        for record in Medline.parse(checked):
            if not record.get("PMID"):
                raise MedlineError(label, "record has no PMID field", record=checked.record, line=checked.line)
            yield _study(record)
        if checked.record == 0:
            raise MedlineError(label, "no MEDLINE records found (empty file?)")


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _open_text(source: str | os.PathLike[str] | TextIO, name: str | None, stack: contextlib.ExitStack) -> tuple[Iterable[str], str]:
    if isinstance(source, (str, os.PathLike)):
        if isinstance(source, str) and "\n" in source:
            raise TypeError("parse_medline() reads a path; wrap MEDLINE text in io.StringIO")
        label = name or os.path.basename(os.fspath(source))
        with open(source, "rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"  # saved exports get compressed for transfer
        opener = gzip.open if gzipped else open
        handle = stack.enter_context(opener(source, "rt", encoding="utf-8-sig", errors="strict", newline=None))
        return handle, label
    if hasattr(source, "read"):
        return source, name or os.path.basename(str(getattr(source, "name", "<stream>")))
    raise TypeError(f"cannot read MEDLINE text from {type(source).__name__}")


class _LogicalLines:
    """Iterate MEDLINE lines for ``Bio.Medline.parse``: each field on one line, continuation lines
    joined to it, every line checked; tracks the record and line numbers for error messages."""

    def __init__(self, lines: Iterable[str], label: str) -> None:
        self._lines = lines
        self._label = label
        self.record = 0
        self.line = 0
        self.pmid: str | None = None  # of the current record
        self._last_field = ""  # the current record's latest complete field

    def _fail(self, message: str) -> MedlineError:
        return MedlineError(self._label, message, record=max(self.record, 1), line=self.line,
                            pmid=self.pmid)  # fmt: skip

    def _raw_lines(self) -> Iterator[str]:
        iterator = iter(self._lines)
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                self.line += 1
                raise self._fail(f"not UTF-8 text (a binary file?): {exc.reason}") from exc
            except EOFError as exc:  # a gzip stream cut short: say which file and where
                raise self._fail(f"the compressed file ends early (a cut download?): {exc}") from exc
            self.line += 1
            yield raw.rstrip("\r\n")

    def __iter__(self) -> Iterator[str]:
        field: str | None = None
        ended = False  # a blank line closed the record; its separator goes out with the next one
        for line in self._raw_lines():
            if "\x00" in line:
                raise self._fail("binary data, not MEDLINE text")
            if not line.strip():  # a blank line ends the record
                if field is not None:
                    yield self._close(field)
                    field, ended = None, True
                continue
            if line.startswith(" "):  # a wrapped line continues the field above
                if field is None:
                    raise self._fail("continuation line before any field")
                field += " " + line.strip()
                continue
            if not _FIELD_LINE.match(line):
                raise self._fail(self._not_medline(line))
            if field is None:
                if ended:
                    # Held back until now so that Bio.Medline hands over the last record only
                    # after the end-of-file check below.
                    yield "\n"
                self.record += 1
                self.pmid, self._last_field = None, ""
            else:
                yield self._close(field)
            field = line.rstrip()
            if field.startswith("PMID-"):
                self.pmid = field[5:].strip() or None
        if field is not None:
            yield self._close(field)
        self._check_last_record()

    def _close(self, field: str) -> str:
        self._last_field = field
        return field + "\n"

    def _check_last_record(self) -> None:
        """The file ended: its last record must end as PubMed ends one (see the module doc).
        A record without PMID is left to the caller's clearer "no PMID" error."""
        if self.record == 0 or self.pmid is None or _RECORD_END.match(self._last_field):
            return
        tag = self._last_field[:4].rstrip()
        raise self._fail(
            f"the last record (PMID {self.pmid}) is incomplete: it stops at its {tag} field, "
            "but PubMed ends every record with its SO (source) line (a book record with its "
            "AID [bookaccession] line); the file looks cut short (an interrupted download?), "
            "so this record was not read"
        )

    @staticmethod
    def _not_medline(line: str) -> str:
        shown = line.strip()[:60]
        if shown.startswith("<"):
            return f"looks like XML/HTML, not MEDLINE text (PubMed XML goes to parse_pubmed_xml): {shown!r}"
        return f"not a MEDLINE field line ('TAG - value'): {shown!r}"


# --------------------------------------------------------------------------------------------
# Field groups
# --------------------------------------------------------------------------------------------


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    return [item.strip() for item in values if item and item.strip()]


def _text(record: Medline.Record, *keys: str) -> str | None:
    for key in keys:
        values = _as_list(record.get(key))
        if values:
            return " ".join(values)
    return None


def _mesh_heading(term: str) -> MeshHeading:
    """"Dry Needling/*methods" → descriptor with a major qualifier; "*Low Back Pain" → major descriptor."""
    descriptor, *qualifiers = (part.strip() for part in term.split("/"))
    return MeshHeading(
        descriptor=descriptor.lstrip("*").strip(),
        major=descriptor.startswith("*"),
        qualifiers=[(q.lstrip("*").strip(), q.startswith("*")) for q in qualifiers if q.lstrip("*").strip()],
    )


def _doi(record: Medline.Record) -> str | None:
    """AID "10.x/y [doi]", falling back to LID (the location ID holds the DOI for e-only papers)."""
    for key in ("AID", "LID"):
        for value in _as_list(record.get(key)):
            for identifier, kind in _TAGGED_ID.findall(value):
                if kind == "doi" and (doi := normalize_doi(identifier)):
                    return doi
    return None


def _corrections(record: Medline.Record) -> list[Correction]:
    """"RIN - Journal. 2020;1:2. PMID: 123" → Correction("RetractionIn", "123", "Journal. 2020;1:2")."""
    links = []
    for key, ref_type in ((k, _CORRECTION_TAGS[k]) for k in record if k in _CORRECTION_TAGS):
        for value in _as_list(record[key]):
            match = _LINKED_PMID.search(value)
            source = value[: match.start()] if match else value
            source = source.strip().rstrip(".").strip()
            links.append(Correction(ref_type=ref_type, pmid=match.group(1) if match else None, ref_source=source or None))
    return links


def _date_revised(record: Medline.Record) -> str | None:
    return _compact_date(_text(record, "LR", "DRDT"))  # DRDT: a Bookshelf record's DateRevised


def _compact_date(text: str | None) -> str | None:
    """"20040319" (CTDT, DRDT) → "2004-03-19"."""
    match = _COMPACT_DATE.match(text or "")
    return f"{match[1]}-{match[2]}-{match[3]}" if match else None


def _is_book_record(record: Medline.Record) -> bool:
    """A Bookshelf record: PubMed writes its book title (BTI) and its NBK accession."""
    if _text(record, "BTI"):
        return True
    ids = _as_list(record.get("AID"))
    return any(kind == "bookaccession" for value in ids for _, kind in _TAGGED_ID.findall(value))


def _book_fields(record: Medline.Record) -> dict[str, str | None]:
    """What a Bookshelf record adds, as :func:`harvest.pubmed_xml._book_article` maps the XML.

    PubMed's export of a chapter (GeneReviews, StatPearls) writes the chapter's title in TI,
    the book's in BTI, its publisher in PB and place in PL ("Seattle (WA)"), the book's date in
    DP and the chapter's own in CTDT ("20040319"), which dates the chapter as in the XML. A
    whole book has no TI. (PL in a journal record is the journal's country: not mapped there.)
    """
    book_title = _text(record, "BTI")
    chapter = bool(_text(record, "TI")) and bool(book_title)
    pub_date = _compact_date(_text(record, "CTDT")) if chapter else None
    return {
        "work_type": "chapter" if chapter else "book",
        "journal": book_title if chapter else None,
        "publisher": _text(record, "PB"),
        "publisher_place": _text(record, "PL"),
        "pub_date": pub_date or parse_date_text(_text(record, "DP")),
    }


def _study(record: Medline.Record) -> Study:
    book = _book_fields(record) if _is_book_record(record) else {}
    pub_date = book["pub_date"] if book else parse_date_text(_text(record, "DP"))
    return Study(
        title=_text(record, "TI", "BTI", "TT") or "",
        pmid=_text(record, "PMID"),
        doi=_doi(record),
        pmcid=normalize_pmcid(_text(record, "PMC")),
        abstract=_text(record, "AB"),
        journal=book["journal"] if book else _text(record, "JT", "TA"),
        journal_abbrev=_text(record, "TA"),
        volume=_text(record, "VI"),
        issue=_text(record, "IP"),
        pages=_text(record, "PG"),  # MedlinePgn, as in the XML: "101-10"
        work_type=book.get("work_type"),
        publisher=book.get("publisher"),
        publisher_place=book.get("publisher_place"),
        pub_date=pub_date,
        year=int(pub_date[:4]) if pub_date else None,
        authors=_as_list(record.get("AU")) + _as_list(record.get("CN")),
        languages=_as_list(record.get("LA")),
        publication_types=_as_list(record.get("PT")),
        mesh=[_mesh_heading(term) for term in _as_list(record.get("MH"))],
        keywords=_as_list(record.get("OT")),
        medline_status=_text(record, "STAT"),
        date_revised=_date_revised(record),
        corrections=_corrections(record),
        record_source="medline",
    )

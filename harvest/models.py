"""The one shape every source produces: a :class:`Study`, or a :class:`Deletion`.

Parsers (PubMed XML, MEDLINE text, feeds, the demo sample) map their input to these
plain dataclasses; only :mod:`harvest.store` turns them into rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def join_pages(first: str, last: str | None) -> str:
    """Pages as PubMed writes a range ("101-110"), or the one page when both ends agree."""
    return f"{first}-{last}" if last and last != first else first


@dataclass(slots=True)
class MeshHeading:
    """A MeSH descriptor with NLM's major-topic flags (``*`` in PubMed's display)."""

    descriptor: str
    major: bool = False
    # Qualifiers as (name, major) pairs, e.g. ("therapy", True).
    qualifiers: list[tuple[str, bool]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "descriptor": self.descriptor,
            "major": self.major,
            "qualifiers": [{"name": n, "major": m} for n, m in self.qualifiers],
        }

    @property
    def is_major(self) -> bool:
        """True when the descriptor or any of its qualifiers is a major topic."""
        return self.major or any(m for _, m in self.qualifiers)


@dataclass(slots=True)
class Correction:
    """One CommentsCorrections link, e.g. ``RetractionIn`` pointing at the notice."""

    ref_type: str
    pmid: str | None = None
    ref_source: str | None = None


@dataclass(slots=True)
class Study:
    """One work, whatever source described it.

    Text fields are plain text (inline markup flattened); ``abstract`` keeps the section
    labels of a structured abstract as ``LABEL: text`` paragraphs separated by blank lines.
    """

    title: str
    pmid: str | None = None
    pmid_version: int = 1
    doi: str | None = None
    pmcid: str | None = None
    abstract: str | None = None
    journal: str | None = None
    # NLM's title abbreviation ("J Mol Biol", MedlineTA), which Vancouver references use and
    # reference managers keep beside the full title.
    journal_abbrev: str | None = None
    # Where in the journal, as the source writes them: volume and issue are text ("12",
    # "Suppl 2", "3-4"); pages keep NLM's MedlinePgn form ("101-10", "e0123", "S1-S10").
    volume: str | None = None
    issue: str | None = None
    pages: str | None = None
    # What kind of work: None for a journal article (nearly every record), "chapter" for a
    # chapter of an NCBI Bookshelf book (StatPearls, GeneReviews; ``journal`` then holds the
    # book's title), "book" for a whole book or report. Books name their publisher and its
    # place ("StatPearls Publishing", "Treasure Island (FL)"); journal articles leave both None.
    work_type: str | None = None
    publisher: str | None = None
    publisher_place: str | None = None
    # ISO 8601 partial date: YYYY, YYYY-MM or YYYY-MM-DD.
    pub_date: str | None = None
    year: int | None = None
    authors: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    publication_types: list[str] = field(default_factory=list)
    mesh: list[MeshHeading] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    medline_status: str | None = None
    date_revised: str | None = None
    corrections: list[Correction] = field(default_factory=list)
    # Where a feed or web page shows the work (feeds fill it; PubMed leaves it None).
    url: str | None = None
    # Which kind of record this came from: "pubmed", "medline", "feed", "sample".
    record_source: str = "pubmed"

    @property
    def retracted(self) -> bool:
        """NLM flags a retraction by publication type and by a ``RetractionIn`` link."""
        return "Retracted Publication" in self.publication_types or any(
            c.ref_type == "RetractionIn" for c in self.corrections
        )


@dataclass(slots=True, frozen=True)
class Deletion:
    """A ``DeleteCitation`` entry: NLM withdrew this PMID."""

    pmid: str

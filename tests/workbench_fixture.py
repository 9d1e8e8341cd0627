"""The workbench's fixture database, built from real records only.

The bundled demo sample (52 on-topic records), Biopython's recorded efetch replies and
PubMed-format exports, and a handful of records picked by PMID from a real NLM update file
for their awkward titles (%, &, {}, #, _, ~, >, Greek letters, MathML-derived text) and one
retraction. Shared data is read in place; tests skip when it is absent.

:func:`build_demo_fixture_db` needs no shared data (the demo sample ships in the package),
so the basic workbench tests also run in a user's clone.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from datafiles import SHARED_DATA
from lxml import etree

from harvest import demo, ingest, reading_lists, tagging
from harvest.store import open_db

UPDATE_FILE = SHARED_DATA / "pubmed" / "pubmed21n1298-even.xml.gz"
# PMID -> why it is here
AWKWARD = {
    "33737034": "% in the title",
    "33565264": "& in the title",
    "34095938": "{} in the title",
    "33821504": "MathML-derived T2∗",
    "34088036": "~ in the title",
    "33245788": "# in the title",
    "33217152": "_ in the title",
    "33176546": "> in the title",
    "30534744": "Greek β",
    "31031480": "retracted",
}
LIST_NAME = "knee OA"
LIST_PMIDS = ["23690322", "38705988"]
LIST_NOTE = "key trial"


def _extract(pmids: set[str], out: Path) -> None:
    """Copy the PubmedArticle elements of these PMIDs from the NLM update file."""
    kept = []
    with gzip.open(UPDATE_FILE, "rb") as fh:
        for _, el in etree.iterparse(fh, tag="PubmedArticle", resolve_entities=False,
                                     no_network=True, load_dtd=False):  # fmt: skip
            if el.findtext("MedlineCitation/PMID") in pmids:
                kept.append(etree.tostring(el))
            el.clear()
    out.write_bytes(b"<PubmedArticleSet>" + b"".join(kept) + b"</PubmedArticleSet>")


def build_fixture_db(path: Path) -> Path:
    for needed in (SHARED_DATA / "eutils" / "biopython", SHARED_DATA / "medline", UPDATE_FILE):
        if not needed.exists():
            pytest.skip(f"real test data not found: {needed} (see ../shared/data/README.md)")
    demo.build_demo(path).conn.close()
    db = open_db(path)
    files = sorted((SHARED_DATA / "eutils" / "biopython").glob("pubmed*.xml"))
    files += sorted((SHARED_DATA / "medline").glob("*.txt"))
    awkward = path.parent / "awkward.xml"
    _extract(set(AWKWARD), awkward)
    for f in [*files, awkward]:
        result = ingest.import_file(db, f)
        assert result.error is None, (f, result.error)
    tagging.tag_studies(db)
    reading_lists.create_list(db, LIST_NAME, description="knee osteoarthritis trials")
    reading_lists.add_items(db, LIST_NAME, LIST_PMIDS, note=LIST_NOTE)
    db.conn.close()
    return path


def build_demo_fixture_db(path: Path) -> Path:
    """The bundled demo sample alone, tagged, with the same reading list (its two studies
    are in the sample)."""
    demo.build_demo(path).conn.close()
    db = open_db(path)
    tagging.tag_studies(db)
    reading_lists.create_list(db, LIST_NAME, description="knee osteoarthritis trials")
    reading_lists.add_items(db, LIST_NAME, LIST_PMIDS, note=LIST_NOTE)
    db.conn.close()
    return path

"""Tests for harvest.pubmed_xml: real E-utilities replies and an NLM update file, read in place from
../shared/data, plus small hand-made hostile inputs in tests/fixtures/hostile."""

from __future__ import annotations

import collections
import gzip
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datafiles import FIXTURES, data_file
from lxml import etree

from harvest.models import Correction, Deletion, MeshHeading, Study
from harvest.pubmed_xml import (  # _UnusedElementsCut: a byte-level step worth testing alone
    PubmedXMLError,
    _UnusedElementsCut,
    normalize_doi,
    normalize_pmcid,
    parse_date_text,
    parse_pubmed_xml,
)

HOSTILE = FIXTURES / "hostile"
UPDATE_FILE = ("pubmed", "pubmed21n1298-even.xml.gz")


def efetch(name: str) -> Path:
    return data_file("eutils", "biopython", name)


def studies(source, **kwargs) -> list[Study]:
    records = list(parse_pubmed_xml(source, **kwargs))
    assert all(isinstance(r, Study) for r in records)
    return records  # type: ignore[return-value]


def minimal_set(inner: str) -> bytes:
    """A hand-made efetch-shaped reply around ``inner`` (for shapes the real corpus lacks)."""
    return (
        '<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
        '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n<PubmedArticleSet>' + inner + "</PubmedArticleSet>"
    ).encode()


# ----------------------------------------------------------------------------------------------
# Reference lists and history dates are cut from the bytes before libxml2 builds them
# ----------------------------------------------------------------------------------------------


class _ShortReads(io.RawIOBase):
    """A stream that hands out at most ``size`` bytes per read, like a slow socket, so element
    boundaries fall across reads at every possible place."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = io.BytesIO(data)
        self._size = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(self._size, size) if size and size > 0 else self._size)


def _read_all(stream) -> bytes:
    out = []
    while chunk := stream.read(32768):
        out.append(chunk)
    return b"".join(out)


def _elements(xml: bytes, *, drop: tuple[str, ...] = ()) -> list[tuple]:
    """Every element as (tag, attributes, text, tail), whitespace-trimmed, without ``drop``ped subtrees."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    root = etree.fromstring(xml, parser)
    for tag in drop:
        for elem in root.xpath(f"//{tag}[not(ancestor::{tag})]"):
            elem.getparent().remove(elem)
    return [(e.tag, dict(e.attrib), (e.text or "").strip(), (e.tail or "").strip()) for e in root.iter()]


@pytest.fixture(scope="module")
def update_file_head() -> bytes:
    """The first ~1,600 records of the real update file (17 MB: reference lists, one nested)."""
    with gzip.open(data_file(*UPDATE_FILE)) as fh:
        head = fh.read(17_000_000)
    return head[: head.rindex(b"</PubmedArticle>") + len(b"</PubmedArticle>")] + b"\n</PubmedArticleSet>\n"


@pytest.mark.parametrize("read_size", [1_000_003, 65_536, 4_099, 97])
def test_cut_stream_is_the_document_without_reference_lists_and_history(update_file_head, read_size):
    head = update_file_head
    if read_size < 1000:  # byte-sized reads: the first ~40 records are enough
        head = head[: head.rindex(b"</PubmedArticle>", 0, 400_000) + 16] + b"\n</PubmedArticleSet>\n"
    data = head
    cut = _read_all(_UnusedElementsCut(_ShortReads(data, read_size)))
    assert b"<ReferenceList" not in cut and b"<History" not in cut
    assert cut.count(b"\n") == data.count(b"\n")  # so the parser's line numbers stay true
    assert _elements(cut) == _elements(data, drop=("ReferenceList", "History"))


def test_cut_handles_nesting_and_touches_only_a_records_pubmed_data():
    data = (
        b"<A><History>\nkept: outside PubmedData</History><PubmedData><History>\n<Year>2020</Year></History>"
        b"<HistoryNote>kept</HistoryNote>\n<ReferenceList><Title>x</Title><ReferenceList>\n<Reference/>"
        b"</ReferenceList>\n</ReferenceList><ArticleIdList/></PubmedData>\n<B>b</B></A>"
    )
    expected = (
        b"<A><History>\nkept: outside PubmedData</History><PubmedData>\n<HistoryNote>kept</HistoryNote>\n"
        b"\n\n<ArticleIdList/></PubmedData>\n<B>b</B></A>"
    )
    for size in (1, 2, 3, 5, 8, 13, len(data)):
        assert _read_all(_UnusedElementsCut(_ShortReads(data, size))) == expected, size


def test_error_after_a_cut_reference_list_names_the_true_line():
    refs = "".join(f"\n<Reference><Citation>ref {i}</Citation></Reference>" for i in range(50))
    inner = (
        f'<PubmedArticle><MedlineCitation><PMID Version="1">1</PMID><Article><ArticleTitle>T</ArticleTitle>'
        f"</Article></MedlineCitation><PubmedData><ReferenceList>{refs}\n</ReferenceList>\n"
        "<ArticleIdList><ArticleId IdType='pubmed'>1</ArticleId></ArticleIdList>\n<Broken</PubmedData></PubmedArticle>"
    )
    data = minimal_set(inner)
    broken_line = data[: data.index(b"<Broken")].count(b"\n") + 1
    with pytest.raises(PubmedXMLError) as info:
        list(parse_pubmed_xml(data))
    assert info.value.line == broken_line == 56


def test_truncated_inside_a_reference_list_is_still_an_error_and_keeps_earlier_records(update_file_head):
    start = 0
    for _ in range(50):  # a reference list after the first 50 records
        start = update_file_head.index(b"<PubmedArticle>", start) + 1
    first_list = update_file_head.index(b"<ReferenceList>", start)
    cut_at = update_file_head.index(b"</Reference>", first_list)  # mid-list: the cut never completes
    records_before = update_file_head[:first_list].count(b"</PubmedArticle>")
    seen = []
    with pytest.raises(PubmedXMLError, match="line"):
        for record in parse_pubmed_xml(update_file_head[:cut_at]):
            seen.append(record.pmid)
    assert len(seen) == records_before > 0


def test_an_error_mid_file_keeps_the_records_before_it_and_its_true_line(update_file_head):
    """Across hundreds of cut reference lists and history dates, the error's line is the file's."""
    at = update_file_head.index(b"</ArticleTitle>", len(update_file_head) // 2)
    broken = update_file_head[:at] + b"</ArticleTitel>" + update_file_head[at + len(b"</ArticleTitle>"):]
    records = []
    with pytest.raises(PubmedXMLError) as info:
        for record in parse_pubmed_xml(broken):
            records.append(record.pmid)
    assert info.value.line == broken[:at].count(b"\n") + 1
    assert "ArticleTitel" in info.value.reason
    assert len(records) == broken[:at].count(b"</PubmedArticle>") > 500  # every whole record before it


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("after", [b"", b"\n", b"\n<PubmedArticle>\n<MedlineCitation Status"])
def test_a_file_cut_after_a_record_keeps_that_record(update_file_head, after, gz):
    """Records are mapped when the next one starts; a file cut right after a record's end tag
    (or anywhere in the next record) still yields every whole record before the cut."""
    end = update_file_head.index(b"</PubmedArticle>", len(update_file_head) // 3) + len(b"</PubmedArticle>")
    data = update_file_head[:end] + after
    data = gzip.compress(data) if gz else data
    seen = []
    with pytest.raises(PubmedXMLError, match="malformed XML at line"):
        for record in parse_pubmed_xml(data):
            seen.append(record.pmid)
    assert len(seen) == update_file_head[:end].count(b"</PubmedArticle>") > 400


def test_records_with_no_whitespace_between_them(update_file_head):
    """Minified XML: nothing between records, so only the next record's start closes one."""
    head = update_file_head[: update_file_head.index(b"</PubmedArticle>", 200_000) + 16]
    minified = re.sub(rb">\s+<", b"><", head)
    whole = list(parse_pubmed_xml(minified + b"</PubmedArticleSet>"))
    assert [s.pmid for s in whole] == [s.pmid for s in parse_pubmed_xml(head + b"</PubmedArticleSet>")]
    cut = _until_error(minified)
    assert [s.pmid for s in cut] == [s.pmid for s in whole]  # cut after the last end tag: all kept


def _until_error(data: bytes) -> list:
    seen = []
    with pytest.raises(PubmedXMLError):
        for record in parse_pubmed_xml(data):
            seen.append(record)
    return seen


# ----------------------------------------------------------------------------------------------
# Real efetch replies (Biopython's recorded E-utilities answers)
# ----------------------------------------------------------------------------------------------


def test_efetch_pubmed1_second_record_whole():
    """PMID 9997, checked field by field against pubmed1.xml."""
    first, second = studies(efetch("pubmed1.xml"))
    assert first.pmid == "12091962"
    assert second == Study(
        title="Magnetic studies of Chromatium flavocytochrome C552. A mechanism for heme-flavin interaction.",
        pmid="9997",
        pmid_version=1,
        doi="10.1016/0005-2795(76)90109-4",
        pmcid=None,
        abstract=(
            "Electron paramagnetic resonance and magnetic susceptibility studies of Chromatium flavocytochrome "
            "C552 and its diheme flavin-free subunit at temperatures below 45 degrees K are reported. The results "
            "show that in the intact protein and the subunit the two low-spin (S = 1/2) heme irons are "
            "distinguishable, giving rise to separate EPR signals. In the intact protein only, one of the heme "
            "irons exists in two different low spin environments in the pH range 5.5 to 10.5, while the other "
            "remains in a constant environment. Factors influencing the variable heme iron environment also "
            "influence flavin reactivity, indicating the existence of a mechanism for heme-flavin interaction."
        ),
        journal="Biochimica et biophysica acta",
        journal_abbrev="Biochim Biophys Acta",
        volume="446",
        issue="1",
        pages="179-91",  # MedlinePgn, not StartPage/EndPage (179, 191)
        pub_date="1976-09-28",
        year=1976,
        authors=["Strekas TC"],
        languages=["eng"],
        publication_types=["Journal Article"],
        mesh=[
            MeshHeading("Binding Sites"),
            MeshHeading("Chromatium", False, [("enzymology", True)]),
            MeshHeading("Cytochrome c Group", True),
            MeshHeading("Electron Spin Resonance Spectroscopy"),
            MeshHeading("Flavins"),
            MeshHeading("Heme"),
            MeshHeading("Hydrogen-Ion Concentration"),
            MeshHeading("Iron", False, [("analysis", False)]),
            MeshHeading("Magnetics"),
            MeshHeading("Oxidation-Reduction"),
            MeshHeading("Protein Binding"),
            MeshHeading("Protein Conformation"),
            MeshHeading("Temperature"),
        ],
        keywords=[],
        medline_status="MEDLINE",
        date_revised="2019-06-09",
        corrections=[],
        record_source="pubmed",
    )


def test_efetch_pubmed1_season_date_and_kie_keywords():
    first = studies(efetch("pubmed1.xml"))[0]
    assert first.pub_date == "1990"  # <Year>1990</Year><Season>Spring</Season>
    assert first.year == 1990
    assert first.authors == ["Olivero JM"]
    assert first.keywords == ["Health Care and Public Health", "Legal Approach"]
    assert first.abstract is None
    assert first.doi is None
    assert first.journal == "Social justice (San Francisco, Calif.)"
    assert first.mesh[1] == MeshHeading("Acquired Immunodeficiency Syndrome", True, [])
    assert first.mesh[-1] == MeshHeading("United States", False, [])


def test_efetch_pubmed4_italic_markup_in_title_is_flattened():
    """PMID 27797938 has <i>TERT</i> in its ArticleTitle (biopython#1539)."""
    (study,) = studies(efetch("pubmed4.xml"))
    assert study.pmid == "27797938"
    assert study.title == (
        "Leucocyte telomere length, genetic variants at the TERT gene region and risk of pancreatic cancer."
    )


def test_efetch_pubmed6_html_and_mathml_in_abstract_become_plain_text():
    (study,) = studies(efetch("pubmed6.xml"))
    assert study.pmid == "30108519"
    abstract = study.abstract or ""
    assert "maximal oxygen uptake ( V.O2max ) 67.6 ± 4.1 ml·kg-1·min-1]" in abstract
    assert 'the disused "Minimum Lactate Equivalent" (LEmin), first described' in abstract
    assert "(P < 0.001; ES: 3.54)" in abstract
    assert "mml" not in abstract and "<" not in abstract.replace("P < 0", "")
    assert "\n" not in abstract and "  " not in abstract


@pytest.mark.parametrize(
    ("name", "pmids"),
    [("pubmed2.xml", ["11748933", "11700088"]), ("pubmed5.xml", ["28775130"]), ("pubmed7.xml", ["29963580"])],
)
def test_efetch_other_replies_parse_with_titles_and_dates(name, pmids):
    records = studies(efetch(name))
    assert [r.pmid for r in records] == pmids
    for record in records:
        assert record.title and record.year and record.pub_date.startswith(str(record.year))
        assert record.record_source == "pubmed"


def test_html_reply_where_xml_was_expected_is_an_error():
    """pubmed3.html: PmFetch answered with HTML (real)."""
    with pytest.raises(PubmedXMLError) as info:
        list(parse_pubmed_xml(efetch("pubmed3.html")))
    assert "root element is <html>" in str(info.value)
    assert info.value.name == "pubmed3.html"


def test_empty_result_set_yields_nothing():
    """An unavailable PMID fetched as XML gives an empty PubmedArticleSet (real), which is valid."""
    assert list(parse_pubmed_xml(data_file("eutils", "errors", "efetch_pmid_not_available_empty_set.xml"))) == []


def test_text_error_body_is_an_error():
    with pytest.raises(PubmedXMLError, match=r"efetch_pmid_not_available\.txt: malformed XML at line 1, column 1"):
        list(parse_pubmed_xml(data_file("eutils", "errors", "efetch_pmid_not_available.txt")))


# ----------------------------------------------------------------------------------------------
# Ways to hand the parser its input
# ----------------------------------------------------------------------------------------------


class _NonSeekable(io.RawIOBase):
    """Like an HTTP response body: read() only."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_every_source_kind_gives_the_same_records(tmp_path):
    path = efetch("pubmed2.xml")
    raw = path.read_bytes()
    expected = studies(path)
    gz_named_xml = tmp_path / "reply.xml"  # gzip detected by magic bytes, not by name
    gz_named_xml.write_bytes(gzip.compress(raw))
    plain_named_gz = tmp_path / "reply.xml.gz"
    plain_named_gz.write_bytes(raw)
    sources = [
        raw,
        bytearray(raw),
        str(path),
        io.BytesIO(raw),
        _NonSeekable(raw),
        gzip.compress(raw),
        _NonSeekable(gzip.compress(raw)),
        gz_named_xml,
        plain_named_gz,
    ]
    for source in sources:
        assert studies(source) == expected, type(source)


def test_error_names_bytes_and_given_names():
    with pytest.raises(PubmedXMLError) as info:
        list(parse_pubmed_xml(b"<PubmedArticleSet><PubmedArticle></PubmedArticleSet>"))
    assert info.value.name == "<bytes>"
    assert str(info.value).startswith("<bytes>: malformed XML at line 1, column ")
    with pytest.raises(PubmedXMLError, match=r"^efetch batch 3: "):
        list(parse_pubmed_xml(b"not xml", name="efetch batch 3"))


def test_xml_text_passed_as_str_is_refused():
    with pytest.raises(TypeError, match="as bytes"):
        list(parse_pubmed_xml("<PubmedArticleSet/>"))


# ----------------------------------------------------------------------------------------------
# The NLM update file: 10,363 real records + DeleteCitation
# ----------------------------------------------------------------------------------------------

DELETED = [
    "31688362", "31764432", "31895213", "31895214", "31917726", "33268618", "33268619", "33325556",
    "33370518", "33378316", "33417394", "33538040", "33667199", "33759239", "33814563", "33913214",
    "33982926", "34059851", "34081395", "34096142",
]  # fmt: skip


@pytest.fixture(scope="module")
def update_file() -> list[Study | Deletion]:
    return list(parse_pubmed_xml(data_file(*UPDATE_FILE)))


@pytest.fixture(scope="module")
def by_pmid(update_file) -> dict[str, list[Study]]:
    found = collections.defaultdict(list)
    for record in update_file:
        if isinstance(record, Study):
            found[record.pmid].append(record)
    return found


def test_update_file_counts(update_file):
    studies_ = [r for r in update_file if isinstance(r, Study)]
    deletions = [r for r in update_file if isinstance(r, Deletion)]
    assert len(studies_) == 10_363
    assert deletions == [Deletion(pmid) for pmid in DELETED]
    assert update_file[-20:] == deletions  # the DeleteCitation block closes the file
    assert all(int(s.pmid) % 2 == 0 for s in studies_)  # the corpus is the even PMIDs
    assert collections.Counter(s.medline_status for s in studies_) == {
        "Publisher": 4208,
        "In-Data-Review": 2241,
        "In-Process": 2116,
        "PubMed-not-MEDLINE": 1643,
        "MEDLINE": 155,
    }
    assert all(s.title and s.journal and s.pub_date and s.year for s in studies_)
    # 19 "2021 Jan-Dec" MedlineDates count as a bare year.
    assert collections.Counter(len(s.pub_date) for s in studies_) == {10: 6059, 7: 3222, 4: 1082}
    assert sum(1 for s in studies_ if s.pmcid) == 2626
    assert sum(1 for s in studies_ if s.doi is None) == 93


def test_update_file_whole_record(by_pmid):
    """PMID 32712704, built by hand from the XML (ELocationID and ArticleId agree on the DOI)."""
    assert by_pmid["32712704"] == [
        Study(
            title="Regional anesthesia in the time of COVID-19: a minireview.",
            pmid="32712704",
            pmid_version=1,
            doi="10.1007/s00540-020-02834-3",
            pmcid="PMC7382562",
            abstract=(
                "The treatment of surgical patients who are confirmed or suspected of coronavirus disease 2019 "
                "(COVID-19) is a challenge for all anesthesiologists. The safety of both patients and healthcare "
                "workers should be taken into consideration when performing anesthesia management for patients "
                "with COVID-19. General anesthesia requiring airway intervention may exacerbate COVID-19 "
                "pneumonia, and aerosol generation during airway intervention risks COVID-19 transmission to "
                "medical staff. However, regional anesthesia is not an aerosol-generating procedure. The neuraxial "
                "anesthesia may have little adverse influence on clinical outcomes in patients with COVID-19 after "
                "reviewing previous case reports. Regional anesthesia may have some advantages over general "
                "anesthesia for this group of patients, but unplanned conversion to general anesthesia during "
                "surgery is not preferred. Thus, careful consideration should be given to ensure that the surgery "
                "is performed entirely under regional anesthesia. The use of ultrasound guidance and the "
                "performance by an experienced physician may reduce the incidence of failed block and "
                "complications. The use of long-acting local anesthetic prolongs the anesthetic effect of regional "
                "anesthesia. Besides, a safe and sufficient dose of local anesthetic should be used."
            ),
            journal="Journal of anesthesia",
            journal_abbrev="J Anesth",
            volume="35",
            issue="3",
            pages="341-344",
            pub_date="2021-06",  # the issue date, not the earlier ArticleDate 2020-07-25
            year=2021,
            authors=["Hotta K"],
            languages=["eng"],
            publication_types=["Journal Article"],
            mesh=[
                MeshHeading("Anesthesia, Conduction", True),
                MeshHeading("Anesthesia, Local"),
                MeshHeading("Anesthetics, Local"),
                MeshHeading("COVID-19", True),
                MeshHeading("Humans"),
                MeshHeading("SARS-CoV-2"),
            ],
            keywords=["COVID-19", "Neuraxial anesthesia", "Peripheral nerve block", "Regional anesthesia"],
            medline_status="MEDLINE",
            date_revised="2021-06-06",
            corrections=[Correction("CommentIn", "32862273", "J Anesth. 2020 Dec;34(6):958")],
            record_source="pubmed",
        )
    ]


def test_update_file_holds_two_versions_of_one_pmid(by_pmid):
    """PMID 33728380 (Wellcome Open Research) appears as Version 1 and Version 2 in the same file."""
    v1, v2 = by_pmid["33728380"]
    assert (v1.pmid_version, v2.pmid_version) == (1, 2)
    assert v1.doi == "10.12688/wellcomeopenres.15846.1"  # each version has its own DOI
    assert v1.pmcid == "PMC7938335"
    assert v2.doi == "10.12688/wellcomeopenres.15846.2"
    assert v2.pmcid == "PMC7938335"  # XML says "PMC7938335.2"
    assert v2.title == "Variants associated with HHIP expression have sex-differential effects on lung function."
    assert v2.abstract.startswith("Background: Lung function is highly heritable")
    assert "(P<5x10 -8)" in v2.abstract and "FEV 1 β=0.028" in v2.abstract
    assert "Copyright" not in v2.abstract
    assert v2.medline_status == "PubMed-not-MEDLINE"
    assert v2.pub_date == "2020" and v2.date_revised == "2021-06-07"
    assert v2.keywords == ["HHIP", "expression", "genome-wide interaction study", "lung function", "sex"]
    assert (v2.authors[0], v2.authors[-1], len(v2.authors)) == ("Fawcett KA", "Wain LV", 75)
    assert "Lyytikäinen LP" in v2.authors


def test_update_file_structured_abstract_labels(by_pmid):
    (study,) = by_pmid["33022824"]
    assert study.abstract == (
        "AIMS: To use a database of national essential medicine lists to determine how many include the three "
        "tobacco dependence medicines: nicotine replacement therapy, varenicline and bupropion.\n\n"
        "METHODS: Retrospective observational study using national essential medicine lists for 137 countries.\n\n"
        "RESULTS: Of the 137 countries, 34 listed at least one of the three tobacco dependence medicines included "
        "in this analysis. Bupropion was listed by 23 countries, nicotine replacement therapy by 17 countries and "
        "varenicline by eight countries.\n\n"
        "CONCLUSIONS: Tobacco dependence medicines do not appear on the essential medicines lists of most countries."
    )


@pytest.mark.parametrize(
    ("pmid", "pub_date"),
    [
        ("29426732", "2018-07"),  # MedlineDate "2018 Jul-Aug"
        ("33667200", "2021-04"),  # MedlineDate "2021 Apr-Jun 01": the 01 is not April's
        ("33900900", "2021"),  # MedlineDate "2021 Jan-Dec"
        ("31031480", "2019-01"),  # MedlineDate "2019 Jan-Mar"
        ("16384580", "2006-02-24"),  # Year, Month "Feb", Day
    ],
)
def test_update_file_dates(by_pmid, pmid, pub_date):
    (study,) = by_pmid[pmid]
    assert study.pub_date == pub_date
    assert study.year == int(pub_date[:4])


def test_update_file_odd_records(by_pmid):
    # <ArticleTitle/> is empty: the VernacularTitle stands in.
    assert by_pmid["34086202"][0].title == "Die erste Seite."
    # An author with no <Initials>: derived from ForeName "Yoon-Hyeong".
    letter = by_pmid["31647768"][0]
    assert letter.authors == ["Choi YH", "Kwak JH"]
    assert letter.corrections == [
        Correction("CommentOn", "30355032", "Circ Res. 2018 Sep 28;123(8):996-1007"),
        Correction("ErratumIn", "32790519", "Circ Res. 2020 Aug 14;127(5):e140"),
    ]
    # The two retracted papers, flagged both by publication type and by a RetractionIn link.
    retracted = sorted(pmid for pmid, found in by_pmid.items() if any(s.retracted for s in found))
    assert retracted == ["31031480", "32743968"]
    assert by_pmid["31031480"][0].corrections == [
        Correction("RetractionIn", "34092875", "Anesth Essays Res. 2020 Jul-Sep;14(3):544")
    ]


def test_update_file_memory_stays_flat():
    """Streaming the 116 MB file must not build the document: peak RSS well under its size."""
    path = data_file(*UPDATE_FILE)
    code = (
        "import resource, sys\n"
        "from harvest.pubmed_xml import parse_pubmed_xml\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = sum(1 for _ in parse_pubmed_xml(sys.argv[1]))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(n, base, peak)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    count, base_kib, peak_kib = map(int, out.stdout.split())
    assert count == 10_383
    assert peak_kib - base_kib < 60 * 1024, f"parser grew RSS by {(peak_kib - base_kib) // 1024} MiB"


# ----------------------------------------------------------------------------------------------
# Shapes the real corpus lacks (hand-made)
# ----------------------------------------------------------------------------------------------


def test_book_articles():
    chapter, report = studies(FIXTURES / "book_article.xml")
    assert chapter == Study(
        title="Myofascial Pain Syndrome Overview",
        pmid="90000002",
        abstract="CLINICAL CHARACTERISTICS: Trigger points are tender nodules.\n\nMANAGEMENT: Dry needling is one option.",
        journal="SynthReviews®",  # the book the chapter is in
        work_type="chapter",
        publisher="University of Somewhere",
        publisher_place="Somewhere (XX)",
        pub_date="2004-03-19",  # the chapter's ContributionDate, not the book's 1993
        year=2004,
        authors=["Writer W", "Synthetic Pain Consortium"],  # the book's editors are not authors
        languages=["eng"],
        publication_types=["Review"],
        keywords=["trigger point"],
        date_revised="2025-10-02",
    )
    assert report == Study(
        title="Prolotherapy for Chronic Low Back Pain: A Review of Clinical Effectiveness",
        pmid="90000004",
        doi="10.5555/synth-report-4",
        abstract="A rapid review of prolotherapy.",
        journal=None,
        work_type="book",
        publisher="Synthetic Agency for Health Technology",
        pub_date="2018-09-14",
        year=2018,
        authors=["Reviewer R"],
        languages=["eng"],
        publication_types=["Review"],
    )


def test_other_abstract_only_when_no_abstract_and_article_date_only_without_year():
    xml = minimal_set(
        '<PubmedArticle><MedlineCitation Status="Publisher" Owner="NLM"><PMID Version="3">2</PMID>'
        "<Article><Journal><JournalIssue><PubDate><MedlineDate>n.d.</MedlineDate></PubDate></JournalIssue>"
        "<ISOAbbreviation>Rev Synth</ISOAbbreviation></Journal><ArticleTitle>T</ArticleTitle>"
        '<ELocationID EIdType="pii">S1</ELocationID><ELocationID EIdType="doi" ValidYN="N">10.1/bad</ELocationID>'
        '<ELocationID EIdType="doi" ValidYN="Y"> https://doi.org/10.5555/ABC </ELocationID>'
        '<ArticleDate DateType="Electronic"><Year>2021</Year><Month>02</Month><Day>03</Day></ArticleDate>'
        '</Article><OtherAbstract Type="Publisher" Language="spa"><AbstractText Label="OBJETIVO">Uno.</AbstractText>'
        "<AbstractText>Dos.</AbstractText></OtherAbstract></MedlineCitation></PubmedArticle>"
        '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="x">4</PMID>'
        "<Article><Journal><JournalIssue><PubDate><Year>2020</Year><Month>13</Month></PubDate></JournalIssue></Journal>"
        "<ArticleTitle>U</ArticleTitle><Abstract><AbstractText>Main.</AbstractText></Abstract>"
        '<ArticleDate DateType="Electronic"><Year>2019</Year></ArticleDate></Article>'
        "<MedlineJournalInfo><MedlineTA>Synth J</MedlineTA></MedlineJournalInfo>"
        '<OtherAbstract Language="spa"><AbstractText>Otro.</AbstractText></OtherAbstract>'
        "</MedlineCitation></PubmedArticle>"
    )
    first, second = studies(xml)
    assert (first.abstract, first.pub_date, first.journal) == ("OBJETIVO: Uno.\n\nDos.", "2021-02-03", "Rev Synth")
    assert (first.pmid_version, first.doi) == (3, "10.5555/abc")
    assert (second.abstract, second.pub_date, second.journal) == ("Main.", "2020", "Synth J")
    # NLM's title abbreviation: MedlineTA, else the ISO abbreviation
    assert (first.journal_abbrev, second.journal_abbrev) == ("Rev Synth", "Synth J")
    assert second.pmid_version == 1  # an unreadable Version falls back to 1


# ----------------------------------------------------------------------------------------------
# Hostile and broken input
# ----------------------------------------------------------------------------------------------


def _passwd_lines() -> list[str]:
    try:
        return [line for line in Path("/etc/passwd").read_text().splitlines() if len(line) > 8]
    except OSError:
        return []


def test_billion_laughs_fails_fast():
    started = time.monotonic()
    with pytest.raises(PubmedXMLError) as info:
        list(parse_pubmed_xml(HOSTILE / "billion_laughs.xml"))
    assert time.monotonic() - started < 2
    message = str(info.value)
    # libxml2's amplification guard fires while the title is parsed, before our own DOCTYPE check.
    assert message.startswith("billion_laughs.xml: ")
    assert "Maximum entity amplification factor exceeded" in message or "DOCTYPE declares entities" in message
    assert "lollol" not in message


def test_billion_laughs_as_bytes_without_pubmed_root_is_not_expanded():
    """Even where our DOCTYPE check cannot fire first, libxml2 never expands the bomb."""
    bomb = (HOSTILE / "billion_laughs.xml").read_bytes().replace(b"PubmedArticleSet", b"lolz")
    started = time.monotonic()
    with pytest.raises(PubmedXMLError):
        for record in parse_pubmed_xml(bomb):
            assert "lollol" not in record.title
    assert time.monotonic() - started < 2


def test_xxe_file_entity_is_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-1298")
    variants = [
        (HOSTILE / "xxe_file.xml").read_bytes(),
        (HOSTILE / "xxe_file.xml").read_bytes().replace(b"file:///etc/passwd", secret.as_uri().encode()),
        # Wrapped so no PubmedArticleSet root ever starts: the entity must still stay unexpanded.
        (HOSTILE / "xxe_file.xml").read_bytes().replace(b"PubmedArticleSet", b"Wrapper"),
    ]
    for xml in variants:
        seen: list[str] = []
        with pytest.raises(PubmedXMLError) as info:
            for record in parse_pubmed_xml(xml):
                seen.append(json.dumps([record.title, record.abstract]))
        assert seen == []
        assert "DOCTYPE declares entities (xxe)" in str(info.value)
        seen.append(str(info.value))
        text = "\n".join(seen)
        assert "TOP-SECRET-MARKER" not in text
        assert "root:" not in text
        assert not any(line in text for line in _passwd_lines())


def test_even_a_harmless_internal_entity_is_refused_not_expanded():
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE PubmedArticleSet [<!ENTITY name "EXPANDED">]><PubmedArticleSet>'
        b'<PubmedArticle><MedlineCitation><PMID>1</PMID><Article><ArticleTitle>A &name; B</ArticleTitle>'
        b"</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"
    )
    with pytest.raises(PubmedXMLError, match=r"^<bytes>: DOCTYPE declares entities \(name\)") as info:
        list(parse_pubmed_xml(xml))
    assert info.value.line == 1


class _Listener:
    """A TCP listener on 127.0.0.1 that records whether anything connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.05)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> int:
        time.sleep(0.2)  # let a late connection attempt land before we count
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        return self.connections


@pytest.fixture
def listener():
    server = _Listener()
    yield server
    server.close()


def test_listener_notices_a_connection(listener):
    """The detector itself works: without it the no-connection assertions below prove nothing."""
    host, port = listener.address.split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
    assert listener.close() == 1


def test_xxe_http_entities_open_no_connection(listener):
    template = (HOSTILE / "xxe_http.xml").read_bytes().replace(b"__ADDRESS__", listener.address.encode())
    for xml in (template, template.replace(b"PubmedArticleSet", b"Wrapper")):
        with pytest.raises(PubmedXMLError):
            for record in parse_pubmed_xml(xml):
                assert record.title == "Fetched:"
    assert listener.close() == 0


def test_unknown_dtd_version_parses_offline(listener):
    (study,) = studies(HOSTILE / "unknown_dtd_260101.xml")
    assert study == Study(
        title="Dry needling of the upper trapezius: a synthetic record.",
        pmid="1000008",
        doi="10.5555/synthetic.260101",
        journal="Synthetic journal of dry needling",
        pub_date="2026-01",
        year=2026,
        authors=["Example AB"],
        languages=["eng"],
        publication_types=["Journal Article"],
        medline_status="PubMed-not-MEDLINE",
        date_revised="2026-01-05",
    )
    # The same DOCTYPE pointing at a live local server: the DTD is still never fetched.
    local = (HOSTILE / "unknown_dtd_260101.xml").read_bytes().replace(
        b"https://dtd.nlm.nih.gov/ncbi/pubmed/out/", f"http://{listener.address}/".encode()
    )
    assert studies(local) == [study]
    assert listener.close() == 0


def test_truncated_mid_record_keeps_earlier_records():
    seen: list[str] = []
    with pytest.raises(PubmedXMLError) as info:
        for record in parse_pubmed_xml(HOSTILE / "truncated_mid_record.xml"):
            seen.append(record.pmid)
    assert seen == ["100001" + "0", "100002" + "0", "100003" + "0"]
    error = info.value
    assert (error.name, error.line, error.column) == ("truncated_mid_record.xml", 9, 316)
    assert str(error) == "truncated_mid_record.xml: malformed XML at line 9, column 316: expected '>'"


def test_zero_byte_file():
    with pytest.raises(PubmedXMLError, match=r"^empty\.xml: empty input \(0 bytes\)"):
        list(parse_pubmed_xml(HOSTILE / "empty.xml"))
    with pytest.raises(PubmedXMLError, match=r"^<bytes>: empty input"):
        list(parse_pubmed_xml(b""))


def test_garbage_bytes():
    with pytest.raises(PubmedXMLError) as info:
        list(parse_pubmed_xml(HOSTILE / "garbage.bin"))
    assert (info.value.line, info.value.column) == (1, 1)
    assert str(info.value).startswith("garbage.bin: malformed XML at line 1, column 1: ")


def test_truncated_gzip_keeps_earlier_records():
    seen: list[str] = []
    with pytest.raises(PubmedXMLError) as info:
        for record in parse_pubmed_xml(HOSTILE / "truncated.xml.gz"):
            seen.append(record.pmid)
    assert len(seen) > 100  # whole records before the cut came through, in order
    assert seen == [str(2_000_000 + 2 * i) for i in range(1, len(seen) + 1)]
    assert str(info.value) == (
        f"truncated.xml.gz: unreadable input after {len(seen)} records: "
        "Compressed file ended before the end-of-stream marker was reached"
    )


def test_unexpected_root_with_error_element():
    with pytest.raises(PubmedXMLError, match=r"root element is <eFetchResult>.*ERROR: Empty id list"):
        list(parse_pubmed_xml(b"<eFetchResult><ERROR>Empty id list - nothing todo</ERROR></eFetchResult>"))


# ----------------------------------------------------------------------------------------------
# Small public helpers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "doi"),
    [
        ("10.1056/NEJMoa2028564", "10.1056/nejmoa2028564"),
        ("  https://doi.org/10.1000/ABC ", "10.1000/abc"),
        ("http://dx.doi.org/10.1000/abc", "10.1000/abc"),
        ("doi: 10.1000/abc", "10.1000/abc"),
        ("DOI:10.1000/abc", "10.1000/abc"),
        ("S0140-6736(20)30001-1", None),
        ("10.1000", None),
        ('10.1234/x"onmouseover="alert(1)"', None),  # a hostile feed's prism:doi
        ("10.1000/two words", None),
        ("10.1002/(SICI)1097-4636(199706)35:4<451::AID-JBM6>3.0.CO;2-G",
         "10.1002/(sici)1097-4636(199706)35:4<451::aid-jbm6>3.0.co;2-g"),  # SICI: < and > are real
        ("", None),
        (None, None),
    ],
)
def test_normalize_doi(raw, doi):
    assert normalize_doi(raw) == doi


@pytest.mark.parametrize(
    ("raw", "pmcid"),
    [("PMC7382562", "PMC7382562"), ("pmc7938335.2", "PMC7938335"), ("7382562", "PMC7382562"), ("NIHMS1", None), (None, None)],
)
def test_normalize_pmcid(raw, pmcid):
    assert normalize_pmcid(raw) == pmcid


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("1998 Dec-1999 Jan", "1998-12"),
        ("2000 Spring", "2000"),
        ("2003 Jan 15", "2003-01-15"),
        ("2006 Mar 1", "2006-03-01"),
        ("2001 September", "2001-09"),
        ("2021 Jan-Dec", "2021"),
        ("2020 Dec 28-2021 Jan 3", "2020-12-28"),
        ("1975-1976", "1975"),
        ("2004 Feb 30", "2004-02"),
        ("n.d.", None),
        (None, None),
    ],
)
def test_parse_date_text(text, iso):
    assert parse_date_text(text) == iso


def test_authors_skip_invalid_entries_editors_and_affiliations():
    xml = minimal_set(
        '<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">5</PMID>'
        "<Article><Journal><JournalIssue><PubDate><Year>2020</Year></PubDate></JournalIssue></Journal>"
        '<ArticleTitle>T</ArticleTitle><AuthorList CompleteYN="Y">'
        '<Author ValidYN="Y"><LastName>Gunn</LastName><ForeName>C Chan</ForeName><Initials>CC</Initials>'
        '<Identifier Source="ORCID">0000-0001</Identifier>'
        "<AffiliationInfo><Affiliation>Vancouver, <i>BC</i></Affiliation></AffiliationInfo></Author>"
        '<Author ValidYN="N"><LastName>Wrong</LastName><Initials>W</Initials></Author>'
        "<Author><CollectiveName>IMS <b>Study</b> Group</CollectiveName></Author>"
        "<Author><LastName>Lee</LastName><ForeName>Ji-won</ForeName></Author>"
        "<Author><AffiliationInfo><Affiliation>Nameless</Affiliation></AffiliationInfo></Author>"
        "<Author><LastName>De <i>la</i> Cruz</LastName><Initials>M</Initials></Author>"
        '</AuthorList><AuthorList Type="editors"><Author><LastName>Editor</LastName><Initials>E</Initials></Author>'
        "</AuthorList></Article></MedlineCitation></PubmedArticle>"
    )
    (study,) = studies(xml)
    assert study.authors == ["Gunn CC", "IMS Study Group", "Lee JW", "De la Cruz M"]

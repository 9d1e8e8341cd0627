"""Tests for harvest.medline: real PubMed-format exports read in place from ../shared/data/medline,
a hand-made export for fields they lack, and files that are not MEDLINE at all."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from datafiles import FIXTURES, data_file

from harvest.medline import MedlineError, parse_medline
from harvest.models import Correction, MeshHeading, Study


def medline(name: str) -> Path:
    return data_file("medline", name)


def test_result1_whole_record():
    assert list(parse_medline(medline("pubmed_result1.txt"))) == [
        Study(
            title="The Bio* toolkits--a brief overview.",
            pmid="12230038",
            abstract=(
                "Bioinformatics research is often difficult to do with commercial software. The Open Source "
                "BioPerl, BioPython and Biojava projects provide toolkits with multiple functionality that make it "
                "easier to create customised pipelines or analysis. This review briefly compares the quirks of the "
                "underlying languages and the functionality, documentation, utility and relative advantages of the "
                "Bio counterparts, particularly from the point of view of the beginning biologist programmer."
            ),
            journal="Briefings in bioinformatics",
            journal_abbrev="Brief Bioinform",
            volume="3",
            issue="3",
            pages="296-302",
            pub_date="2002-09",
            year=2002,
            authors=["Mangalam H"],
            languages=["eng"],
            publication_types=["Journal Article"],
            mesh=[
                MeshHeading("Computational Biology", True),
                MeshHeading("Computer Systems"),
                MeshHeading("Humans"),
                MeshHeading("Internet"),
                MeshHeading("Programming Languages", True),
                MeshHeading("Software", True),
                MeshHeading("User-Computer Interface"),
            ],
            medline_status="MEDLINE",
            date_revised="2004-11-17",
            record_source="medline",
        )
    ]


def test_result2_four_records():
    records = list(parse_medline(medline("pubmed_result2.txt")))
    assert [r.pmid for r in records] == ["16403221", "16377612", "14871861", "14630660"]
    assert [r.pub_date for r in records] == ["2006", "2006-03-01", "2004-06-12", "2003-11-22"]
    assert [r.doi for r in records] == [
        "10.1186/1471-2105-7-10",
        "10.1093/bioinformatics/btk021",
        "10.1093/bioinformatics/bth078",
        None,
    ]
    assert [r.date_revised for r in records] == [None, "2006-11-15", "2006-11-15", "2006-11-15"]
    first = records[0]
    assert first.pmcid == "PMC1373603"
    assert first.authors == ["Casbon JA", "Crooks GE", "Saqi MA"]
    assert first.publication_types == ["Evaluation Studies", "Journal Article"]
    assert first.abstract.startswith("BACKGROUND: Benchmarking algorithms in structural bioinformatics often involves the")
    assert "The ASTRAL compendium provides" in first.abstract and "  " not in first.abstract
    # The title wrapped over two lines in the file.
    assert records[1].title == "GenomeDiagram: a python package for the visualization of large-scale genomic data."
    assert records[3].mesh[3] == MeshHeading("Information Storage and Retrieval", False, [("methods", True), ("standards", True)])
    assert all(r.record_source == "medline" and r.pmid_version == 1 for r in records)


def test_result3_wrapped_mesh_line_and_lid_doi():
    (record,) = parse_medline(medline("pubmed_result3.txt"))
    assert record.pmid == "23039619"
    assert record.mesh[1] == MeshHeading(
        "High-Intensity Focused Ultrasound Ablation",
        False,
        [("adverse effects", False), ("instrumentation", False), ("methods", True)],
    )
    assert record.doi == "10.1118/1.4748329"
    assert (record.pub_date, record.year, record.journal) == ("2012-10", 2012, "Medical physics")
    assert record.authors == ["Qiao S", "Shen G", "Bai J", "Chen Y"]


def test_source_kinds_and_line_endings_agree(tmp_path):
    path = medline("pubmed_result2.txt")
    expected = list(parse_medline(path))
    crlf = tmp_path / "export.nbib"
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().lstrip(b"\n"))
    for source in (str(path), crlf, bom, io.StringIO(path.read_text())):
        assert list(parse_medline(source)) == expected


def test_synthetic_export_corrections_keywords_and_groups():
    retracted, ranged = parse_medline(FIXTURES / "medline_synthetic.nbib")
    assert retracted == Study(
        title="Dry needling versus sham needling for chronic neck pain: a synthetic randomized controlled trial.",
        pmid="90000006",
        doi="10.5555/synth.2020.0042",
        pmcid="PMC7000042",
        abstract=(
            "BACKGROUND: Synthetic text for a parser test. METHODS: Forty synthetic patients were randomized. "
            "RESULTS: Nothing real happened. CONCLUSIONS: None."
        ),
        journal="Synthetic pain journal",
        journal_abbrev="Synth Pain J",
        volume="12",  # VI
        issue="3",  # IP
        pages="101-110",  # PG
        pub_date="2020-03-15",
        year=2020,
        authors=["Needle NA", "Point T", "Synthetic Needling Trialists Group"],
        languages=["eng"],
        publication_types=["Journal Article", "Randomized Controlled Trial", "Retracted Publication"],
        mesh=[
            MeshHeading("Chronic Pain", False, [("therapy", True)]),
            MeshHeading("Dry Needling", True, [("adverse effects", False), ("methods", True)]),
            MeshHeading("Humans"),
            MeshHeading(
                "Neck Pain",
                True,
                [
                    ("diagnosis", False),
                    ("physiopathology", False),
                    ("rehabilitation", False),
                    ("therapy", True),
                    ("prevention & control", False),
                ],
            ),
            MeshHeading("Trigger Points"),
        ],
        keywords=[
            "dry needling",
            "myofascial trigger point of the upper trapezius muscle in office workers with chronic neck pain",
        ],
        medline_status="MEDLINE",
        date_revised="2023-11-04",
        corrections=[
            # Wrapped over two lines in the file: still one link, PMID included.
            Correction("CommentIn", "90000008", "Synth Pain J. 2020 Jun 1;12(6):300-301. doi: 10.5555/synth.2020.0099"),
            Correction("ErratumIn", "90000010", "Synth Pain J. 2020 Apr 15;12(4):200"),
            Correction("RetractionIn", "90000012", "Synth Pain J. 2021 Jan 15;13(1):1"),
        ],
        record_source="medline",
    )
    assert retracted.retracted
    assert (ranged.pub_date, ranged.year, ranged.journal, ranged.languages) == ("1998-12", 1998, "Synth Pain J", ["eng", "ger"])
    assert (ranged.doi, ranged.date_revised, ranged.medline_status) == ("10.5555/synth.1998", "2025-01-02", "Publisher")


# ----------------------------------------------------------------------------------------------
# Not MEDLINE: fail loudly, naming the file, record and line
# ----------------------------------------------------------------------------------------------


def test_pubmed_xml_passed_by_mistake():
    with pytest.raises(MedlineError) as info:
        list(parse_medline(data_file("eutils", "biopython", "pubmed1.xml")))
    error = info.value
    assert (error.name, error.record, error.line) == ("pubmed1.xml", 1, 1)
    assert str(error).startswith("pubmed1.xml: record 1, line 1: looks like XML/HTML, not MEDLINE text")


def test_gzipped_xml_passed_by_mistake():
    with pytest.raises(MedlineError, match=r"^pubmed21n1298-even\.xml\.gz: record 1, line 1: looks like XML"):
        list(parse_medline(data_file("pubmed", "pubmed21n1298-even.xml.gz")))


def test_a_gzipped_export_is_read_and_imported_as_medline(tmp_path):
    """Exports get compressed for transfer: `harvest import` must not call them bad XML."""
    from harvest import ingest

    plain = medline("pubmed_result2.txt")
    packed = tmp_path / "pubmed_result2.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert ingest.sniff_format(packed) == "medline"
    assert list(ingest.iter_file(packed)) == list(parse_medline(plain)) != []


def test_binary_file():
    with pytest.raises(MedlineError, match=r"^garbage\.bin: record 1, line 1: not UTF-8 text"):
        list(parse_medline(FIXTURES / "hostile" / "garbage.bin"))
    with pytest.raises(MedlineError, match="binary data"):
        list(parse_medline(io.StringIO("PMID- 1\nTI  - a\x00b\n")))


def test_empty_file():
    with pytest.raises(MedlineError, match=r"^empty\.xml: no MEDLINE records found"):
        list(parse_medline(FIXTURES / "hostile" / "empty.xml"))


def test_efetch_text_error_body():
    """efetch without retmode answers an unavailable PMID with a text line (real)."""
    with pytest.raises(MedlineError, match=r"not a MEDLINE field line"):
        list(parse_medline(data_file("eutils", "errors", "efetch_pmid_not_available.txt")))


def test_junk_in_a_later_record_names_that_record_after_yielding_the_first(tmp_path):
    good = medline("pubmed_result1.txt").read_text().strip("\n")
    broken = tmp_path / "broken.txt"
    broken.write_text(good + "\n\nPMID- 2\nTI  - fine\nThis line is not a field\n")
    seen = []
    with pytest.raises(MedlineError) as info:
        for record in parse_medline(broken):
            seen.append(record.pmid)
    assert seen == ["12230038"]
    assert (info.value.record, info.value.line) == (2, good.count("\n") + 5)
    assert "'This line is not a field'" in str(info.value)


def test_record_without_pmid_and_stray_continuation():
    with pytest.raises(MedlineError, match=r"<stream>: record 1, line 2: record has no PMID"):
        list(parse_medline(io.StringIO("TI  - no id\nAU  - Someone S\n")))
    with pytest.raises(MedlineError, match="continuation line before any field"):
        list(parse_medline(io.StringIO("      wrapped text first\nPMID- 1\n")))
    with pytest.raises(MedlineError, match="not a MEDLINE field line"):
        list(parse_medline(io.StringIO("PMID- 1\nAU - Misaligned\n")))


def test_medline_text_passed_as_str_is_refused():
    with pytest.raises(TypeError, match="StringIO"):
        list(parse_medline("PMID- 1\nTI  - x\n"))


# ----------------------------------------------------------------------------------------------
# A download cut at a line boundary: the partial last record is refused, the ones before kept
# ----------------------------------------------------------------------------------------------

REAL_EXPORTS = ["pubmed_result1.txt", "pubmed_result2.txt", "pubmed_result3.txt"]


def _cut_after(text: str, line_prefix: str, occurrence: int = -1) -> str:
    """``text`` cut just after one of its lines starting with ``line_prefix``."""
    lines = text.splitlines(keepends=True)
    where = [i for i, line in enumerate(lines) if line.startswith(line_prefix)][occurrence]
    return "".join(lines[: where + 1])


def test_a_cut_export_keeps_the_records_before_and_names_the_cut_one(tmp_path):
    cut = tmp_path / "export.nbib"
    cut.write_text(_cut_after(medline("pubmed_result2.txt").read_text(), "AB  - "))
    seen = []
    with pytest.raises(MedlineError) as info:
        for record in parse_medline(cut):
            seen.append(record.pmid)
    assert seen == ["16403221", "16377612", "14871861"]
    assert (info.value.name, info.value.record, info.value.pmid) == ("export.nbib", 4, "14630660")
    assert str(info.value).startswith("export.nbib: record 4, line ")
    assert "the last record (PMID 14630660) is incomplete: it stops at its AB field" in str(info.value)


@pytest.mark.parametrize("name", REAL_EXPORTS)
def test_every_cut_of_a_real_export_is_refused_unless_it_falls_after_an_so_line(name):
    """Cut each real export after every line: the result is either every record up to an SO
    line (a cut between records cannot be seen) or an error naming the record it stopped in;
    the whole file always reads."""
    text = medline(name).read_text()
    complete = [s.pmid for s in parse_medline(medline(name))]
    lines = text.splitlines(keepends=True)
    for n in range(1, len(lines) + 1):
        head = "".join(lines[:n])
        before = sum(1 for line in lines[:n] if line.startswith("SO  - "))
        ends_a_record = lines[n - 1].startswith("SO  - ") or (before and not lines[n - 1].strip())
        if n == 1 and not lines[0].strip():
            continue  # only the leading blank line: an empty file, refused as such
        try:
            got = [s.pmid for s in parse_medline(io.StringIO(head), name=name)]
        except MedlineError as exc:
            assert not ends_a_record, (name, n)
            assert exc.pmid == complete[before] and exc.record == before + 1, (name, n)
            assert f"the last record (PMID {complete[before]}) is incomplete" in str(exc)
        else:
            assert ends_a_record and got == complete[:before], (name, n)


def test_a_book_record_ends_with_its_bookaccession_not_an_so_line():
    """PubMed's export of a Bookshelf chapter has no SO line: its last line is the AID
    [bookaccession] (hand-made, in the shape of the real exports of PMIDs 20301770 and
    21249755, GeneReviews and "Cancer Syndromes" chapters)."""
    book = (
        "PMID- 90000020\nSTAT- Publisher\nPB  - Synthetic Press\nDP  - 2009\n"
        "TI  - A synthetic book chapter on trigger points.\nBTI - Synthetic Reviews\n"
        "FAU - Needle, Nora\nAU  - Needle N\nLA  - eng\nPT  - Book Chapter\n"
        "PL  - Bethesda (MD)\nEDAT- 2011/01/21 06:00\nCRDT- 2011/01/21 06:00\n"
        "AID - NBK900020 [bookaccession]\n"
    )
    journal = medline("pubmed_result1.txt").read_text()
    for text in (book, journal + "\n" + book, book + "\n" + journal.lstrip("\n")):
        assert len(list(parse_medline(io.StringIO(text)))) == text.count("PMID- ")
    with pytest.raises(MedlineError, match=r"PMID 90000020\) is incomplete: it stops at its CRDT"):
        list(parse_medline(io.StringIO(_cut_after(book, "CRDT"))))


def test_a_cut_export_imports_the_records_before_and_fails_the_file(tmp_path):
    """Plain and gzipped alike: the run keeps the complete records and says which one was cut."""
    from harvest import ingest, store

    text = _cut_after(medline("pubmed_result2.txt").read_text(), "MH  - ")
    plain = tmp_path / "cut.nbib"
    plain.write_text(text)
    packed = tmp_path / "cut.txt.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        db = store.open_db(tmp_path / f"{path.name}.db")
        result = ingest.import_file(db, path)
        assert result.counts.found == 3
        assert result.error.startswith(f"{path.name}: record 4, line ")
        assert "PMID 14630660" in result.error
        assert [r["pmid"] for r in db.query("SELECT pmid FROM studies ORDER BY pmid")] == [
            "14871861", "16377612", "16403221"]
        assert db["imported_files"].count == 0  # not recorded as imported: a re-import reads it


def test_a_cut_gzip_stream_names_the_file_and_the_record(tmp_path):
    complete = [s.pmid for s in parse_medline(medline("pubmed_result2.txt"))]
    data = gzip.compress(medline("pubmed_result2.txt").read_bytes())
    cut = tmp_path / "export.txt.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    seen = []
    with pytest.raises(MedlineError) as info:
        for record in parse_medline(cut):
            seen.append(record.pmid)
    assert 0 < len(seen) < 4 and seen == complete[: len(seen)]
    assert str(info.value).startswith(f"export.txt.gz: record {len(seen) + 1}, line ")
    assert "the compressed file ends early" in str(info.value)
    assert info.value.pmid == complete[len(seen)]

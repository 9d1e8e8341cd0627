"""The notebooks and the HTML report, executed against fixture databases of real records.

Each notebook runs in a real kernel (nbclient); the report is opened in headless Chromium
(Debian's ``chromium``, driven by Playwright's Python package) and a screenshot is kept in
``tests/artifacts/``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from harvest import demo, report, store, synthesis, tagging
from harvest.cli import cli

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# figures: overview 4; each intervention 3 (per year, participants, review timeline)
OVERVIEW_FIGURES = 4
INTERVENTION_FIGURES = 3


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    db = demo.build_demo(path, on_changed=tagging.tag_studies)
    # one retraction, as the harvester flags it, so the report shows the retracted section
    with store.write_tx(db):
        db.execute("UPDATE studies SET retracted = 1 WHERE pmid = '17718644'")
    db.conn.close()
    return path


@pytest.fixture(scope="module")
def demo_report(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report.build_report(demo_db, tmp_path_factory.mktemp("reports"))


def _outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if mime in o.get("data", {})]  # fmt: skip


def _errors(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]  # fmt: skip


def test_notebooks_are_stored_without_outputs() -> None:
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in paths} >= {report.OVERVIEW, report.PER_INTERVENTION}
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, p.name


def test_overview_notebook_executes(demo_db: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / report.OVERVIEW, as_version=4)
    report.execute_notebook(nb, demo_db)
    assert not _errors(nb)
    assert len(_outputs(nb, "image/png")) == OVERVIEW_FIGURES
    html = "\n".join(_outputs(nb, "text/html"))
    assert "Data last updated" in html and "Verdict (rule)" in html
    assert "<table>" in html and "V1 insufficient evidence" in html  # overview table, rules
    assert "not medical advice" in html


def test_intervention_notebook_executes_with_a_parameter(demo_db: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / report.PER_INTERVENTION, as_version=4)
    nb.cells = report._with_parameters(nb, {"INTERVENTION": "prolotherapy"})
    report.execute_notebook(nb, demo_db)
    assert not _errors(nb)
    assert len(_outputs(nb, "image/png")) == INTERVENTION_FIGURES
    html = "\n".join(_outputs(nb, "text/html"))
    assert "<h2>Prolotherapy</h2>" in html
    assert "Systematic reviews and meta-analyses" in html or "Randomized trials" in html
    assert "https://pubmed.ncbi.nlm.nih.gov/" in html  # key studies link to PubMed
    # its own reports of harm only (the demo has none on prolotherapy)
    assert "<h3>Prolotherapy</h3><p>None found.</p>" in html and "<h3>Dry needling</h3>" not in html


def test_report_is_self_contained_with_facts_at_the_top(demo_report: Path) -> None:
    assert demo_report.name == "does_it_work-demo.html"
    html = demo_report.read_text("utf-8")
    imgs = re.findall(r"<img\b[^>]*>", html)
    n_figures = OVERVIEW_FIGURES + INTERVENTION_FIGURES * len(synthesis.FOCUS_INTERVENTIONS)
    assert len(imgs) == n_figures
    assert all('src="data:image/png;base64,' in i for i in imgs)
    # Each chart is described by its titles for screen readers, not nbconvert's placeholder.
    alts = [re.search(r'alt="([^"]*)"', i)[1] for i in imgs]
    assert "Evidence map: studies per intervention and condition" in alts
    # the overview's per-year chart is about the three interventions only, and says so
    assert "Studies on IMS, dry needling or prolotherapy: per year by design" in alts
    assert all(a and a != "chart" and "No description" not in a for a in alts), alts
    assert not re.search(r"<(script|link|img)\b[^>]*(src|href)=[\"']?https?:", html)
    body = html[html.index("<body"):]
    first = body.index("Data last updated")
    # 52 sample records, one of them retracted: the header counts the 51 others
    assert first < body.index("Evidence map") and "Studies:</b> 51 " in body
    assert "not medical advice" in body
    assert "PMID 17718644" in body[body.index("Retracted studies"):]  # listed apart
    assert "Traceback" not in html


def test_header_study_count_leaves_retracted_studies_out(demo_db: Path) -> None:
    """The header says retracted studies are "left out of every count": its study count too."""
    db = store.open_db(demo_db)
    try:
        synth = synthesis.synthesize(db)
        html = report.facts_html(synth, db)
        live = [s for s in synth.studies if not s.retracted]
    finally:
        db.conn.close()
    assert len(synth.studies) == 52 and len(live) == 51
    assert synth.facts["studies"] == 51 and synth.facts["retracted"] == 1
    assert f"<b>Studies:</b> {len(live)} (not counting retracted ones;" in html
    assert "(left out of every count): 1;" in html


def test_header_counts_only_studies_on_the_three_interventions(demo_db: Path, demo_report: Path) -> None:
    """The header's review and trial counts are over the studies on IMS, dry needling or
    prolotherapy (the sample's acupuncture and massage RCTs and botulinum-toxin review are not
    evidence on them), and agree with the per-intervention sections below them."""
    db = store.open_db(demo_db)
    try:
        synth = synthesis.synthesize(db)
        header = report.facts_html(synth, db)
    finally:
        db.conn.close()
    focus = [s for s in synth.studies if not s.retracted
             and set(s.interventions) & set(synthesis.FOCUS_INTERVENTIONS)]  # fmt: skip
    reviews, trials = sum(s.is_review for s in focus), sum(s.is_trial for s in focus)
    live = [s for s in synth.studies if not s.retracted]
    assert trials < sum(s.is_trial for s in live) and reviews < sum(s.is_review for s in live)
    assert (f"<b>studies on IMS, dry needling or prolotherapy:</b> {len(focus)} (by intervention: "
            in header)
    assert (f"Among the studies on IMS, dry needling or prolotherapy: <b>systematic reviews and "
            f"meta-analyses:</b> {reviews}; <b>randomized trials:</b> {trials}<br>") in header
    # the report: the header and the per-intervention sections agree (no sample study is
    # tagged with two of the interventions, so the sections add up to the header's counts)
    html = demo_report.read_text("utf-8")
    assert re.search(rf"<b>randomized trials:</b> {trials}<br/?>", html)
    sections = re.findall(r"<h2>[^<]*</h2>\s*<p>\d+ stud(?:y|ies) in \d+ condition groups?; "
                          r"(\d+) systematic reviews? or meta-analys[ie]s, (\d+) randomized trials?;", html)
    assert len(sections) == len(synthesis.FOCUS_INTERVENTIONS), sections
    assert sum(int(r) for r, _ in sections) == reviews and sum(int(t) for _, t in sections) == trials


def test_overview_table_says_what_is_unknown(demo_db: Path) -> None:
    """No abstracts: the table says the participants are unknown and how many trials have no
    comparator identified, instead of "0 (7 no size)" and "0%"."""
    db = store.open_db(demo_db)
    try:
        synth = synthesis.synthesize(db)
    finally:
        db.conn.close()
    table = report.overview_table_html(synth)
    assert "<th>Sham/placebo-controlled RCTs</th>" in table
    cells = [c for c in synth.cells if c.trials]
    assert cells and all(not c.trials_with_size for c in cells)  # title-only sample
    for c in cells:
        n, unknown = len(c.trials), c.trials_without_comparator
        row = next(r for r in table.split("<tr>") if r.startswith(
            f"<td>{synthesis.label(c.intervention)}</td><td>{synthesis.label(c.condition)}</td>"))
        assert f'<td class="num">unknown ({n} RCT{"s" if n > 1 else ""})</td>' in row
        sham = f"{c.sham_controlled} of {n}" + (f" ({unknown} unknown)" if unknown else "")
        assert f'<td class="num">{sham}</td>' in row
    assert "no size)" not in table and "%" not in table


def test_reports_of_harm_list_the_safety_signals(demo_db: Path, demo_report: Path) -> None:
    db = store.open_db(demo_db)
    try:
        synth = synthesis.synthesize(db)
    finally:
        db.conn.close()
    # the demo's two pneumothorax case reports and its adverse-event review, newest first
    assert [(s.year, s.title[:30]) for s in synth.harm_reports("dry_needling")] == [
        (2022, '"Acupuncture-D" - Bilateral Pn'), (2020, "Adverse events in dry needling"),
        (2019, "Dry Needling–Induced Pneumotho")]
    assert synth.harm_reports("prolotherapy") == []
    html = demo_report.read_text(encoding="utf-8")
    section = html[html.index("Reports of harm"):html.index("Retracted studies")]
    assert "Bilateral Pneumothoraces Following Dry Needling" in section and "None found." in section


def test_not_assessed_verdicts_have_a_visible_marker(demo_report: Path) -> None:
    html = demo_report.read_text(encoding="utf-8")
    assert "not assessed" in html and "border-left-color:#FFFFFF" not in html  # white on white


def test_report_in_headless_chromium(demo_report: Path) -> None:
    pw = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(demo_report.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            heading = page.inner_text("h1")
        finally:
            browser.close()
    assert len(images) == OVERVIEW_FIGURES + INTERVENTION_FIGURES * 3
    assert all(ok and w > 200 and h > 100 for ok, w, h in images), images
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert "Does it work?" in heading
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_cli_report_on_an_empty_database(tmp_path: Path) -> None:
    db_path = tmp_path / "empty.db"
    store.open_db(db_path).conn.close()
    result = CliRunner().invoke(cli, ["report", "--db", str(db_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "does_it_work-empty.html"
    assert f"Report written to {out}" in result.output
    html = out.read_text("utf-8")
    assert "Studies:</b> 0" in html and "No tagged studies of these interventions yet." in html
    assert len(re.findall(r"<img\b", html)) == OVERVIEW_FIGURES + INTERVENTION_FIGURES * 3


def test_default_folder_is_reports_beside_the_database(tmp_path: Path) -> None:
    db_path = tmp_path / "db" / "evidence.db"
    store.open_db(db_path).conn.close()
    out = report.build_report(db_path)
    assert out == tmp_path / "db" / "reports" / "does_it_work-evidence.html" and out.exists()
    # the notebooks ran against this database: the report names it
    html = out.read_text("utf-8")
    assert f"<b>Database:</b> <code>{db_path.resolve()}</code>" in html and "Studies:</b> 0" in html


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match="no such database"):
        report.build_report(tmp_path / "nope.db", tmp_path)
    result = CliRunner().invoke(cli, ["report", "--db", str(tmp_path / "nope.db")])
    assert result.exit_code == 1 and "no such database" in result.output

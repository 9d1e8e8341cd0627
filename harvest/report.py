"""The "Does it work?" report: the notebooks executed against a database, as one
self-contained HTML file (images embedded, no external scripts or styles).

:func:`build_report` merges ``notebooks/does_it_work.ipynb`` (the overview) with one copy of
``notebooks/intervention.ipynb`` per intervention (its ``parameters`` cell replaced, as
papermill would), executes the result with nbclient in a fresh kernel whose ``HARVEST_DB``
names the database, and converts it with nbconvert (code hidden). The notebooks stay thin:
they call :mod:`harvest.synthesis`, :mod:`harvest.charts` and the display helpers below,
and open in Jupyter against any database (``HARVEST_DB``).

Nothing here prints; the CLI (``harvest report`` in ``harvest/cli.py``) does.
"""

from __future__ import annotations

import contextlib
import copy
import html
import io
import os
import re
import sqlite3
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harvest import shared_dir, synthesis
from harvest.store import StoreError, open_db
from harvest.synthesis import Cell, Study, Synthesis, label

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sqlite_utils import Database

__all__ = [
    "REPORT_NAME",
    "ReportError",
    "build_report",
    "execute_notebook",
    "notebook_db",
    "notebooks_dir",
]

REPORT_NAME = "does_it_work-{stem}.html"  # one report per database: demo, evidence, ...
OVERVIEW = "does_it_work.ipynb"
PER_INTERVENTION = "intervention.ipynb"
DEFAULT_DB = "db/evidence.db"
KERNEL = "python3"


class ReportError(Exception):
    """The report could not be built (missing notebook, a cell failed, no kernel)."""


# ----------------------------------------------------------------------- for notebooks


class Html(str):
    """A string that Jupyter shows as HTML."""

    def _repr_html_(self) -> str:
        return str(self)


def notebook_db() -> Database:
    """The database a notebook reads: ``$HARVEST_DB``, else ``db/evidence.db``."""
    path = Path(os.environ.get("HARVEST_DB") or DEFAULT_DB)
    if not path.is_absolute() and not path.exists():  # Jupyter's cwd is notebooks/
        beside = notebooks_dir().parent / path
        path = beside if beside.exists() else path
    return open_db(path, create=False, read_only=True)  # a shared snapshot is fine


def png(fig: Figure, alt: str | None = None) -> Any:
    """A figure as an embeddable PNG image for ``display`` (works under any backend), with
    its titles as the alternative text a screen reader speaks unless ``alt`` is given."""
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    titles = [fig.get_suptitle(), *(ax.get_title(loc) for ax in fig.axes for loc in ("left", "center"))]
    return Image(data=buf.getvalue(), format="png", alt=alt or "; ".join(t for t in titles if t) or "chart")


def _e(text: Any) -> str:
    return html.escape(str(text)) if text is not None else ""


def _link(s: Study) -> str:
    ident = f"PMID {s.pmid}" if s.pmid else f"doi:{s.doi}"
    links = []
    if s.pmid:
        links.append(f'<a href="https://pubmed.ncbi.nlm.nih.gov/{_e(s.pmid)}/">{_e(ident)}</a>')
    if s.doi:
        links.append(f'<a href="https://doi.org/{_e(s.doi)}">{"DOI" if s.pmid else _e(ident)}</a>')
    return " · ".join(links) or "no PMID or DOI"


_CSS = """
<style>
.diw { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 15px;
       line-height: 1.45; color: #1a1a1a; max-width: 1100px; }
.diw table { border-collapse: collapse; margin: .4em 0 1em; font-size: 14px; }
.diw table th, .diw table td { border-bottom: 1px solid #ddd; padding: 4px 8px;
                   text-align: left !important; vertical-align: top; }
.diw th { background: #f3f3f3; }
.diw table td.num { text-align: right !important; font-variant-numeric: tabular-nums; }
.diw .facts { background: #f5f7fa; border: 1px solid #d0d7e2; padding: 10px 14px;
              border-radius: 6px; }
.diw .disclaimer { background: #fff8e1; border-left: 4px solid #E69F00; padding: 8px 12px; }
.diw .verdict { border-left: 6px solid #BBBBBB; padding: 6px 12px; margin: .5em 0;
                background: #fafafa; }
.diw .verdict b.label { font-size: 16px; }
.diw .rule { color: #555; font-size: 13px; }
.diw ul { margin: .3em 0 .3em 1.2em; padding: 0; }
.diw .caveat { color: #7a3b00; }
.diw h2, .diw h3 { margin: .8em 0 .3em; }
</style>
"""


def facts_html(synth: Synthesis, db: Database | None = None) -> Html:
    """The top of the report: database, harvest date, counts, and the disclaimer."""
    f = synth.facts
    where = ""
    if db is not None:
        try:
            name = db.execute("PRAGMA database_list").fetchone()[2]
            where = f"<b>Database:</b> <code>{_e(name)}</code><br>"
        except sqlite3.Error:  # the path is a courtesy, never a failure
            where = ""
    years = f"{f['first_year']}–{f['last_year']}" if f["first_year"] else "none"
    per_iv = ", ".join(f"{label(iv)} {n}" for iv, n in f["by_intervention"].items())
    scope = synthesis.scope_text(f["interventions"])
    return Html(
        _CSS + '<div class="diw"><div class="facts">'
        f"{where}<b>Data last updated</b> (harvest, import or demo): {_e(f['harvested'] or 'never')}<br>"
        f"<b>Studies:</b> {f['studies']} (not counting retracted ones; publication years {years}); "
        f"<b>studies on {_e(scope)}:</b> {f['focus_studies']} (by intervention: {_e(per_iv)})<br>"
        f"Among the studies on {_e(scope)}: <b>systematic reviews and meta-analyses:</b> "
        f"{f['reviews']}; <b>randomized trials:</b> {f['trials']}<br>"
        f"<b>Retracted</b> (left out of every count): {f['retracted']}; withdrawn records: "
        f"{f['deleted']}<br>"
        f"<b>Tag rule set:</b> {_e(f['ruleset_version'] or 'none (no tags yet)')}; "
        f"report generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        f'</div><p class="disclaimer">{_e(synthesis.DISCLAIMER)}</p></div>'
    )


def _verdict_block(cell: Cell) -> str:
    from harvest.charts import VERDICT_COLOURS

    v = cell.verdict
    colour = VERDICT_COLOURS.get(v.label, "#BBBBBB")
    if colour.upper() == "#FFFFFF":  # "not assessed" is white in the chart (with an outline)
        colour = "#999999"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in v.reasons)
    caveats = "".join(f'<li class="caveat">{_e(c)}</li>' for c in v.caveats)
    return (
        f'<div class="verdict" style="border-left-color:{colour}">'
        f'<b class="label">{_e(v.label)}</b> '
        f'<span class="rule">(rule {_e(v.rule_id)}: {_e(v.rule)})</span>'
        f"<ul>{reasons}{caveats}</ul></div>"
    )


def overview_table_html(synth: Synthesis) -> Html:
    """One row per intervention × condition: studies, reviews, RCTs, participants, verdict."""
    if not synth.cells:
        return Html('<div class="diw"><p>No tagged studies of these interventions yet.</p></div>')
    rows = []
    for c in synth.cells:
        rows.append(
            f"<tr><td>{_e(label(c.intervention))}</td><td>{_e(label(c.condition))}</td>"
            f'<td class="num">{c.n_studies}</td><td class="num">{len(c.reviews)}</td>'
            f'<td class="num">{len(c.trials)}</td>'
            f'<td class="num">{_e(_participants_cell(c))}</td>'
            f'<td class="num">{_e(_sham_cell(c))}</td><td class="num">{len(c.newer_trials)}</td>'
            f'<td class="num">{len(c.retracted)}</td><td>{_e(c.verdict.label)} '
            f'<span class="rule">({_e(c.verdict.rule_id)})</span></td></tr>'
        )
    head = (
        "<tr><th>Intervention</th><th>Condition</th><th>Studies</th><th>Reviews</th><th>RCTs</th>"
        "<th>Randomized participants</th><th>Sham/placebo-controlled RCTs</th>"
        "<th>Trials after newest review</th><th>Retracted (excluded)</th><th>Verdict (rule)</th></tr>"
    )
    return Html(f'<div class="diw"><table>{head}{"".join(rows)}</table></div>')


def _participants_cell(c: Cell) -> str:
    """Randomized participants as far as known: "70", "unknown (7 RCTs)", "125 in 3 of 4 RCTs"."""
    if not c.trials:
        return "–"
    if c.randomized_participants is None:
        return f"unknown ({_n(len(c.trials), 'RCT')})"
    if c.trials_without_size:
        return f"{c.randomized_participants} in {c.trials_with_size} of {_n(len(c.trials), 'RCT')}"
    return str(c.randomized_participants)


def _sham_cell(c: Cell) -> str:
    """Trials tagged sham/placebo-controlled out of all, and how many comparators are unknown."""
    if not c.trials:
        return "–"
    unknown = c.trials_without_comparator
    return f"{c.sham_controlled} of {len(c.trials)}" + (f" ({unknown} unknown)" if unknown else "")


def intervention_header_html(synth: Synthesis, intervention: str) -> Html:
    studies = synth.studies_for(intervention)
    cells = synth.cells_for(intervention)
    retracted = [s for s in synth.studies_for(intervention, include_retracted=True) if s.retracted]
    return Html(
        f'{_CSS}<div class="diw"><h2>{_e(label(intervention))}</h2>'
        f"<p>{_n(len(studies), 'study', 'studies')} in {_n(len(cells), 'condition group')}; "
        f"{_n(sum(1 for s in studies if s.is_review), 'systematic review or meta-analysis', 'systematic reviews or meta-analyses')}, "
        f"{_n(sum(1 for s in studies if s.is_trial), 'randomized trial')}; "
        f"{len(retracted)} retracted (left out).</p></div>"
    )


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _study_table(studies: Sequence[Study], *, trials: bool) -> str:
    if not studies:
        return ""
    head = "<tr><th>Year</th><th>Study</th><th>Design</th>"
    head += "<th>Participants</th><th>Comparators</th>" if trials else ""
    head += "<th>Conclusion</th><th>Link</th></tr>"
    rows = []
    for s in studies:
        design = label(s.design) if s.design else "not tagged"  # label(None) speaks of conclusions
        row = f'<tr><td>{_e(s.year or "n.d.")}</td><td>{_e(s.title)}</td><td>{_e(design)}</td>'
        if trials:
            size = s.sample_size if s.sample_size is not None else "not extracted"
            comps = ", ".join(label(c) for c in s.comparators) or "not tagged"
            row += f'<td class="num">{_e(size)}</td><td>{_e(comps)}</td>'
        row += f"<td>{_e(label(s.conclusion))}</td><td>{_link(s)}</td></tr>"
        rows.append(row)
    return f"<table>{head}{''.join(rows)}</table>"


def cells_html(synth: Synthesis, intervention: str) -> Html:
    """Per condition: the verdict with its reasons, the key reviews and trials with links."""
    cells = synth.cells_for(intervention)
    if not cells:
        return Html(f'<div class="diw"><p>No tagged studies of {_e(label(intervention))} yet.</p></div>')
    parts = ['<div class="diw">']
    for c in cells:
        parts.append(f"<h3>{_e(c.title)}</h3>{_verdict_block(c)}")
        if c.reviews:
            parts.append("<b>Systematic reviews and meta-analyses</b>" + _study_table(c.reviews, trials=False))
        if c.trials:
            parts.append("<b>Randomized trials</b>" + _study_table(c.trials, trials=True))
        if c.retracted:
            parts.append("<b>Retracted (not counted)</b>" + _study_table(c.retracted, trials=False))
    parts.append("</div>")
    return Html("".join(parts))


def harms_html(synth: Synthesis, interventions: Sequence[str] | None = None) -> Html:
    """Per intervention (default: the synthesis's), the studies whose title names a harm of
    the treatment."""
    parts = ['<div class="diw"><p>Studies whose title names a harm of the treatment '
             "(pneumothorax, an adverse event, a complication, a nerve injury…), newest first. "
             "A report of harm shows that it can happen, not how often: trials' adverse-event "
             "rates are not read, and a harm named only in an abstract is not listed.</p>"]
    for iv in synth.interventions if interventions is None else interventions:
        found = synth.harm_reports(iv)
        parts.append(f"<h3>{_e(label(iv))}</h3>")
        parts.append(_study_table(found, trials=False) if found else "<p>None found.</p>")
    parts.append("</div>")
    return Html("".join(parts))


def retracted_html(synth: Synthesis) -> Html:
    if not synth.retracted:
        return Html('<div class="diw"><p>No retracted study in this database.</p></div>')
    return Html('<div class="diw"><p>These studies are retracted; they are listed here and '
                "counted nowhere else.</p>" + _study_table(synth.retracted, trials=False) + "</div>")  # fmt: skip


def rules_html() -> Html:
    from harvest.synthesis import CAVEAT_RULES, VERDICT_RULES

    verdicts = "".join(f"<li><b>{_e(r.id)} {_e(r.label)}</b>: {_e(r.when)}</li>" for r in VERDICT_RULES)
    caveats = "".join(f"<li><b>{_e(cid)}</b> {_e(text)}</li>" for cid, text, _ in CAVEAT_RULES)
    return Html(
        '<div class="diw"><p>Verdicts come from these rules, applied in order; the first that '
        f"applies gives the verdict.</p><ol>{verdicts}</ol><p>Caveats are added whenever they "
        f"hold; they never change the verdict.</p><ul>{caveats}</ul></div>"
    )


# ----------------------------------------------------------------------------- building


def notebooks_dir() -> Path:
    """The project's ``notebooks/`` folder (see :func:`harvest.shared_dir`)."""
    return shared_dir("notebooks")


def _read(path: Path) -> Any:
    import nbformat

    if not path.is_file():
        raise ReportError(f"{path}: notebook not found")
    return nbformat.read(path, as_version=4)


def _parameters_cell(params: dict[str, Any]) -> Any:
    import nbformat

    src = "# Parameters injected by harvest.report\n" + "\n".join(
        f"{k} = {v!r}" for k, v in params.items()
    )
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def _with_parameters(nb: Any, params: dict[str, Any]) -> list[Any]:
    """The notebook's cells with its ``parameters`` cell followed by the injected values."""
    out = []
    for cell in nb.cells:
        if "report-skip" in cell.get("metadata", {}).get("tags", []):
            continue  # the notebook's own how-to-use text
        out.append(cell)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            out.append(_parameters_cell(params))
    return out


def execute_notebook(nb: Any, db_path: str | os.PathLike[str], *, cwd: Path | None = None,
                     timeout: int = 180) -> Any:  # fmt: skip
    """Execute a notebook (in place) in a fresh kernel with ``HARVEST_DB`` set."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = {**os.environ, "HARVEST_DB": str(Path(db_path).resolve()), "MPLBACKEND": "Agg"}
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL,
        resources={"metadata": {"path": str(cwd or notebooks_dir())}},
    )  # fmt: skip
    # the kernel's own log (e.g. ipykernel's TCP notice) is kept out of cron mail and
    # shown only when something fails
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        try:
            client.execute(env=env, stderr=log)
        except CellExecutionError as exc:
            raise ReportError(f"a notebook cell failed:\n{exc}") from exc
        except Exception as exc:  # noqa: BLE001 - no kernel, kernel died: say so plainly
            log.seek(0)
            tail = log.read()[-2000:].strip()
            raise ReportError(
                f"could not execute the notebooks: {type(exc).__name__}: {exc}"
                + (f"\nkernel log:\n{tail}" if tail else "")
            ) from exc
    return nb


def report_notebook(interventions: Sequence[str] = synthesis.FOCUS_INTERVENTIONS,
                    folder: Path | None = None) -> Any:  # fmt: skip
    """The overview notebook followed by the per-intervention one for each intervention."""
    folder = folder or notebooks_dir()
    nb = _read(folder / OVERVIEW)
    deep = _read(folder / PER_INTERVENTION)
    for iv in interventions:
        nb.cells.extend(copy.deepcopy(c) for c in _with_parameters(deep, {"INTERVENTION": iv}))
    for i, cell in enumerate(nb.cells):  # merged copies need unique ids
        cell["id"] = f"cell-{i}"
    nb.metadata["title"] = "Does it work? IMS, dry needling and prolotherapy"
    return nb


# any script that loads from the network (nbconvert's mermaid loader, a CDN MathJax)
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*</script>",
                              re.I | re.S)
_EXTERNAL_SRC = re.compile(r"<script\b[^>]*\bsrc=[\"']?https?://[^>]*>\s*</script>", re.I)
_EXTERNAL_LINK = re.compile(r"<link[^>]*\bhref=[\"']https?://[^>]*>", re.I)


def to_html(nb: Any) -> str:
    """Self-contained HTML of an executed notebook: code hidden, images inline, and no
    external script or stylesheet (no MathJax/require.js from a CDN)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(
        _images_with_alt(nb), resources={"metadata": {"name": nb.metadata.get("title", "Does it work?")}}
    )
    body = _EXTERNAL_SCRIPT.sub("", _EXTERNAL_SRC.sub("", body))
    return _EXTERNAL_LINK.sub("", body)


def _images_with_alt(nb: Any) -> Any:
    """A copy of ``nb`` whose PNG outputs with alternative text are HTML ``<img alt=…>``:
    nbconvert's lab template drops an image's alt text (then warns that it is missing)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            alt = out.get("metadata", {}).get("image/png", {}).get("alt")
            data = out.get("data", {})
            if alt and "image/png" in data:
                src = "data:image/png;base64," + data.pop("image/png").strip()
                data["text/html"] = f'<img alt="{html.escape(alt)}" src="{src}">'
    return nb


def build_report(db_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                 *, timeout: int = 180) -> Path:  # fmt: skip
    """Execute the notebooks against ``db_path`` and write ``does_it_work-<db name>.html``.

    ``out_dir`` defaults to ``reports/`` beside the database (``db/reports/`` for the
    default ``db/evidence.db``). Returns the path of the HTML file.
    """
    db_path = Path(db_path)
    try:
        # exists, is ours, schema up to date (a file we may not write is read as it is)
        open_db(db_path, create=False, read_only=True).conn.close()
    except StoreError as exc:
        raise ReportError(str(exc)) from exc
    out = Path(out_dir) if out_dir is not None else db_path.resolve().parent / "reports"
    target = out / REPORT_NAME.format(stem=db_path.stem)
    tmp = target.with_suffix(".html.tmp")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp.touch()  # the folder is writable: find out before the notebooks' minute of work
    except OSError as exc:
        raise _output_error(out, exc) from exc
    try:
        nb = execute_notebook(report_notebook(), db_path, timeout=timeout)
        try:
            tmp.write_text(to_html(nb), encoding="utf-8")
            tmp.replace(target)  # a reader never sees half a report
        except OSError as exc:
            raise _output_error(out, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone after replace; left only by a failure
    return target


def _output_error(out: Path, exc: OSError) -> ReportError:
    """A report folder that cannot be made or written (missing parent, no permission, a
    file where the folder should be, a full disk), as a message naming the path."""
    where = exc.filename or out
    return ReportError(f"cannot write the report to {where}: {exc.strerror or exc}")

"""Charts of the synthesis (matplotlib): each function returns a ``Figure``.

Figures are built on matplotlib's object API with an Agg canvas attached inside each
function: importing this module changes no global backend, and a figure displays in a
notebook (IPython renders ``Figure`` objects as PNG) or saves with ``fig.savefig``. Colours
are the Okabe–Ito palette (safe for the common colour-vision deficiencies); meaning is never
carried by colour alone (counts are written on the marks, legends name every colour).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harvest.synthesis import (
    AGAINST, FAVOURING, UNSPECIFIED, VERDICT_RULES, Cell, Study, Synthesis, label,
)  # fmt: skip

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DESIGN_GROUPS",
    "VERDICT_COLOURS",
    "evidence_map",
    "participants_by_condition",
    "review_timeline",
    "studies_per_year",
]

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000",
    "grey": "#BBBBBB",
}  # fmt: skip

VERDICT_COLOURS = {
    "supported by reviews": OKABE_ITO["green"],
    "favourable trials, no supporting review": OKABE_ITO["sky_blue"],
    "mixed": OKABE_ITO["orange"],
    "inconclusive": OKABE_ITO["purple"],
    "not supported by reviews": OKABE_ITO["vermillion"],
    "not supported by trials": OKABE_ITO["vermillion"],
    "insufficient evidence": OKABE_ITO["grey"],
    "not assessed": "#FFFFFF",  # drawn with an outline: no verdict, not a weak one
}

# Thirteen designs are too many colours to tell apart: six groups.
DESIGN_GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Systematic review / meta-analysis", ("systematic_review", "meta_analysis"), OKABE_ITO["blue"]),
    ("Randomized trial", ("rct",), OKABE_ITO["green"]),
    ("Other clinical study", ("non_randomized_trial", "observational", "case_series", "case_report"),
     OKABE_ITO["orange"]),
    ("Narrative review, guideline, editorial", ("narrative_review", "guideline", "editorial"),
     OKABE_ITO["purple"]),
    ("Protocol", ("protocol",), OKABE_ITO["sky_blue"]),
    ("Animal, other or untagged", ("animal", "other", None), OKABE_ITO["grey"]),
)  # fmt: skip

INTERVENTION_COLOURS = {
    "ims": OKABE_ITO["blue"], "dry_needling": OKABE_ITO["orange"],
    "prolotherapy": OKABE_ITO["green"],
}  # fmt: skip

CONCLUSION_STYLE = {  # colour, label
    "favours": (OKABE_ITO["green"], "review favours the intervention"),
    "against": (OKABE_ITO["vermillion"], "review: no difference, favours control or harm"),
    "inconclusive": (OKABE_ITO["purple"], "review: inconclusive"),
    "unknown": ("#FFFFFF", "review: no conclusion extracted"),
}

_STYLE = {
    "font.size": 11, "axes.titlesize": 14, "axes.titleweight": "bold", "axes.labelsize": 12,
    "xtick.labelsize": 10.5, "ytick.labelsize": 10.5, "legend.fontsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
    "savefig.dpi": 100, "savefig.bbox": "tight",
}  # fmt: skip


def _figure(width: float, height: float) -> Figure:
    """A new Figure on an Agg canvas (no pyplot, no global backend change)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _styled(func: Any) -> Any:
    """Run a chart function under the report's rcParams (fonts, spines)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def _empty(fig: Figure, title: str, message: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#444444",
            wrap=True, transform=ax.transAxes)  # fmt: skip
    return fig


def _design_group(design: str | None) -> int:
    for i, (_, designs, _) in enumerate(DESIGN_GROUPS):
        if design in designs:
            return i
    return len(DESIGN_GROUPS) - 1


def _conclusion_kind(conclusion: str | None) -> str:
    if conclusion in FAVOURING:
        return "favours"
    if conclusion in AGAINST:
        return "against"
    if conclusion == "inconclusive":
        return "inconclusive"
    return "unknown"


# ------------------------------------------------------------------------------- charts


@_styled
def evidence_map(synth: Synthesis, *, size_by: str = "studies") -> Figure:
    """Intervention × condition bubbles: area = studies (or randomized participants),
    colour = verdict, the number written beside each bubble."""
    title = "Evidence map: studies per intervention and condition"
    if size_by == "participants":
        title = "Evidence map: randomized participants per intervention and condition"
    cells = synth.cells
    if not cells:
        return _empty(_figure(9, 3), title, "No tagged studies of these interventions yet.")
    conditions = sorted({c.condition for c in cells},
                        key=lambda k: (k == UNSPECIFIED, label(k)))  # fmt: skip
    ivs = list(synth.interventions)
    fig = _figure(9.5, 1.6 + 0.42 * len(conditions))
    ax = fig.add_subplot()

    def value(c: Cell) -> int | None:  # None: participants unknown (no trial size extracted)
        return c.randomized_participants if size_by == "participants" else c.n_studies

    biggest = max(value(c) or 0 for c in cells) or 1
    for c in cells:
        v = value(c)
        x, y = ivs.index(c.intervention), conditions.index(c.condition)
        area = 40 + 900 * ((v or 0) / biggest)
        ax.scatter(x, y, s=area, color=VERDICT_COLOURS.get(c.verdict.label, "#BBBBBB"),
                   edgecolor="#333333", linewidth=0.8, zorder=3)  # fmt: skip
        note = "unknown" if v is None else f"{v}"
        if size_by == "participants" and v is not None and c.trials_without_size:
            note = f"≥{v}"  # at least: some trials' sizes are unknown
        note += f" (+{len(c.retracted)} retracted)" if c.retracted else ""
        ax.annotate(note, (x, y), xytext=(area ** 0.5 / 2 + 5, 0), textcoords="offset points", va="center",
                    fontsize=10, color="#222222")  # fmt: skip
    ax.set_xticks(range(len(ivs)), [label(i) for i in ivs])
    ax.set_yticks(range(len(conditions)), [label(k) for k in conditions])
    ax.set_xlim(-0.5, len(ivs) - 0.2)
    ax.set_ylim(len(conditions) - 0.5, -0.5)
    ax.grid(True, color="#E5E5E5", zorder=0)
    ax.set_xlabel("Intervention")
    ax.set_ylabel("Condition")
    ax.set_title(title, loc="left")
    from matplotlib.lines import Line2D

    # one legend entry per colour, only for verdicts present, in the order of the rules
    shown = {c.verdict.label for c in cells}
    by_colour: dict[str, list[str]] = {}
    for v in dict.fromkeys(r.label for r in VERDICT_RULES):
        if v in shown:
            by_colour.setdefault(VERDICT_COLOURS.get(v, "#BBBBBB"), []).append(v)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=10, markeredgecolor="#333333",
                      markerfacecolor=col, label=" / ".join(vs)) for col, vs in by_colour.items()]  # fmt: skip
    ax.legend(handles=handles, title="Verdict (bubble colour)", loc="upper left",
              bbox_to_anchor=(1.01, 1), frameon=False, alignment="left")  # fmt: skip
    what = ("randomized participants in the trials whose sample size was extracted (≥: some "
            "trials' sizes unknown)" if size_by == "participants" else "studies (retracted excluded)")
    fig.text(0.0, -0.01, f"Bubble area and number: {what}.", fontsize=10, color="#444444",
             ha="left", va="top")  # fmt: skip
    return fig


@_styled
def studies_per_year(studies: Sequence[Study], *, title: str = "Studies per year by design") -> Figure:
    """Stacked bars: studies per publication year, by design group (retracted excluded)."""
    live = [s for s in studies if not s.retracted and s.year]
    if not live:
        return _empty(_figure(9, 3), title, "No studies with a publication year here yet.")
    years = list(range(min(s.year for s in live), max(s.year for s in live) + 1))  # type: ignore[type-var]
    counts: dict[int, Counter[int]] = defaultdict(Counter)
    for s in live:
        counts[_design_group(s.design)][s.year] += 1  # type: ignore[index]
    fig = _figure(11.5, 4.6)
    ax = fig.add_subplot()
    bottom = [0] * len(years)
    for gi, (name, _, colour) in enumerate(DESIGN_GROUPS):
        if gi not in counts:
            continue
        heights = [counts[gi][y] for y in years]
        ax.bar(years, heights, bottom=bottom, color=colour, edgecolor="white", linewidth=0.5,
               label=name, width=0.85)  # fmt: skip
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("Publication year")
    ax.set_ylabel("Number of studies")
    ax.set_title(title, loc="left")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    ax.set_xlim(years[0] - 0.8, years[-1] + 0.8)
    ax.set_ylim(0, max(bottom) * 1.08 + 0.2)
    ax.legend(title="Design", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
              alignment="left")
    ax.grid(True, axis="y", color="#E5E5E5")
    ax.set_axisbelow(True)
    return fig


@_styled
def participants_by_condition(cells: Sequence[Cell], *, title: str = "Randomized participants by condition") -> Figure:
    """Horizontal bars of randomized participants (sum of extracted RCT sizes) per condition,
    stacked by intervention; each bar says over how many trials it sums and for how many the
    size is unknown (a condition with no size extracted says "unknown", never 0)."""
    with_trials = [c for c in cells if c.trials]
    if not with_trials:
        return _empty(_figure(9, 2.6), title, "No randomized trials yet.")
    # most participants first; then most trials (participants unknown), then by name: the
    # order is the same on every run
    conditions = sorted({c.condition for c in with_trials},
                        key=lambda k: (-sum(c.randomized_participants or 0 for c in with_trials
                                            if c.condition == k),
                                       -len({s.id for c in with_trials if c.condition == k for s in c.trials}),
                                       label(k)))  # fmt: skip
    ivs = list(dict.fromkeys(c.intervention for c in with_trials))
    fig = _figure(10, 1.5 + 0.45 * len(conditions))
    ax = fig.add_subplot()
    left = [0] * len(conditions)
    for iv in ivs:
        widths = []
        for k in conditions:
            widths.append(sum(c.randomized_participants or 0 for c in with_trials
                              if c.intervention == iv and c.condition == k))  # fmt: skip
        ax.barh(range(len(conditions)), widths, left=left, label=label(iv), height=0.65,
                color=INTERVENTION_COLOURS.get(iv, OKABE_ITO["grey"]), edgecolor="white")  # fmt: skip
        left = [a + b for a, b in zip(left, widths, strict=True)]
    top = max(left) or 1
    shared_any = False
    for y, k in enumerate(conditions):
        # each trial once, even if it is on two of the interventions (drawn in both segments)
        drawn = [s for c in with_trials if c.condition == k for s in c.trials]
        distinct = {s.id: s for s in drawn}
        trials = len(distinct)
        missing = sum(1 for s in distinct.values() if s.sample_size is None)
        total = sum(s.sample_size for s in distinct.values() if s.sample_size is not None)
        rcts = f"RCT{'s' if trials != 1 else ''}"
        if missing == trials:
            note = f"unknown: no size for {'the' if trials == 1 else 'any of the'} {trials} {rcts}"
        elif missing:
            note = f"{total} in {trials - missing} of {trials} {rcts} (size unknown for {missing})"
        else:
            note = f"{total} in {trials} {rcts}"
        if len(drawn) > trials and total:  # a trial on two interventions: drawn twice, counted once
            shared_any = True
            note += " *"
        ax.text(left[y] + top * 0.01, y, note, va="center", fontsize=10, color="#222222")
    ax.set_yticks(range(len(conditions)), [label(k) for k in conditions])
    ax.set_ylim(len(conditions) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("Randomized participants (sum of sample sizes extracted from abstracts)"
                  + ("\n* a trial on two of the interventions is drawn in each one's segment but "
                     "counted once in the number" if shared_any else ""))
    ax.set_ylabel("Condition")
    ax.set_title(title, loc="left")
    if len(ivs) > 1 and any(left):  # below the plot: the notes may run past its right edge
        fig.legend(*ax.get_legend_handles_labels(), title="Intervention", loc="outside lower center",
                   ncol=len(ivs), frameon=False)  # fmt: skip
    if not any(left):
        ax.set_xticks([])
        ax.set_xlabel("No sample size could be extracted from these trials' records yet")
    ax.grid(True, axis="x", color="#E5E5E5")
    ax.set_axisbelow(True)
    return fig


@_styled
def review_timeline(cells: Sequence[Cell], *, title: str = "Reviews and the trials that came after them") -> Figure:
    """One row per intervention × condition with a review: reviews as diamonds coloured by
    conclusion, trials as dots; trials after the newest review are filled black."""
    rows = [c for c in cells if c.reviews]
    if not rows:
        return _empty(_figure(9, 2.6), title, "No systematic review or meta-analysis yet.")
    rows = rows[:25]
    fig = _figure(10, 2.9 + 0.5 * len(rows))
    ax = fig.add_subplot()
    from matplotlib.lines import Line2D

    years = [s.year for c in rows for s in (*c.reviews, *c.trials) if s.year]
    for y, c in enumerate(rows):
        newer = {s.id for s in c.newer_trials}
        for s in c.trials:
            if not s.year:
                continue
            after = s.id in newer
            ax.scatter(s.year, y + 0.18, s=42, marker="o", zorder=3,
                       color="#000000" if after else "#FFFFFF", edgecolor="#000000")  # fmt: skip
        for s in c.reviews:
            if not s.year:
                continue
            colour = CONCLUSION_STYLE[_conclusion_kind(s.conclusion)][0]
            ax.scatter(s.year, y - 0.12, s=120, marker="D", color=colour, edgecolor="#333333",
                       zorder=4)  # fmt: skip
        if c.newest_review_year:
            ax.plot([c.newest_review_year, c.newest_review_year], [y - 0.4, y + 0.4],
                    color="#666666", linewidth=1, linestyle="--", zorder=2)  # fmt: skip
    ax.set_yticks(range(len(rows)), [c.title for c in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if years:
        ax.set_xlim(min(years) - 1, max(years) + 1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.set_xlabel("Publication year")
    ax.set_title(title, loc="left")
    ax.grid(True, axis="x", color="#E5E5E5")
    ax.set_axisbelow(True)
    handles = [Line2D([], [], marker="D", linestyle="", markersize=9, markerfacecolor=col,
                      markeredgecolor="#333333", label=text)
               for col, text in CONCLUSION_STYLE.values()]  # fmt: skip
    handles += [
        Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor="#FFFFFF",
               markeredgecolor="#000000", label="randomized trial"),
        Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor="#000000",
               markeredgecolor="#000000", label="trial after the newest review"),
        Line2D([], [], color="#666666", linestyle="--", label="newest review"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    return fig

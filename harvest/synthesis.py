"""Evidence synthesis: "does it work?" per intervention × condition, from the tagged store.

Everything here is plain data computed from the ``studies`` and ``tags`` tables (through
:func:`harvest.tagging.study_summaries`); the notebooks, charts and the HTML report only show
it. For each intervention × condition with any evidence, a :class:`Cell` holds the counts by
design, the randomized participants (summed over the trials whose sample size was extracted,
with how many those are; ``None`` when no trial has one, never 0), the systematic reviews and
meta-analyses, the randomized trials, how many trials are tagged sham- or placebo-controlled
and how many have no comparator identified, the trials newer than the newest review, and the
retracted studies (listed apart and left out of every count). Its :class:`Verdict` comes
from :data:`VERDICT_RULES`, the one place where the rules are written, and always carries its
reasons and caveats.

What the records do not say is reported as unknown, never as a negative: a trial with no
sample size extracted adds nothing to a total and is counted as "participants unknown"; a
trial with no comparator identified is not known to be sham-controlled, nor known not to be;
and whether a trial was blinded is not read at all.

This is a map of what has been published and what the authors concluded, read automatically
from titles, abstracts and NLM's indexing. It is not a quality appraisal and not medical advice.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlite_utils import Database

from harvest import tagging

__all__ = [
    "CAVEAT_RULES",
    "Cell",
    "DISCLAIMER",
    "FOCUS_INTERVENTIONS",
    "Study",
    "Synthesis",
    "VERDICT_RULES",
    "Verdict",
    "VerdictRule",
    "build_cells",
    "database_facts",
    "label",
    "load_studies",
    "rules_text",
    "scope_text",
    "synthesize",
    "verdict_for",
]

DISCLAIMER = (
    "This is an automated map of the published research, not medical advice. Tags, sample "
    "sizes and conclusions are read by rules from titles, abstracts and NLM's indexing and can "
    "be wrong; a conclusion is what the study's authors wrote, not an appraisal of its quality "
    "or risk of bias. Talk to a qualified clinician about any treatment."
)

FOCUS_INTERVENTIONS = ("ims", "dry_needling", "prolotherapy")
REVIEW_DESIGNS = ("systematic_review", "meta_analysis")
TRIAL_DESIGNS = ("rct",)
SHAM_COMPARATORS = ("sham_needling", "placebo_injection")
FAVOURING = frozenset({"favours_intervention"})
AGAINST = frozenset({"no_difference", "favours_control", "harm"})
STATED = FAVOURING | AGAINST | {"inconclusive"}  # conclusions that count toward a verdict
# Studies of an intervention with no condition tag are kept, in a cell of their own.
UNSPECIFIED = "unspecified"

# Designs in the order tables show them.
DESIGN_ORDER = (
    "systematic_review", "meta_analysis", "rct", "non_randomized_trial", "observational",
    "case_series", "case_report", "narrative_review", "guideline", "protocol", "editorial",
    "animal", "other", "untagged",
)  # fmt: skip

# --- thresholds of the verdict rules (used only by VERDICT_RULES and CAVEAT_RULES) ---------
MIN_TRIALS = 2  # randomized trials with an extracted conclusion needed to say anything from trials
MIN_PARTICIPANTS = 100  # randomized participants needed to say anything from trials
CLEAR_SHARE = 2 / 3  # share of trials concluding one way for "favourable" or "not supported"
SMALL_PARTICIPANTS = 300  # below this many randomized participants the evidence is "small"
SHAM_SHARE = 0.5  # below this share of trials tagged sham/placebo-controlled: caveat C2
# CLEAR_SHARE in words for the rules' text ("67%" would misstate a share of exactly 2 in 3)
_CLEAR = "two thirds" if abs(CLEAR_SHARE - 2 / 3) < 1e-9 else f"{CLEAR_SHARE:.1%}"
# participants are summed over the trials whose sample size was extracted: the rules say so
_SIZED = "(a trial with no sample size extracted adds none)"

_LABELS = {
    "ims": "IMS (Gunn)",
    "dry_needling": "Dry needling",
    "prolotherapy": "Prolotherapy",
    "prp": "PRP",
    "rct": "RCT",
    "meta_analysis": "Meta-analysis",
    "systematic_review": "Systematic review",
    "non_randomized_trial": "Non-randomized trial",
    "favours_intervention": "favours the intervention",
    "favours_control": "favours the control",
    "no_difference": "no difference",
    "temporomandibular_disorder": "Temporomandibular disorder",
    "post_stroke_spasticity": "Post-stroke spasticity",
    "tendinopathy_other": "Other tendinopathy",
    "osteoarthritis_other": "Other osteoarthritis",
    "other_active": "Other active treatment",
    "exercise_physio": "Exercise or physiotherapy",
    "usual_care_waitlist": "Usual care or waiting list",
    "corticosteroid": "Corticosteroid injection",
    UNSPECIFIED: "Condition not tagged",
}


# How an intervention is named inside a sentence ("studies on IMS, dry needling or prolotherapy").
_IN_TEXT = {"ims": "IMS"}


def scope_text(interventions: Sequence[str]) -> str:
    """The interventions as a phrase: ("ims", "dry_needling", "prolotherapy") →
    "IMS, dry needling or prolotherapy"."""
    names = []
    for iv in interventions:
        name = _IN_TEXT.get(iv) or label(iv)
        names.append(name if name[1:2].isupper() else name[:1].lower() + name[1:])
    if len(names) < 2:
        return "".join(names) or "no intervention"
    return ", ".join(names[:-1]) + " or " + names[-1]


def label(value: str | None) -> str:
    """A reader's label for a tag value ("low_back_pain" → "Low back pain")."""
    if value is None:
        return "no conclusion extracted"
    if value in _LABELS:
        return _LABELS[value]
    text = value.replace("_", " ")
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------ studies


@dataclass(frozen=True, slots=True)
class Study:
    """One study as the synthesis sees it: bibliographic facts plus its effective tags."""

    id: int
    pmid: str | None
    doi: str | None
    title: str
    year: int | None
    journal: str | None
    retracted: bool
    design: str | None = None
    interventions: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    population: str | None = None
    sample_size: int | None = None
    conclusion: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def url(self) -> str | None:
        if self.pmid:
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.pmid}/"
        if self.doi:
            return f"https://doi.org/{self.doi}"
        return None

    @property
    def is_review(self) -> bool:
        return self.design in REVIEW_DESIGNS

    @property
    def is_trial(self) -> bool:
        return self.design in TRIAL_DESIGNS

    @property
    def sham_controlled(self) -> bool:
        return any(c in SHAM_COMPARATORS for c in self.comparators)

    @property
    def ref(self) -> str:
        """Short citation for reasons: "PMID 123 (2019)"."""
        if self.pmid or self.doi:
            ident = f"PMID {self.pmid}" if self.pmid else f"doi:{self.doi}"
        else:  # no identifier: a short title says which study
            words = self.title.split()
            ident = "“" + " ".join(words[:6]) + ("…" if len(words) > 6 else "") + "”"
        return f"{ident} ({self.year or 'n.d.'})"


def _summaries(db: Database) -> dict[int, dict[str, Any]]:
    try:
        return tagging.study_summaries(db)
    except sqlite3.OperationalError as exc:
        if "study_tags_effective" not in str(exc):
            raise
        return _summaries_from_tags(db)


def _summaries_from_tags(db: Database) -> dict[int, dict[str, Any]]:
    """Stand-in for :func:`tagging.study_summaries` on a database without the
    ``study_tags_effective`` view: the same precedence (manual > nlm > rule for single-valued
    facets; a manual unset hides a value), read from ``tags``."""
    single = set(tagging.SINGLE_VALUED_FACETS)
    prio = {"manual": 0, "nlm": 1, "rule": 2}
    rows = list(db.query("SELECT study_id, facet, value, origin, negated FROM tags"))
    hidden = {(r["study_id"], r["facet"], r["value"]) for r in rows
              if r["origin"] == "manual" and r["negated"]}  # fmt: skip
    manual_single = {(r["study_id"], r["facet"]) for r in rows
                     if r["origin"] == "manual" and not r["negated"] and r["facet"] in single}  # fmt: skip
    out: dict[int, dict[str, Any]] = {}
    best: dict[tuple[int, str], int] = {}
    plural = {"intervention": "interventions", "condition": "conditions",
              "comparator": "comparators", "flag": "flags"}  # fmt: skip
    for r in rows:
        sid, facet, value, origin = r["study_id"], r["facet"], r["value"], r["origin"]
        if r["negated"] or (sid, facet, value) in hidden:
            continue
        s = out.setdefault(sid, {"design": None, "interventions": [], "conditions": [],
                                 "comparators": [], "flags": [], "population": None,
                                 "sample_size": None, "conclusion": None})  # fmt: skip
        if facet in single:
            if origin != "manual" and (sid, facet) in manual_single:
                continue
            p = prio.get(origin, 9)
            if best.get((sid, facet), 99) <= p:
                continue
            best[(sid, facet)] = p
            s[facet] = int(value) if facet == "sample_size" and str(value).isdigit() else value
        elif facet in plural and value not in s[plural[facet]]:
            s[plural[facet]].append(value)
    return out


def load_studies(db: Database) -> list[Study]:
    """Every live (not tombstoned) study with its effective tags, oldest first."""
    if "studies" not in db.table_names():
        return []
    summaries = _summaries(db) if "tags" in db.table_names() else {}
    out = []
    for r in db.query(
        "SELECT id, pmid, doi, title, year, journal, retracted FROM studies "
        "WHERE coalesce(deleted, 0) = 0 ORDER BY year, id"
    ):
        s = summaries.get(r["id"]) or {}
        size = s.get("sample_size")
        out.append(
            Study(
                id=r["id"], pmid=r["pmid"], doi=r["doi"], title=r["title"], year=r["year"],
                journal=r["journal"], retracted=bool(r["retracted"]),
                design=s.get("design"),
                interventions=tuple(sorted(s.get("interventions") or ())),
                conditions=tuple(sorted(s.get("conditions") or ())),
                comparators=tuple(sorted(s.get("comparators") or ())),
                population=s.get("population"),
                sample_size=size if isinstance(size, int) else None,
                conclusion=s.get("conclusion"),
                flags=tuple(sorted(s.get("flags") or ())),
            )  # fmt: skip
        )
    return out


# -------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """The evidence on one intervention for one condition. ``studies`` excludes retracted
    studies (they are in ``retracted``, shown apart, counted nowhere)."""

    intervention: str
    condition: str
    studies: list[Study] = field(default_factory=list)
    retracted: list[Study] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{label(self.intervention)} for {label(self.condition).lower()}" if (
            self.condition != UNSPECIFIED
        ) else f"{label(self.intervention)}, condition not tagged"

    @cached_property
    def counts_by_design(self) -> dict[str, int]:
        counts = Counter(s.design or "untagged" for s in self.studies)
        return {d: counts[d] for d in DESIGN_ORDER if counts[d]}

    @property
    def n_studies(self) -> int:
        return len(self.studies)

    @cached_property
    def reviews(self) -> list[Study]:
        """Systematic reviews and meta-analyses, newest first."""
        return sorted((s for s in self.studies if s.is_review),
                      key=lambda s: (-(s.year or 0), s.id))  # fmt: skip

    @cached_property
    def trials(self) -> list[Study]:
        """Randomized controlled trials, newest first."""
        return sorted((s for s in self.studies if s.is_trial),
                      key=lambda s: (-(s.year or 0), s.id))  # fmt: skip

    @property
    def randomized_participants(self) -> int | None:
        """Sum of the sample sizes extracted from the randomized trials: over the
        :attr:`trials_with_size` trials that have one. ``None`` when there are trials but none
        has a size (the number is unknown, not 0); 0 only when there is no trial."""
        if self.trials and not self.trials_with_size:
            return None
        return sum(s.sample_size for s in self.trials if s.sample_size is not None)

    @property
    def trials_with_size(self) -> int:
        return sum(1 for s in self.trials if s.sample_size is not None)

    @property
    def trials_without_size(self) -> int:
        return sum(1 for s in self.trials if s.sample_size is None)

    @property
    def sham_controlled(self) -> int:
        """RCTs tagged with a sham or placebo comparator."""
        return sum(1 for s in self.trials if s.sham_controlled)

    @property
    def trials_without_comparator(self) -> int:
        """RCTs with no comparator identified: not known to be sham-controlled, nor not to be."""
        return sum(1 for s in self.trials if not s.comparators)

    @property
    def sham_share(self) -> float | None:
        """Share of RCTs tagged with a sham or placebo comparator (a trial with no comparator
        identified counts as not known to be one); None without RCTs."""
        return self.sham_controlled / len(self.trials) if self.trials else None

    @property
    def newest_review_year(self) -> int | None:
        years = [s.year for s in self.reviews if s.year]
        return max(years) if years else None

    @property
    def newer_trials(self) -> list[Study]:
        """RCTs published in a later year than the newest review in the database (which
        could not include them)."""
        newest = self.newest_review_year
        if newest is None:
            return []
        return [s for s in self.trials if s.year and s.year > newest]

    def conclusions(self, studies: Iterable[Study]) -> Counter[str]:
        return Counter(s.conclusion or "not stated" for s in studies)

    @property
    def verdict(self) -> Verdict:
        return verdict_for(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON, tables and tests)."""
        v = self.verdict
        return {
            "intervention": self.intervention,
            "condition": self.condition,
            "studies": self.n_studies,
            "counts_by_design": self.counts_by_design,
            "reviews": [_study_row(s) for s in self.reviews],
            "trials": [_study_row(s) for s in self.trials],
            "randomized_participants": self.randomized_participants,
            "trials_with_size": self.trials_with_size,
            "trials_without_size": self.trials_without_size,
            "sham_controlled": self.sham_controlled,
            "trials_without_comparator": self.trials_without_comparator,
            "sham_share": self.sham_share,
            "newest_review_year": self.newest_review_year,
            "newer_trials": [_study_row(s) for s in self.newer_trials],
            "retracted": [_study_row(s) for s in self.retracted],
            "verdict": v.label,
            "rule": v.rule_id,
            "reasons": list(v.reasons),
            "caveats": list(v.caveats),
        }


def _study_row(s: Study) -> dict[str, Any]:
    return {
        "pmid": s.pmid, "doi": s.doi, "year": s.year, "title": s.title, "design": s.design,
        "sample_size": s.sample_size, "comparators": list(s.comparators),
        "conclusion": s.conclusion, "url": s.url,
    }  # fmt: skip


def build_cells(studies: Sequence[Study], interventions: Sequence[str] | None = FOCUS_INTERVENTIONS) -> list[Cell]:
    """One cell per intervention × condition with any study (retracted ones included, apart).

    ``interventions=None`` takes every intervention that occurs. Cells are ordered by
    intervention (in the order given), then by number of studies, largest first.
    """
    cells: dict[tuple[str, str], Cell] = {}
    for s in studies:
        for iv in s.interventions:
            if interventions is not None and iv not in interventions:
                continue
            for cond in s.conditions or (UNSPECIFIED,):
                cell = cells.setdefault((iv, cond), Cell(iv, cond))
                (cell.retracted if s.retracted else cell.studies).append(s)
    order = {iv: i for i, iv in enumerate(interventions or sorted({k[0] for k in cells}))}
    return sorted(cells.values(), key=lambda c: (order.get(c.intervention, 99),
                  c.condition == UNSPECIFIED, -c.n_studies, -len(c.retracted), c.condition))  # fmt: skip


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True, slots=True)
class VerdictRule:
    """One verdict rule: the first rule (in :data:`VERDICT_RULES` order) that applies wins."""

    id: str
    label: str
    when: str  # the rule in words, printed with every verdict
    applies: Callable[[Cell], bool]


def _decisive(cell: Cell, studies: Iterable[Study]) -> tuple[int, int, int]:
    """(favouring, against, inconclusive) among studies with an extracted conclusion."""
    c = cell.conclusions(studies)
    return (sum(c[k] for k in FAVOURING), sum(c[k] for k in AGAINST), c["inconclusive"])


def _trials_stated(cell: Cell) -> int:
    fav, against, inc = _decisive(cell, cell.trials)
    return fav + against + inc


def _unsized_stated(cell: Cell) -> int:
    """Trials with an extracted conclusion whose sample size was not extracted."""
    return sum(1 for s in cell.trials if s.conclusion in STATED and s.sample_size is None)


def _reviews_fav(cell: Cell) -> int:
    return _decisive(cell, cell.reviews)[0]


def _reviews_against(cell: Cell) -> int:
    return _decisive(cell, cell.reviews)[1]


def _reviews_inconclusive(cell: Cell) -> int:
    return _decisive(cell, cell.reviews)[2]


def _review_share(cell: Cell, which: int) -> float:
    """Share of the reviews with an extracted conclusion that conclude ``which`` way (0 in favour,
    1 no difference/against/harm, 2 inconclusive)."""
    counts = _decisive(cell, cell.reviews)
    stated = sum(counts)
    return counts[which] / stated if stated else 0.0


def _trial_share(cell: Cell, which: int) -> float:
    stated = _trials_stated(cell)
    return _decisive(cell, cell.trials)[which] / stated if stated else 0.0


def _participants(studies: Iterable[Study], conclusions: Iterable[str] = STATED) -> int:
    """Randomized participants in the given studies whose conclusion is one of ``conclusions``
    (by default: any stated conclusion; trials with no conclusion extracted never count)."""
    wanted = frozenset(conclusions)
    return sum(s.sample_size or 0 for s in studies if s.conclusion in wanted)


def _newest_favourable_review_year(cell: Cell) -> int | None:
    years = [s.year for s in cell.reviews if s.conclusion in FAVOURING and s.year]
    return max(years) if years else None


def _later_dissent(cell: Cell) -> list[Study]:
    """Reviews and randomized trials published in a later year than the newest favourable
    review that conclude anything but in favour (no difference, favours the control, harm,
    inconclusive): newer evidence that the favourable review could not weigh. Newest first."""
    newest = _newest_favourable_review_year(cell)
    if newest is None:
        return []
    later = [s for s in (*cell.reviews, *cell.trials)
             if s.year and s.year > newest and s.conclusion in STATED - FAVOURING]  # fmt: skip
    return sorted(later, key=lambda s: (-(s.year or 0), s.id))


# The verdict rules, in order: the first that applies gives the verdict.
VERDICT_RULES: tuple[VerdictRule, ...] = (
    VerdictRule(
        "V1", "insufficient evidence",
        "no systematic review, meta-analysis or randomized trial",
        lambda c: not c.reviews and not c.trials,
    ),
    VerdictRule(
        "V12", "not assessed",
        "systematic reviews, meta-analyses or randomized trials exist, but no conclusion was "
        "extracted from any of them (most often the record holds a title and no abstract): "
        "this says nothing about the evidence; read the studies listed",
        lambda c: not any(s.conclusion in STATED for s in (*c.reviews, *c.trials)),
    ),
    VerdictRule(
        "V2", "mixed",
        "reviews disagree: at least one favours the intervention and at least one does not "
        "(no difference, favours the control, or harm)",
        lambda c: _reviews_fav(c) > 0 and _reviews_against(c) > 0,
    ),
    VerdictRule(
        "V10", "mixed",
        f"at least one review concludes in favour of the intervention, but fewer than "
        f"{_CLEAR} of the reviews whose conclusion was extracted do, or a review or randomized "
        "trial published after the newest favourable review finds no difference, favours the "
        "control, reports harm or calls the evidence inconclusive",
        lambda c: _reviews_fav(c) > 0
        and (_review_share(c, 0) < CLEAR_SHARE or bool(_later_dissent(c))),
    ),
    VerdictRule(
        "V3", "supported by reviews",
        f"at least {_CLEAR} of the reviews whose conclusion was extracted favour the "
        "intervention, none concludes against, and no review or randomized trial published after "
        "the newest favourable review concludes otherwise",
        lambda c: _reviews_fav(c) > 0 and _reviews_against(c) == 0
        and _review_share(c, 0) >= CLEAR_SHARE and not _later_dissent(c),
    ),
    VerdictRule(
        "V4", "not supported by reviews",
        f"at least {_CLEAR} of the reviews whose conclusion was extracted find no difference, favour "
        "the control, or report harm, and none concludes in favour",
        lambda c: _reviews_against(c) > 0 and _review_share(c, 1) >= CLEAR_SHARE,
    ),
    VerdictRule(
        "V5", "inconclusive",
        f"no review concludes in favour, fewer than {_CLEAR} of those whose conclusion was extracted "
        "find no difference, favour the control or report harm, and the rest call the evidence "
        "inconclusive",
        lambda c: _reviews_inconclusive(c) > 0,
    ),
    VerdictRule(
        "V11", "insufficient evidence",
        f"no review with an extracted conclusion; {MIN_TRIALS} or more randomized trials with an "
        f"extracted conclusion, but fewer than {MIN_PARTICIPANTS} randomized participants known "
        "in them and the sample size of some not extracted, so their size is unknown",
        lambda c: _trials_stated(c) >= MIN_TRIALS
        and _participants(c.trials) < MIN_PARTICIPANTS and _unsized_stated(c) > 0,
    ),
    VerdictRule(
        "V6", "insufficient evidence",
        f"no review with an extracted conclusion, and fewer than {MIN_TRIALS} randomized trials with an "
        f"extracted conclusion or fewer than {MIN_PARTICIPANTS} randomized participants in them "
        f"{_SIZED}",
        lambda c: _trials_stated(c) < MIN_TRIALS
        or _participants(c.trials) < MIN_PARTICIPANTS,
    ),
    VerdictRule(
        "V7", "favourable trials, no supporting review",
        f"no review with an extracted conclusion; at least {_CLEAR} of the randomized trials "
        "with an extracted conclusion favour the intervention, and those favourable trials randomized "
        f"at least {MIN_PARTICIPANTS} participants",
        lambda c: _trial_share(c, 0) >= CLEAR_SHARE
        and _participants(c.trials, FAVOURING) >= MIN_PARTICIPANTS,
    ),
    VerdictRule(
        "V8", "not supported by trials",
        f"no review with an extracted conclusion; at least {_CLEAR} of the randomized trials "
        "with an extracted conclusion find no difference, favour the control, or report harm, and "
        f"those trials randomized at least {MIN_PARTICIPANTS} participants",
        lambda c: _trial_share(c, 1) >= CLEAR_SHARE
        and _participants(c.trials, AGAINST) >= MIN_PARTICIPANTS,
    ),
    VerdictRule(
        "V9", "mixed",
        "no review with an extracted conclusion; the randomized trials with an extracted conclusion point "
        f"different ways, or those pointing one way randomized fewer than {MIN_PARTICIPANTS} "
        f"participants {_SIZED}",
        lambda c: True,
    ),
)

# Caveats added to any verdict whose cell meets them (they never change the label).
# A caveat states only what is known: a count over trials whose size or comparator is unknown
# says how many are unknown, and is never worded as a negative fact.
CAVEAT_RULES: tuple[tuple[str, str, Callable[[Cell], bool]], ...] = (
    ("C1", f"small evidence base: fewer than {SMALL_PARTICIPANTS} randomized participants "
           "in total, summed over the trials whose sample size was extracted (only if at least "
           "one was; while some sizes are unknown it is small \"as far as known\")",
     lambda c: c.trials_with_size > 0 and (c.randomized_participants or 0) < SMALL_PARTICIPANTS),
    ("C2", "few trials known to be sham- or placebo-controlled: fewer than half of the "
           "randomized trials are tagged with a sham or placebo comparator (a trial with no "
           "comparator identified is not known to be; whether trials were blinded is not read)",
     lambda c: bool(c.trials) and (c.sham_share or 0) < SHAM_SHARE),
    ("C3", "participants unknown for some randomized trials: no sample size extracted",
     lambda c: c.trials_without_size > 0),
    ("C4", "randomized trials published after the newest review in the database, which "
           "could not include them", lambda c: bool(c.newer_trials)),
    ("C5", "a study reports harm", lambda c: any(s.conclusion == "harm" for s in c.studies)),
    ("C6", "retracted studies were left out", lambda c: bool(c.retracted)),
    ("C7", "conclusions read automatically from abstracts; no risk-of-bias appraisal",
     lambda c: True),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    rule_id: str
    rule: str
    reasons: tuple[str, ...]
    caveats: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"Verdict: {self.label}  [rule {self.rule_id}: {self.rule}]"]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  ! {c}" for c in self.caveats]
        return "\n".join(lines)


def verdict_for(cell: Cell) -> Verdict:
    """Apply :data:`VERDICT_RULES` in order; the reasons name the reviews and trials."""
    rule = next(r for r in VERDICT_RULES if r.applies(cell))
    caveats = tuple(_caveat_text(cid, text, cell) for cid, text, test in CAVEAT_RULES if test(cell))
    return Verdict(rule.label, rule.id, rule.when, tuple(_reasons(cell)), caveats)


def _reasons(cell: Cell) -> list[str]:
    out = []
    if cell.reviews:
        items = "; ".join(f"{s.ref}: {label(s.conclusion)}" for s in cell.reviews[:6])
        more = f"; and {len(cell.reviews) - 6} more" if len(cell.reviews) > 6 else ""
        out.append(f"{_n(len(cell.reviews), 'review')} ({items}{more})")
        fav, against, inc = _decisive(cell, cell.reviews)
        if fav + against + inc:
            out.append(f"{fav} of {_n(fav + against + inc, 'review')} with an extracted conclusion "
                       f"in favour, {against} no difference/against/harm, {inc} inconclusive")
        later = _later_dissent(cell)
        if later:
            items = "; ".join(f"{s.ref}: {label(s.conclusion)}" for s in later[:6])
            more = f"; and {len(later) - 6} more" if len(later) > 6 else ""
            out.append(f"published after the newest favourable review "
                       f"({_newest_favourable_review_year(cell)}) and not in favour: {items}{more}")
    else:
        out.append("no study tagged as a systematic review or meta-analysis")
    if cell.trials:
        fav, against, inc = _decisive(cell, cell.trials)
        unstated = len(cell.trials) - fav - against - inc
        out.append(
            f"{_n(len(cell.trials), 'randomized trial')}{_participants_text(cell)}; conclusions: "
            f"{fav} in favour, {against} no difference/against/harm, {inc} inconclusive, "
            f"{unstated} not extracted"
        )
        if cell.trials_with_size:
            groups = (("in favour", FAVOURING), ("no difference/against/harm", AGAINST),
                      ("inconclusive", {"inconclusive"}))  # fmt: skip
            parts = [f"{what}: {_people([s for s in cell.trials if s.conclusion in which])}"
                     for what, which in groups]  # fmt: skip
            parts.append("no conclusion extracted: "
                         + _people([s for s in cell.trials if s.conclusion not in STATED]))
            by_conclusion = "; ".join(parts)
        else:
            by_conclusion = "unknown, as no trial has a sample size extracted"
        out.append(f"randomized participants by trial conclusion: {by_conclusion} (trials with no "
                   "conclusion extracted never count toward a verdict)")
        unknown = cell.trials_without_comparator
        out.append(f"sham- or placebo-controlled: {cell.sham_controlled} of {_n(len(cell.trials), 'trial')}"
                   + (f" (comparator unknown for {unknown})" if unknown else ""))
    else:
        out.append("no study tagged as a randomized trial")
    others = {d: n for d, n in cell.counts_by_design.items() if d not in REVIEW_DESIGNS + TRIAL_DESIGNS}
    if others:
        out.append("other studies: " + ", ".join(f"{n} {label(d).lower()}" for d, n in others.items()))
    return out


def _participants_text(cell: Cell) -> str:
    """", N randomized participants" after "K randomized trials", saying what is unknown."""
    n, known, unknown = len(cell.trials), cell.trials_with_size, cell.trials_without_size
    if not unknown:
        return f", {cell.randomized_participants} randomized participants"
    if not known:
        return f"; participants: unknown for {unknown} of {_n(n, 'trial')} (no sample size extracted)"
    return (f"; {cell.randomized_participants} randomized participants in the {known} of "
            f"{_n(n, 'trial')} with a sample size extracted (unknown for {unknown})")


def _people(trials: Sequence[Study]) -> str:
    """Randomized participants in ``trials`` as far as known: "0" only without trials."""
    sizes = [s.sample_size for s in trials if s.sample_size is not None]
    unknown = len(trials) - len(sizes)
    if not unknown:
        return str(sum(sizes))
    if not sizes:
        return f"unknown ({_n(unknown, 'trial')})"
    return f"{sum(sizes)}, plus {_n(unknown, 'trial')} of unknown size"


def _caveat_text(cid: str, text: str, cell: Cell) -> str:
    n = len(cell.trials)
    if cid == "C1":
        if not cell.trials_without_size:
            return (f"small evidence base: fewer than {SMALL_PARTICIPANTS} randomized participants in "
                    f"total ({cell.randomized_participants} in {_n(n, 'trial')})")
        return (f"small evidence base as far as known: fewer than {SMALL_PARTICIPANTS} randomized "
                f"participants in the trials whose sample size was extracted ({cell.randomized_participants} "
                f"in {cell.trials_with_size} of {_n(n, 'trial')}; unknown for {cell.trials_without_size})")
    if cid == "C2":
        unknown = cell.trials_without_comparator
        return (f"few trials known to be sham- or placebo-controlled: {cell.sham_controlled} of "
                f"{_n(n, 'trial')}" + (f" (comparator unknown for {unknown})" if unknown else "")
                + "; whether trials were blinded is not read")
    if cid == "C3":
        return f"participants unknown for {cell.trials_without_size} of {_n(n, 'trial')}: no sample size extracted"
    if cid == "C4":
        k = len(cell.newer_trials)
        refs = ", ".join(s.ref for s in cell.newer_trials)
        return (f"{_n(k, 'randomized trial')} published after the newest review in the database "
                f"({cell.newest_review_year}), which could not include {'it' if k == 1 else 'them'}: {refs}")
    if cid == "C6":
        return f"{_n(len(cell.retracted), 'retracted study', 'retracted studies')} left out: " + ", ".join(
            s.ref for s in cell.retracted
        )
    return text


def _n(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def rules_text() -> str:
    """All verdict and caveat rules in words, in the order they apply."""
    lines = ["Verdict rules (the first that applies gives the verdict):"]
    lines += [f"  {r.id} {r.label}: {r.when}" for r in VERDICT_RULES]
    lines.append("Caveats (added whenever they hold; they never change the verdict):")
    lines += [f"  {cid} {text}" for cid, text, _ in CAVEAT_RULES]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- synthesis


@dataclass
class Synthesis:
    """The whole picture: every study, the cells and the database's facts."""

    studies: list[Study]
    cells: list[Cell]
    facts: dict[str, Any]
    interventions: tuple[str, ...] = FOCUS_INTERVENTIONS

    @property
    def retracted(self) -> list[Study]:
        return [s for s in self.studies if s.retracted]

    def cells_for(self, intervention: str) -> list[Cell]:
        return [c for c in self.cells if c.intervention == intervention]

    def studies_for(self, intervention: str | None = None, *, include_retracted: bool = False) -> list[Study]:
        """Studies tagged with ``intervention``; with None, every study in the database, on
        whatever treatment (see :meth:`focus_studies` for those on the synthesis's ones)."""
        return [s for s in self.studies
                if (include_retracted or not s.retracted)
                and (intervention is None or intervention in s.interventions)]  # fmt: skip

    def harm_reports(self, intervention: str) -> list[Study]:
        """Studies on ``intervention`` whose title names a harm (flag ``adverse_event``),
        newest first: safety signals, which show that a harm happened, not how often."""
        found = [s for s in self.studies_for(intervention) if "adverse_event" in s.flags]
        return sorted(found, key=lambda s: (-(s.year or 0), s.id))

    def focus_studies(self, *, include_retracted: bool = False) -> list[Study]:
        """Studies tagged with at least one of :attr:`interventions` (the ones the cells,
        the header counts and the overview charts are about)."""
        return [s for s in self.studies
                if (include_retracted or not s.retracted) and _on(s, self.interventions)]  # fmt: skip

    @property
    def scope(self) -> str:
        """The interventions in words: "IMS, dry needling or prolotherapy"."""
        return scope_text(self.interventions)


def _on(study: Study, interventions: Sequence[str]) -> bool:
    return any(iv in interventions for iv in study.interventions)


def synthesize(db: Database, interventions: Sequence[str] | None = FOCUS_INTERVENTIONS) -> Synthesis:
    """Load every study and build the cells; works on an empty database."""
    studies = load_studies(db)
    cells = build_cells(studies, interventions)
    ivs = tuple(interventions) if interventions is not None else tuple(
        dict.fromkeys(c.intervention for c in cells))  # fmt: skip
    return Synthesis(studies, cells, database_facts(db, studies, ivs), ivs)


def database_facts(db: Database, studies: Sequence[Study] | None = None,
                   interventions: Sequence[str] = FOCUS_INTERVENTIONS) -> dict[str, Any]:  # fmt: skip
    """What the report shows at the top: harvest date, counts, years, rule-set version.

    ``studies`` counts every live study in the database (retracted ones left out);
    ``focus_studies``, ``reviews`` and ``trials`` count only the studies tagged with at least
    one of ``interventions`` (a review of botulinum toxin or an acupuncture trial in the
    database is not evidence on these), the same studies the cells are built from.
    """
    studies = load_studies(db) if studies is None else studies
    tables = set(db.table_names())
    harvested = None
    if "runs" in tables:
        harvested = db.execute(
            "SELECT max(finished) FROM runs WHERE status IN ('ok', 'partial', 'unchanged')"
        ).fetchone()[0]
    if harvested is None and "studies" in tables:
        harvested = db.execute("SELECT max(last_updated) FROM studies").fetchone()[0]
    deleted = db.execute("SELECT count(*) FROM studies WHERE deleted = 1").fetchone()[0] if (
        "studies" in tables) else 0  # fmt: skip
    ruleset = None
    if "tags" in tables:
        # The rule set of the newest automatic tag on a live study: tombstones keep the
        # tags (and rule set) they had, and max() of "2026.10" vs "2026.9" sorts as text.
        row = db.execute(
            "SELECT t.ruleset_version FROM tags t JOIN studies s ON s.id = t.study_id "
            "WHERE s.deleted = 0 AND t.origin != 'manual' ORDER BY t.created DESC, t.rowid DESC "
            "LIMIT 1"
        ).fetchone()
        ruleset = row[0] if row else None
    live = [s for s in studies if not s.retracted]  # retracted studies are counted nowhere
    focus = [s for s in live if _on(s, interventions)]
    years = [s.year for s in live if s.year]
    return {
        "harvested": harvested,
        "studies": len(live),  # live, not retracted (tombstoned rows are never loaded)
        "stored": len(studies),  # live studies including the retracted ones
        "retracted": len(studies) - len(live),
        "deleted": deleted,
        "untagged": sum(1 for s in live if s.design is None and not s.interventions),
        "first_year": min(years) if years else None,
        "last_year": max(years) if years else None,
        "interventions": tuple(interventions),
        "focus_studies": len(focus),  # on at least one of the interventions
        "reviews": sum(1 for s in focus if s.is_review),
        "trials": sum(1 for s in focus if s.is_trial),
        "by_intervention": {iv: sum(1 for s in live if iv in s.interventions) for iv in interventions},
        "ruleset_version": ruleset,
    }

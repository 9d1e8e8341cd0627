"""Measure the tag engine (issue #4, "Measured accuracy"); writes benchmarks/results/tagging.md.

    .venv/bin/python benchmarks/bench_tagging.py [--quick] [--out PATH]

1. Design, text only (publication types and MeSH hidden), against the publication types the
   records carry (NLM's for MEDLINE records, the publisher's otherwise) on
   ../shared/data/pubmed and ../shared/data/eutils, plus the RCTs and reviews among the topic
   records (by title). Per-class precision/recall and a confusion matrix; then the same after
   the hand review of every disagreement on the target classes
   (benchmarks/labels/design_adjudication.csv).
2. Intervention and design on ../shared/data/topic/records.jsonl against hand labels
   (benchmarks/labels/topic_labels.csv).
3. Sample size and conclusion on 90 hand-labelled real abstracts
   (benchmarks/labels/abstracts.csv, rules in benchmarks/labels/LABELLING.md).
4. Full re-tag throughput (studies/s) of the 10k-record file in a fresh database.

Real data is read in place; nothing from ../shared/data is copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harvest import store
from harvest.demo import record_to_study
from harvest.models import Study
from harvest.pubmed_xml import PubmedXMLError, parse_pubmed_xml
from harvest.store import study_to_row
from harvest.tagging import RuleSet, _Doc, classify, conclusion, load_ruleset, sample_size, tag_studies

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
PUBMED_FILE = SHARED / "pubmed" / "pubmed21n1298-even.xml.gz"
EUTILS = SHARED / "eutils" / "biopython"
TOPIC = SHARED / "topic" / "records.jsonl"
LABELS = HERE / "labels"
DESIGNS = [
    "systematic_review", "meta_analysis", "rct", "non_randomized_trial", "observational",
    "case_series", "case_report", "narrative_review", "guideline", "protocol", "editorial",
    "animal", "other",
]  # fmt: skip
UNTYPED = "(untyped)"
TARGETS = {"rct": (0.95, 0.85), "sr+ma": (0.95, 0.85), "case_report": (0.90, None)}


# ------------------------------------------------------------------------------ data


def corpus_rows() -> list[dict[str, Any]]:
    """The 10k update file and the E-utilities efetch replies, as ``studies`` rows."""
    rows: dict[str, dict[str, Any]] = {}
    sources = [PUBMED_FILE, *sorted(EUTILS.glob("pubmed*.xml"))]
    for path in sources:
        try:
            for item in parse_pubmed_xml(path):
                if isinstance(item, Study):
                    row = study_to_row(item)
                    row["_source"] = path.name
                    rows[item.pmid or f"{path.name}:{len(rows)}"] = row
        except PubmedXMLError as exc:  # pragma: no cover - reported, not fatal
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
    return list(rows.values())


def topic_rows() -> list[dict[str, Any]]:
    out = []
    for line in TOPIC.read_text("utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            row = study_to_row(record_to_study(rec))
            out.append(row)
    return out


def truth_design(row: dict[str, Any], rs: RuleSet) -> str:
    """The design the record's publication types say, by the rule set's own type mapping."""
    pts = json.loads(row["publication_types"]) if row.get("publication_types") else []
    for r in rs.design_pubtypes:
        if any(p in r.pubtype for p in pts):
            return r.value
    return UNTYPED


def design_of(tags: Iterable[Any]) -> str:
    return next(t.value for t in tags if t.facet == "design")


# ------------------------------------------------------------------------------ metrics


def prf(pairs: list[tuple[str, str]], cls: set[str]) -> tuple[int, int, int, float | None, float | None]:
    tp = sum(1 for t, p in pairs if t in cls and p in cls)
    fp = sum(1 for t, p in pairs if t not in cls and p in cls)
    fn = sum(1 for t, p in pairs if t in cls and p not in cls)
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    return tp, fp, fn, prec, rec


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def class_table(pairs: list[tuple[str, str]], classes: list[str]) -> list[str]:
    lines = ["| class | truth n | predicted n | TP | FP | FN | precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in classes:
        cls = {"systematic_review", "meta_analysis"} if c == "sr+ma" else {c}
        tp, fp, fn, p, r = prf(pairs, cls)
        n_true = sum(1 for t, _ in pairs if t in cls)
        n_pred = sum(1 for _, q in pairs if q in cls)
        if n_true == 0 and n_pred == 0:
            continue
        lines.append(f"| {c} | {n_true} | {n_pred} | {tp} | {fp} | {fn} | {fmt(p)} | {fmt(r)} |")
    return lines


def confusion(pairs: list[tuple[str, str]]) -> list[str]:
    truths = [c for c in [*DESIGNS, UNTYPED] if any(t == c for t, _ in pairs)]
    preds = [c for c in DESIGNS if any(p == c for _, p in pairs)]
    abbrev = {
        "systematic_review": "SR", "meta_analysis": "MA", "rct": "RCT", "non_randomized_trial": "NRT",
        "observational": "obs", "case_series": "series", "case_report": "case", "narrative_review": "review",
        "guideline": "guide", "protocol": "protoc", "editorial": "edit", "animal": "animal", "other": "other",
    }  # fmt: skip
    counts = Counter(pairs)
    lines = ["| truth \\ predicted | " + " | ".join(abbrev[p] for p in preds) + " | total |",
             "|---|" + "---:|" * (len(preds) + 1)]  # fmt: skip
    for t in truths:
        row = [counts[(t, p)] for p in preds]
        lines.append(f"| {t} | " + " | ".join(str(v) if v else "·" for v in row) + f" | {sum(row)} |")
    return lines


def rule_table(records: list[dict[str, Any]], rs: RuleSet) -> list[str]:
    lines = ["| rule | design | decided | typed the same | typed otherwise | untyped |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for rule in rs.design_rules:
        mine = [r for r in records if r["rule"] == rule.id]
        if not mine:
            continue
        same = sum(1 for r in mine if r["truth"] == r["pred"])
        untyped = sum(1 for r in mine if r["truth"] == UNTYPED)
        lines.append(f"| `{rule.id}` | {rule.value} | {len(mine)} | {same} | {len(mine) - same - untyped} | {untyped} |")
    return lines


# ------------------------------------------------------------------------------ sections


def bench_design(rs: RuleSet, corpus: list[dict[str, Any]], topic: list[dict[str, Any]],
                 topic_labels: list[dict[str, str]], out: list[str]) -> dict[str, Any]:  # fmt: skip
    results: dict[str, Any] = {}
    pairs_corpus: list[tuple[str, str]] = []
    records: list[dict[str, Any]] = []
    for row in corpus:
        tags = classify(row, rs, use_index=False)
        truth = truth_design(row, rs)
        pred = design_of(tags)
        pairs_corpus.append((truth, pred))
        ev = next(t for t in tags if t.facet == "design")
        records.append({"pmid": row["pmid"], "title": row["title"], "truth": truth, "pred": pred,
                        "status": row.get("medline_status"), "rule": ev.rule_id, "evidence": ev.evidence,
                        "abstract": row.get("abstract") or ""})  # fmt: skip
    # RCTs and reviews among the topic records, by title (their labels)
    pairs_topic: list[tuple[str, str]] = []
    for row, lab in zip(topic, topic_labels, strict=True):
        if lab["design"] in ("rct", "systematic_review", "meta_analysis"):
            pairs_topic.append((lab["design"], design_of(classify(row, rs, use_index=False))))
    pairs = pairs_corpus + pairs_topic
    n_typed = sum(1 for t, _ in pairs_corpus if t != UNTYPED)
    out += [
        "## 1. Design, text only, against publication types",
        "",
        f"Records: {len(pairs_corpus)} from `pubmed21n1298-even.xml.gz` and the E-utilities efetch replies "
        f"({n_typed} carry a design-bearing publication type; the rest are `{UNTYPED}`: only "
        f"\"Journal Article\", so any prediction on them counts as a false positive), plus "
        f"{len(pairs_topic)} topic records labelled RCT / systematic review / meta-analysis in "
        "`labels/topic_labels.csv` (from the title, and from publication types where the record's "
        "source shows them: 2 RCTs and 2 Cochrane reviews have no design word in their title). "
        "The classifier sees title, abstract, keywords and journal only. "
        "Ground truth: the first matching entry of `harvest/rules/design.toml` `[[pubtype]]`.",
        "",
        "### Raw, against publication types (corpus + topic RCTs/reviews)",
        "",
        *class_table(pairs, [*DESIGNS[:2], "sr+ma", *DESIGNS[2:]]),
        "",
        "### Confusion matrix (corpus only)",
        "",
        *confusion(pairs_corpus),
        "",
        "### Which text rule decided (corpus only)",
        "",
        ("Records each `[[rule]]` of `design.toml` decided (the first rule with a qualifying hit), split by "
         "what the publication types say: the same design, another design, or none (`(untyped)`)."),
        "",
        *rule_table(records, rs),
        "",
    ]
    results["raw"] = {c: prf(pairs, {"systematic_review", "meta_analysis"} if c == "sr+ma" else {c})
                      for c in TARGETS}  # fmt: skip
    # Hand review. Disagreements are too many to read them all (hundreds of publisher records
    # carry no design type), so random samples of each pool were read and their share is used
    # to estimate: see benchmarks/labels/design_adjudication.csv and LABELLING.md.
    adj_path = LABELS / "design_adjudication.csv"
    adjudicated: dict[str, str] = {}
    sampled_in: dict[str, set[str]] = defaultdict(set)
    if adj_path.exists():
        with adj_path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                adjudicated[r["pmid"]] = r["true_design"]
                sampled_in[r["pmid"]].add(r["sample"])
    classes = {"rct": {"rct"}, "sr+ma": {"systematic_review", "meta_analysis"}, "case_report": {"case_report"}}
    sample_prefix = {"rct": "rct", "sr+ma": "srma", "case_report": "case"}
    hidden_filter = {
        "rct": lambda r: re.search(r"randomi[sz]|randomly", r["abstract"], re.I),
        "sr+ma": lambda r: re.search(r"systematic|meta-?analy|searched", r["abstract"] + r["title"], re.I),
        "case_report": lambda r: True,
    }
    est_lines = ["| class | TP (type agrees) | FP pool | read | truly the class | FN pool | read | truly the class | "
                 "hidden pool | read | truly the class | est. precision | recall on typed records | "
                 "est. recall incl. hidden |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    results["adjudicated"] = {}
    todo = []
    for name, cls in classes.items():
        tp0 = [r for r in records if r["truth"] in cls and r["pred"] in cls]
        fp = [r for r in records if r["truth"] not in cls and r["pred"] in cls]
        fn = [r for r in records if r["truth"] in cls and r["pred"] not in cls]
        hid = [r for r in records if r["truth"] == UNTYPED and r["pred"] not in cls and hidden_filter[name](r)]
        todo += fp + fn

        def share(pool: list[dict[str, Any]], default: float, kind: str,
                  name: str = name, cls: set[str] = cls) -> tuple[str, int, float]:  # fmt: skip
            # Records that a rule added after the random samples were drawn moved into this pool are
            # all read (sample "<pool>_new") and counted as read; the rest of the pool is estimated
            # from the random sample drawn for it, so that its share stays a random sample's.
            tag = f"{sample_prefix[name]}_{kind}"
            full = [r for r in pool if f"{tag}_new" in sampled_in.get(r["pmid"], ())]
            full_ids = {r["pmid"] for r in full}
            rest = [r for r in pool if r["pmid"] not in full_ids]
            read = [r for r in rest if tag in sampled_in.get(r["pmid"], ())]
            yes = sum(1 for r in read if adjudicated[r["pmid"]] in cls)
            yes_full = sum(1 for r in full if adjudicated[r["pmid"]] in cls)
            q = yes / len(read) if read else default
            shown = f"{len(read)}" + (f" + {len(full)} all" if full else "")
            return shown, yes + yes_full, yes_full + q * len(rest)

        n_fp, y_fp, truly_fp = share(fp, 0.0, "fp")
        n_fn, y_fn, truly_fn = share(fn, 1.0, "fn")
        n_h, y_h, truly_h = share(hid, 0.0, "hidden")
        t_tp = sum(1 for t, q in pairs_topic if t in cls and q in cls)
        t_fn = sum(1 for t, q in pairs_topic if t in cls and q not in cls)
        est_tp = len(tp0) + truly_fp + t_tp
        est_fn = truly_fn + truly_h + t_fn
        prec = est_tp / (len(tp0) + len(fp) + t_tp) if (len(tp0) + len(fp) + t_tp) else None
        rec_all = est_tp / (est_tp + est_fn) if est_tp + est_fn else None
        typed_tp = len(tp0) + t_tp
        typed_fn = truly_fn + t_fn
        rec_typed = typed_tp / (typed_tp + typed_fn) if typed_tp + typed_fn else None
        # the target verdict uses the lower of the two recall figures
        rec = min(x for x in (rec_all, rec_typed) if x is not None) if (rec_all or rec_typed) else None
        results["adjudicated"][name] = (typed_tp, round(len(fp) - truly_fp), round(typed_fn), prec, rec)
        est_lines.append(
            f"| {name} | {len(tp0)} + {t_tp} topic | {len(fp)} | {n_fp} | {y_fp} | {len(fn)} + {t_fn} topic | {n_fn} | "
            f"{y_fn} | {len(hid)} | {n_h} | {y_h} | {fmt(prec)} | {fmt(rec_typed)} | {fmt(rec_all)} |"
        )
    out += [
        "### Estimated after reading samples of the disagreements",
        "",
        "Publication types are an incomplete truth here: 8,488 of the corpus records are publisher, in-process "
        "or in-data-review records with only \"Journal Article\", so a real RCT or systematic review among them "
        "counts as a false positive, and a publisher's \"Review\" or \"Case Reports\" is sometimes wrong. "
        "For each target class, random samples (fixed seed) of three pools were read — title and abstract — and "
        "given the design the abstract itself states (`benchmarks/labels/design_adjudication.csv`, rules in "
        "`LABELLING.md`): the false-positive pool (tagged the class, type says otherwise), the false-negative "
        "pool (typed the class, tagged otherwise; all of them for case reports), and a *hidden* pool of untyped "
        "records tagged otherwise that could be the class (abstract mentions randomisation / systematic search; "
        "for case reports, any untyped record). Estimated precision = (TP + FP × share truly the class) / "
        "predicted; estimated recall = that over itself plus FN × share truly the class plus hidden × share truly "
        "the class. *Recall on typed records* uses only records whose type says the class (minus those the "
        "reading found mis-typed) and the topic records: it does not depend on the hidden-pool estimate, which "
        "for case reports rests on 0 of 30 random untyped records (a 95% upper bound of ~10% of 8,000 records). "
        "Records that a rule written after the samples were drawn moved into a pool were all read (samples "
        "`*_new`; the \"read\" column shows them as \"+ n all\") and count as read; the rest of the pool is "
        "estimated from its random sample. "
        "The target verdicts use the lower of the two recall figures. One reader (the rules' author); samples of "
        "~30: ±0.10–0.15 on each share is realistic.",
        "",
        *est_lines,
        "",
    ]
    results["todo"] = todo
    results["missing"] = []
    results["records"] = records
    return results


def bench_topic(rs: RuleSet, topic: list[dict[str, Any]], labels: list[dict[str, str]], out: list[str]) -> dict[str, Any]:
    core = {"ims", "dry_needling", "prolotherapy"}
    res: dict[str, Any] = {}
    out += ["## 2. Intervention and design on the topic records", ""]
    for use_index in (True, False):
        iv_pairs: list[tuple[set[str], set[str]]] = []
        d_pairs: list[tuple[str, str]] = []
        errors = []
        for row, lab in zip(topic, labels, strict=True):
            tags = classify(row, rs, use_index=use_index)
            pred_iv = {t.value for t in tags if t.facet == "intervention"}
            true_iv = set(filter(None, lab["interventions"].split(";")))
            iv_pairs.append((true_iv, pred_iv))
            d = design_of(tags)
            d_pairs.append((lab["design"], d))
            if pred_iv != true_iv or d != lab["design"]:
                errors.append((lab, sorted(pred_iv), d))
        for scope, vocab in (("core (ims, dry_needling, prolotherapy)", core), ("all intervention values", None)):
            tp = fp = fn = 0
            for t, p in iv_pairs:
                if vocab is not None:
                    t, p = t & vocab, p & vocab
                tp += len(t & p)
                fp += len(p - t)
                fn += len(t - p)
            prec = tp / (tp + fp) if tp + fp else None
            rec = tp / (tp + fn) if tp + fn else None
            res[(use_index, "iv", scope)] = (tp, fp, fn, prec, rec)
        correct = sum(1 for t, p in d_pairs if t == p)
        res[(use_index, "design")] = (correct, len(d_pairs))
        # macro over design classes present
        classes = sorted({t for t, _ in d_pairs})
        out += [
            f"### {'With index data (publication types, MeSH)' if use_index else 'Text only'}",
            "",
            "| measure | cases | TP | FP | FN | precision | recall |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for scope in ("core (ims, dry_needling, prolotherapy)", "all intervention values"):
            tp, fp, fn, p, r = res[(use_index, "iv", scope)]
            out.append(f"| intervention, {scope} | {tp + fn} labels | {tp} | {fp} | {fn} | {fmt(p)} | {fmt(r)} |")
        dp = []
        for c in classes:
            tp, fp, fn, p, r = prf(d_pairs, {c})
            dp.append((c, tp, fp, fn, p, r))
        tp_all = sum(x[1] for x in dp)
        out.append(f"| design, exact (micro precision = recall = accuracy) | {len(d_pairs)} records | "
                   f"{tp_all} | {len(d_pairs) - tp_all} | {len(d_pairs) - tp_all} | "
                   f"{fmt(tp_all / len(d_pairs))} | {fmt(tp_all / len(d_pairs))} |")  # fmt: skip
        for c, tp, fp, fn, p, r in dp:
            out.append(f"| design = {c} | {tp + fn} | {tp} | {fp} | {fn} | {fmt(p)} | {fmt(r)} |")
        out += ["", "Disagreements:", ""]
        for lab, piv, d in errors:
            out.append(f"- row {lab['row']} *{lab['title'][:90]}*: labelled {lab['interventions'] or '—'} / "
                       f"{lab['design']}; tagged {';'.join(piv) or '—'} / {d}")  # fmt: skip
        if not errors:
            out.append("- none")
        out.append("")
    return res


def bench_outcomes(rs: RuleSet, corpus: list[dict[str, Any]], out: list[str]) -> dict[str, Any]:
    by_pmid = {r["pmid"]: r for r in corpus}
    labels = list(csv.DictReader((LABELS / "abstracts.csv").open(newline="", encoding="utf-8")))
    res: dict[str, Any] = {}
    out += ["## 3. Sample size and conclusion (hand-labelled abstracts)", "",
            f"{len(labels)} real abstracts (RCT-like and review-like records of any topic from the 10k file, "
            "drawn at random with a fixed seed; labelled by reading each abstract before the extractors "
            "were written; split by PMID hash into a development third and a held-out two-thirds; "
            "the rules were written looking at the development third only). "
            "Rules of labelling: `benchmarks/labels/LABELLING.md`. Extractors are run directly on every "
            "abstract (not gated by the design tag); the end-to-end line shows what `classify` stores.",
            ""]  # fmt: skip
    for split in ("test", "dev", "all"):
        rows = [l for l in labels if split == "all" or l["split"] == split]
        ss_ok = 0
        ss_errors = []
        conf: Counter[tuple[str, str]] = Counter()
        c_ok = c_n = 0
        na_given = Counter()
        for lab in rows:
            row = by_pmid[lab["pmid"]]
            doc = _Doc(row, False, rs.index)
            got = sample_size(doc, rs)
            got_n = str(got[0]) if got else ""
            if got_n == lab["sample_size"]:
                ss_ok += 1
            else:
                ss_errors.append((lab, got))
            got_c = conclusion(doc, rs)
            pred = got_c[0] if got_c else "(none)"
            if lab["conclusion"] == "n/a":
                na_given[pred] += 1
                continue
            c_n += 1
            conf[(lab["conclusion"], pred)] += 1
            c_ok += pred == lab["conclusion"]
        res[split] = {"ss": (ss_ok, len(rows)), "concl": (c_ok, c_n), "conf": conf, "na": na_given,
                      "ss_errors": ss_errors}  # fmt: skip
    for split, title in (("test", "Held-out two-thirds"), ("dev", "Development third"), ("all", "All")):
        r = res[split]
        ok, n = r["ss"]
        cok, cn = r["concl"]
        out += [f"### {title}", "",
                f"- sample size, exact match (blank = no count, must also match): **{ok}/{n} = {ok / n:.2f}**",
                f"- conclusion, accuracy on the {cn} abstracts that conclude on an intervention's effect: "
                f"**{cok}/{cn} = {cok / cn:.2f}**",
                f"- on the {sum(r['na'].values())} abstracts labelled n/a (no intervention effect concluded: "
                f"prognosis, diagnosis, associations, protocols, methods) the extractor said: "
                + ", ".join(f"{k} {v}" for k, v in r["na"].most_common()),
                ""]  # fmt: skip
        if split == "all":
            classes = ["favours_intervention", "no_difference", "inconclusive", "favours_control", "harm"]
            preds = [*classes, "(none)"]
            out += ["Conclusion confusion (all labelled, rows = label):", "",
                    "| label \\ predicted | " + " | ".join(preds) + " |",
                    "|---|" + "---:|" * len(preds)]  # fmt: skip
            for c in classes:
                if any(k[0] == c for k in r["conf"]):
                    out.append(f"| {c} | " + " | ".join(str(r["conf"][(c, p)] or "·") for p in preds) + " |")
            out += ["", "Sample-size misses (all):", ""]
            for lab, got in r["ss_errors"]:
                out.append(f"- {lab['pmid']} ({lab['split']}): labelled {lab['sample_size'] or 'none'}, "
                           f"extracted {got[0] if got else 'none'}" + (f" from \"{got[2][:140]}\"" if got else "")
                           + (f" — {lab['note']}" if lab["note"] else ""))  # fmt: skip
            out.append("")
    # end to end: what classify stores (design-gated)
    stored_ss = stored_c = gated = 0
    for lab in labels:
        tags = classify(by_pmid[lab["pmid"]], rs)
        d = design_of(tags)
        s = next((t.value for t in tags if t.facet == "sample_size"), "")
        c = next((t.value for t in tags if t.facet == "conclusion"), None)
        stored_ss += s == lab["sample_size"]
        if lab["conclusion"] != "n/a":
            gated += 1
            stored_c += c == lab["conclusion"]
        del d
    out += [f"End to end (`classify` with index data, sample size only for trial/observational/review "
            f"designs and conclusion only for RCTs and reviews): sample size exact {stored_ss}/{len(labels)}, "
            f"conclusion correct {stored_c}/{gated}.", ""]  # fmt: skip
    res["e2e"] = (stored_ss, len(labels), stored_c, gated)
    return res


def bench_throughput(rs: RuleSet, out: list[str], repeats: int = 3) -> dict[str, Any]:
    studies: dict[str, Study] = {}
    for item in parse_pubmed_xml(PUBMED_FILE):
        if isinstance(item, Study):
            studies[item.pmid or str(len(studies))] = item  # the file has one PMID twice
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = store.open_db(Path(tmp) / "bench.db")
        with store.write_tx(db):
            store.save_studies(db, list(studies.values()))
        n = len(studies)
        for mode, workers in (("one process", 1), ("forked workers", 2)):
            runs = []
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                tagged = tag_studies(db, ruleset=rs, workers=workers)
                runs.append((tagged / (time.perf_counter() - wall), tagged / (time.process_time() - cpu)))
            res[mode] = {"median": statistics.median(r[0] for r in runs), "best": max(r[0] for r in runs),
                         "cpu": max(r[1] for r in runs)}  # fmt: skip
        tags = db.execute("SELECT count(*) FROM tags").fetchone()[0]
        db.close()
    import os

    cpus = os.cpu_count()
    one, par = res["one process"], res["forked workers"]
    out += ["## 4. Re-tag throughput", "",
            f"`tag_studies(db)` (full re-tag: delete the automatic tags, classify, insert, one transaction) on the "
            f"{n:,} studies of `pubmed21n1298-even.xml.gz` in a fresh WAL database; {repeats} runs each; "
            f"{tags:,} tag rows. This machine has {cpus} CPUs shared with other jobs, so wall-clock figures vary "
            "run to run; the CPU-time figure (studies per second of this process's CPU) is the steadier one.", "",
            "| mode | median wall | best wall | best per CPU-second |", "|---|---:|---:|---:|",
            f"| one process (`workers=1`) | {one['median']:,.0f}/s | {one['best']:,.0f}/s | {one['cpu']:,.0f}/s |",
            f"| `workers=2` (forked; the default only with ≥ 3 CPUs) | {par['median']:,.0f}/s | {par['best']:,.0f}/s | – |",
            ""]  # fmt: skip
    return {"median": max(one["median"], par["median"]), "one": one, "par": par, "n": n, "tags": tags}


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "tagging.md"))
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--disagreements", help="write the design disagreements to review to this CSV")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 2
    rs = load_ruleset()
    corpus = corpus_rows()
    topic = topic_rows()
    topic_labels = list(csv.DictReader((LABELS / "topic_labels.csv").open(newline="", encoding="utf-8")))
    body: list[str] = []
    d = bench_design(rs, corpus, topic, topic_labels, body)
    t = bench_topic(rs, topic, topic_labels, body)
    o = bench_outcomes(rs, corpus, body)
    tp = None if args.skip_throughput else bench_throughput(rs, body)
    if args.disagreements:
        with open(args.disagreements, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["pmid", "truth", "pred", "status", "rule", "title", "evidence"])
            for r in d["todo"]:
                w.writerow([r["pmid"], r["truth"], r["pred"], r["status"], r["rule"], r["title"], r["evidence"]])
    head = ["# Tagging benchmark", "",
            f"Rule set `{rs.version}`; generated by `benchmarks/bench_tagging.py` on "
            f"{time.strftime('%Y-%m-%d')}. Every figure says how many cases it rests on.", "",
            "## Targets", "", "| target | measured | cases | met? |", "|---|---|---|---|"]  # fmt: skip

    def target_line(name: str, res: tuple[int, int, int, float | None, float | None], rmin: float,
                    pmin: float | None, label: str) -> str:  # fmt: skip
        tp, fp, fn, p, r = res
        ok = r is not None and r >= rmin and (pmin is None or (p is not None and p >= pmin))
        cases = (f"{tp + fn} true, {tp + fp} predicted" if label.startswith("raw")
                 else f"{tp} typed TP, {fn} typed FN (est.); precision from a sample of the FP pool")
        return (f"| {name} recall ≥ {rmin}" + (f", precision ≥ {pmin}" if pmin else "") + f" ({label}) | "
                f"recall {fmt(r)}, precision {fmt(p)} | {cases} | "
                f"{'yes' if ok else 'no'} |")  # fmt: skip

    for c, (rmin, pmin) in TARGETS.items():
        head.append(target_line(c, d["raw"][c], rmin, pmin, "raw publication types"))
        head.append(target_line(c, d["adjudicated"][c], rmin, pmin, "after hand review"))
    for use_index in (True, False):
        tp_, fp_, fn_, p_, r_ = t[(use_index, "iv", "core (ims, dry_needling, prolotherapy)")]
        ok = p_ is not None and r_ is not None and p_ >= 0.95 and r_ >= 0.95
        head.append(f"| topic records: intervention (core values) P, R ≥ 0.95 "
                    f"({'with index' if use_index else 'text only'}) | precision {fmt(p_)}, recall {fmt(r_)} | "
                    f"{tp_ + fn_} labels on 52 records | {'yes' if ok else 'no'} |")  # fmt: skip
        tp_, fp_, fn_, p_, r_ = t[(use_index, "iv", "all intervention values")]
        ok = p_ is not None and r_ is not None and p_ >= 0.95 and r_ >= 0.95
        head.append(f"| topic records: intervention (all values) P, R ≥ 0.95 "
                    f"({'with index' if use_index else 'text only'}) | precision {fmt(p_)}, recall {fmt(r_)} | "
                    f"{tp_ + fn_} labels | {'yes' if ok else 'no'} |")  # fmt: skip
        c, n = t[(use_index, "design")]
        head.append(f"| topic records: design P = R ≥ 0.95 ({'with index' if use_index else 'text only'}) | "
                    f"{c / n:.2f} | {n} records | {'yes' if c / n >= 0.95 else 'no'} |")  # fmt: skip
    ok, n = o["test"]["ss"]
    head.append(f"| sample size exact match (held-out; no target set) | {ok / n:.2f} | {n} abstracts | – |")
    cok, cn = o["test"]["concl"]
    head.append(f"| conclusion accuracy (held-out; no target set) | {cok / cn:.2f} | {cn} abstracts | – |")
    if tp:
        one, par = tp["one"], tp["par"]
        verdict = ("yes per CPU-second" if one["cpu"] >= 2000 else "no per CPU-second") + (
            "; wall clock: " + ("yes" if one["median"] >= 2000 else "no") + " in one process, "
            + ("yes" if par["median"] >= 2000 else "no") + " with 2 workers (load-dependent)")
        head.append(f"| full re-tag ≥ 2,000 studies/s | one process: median {one['median']:,.0f}/s wall, "
                    f"{one['cpu']:,.0f}/s per CPU-second; 2 forked workers: median {par['median']:,.0f}/s wall | "
                    f"{tp['n']} studies, 3 runs each | {verdict} |")  # fmt: skip
    head.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    notes = (HERE / "labels" / "ERRORS.md")
    tail = ["", notes.read_text("utf-8")] if notes.exists() else []
    Path(args.out).write_text("\n".join(head + body + tail) + "\n", encoding="utf-8")
    print("\n".join(head))
    if d["missing"]:
        print(f"{len(d['missing'])} design disagreements not yet reviewed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

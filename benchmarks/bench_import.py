"""End-to-end `harvest import` of the real 10k-record update file, in one run.

Measures, each in a fresh subprocess so peak RSS is the import's own:
  1. the first import into an empty database (parse, normalize, upsert, FTS) in records/s;
  2. the same file imported a second time (target: no new rows, >= 2x faster than 1),
     both as users run it (skipped by checksum) and with --force (parsed and compared);
  3. peak RSS of the first import (target <= 300 MB).
Baseline in the same run: the first import is the baseline for the re-import, and
``parse only`` (our streaming parser with no database) shows how much of the import
time is parsing.

    .venv/bin/python benchmarks/bench_import.py [--write]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pubmed" / "pubmed21n1298-even.xml.gz"
RESULTS = ROOT / "benchmarks" / "results" / "import.md"

# Runs in the child: times the work and reports its own peak RSS.
CHILD = """
import json, resource, sys, time
mode, path, db = sys.argv[1:4]
t = time.perf_counter()
if mode == "parse":
    from harvest.pubmed_xml import parse_pubmed_xml
    n = sum(1 for _ in parse_pubmed_xml(path))
    counts = {"found": n}
else:
    from harvest import ingest, store
    result = ingest.import_file(store.open_db(db), path, force=mode == "force")
    assert result.error is None, result.error
    counts = {**result.counts.as_dict(), "skipped": result.skipped}
elapsed = time.perf_counter() - t
# The import's own peak and its parser worker's: the larger is what the machine needs.
rss_mb = max(resource.getrusage(who).ru_maxrss
             for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print(json.dumps({"seconds": elapsed, "rss_mb": rss_mb, **counts}))
"""


def child(mode: str, db: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(DATA), str(db)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def best_of(runs: list[dict]) -> dict:
    """The fastest run's figures, with the highest RSS of all: on a shared VM a run is only
    ever slowed down by others, so the minimum is the least noisy estimate."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    best["median"] = statistics.median(r["seconds"] for r in runs)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of all four steps (default 5)")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found (see ../shared/data/README.md)")
    steps: dict[str, list[dict]] = {"parse": [], "first": [], "second": [], "force": []}
    for _ in range(args.repeat):  # rounds interleave the steps, so load hits them alike
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.db"
            for step, mode in (("parse", "parse"), ("first", "import"), ("second", "import"),
                               ("force", "force")):  # fmt: skip
                steps[step].append(child(mode, db))
    parse, first, second, forced = (best_of(steps[k]) for k in ("parse", "first", "second", "force"))
    n = first["found"]
    rate = n / first["seconds"]
    rows = [
        ("parse only (no database)", parse, "the same parser with no database: the floor"),
        ("first import (empty database)", first,
         f"target >= 5,000 records/s: {'met' if rate >= 5000 else 'MISSED'}; <= 300 MB: "
         f"{'met' if first['rss_mb'] <= 300 else 'MISSED'}"),
        ("second import (same file)", second,
         f"{first['seconds'] / second['seconds']:.0f}x faster than the first (target >= 2x): "
         f"skipped={second['skipped']}, the file's SHA-1 was imported before; new rows 0"),
        ("second import with --force", forced,
         f"{first['seconds'] / forced['seconds']:.1f}x faster than the first; every record "
         f"parsed and compared: new {forced['new']}, updated {forced['updated']}, "
         f"unchanged {forced['unchanged']}"),
    ]  # fmt: skip
    lines = [
        "# `harvest import` benchmark",
        "",
        f"File: `{DATA.name}` ({n:,} records incl. repeats). Machine: 2 CPUs (a shared VM whose "
        f"speed varies by tens of percent from minute to minute). {args.repeat} rounds of the four "
        "steps; each step is a fresh process. Seconds and records/s are the best round, with the "
        "median beside it; RSS is the highest peak of any round (the import process or its parser "
        "worker, whichever is larger).",
        "",
        "| step | best s | median s | records/s (best) | peak RSS (MB) | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, r, note in rows:
        lines.append(
            f"| {label} | {r['seconds']:.2f} | {r['median']:.2f} | {n / r['seconds']:,.0f} "
            f"| {r['rss_mb']:.0f} | {note} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()

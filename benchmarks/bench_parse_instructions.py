"""Instructions, not seconds: our PubMed XML parser vs ``Bio.Entrez.read`` under Valgrind.

Why: on this shared VM the same parse takes 1.25 s or 1.6 s depending on the minute, so the
timed ratio in ``bench_parse.py`` swings between about 7x and 8x from run to run. Counting the
CPU instructions each parser executes (Valgrind's callgrind) gives the same number every run,
so a change to the parser can be judged by it. Instructions are not time (libxml2 and expat
differ in memory behaviour), so the timed benchmark remains the one the target refers to.

Both parsers read the same slice: the first 1,000 records of the real update file. Each count
has the interpreter's start-up and imports (measured alone, the same way) subtracted.

    .venv/bin/python benchmarks/bench_parse_instructions.py [--records N] [--write]
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_FILE = REPO.parent / "shared" / "data" / "pubmed" / "pubmed21n1298-even.xml.gz"
RESULTS = REPO / "benchmarks" / "results" / "parse_instructions.md"

IMPORTS = {
    "ours": "from harvest.pubmed_xml import parse_pubmed_xml",
    "entrez": "from Bio import Entrez",
}
WORK = {
    "ours": "n = sum(1 for _ in parse_pubmed_xml(path))",
    "entrez": "n = len(Entrez.read(open(path, 'rb'))['PubmedArticle'])",
}


def make_slice(out: Path, records: int) -> None:
    """The update file's prolog and first ``records`` articles, closed as a valid document."""
    with gzip.open(DATA_FILE) as fh:
        data = fh.read(40_000 * records + 1_000_000)
    end = 0
    for _ in range(records):
        end = data.index(b"</PubmedArticle>", end) + len(b"</PubmedArticle>")
    out.write_bytes(data[:end] + b"\n</PubmedArticleSet>\n")


def instructions(code: str) -> int:
    """Instructions callgrind counts for ``python -c code``."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(re.search(r"Collected\s*:\s*(\d+)", done.stderr)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (Debian: apt-get install valgrind)")
    if not DATA_FILE.exists():
        sys.exit(f"{DATA_FILE} not found (see ../shared/data/README.md)")
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.xml"
        make_slice(path, args.records)
        for name in ("ours", "entrez"):
            base = instructions(IMPORTS[name])
            work = instructions(f"{IMPORTS[name]}\npath = {str(path)!r}\n{WORK[name]}\nassert n == {args.records}")
            counts[name] = work - base
    ratio = counts["entrez"] / counts["ours"]
    text = "\n".join([
        "# PubMed XML parse: instructions executed (callgrind)",
        "",
        f"First {args.records:,} records of `{DATA_FILE.name}`; start-up and imports subtracted.",
        "",
        "| parser | instructions | per record |",
        "|---|---:|---:|",
        f"| harvest.pubmed_xml | {counts['ours']:,} | {counts['ours'] // args.records:,} |",
        f"| Bio.Entrez.read | {counts['entrez']:,} | {counts['entrez'] // args.records:,} |",
        "",
        f"**Bio.Entrez.read executes {ratio:.1f}x the instructions of our parser.** Not the timed "
        "target (see parse.md): a stable gauge of parser changes on a machine whose speed varies.",
        "",
    ])  # fmt: skip
    print(text)
    if args.write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()

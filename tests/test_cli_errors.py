"""A newcomer's mistakes and a hostile environment get a message and a documented exit
status, never a traceback: unwritable output paths, a read-only database for `run`, options
that would be silently ignored, bad option values; and reading lists take the same study
references as `harvest tag`."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harvest.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env={"NCBI_EMAIL": None, **(env or {})})


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` (a file or folder) cannot be written, deleted or (a folder) written into,
    for root too: ``chattr +i`` as root, file modes otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a path unwritable")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    parent_mode = path.parent.stat().st_mode
    if not path.is_dir():
        path.parent.chmod(0o555)  # a file in a folder we may write could still be deleted
    try:
        yield
    finally:
        path.parent.chmod(parent_mode)
        path.chmod(mode)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo database for the tests that only read it (or copy it)."""
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    result = invoke("demo", "--db", str(db))
    assert result.exit_code == 0, result.output
    return db


@pytest.fixture
def own_demo(demo_db: Path, tmp_path: Path) -> Path:
    """A copy of the demo database this test may change."""
    db = tmp_path / "demo.db"
    with sqlite3.connect(demo_db) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    dst.close()
    return db


# 1. OS errors on output paths -----------------------------------------------------------


def test_report_into_an_impossible_folder_is_a_message(demo_db):
    result = invoke("report", "--db", str(demo_db), "-o", "/proc/nope")
    assert result.exit_code == 1, result.output
    assert "cannot write the report to /proc/nope" in result.output
    no_traceback(result)


def test_report_into_an_unwritable_folder_is_a_message(demo_db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with unwritable(out):
        result = invoke("report", "--db", str(demo_db), "-o", str(out))
    assert result.exit_code == 1, result.output
    assert f"cannot write the report to {out}" in result.output
    no_traceback(result)
    assert list(out.iterdir()) == []


def test_report_where_a_file_is_in_the_way_is_a_message(demo_db, tmp_path):
    (tmp_path / "file").write_text("x")
    result = invoke("report", "--db", str(demo_db), "-o", str(tmp_path / "file" / "sub"))
    assert result.exit_code == 1 and f"cannot write the report to {tmp_path / 'file'}" in result.output
    no_traceback(result)


def test_demo_with_unwritable_reports_folder_is_a_message(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    with unwritable(reports):
        result = invoke("demo", "--db", str(tmp_path / "demo.db"))
    assert result.exit_code == 1, result.output
    assert f"report: cannot write the report to {reports}" in result.output
    no_traceback(result)


def test_run_report_with_unwritable_reports_folder_is_a_message(own_demo, tmp_path):
    """`run --report` after a harvest (here: no feeds configured, so nothing to fetch)."""
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[topics.x]\nquery = "a"\n')
    reports = tmp_path / "reports"
    reports.mkdir()
    with unwritable(reports):
        result = invoke("run", "--db", str(own_demo), "--config", str(cfg), "--source", "feeds",
                        "--report", "--quiet")
    assert result.exit_code == 1, result.output
    assert f"report: cannot write the report to {reports}" in result.output
    no_traceback(result)


def test_demo_over_a_file_it_cannot_delete_is_a_message(own_demo):
    before = own_demo.read_bytes()
    with unwritable(own_demo):
        result = invoke("demo", "--db", str(own_demo))
    assert result.exit_code == 1, result.output
    assert f"{own_demo}: cannot remove the previous demo database" in result.output
    no_traceback(result)
    assert own_demo.read_bytes() == before


# 2. run on a database it cannot write ---------------------------------------------------


def test_run_on_a_read_only_database_exits_73_before_taking_the_lock(own_demo, tmp_path):
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[topics.x]\nquery = "a"\n')
    with unwritable(own_demo):
        result = invoke("run", "--db", str(own_demo), "--config", str(cfg), "--source", "feeds")
        assert result.exit_code == 73, result.output  # EX_CANTCREAT, not 1 (a source failed)
        assert f"cannot write {own_demo}" in result.output and "nothing was done" in result.output
        no_traceback(result)
        assert not Path(f"{own_demo}.lock").exists()
    assert "73" in invoke("run", "--help").output
    assert "**73**" in README.read_text()


def test_run_in_an_unwritable_folder_exits_73_and_creates_nothing(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[topics.x]\nquery = "a"\n')
    with unwritable(folder):
        result = invoke("run", "--db", str(folder / "e.db"), "--config", str(cfg), "--source", "feeds")
    assert result.exit_code == 73, result.output
    assert "is not writable" in result.output
    no_traceback(result)
    assert list(folder.iterdir()) == []


# 3. reading lists take doi: and id: references ------------------------------------------


def test_list_manages_studies_without_a_pmid(own_demo):
    db = str(own_demo)
    conn = sqlite3.connect(own_demo)
    doi_only = conn.execute("SELECT id, doi FROM studies WHERE pmid IS NULL AND doi IS NOT NULL "
                            "ORDER BY id LIMIT 1").fetchone()
    bare = conn.execute("SELECT id FROM studies WHERE pmid IS NULL AND doi IS NULL ORDER BY id "
                        "LIMIT 1").fetchone()
    with_pmid = conn.execute("SELECT pmid FROM studies WHERE pmid IS NOT NULL LIMIT 1").fetchone()[0]
    conn.close()
    assert doi_only and bare, "the demo sample should hold feed-only studies"
    assert invoke("list", "create", "--db", db, "mixed").exit_code == 0
    added = invoke("list", "add", "--db", db, "mixed", with_pmid, f"doi:{doi_only[1]}",
                   f"id:{bare[0]}", "--note", "to read")
    assert added.exit_code == 0, added.output
    assert "mixed: 3 added; 3 studies on the list" in added.output
    again = invoke("list", "add", "--db", db, "mixed", with_pmid, "--note", "read it")
    assert "mixed: 0 added; 3 studies on the list" in again.output, again.output  # was "1"
    assert "note: read it" in invoke("list", "show", "--db", db, "mixed").output
    shown = invoke("list", "show", "--db", db, "mixed")
    assert shown.exit_code == 0
    assert f"PMID {with_pmid}" in " ".join(shown.output.split())
    assert f"doi:{doi_only[1]}" in shown.output and f"id:{bare[0]}" in shown.output
    assert "PMID -" not in shown.output and "PMID         -" not in shown.output
    removed = invoke("list", "remove", "--db", db, "mixed", f"doi:{doi_only[1]}", f"id:{bare[0]}")
    assert removed.exit_code == 0 and "removed 2, 1 studies left" in removed.output, removed.output
    unknown = invoke("list", "add", "--db", db, "mixed", "id:999999")
    assert unknown.exit_code == 1 and "unknown study id:999999" in unknown.output
    no_traceback(unknown)


def test_list_show_names_a_study_by_id_when_its_doi_is_shared(own_demo):
    db = str(own_demo)
    conn = sqlite3.connect(own_demo)
    first, doi = conn.execute("SELECT id, doi FROM studies WHERE pmid IS NULL AND doi IS NOT NULL "
                              "ORDER BY id LIMIT 1").fetchone()  # fmt: skip
    # A second live row with the same DOI (e.g. a feed entry not merged yet).
    second = conn.execute("SELECT id FROM studies WHERE pmid IS NULL AND doi IS NULL ORDER BY id "
                          "LIMIT 1").fetchone()[0]  # fmt: skip
    conn.execute("UPDATE studies SET doi = ? WHERE id = ?", [doi, second])
    conn.commit()
    conn.close()
    assert invoke("list", "create", "--db", db, "shared").exit_code == 0
    assert invoke("list", "add", "--db", db, "shared", f"id:{first}", f"id:{second}").exit_code == 0
    shown = invoke("list", "show", "--db", db, "shared").output
    assert f"id:{first}" in shown and f"id:{second}" in shown and "doi:" not in shown, shown
    # ...and what it prints can be given back.
    removed = invoke("list", "remove", "--db", db, "shared", f"id:{first}", f"id:{second}")
    assert removed.exit_code == 0 and "0 studies left" in removed.output, removed.output


def test_list_from_query_items_without_pmid_can_be_removed(own_demo):
    db = str(own_demo)
    made = invoke("list", "create", "--db", db, "all", "--from-query", "--sql",
                  "SELECT id FROM studies WHERE pmid IS NULL")
    assert made.exit_code == 0, made.output
    shown = invoke("list", "show", "--db", db, "all")
    refs = [line.split()[0] for line in shown.output.splitlines()[1:] if not line.startswith("      ")]
    assert refs and all(r.startswith(("doi:", "id:")) for r in refs), shown.output
    removed = invoke("list", "remove", "--db", db, "all", *refs)
    assert removed.exit_code == 0 and "0 studies left" in removed.output, removed.output


def test_list_remove_needs_studies_or_delete_list_and_readme_says_so(own_demo):
    db = str(own_demo)
    assert invoke("list", "create", "--db", db, "x").exit_code == 0
    bare = invoke("list", "remove", "--db", db, "x")
    assert bare.exit_code == 2 and "--delete-list" in bare.output
    readme = README.read_text()
    assert "harvest list remove NAME [PMID…]" not in readme
    assert "--delete-list" in readme
    assert "harvest list add NAME STUDY…" in readme


# 4. options that would be ignored, bad values -------------------------------------------


@pytest.mark.parametrize("args, needs", [
    (["--all"], "--all needs --explain"),
    (["--note", "hi"], "--note needs --set or --unset"),
    (["--explain", "29764447", "--note", "hi"], "--note needs --set or --unset"),
])  # fmt: skip
def test_tag_options_that_would_be_ignored_are_usage_errors(demo_db, args, needs):
    def tagged() -> tuple:  # rows, not file bytes: in WAL mode a re-tag may not reach the file
        with contextlib.closing(sqlite3.connect(demo_db)) as conn:
            return conn.execute("SELECT max(created), count(*) FROM tags").fetchone()

    before = tagged()
    result = invoke("tag", "--db", str(demo_db), *args)
    assert result.exit_code == 2, result.output
    assert needs in result.output
    assert tagged() == before  # nothing re-tagged


@pytest.mark.parametrize("pair, message", [
    ("desing=rct", "unknown facet 'desing'"),
    ("design=rtc", "unknown design value 'rtc'"),
    ("design", "expected FACET=VALUE"),
])  # fmt: skip
def test_tag_set_bad_facet_or_value_is_a_usage_error(demo_db, pair, message):
    for option in ("--set", "--unset"):
        result = invoke("tag", "--db", str(demo_db), option, "29764447", pair)
        assert result.exit_code == 2, result.output
        assert message in result.output and option in result.output
        no_traceback(result)


def test_export_style_without_a_styled_format_is_a_usage_error(demo_db):
    result = invoke("export", "--db", str(demo_db), "--style", "apa", "--format", "ris")
    assert result.exit_code == 2, result.output
    assert "--style applies to --format markdown or html" in result.output
    ok = invoke("export", "--db", str(demo_db), "--style", "apa", "--format", "markdown")
    assert ok.exit_code == 0 and ok.output


def test_bad_since_and_unknown_list_are_usage_errors(own_demo):
    db = str(own_demo)
    since = invoke("export", "--db", db, "--since", "yesterday")
    assert since.exit_code == 2 and "'yesterday' is not an ISO date" in since.output
    create = invoke("list", "create", "--db", db, "x", "--from-query", "--since", "yesterday")
    assert create.exit_code == 2, create.output
    unknown = invoke("export", "--db", db, "--list", "nope")
    assert unknown.exit_code == 2 and "no reading list named 'nope'" in unknown.output
    assert "--list" in unknown.output


# 5. the demo's closing hint works as printed --------------------------------------------


def test_demo_hint_is_runnable_without_an_activated_venv(tmp_path):
    """Run as the README's install line leaves it: `.venv/bin/harvest` with the venv's
    bin folder not on PATH. The hint names that executable, and a readable export."""
    exe = Path(sys.executable).with_name("harvest")
    if not exe.is_file():
        pytest.skip(f"no harvest script beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and shutil.which("harvest", path=p) is None)  # fmt: skip
    db = tmp_path / "demo.db"
    done = subprocess.run([str(exe), "demo", "--db", str(db)], env=env, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    hint = done.stdout.split("Explore it:")[1]
    assert f"{exe} export --db {db} --format markdown -o demo.md" in hint
    assert f"{exe} serve --db {db}" in hint
    assert str(tmp_path / "reports" / "does_it_work-demo.html") in hint
    assert "harvest export --db" not in hint.replace(f"{exe} export", "")  # no bare `harvest`
    export_line = next(ln for ln in hint.splitlines() if " export " in ln)
    cmd = export_line.split("#")[0].split()
    ran = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "demo.md").read_text().startswith("# ")


# 6. the README on NCBI_EMAIL matches the configuration -------------------------------------


def test_readme_says_email_may_be_set_in_the_file(tmp_path):
    from harvest.config import load_settings

    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[ncbi]\nemail = "me@example.org"\n[topics.x]\nquery = "a"\n')
    settings = load_settings(str(cfg), db=str(tmp_path / "e.db"), env={})
    assert settings.ncbi.email == "me@example.org"
    assert "`email =` under `[ncbi]`" in README.read_text()


def test_reading_commands_leave_an_empty_file_empty(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    for args in (["status"], ["export", "--format", "jsonl"], ["list", "show"]):
        result = invoke(*args, "--db", str(empty))
        assert result.exit_code == 1 and "empty file, no database yet" in result.output, (args, result.output)
        no_traceback(result)
    assert empty.stat().st_size == 0


def test_report_and_serve_read_a_snapshot_they_may_not_write(own_demo, tmp_path):
    out = tmp_path / "out"
    with unwritable(own_demo):
        result = invoke("report", "--db", str(own_demo), "-o", str(out))
        assert result.exit_code == 0, result.output
        assert (out / "does_it_work-demo.html").stat().st_size > 10_000
        result = invoke("serve", "--db", str(own_demo), "--print-command")
        assert result.exit_code == 0 and "datasette" in result.output, result.output


def test_an_unknown_list_name_is_a_usage_error_everywhere(demo_db):
    db = str(demo_db)
    for args in (["list", "show", "nope"], ["list", "add", "nope", "1"],
                 ["list", "remove", "nope", "--delete-list"], ["export", "--list", "nope"]):
        result = invoke(*args, "--db", db)
        assert result.exit_code == 2 and "no reading list named 'nope'" in result.output, (args, result.output)


def test_run_on_a_file_that_is_not_ours_leaves_nothing_beside_it(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes\n")
    result = invoke("run", "--db", str(notes), "--source", "feeds", env={"NCBI_EMAIL": "a@b.org"})
    no_traceback(result)
    assert result.exit_code == 1 and "notes.db" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no notes.db.lock
    assert notes.read_text() == "my notes\n"


def test_importing_an_empty_xml_file_says_it_is_empty_xml(tmp_path):
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    result = invoke("import", "--db", str(tmp_path / "e.db"), str(empty))
    no_traceback(result)
    assert "empty input (0 bytes): not PubMed XML" in result.output, result.output
    assert "MEDLINE" not in result.output

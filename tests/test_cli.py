"""The command line as a user meets it: help, demo, import, export, status, clear errors."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
from click.testing import CliRunner
from fake_ncbi import Fault
from sqlite_utils import Database

from harvest.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env={"NCBI_EMAIL": None, **(env or {})})


def all_commands(group: click.Group = cli, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield prefix + name, cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + name + " ")


def test_every_command_has_help_and_is_in_the_readme():
    readme = README.read_text()
    for name, cmd in all_commands():
        assert cmd.help and len(cmd.help.strip()) > 20, f"`harvest {name}` lacks help"
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.help, f"`harvest {name} {param.opts[0]}` lacks help"
        assert f"harvest {name}" in readme, f"`harvest {name}` is not documented in README.md"
        result = invoke(*name.split(), "--help")
        first_line = cmd.help.split("\n")[0]
        assert result.exit_code == 0 and first_line in " ".join(result.output.split())


def test_demo_builds_database(tmp_path):
    db = tmp_path / "demo.db"
    result = invoke("demo", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "52 studies" in result.output
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM studies").fetchone() == (52,)
    how = conn.execute("SELECT how FROM sightings LIMIT 1").fetchone()[0]
    assert how.startswith("sample: ")  # the record's provenance travels with it
    # Rebuilding starts afresh rather than duplicating.
    assert invoke("demo", "--db", str(db)).exit_code == 0
    assert sqlite3.connect(db).execute("SELECT count(*) FROM studies").fetchone() == (52,)


def test_import_export_roundtrip(tmp_path, shared_data):
    db = str(tmp_path / "e.db")
    files = [shared_data / "eutils" / "biopython" / "pubmed4.xml",
             shared_data / "medline" / "pubmed_result2.txt"]
    result = invoke("import", "--db", db, *map(str, files))
    assert result.exit_code == 0, result.output
    assert re.search(r"pubmed4\.xml: ok: found \d+, new \d+", result.output)
    assert "pubmed_result2.txt: ok: found 4, new 4" in result.output
    again = invoke("import", "--db", db, str(files[0]))
    assert again.exit_code == 0 and "pubmed4.xml: skipped" in again.output
    forced = invoke("import", "--db", db, "--force", str(files[0]))
    assert re.search(r"pubmed4\.xml: ok: found (\d+), new 0, updated 0", forced.output)
    out = tmp_path / "out.jsonl"
    assert invoke("export", "--db", db, "-o", str(out)).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tert = next(r for r in rows if r["pmid"] == "27797938")
    assert "TERT" in tert["title"]  # inline <i> kept as text
    for key in ("pmid", "doi", "pmcid", "title", "abstract", "journal", "year", "authors",
                "publication_types", "mesh", "retracted", "deleted", "sources", "first_seen",
                "last_updated"):
        assert key in tert
    assert tert["sources"] == ["import"]
    assert isinstance(tert["authors"], list) and tert["retracted"] is False


def test_import_bad_file_keeps_going(tmp_path, shared_data):
    db = str(tmp_path / "e.db")
    bad = tmp_path / "broken.xml"
    good = shared_data / "eutils" / "biopython" / "pubmed2.xml"
    text = good.read_bytes()
    bad.write_bytes(text[: text.rindex(b"</PubmedArticle>") - 40])  # cut inside the last record
    html = shared_data / "eutils" / "biopython" / "pubmed3.html"
    result = invoke("import", "--db", db, str(bad), str(html), str(good))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert re.search(r"broken\.xml: error: found \d+.*broken\.xml: .*line \d+", lines[0])
    assert "pubmed3.html: error" in lines[1] and "not PubMed XML" in lines[1]
    assert "pubmed2.xml: ok" in lines[2]
    status = invoke("status", "--db", db)
    # The good file imported last must not hide the two that failed.
    assert "WARNING: last import of broken.xml failed: malformed XML at line" in status.output
    assert "WARNING: last import of pubmed3.html failed: not PubMed XML" in status.output
    assert "pubmed2.xml failed" not in status.output


def test_status_on_missing_db_is_a_clear_error(tmp_path):
    result = invoke("status", "--db", str(tmp_path / "nope.db"))
    assert result.exit_code == 1
    assert "no such database" in result.output
    assert "Traceback" not in result.output


def test_foreign_database_refused(tmp_path):
    path = tmp_path / "x.db"
    sqlite3.connect(path).execute("CREATE TABLE t (a)").connection.commit()
    result = invoke("import", "--db", str(path), str(README))
    assert result.exit_code == 1 and "not made by doesitwork" in result.output


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "h.toml"
    cfg.write_text("[topics\n")
    result = invoke("status", "--config", str(cfg), "--db", str(tmp_path / "e.db"))
    assert result.exit_code == 78 and "not valid TOML" in result.output  # EX_CONFIG
    cfg.write_text('[database]\npath = 5\n[topics.x]\nquery = "a"\n')
    result = invoke("status", "--config", str(cfg))
    assert result.exit_code == 78 and "[database] path must be a string" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_run_without_email_is_a_clear_error(tmp_path):
    db = tmp_path / "e.db"
    result = invoke("run", "--db", str(db))
    assert result.exit_code == 78  # EX_CONFIG, as documented in `run --help` and the README
    assert "NCBI_EMAIL is not set" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the database nor its lock file
    assert "78" in invoke("run", "--help").output


def test_run_unknown_feed_is_rejected_before_anything_runs(tmp_path, fake_ncbi):
    env = {"NCBI_EMAIL": "t@example.org", "NCBI_EUTILS_URL": fake_ncbi.base_url}
    result = invoke("run", "--db", str(tmp_path / "e.db"), "--source", "pubmed",
                    "--source", "feed:nope", env=env)
    assert result.exit_code == 2 and "unknown feed 'feed:nope'" in result.output
    assert fake_ncbi.requests == [] and list(tmp_path.iterdir()) == []


def test_run_quiet_hides_retry_warnings(tmp_path, fake_ncbi, shared_data):
    fake_ncbi.load_records(shared_data / "eutils" / "biopython" / "pubmed2.xml")
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[ncbi]\nbackfill_from = "1990/01/01"\n[topics.aaa]\nquery = "first"\n')
    env = {**os.environ, "NCBI_EMAIL": "t@example.org", "NCBI_EUTILS_URL": fake_ncbi.base_url,
           "HARVEST_CONFIG": str(cfg)}
    for quiet, db in ((True, "q.db"), (False, "v.db")):
        fake_ncbi.fail("esearch", with_=Fault.status(503))  # one transient error, then retried
        # A real process: logging as cron meets it, without pytest's handlers on the root logger.
        args = [sys.executable, "-m", "harvest", "run", "--db", str(tmp_path / db)]
        done = subprocess.run(args + ["--quiet"] * quiet, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        retry_lines = [ln for ln in done.stderr.splitlines() if "retrying" in ln]
        if quiet:
            assert done.stdout == done.stderr == ""
        else:
            assert len(retry_lines) == 1 and retry_lines[0].startswith("harvest: esearch: ")


def test_run_with_ncbi_silent_spends_two_requests_tries_and_asks_no_more(tmp_path, fake_ncbi):
    """A server that never answers: the first two topics wait out their tries; the third is
    not asked, recorded as failed with the reason; the run ends in seconds."""
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[ncbi]\nread_timeout = 0.3\nconnect_timeout = 0.3\nmax_tries = 2\n'
                   '[topics.aaa]\nquery = "first"\n[topics.bbb]\nquery = "second"\n'
                   '[topics.ccc]\nquery = "third"\n')  # fmt: skip
    fake_ncbi.fail("esearch", times=99, with_=Fault.stall(3))
    env = {**os.environ, "NCBI_EMAIL": "t@example.org", "NCBI_EUTILS_URL": fake_ncbi.base_url,
           "HARVEST_CONFIG": str(cfg)}  # fmt: skip
    db = tmp_path / "e.db"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harvest", "run", "--db", str(db), "--source", "pubmed"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 10
    assert len(fake_ncbi.requests_to("esearch")) == 4  # two topics' two tries, no more
    lines = done.stdout.splitlines()
    for topic in ("aaa", "bbb"):
        assert any(ln.startswith(f"pubmed:{topic}: error") and "timed out" in ln for ln in lines), lines
    assert any(ln.startswith("pubmed:ccc: error") and "not asked" in ln for ln in lines), lines
    runs = sqlite3.connect(db).execute("SELECT source, status FROM runs ORDER BY id").fetchall()
    assert runs == [("pubmed:aaa", "error"), ("pubmed:bbb", "error"), ("pubmed:ccc", "error")]


def _harvest_db(path: Path) -> None:
    """A small database as `harvest run` leaves it: ours, with a PubMed source."""
    from harvest import store

    db = store.open_db(path)
    store.ensure_source(db, "pubmed:ims", kind="pubmed", query="x")
    db.conn.close()


def test_demo_refuses_to_overwrite_other_files(tmp_path):
    real, foreign, text = tmp_path / "evidence.db", tmp_path / "foreign.db", tmp_path / "notes.txt"
    _harvest_db(real)
    sqlite3.connect(foreign).execute("CREATE TABLE t (a)").connection.commit()
    text.write_text("my notes\n")
    for path in (real, foreign, text):
        before = path.read_bytes()
        result = invoke("demo", "--db", str(path))
        assert result.exit_code == 1, result.output
        assert f"{path}: exists and is not a demo database" in result.output
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.db", "foreign.db", "notes.txt"]
    demo_db = tmp_path / "demo.db"
    assert invoke("demo", "--db", str(demo_db)).exit_code == 0
    assert invoke("demo", "--db", str(demo_db)).exit_code == 0  # a demo database is rebuilt


def test_demo_fills_an_empty_file(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()  # what `touch db/demo.db` leaves: nothing to lose
    result = invoke("demo", "--db", str(empty))
    assert result.exit_code == 0, result.output
    assert empty.stat().st_size > 0 and "studies" in result.output


def test_export_checks_tag_values(tmp_path):
    db = str(tmp_path / "demo.db")
    invoke("demo", "--db", db)
    typo = invoke("export", "--db", db, "--intervention", "dry_neddling")
    assert typo.exit_code == 2
    assert "unknown intervention value 'dry_neddling'" in typo.output and "dry_needling" in typo.output
    assert invoke("export", "--db", db, "--design", "bogus").exit_code == 2
    upper = invoke("export", "--db", db, "--design", "RCT", "--intervention", "Dry_Needling")
    lower = invoke("export", "--db", db, "--design", "rct", "--intervention", "dry_needling")
    assert upper.exit_code == 0 and upper.output == lower.output != ""


def test_export_output_error_is_a_message(tmp_path):
    db = str(tmp_path / "demo.db")
    invoke("demo", "--db", db)
    targets = [str(tmp_path / "no" / "dir" / "out.ris")]
    targets += ["/dev/full"] if Path("/dev/full").exists() else []
    for target in targets:
        result = invoke("export", "--db", db, "--format", "ris", "-o", target)
        assert result.exit_code == 1 and f"{target}: cannot write" in result.output
        assert isinstance(result.exception, SystemExit)  # not an OSError traceback


def test_busy_database_is_a_clear_message(tmp_path, monkeypatch):
    from harvest import store

    db = tmp_path / "demo.db"
    invoke("demo", "--db", str(db))
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)  # wait 0.2 s, not 30 s, for the lock
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        for args in (["tag", "--set", "29764447", "design=rct"], ["tag"]):
            result = invoke(*args, "--db", str(db))
            assert result.exit_code == 75, result.output  # EX_TEMPFAIL, as a locked `run`
            assert "database is busy: another process held its write lock too long" in result.output
            assert isinstance(result.exception, SystemExit)
    finally:
        holder.rollback()
        holder.close()


def test_read_commands_work_on_a_database_we_may_not_write(tmp_path, shared_data, monkeypatch):
    """A shared snapshot (a read-only file in a read-only folder): status, export and
    list show read it as it is, and nothing beside it is created or changed."""
    live = tmp_path / "live.db"
    assert invoke("import", "--db", str(live), str(shared_data / "eutils" / "biopython" / "pubmed2.xml")).exit_code == 0
    folder = tmp_path / "snapshot"
    folder.mkdir()
    db = folder / "e.db"
    with sqlite3.connect(live) as src, sqlite3.connect(db) as copy:  # a snapshot: one file
        src.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    copy.close()
    before = db.read_bytes()
    db.chmod(0o444)
    folder.chmod(0o555)
    real_access = os.access
    # root may write anyway: have the OS answer as it does for everyone else
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK and
                        Path(p).resolve() in (db.resolve(), folder.resolve()) else real_access(p, mode, **kw))
    try:
        status = invoke("status", "--db", str(db))
        assert status.exit_code == 0, status.output
        assert "2 studies stored" in status.output
        export = invoke("export", "--db", str(db), "--format", "jsonl")
        assert export.exit_code == 0, export.output
        assert len(export.output.splitlines()) == 2
        assert invoke("list", "show", "--db", str(db)).exit_code == 0
        assert sorted(p.name for p in folder.iterdir()) == ["e.db"] and db.read_bytes() == before
        # A command that writes still says why it cannot.
        tag = invoke("import", "--db", str(db), str(shared_data / "eutils" / "biopython" / "pubmed2.xml"))
        assert tag.exit_code != 0 and "not readable and writable" in tag.output
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


def test_tag_set_and_unset_together_is_a_usage_error(tmp_path):
    db = tmp_path / "d.db"
    assert invoke("demo", "--db", str(db)).exit_code == 0
    result = invoke("tag", "--db", str(db), "--set", "17718644", "design=rct",
                    "--unset", "17718644", "intervention=dry_needling")
    assert result.exit_code == 2 and "not both" in result.output


def test_status_check_finds_an_index_an_outside_writer_left_stale(tmp_path, shared_data):
    db = tmp_path / "e.db"
    assert invoke("import", "--db", str(db), str(shared_data / "eutils" / "biopython" / "pubmed4.xml")).exit_code == 0
    clean = invoke("status", "--db", str(db), "--check")
    assert clean.exit_code == 0 and f"check: ok ({db})" in clean.output, clean.output
    # A notebook replacing a row with the sqlite3 module: recursive_triggers is off there, so
    # the row's old words stay in the index. The plain integrity-check does not see it.
    conn = sqlite3.connect(db)
    (study_id,) = conn.execute("SELECT min(id) FROM studies").fetchone()
    conn.execute("INSERT OR REPLACE INTO studies (id, title, first_seen, last_updated) "
                 "VALUES (?, 'Replaced by hand', 'x', 'x')", [study_id])  # fmt: skip
    conn.commit()
    conn.execute("INSERT INTO studies_fts(studies_fts) VALUES('integrity-check')")
    conn.close()
    stale = invoke("status", "--db", str(db), "--check")
    assert stale.exit_code == 1, stale.output
    assert "the full-text index does not match the studies table" in stale.output
    assert "sqlite-utils rebuild-fts DB studies" in stale.output
    Database(db)["studies"].rebuild_fts()  # the repair the message names
    assert invoke("status", "--db", str(db), "--check").exit_code == 0
    # While a harvest holds the write lock the index cannot be compared: not checked, not
    # reported as damaged.
    busy = sqlite3.connect(db)
    busy.execute("BEGIN IMMEDIATE")
    try:
        locked = invoke("status", "--db", str(db), "--check")
    finally:
        busy.rollback()
    assert locked.exit_code == 0, locked.output
    assert "full-text index not checked (database is locked)" in locked.output
    assert f"check: incomplete ({db})" in locked.output and "does not match" not in locked.output

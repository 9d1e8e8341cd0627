"""The command line as a user meets it: help, demo, import, export, status, clear errors."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fake_ncbi import Fault

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
    assert "last error" in status.output or "import" in status.output


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
    assert result.exit_code == 1 and "not valid TOML" in result.output


def test_run_without_email_is_a_clear_error(tmp_path):
    result = invoke("run", "--db", str(tmp_path / "e.db"))
    assert result.exit_code == 1
    assert "NCBI_EMAIL is not set" in result.output


@pytest.mark.parametrize("args", [["run"], ["status"], ["export"]])
def test_db_from_environment(tmp_path, args):
    db = tmp_path / "env.db"
    invoke("demo", "--db", str(db))
    result = invoke(*args, env={"HARVEST_DB": str(db), "NCBI_EMAIL": None})
    if args == ["status"]:
        assert "sample [sample]" in result.output
    elif args == ["export"]:
        assert len(result.output.splitlines()) == 52
    else:
        assert "NCBI_EMAIL" in result.output


def test_run_one_source_fails_others_still_run(tmp_path, fake_ncbi, shared_data):
    fake_ncbi.load_records(shared_data / "eutils" / "biopython" / "pubmed2.xml")
    cfg = tmp_path / "harvest.toml"
    cfg.write_text('[ncbi]\nbackfill_from = "1990/01/01"\n'
                   '[topics.aaa]\nquery = "first"\n[topics.bbb]\nquery = "second"\n')
    # The first search gets a permanent error inside an HTTP 200 (not retried).
    fake_ncbi.fail("esearch", at=1, with_=Fault.body(
        shared_data / "eutils" / "biopython" / "epost2.xml"))
    env = {"NCBI_EMAIL": "t@example.org", "NCBI_EUTILS_URL": fake_ncbi.base_url,
           "HARVEST_CONFIG": str(cfg), "HARVEST_DB": str(tmp_path / "e.db")}
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("pubmed:aaa: error:")
    assert re.match(r"pubmed:bbb: ok: found \d+, new \d+", lines[1])
    status = CliRunner().invoke(cli, ["status"], env=env).output
    assert "pubmed:aaa [pubmed]: last run error" in status and "last error:" in status
    assert "pubmed:bbb [pubmed]: last run ok" in status


def test_run_source_feeds_only_needs_no_email(tmp_path, shared_data):
    from fake_feeds import FakeFeeds, Reply, fixture

    with FakeFeeds() as host:
        url = host.route("/pm", Reply(body=fixture("pubmed_search_rss.xml"), etag='"v1"'))
        cfg = tmp_path / "harvest.toml"
        cfg.write_text('[topics.dry_needling]\nquery = "x"\n'
                       f'[[feeds]]\nname = "pm"\nkind = "pubmed-search"\ntopic = "dry_needling"\nurl = "{url}"\n')
        env = {"HARVEST_CONFIG": str(cfg), "HARVEST_DB": str(tmp_path / "e.db"), "NCBI_EMAIL": None}
        result = CliRunner().invoke(cli, ["run", "--source", "feeds"], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("feed:pm: ok")
        again = CliRunner().invoke(cli, ["run", "--source", "feed:pm"], env=env)
        assert again.output.startswith("feed:pm: unchanged")  # a 304 on the stored ETag
        assert host.requests_to("/pm")[-1].headers.get("if-none-match") == '"v1"'
        bad = CliRunner().invoke(cli, ["run", "--source", "nonsense"], env=env)
        assert bad.exit_code == 2 and "unknown source 'nonsense'" in bad.output


def test_tag_explain_set_unset_and_jsonl_carries_tags(tmp_path):
    db = str(tmp_path / "demo.db")
    invoke("demo", "--db", db)
    pmid = "29764447"  # a real protocol: "... versus normal saline for knee osteoarthritis: a protocol"
    out = invoke("tag", "--db", db, "--explain", pmid).output
    assert re.search(r"^design\s+protocol\s+\[rule design\.", out, re.M)
    assert re.search(r"^comparator\s+placebo_injection .*\[normal saline\]", out, re.M)
    result = invoke("tag", "--db", db, "--set", pmid, "design=rct", "--note", "checked full text")
    assert result.exit_code == 0 and re.search(r"^design\s+rct\s+\[manual\] checked full text", result.output, re.M)
    assert invoke("tag", "--db", db, "--unset", pmid, "comparator=placebo_injection").exit_code == 0
    retag = invoke("tag", "--db", db)
    assert re.match(r"Tagged 52 studies with rule set \S+ in ", retag.output)
    rows = {r["pmid"]: r for r in map(json.loads, invoke("export", "--db", db).output.splitlines())}
    assert rows[pmid]["design"] == "rct"  # the manual tag survived re-tagging
    assert rows[pmid]["comparators"] == []  # the unset too
    assert rows[pmid]["interventions"] == ["prolotherapy"]
    assert rows[pmid]["conditions"] == ["knee_osteoarthritis"]
    for key in ("population", "sample_size", "conclusion"):
        assert key in rows[pmid]
    bad = invoke("tag", "--db", db, "--set", pmid, "design=bogus")
    assert bad.exit_code == 1 and "unknown design value 'bogus'" in bad.output
    missing = invoke("tag", "--db", db, "--explain", "1")
    assert missing.exit_code == 1 and "unknown PMID 1" in missing.output

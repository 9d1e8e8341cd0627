"""A real ``harvest serve`` process driven by headless Chromium (Debian's ``chromium``).

It serves the real-data fixture, or the bundled demo sample where ../shared is absent.

Screenshots are saved under tests/artifacts/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from workbench_fixture import build_demo_fixture_db, build_fixture_db

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
# `harvest serve` once cli.py registers the workbench commands; until then the same commands
# wired onto the same group.
_WIRED = (
    "from harvest.cli import cli\n"
    "from harvest.cli_workbench import export_cmd, list_group, serve_cmd\n"
    "for c in (export_cmd, list_group, serve_cmd):\n"
    "    cli.commands.pop(c.name, None); cli.add_command(c)\n"
    "cli()\n"
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _harvest_serve() -> list[str]:
    from harvest.cli import cli

    if "serve" in cli.commands and "list" in cli.commands:
        return [sys.executable, "-m", "harvest", "serve"]
    return [sys.executable, "-c", _WIRED, "serve"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    try:
        db_path = build_fixture_db(tmp_path_factory.mktemp("wbs") / "evidence.db")
    except pytest.skip.Exception:  # no ../shared data (a user's clone): the bundled sample
        db_path = build_demo_fixture_db(tmp_path_factory.mktemp("wbs-demo") / "evidence.db")
    port = _free_port()
    log = (tmp_path_factory.getbasetemp() / "serve.log").open("w")
    # the generated metadata goes to $XDG_CACHE_HOME, kept out of the real ~/.cache
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("wbs-cache"))}
    proc = subprocess.Popen([*_harvest_serve(), "--db", str(db_path), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/-/versions.json", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("harvest serve did not start:\n"
                                + (tmp_path_factory.getbasetemp() / "serve.log").read_text())
                time.sleep(0.2)
        yield url, db_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def server(served: tuple[str, Path]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(15000)
        yield pg
        browser.close()


def test_versions_pinned(server: str) -> None:
    import json

    versions = json.loads(urllib.request.urlopen(server + "/-/versions.json").read())
    assert versions["datasette"]["version"].startswith("0.65.")
    settings = json.loads(urllib.request.urlopen(server + "/-/settings.json").read())
    assert settings["sql_time_limit_ms"] == 2000 and settings["allow_download"] is False
    databases = json.loads(urllib.request.urlopen(server + "/-/databases.json").read())
    assert databases[0]["is_mutable"] is True and databases[0]["is_memory"] is False


def test_browse_search_facet_map_and_download(server: str, page: object) -> None:
    import rispy

    pg = page
    pg.goto(server + "/evidence/studies_tagged")
    assert "Studies with their tags" in pg.title() or "Studies with their tags" in pg.content()
    pg.screenshot(path=str(ARTIFACTS / "workbench-1-studies.png"), full_page=False)

    pg.fill("input#_search", '"dry needling"')
    pg.press("input#_search", "Enter")
    pg.wait_for_load_state()
    assert "_search=" in pg.url
    text = pg.inner_text("body")
    assert 'where search matches "\\"dry needling\\""' in text or "search matches" in text
    rows = pg.locator("table.rows-and-columns tbody tr")
    assert rows.count() > 0
    pg.screenshot(path=str(ARTIFACTS / "workbench-2-search.png"), full_page=False)

    # apply the design facet: the "rct" value link
    facet = pg.locator('.facet-info[data-column="design"] a', has_text="rct").first
    facet.click()
    pg.wait_for_load_state()
    assert "design=rct" in pg.url
    designs = pg.locator("table.rows-and-columns tbody td.col-design")
    assert designs.count() > 0 and all(
        designs.nth(i).inner_text().strip() == "rct" for i in range(designs.count()))
    pg.screenshot(path=str(ARTIFACTS / "workbench-3-facet.png"), full_page=False)
    table = pg.locator("table.rows-and-columns")
    table.scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / "workbench-3b-facet-rows.png"), full_page=False)
    # tag lists read as text, not JSON; links go out to PubMed/DOI
    assert '["' not in table.inner_text() and "[]" not in table.inner_text()
    assert table.locator('a[href^="https://doi.org/"]').count() > 0

    pg.goto(server + "/evidence/evidence_map")
    assert "Evidence map" in pg.inner_text("body")
    assert pg.locator("table.rows-and-columns tbody tr").count() > 5
    assert "prolotherapy" in pg.inner_text("table.rows-and-columns")
    pg.screenshot(path=str(ARTIFACTS / "workbench-4-evidence-map.png"), full_page=True)

    pg.goto(server + "/evidence/latest_rcts?intervention=dry_needling")
    with pg.expect_download() as info:
        pg.click('a[href*=".ris"]')
    target = ARTIFACTS / "latest_rcts.ris"
    info.value.save_as(str(target))
    entries = rispy.loads(target.read_text("utf-8"))
    assert entries and all("design: rct" in e["keywords"] for e in entries)
    assert all("intervention: dry_needling" in e["keywords"] for e in entries)
    pg.screenshot(path=str(ARTIFACTS / "workbench-5-latest-rcts.png"), full_page=False)


def test_hostile_search_in_the_browser(server: str, page: object) -> None:
    pg = page
    pg.goto(server + "/evidence/search_studies?q=%22dry+needling%22+AND+(")
    body = pg.inner_text("body")
    assert "syntax error" in body and "Traceback" not in body
    pg.screenshot(path=str(ARTIFACTS / "workbench-6-hostile.png"), full_page=False)


def test_serves_while_cron_writes(served: tuple[str, Path]) -> None:
    """Mutable mode: a reader is never blocked by a writer and sees each commit (WAL)."""
    import json

    from harvest.store import open_db, write_tx

    url, db_path = served
    query = url + "/evidence/studies.json?pmid=23690322&_shape=objects&_col=title"

    def title() -> str:
        return json.loads(urllib.request.urlopen(query, timeout=5).read())["rows"][0]["title"]

    before = title()
    db = open_db(db_path)
    try:
        with write_tx(db):  # a harvest batch holding the write lock
            db.execute("UPDATE studies SET title = 'Revised: ' || title WHERE pmid = '23690322'")
            started = time.monotonic()
            assert title() == before  # the last committed snapshot, at once
            assert time.monotonic() - started < 2
        assert title() == "Revised: " + before
    finally:
        db.conn.close()

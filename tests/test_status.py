"""`harvest status` warnings, from a database written by real runs."""

from __future__ import annotations

import dataclasses
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_feeds import FakeFeeds, Reply

import harvest
from harvest import status, store
from harvest.config import load_settings
from harvest.feed_harvest import harvest_feeds

PACKAGED = Path(harvest.__file__).parent / "harvest.toml"
FAST = {"connect_timeout": 2, "read_timeout": 1, "max_seconds": 3, "max_bytes": 1_000_000}


def _closed_port_url() -> str:
    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/feed.xml"


def _harvest_one_feed(tmp_path, url: str):
    tmp_path.mkdir(exist_ok=True)
    base = load_settings(PACKAGED, db=tmp_path / "t.db", env={})
    feed = {"name": "jospt", "kind": "journal", "url": url}
    settings = dataclasses.replace(base, raw={**base.raw, "feeds": [feed], "feed_options": FAST})
    db = store.open_db(tmp_path / "t.db")
    (result,) = harvest_feeds(db, settings, upgrade=False)
    assert result.status == "error"
    return db


def _feed_row(db):
    (row,) = [r for r in status.source_status(db, now=datetime.now(UTC)) if r["name"] == "feed:jospt"]
    return row


def test_a_feed_that_never_connected_says_no_reply_and_why(tmp_path):
    db = _harvest_one_feed(tmp_path, _closed_port_url())
    (warning,) = [w for w in _feed_row(db)["warnings"] if w.startswith("feed is")]
    assert warning.startswith("feed is failing: no complete HTTP reply was received (last error: ")
    assert "connection failed" in warning  # the fetch error, as feeds.py recorded it
    assert "HTTP None" not in status.format_row(_feed_row(db))
    # A reply cut off by the time limit has no status recorded either: same wording, its error.
    with FakeFeeds() as host:
        url = host.route("/drip", Reply(drip=0.05))
        db = _harvest_one_feed(tmp_path / "dripping", url)
    (warning,) = [w for w in _feed_row(db)["warnings"] if w.startswith("feed is")]
    assert warning.startswith("feed is failing: no complete HTTP reply was received (last error: ")
    assert "time limit" in warning
    # A feed that did answer, with an error status, still shows that status.
    with FakeFeeds() as host:
        url = host.route("/down", Reply(status=503, body=b"<html>down</html>", content_type="text/html"))
        db = _harvest_one_feed(tmp_path / "answered", url)
    (warning,) = [w for w in _feed_row(db)["warnings"] if w.startswith("feed is")]
    assert warning == "feed is failing (HTTP 503); check its URL in harvest.toml"


@pytest.mark.parametrize("error", [None, "ConnectError: name or service not known"])
def test_no_reply_without_or_with_a_recorded_error(tmp_path, error):
    """Rows written before errors were recorded on the source still read sensibly."""
    db = _harvest_one_feed(tmp_path, _closed_port_url())
    with store.write_tx(db):
        db["sources"].update("feed:jospt", {"last_error": error})
        db["runs"].update(_feed_row(db)["run_id"], {"error": error})
    (warning,) = [w for w in _feed_row(db)["warnings"] if w.startswith("feed is")]
    expected = "no complete HTTP reply was received" + (f" (last error: {error})" if error else "")
    assert warning == f"feed is failing: {expected}; check its URL in harvest.toml and the network"

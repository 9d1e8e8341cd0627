"""A fake feed host on 127.0.0.1 (ephemeral port) for the feed tests.

Each path is given a list of :class:`Reply` objects served in turn (the last one
repeats), so a test can script "200 with ETag, then 304", "404 twice", or "GUIDs that
change on every fetch". Replies can also misbehave the way hostile or broken servers
do: a body far over the size cap, an endless stream, a drip of one byte at a time, a
server that accepts and never answers. Every misbehaviour is bounded by
:data:`MAX_MISBEHAVE` seconds and stops when the server stops, so a broken test still
ends. The socket listens from construction: no waiting or sleeping for startup.

Every request is recorded with its headers (:attr:`FakeFeeds.requests`), which is how
tests check conditional GETs and that no XML entity made us fetch a URL.

``FakeFeeds(tls=True)`` serves https with the self-signed certificate below (for
127.0.0.1 only); a client trusts it with ``session.verify = fake.cafile``.
"""

from __future__ import annotations

import gzip
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "feeds"
MAX_MISBEHAVE = 20.0  # no misbehaving reply outlives this many seconds
RSS = "application/rss+xml; charset=utf-8"
# A self-signed certificate for IP 127.0.0.1 (EC P-256, valid 2000-2125) and its key: test
# use only, on the loopback interface.
TLS_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBozCCAUqgAwIBAgIBAjAKBggqhkjOPQQDAjAUMRIwEAYDVQQDDAkxMjcuMC4w
LjEwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNTEyMzEyMzU5NTlaMBQxEjAQBgNVBAMM
CTEyNy4wLjAuMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEKp3h7j8Qd7uUj2
t4vUOwdmPKWGkgaZIZ6PMEKyLROME/+QRHR5AjTeknIMEWTLL3rn7gOfk84dqi/a
bWO1Z7KjgYowgYcwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUJvhJbJGM55nL
xIFldm+t465MZdIwHwYDVR0jBBgwFoAUJvhJbJGM55nLxIFldm+t465MZdIwDwYD
VR0RBAgwBocEfwAAATAOBgNVHQ8BAf8EBAMCAoQwEwYDVR0lBAwwCgYIKwYBBQUH
AwEwCgYIKoZIzj0EAwIDRwAwRAIgBVUrBhAaxR5+4kxmnpwM1X57hBs2gWJFejbF
cVePD3UCIEFBeFgFnIHdnvXDOKzNtmDdqDgqKM24HZEdQen3ajos
-----END CERTIFICATE-----
"""
TLS_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRlf852nVG1wcFAXD
wgWl6nnYy/epXI6n8izJX26jvTShRANCAARCqd4e4/EHe7lI9reL1DsHZjylhpIG
mSGejzBCsi0TjBP/kER0eQI03pJyDBFkyy965+4Dn5POHaov2m1jtWey
-----END PRIVATE KEY-----
"""


@dataclass
class Reply:
    status: int = 200
    body: bytes | Callable[[FakeFeeds], bytes] = b""
    content_type: str | None = RSS
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    # misbehaviours
    stream_bytes: int = 0  # send this many filler bytes after ``body`` (e.g. 50 MB)
    declare_length: bool = True  # send Content-Length for streamed bodies
    endless: bool = False  # stream filler until the client goes away
    drip: float = 0.0  # seconds between single bytes of the body, forever
    stall: float = 0.0  # seconds to wait before answering at all
    gzip: bool = False  # compress the body (Content-Encoding: gzip)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    time: float


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class FakeFeeds:
    """Feed imitations on an ephemeral loopback port. Use as a context manager."""

    def __init__(self, *, tls: bool = False) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self._requests: list[Request] = []
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None
        self._tls_dir: Path | None = None
        if tls:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fake-feeds-tls-"))
            (self._tls_dir / "cert.pem").write_text(TLS_CERT)
            (self._tls_dir / "key.pem").write_text(TLS_KEY)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._tls_dir / "cert.pem", self._tls_dir / "key.pem")
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def cafile(self) -> str:
        """The certificate to trust (``requests``' ``verify``); only for ``tls=True``."""
        if self._tls_dir is None:
            raise ValueError("this fake serves plain http")
        return str(self._tls_dir / "cert.pem")

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls_dir else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> FakeFeeds:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=5)
        self._server.server_close()
        if self._tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> FakeFeeds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, path: str, *replies: Reply) -> str:
        """Serve ``replies`` at ``path`` in turn (the last repeats); returns the full URL."""
        with self._lock:
            self._routes[path] = list(replies)
            self._served[path] = 0
        return self.url(path)

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if r.path == path]

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def _next(self, path: str) -> Reply | None:
        with self._lock:
            replies = self._routes.get(path)
            if not replies:
                return None
            n = self._served[path]
            self._served[path] = n + 1
            return replies[min(n, len(replies) - 1)]

    def _record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(Request(path, headers, time.monotonic()))


def _handler(fake: FakeFeeds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one response per connection; a body may end at close

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path
            fake._record(path, {k.lower(): v for k, v in self.headers.items()})
            reply = fake._next(path)
            if reply is None:
                self._plain(404, b"<html><body>Not Found</body></html>", "text/html")
                return
            deadline = time.monotonic() + MAX_MISBEHAVE
            if reply.stall:
                fake.stopping.wait(min(reply.stall, MAX_MISBEHAVE))
                if fake.stopping.is_set():
                    return
            body = reply.body(fake) if callable(reply.body) else reply.body
            inm = self.headers.get("If-None-Match")
            if reply.etag and inm == reply.etag and reply.status == 200:
                self._plain(304, b"", None, {"ETag": reply.etag})
                return
            ims = self.headers.get("If-Modified-Since")
            if reply.last_modified and ims == reply.last_modified and reply.status == 200:
                self._plain(304, b"", None, {"Last-Modified": reply.last_modified})
                return
            headers = dict(reply.headers)
            if reply.etag:
                headers["ETag"] = reply.etag
            if reply.last_modified:
                headers["Last-Modified"] = reply.last_modified
            try:
                if reply.drip:
                    self._head(reply.status, reply.content_type, headers, None)
                    while not fake.stopping.is_set() and time.monotonic() < deadline:
                        self.wfile.write(b"<")
                        self.wfile.flush()
                        time.sleep(reply.drip)
                    return
                if reply.endless or reply.stream_bytes:
                    total = None if reply.endless or not reply.declare_length else (
                        len(body) + reply.stream_bytes)  # fmt: skip
                    self._head(reply.status, reply.content_type, headers, total)
                    self.wfile.write(body)
                    chunk = b"<item><title>filler</title></item>\n" * 1800  # ~64 KB
                    sent = 0
                    while not fake.stopping.is_set() and time.monotonic() < deadline:
                        if not reply.endless and sent >= reply.stream_bytes:
                            break
                        piece = chunk if reply.endless else chunk[: reply.stream_bytes - sent]
                        self.wfile.write(piece)
                        sent += len(piece)
                    return
                if reply.gzip:
                    body = gzip.compress(body)
                    headers["Content-Encoding"] = "gzip"
                self._plain(reply.status, body, reply.content_type, headers)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return  # the client hung up: what a size or time limit does

        def _head(self, status: int, ctype: str | None, headers: dict[str, str],
                  length: int | None) -> None:  # fmt: skip
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            for k, v in headers.items():
                self.send_header(k, v)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()

        def _plain(self, status: int, body: bytes, ctype: str | None,
                   headers: dict[str, str] | None = None) -> None:  # fmt: skip
            self._head(status, ctype, headers or {}, len(body))
            if body:
                self.wfile.write(body)

    return Handler


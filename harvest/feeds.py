"""Fetching journal and PubMed search feeds: the only feed module that touches the network.

feedparser 6 has no timeout and no size cap and is dropping its HTTP code (field notes
3.7), so we fetch with requests ourselves and hand feedparser bytes. Every fetch is a
conditional GET with the stored validators, follows at most a few redirects (http and
https only, noting when every hop was permanent so the caller can update the stored
URL), and reads the body in small pieces against three limits: a connect timeout, a read
timeout for each wait on the socket, and a size and a wall-clock budget for the whole
feed. A giant, endless or stalled body therefore ends as a :class:`FetchError` in
bounded time and memory, never as a hung cron job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from harvest import __version__

__all__ = [
    "FetchError",
    "FetchLimits",
    "FetchResult",
    "fetch_feed",
    "transport_cause",
    "user_agent",
]

# What we ask for: feeds first, then any XML, then anything (servers lie about types).
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
# Small reads keep the wall-clock check frequent and bound what one decompressed read adds.
CHUNK = 16 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
_PERMANENT = {301, 308}


def user_agent(contact: str | None = None) -> str:
    """A descriptive User-Agent: who we are, and how a publisher can reach the operator."""
    ua = f"doesitwork/{__version__} (living evidence base; journal feed harvester)"
    if contact:
        ua += f" +mailto:{contact}"
    return ua


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 10.0
    # Longest wait for any one piece of the response (headers or body).
    read_timeout: float = 30.0
    # Whole-feed budget; the worst case is this plus one read_timeout.
    max_seconds: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5


@dataclass
class FetchResult:
    url: str  # the URL that finally answered
    status: int  # 200 (or another 2xx) with a body, or 304
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    etag: str | None = None
    last_modified: str | None = None
    # The new address when every redirect on the way was permanent (301/308).
    moved_to: str | None = None
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class FetchError(Exception):
    """The feed could not be fetched; ``kind`` says how, for the source's status.

    kinds: ``bad-url``, ``redirects``, ``connection``, ``timeout``, ``too-slow``,
    ``too-large``, ``not-found`` (404/410: the feed may be gone), ``http`` (other statuses).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        url: str,
        status: int | None = None,
        moved_to: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.url = url
        self.status = status
        self.moved_to = moved_to


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"refusing to fetch {url!r}: only http and https URLs", kind="bad-url",
                         url=url)  # fmt: skip


def fetch_feed(
    session: requests.Session,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    limits: FetchLimits | None = None,
    user_agent_string: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FetchResult:
    """GET one feed conditionally; raise :class:`FetchError` on anything but 2xx or 304."""
    limits = limits or FetchLimits()
    start = clock()
    deadline = start + limits.max_seconds
    headers = {"User-Agent": user_agent_string or user_agent(), "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    permanent = True
    current = url
    for _hop in range(limits.max_redirects + 1):
        _check_url(current)
        moved_to = current if (permanent and current != url) else None
        resp = _get(session, current, headers, limits, deadline, clock, moved_to)
        try:
            if resp.status_code in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError(f"HTTP {resp.status_code} without a Location header",
                                     kind="http", url=current, status=resp.status_code)  # fmt: skip
                permanent = permanent and resp.status_code in _PERMANENT
                current = urljoin(current, location.strip())
                continue
            if resp.status_code == 304:
                return FetchResult(
                    url=current, status=304, headers=_lower(resp.headers), etag=etag,
                    last_modified=last_modified, moved_to=moved_to, elapsed=clock() - start,
                )  # fmt: skip
            if resp.status_code in (404, 410):
                raise FetchError(f"HTTP {resp.status_code} {resp.reason or ''}".strip(),
                                 kind="not-found", url=current, status=resp.status_code,
                                 moved_to=moved_to)  # fmt: skip
            if not 200 <= resp.status_code < 300:
                raise FetchError(f"HTTP {resp.status_code} {resp.reason or ''}".strip(),
                                 kind="http", url=current, status=resp.status_code,
                                 moved_to=moved_to)  # fmt: skip
            body = _read_body(resp, current, limits, deadline, clock, moved_to)
            hdrs = _lower(resp.headers)
            return FetchResult(
                url=current, status=resp.status_code, content=body, headers=hdrs,
                etag=hdrs.get("etag") or None, last_modified=hdrs.get("last-modified") or None,
                moved_to=moved_to, elapsed=clock() - start,
            )  # fmt: skip
        finally:
            resp.close()
    raise FetchError(f"more than {limits.max_redirects} redirects", kind="redirects", url=current)


def _get(
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    limits: FetchLimits,
    deadline: float,
    clock: Callable[[], float],
    moved_to: str | None,
) -> requests.Response:
    remaining = deadline - clock()
    if remaining <= 0:
        raise FetchError(f"gave up after {limits.max_seconds:g} s (time limit per feed)",
                         kind="too-slow", url=url, moved_to=moved_to)  # fmt: skip
    timeout = (min(limits.connect_timeout, remaining), min(limits.read_timeout, remaining))
    try:
        return session.get(url, headers=headers, timeout=timeout, stream=True,
                           allow_redirects=False)  # fmt: skip
    except requests.Timeout as exc:
        raise FetchError(f"timed out waiting for the server: {transport_cause(exc)}",
                         kind="timeout", url=url, moved_to=moved_to) from exc  # fmt: skip
    except (requests.ConnectionError, requests.TooManyRedirects) as exc:
        raise FetchError(f"connection failed: {transport_cause(exc)}", kind="connection", url=url,
                         moved_to=moved_to) from exc  # fmt: skip
    except requests.RequestException as exc:
        raise FetchError(f"request failed: {transport_cause(exc)}", kind="connection", url=url,
                         moved_to=moved_to) from exc  # fmt: skip


def _read_body(
    resp: requests.Response,
    url: str,
    limits: FetchLimits,
    deadline: float,
    clock: Callable[[], float],
    moved_to: str | None,
) -> bytes:
    """Read the body in pieces, stopping at the size cap or the time budget.

    ``read1`` returns after at most one socket read, so a server dripping a byte at a
    time still meets the clock check; each wait is bounded by the read timeout.
    """
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchError(
            f"body of {int(declared):,} bytes exceeds the {limits.max_bytes:,}-byte limit",
            kind="too-large", url=url, moved_to=moved_to,
        )  # fmt: skip
    buf = bytearray()
    raw = resp.raw
    try:
        while True:
            if clock() > deadline:
                raise FetchError(
                    f"body not complete after {limits.max_seconds:g} s (time limit per feed; "
                    f"{len(buf):,} bytes read)", kind="too-slow", url=url, moved_to=moved_to,
                )  # fmt: skip
            piece = raw.read1(CHUNK, decode_content=True)
            if not piece:  # urllib3 returns b"" only at the end of the body
                break
            buf += piece
            if len(buf) > limits.max_bytes:
                raise FetchError(
                    f"body exceeds the {limits.max_bytes:,}-byte limit; cut off",
                    kind="too-large", url=url, moved_to=moved_to,
                )  # fmt: skip
    except FetchError:
        raise
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise FetchError(f"timed out reading the body ({len(buf):,} bytes read): "
                         f"{transport_cause(exc)}", kind="timeout", url=url,
                         moved_to=moved_to) from exc  # fmt: skip
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        # ProtocolError/IncompleteRead: the server closed before the promised length.
        raise FetchError(f"body broken off ({len(buf):,} bytes read): {transport_cause(exc)}",
                         kind="connection", url=url, moved_to=moved_to) from exc  # fmt: skip
    return bytes(buf)


def _lower(headers: requests.structures.CaseInsensitiveDict[str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# urllib3 starts its messages with the pool or connection ("HTTPConnectionPool(host='h',
# port=80): ") and MaxRetryError adds " with url: <path and query>".
_POOL_PREFIX = re.compile(r"^HTTPS?Connection(?:Pool)?\(host='([^']*)', port=(\d+)\):\s*")
_WITH_URL = re.compile(r" with url: \S+")
CAUSE_CHARS = 200


def transport_cause(exc: BaseException, scrub: Callable[[str], str] = str) -> str:
    """The cause of a requests/urllib3 transport error, without the request's URL.

    requests wraps urllib3's MaxRetryError, whose text leads with the whole URL (for
    E-utilities, a long query), so a message cut to length kept the URL and lost the
    cause. This digs to the root ("Failed to resolve 'host'", "Connection refused") and
    names its type, e.g. ``Failed to resolve 'x.invalid' ([Errno -2] ...)
    (NameResolutionError)``. ``scrub`` runs before the cut, so half a secret never survives.
    """
    inner = exc
    for _ in range(5):  # a few wrappers deep at most; never loop on a cycle
        if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
            inner = inner.reason
        elif (
            isinstance(inner, requests.RequestException)
            and inner.args
            and isinstance(inner.args[0], BaseException)
        ):
            inner = inner.args[0]
        else:
            break
    text = _WITH_URL.sub("", str(inner)).strip()
    prefix = _POOL_PREFIX.match(text)
    if prefix:
        host, port = prefix.groups()
        text = text[prefix.end() :]
        if host not in text:  # "Connection refused" alone does not say where
            text = f"{host}:{port}: {text}"
    name = type(inner).__name__
    text = scrub(f"{text} ({name})" if text and name not in text else (text or name))
    return text if len(text) <= CAUSE_CHARS else text[: CAUSE_CHARS - 3] + "..."


"""The E-utilities client: the only module that talks to NCBI.

It owns politeness (tool/email/api_key on every request, a rate limit shared across
processes) and robustness (timeouts, retries with backoff, and sniffing bodies for the
many ways NCBI reports failure inside an HTTP 200). It returns raw PubMed XML bytes;
parsing records is :mod:`harvest.pubmed_xml`'s job.

Field notes 3.1-3.5 explain each rule; the failure shapes handled here are the ones
recorded in ``shared/data/eutils/errors``.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlencode

import requests
import urllib3.exceptions
from lxml import etree

from harvest import __version__
from harvest.feeds import transport_cause

if TYPE_CHECKING:
    from harvest.config import NcbiSettings

__all__ = [
    "ConfigError",
    "EutilsClient",
    "EutilsConfig",
    "EutilsError",
    "EutilsHTTPError",
    "EutilsStaleHistory",
    "EutilsTransientError",
    "SearchResult",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Above this many characters of encoded parameters we POST: long GETs fail with 414
# (rentrez#168), and Biopython switches at ~1,000.
MAX_GET_CHARS = 1500

# NCBI counts requests in its own 1 s windows and sees them after network jitter, so
# pacing at exactly 1/rate can land 4 requests in one of its windows. 10% above 1/rate
# gives 0.37 s without a key (Biopython's figure) and 0.11 s with one.
INTERVAL_MARGIN = 1.1

# A rate-file timestamp further ahead than this is not a reservation but a clock jump
# or garbage; ignoring it beats sleeping for hours.
RATE_FILE_MAX_AHEAD = 60.0

EXCERPT_CHARS = 200
READ_CHUNK = 64 * 1024  # bytes asked of each socket read while streaming a body

# lxml without DTDs, entities or network: NCBI's replies name a remote DTD.
_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

# Error texts that will not change on a retry.
_PERMANENT = re.compile(
    r"Invalid db name|ID list is empty|Empty ID list|cannot be larger than"
    r"|Neither query_key nor id|Empty term|nothing todo|invalid value",
    re.IGNORECASE,
)
# The history server forgot our WebEnv: retrying the same efetch cannot help, re-searching can.
_STALE = re.compile(r"Unable to obtain query|WebEnv|Cannot retrieve query", re.IGNORECASE)
# A 502 from the efetch back end relayed as HTTP 400 (cyanheads/pubmed-mcp-server#155).
_RELAYED_502 = re.compile(r"proxy_stream|PubOne", re.IGNORECASE)
# ErrorList children that describe the query, not a failure (EDirect treats them so too).
_BENIGN_ERRORLIST = {"PhraseNotFound", "FieldNotFound"}
_ERROR_ELEMENT = re.compile(rb"<ERROR>(.*?)</ERROR>", re.DOTALL | re.IGNORECASE)
_DATE = re.compile(r"^\d{4}(/\d{2}(/\d{2})?)?$")

# What a flaky network or a body cut short looks like through requests/urllib3.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    http.client.HTTPException,  # includes IncompleteRead
    urllib3.exceptions.HTTPError,  # includes ProtocolError, urllib3's IncompleteRead
    ConnectionError,  # builtin: resets surfacing outside requests' wrappers
    TimeoutError,  # builtin (socket.timeout): a read timeout outside urllib3's wrappers
)


class EutilsError(Exception):
    """Base class for everything this module raises."""


class ConfigError(EutilsError):
    """The client is misconfigured (e.g. no contact e-mail)."""


class EutilsHTTPError(EutilsError):
    """NCBI refused the request for good (a 4xx, or a permanent ``<ERROR>``); not retried."""

    def __init__(self, endpoint: str, status: int, excerpt: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.excerpt = excerpt
        super().__init__(f"{endpoint}: HTTP {status}: {excerpt}")


class EutilsTransientError(EutilsError):
    """Every try failed in a way that might succeed later; the run should stop, not skip."""

    def __init__(self, endpoint: str, tries: int, last_problem: str) -> None:
        self.endpoint = endpoint
        self.tries = tries
        self.last_problem = last_problem
        # The cause first: a line cut for display should keep it, not the try count.
        super().__init__(f"{endpoint}: {last_problem}; gave up after {tries} tries")


# Requests in a row whose every try got no complete reply before NCBI is taken to be down.
SILENT_REQUESTS_TO_GIVE_UP = 2


class EutilsUnreachable(EutilsTransientError):
    """Not asked: earlier in this client's life every try of two requests in a row ended
    without a complete reply (refused, timed out, reset, cut off): NCBI is taken to be down."""

    def __init__(self, endpoint: str, earlier: str) -> None:
        self.endpoint, self.tries, self.last_problem = endpoint, 0, earlier
        EutilsError.__init__(self, f"{endpoint}: not asked: NCBI gave no complete reply earlier "
                                   f"in this run ({earlier})")  # fmt: skip


class EutilsStaleHistory(EutilsError):
    """The WebEnv/query_key is no longer known to NCBI; re-run the esearch."""


@dataclass
class EutilsConfig:
    base_url: str = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
    email: str | None = None
    api_key: str | None = None
    tool: str = "doesitwork"
    connect_timeout: float = 10
    # Longest silence tolerated on the socket (per read, so it alone cannot end a drip).
    read_timeout: float = 30
    # Budget for one try, headers to last byte; the worst case is this plus one read_timeout.
    max_seconds: float = 120
    # A 500-record efetch is a few MB; anything past this is cut off and not retried.
    max_bytes: int = 64 * 1024 * 1024
    max_tries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # None: NCBI's limits, 3 per second without a key and 10 with one.
    requests_per_second: float | None = None
    # Shared by every harvester process of this user on the host (NCBI counts per IP or
    # key, not per database): harvest.config.default_rate_file(). None: this process only.
    rate_file: Path | None = None

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        key = "***" if self.api_key else None
        return f"EutilsConfig(base_url={self.base_url!r}, email={self.email!r}, api_key={key})"

    @classmethod
    def from_settings(cls, ncbi: NcbiSettings) -> EutilsConfig:
        """The client's configuration from the ``[ncbi]`` settings (file and environment)."""
        return cls(base_url=ncbi.base_url, email=ncbi.email, api_key=ncbi.api_key, tool=ncbi.tool,
                   rate_file=ncbi.rate_file, connect_timeout=ncbi.connect_timeout,
                   read_timeout=ncbi.read_timeout, max_tries=ncbi.max_tries)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SearchResult:
    count: int  # the true total, even when PubMed returns at most 9,999 IDs
    ids: list[str]
    webenv: str | None
    query_key: str | None
    warnings: list[str] = field(default_factory=list)


class _Retry(Exception):
    """Internal: this try failed in a retryable way."""

    def __init__(self, problem: str, retry_after: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


class _RateLimiter:
    """Reserves request slots at least ``interval`` apart, in-process or via a shared file.

    Each caller reserves the next free slot under a lock and then sleeps outside it, so
    waiting threads and processes never hold the lock while sleeping. The file and its
    folder are created on first use. If they cannot be, requests are paced in this process
    only, with a logged warning, rather than failing the harvest: the file only coordinates
    concurrent harvests, and two runs on one database already exclude each other (the
    harvest lock), so the worst case is NCBI answering 429, which is retried with backoff.
    """

    def __init__(
        self,
        interval: float,
        rate_file: Path | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.interval = interval
        self.rate_file = rate_file
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last = float("-inf")

    def wait(self) -> None:
        with self._lock:
            delay = self._reserve_shared() if self.rate_file else self._reserve_here()
        if delay > 0:
            self._sleep(delay)

    def _reserve_shared(self) -> float:
        try:
            return self._reserve_in_file()
        except OSError as exc:
            log.warning(
                "cannot use the NCBI rate file %s (%s); pacing requests in this process only, "
                "so other harvests on this host do not share NCBI's budget with it "
                "(set NCBI_RATE_FILE or [ncbi] rate_file to a writable path)",
                self.rate_file, exc.strerror or exc,
            )  # fmt: skip
            self.rate_file = None
            self._last = self._clock()  # as if a request went out just now, to stay safe
            return self._reserve_here()

    def _reserve_here(self) -> float:
        now = self._clock()
        slot = max(now, self._last + self.interval)
        self._last = slot
        return slot - now

    def _reserve_in_file(self) -> float:
        # Wall time, because the file is read by other processes (and survives reboots).
        # flock, not lockf: flock locks belong to the open file, so two clients in one
        # process exclude each other too.
        assert self.rate_file is not None
        try:
            fh = open(self.rate_file, "a+b")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:  # first use: the cache folder is made once, not per request
            self.rate_file.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.rate_file, "a+b")  # noqa: SIM115
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            try:
                last = float(fh.read().decode("ascii").strip() or "-inf")
            except (UnicodeDecodeError, ValueError):
                last = float("-inf")
            now = time.time()
            if last > now + RATE_FILE_MAX_AHEAD:
                last = float("-inf")
            slot = max(now, last + self.interval)
            fh.seek(0)
            fh.truncate()
            fh.write(repr(slot).encode("ascii"))
            fh.flush()
            # the lock is released when the file is closed
        return slot - now


class EutilsClient:
    """ESearch and EFetch against PubMed, politely and defensively."""

    def __init__(
        self,
        config: EutilsConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not config.email:
            raise ConfigError(
                "NCBI_EMAIL is not set: NCBI requires a contact e-mail for E-utilities; "
                "set NCBI_EMAIL or email= in harvest.toml"
            )
        if config.max_tries < 1:
            raise ConfigError("max_tries must be at least 1")
        if config.max_seconds <= 0 or config.max_bytes <= 0:
            raise ConfigError("max_seconds and max_bytes must be positive")
        self.config = config
        self._own_session = session is None
        self._session = session or requests.Session()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._headers = {"User-Agent": f"doesitwork/{__version__} (+{config.email})"}
        self._identity = {"tool": config.tool, "email": config.email}
        if config.api_key:
            self._identity["api_key"] = config.api_key
        rate = config.requests_per_second or (10.0 if config.api_key else 3.0)
        self._limiter = _RateLimiter(INTERVAL_MARGIN / rate, config.rate_file, clock, sleep)
        # Set when every try of two requests in a row got no complete reply: later requests
        # of this run fail at once instead of spending their own tries and timeouts (one cron
        # run would otherwise wait out 5 tries per topic and for the DOI look-up). One slow
        # request on a server that answers others does not trip it; any reply resets it.
        self.unreachable: str | None = None
        self._silent_in_a_row = 0
        self.requests_made = 0
        self.request_times: list[float] = []
        self.retry_delays: list[float] = []  # the backoff slept before each retry

    # -- public API ---------------------------------------------------------------

    def esearch(
        self,
        term: str,
        *,
        datetype: str | None = None,
        mindate: str | None = None,
        maxdate: str | None = None,
        usehistory: bool = True,
        retmax: int = 0,
        retstart: int = 0,
    ) -> SearchResult:
        """Search PubMed. Dates are ``YYYY/MM/DD`` and come as a pair (NCBI ignores one alone)."""
        if (mindate is None) != (maxdate is None):
            raise ValueError("mindate and maxdate must be given together")
        for value in (mindate, maxdate):
            if value is not None and not _DATE.match(value):
                raise ValueError(f"dates must look like YYYY/MM/DD, got {value!r}")
        params = {"db": "pubmed", "term": term, "retmax": str(retmax), "retstart": str(retstart)}
        if usehistory:
            params["usehistory"] = "y"
        if datetype:
            params["datetype"] = datetype
        if mindate and maxdate:
            params["mindate"], params["maxdate"] = mindate, maxdate

        def parse(body: bytes) -> SearchResult:
            return self._parse_esearch(
                body, usehistory=usehistory, retmax=retmax, retstart=retstart
            )

        return self._call("esearch", params, parse)

    def efetch(self, *, webenv: str, query_key: str, retstart: int, retmax: int) -> bytes:
        """A page of PubMed XML from the history server.

        An empty ``PubmedArticleSet`` is returned as is: only the caller knows whether
        records were expected (then the WebEnv is probably stale).
        """
        params = {
            "db": "pubmed",
            "WebEnv": webenv,
            "query_key": query_key,
            "retstart": str(retstart),
            "retmax": str(retmax),
            "retmode": "xml",
        }
        return self._call("efetch", params, self._check_pubmed_xml)

    def efetch_ids(self, ids: Sequence[str]) -> bytes:
        """PubMed XML for these PMIDs; unknown PMIDs are silently absent from the reply."""
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of PMIDs, not one string")
        clean = [str(i).strip() for i in ids if str(i).strip()]
        if not clean:
            raise ValueError("efetch_ids needs at least one PMID")
        params = {"db": "pubmed", "id": ",".join(clean), "retmode": "xml"}
        return self._call("efetch", params, self._check_pubmed_xml, post=True)

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> EutilsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one logical call, several tries ----------------------------------------

    def _call(
        self,
        endpoint: str,
        params: dict[str, str],
        parse: Callable[[bytes], T],
        *,
        post: bool = False,
    ) -> T:
        url = self.config.base_url.rstrip("/") + f"/{endpoint}.fcgi"
        params = {**params, **self._identity}
        # With a key we always POST: a key in a URL ends up in urllib3's debug log and in
        # requests' exception messages.
        post = post or "api_key" in params or len(urlencode(params)) > MAX_GET_CHARS
        if self.unreachable is not None:
            raise EutilsUnreachable(endpoint, self.unreachable)
        tries = self.config.max_tries
        problem = ""
        replied = False  # a complete reply came, whatever it said
        for attempt in range(1, tries + 1):
            self._limiter.wait()
            self.requests_made += 1
            self.request_times.append(self._clock())
            retry_after: float | None = None
            try:
                deadline = self._clock() + self.config.max_seconds
                response = self._session.request(
                    "POST" if post else "GET",
                    url,
                    params=None if post else params,
                    data=params if post else None,
                    headers=self._headers,
                    timeout=(
                        min(self.config.connect_timeout, self.config.max_seconds),
                        min(self.config.read_timeout, self.config.max_seconds),
                    ),
                    stream=True,  # read_timeout bounds each read, not the body: we time it
                )
                try:
                    body = self._read_body(endpoint, response, deadline)
                finally:
                    response.close()
                replied = True
                self._silent_in_a_row = 0
                self._check_response(endpoint, response.status_code, response.headers, body)
                return parse(body)
            except _Retry as exc:
                problem, retry_after = exc.problem, exc.retry_after
            except _TRANSPORT_ERRORS as exc:
                problem = self._describe(exc)
            if attempt == tries:
                break
            delay = self._backoff(attempt, retry_after)
            if delay is None:
                problem += f" (Retry-After {retry_after:.0f} s exceeds backoff_max)"
                raise EutilsTransientError(endpoint, attempt, problem)
            log.warning(
                "%s: %s; retrying in %.2f s (try %d of %d)",
                endpoint,
                problem,
                delay,
                attempt,
                tries,
            )
            self.retry_delays.append(delay)
            self._sleep(delay)
        if not replied:
            self._silent_in_a_row += 1
            if self._silent_in_a_row >= SILENT_REQUESTS_TO_GIVE_UP:
                self.unreachable = f"{endpoint}: {problem}; {tries} tries"
        raise EutilsTransientError(endpoint, tries, problem)

    def _read_body(self, endpoint: str, response: requests.Response, deadline: float) -> bytes:
        """The body, read piece by piece against the time budget and the size cap.

        ``read1`` returns after at most one socket read, so a server dripping a byte at a
        time still meets the clock check (as in :mod:`harvest.feeds`).
        """
        limit = self.config.max_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._too_large(endpoint, response.status_code, f"declared {int(declared):,}")
        buf = bytearray()
        while True:
            if self._clock() > deadline:
                raise _Retry(
                    f"reply took longer than {self.config.max_seconds:g} s "
                    f"(max_seconds; {len(buf):,} bytes read)"
                )
            piece = response.raw.read1(READ_CHUNK, decode_content=True)
            if not piece:  # urllib3 returns b"" only at the end of the body
                return bytes(buf)
            buf += piece
            if len(buf) > limit:
                raise self._too_large(endpoint, response.status_code, f"{len(buf):,} read")

    def _too_large(self, endpoint: str, status: int, seen: str) -> EutilsHTTPError:
        # The same request would bring the same oversized reply: fail now, do not retry.
        return EutilsHTTPError(
            endpoint,
            status,
            f"reply larger than the {self.config.max_bytes:,}-byte limit (max_bytes; {seen} "
            "bytes); cut off, not retried",
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        # Full jitter (AWS's "exponential backoff and jitter"): spreads clients that failed
        # together; the rate limiter still keeps a floor between requests.
        cap = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, cap)
        if retry_after is not None:
            if retry_after > self.config.backoff_max:
                return None  # waiting that long is the next cron run's job
            delay = max(delay, retry_after)
        return delay

    # -- classifying replies ----------------------------------------------------

    def _check_response(
        self, endpoint: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Raise _Retry, EutilsHTTPError or EutilsStaleHistory unless this is a usable 200."""
        if status == 429:
            raise _Retry(
                f"HTTP 429 rate limited: {self._excerpt(body)}",
                retry_after=_parse_retry_after(headers.get("Retry-After")),
            )
        if status >= 500:
            raise _Retry(f"HTTP {status}: {self._excerpt(body)}")
        if status >= 400:
            message = self._error_text(body) or self._excerpt(body)
            if _RELAYED_502.search(body[:20000].decode("utf-8", "replace")):
                raise _Retry(f"HTTP {status} relayed back-end failure: {message}")
            if endpoint == "efetch" and not _PERMANENT.search(message) and _STALE.search(message):
                raise EutilsStaleHistory(f"efetch: history expired: {message}")
            raise EutilsHTTPError(endpoint, status, message)
        length = headers.get("Content-Length")
        if length and not headers.get("Content-Encoding") and length.isdigit():
            if int(length) != len(body):
                raise _Retry(f"body cut short: {len(body)} of {length} bytes")
        stripped = body.strip()
        if not stripped:
            raise _Retry(f"HTTP {status} with an empty body")
        head = stripped[:200].lower()
        if head.startswith((b"<html", b"<!doctype html")) or b"<html" in head:
            raise _Retry(f"HTTP {status} with an HTML page instead of XML: {self._excerpt(body)}")
        if stripped.startswith(b"{"):
            self._raise_for_json(endpoint, stripped)
        errors = self._error_text(body)
        if errors:
            self._raise_for_error_text(endpoint, errors)

    def _raise_for_json(self, endpoint: str, body: bytes) -> None:
        # We ask for XML, so any JSON is an error envelope ({"error": ...} or esearchresult.ERROR).
        try:
            data = json.loads(body)
        except ValueError:
            raise _Retry(f"unparseable JSON reply: {self._excerpt(body)}") from None
        message = ""
        if isinstance(data, dict):
            inner = data.get("esearchresult")
            if isinstance(inner, dict) and inner.get("ERROR"):
                message = str(inner["ERROR"])
            elif data.get("error"):
                message = str(data["error"])
        self._raise_for_error_text(endpoint, self._scrub(message) or self._excerpt(body))

    def _raise_for_error_text(self, endpoint: str, message: str) -> None:
        if _RELAYED_502.search(message):
            raise _Retry(f"relayed back-end failure: {message}")
        if _PERMANENT.search(message):
            raise EutilsHTTPError(endpoint, 200, message)
        if endpoint == "efetch" and _STALE.search(message):
            raise EutilsStaleHistory(f"efetch: history expired: {message}")
        raise _Retry(f"<ERROR> in a 200 reply: {message}")

    def _check_pubmed_xml(self, body: bytes) -> bytes:
        stripped = body.rstrip()
        if not stripped.endswith((b"</PubmedArticleSet>", b"<PubmedArticleSet/>")):
            tail = stripped[-40:].decode("utf-8", "replace")
            raise _Retry(f"efetch body is not a complete PubmedArticleSet (ends {tail!r})")
        return body

    def _parse_esearch(
        self, body: bytes, *, usehistory: bool, retmax: int, retstart: int
    ) -> SearchResult:
        try:
            root = etree.fromstring(body, _SAFE_PARSER)
        except etree.XMLSyntaxError as exc:
            raise _Retry(f"esearch reply is not well-formed XML: {exc}") from None
        if root.tag != "eSearchResult":
            raise _Retry(f"esearch reply has root <{root.tag}>, expected <eSearchResult>")
        warnings: list[str] = []
        error_list = root.find("ErrorList")
        if error_list is not None:
            for child in error_list:
                text = f"{child.tag}: {(child.text or '').strip()}"
                if child.tag not in _BENIGN_ERRORLIST:
                    raise _Retry(f"esearch ErrorList: {self._scrub(text)}")
                warnings.append(text)
        warning_list = root.find("WarningList")
        if warning_list is not None:
            warnings.extend(f"{c.tag}: {(c.text or '').strip()}" for c in warning_list)
        count_text = root.findtext("Count")
        if count_text is None or not count_text.strip().isdigit():
            raise _Retry("esearch reply has no Count")
        count = int(count_text)
        ids = [(e.text or "").strip() for e in root.iterfind("IdList/Id")]
        webenv = root.findtext("WebEnv")
        query_key = root.findtext("QueryKey")
        if usehistory and count > 0 and not (webenv and query_key):
            raise _Retry("esearch reply has no WebEnv/QueryKey although usehistory=y")
        if retmax > 0 and count > retstart and not ids:
            # Never read a silent back-end hiccup as "no results": that loses data.
            raise _Retry(f"esearch Count is {count} but the IdList is empty")
        return SearchResult(count, ids, webenv, query_key, warnings)

    # -- helpers ----------------------------------------------------------------

    def _error_text(self, body: bytes) -> str:
        found = [m.decode("utf-8", "replace").strip() for m in _ERROR_ELEMENT.findall(body[:20000])]
        return self._scrub("; ".join(" ".join(f.split()) for f in found if f))[:500]

    def _excerpt(self, body: bytes) -> str:
        text = " ".join(body[:4000].decode("utf-8", "replace").split())
        return self._scrub(text)[:EXCERPT_CHARS]

    def _scrub(self, text: str) -> str:
        # Scrub before truncating, so half a key never survives a cut.
        key = self.config.api_key
        if key:
            text = text.replace(key, "***")
        return re.sub(r"(api_key=)[^&\s'\"]+", r"\1***", text)

    def _describe(self, exc: BaseException) -> str:
        # Mid-body, urllib3's ReadTimeoutError surfaces unwrapped by requests.
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            kind = "timed out"
        elif isinstance(
            exc,
            (
                requests.exceptions.ChunkedEncodingError,
                http.client.IncompleteRead,
                urllib3.exceptions.ProtocolError,
            ),
        ):
            kind = "body cut short"
        else:
            kind = "connection failed"
        # The root cause, not requests' wrapper: its text leads with the whole query URL,
        # which is long and repeated in every retry line.
        return f"{kind}: {transport_cause(exc, self._scrub)}"


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (the form NCBI sends) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())

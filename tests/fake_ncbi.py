"""A fake NCBI E-utilities server on 127.0.0.1 for tests (never hit NCBI in CI).

It serves ``esearch.fcgi`` and ``efetch.fcgi`` under ``/entrez/eutils/`` from a corpus
of *real* PubMed records, in reply shapes copied from recorded NCBI replies:

* eSearchResult as in ``shared/data/eutils/biopython/esearch2.xml`` (history) and
  ``esearch8.xml`` (PhraseNotFound);
* PubmedArticleSet with the DOCTYPE line of ``biopython/pubmed1.xml``;
* eFetchResult ``<ERROR>`` envelopes ("Unable to obtain query #1", "ID list is empty!")
  as quoted in public issue threads (see the field notes, 3.4);
* PubMed's ESearch cap: at most 9,999 IDs retrievable ("Restrictions achieved. start and
  count adjusted to ...", and "'retstart' cannot be larger than 9998" beyond it), while
  ``Count`` reports the true total.

Faults are scripted per endpoint and request number (:meth:`FakeNCBI.fail`) and every
request is recorded (:attr:`FakeNCBI.requests`).

Typical use::

    fake.load_records(shared_data / "eutils/biopython/pubmed4.xml")
    fake.spread_dates(date(2024, 1, 1), date(2024, 1, 31), field="edat")
    fake.register_term("dry needling", {"27797938", "27920200"})
    fake.fail("efetch", times=2, with_=Fault.status(503))
    client = EutilsClient(EutilsConfig(base_url=fake.base_url, email="t@example.org"))
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import secrets
import socket
import struct
import threading
import time
import xml.sax.saxutils
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from lxml import etree

PUBMED_CAP = 9999  # IDs ESearch will hand out for PubMed (retstart 0..9998)
MAX_STALL = 10.0  # a stall never outlives this, so a broken test still ends
MAX_ENDLESS = 128 * 1024 * 1024  # an "endless" body stops here (above the client's default cap)

ESEARCH_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" ?>\n'
    b'<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
    b'"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
)
# The DOCTYPE line of shared/data/eutils/biopython/pubmed1.xml (efetch, 2025 DTD).
PUBMED_HEAD = (
    b'<?xml version="1.0" ?>\n'
    b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
)
EFETCH_ERROR_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" ?>\n'
    b'<!DOCTYPE eEfetchResult PUBLIC "-//NLM//DTD efetch 20131226//EN" '
    b'"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20131226/efetch.dtd">\n'
)
RETSTART_TOO_LARGE = (
    "Search Backend failed: Exception:\n'retstart' cannot be larger than 9998. For PubMed, "
    "ESearch can only retrieve the first 9,999 records matching the query. To obtain more "
    "than 9,999 PubMed records, consider using EDirect that contains additional logic to "
    "batch PubMed search results automatically so that an arbitrary number can be "
    "retrieved. For details see https://www.ncbi.nlm.nih.gov/books/NBK25499/"
)
DATE_LABELS = {"edat": "Date - Entry", "mdat": "Date - Modification", "pdat": "Date - Publication"}
XML_TYPE = "text/xml; charset=UTF-8"

_PARSE = {"resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": True}


# -- the corpus -------------------------------------------------------------------


@dataclass
class Record:
    pmid: str
    xml: bytes  # one <PubmedArticle> (or <PubmedBookArticle>) element, as NCBI sent it
    edat: date
    mdat: date
    pdat: date


def _element_date(el: etree._Element | None) -> date | None:
    if el is None:
        return None
    try:
        return date(
            int(el.findtext("Year")), int(el.findtext("Month") or 1), int(el.findtext("Day") or 1)
        )
    except (TypeError, ValueError):
        return None


def _record_from_element(el: etree._Element) -> Record | None:
    pmid = el.findtext("MedlineCitation/PMID") or el.findtext("BookDocument/PMID")
    if not pmid:
        return None
    # Defaults from the record itself; tests usually overwrite them.
    entrez = _element_date(el.find("PubmedData/History/PubMedPubDate[@PubStatus='entrez']"))
    revised = _element_date(el.find("MedlineCitation/DateRevised"))
    edat = entrez or revised or date(2000, 1, 1)
    return Record(pmid.strip(), etree.tostring(el, with_tail=False), edat, revised or edat, edat)


@functools.lru_cache(maxsize=8)
def _parse_file(path: str, mtime: float) -> tuple[Record, ...]:
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rb") as fh:
        for _, el in etree.iterparse(
            fh, events=("end",), tag=("PubmedArticle", "PubmedBookArticle"), **_PARSE
        ):
            rec = _record_from_element(el)
            if rec:
                out.append(rec)
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    return tuple(out)


def parse_records(source: bytes | str | Path) -> list[Record]:
    """Split a real PubmedArticleSet (bytes or a path, .gz allowed) into per-PMID records."""
    if isinstance(source, bytes):
        root = etree.fromstring(source, etree.XMLParser(**_PARSE))
        els = [e for e in root if e.tag in ("PubmedArticle", "PubmedBookArticle")]
        return [r for r in map(_record_from_element, els) if r]
    path = Path(source).resolve()
    # Parsed once per process: the 10,363-record daily file takes ~1.5 s.
    return [
        Record(r.pmid, r.xml, r.edat, r.mdat, r.pdat)
        for r in _parse_file(str(path), path.stat().st_mtime)
    ]


def _parse_date(value: str, *, end: bool) -> date:
    """NCBI's YYYY, YYYY/MM or YYYY/MM/DD; ``end`` picks the last day of a year or month."""
    parts = [int(p) for p in value.replace("-", "/").split("/")]
    if len(parts) == 1:
        return date(parts[0], 12, 31) if end else date(parts[0], 1, 1)
    if len(parts) == 2:
        first = date(parts[0], parts[1], 1)
        if not end:
            return first
        return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return date(parts[0], parts[1], parts[2])


# -- faults -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or to) the normal reply. Build with the factories below."""

    kind: str
    code: int = 200
    payload: bytes = b""
    content_type: str = XML_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    keep: float = 0.5
    count: int = 0
    pmids: frozenset[str] = frozenset()
    empty: bool = False

    @staticmethod
    def _read(body: bytes | str | Path | None) -> tuple[bytes, str | None]:
        if body is None:
            return b"", None
        if isinstance(body, bytes):
            return body, None
        if isinstance(body, str):
            return body.encode(), None
        path = body
        kind = {".json": "application/json", ".html": "text/html; charset=UTF-8"}.get(
            path.suffix, XML_TYPE
        )
        return path.read_bytes(), kind

    @classmethod
    def status(
        cls,
        code: int,
        *,
        body: bytes | str | Path | None = None,
        retry_after: float | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Reply ``code`` with ``body`` (bytes, text, or a Path to a recorded body).

        Without a body, 5xx get an HTML error page like NCBI's.
        """
        data, guessed = cls._read(body)
        if body is None and code >= 500:
            data = _error_page(code)
            guessed = "text/html; charset=UTF-8"
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        return cls(
            "reply",
            code=code,
            payload=data,
            content_type=content_type or guessed or XML_TYPE,
            headers=tuple(extra.items()),
        )

    @classmethod
    def body(
        cls, body: bytes | str | Path, *, status: int = 200, content_type: str | None = None
    ) -> Fault:
        """A reply with this body, 200 by default: an <ERROR> document, an HTML page..."""
        data, guessed = cls._read(body)
        return cls(
            "reply", code=status, payload=data, content_type=content_type or guessed or XML_TYPE
        )

    @classmethod
    def empty_body(cls) -> Fault:
        """HTTP 200 with nothing in it (seen from NCBI; metapub and EDirect check for it)."""
        return cls("reply", code=200, payload=b"")

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection with a TCP reset and no reply at all."""
        return cls("reset")

    @classmethod
    def short_body(cls, keep: float = 0.5) -> Fault:
        """Declare the full Content-Length, send ``keep`` of the body, hang up (IncompleteRead)."""
        return cls("short_body", keep=keep)

    @classmethod
    def truncated(cls) -> Fault:
        """The body cut inside its last closing tag (``</Pu``) with a matching Content-Length."""
        return cls("truncated")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Say nothing for ``seconds`` (at most MAX_STALL), then reply normally."""
        return cls("stall", seconds=min(seconds, MAX_STALL))

    @classmethod
    def drip(cls, every: float, chunk: int = 1) -> Fault:
        """Send the normal reply ``chunk`` bytes at a time, ``every`` seconds apart.

        Each gap is shorter than the client's read timeout, so only a whole-reply budget
        ends it; the server hangs up after MAX_STALL.
        """
        return cls("drip", seconds=every, count=chunk)

    @classmethod
    def endless(cls) -> Fault:
        """A 200 without Content-Length whose body repeats the normal reply until the client
        hangs up (at most MAX_ENDLESS bytes or MAX_STALL seconds)."""
        return cls("endless")

    @classmethod
    def missing_records(cls, count: int = 1, *, pmids: Iterable[str] = ()) -> Fault:
        """An efetch batch without some records: ``pmids``, or ``count`` spread over the batch."""
        return cls("missing", count=count, pmids=frozenset(map(str, pmids)))

    @classmethod
    def expired_webenv(cls, *, empty: bool = False) -> Fault:
        """efetch as if the WebEnv expired: the <ERROR> envelope, or an empty set if ``empty``."""
        return cls("expired", empty=empty)


def _error_page(code: int) -> bytes:
    # Modelled on NCBI's "WWW Error 500 Diagnostic" page (Headstart#257).
    return (
        f"<!DOCTYPE html><html><head><title>WWW Error {code} Diagnostic</title></head>"
        f"<body><h1>Error {code}</h1><p>A transient problem occurred; please try again later.</p>"
        "</body></html>"
    ).encode()


@dataclass
class _Rule:
    endpoint: str
    fault: Fault
    numbers: frozenset[int] | None
    remaining: int


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: str  # "esearch", "efetch", or the last path segment for anything else
    number: int  # 1-based count of requests to this endpoint
    method: str
    path: str
    params: dict[str, str]  # query string and form body merged (repeated keys joined by ",")
    headers: dict[str, str]
    time: float  # time.monotonic() when the request line and headers had arrived
    fault: str | None  # the injected fault's kind, "rate_limit" for an enforced 429, or None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = XML_TYPE
    headers: dict[str, str] = field(default_factory=dict)


# -- the server -------------------------------------------------------------------


class FakeNCBI:
    """E-utilities imitation on an ephemeral loopback port. Use as a context manager."""

    def __init__(self, *, enforce_rate_limit: bool = False) -> None:
        self.enforce_rate_limit = enforce_rate_limit
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._records: dict[str, Record] = {}
        self._terms: dict[str, set[str]] = {}
        self._history: dict[str, list[list[str]]] = {}
        self._expired: set[str] = set()
        self._rules: list[_Rule] = []
        self._requests: list[RecordedRequest] = []
        self._counters: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None

    # lifecycle: the socket listens from construction, so no waiting for startup

    @property
    def base_url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/entrez/eutils/"

    def start(self) -> FakeNCBI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-ncbi",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeNCBI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the corpus

    def load_records(
        self, source: bytes | str | Path, *, edat: date | None = None, mdat: date | None = None
    ) -> list[str]:
        """Add the records of a real PubmedArticleSet; returns their PMIDs in file order.

        A PMID seen twice (update files repeat revised records) keeps its last version.
        """
        records = parse_records(source)
        with self._lock:
            for rec in records:
                rec.edat = edat or rec.edat
                rec.mdat = mdat or rec.mdat
                self._records[rec.pmid] = rec
        return [r.pmid for r in records]

    def add_clones(
        self,
        template: str,
        pmids: Iterable[str | int],
        *,
        edat: date | None = None,
        mdat: date | None = None,
    ) -> list[str]:
        """Copies of a loaded real record under new PMIDs, for volume without a big file."""
        with self._lock:
            src = self._records[str(template)]
            added = []
            for p in map(str, pmids):
                xml = src.xml.replace(f">{src.pmid}</PMID>".encode(), f">{p}</PMID>".encode(), 1)
                xml = xml.replace(f'"pubmed">{src.pmid}<'.encode(), f'"pubmed">{p}<'.encode(), 1)
                self._records[p] = Record(p, xml, edat or src.edat, mdat or src.mdat, src.pdat)
                added.append(p)
        return added

    @property
    def pmids(self) -> list[str]:
        with self._lock:
            return list(self._records)

    def record(self, pmid: str) -> Record:
        return self._records[str(pmid)]

    def set_dates(
        self,
        pmids: Iterable[str],
        *,
        edat: date | None = None,
        mdat: date | None = None,
        pdat: date | None = None,
    ) -> None:
        with self._lock:
            for p in map(str, pmids):
                rec = self._records[p]
                rec.edat, rec.mdat, rec.pdat = edat or rec.edat, mdat or rec.mdat, pdat or rec.pdat

    def spread_dates(
        self, start: date, end: date, *, field: str = "edat", pmids: Iterable[str] | None = None
    ) -> None:
        """Spread ``field`` evenly over start..end, in ascending PMID order (deterministic)."""
        with self._lock:
            chosen = sorted(map(str, pmids) if pmids is not None else self._records, key=int)
            days = (end - start).days
            for i, p in enumerate(chosen):
                offset = (i * days) // max(1, len(chosen) - 1) if len(chosen) > 1 else 0
                setattr(self._records[p], field, start + timedelta(days=offset))

    def register_term(self, term: str, pmids: Iterable[str | int]) -> None:
        """``term`` matches exactly these PMIDs (which need not be loaded: efetch omits those).

        An empty set makes ``term`` a PhraseNotFound (esearch8.xml). Unregistered terms
        match every loaded record.
        """
        with self._lock:
            self._terms[term] = set(map(str, pmids))

    # faults and history

    def fail(
        self, endpoint: str, *, with_: Fault, times: int = 1, at: int | Iterable[int] | None = None
    ) -> None:
        """Inject ``with_`` into requests to ``endpoint`` ("esearch", "efetch" or "*").

        ``at``: these 1-based request numbers of that endpoint; otherwise the next
        ``times`` requests. Earlier rules win when several match.
        """
        numbers = None if at is None else frozenset([at] if isinstance(at, int) else at)
        with self._lock:
            self._rules.append(_Rule(endpoint, with_, numbers, times))

    def expire_webenvs(self) -> None:
        """Forget every WebEnv issued so far, as NCBI's history server eventually does."""
        with self._lock:
            self._expired.update(self._history)

    # the request log

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint]

    # -- request handling (called from server threads) --------------------------

    def _take_fault(self, endpoint: str, number: int) -> Fault | None:
        for rule in self._rules:
            if rule.endpoint not in (endpoint, "*"):
                continue
            if rule.numbers is not None:
                if number in rule.numbers:
                    return rule.fault
            elif rule.remaining > 0:
                rule.remaining -= 1
                return rule.fault
        return None

    def _admit(
        self, endpoint: str, method: str, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[Fault | None, int]:
        arrived = time.monotonic()
        with self._lock:
            number = self._counters[endpoint] = self._counters.get(endpoint, 0) + 1
            fault = self._take_fault(endpoint, number)
            kind = fault.kind if fault else None
            if fault is None and self.enforce_rate_limit:
                recent = 1 + sum(1 for r in self._requests if arrived - r.time < 1.0)
                limit = 10 if params.get("api_key") else 3
                if recent > limit:
                    # NCBI echoes the key (or the caller's IP) in the body.
                    body = rate_limit_json(recent, limit, params.get("api_key") or "127.0.0.1")
                    fault = Fault.status(
                        429, body=body, retry_after=1, content_type="application/json"
                    )
                    kind = "rate_limit"
            self._requests.append(
                RecordedRequest(endpoint, number, method, path, params, headers, arrived, kind)
            )
        return fault, number

    def _respond(self, endpoint: str, params: dict[str, str], fault: Fault | None) -> _Reply:
        if fault is not None and fault.kind == "reply":
            return _Reply(fault.code, fault.payload, fault.content_type, dict(fault.headers))
        if endpoint == "esearch":
            return self._esearch(params)
        if endpoint == "efetch":
            return self._efetch(params, fault)
        return _Reply(404, b"<html><body>Not found</body></html>", "text/html")

    def _esearch(self, p: dict[str, str]) -> _Reply:
        if p.get("db", "pubmed") != "pubmed":
            return _Reply(200, _esearch_error(f"Invalid db name specified: {p.get('db')}"))
        term = p.get("term", "").strip()
        if not term:
            return _Reply(200, _esearch_error("Empty term and query_key - nothing todo"))
        esc = xml.sax.saxutils.escape
        term, clause = _date_clause(term)
        with self._lock:
            if term in self._terms and not self._terms[term]:
                return _Reply(
                    200,
                    ESEARCH_HEAD
                    + (
                        f"<eSearchResult><Count>0</Count><RetMax>0</RetMax><RetStart>0</RetStart><IdList/>"
                        f"<TranslationSet/><QueryTranslation>({esc(term)}[All Fields])"
                        "</QueryTranslation>"
                        f"<ErrorList><PhraseNotFound>{esc(term)}</PhraseNotFound></ErrorList><WarningList>"
                        "<OutputMessage>No items found.</OutputMessage></WarningList>"
                        "</eSearchResult>\n"
                    ).encode(),
                )
            pool = self._terms.get(term, set(self._records))
            translation = term
            if clause is not None:  # "(query) AND 2024/01/21[mdat]", as PubMed reads it
                field, day = clause
                pool = {x for x in pool if x in self._records and getattr(self._records[x], field) == day}
                translation = f"({term}) AND {day:%Y/%m/%d}[{DATE_LABELS[field]}]"
            datetype, lo, hi = p.get("datetype", "pdat"), p.get("mindate"), p.get("maxdate")
            if lo and hi:  # NCBI needs both; one alone is ignored
                start, end = _parse_date(lo, end=False), _parse_date(hi, end=True)

                def in_window(pmid: str) -> bool:
                    rec = self._records.get(pmid)
                    return rec is not None and start <= getattr(rec, datetype) <= end

                pool = {x for x in pool if in_window(x)}
                label = DATE_LABELS.get(datetype, datetype)
                translation = f"{translation} AND {lo}:{hi}[{label}]"
            ids = sorted(pool, key=int, reverse=True)  # PubMed's default: newest first
            retstart, retmax = int(p.get("retstart", 0)), int(p.get("retmax", 20))
            if retstart > PUBMED_CAP - 1:
                return _Reply(200, _esearch_error(RETSTART_TOO_LARGE))
            warning = ""
            if retstart + retmax > PUBMED_CAP and len(ids) > PUBMED_CAP:
                retmax = PUBMED_CAP - retstart
                warning = (
                    f"<WarningList><OutputMessage>Restrictions achieved. start and count adjusted "
                    f"to {retstart}, {retmax}</OutputMessage></WarningList>"
                )
            page = ids[retstart : retstart + retmax]
            history = ""
            if p.get("usehistory", "").lower() == "y":
                webenv = p.get("WebEnv") if p.get("WebEnv") in self._history else None
                webenv = webenv or f"MCID_{secrets.token_hex(12)}"
                keys = self._history.setdefault(webenv, [])
                keys.append(ids)  # the whole result, not just the 9,999 esearch will list
                history = f"<QueryKey>{len(keys)}</QueryKey><WebEnv>{webenv}</WebEnv>"
        id_list = (
            "<IdList>\n" + "".join(f"<Id>{i}</Id>\n" for i in page) + "</IdList>"
            if page
            else "<IdList/>"
        )
        return _Reply(
            200,
            ESEARCH_HEAD
            + (
                f"<eSearchResult><Count>{len(ids)}</Count><RetMax>{len(page)}</RetMax><RetStart>{retstart}"
                f"</RetStart>{history}{id_list}<TranslationSet/><QueryTranslation>{esc(translation)}"
                f"</QueryTranslation>{warning}</eSearchResult>\n"
            ).encode(),
        )

    def _efetch(self, p: dict[str, str], fault: Fault | None) -> _Reply:
        if p.get("db", "pubmed") != "pubmed":
            return _Reply(400, _efetch_error(f"Invalid db name specified: {p.get('db')}"))
        webenv = p.get("WebEnv")
        with self._lock:
            if "id" in p:
                wanted = [i.strip() for i in p["id"].split(",")]
                valid = [i for i in wanted if i.isdigit() and int(i) > 0]
                if not valid:
                    return _Reply(
                        400, _efetch_error("ID list is empty! Possibly it has no correct IDs.")
                    )
                chosen = list(dict.fromkeys(valid))
            elif webenv:
                key = int(p.get("query_key", "1") or 1)
                lists = self._history.get(webenv, [])
                expired = fault is not None and fault.kind == "expired"
                if fault is not None and expired and fault.empty:
                    return _Reply(200, PUBMED_HEAD + b"<PubmedArticleSet></PubmedArticleSet>\n")
                if expired or webenv in self._expired or not 1 <= key <= len(lists):
                    return _Reply(200, _efetch_error(f"Unable to obtain query #{key}"))
                retstart, retmax = int(p.get("retstart", 0)), int(p.get("retmax", 20))
                chosen = lists[key - 1][retstart : retstart + retmax]
            else:
                return _Reply(400, _efetch_error("Neither query_key nor id specified"))
            found = [self._records[i] for i in chosen if i in self._records]
        if fault is not None and fault.kind == "missing":
            drop = set(fault.pmids)
            if not drop and found:
                step = max(1, len(found) // max(1, fault.count))
                drop = {r.pmid for r in found[::step][: fault.count]}
            found = [r for r in found if r.pmid not in drop]
        if not found:
            return _Reply(200, PUBMED_HEAD + b"<PubmedArticleSet></PubmedArticleSet>\n")
        return _Reply(
            200,
            PUBMED_HEAD
            + b"<PubmedArticleSet>\n"
            + b"\n".join(r.xml for r in found)
            + b"</PubmedArticleSet>",
        )


_esc = xml.sax.saxutils.escape


_DATE_CLAUSE = re.compile(r"^\((?P<query>.*)\) AND (?P<day>\d{4}/\d\d/\d\d)\[(?P<field>edat|mdat|pdat)\]$")


def _date_clause(term: str) -> tuple[str, tuple[str, date] | None]:
    """``term`` without a trailing one-day clause, and that clause as (field, day)."""
    match = _DATE_CLAUSE.match(term)
    if match is None:
        return term, None
    return match["query"], (match["field"], _parse_date(match["day"], end=False))


def _esearch_error(message: str) -> bytes:
    # The shape of errors/esearch_error_backend_failed_taxonomy.xml.
    return (
        ESEARCH_HEAD
        + f"<eSearchResult>\n\t<ERROR>{_esc(message)}</ERROR>\n</eSearchResult>\n".encode()
    )


def _efetch_error(message: str) -> bytes:
    return (
        EFETCH_ERROR_HEAD
        + f"<eFetchResult>\n\t<ERROR>{_esc(message)}</ERROR>\n</eFetchResult>\n".encode()
    )


def _make_handler(fake: FakeNCBI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like NCBI
        server_version = "Finatra"  # what NCBI's replies carry
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            url = urlsplit(self.path)
            params: dict[str, str] = {}
            pairs = parse_qsl(url.query, keep_blank_values=True)
            if self.command == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                pairs += parse_qsl(self.rfile.read(length).decode("utf-8"), keep_blank_values=True)
            for k, v in pairs:
                params[k] = f"{params[k]},{v}" if k in params else v
            endpoint = url.path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".fcgi")
            fault, _ = fake._admit(
                endpoint, self.command, url.path, params, dict(self.headers.items())
            )
            kind = fault.kind if fault else None
            if kind == "reset":
                return self._reset()
            if fault is not None and kind == "stall" and fake._stopping.wait(fault.seconds):
                return self._reset()  # the server is stopping
            reply = fake._respond(endpoint, params, fault)
            body, declared = reply.body, len(reply.body)
            if kind == "truncated":
                cut = body.rfind(b"</")
                body = body[: cut + 4] if cut >= 0 else body[: len(body) // 2]
                declared = len(body)
            elif fault is not None and kind == "short_body":
                body = body[: int(len(body) * fault.keep)]
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if kind != "endless":  # without a length the body ends when we hang up
                    self.send_header("Content-Length", str(declared))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if kind in ("short_body", "endless"):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if fault is not None and kind == "drip":
                    return self._drip(body, fault)
                if kind == "endless":
                    return self._endless(body)
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

        def _drip(self, body: bytes, fault: Fault) -> None:
            give_up = time.monotonic() + MAX_STALL
            for i in range(0, len(body), max(1, fault.count)):
                if fake._stopping.wait(fault.seconds) or time.monotonic() > give_up:
                    return self._reset()
                self.wfile.write(body[i : i + fault.count])

        def _endless(self, body: bytes) -> None:
            sent, give_up = 0, time.monotonic() + MAX_STALL
            while sent < MAX_ENDLESS and time.monotonic() < give_up and not fake._stopping.is_set():
                self.wfile.write(body)
                sent += len(body)

        def _reset(self) -> None:
            # SO_LINGER 0 makes close() send RST instead of FIN: a reset, not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

    return Handler


def rate_limit_json(count: int = 4, limit: int = 3, who: str = "127.0.0.1") -> bytes:
    """NCBI's 429 body in the observed shape (errors/rate_limit_exceeded_observed.json)."""
    return json.dumps(
        {
            "error": "API rate limit exceeded",
            "api-key": who,
            "count": str(count),
            "limit": str(limit),
        },
        separators=(",", ":"),
    ).encode()


def ids_in(pubmed_xml: bytes) -> list[str]:
    """PMIDs of the records in an efetch reply, in order (for assertions)."""
    root = etree.fromstring(pubmed_xml, etree.XMLParser(**_PARSE))
    return [r.pmid for r in map(_record_from_element, root) if r is not None]

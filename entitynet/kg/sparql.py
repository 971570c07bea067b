"""A SPARQL client that survives real endpoints: retries, paging, a page cache to resume from.

Two transports answer the same query text with the same ``sparql-results+json`` bytes:

- ``HttpTransport``: SPARQLWrapper over HTTP POST with a descriptive User-Agent (QLever, WDQS,
  an ``oxigraph serve``, any SPARQL 1.1 endpoint);
- ``EmbeddedTransport``: a pyoxigraph store in this process, for dump files.

``SparqlClient`` adds what a harvest of millions of rows needs: bounded retries (429/503 honour
``Retry-After``; timeouts, connection errors, 5xx and malformed bodies back off exponentially
with jitter), LIMIT/OFFSET paging in a stable order, and a cache of every page on disk, so a run
that gives up keeps what it fetched and a rerun resumes where it stopped.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import json
import logging
import shutil
import socket
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from entitynet.http import display_url, parse_retry_after
from entitynet.http import user_agent as http_user_agent
from entitynet.retry import Backoff, WaitTooLong
from entitynet.rundir import StageError, StatsRecord, write_bytes_atomic

logger = logging.getLogger(__name__)

class SparqlError(StageError):
    """A query failed for good: the message names the endpoint, the page and the cause."""


class TransientError(Exception):
    """A failure worth retrying: rate limits, timeouts, 5xx, connection trouble, broken bodies."""

    def __init__(self, kind: str, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.kind = kind  # short and stable, counted in the stage's statistics
        self.cause = cause
        self.retry_after = retry_after


class Transport(Protocol):
    name: str  # shown in messages; never holds credentials
    key: str  # identifies the data behind it, for the page cache

    def fetch(self, query: str) -> bytes: ...


def user_agent(contact: str = "") -> str:
    """Wikimedia's User-Agent policy: tool name/version, a URL and a way to reach the operator."""
    return f"{http_user_agent(contact)} SPARQLWrapper"


class HttpTransport:
    """SPARQLWrapper over HTTP POST; every failure is sorted into transient or fatal."""

    def __init__(self, url: str, agent: str, timeout: float) -> None:
        self.url = url
        self.name = display_url(url)
        self.key = self.name
        self.agent = agent
        self.timeout = timeout

    def fetch(self, query: str) -> bytes:
        from SPARQLWrapper import JSON, POST, SPARQLWrapper
        from SPARQLWrapper.SPARQLExceptions import EndPointInternalError, SPARQLWrapperException

        wrapper = SPARQLWrapper(self.url, agent=self.agent)
        wrapper.setMethod(POST)
        wrapper.setReturnFormat(JSON)
        wrapper.setOnlyConneg(True)  # standard content negotiation, no engine-specific format=...
        wrapper.setTimeout(max(1, round(self.timeout)))
        wrapper.setQuery(query)
        try:
            response = wrapper.query().response
            return _read_within(response, self.timeout)
        except urllib.error.HTTPError as error:
            raise _classify_http(error.code, error.headers.get("Retry-After")) from None
        except EndPointInternalError:
            raise TransientError("http_500", "HTTP 500 internal server error") from None
        except SPARQLWrapperException as error:  # 400 bad query, 401, 404, 414: retrying cannot help
            raise SparqlError(f"{self.name}: {str(error).splitlines()[0]}") from None
        except (TimeoutError, socket.timeout):
            raise TransientError("timeout", f"no answer within {self.timeout:g}s") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise TransientError("timeout", f"no answer within {self.timeout:g}s") from None
            raise TransientError("connection", f"connection failed: {error.reason}") from None
        except (ConnectionError, http.client.HTTPException) as error:
            raise TransientError("connection", f"connection broken: {type(error).__name__}: {error}") from None


def _read_within(response: Any, timeout: float) -> bytes:
    """Read a body, but not for longer than ``timeout`` even if bytes keep trickling in."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        chunk = response.read(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError


def _classify_http(code: int, retry_after: str | None) -> Exception:
    if code in (429, 503):
        return TransientError(f"http_{code}", f"HTTP {code}", parse_retry_after(retry_after))
    if code >= 500:
        return TransientError(f"http_{code}", f"HTTP {code}")
    hint = " (Wikimedia refuses clients without a descriptive User-Agent: set kg.sparql.contact)" if code == 403 else ""
    return SparqlError(f"HTTP {code}{hint}")


class EmbeddedTransport:
    """A pyoxigraph store queried in-process: the same query text, the same JSON bytes."""

    def __init__(self, store: Any, name: str, key: str) -> None:
        self.store = store
        self.name = name
        self.key = key

    def fetch(self, query: str) -> bytes:
        from pyoxigraph import QueryResultsFormat

        try:
            return self.store.query(query).serialize(format=QueryResultsFormat.JSON)
        except SyntaxError as error:
            raise SparqlError(f"{self.name}: query refused: {error}") from None


def open_dump(path: Path, cache_dir: Path) -> EmbeddedTransport:
    """Load a Turtle / N-Triples / N-Quads file (optionally .gz or .bz2) into an on-disk store.

    The store lives in the run's cache, keyed by the file's path, size and modification time,
    so a rerun reopens it instead of parsing the dump again.
    """
    from pyoxigraph import RdfFormat, Store

    path = path.resolve()
    if not path.is_file():
        raise SparqlError(f"--kg-dump: {path}: no such file")
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir / f"store-{key}"
    done = folder / "LOADED"
    name = f"dump {path.name}"
    if done.exists():
        return EmbeddedTransport(Store.read_only(str(folder)), name, f"dump:{key}")
    shutil.rmtree(folder, ignore_errors=True)
    suffixes = [suffix.lower() for suffix in path.suffixes]
    opener: Callable[..., Any] = {".gz": gzip.open, ".bz2": bz2.open}.get(suffixes[-1] if suffixes else "", open)
    syntax = suffixes[-2] if opener is not open and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    formats = {".ttl": RdfFormat.TURTLE, ".nt": RdfFormat.N_TRIPLES, ".nq": RdfFormat.N_QUADS}
    if syntax not in formats:
        raise SparqlError(f"--kg-dump: {path}: unknown format; expected .ttl, .nt or .nq, optionally .gz/.bz2")
    logger.info("loading %s into an embedded store (once per run)", path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    store = Store(str(folder))
    try:
        with opener(path, "rb") as stream:
            store.bulk_load(input=stream, format=formats[syntax])
    except SyntaxError as error:
        raise SparqlError(f"--kg-dump: {path}: not valid {syntax[1:]}: {error}") from None
    store.flush()
    done.write_text(str(path))
    del store  # release the write lock before reopening read-only
    return EmbeddedTransport(Store.read_only(str(folder)), name, f"dump:{key}")


@dataclass
class ClientStats(StatsRecord):
    requests: int = 0
    retries: int = 0
    pages: int = 0
    pages_from_cache: int = 0
    rows: int = 0
    waited_seconds: float = 0.0
    transient_errors: Counter[str] = field(default_factory=Counter)


class SparqlClient:
    """SELECT queries with retries and a page cache; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        cache_dir: Path | None,
        *,
        max_attempts: int = 6,
        backoff: float = 2.0,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.transport = transport
        self.cache_dir = cache_dir
        self.max_attempts = max_attempts
        self.backoff = Backoff(backoff, max_wait, seed)
        self.sleep = sleep
        self.stats = ClientStats()
        self._lock = threading.Lock()  # the harvest fetches from two threads (see wikidata.py)
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def select(self, query: str, what: str) -> list[dict[str, Any]]:
        """The bindings of one SELECT, from the cache or the endpoint."""
        cached = self._cache_path(query)
        if cached is not None and cached.exists():
            self._count(pages_from_cache=1)
            bindings = _bindings(cached.read_bytes())
        else:
            body, bindings = self._fetch_with_retries(query, what)
            if cached is not None:
                write_bytes_atomic(cached, body)
        self._count(pages=1, rows=len(bindings))
        return bindings

    def select_pages(self, query: str, what: str, page_size: int, max_pages: int = 1_000_000) -> Iterator[list[dict[str, Any]]]:
        """Page through an ORDER BY query with LIMIT/OFFSET; stops at the first short page."""
        if "ORDER BY" not in query.upper():
            raise ValueError("paged queries need an ORDER BY, or pages are not stable")
        for page in range(max_pages):
            text = f"{query}\nLIMIT {page_size} OFFSET {page * page_size}"
            bindings = self.select(text, f"{what}, page {page + 1}")
            if len(bindings) > page_size:
                raise SparqlError(f"{self.transport.name}: {what}, page {page + 1}: the endpoint ignored LIMIT {page_size}")
            yield bindings
            if len(bindings) < page_size:
                return
        raise SparqlError(f"{self.transport.name}: {what}: more than {max_pages} pages; raise kg.sparql.page_size")

    def _count(self, error: str | None = None, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            if error is not None:
                self.stats.transient_errors[error] += 1

    def _cache_path(self, query: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.transport.key}\n{query}".encode()).hexdigest()
        return self.cache_dir / f"{digest[:32]}.json"

    def _fetch_with_retries(self, query: str, what: str) -> tuple[bytes, list[dict[str, Any]]]:
        for attempt in range(1, self.max_attempts + 1):
            self._count(requests=1)
            try:
                body = self.transport.fetch(query)
                return body, _bindings(body)
            except TransientError as error:
                self._count(error=error.kind)
                if attempt == self.max_attempts:
                    raise self._give_up(what, attempt, error.cause) from None
                try:
                    wait = self.backoff.wait(attempt, error.retry_after)
                except WaitTooLong as too_long:
                    raise SparqlError(
                        f"{self.transport.name}: {too_long}, longer than kg.sparql.max_wait={self.backoff.max_wait:g}s; "
                        "fetched pages are kept, rerun later to resume"
                    ) from None
                logger.warning(
                    "%s: %s: %s; retry %d/%d in %.1fs",
                    self.transport.name, what, error.cause, attempt, self.max_attempts - 1, wait,
                )
                self._count(retries=1, waited_seconds=wait)
                self.sleep(wait)
            except SparqlError as error:
                raise SparqlError(f"{self.transport.name}: {what}: {error}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up(self, what: str, attempts: int, cause: str) -> SparqlError:
        kept = f"{self.stats.pages} page(s) fetched so far are kept in {self.cache_dir}" if self.cache_dir else "nothing is cached"
        return SparqlError(
            f"{self.transport.name}: gave up on {what} after {attempts} attempts: {cause}. "
            f"{kept}; rerun the same command to resume."
        )


def _bindings(body: bytes) -> list[dict[str, Any]]:
    """Parse and check a sparql-results+json body; anything else is a transient failure."""
    stripped = body.lstrip()[:1]
    if stripped == b"<":
        raise TransientError("malformed", "an HTML or XML page instead of JSON results")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TransientError("malformed", f"malformed JSON results ({len(body)} bytes): {error}") from None
    bindings = document.get("results", {}).get("bindings") if isinstance(document, dict) else None
    if not isinstance(bindings, list):
        raise TransientError("malformed", "JSON without results.bindings")
    return bindings

"""A SPARQL client that survives real endpoints: retries, paging, a page cache to resume from.

Two transports answer the same query text with the same ``sparql-results+json`` bytes:

- ``HttpTransport``: the SPARQL 1.1 protocol over HTTP POST (QLever, WDQS, an ``oxigraph
  serve``, any endpoint), through ``entitynet.http``: a pooled session, urllib3's Retry for
  429/5xx/timeouts/resets (429 and 503 honour ``Retry-After``), and a body that is not results
  (an HTML error page, truncated JSON) retried within the same budget;
- ``EmbeddedTransport``: a pyoxigraph store in this process, for dump files.

``SparqlClient`` adds what a harvest of millions of rows needs: LIMIT/OFFSET paging in a stable
order, and a cache of every page on disk, so a run that gives up keeps what it fetched and a
rerun resumes where it stopped.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

from entitynet.config import SparqlConfig
from entitynet.http import HttpClient, HttpFailure, HttpStats, Transient, display_url, read_body
from entitynet.rundir import StageError, StatsRecord, write_bytes_atomic

logger = logging.getLogger(__name__)

Results = tuple[bytes, list[dict[str, Any]]]  # the raw body (cached as is) and its bindings


class SparqlError(StageError):
    """A query failed for good: the message names the endpoint, the page and the cause."""


class Transport(Protocol):
    name: str  # shown in messages; never holds credentials
    key: str  # identifies the data behind it, for the page cache
    stats: HttpStats

    def fetch(self, query: str) -> Results: ...  # raises HttpFailure or SparqlError


class HttpTransport:
    """SPARQL over HTTP POST, results as JSON; retries as the config says (see the module docstring)."""

    def __init__(self, config: SparqlConfig) -> None:
        self.url = config.endpoint_url
        self.name = display_url(self.url)
        self.key = self.name
        self.timeout = config.timeout
        # Two threads of the harvest ask at once (wikidata.py): two kept-alive connections.
        self.http = HttpClient(config, timeout=config.timeout, contact=config.contact, pool_size=2,
                               headers={"Accept": "application/sparql-results+json"})
        self.stats = self.http.stats

    def fetch(self, query: str) -> Results:
        return self.http.call("POST", self.url, self._read, data={"query": query})

    def _read(self, response: requests.Response) -> Results:
        if response.status_code >= 400:  # 400 bad query, 401, 403, 404, 414: retrying cannot help
            said = " ".join(read_body(response, max_bytes=1 << 20, seconds=self.timeout)[:300].decode("utf-8", "replace").split())
            hint = " (Wikimedia refuses clients without a descriptive User-Agent: set kg.sparql.contact)" if response.status_code == 403 else ""
            raise HttpFailure(f"http_{response.status_code}", f"HTTP {response.status_code}{hint}: {said}", status=response.status_code)
        # A deadline for the whole body: a server that trickles bytes cannot stall the harvest.
        body = read_body(response, seconds=self.timeout)
        return body, bindings(body)


class EmbeddedTransport:
    """A pyoxigraph store queried in-process: the same query text, the same JSON bytes."""

    def __init__(self, store: Any, name: str, key: str) -> None:
        self.store = store
        self.name = name
        self.key = key
        self.stats = HttpStats()  # no HTTP: stays zero

    def fetch(self, query: str) -> Results:
        from pyoxigraph import QueryResultsFormat

        try:
            body = self.store.query(query).serialize(format=QueryResultsFormat.JSON)
        except SyntaxError as error:
            raise SparqlError(f"{self.name}: query refused: {error}") from None
        return body, bindings(body)


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
    pages: int = 0
    pages_from_cache: int = 0
    rows: int = 0
    http: HttpStats = field(default_factory=HttpStats)  # the transport's requests, retries, waits, errors


class SparqlClient:
    """SELECT queries with paging and a page cache; see the module docstring."""

    def __init__(self, transport: Transport, cache_dir: Path | None) -> None:
        self.transport = transport
        self.cache_dir = cache_dir
        self.stats = ClientStats(http=transport.stats)
        self._lock = threading.Lock()  # the harvest fetches from two threads (see wikidata.py)
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    def select(self, query: str, what: str) -> list[dict[str, Any]]:
        """The bindings of one SELECT, from the cache or the endpoint."""
        cached = self._cache_path(query)
        if cached is not None and cached.exists():
            self._count(pages_from_cache=1)
            found = bindings(cached.read_bytes())
        else:
            body, found = self._fetch(query, what)
            if cached is not None:
                write_bytes_atomic(cached, body)
        self._count(pages=1, rows=len(found))
        return found

    def select_pages(self, query: str, what: str, page_size: int, max_pages: int = 1_000_000) -> Iterator[list[dict[str, Any]]]:
        """Page through an ORDER BY query with LIMIT/OFFSET; stops at the first short page."""
        if "ORDER BY" not in query.upper():
            raise ValueError("paged queries need an ORDER BY, or pages are not stable")
        for page in range(max_pages):
            text = f"{query}\nLIMIT {page_size} OFFSET {page * page_size}"
            found = self.select(text, f"{what}, page {page + 1}")
            if len(found) > page_size:
                raise SparqlError(f"{self.transport.name}: {what}, page {page + 1}: the endpoint ignored LIMIT {page_size}")
            yield found
            if len(found) < page_size:
                return
        raise SparqlError(f"{self.transport.name}: {what}: more than {max_pages} pages; raise kg.sparql.page_size")

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _cache_path(self, query: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(f"{self.transport.key}\n{query}".encode()).hexdigest()
        return self.cache_dir / f"{digest[:32]}.json"

    def _fetch(self, query: str, what: str) -> Results:
        name = self.transport.name
        try:
            return self.transport.fetch(query)
        except HttpFailure as failure:
            if failure.wait is not None:
                raise SparqlError(
                    f"{name}: {failure.detail}, longer than kg.sparql.max_wait; fetched pages are kept, rerun later to resume"
                ) from None
            if failure.status is not None and 400 <= failure.status < 500 and failure.status != 429:
                raise SparqlError(f"{name}: {what}: {failure.detail}") from None
            kept = f"{self.stats.pages} page(s) fetched so far are kept in {self.cache_dir}" if self.cache_dir else "nothing is cached"
            raise SparqlError(
                f"{name}: gave up on {what} after {failure.attempts} attempts: {failure.detail}. "
                f"{kept}; rerun the same command to resume."
            ) from None
        except SparqlError as error:
            raise SparqlError(f"{name}: {what}: {error}") from None


def bindings(body: bytes) -> list[dict[str, Any]]:
    """Parse and check a sparql-results+json body; anything else is worth another attempt."""
    stripped = body.lstrip()[:1]
    if stripped == b"<":
        raise Transient("malformed", "an HTML or XML page instead of JSON results")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Transient("malformed", f"malformed JSON results ({len(body)} bytes): {error}") from None
    found = document.get("results", {}).get("bindings") if isinstance(document, dict) else None
    if not isinstance(found, list):
        raise Transient("malformed", "JSON without results.bindings")
    return found

"""HTTP for every remote client (search engines, SPARQL endpoints, chat endpoints, image hosts):
a ``requests`` session per client, with pooled keep-alive connections and urllib3's ``Retry``
built once from a ``RetryConfig``.

urllib3 retries what happens before an answer is read: connection errors, timeouts, resets and
the statuses 429 and 5xx, honouring Retry-After, with backoff. What stays ours, and why:

- **The wait and the Retry-After rule** (``Retry``): exponential backoff with equal jitter from
  the first retry (urllib3 would retry the first failure at once), at most ``max_wait``; a
  server that asks to wait longer than ``max_wait`` fails the call at once, where urllib3 would
  clamp the wait and sleep, or retry early and be refused again.
- **Reading the body** (``read_body``): a deadline for the whole body, so a server that trickles
  bytes cannot stall a run, and a byte cap; then the caller's checks (JSON that parses, results
  that are results, an image). A body found broken after urllib3 returned (truncated, an HTML
  error page, malformed JSON) is retried by ``HttpClient.call`` against what is left of the
  same Retry budget: ``max_attempts`` bounds every request, whatever went wrong.
- **Messages** name the host and path only (``display_url``): keys travel in query strings and
  headers and must never reach a message, a log or a file.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from entitynet import __version__
from entitynet.config import RetryConfig
from entitynet.rundir import StatsRecord

T = TypeVar("T")

PROJECT_URL = "https://arxiv.org/abs/2505.02746"  # what the tool does; the contact says who runs it
RETRY_STATUSES = frozenset({429, *range(500, 600)})


def user_agent(contact: str = "") -> str:
    """Wikimedia's User-Agent policy: tool name/version, a URL and a way to reach the operator."""
    reach = f"{PROJECT_URL}; {contact}" if contact else PROJECT_URL
    return f"EntityNet/{__version__} ({reach})"


def display_url(url: str) -> str:
    """The URL without user:password, query string or fragment, safe to print."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class HttpFailure(Exception):
    """A call that failed: ``kind`` is short and stable (``http_503``, ``timeout``, ``connection``,
    ``dns_error``, ``truncated``, ``malformed``, ...) and counted in statistics; ``attempts`` is
    how many requests were sent; ``wait`` is set when the server asked to wait longer than allowed."""

    def __init__(self, kind: str, detail: str = "", *, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(detail or describe(kind))
        self.kind = kind
        self.detail = detail or describe(kind)
        self.status = status
        self.wait = wait
        self.attempts = 1


class Transient(HttpFailure):
    """A failure worth another attempt (raised by the body checks of ``HttpClient.call``)."""


def describe(kind: str) -> str:
    if kind.startswith("http_"):
        return f"HTTP {kind[5:]}"
    return {"timeout": "no answer in time", "connection": "connection failed", "dns_error": "the name does not resolve",
            "truncated": "the body was cut short"}.get(kind, kind)


def failure_of(error: BaseException) -> HttpFailure:
    """The kind of a requests or urllib3 error (one that urllib3 gave up on, or one while reading)."""
    while isinstance(error, (requests.RequestException, MaxRetryError)):
        inner = error.args[0] if isinstance(error, requests.RequestException) and error.args else getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = f"{type(error).__name__}: {error}"[:200]
    if isinstance(error, NameResolutionError):
        return HttpFailure("dns_error", text)
    if isinstance(error, NewConnectionError):
        return HttpFailure("connection", f"connection failed: {text}")
    if isinstance(error, (TimeoutError, socket.timeout, ReadTimeoutError, requests.Timeout)):
        return HttpFailure("timeout", "no answer in time")
    if isinstance(error, ProtocolError) and any(isinstance(cause, http.client.IncompleteRead) for cause in error.args):
        return HttpFailure("truncated", text)
    if isinstance(error, (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return HttpFailure("bad_url", text)
    return HttpFailure("connection", f"connection broken: {text}")


@dataclass
class HttpStats(StatsRecord):
    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class _CallLog:
    """What one call went through; the Retry copies urllib3 makes while counting down share it."""

    failures: list[str] = field(default_factory=list)  # one kind per failed attempt
    answered: int = 0  # attempts that ended with an answer that was no failure (the last one, at most)
    waited: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.failures) + self.answered


class Retry(urllib3.Retry):
    """urllib3's Retry with our wait formula and Retry-After rule (see the module docstring)."""

    def __init__(self, *args: Any, max_wait: float = 300.0, log: _CallLog | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait
        self.log = log or _CallLog()

    @classmethod
    def of(cls, config: RetryConfig) -> Retry:
        return cls(
            total=config.max_attempts - 1, connect=None, read=None, status=None, other=None, redirect=False,
            backoff_factor=config.backoff, backoff_max=config.max_wait, max_wait=config.max_wait,
            status_forcelist=RETRY_STATUSES, allowed_methods=None,  # our POSTs (SPARQL, chat) are safe to repeat
            respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False,
        )

    def for_call(self) -> Retry:
        retry = self.new()
        retry.log = _CallLog()
        return retry

    def new(self, **kw: Any) -> Retry:
        retry = super().new(**kw)
        retry.max_wait, retry.log = self.max_wait, self.log
        return retry

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> Retry:
        if response is not None:
            self.log.failures.append(f"http_{response.status}")
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > self.max_wait:
                # Our rule: fail now. With raise_on_status off, urllib3 hands the response back.
                raise MaxRetryError(_pool, url, "Retry-After longer than max_wait")  # type: ignore[arg-type]
        elif error is not None:
            self.log.failures.append(error.kind if isinstance(error, HttpFailure) else failure_of(error).kind)
        return super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[return-value]

    def get_backoff_time(self) -> float:
        """Equal jitter: half of min(max_wait, backoff * 2**(n-1)) plus a random share of the other
        half, so clients that failed together do not come back together."""
        ceiling = min(self.max_wait, self.backoff_factor * 2 ** (max(len(self.history), 1) - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def sleep(self, response: Any = None) -> None:
        wait = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        seconds = self.get_backoff_time() if wait is None else wait
        self.log.waited += seconds
        time.sleep(seconds)


_CALL_RETRY: ContextVar[Retry | None] = ContextVar("entitynet_call_retry", default=None)


class _Adapter(HTTPAdapter):
    """requests' adapter, whose Retry is the current call's when ``HttpClient.call`` sets one:
    requests has no per-request retries, and a call retried for its body must go on with what
    urllib3 left of its budget. ``pool_classes`` replaces urllib3's connection pools (the
    downloader's address guard)."""

    def __init__(self, retry: Retry, pool_size: int, hosts: int, pool_classes: Mapping[str, type] | None = None) -> None:
        self.pool_classes = pool_classes
        super().__init__(pool_connections=hosts, pool_maxsize=pool_size, max_retries=retry)

    @property  # type: ignore[override]
    def max_retries(self) -> Retry:
        return _CALL_RETRY.get() or self._retry

    @max_retries.setter
    def max_retries(self, value: Retry) -> None:
        self._retry = value

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        if getattr(self, "pool_classes", None):
            self.poolmanager.pool_classes_by_scheme = dict(self.pool_classes)  # type: ignore[arg-type]


class HttpClient:
    """One remote service's client: a pooled session, the retry budget, statistics.

    Thread-safe for calls (the downloader's threads share one); ``min_interval`` spaces calls
    out for services that ask clients to be serial and polite (Wikimedia)."""

    def __init__(
        self,
        retry: RetryConfig,
        *,
        timeout: float | tuple[float, float],
        contact: str = "",
        headers: Mapping[str, str] | None = None,
        pool_size: int = 4,
        hosts: int = 4,
        pool_classes: Mapping[str, type] | None = None,
        trust_env: bool = True,
        min_interval: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry = Retry.of(retry)
        self.timeout = timeout
        self.min_interval = min_interval
        self.sleep = sleep
        self.stats = HttpStats()
        self.session = requests.Session()
        self.session.trust_env = trust_env  # environment proxies; the downloader turns them off (its guard must see the host)
        self.session.cookies.set_policy(_NoCookies())
        self.session.headers.update({"User-Agent": user_agent(contact), **(headers or {})})
        adapter = _Adapter(self.retry, pool_size, hosts, pool_classes)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._lock = threading.Lock()
        self._last = 0.0

    def call(self, method: str, url: str, read: Callable[[requests.Response], T], **request: Any) -> T:
        """Send one request (retried by urllib3), then ``read(response)``; a ``Transient`` it raises
        sends the request again while the budget lasts. Raises ``HttpFailure`` with ``attempts``."""
        retry = self.retry.for_call()
        log = retry.log
        try:
            while True:
                self._space_out()
                token = _CALL_RETRY.set(retry)
                try:
                    response = self.session.request(method, url, timeout=self.timeout, stream=True, allow_redirects=False, **request)
                except requests.RequestException as error:  # urllib3 spent the budget, or cannot retry this
                    raise failure_of(error) from None
                finally:
                    _CALL_RETRY.reset(token)
                with response:
                    retry = getattr(response.raw, "retries", None) or retry
                    if response.status_code in RETRY_STATUSES:  # counted by urllib3 already
                        raise _exhausted(response, retry)
                    try:
                        result = read(response)
                    except Transient as broken:
                        try:
                            retry = retry.increment(method, url, error=broken)
                        except MaxRetryError:
                            raise broken from None
                    except HttpFailure:
                        log.answered += 1
                        raise
                    else:
                        log.answered += 1
                        return result
                retry.sleep()
        except HttpFailure as failure:
            failure.attempts = log.sent
            raise
        finally:
            self._count(log)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        """GET ``url`` and decode its JSON body (a body that does not parse is retried)."""
        return self.call("GET", url, read_json, params=params, headers={"Accept": "application/json", **(headers or {})})

    def close(self) -> None:
        self.session.close()

    def _space_out(self) -> None:
        if not self.min_interval:
            return
        with self._lock:
            pause = self._last + self.min_interval - time.monotonic()
            if pause > 0:
                self.sleep(pause)
            self._last = time.monotonic()

    def _count(self, log: _CallLog) -> None:
        with self._lock:
            self.stats.requests += log.sent
            self.stats.retries += max(log.sent - 1, 0)
            self.stats.waited_seconds += log.waited
            self.stats.errors.update(log.failures)


def _exhausted(response: requests.Response, retry: Retry) -> HttpFailure:
    """A 429/5xx that urllib3 handed back: out of attempts, or asked to wait longer than allowed."""
    wait = parse_retry_after(response.headers.get("Retry-After"))
    if wait is not None and wait > retry.max_wait:
        return HttpFailure(f"http_{response.status_code}", f"the server asked to wait {wait:.0f}s",
                           status=response.status_code, wait=wait)
    return HttpFailure(f"http_{response.status_code}", status=response.status_code)


def read_body(response: requests.Response, max_bytes: int | None = None, seconds: float | None = None) -> bytes:
    """The whole body, within a deadline (``Transient("timeout")``) and a size cap
    (``HttpFailure("too_large")``); a body cut short is ``Transient("truncated")``."""
    deadline = time.monotonic() + seconds if seconds else None
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(1 << 16):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise HttpFailure("too_large", f"body over {max_bytes} bytes", status=response.status_code)
            if deadline is not None and time.monotonic() > deadline:
                raise Transient("timeout", "the body took too long", status=response.status_code)
            chunks.append(chunk)
    except requests.RequestException as error:
        failure = failure_of(error)
        raise Transient(failure.kind, f"{failure.detail} after {size} bytes", status=response.status_code) from None
    return b"".join(chunks)


def require_ok(response: requests.Response) -> None:
    """Any status but 2xx fails for good (urllib3 already retried 429 and 5xx)."""
    if not 200 <= response.status_code < 300:
        raise HttpFailure(f"http_{response.status_code}", status=response.status_code)


def read_json(response: requests.Response) -> Any:
    require_ok(response)
    body = read_body(response)
    try:
        return json.loads(body)
    except ValueError:
        raise Transient("malformed_json", f"malformed JSON ({len(body)} bytes)") from None


class _NoCookies(DefaultCookiePolicy):
    """No client here needs cookies; a shared session must not carry one host's to the next call."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

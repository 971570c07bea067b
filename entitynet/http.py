"""A small JSON-over-HTTP client for web APIs (Wikimedia Commons, Google, Brave).

Serial and polite by design: a minimum interval between requests, a descriptive User-Agent,
bounded retries (429/503 honour Retry-After; 5xx, timeouts and broken connections back off
with jitter), and error messages that show the host and path only: API keys travel in query
strings or headers and must never reach a message, a log or a file.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from entitynet import __version__
from entitynet.retry import Backoff, WaitTooLong
from entitynet.rundir import StatsRecord

logger = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/entitynet/entitynet"


class HttpError(RuntimeError):
    """A request failed for good; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    def __init__(self, kind: str, retry_after: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after


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


@dataclass
class HttpStats(StatsRecord):
    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


class JsonClient:
    def __init__(
        self,
        contact: str = "",
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 2.0,
        max_wait: float = 120.0,
        min_interval: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.agent = user_agent(contact)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = Backoff(backoff, max_wait, seed=0)
        self.min_interval = min_interval
        self.sleep = sleep
        self.stats = HttpStats()
        self._last = 0.0
        self._lock = threading.Lock()

    def get(self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        """GET ``url`` with ``params`` and return the decoded JSON body."""
        full = url + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        shown = display_url(url)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._once(full, shown, headers or {})
            except _Transient as transient:
                self.stats.errors[transient.kind] += 1
                if attempt == self.max_attempts:
                    raise HttpError(f"{shown}: gave up after {attempt} attempts: {transient.kind}") from None
                try:
                    wait = self.backoff.wait(attempt, transient.retry_after)
                except WaitTooLong as too_long:
                    raise HttpError(f"{shown}: {too_long}, longer than allowed") from None
                logger.warning("%s: %s; retry %d/%d in %.1fs", shown, transient.kind, attempt, self.max_attempts - 1, wait)
                self.stats.retries += 1
                self.stats.waited_seconds += wait
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, full: str, shown: str, headers: Mapping[str, str]) -> Any:
        with self._lock:  # politeness: requests are serial and spaced
            pause = self._last + self.min_interval - time.monotonic()
            if pause > 0:
                self.sleep(pause)
            self._last = time.monotonic()
        self.stats.requests += 1
        request = urllib.request.Request(full, headers={"User-Agent": self.agent, "Accept": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            retry_after = parse_retry_after(error.headers.get("Retry-After"))
            if error.code in (429, 503) or error.code >= 500:
                raise _Transient(f"http_{error.code}", retry_after) from None
            raise HttpError(f"{shown}: HTTP {error.code}", error.code) from None
        except (TimeoutError, socket.timeout):
            raise _Transient("timeout") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise _Transient("timeout") from None
            raise _Transient("connection") from None
        except (ConnectionError, http.client.HTTPException):
            raise _Transient("connection") from None
        try:
            return json.loads(body)
        except ValueError:
            raise _Transient("malformed_json") from None

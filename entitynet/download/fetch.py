"""Fetch one image URL safely: every outcome is bytes or a reason from a fixed vocabulary.

Safety, in the order it is applied:

- only http and https URLs; the host is resolved first and every address checked: private,
  loopback, link-local, multicast, reserved and unspecified addresses are refused
  (``blocked_address``) unless ``allow_private_addresses``; the connection then goes to the
  address that was checked (no second lookup a DNS rebinding could change), for every redirect
  hop too;
- at most ``max_redirects`` redirects; connect and read timeouts plus a deadline for the body;
- a byte cap: a Content-Length above it, or a body that grows past it, is ``too_large``;
- ``X-Robots-Tag: noai / noimageai / noindex / noimageindex`` -> ``opted_out`` (by default);
- the content is sniffed by magic bytes, never trusted from Content-Type (``not_image``).

Transient failures (timeouts, resets, 429, 5xx) are retried a bounded number of times,
honouring Retry-After; the final reason says what happened last.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from entitynet.http import parse_retry_after, user_agent
from entitynet.retry import Backoff, WaitTooLong

Reason = Literal[
    "bad_url", "blocked_address", "dns_error", "timeout", "connection", "too_many_redirects",
    "http_404", "http_4xx", "http_429", "http_5xx", "too_large", "opted_out", "not_image", "truncated",
]
TRANSIENT: frozenset[str] = frozenset({"timeout", "connection", "http_429", "http_5xx", "dns_error", "truncated"})
OPT_OUT = frozenset({"noai", "noimageai", "noindex", "noimageindex"})

MAGIC = [
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x01\x00", "ico"),
]


def sniff(head: bytes) -> str | None:
    """The image format the first bytes announce, or None."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
        return "avif" if head[8:12] in (b"avif", b"avis") else "heif"
    return None


@dataclass(frozen=True)
class FetchPolicy:
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    max_attempts: int = 3
    backoff: float = 1.0
    max_wait: float = 30.0
    allow_private_addresses: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the guard (an intranet pool, a test host)
    honour_opt_out: bool = True
    contact: str = ""


@dataclass(frozen=True)
class Fetched:
    url: str  # the URL asked for
    final_url: str  # after redirects
    data: bytes | None
    reason: Reason | None = None
    detail: str = ""
    status: int | None = None
    content_type: str | None = None
    format: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.data is not None


class _Failure(Exception):
    def __init__(self, reason: Reason, detail: str = "", status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


def blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def resolve(host: str, port: int, policy: FetchPolicy) -> str:
    """The address to connect to, after checking every address the name resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise _Failure("dns_error", f"{host}: {error.strerror}") from None
    addresses = [info[4][0] for info in infos]
    if not policy.allow_private_addresses:
        exempt = [ipaddress.ip_network(network, strict=False) for network in policy.allowed_networks]
        refused = [a for a in addresses if blocked(a) and not any(ipaddress.ip_address(a) in net for net in exempt)]
        if refused:
            raise _Failure("blocked_address", f"{host} resolves to {refused[0]}")
    return addresses[0]


class Fetcher:
    def __init__(self, policy: FetchPolicy, sleep=time.sleep) -> None:
        self.policy = policy
        self.agent = user_agent(policy.contact)
        self.backoff = Backoff(policy.backoff, policy.max_wait)
        self.sleep = sleep
        self._tls = ssl.create_default_context()
        self._addresses: dict[tuple[str, int], tuple[float, str]] = {}  # checked resolutions, briefly reused

    def fetch(self, url: str) -> Fetched:
        last: _Failure | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                final_url, status, content_type, data = self._follow(url)
                return Fetched(url, final_url, data, status=status, content_type=content_type, format=sniff(data[:16]), attempts=attempt)
            except _Failure as failure:
                last = failure
                if failure.reason not in TRANSIENT or attempt == self.policy.max_attempts:
                    break
                try:
                    self.sleep(self.backoff.wait(attempt, failure.retry_after))
                except WaitTooLong:
                    break
        assert last is not None
        return Fetched(url, url, None, last.reason, last.detail, last.status, attempts=attempt)

    def _follow(self, url: str) -> tuple[str, int, str | None, bytes]:
        current = url
        for _ in range(self.policy.max_redirects + 1):
            status, headers, data, location = self._get(current)
            if location is None:
                return current, status, headers.get("content-type"), data  # type: ignore[return-value]
            current = urllib.parse.urljoin(current, location)
        raise _Failure("too_many_redirects", f"more than {self.policy.max_redirects} redirects")

    def _get(self, url: str) -> tuple[int, dict[str, str], bytes | None, str | None]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Failure("bad_url", f"not an http(s) URL: {url[:200]}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = self._resolve(parts.hostname, port)
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection = self._connection(parts.scheme, parts.hostname, address, port)
        try:
            connection.request("GET", path, headers={
                "Host": parts.netloc.rpartition("@")[2], "User-Agent": self.agent,
                "Accept": "image/avif,image/webp,image/*;q=0.9,*/*;q=0.5",
            })
            response = connection.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            status = response.status
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                return status, headers, None, headers["location"]
            if status != 200:
                retry_after = parse_retry_after(headers.get("retry-after"))
                reason: Reason = "http_404" if status in (404, 410) else "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"
                raise _Failure(reason, f"HTTP {status}", status, retry_after)
            robots = {token.strip().lower() for value in [headers.get("x-robots-tag", "")] for token in value.replace(";", ",").split(",")}
            if self.policy.honour_opt_out and robots & OPT_OUT:
                raise _Failure("opted_out", f"X-Robots-Tag: {headers['x-robots-tag']}", status)
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > self.policy.max_bytes:
                raise _Failure("too_large", f"Content-Length {length}", status)
            data = self._read(response)
            if sniff(data[:16]) is None:
                raise _Failure("not_image", f"{headers.get('content-type', 'no content type')}, starts {data[:12]!r}", status)
            return status, headers, data, None
        except (TimeoutError, socket.timeout):
            raise _Failure("timeout", "no answer in time") from None
        except (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError) as error:
            raise _Failure("connection", f"{type(error).__name__}: {error}"[:200]) from None
        finally:
            connection.close()

    def _resolve(self, host: str, port: int, ttl: float = 60.0) -> str:
        """``resolve`` with a short per-host memory: one lookup per host a minute, not per URL."""
        now = time.monotonic()
        known = self._addresses.get((host, port))
        if known and known[0] > now:
            return known[1]
        address = resolve(host, port, self.policy)
        self._addresses[(host, port)] = (now + ttl, address)
        return address

    def _connection(self, scheme: str, host: str, address: str, port: int) -> http.client.HTTPConnection:
        """A connection to the checked address; TLS still verifies the certificate for ``host``."""
        policy = self.policy
        connect = lambda: socket.create_connection((address, port), timeout=policy.connect_timeout)  # noqa: E731
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=policy.read_timeout, context=self._tls)
            tls = self._tls

            def open_tls() -> None:
                raw = connect()
                raw.settimeout(policy.read_timeout)
                connection.sock = tls.wrap_socket(raw, server_hostname=host)

            connection.connect = open_tls  # type: ignore[method-assign]
        else:
            connection = http.client.HTTPConnection(host, port, timeout=policy.read_timeout)

            def open_plain() -> None:
                raw = connect()
                raw.settimeout(policy.read_timeout)
                connection.sock = raw

            connection.connect = open_plain  # type: ignore[method-assign]
        return connection

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        deadline = time.monotonic() + self.policy.read_timeout * 3
        chunks, size = [], 0
        while True:
            try:
                chunk = response.read(1 << 16)
            except http.client.IncompleteRead as partial:
                raise _Failure("truncated", f"body cut after {size + len(partial.partial)} bytes") from None
            if not chunk:
                if response.length:  # http.client ends quietly when the peer closes early
                    raise _Failure("truncated", f"body cut after {size} bytes, {response.length} missing")
                return b"".join(chunks)
            size += len(chunk)
            if size > self.policy.max_bytes:
                raise _Failure("too_large", f"body over {self.policy.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise _Failure("timeout", "body took too long")
            chunks.append(chunk)

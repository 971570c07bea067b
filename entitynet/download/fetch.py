"""Fetch one image URL safely: every outcome is bytes or a reason from a fixed vocabulary.

Safety, in the order it is applied:

- only http and https URLs (``bad_url``);
- the address guard (guard.py) on every connection, redirect hops included (``blocked_address``);
- at most ``max_redirects`` redirects, followed here rather than by requests, so a redirect's
  body is never read and every hop is counted (``too_many_redirects``);
- connect and read timeouts plus a deadline for the whole body (``timeout``);
- a byte cap: a Content-Length above it, or a body that grows past it, is ``too_large``;
- ``X-Robots-Tag: noai / noimageai / noindex / noimageindex`` -> ``opted_out`` (by default);
- the content is sniffed by magic bytes, never trusted from Content-Type (``not_image``).

Connections are pooled and kept alive per host (``entitynet.http``); transient failures
(timeouts, resets, 429, 5xx, truncated bodies) are retried within ``download.max_attempts``,
honouring Retry-After up to ``download.max_wait``; the final reason says what happened last.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Literal

import requests

from entitynet.config import DownloadConfig
from entitynet.download.guard import AddressGuard, BlockedAddress
from entitynet.http import HttpClient, HttpFailure, read_body

Reason = Literal[
    "bad_url", "blocked_address", "dns_error", "timeout", "connection", "too_many_redirects",
    "http_404", "http_4xx", "http_429", "http_5xx", "too_large", "opted_out", "not_image", "truncated",
]
TRANSIENT: frozenset[str] = frozenset({"timeout", "connection", "http_429", "http_5xx", "dns_error", "truncated"})
OPT_OUT = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
ACCEPT = "image/avif,image/webp,image/*;q=0.9,*/*;q=0.5"

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


def status_reason(status: int) -> Reason:
    return "http_404" if status in (404, 410) else "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"


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


@dataclass(frozen=True)
class _Hop:
    location: str


@dataclass(frozen=True)
class _Body:
    status: int
    content_type: str | None
    data: bytes


class Fetcher:
    """One per worker process, shared by its download threads (one pool of kept-alive connections)."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        guard = AddressGuard(config.allow_private_addresses, config.allowed_networks)
        self.http = HttpClient(
            config, timeout=(config.connect_timeout, config.read_timeout), contact=config.contact,
            headers={"Accept": ACCEPT, "Accept-Encoding": "identity"},  # images are compressed already
            pool_size=config.per_host, hosts=max(config.threads, 10), pool_classes=guard.pool_classes(),
            trust_env=False,  # no proxy from the environment: the guard must see the host itself
        )

    def fetch(self, url: str) -> Fetched:
        current = url
        try:
            for _ in range(self.config.max_redirects + 1):
                parts = urllib.parse.urlsplit(current)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    return Fetched(url, current, None, "bad_url", f"not an http(s) URL: {current[:200]}")
                outcome = self.http.call("GET", current, self._read)
                if isinstance(outcome, _Hop):
                    current = urllib.parse.urljoin(current, outcome.location)
                    continue
                return Fetched(url, current, outcome.data, status=outcome.status, content_type=outcome.content_type,
                               format=sniff(outcome.data[:16]))
            return Fetched(url, current, None, "too_many_redirects", f"more than {self.config.max_redirects} redirects")
        except BlockedAddress as refused:
            return Fetched(url, current, None, "blocked_address", str(refused))
        except HttpFailure as failure:
            reason = status_reason(failure.status) if failure.kind.startswith("http_") and failure.status else failure.kind
            return Fetched(url, current, None, reason, failure.detail[:200], failure.status, attempts=max(failure.attempts, 1))  # type: ignore[arg-type]

    def _read(self, response: requests.Response) -> _Hop | _Body:
        status = response.status_code
        headers = response.headers
        if status in REDIRECTS and headers.get("location"):
            return _Hop(headers["location"])
        if status != 200:
            raise HttpFailure(status_reason(status), f"HTTP {status}", status=status)
        robots = {token.strip().lower() for token in headers.get("x-robots-tag", "").replace(";", ",").split(",")}
        if self.config.honour_opt_out and robots & OPT_OUT:
            raise HttpFailure("opted_out", f"X-Robots-Tag: {headers['x-robots-tag']}", status=status)
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.config.max_bytes:
            raise HttpFailure("too_large", f"Content-Length {length}", status=status)
        data = read_body(response, self.config.max_bytes, seconds=self.config.read_timeout * 3)
        if sniff(data[:16]) is None:
            raise HttpFailure("not_image", f"{headers.get('content-type', 'no content type')}, starts {data[:12]!r}", status=status)
        return _Body(status, headers.get("content-type"), data)

"""What every search engine shares: the protocol, answer caching, and HTML-to-text."""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol

from entitynet.http import HttpFailure, display_url
from entitynet.records import Candidate
from entitynet.rundir import StageError, write_bytes_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp")


class EngineError(StageError):
    """The engine cannot go on (bad key, quota exhausted, endpoint gone): stop and say why."""


def engine_error(engine: str, url: str, failure: HttpFailure, variables: str = "") -> EngineError:
    """Why an engine stops, in one line that names the API's host and path but never its key."""
    shown = display_url(url)
    if failure.status in (401, 403) and variables:
        return EngineError(f"{engine}: refused (HTTP {failure.status}): check {variables}, the API's enablement and its daily quota")
    if failure.status == 400 and variables:
        return EngineError(f"{engine}: the API rejected the request (HTTP 400): check {variables}")
    if failure.wait is not None:
        return EngineError(f"{engine}: {shown}: {failure.detail}, longer than search.max_wait; rerun later to resume")
    if failure.status is not None and 400 <= failure.status < 500 and failure.status != 429:
        return EngineError(f"{engine}: {shown}: {failure.detail}")
    return EngineError(f"{engine}: {shown}: gave up after {failure.attempts} attempts: {failure.detail}; rerun to resume")


class Engine(Protocol):
    name: str
    drops: Counter[str]  # candidates the engine left out, by reason (non_image, no_url, ...)

    def search(self, text: str, natural_type: str | None, query_id: str, limit: int) -> list[Candidate]: ...


class AnswerCache:
    """Raw engine answers on disk, keyed by what was asked (never by a URL holding an API key)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0

    def get_or_fetch(self, key: dict[str, Any], fetch: Callable[[], Any]) -> Any:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
        path = self.folder / f"{digest}.json"
        if path.exists():
            self.hits += 1
            return json.loads(path.read_text(encoding="utf-8"))
        answer = fetch()
        write_bytes_atomic(path, json.dumps(answer).encode("utf-8"))
        return answer


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(value: str | None) -> str | None:
    """Plain text of an HTML fragment (Commons' Artist, Credit, ImageDescription), or None."""
    if not value:
        return None
    parser = _TextOnly()
    parser.feed(str(value))
    parser.close()
    text = " ".join(html.unescape("".join(parser.parts)).split())
    return text or None


def looks_like_image(url: str) -> bool:
    return url.lower().split("?")[0].endswith(IMAGE_EXTENSIONS)

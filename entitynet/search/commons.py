"""Wikimedia Commons: file-namespace search through the MediaWiki API, no key needed.

One ``generator=search`` request per page (``gsrsearch=<query> filetype:bitmap``, namespace 6)
with ``prop=imageinfo``: URL, size, MIME, a thumbnail at the configured width (so the downloader
fetches fewer bytes) and ``extmetadata`` for licence, licence URL, artist and attribution, with
HTML stripped. ``maxlag`` is sent as Wikimedia asks of bots; continuation is followed until the
limit. Non-image media (audio, video, PDF) are dropped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from entitynet.http import HttpClient, HttpFailure
from entitynet.records import Candidate
from entitynet.search.base import AnswerCache, EngineError, engine_error, html_text, looks_like_image

logger = logging.getLogger(__name__)

EXTMETADATA = "Artist|Attribution|AttributionRequired|Credit|ImageDescription|LicenseShortName|LicenseUrl|ObjectName|UsageTerms"
MAX_MAXLAG_RETRIES = 5


class CommonsEngine:
    name = "commons"

    def __init__(self, client: HttpClient, cache: AnswerCache, api_url: str, thumb_width: int, page_size: int = 50) -> None:
        self.client = client
        self.cache = cache
        self.api_url = api_url
        self.thumb_width = thumb_width
        self.page_size = page_size
        self.drops: Counter[str] = Counter()

    def search(self, text: str, natural_type: str | None, query_id: str, limit: int) -> list[Candidate]:
        found: list[Candidate] = []
        resume: dict[str, Any] = {}
        for _ in range(limit // self.page_size + 2):  # bounded even if continuation never ends
            params = self._params(text, min(self.page_size, limit), resume)
            answer = self.cache.get_or_fetch({"engine": self.name, "params": params}, lambda params=params: self._fetch(params))
            found.extend(self._candidates(answer, query_id, start=len(found)))
            resume = answer.get("continue") or {}
            if len(found) >= limit or not resume:
                break
        return found[:limit]

    def _params(self, text: str, count: int, resume: dict[str, Any]) -> dict[str, Any]:
        return {
            "action": "query", "format": "json", "formatversion": 2, "maxlag": 5,
            "generator": "search", "gsrsearch": f"{text} filetype:bitmap", "gsrnamespace": 6, "gsrlimit": count,
            "prop": "imageinfo", "iiprop": "url|size|mime|extmetadata", "iiurlwidth": self.thumb_width,
            "iiextmetadatafilter": EXTMETADATA, **resume,
        }

    def _fetch(self, params: dict[str, Any]) -> Any:
        for attempt in range(MAX_MAXLAG_RETRIES):
            try:
                answer = self.client.get_json(self.api_url, params)
            except HttpFailure as failure:
                raise engine_error(self.name, self.api_url, failure) from None
            problem = answer.get("error") if isinstance(answer, dict) else None
            if not problem:
                return answer
            if problem.get("code") != "maxlag":
                raise EngineError(f"commons: the API answered {problem.get('code')}: {problem.get('info', '')[:200]}")
            wait = min(60.0, 5.0 * (attempt + 1))  # replication lag: come back later, as the API asks
            logger.info("commons: servers lagging (%s); waiting %.0fs", problem.get("info", ""), wait)
            self.client.sleep(wait)
        raise EngineError("commons: servers kept lagging (maxlag); rerun later to resume")

    def _candidates(self, answer: dict[str, Any], query_id: str, start: int) -> list[Candidate]:
        pages = (answer.get("query") or {}).get("pages") or []
        if isinstance(pages, dict):  # formatversion=1 keys pages by id
            pages = list(pages.values())
        pages = sorted(pages, key=lambda p: p.get("index", 0))  # search rank
        made = []
        for page in pages:
            info = (page.get("imageinfo") or [None])[0]
            if not info:
                self.drops["no_imageinfo"] += 1
                continue
            candidate = self._candidate(page, info, query_id, start + len(made))
            if candidate is not None:
                made.append(candidate)
        return made

    def _candidate(self, page: dict[str, Any], info: dict[str, Any], query_id: str, rank: int) -> Candidate | None:
        original = info.get("url")
        mime = info.get("mime")
        if not original or (mime and not mime.startswith("image/")) or (not mime and not looks_like_image(original)):
            self.drops["non_image"] += 1
            return None
        meta = {key: (value or {}).get("value") for key, value in (info.get("extmetadata") or {}).items()}
        thumb = info.get("thumburl")
        title = str(page.get("title", "")).removeprefix("File:")
        text = html_text(meta.get("ImageDescription")) or html_text(meta.get("ObjectName")) or Path(title).stem or None
        artist = html_text(meta.get("Attribution")) or html_text(meta.get("Artist"))
        return Candidate(
            url=thumb or original,
            query_id=query_id,
            engine=self.name,
            rank=rank,
            page_url=info.get("descriptionurl"),
            text=text,
            width=info.get("thumbwidth" if thumb else "width"),
            height=info.get("thumbheight" if thumb else "height"),
            mime=mime,
            license=html_text(meta.get("LicenseShortName")) or html_text(meta.get("UsageTerms")),
            license_url=meta.get("LicenseUrl") or None,
            attribution=artist,
        )

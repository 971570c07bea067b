"""Commercial image search APIs: Google Custom Search JSON API and Brave Image Search.

Keys come from environment variables the config names; they travel in the query string
(Google) or a header (Brave) and never reach a message, a log, the answer cache or a file.
Quota and authentication errors stop the engine with a message that says which variable to check.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from entitynet.http import HttpClient, HttpFailure
from entitynet.records import Candidate
from entitynet.search.base import AnswerCache, EngineError, engine_error


def _secret(variable: str, engine: str) -> str:
    value = os.environ.get(variable, "").strip()
    if not value:
        raise EngineError(f"{engine}: set the environment variable {variable} (the key is read from there only)")
    return value


class GoogleEngine:
    """Custom Search JSON API, image search: at most 10 per request and 100 per query (the API's limit)."""

    name = "google"
    API_LIMIT = 100

    def __init__(self, client: HttpClient, cache: AnswerCache, url: str, key_env: str, cx_env: str,
                 exclude_terms: list[str], image_type: str) -> None:
        self.client = client
        self.cache = cache
        self.url = url
        self.key_env, self.cx_env = key_env, cx_env
        self.key, self.cx = _secret(key_env, self.name), _secret(cx_env, self.name)
        self.exclude_terms = exclude_terms
        self.image_type = image_type
        self.drops: Counter[str] = Counter()

    def search(self, text: str, natural_type: str | None, query_id: str, limit: int) -> list[Candidate]:
        found: list[Candidate] = []
        limit = min(limit, self.API_LIMIT)
        for start in range(1, limit + 1, 10):
            params: dict[str, Any] = {"q": text, "searchType": "image", "num": min(10, limit - start + 1), "start": start,
                                      "safe": "active"}
            if self.image_type:
                params["imgType"] = self.image_type
            if self.exclude_terms:
                params["excludeTerms"] = " ".join(self.exclude_terms)
            if natural_type:
                params["orTerms"] = natural_type  # disambiguation hint: "jaguar" OR-ed with "big cat"
            answer = self.cache.get_or_fetch({"engine": self.name, "cx": self.cx, "params": params}, lambda params=params: self._get(params))
            items = answer.get("items") or []
            for item in items:
                candidate = self._candidate(item, query_id, len(found))
                if candidate:
                    found.append(candidate)
            if len(items) < params["num"]:
                break
        return found[:limit]

    def _get(self, params: dict[str, Any]) -> Any:
        try:
            return self.client.get_json(self.url, {**params, "key": self.key, "cx": self.cx})
        except HttpFailure as failure:
            raise engine_error(self.name, self.url, failure, f"${self.key_env} and ${self.cx_env}") from None

    def _candidate(self, item: dict[str, Any], query_id: str, rank: int) -> Candidate | None:
        link = item.get("link")
        mime = item.get("mime")
        if not link:
            self.drops["no_url"] += 1
            return None
        if mime and not mime.startswith("image/"):
            self.drops["non_image"] += 1
            return None
        image = item.get("image") or {}
        return Candidate(url=link, query_id=query_id, engine=self.name, rank=rank, page_url=image.get("contextLink"),
                         text=item.get("title") or item.get("snippet"), width=image.get("width"),
                         height=image.get("height"), mime=mime)


class BraveEngine:
    """Brave Search API, image search (one request of up to ``count`` results per query)."""

    name = "brave"
    API_LIMIT = 200

    def __init__(self, client: HttpClient, cache: AnswerCache, url: str, token_env: str) -> None:
        self.client = client
        self.cache = cache
        self.url = url
        self.token_env = token_env
        self.token = _secret(token_env, self.name)
        self.drops: Counter[str] = Counter()

    def search(self, text: str, natural_type: str | None, query_id: str, limit: int) -> list[Candidate]:
        params = {"q": text, "count": min(limit, self.API_LIMIT), "safesearch": "strict", "spellcheck": 0}
        answer = self.cache.get_or_fetch({"engine": self.name, "params": params}, lambda: self._get(params))
        found = []
        for result in answer.get("results") or []:
            candidate = self._candidate(result, query_id, len(found))
            if candidate:
                found.append(candidate)
        return found[:limit]

    def _get(self, params: dict[str, Any]) -> Any:
        try:
            return self.client.get_json(self.url, params, headers={"X-Subscription-Token": self.token})
        except HttpFailure as failure:
            raise engine_error(self.name, self.url, failure, f"${self.token_env}") from None

    def _candidate(self, result: dict[str, Any], query_id: str, rank: int) -> Candidate | None:
        properties = result.get("properties") or {}
        url = properties.get("url") or (result.get("thumbnail") or {}).get("src")
        if not url:
            self.drops["no_url"] += 1
            return None
        return Candidate(url=url, query_id=query_id, engine=self.name, rank=rank, page_url=result.get("url"),
                         text=result.get("title"), width=properties.get("width"), height=properties.get("height"))

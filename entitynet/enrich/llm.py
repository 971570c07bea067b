"""Chat models for the enrich stage: an OpenAI-compatible endpoint or a local transformers model,
behind one cache, so a rerun makes no call at all and an interrupted run resumes.

Why ``requests`` (``entitynet.http``) rather than ``huggingface_hub.InferenceClient``: with
``HF_HUB_OFFLINE=1`` (how offline clusters run) InferenceClient refuses every URL, loopback
included, so a local vLLM or llama.cpp server would be unreachable. The chat-completions protocol is small and every server
we target speaks it: vLLM, TGI, llama.cpp, Ollama, OpenAI and Hugging Face's router
(``https://router.huggingface.co/v1``). The API key is read from the environment variable the
config names; it is sent in the Authorization header and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import requests

from entitynet.config import LlmConfig
from entitynet.http import HttpClient, HttpFailure, HttpStats, Transient, display_url, read_json
from entitynet.rundir import StageError, StatsRecord, write_bytes_atomic

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LlmError(StageError):
    """The model cannot be used at all (bad key, unknown model, endpoint gone after retries)."""


@dataclass(frozen=True)
class Answer:
    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatModel(Protocol):
    name: str  # "model@endpoint" or "transformers:model"; part of the cache key

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Answer: ...


@dataclass
class LlmStats(StatsRecord):
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    http: HttpStats = field(default_factory=HttpStats)  # requests, retries, waits and errors (remote models)


class OpenAIChat:
    """POST {base_url}/chat/completions through ``entitynet.http`` (pooled connections, urllib3's
    Retry for 429/5xx/timeouts as ``enrich.llm`` says); an answer that is not a chat completion is
    retried within the same budget."""

    def __init__(self, config: LlmConfig, stats: LlmStats | None = None) -> None:
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.model = config.model
        self.name = f"{config.model}@{display_url(config.base_url)}"
        self.api_key_env = config.api_key_env
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self.params = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        self.response_format = config.response_format
        headers = {"Authorization": f"Bearer {key}"} if key else {}  # the key goes here and nowhere else
        self.http = HttpClient(config, timeout=config.timeout, pool_size=config.concurrency, headers=headers)
        self.stats = stats or LlmStats()
        self.stats.http = self.http.stats
        self._lock = threading.Lock()

    def cache_identity(self) -> dict[str, Any]:
        return {"model": self.model, "params": self.params, "response_format": self.response_format}

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Answer:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.params}
        if schema is not None and self.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        elif schema is not None and self.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        try:
            answer = self.http.call("POST", self.url, _read_answer, json=body, headers={"Accept": "application/json"})
        except HttpFailure as failure:
            if failure.wait is not None:
                raise LlmError(f"{self.name}: {failure.detail}, longer than enrich.llm.max_wait") from None
            if failure.status is not None and 400 <= failure.status < 500 and failure.status != 429:
                hint = f" (is ${self.api_key_env} set and valid?)" if failure.status in (401, 403) else ""
                raise LlmError(f"{self.name}: HTTP {failure.status}{hint}") from None
            raise LlmError(f"{self.name}: gave up after {failure.attempts} attempts: {failure.detail}") from None
        with self._lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += answer.prompt_tokens
            self.stats.completion_tokens += answer.completion_tokens
        return answer


def _read_answer(response: requests.Response) -> Answer:
    document = read_json(response)
    try:
        content = document["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise Transient("malformed_response", "not a chat completion") from None
    usage = document.get("usage") or {}
    return Answer(content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


class TransformersChat:
    """A local instruct model through its chat template (CPU or GPU; greedy decoding)."""

    def __init__(self, model: str, max_new_tokens: int = 512, device: str = "auto", stats: LlmStats | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"transformers:{model}"
        self.model_id = model
        self.max_new_tokens = max_new_tokens
        self.stats = stats or LlmStats()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device).eval()
        self.device = device
        self._lock = threading.Lock()  # one generation at a time: the model is not re-entrant

    def cache_identity(self) -> dict[str, Any]:
        return {"model": self.model_id, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Answer:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        with self._lock, torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        prompt_length = inputs["input_ids"].shape[1]
        content = self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
        answer = Answer(content, prompt_length, int(output.shape[1] - prompt_length))
        self.stats.calls += 1
        self.stats.prompt_tokens += answer.prompt_tokens
        self.stats.completion_tokens += answer.completion_tokens
        return answer


Request = tuple[list[dict[str, str]], dict[str, Any] | None]  # messages, JSON schema


class CachedChat:
    """Every answer on disk, keyed by (model, messages, schema, parameters), written as it arrives."""

    def __init__(self, model: Any, folder: Path, concurrency: int = 1) -> None:
        self.model = model
        self.folder = folder
        self.concurrency = concurrency
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def stats(self) -> LlmStats:
        return self.model.stats

    def _path(self, request: Request) -> Path:
        messages, schema = request
        identity = {"model": self.model.cache_identity(), "messages": messages, "schema": schema}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:40]}.json"

    def cached(self, request: Request) -> Answer | None:
        path = self._path(request)
        if not path.exists():
            return None
        self.model.stats.cache_hits += 1
        return Answer(**json.loads(path.read_text()))

    def ask(self, request: Request) -> Answer:
        """The model's answer (may run on a worker thread), stored before it is returned."""
        answer = self.model.complete(*request)
        write_bytes_atomic(self._path(request), json.dumps(answer.__dict__).encode())
        return answer

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Answer:
        return self.cached((messages, schema)) or self.ask((messages, schema))

    def map(
        self,
        items: Iterable[T],
        build: Callable[[T], Request | None],
        finish: Callable[[T, Answer | None], Any],
    ) -> Iterator[Any]:
        """``finish(item, answer)`` for every item, in input order, on this thread.

        ``build`` makes an item's request (None: no question to ask); cached answers are read
        here, the others asked with up to ``concurrency`` requests in flight. Only the model
        calls run on worker threads, so ``finish`` may update counters without locks.
        """
        window: deque[tuple[T, Answer | None, Future[Answer] | None]] = deque()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="llm") as pool:
            for item in items:
                request = build(item)
                answer = self.cached(request) if request is not None else None
                future = pool.submit(self.ask, request) if request is not None and answer is None else None
                window.append((item, answer, future))
                # Finish from the head while it is ready (cached, nothing to ask, or answered),
                # and block on it when too many requests are waiting.
                while window and (len(window) > self.concurrency * 4 or window[0][2] is None or window[0][2].done()):
                    yield self._finish(window.popleft(), finish)
            while window:
                yield self._finish(window.popleft(), finish)

    @staticmethod
    def _finish(entry: tuple[T, Answer | None, Future[Answer] | None], finish: Callable[[T, Answer | None], Any]) -> Any:
        item, answer, future = entry
        return finish(item, future.result() if future is not None else answer)

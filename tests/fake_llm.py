"""A loopback server speaking the OpenAI chat-completions protocol, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with bodies shaped like real ones (id, object, created,
model, choices[].message, finish_reason, usage). What the assistant says is decided by a
``script``: a function from the request's last user message (parsed JSON when it is JSON) to
either a string (the content) or an ``(status, headers, body)`` triple for faults.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | tuple[int, dict[str, str], bytes]


def completion(content: str, model: str, prompt_tokens: int = 120, completion_tokens: int = 40) -> bytes:
    return json.dumps({
        "id": "chatcmpl-" + hashlib.sha1(content.encode()).hexdigest()[:24],
        "object": "chat.completion",
        "created": 1732147200,
        "model": model,
        "system_fingerprint": "fp_loopback",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }).encode()


def error(status: int, message: str, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}}).encode()
    return status, headers, body


class FakeLLM(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops connections beyond ~8 concurrent clients

    def __init__(self, script: Callable[[Any], Reply], latency: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.latency = latency
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # every request body received
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def prompt_keys(self) -> list[str]:
        """One key per request, equal for equal messages: to count repeated requests."""
        return [hashlib.sha256(json.dumps(r["messages"], sort_keys=True).encode()).hexdigest() for r in self.requests]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.server.lock:
            self.server.requests.append(body)
        if self.path != "/v1/chat/completions":
            self._send(*error(404, "not found"))
            return
        last = body["messages"][-1]["content"]
        try:
            question: Any = json.loads(last.split("\n")[0])
        except ValueError:
            question = last
        if self.server.latency:
            time.sleep(self.server.latency)
        reply = self.server.script(question)
        if isinstance(reply, str):
            self._send(200, {}, completion(reply, body.get("model", "unknown")))
        else:
            self._send(*reply)

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

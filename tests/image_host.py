"""A loopback image host: real files from ../shared/realdata, generated images, and fault routes.

Routes (GET):
  /real/<folder>/<file>          a file of realdata (image_edge_cases, labelled_photos/cameratrapai)
  /gen/<w>x<h>/<seed>.<jpg|png>  a generated picture, deterministic in (size, seed)
  /same/<seed>.jpg               the same picture as /gen/320x240/<seed>.jpg (for dedup tests)
  /scaled/<w>x<h>/<seed>.jpg     that picture resized to w x h and re-encoded (a near-duplicate)
  /fault/404, /fault/500         those statuses
  /fault/429-once/<key>          429 with Retry-After: 1 the first time, then a picture
  /fault/429-long                429 with Retry-After: 3600 (longer than any test's max_wait)
  /fault/slow                    sleeps longer than any test timeout before answering
  /fault/reset                   closes the connection without an answer
  /fault/truncated               promises more bytes than it sends
  /fault/lying-type              a real JPEG labelled text/html (must be stored)
  /fault/html                    an HTML page labelled image/jpeg (must fail as not_image)
  /fault/huge                    a 3 MB body (over the tests' byte cap)
  /fault/redirect-loop           redirects to itself forever
  /fault/redirect-to/<host:port> redirects to /gen/... on another host (a loopback alias)
  /fault/noai                    a picture with X-Robots-Tag: noai
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageDraw

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def picture(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A deterministic picture with shapes and colours that depend on the seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(width // 2 + 1), y0 + rng.randrange(height // 2 + 1)
        draw.ellipse([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=92) if fmt == "JPEG" else image.save(buffer, fmt)
    return buffer.getvalue()


class ImageHost(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: str = "127.0.0.1", slow: float = 5.0, delay: float = 0.0, keep_alive: bool = False) -> None:
        # HTTP/1.1 keeps connections open between requests (as real hosts and nginx do); 1.0 closes them.
        handler = type("KeepAliveHandler", (_Handler,), {"protocol_version": "HTTP/1.1"}) if keep_alive else _Handler
        super().__init__((address, 0), handler)
        self.connections = 0  # TCP connections accepted
        self.slow = slow
        self.delay = delay  # added to every answer (to make kill -9 land mid-run)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.base = f"http://{address}:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ImageHost

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.hits[path] += 1
            hits = self.server.hits[path]
        if self.server.delay:
            time.sleep(self.server.delay)
        parts = path.strip("/").split("/")
        if parts[0] == "real":
            file = REALDATA.joinpath(*parts[1:])
            if not file.is_file():
                return self._send(404, b"missing", "text/plain")
            return self._send(200, file.read_bytes(), "image/jpeg")
        if parts[0] == "gen":
            width, height = map(int, parts[1].split("x"))
            seed, ext = parts[2].split(".")
            return self._send(200, picture(width, height, int(seed), "PNG" if ext == "png" else "JPEG"), f"image/{ext}")
        if parts[0] == "same":
            return self._send(200, picture(320, 240, int(parts[1].split(".")[0])), "image/jpeg")
        if parts[0] == "scaled":
            width, height = map(int, parts[1].split("x"))
            original = Image.open(io.BytesIO(picture(320, 240, int(parts[2].split(".")[0]))))
            buffer = io.BytesIO()
            original.resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=75)
            return self._send(200, buffer.getvalue(), "image/jpeg")
        fault = parts[1] if len(parts) > 1 else ""
        if fault == "404":
            return self._send(404, b"not found", "text/plain")
        if fault == "500":
            return self._send(500, b"oops", "text/plain")
        if fault == "429-once":
            if hits == 1:
                return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            return self._send(200, picture(200, 150, 429), "image/jpeg")
        if fault == "429-long":
            return self._send(429, b"come back tomorrow", "text/plain", {"Retry-After": "3600"})
        if fault == "slow":
            time.sleep(self.server.slow)
            return self._send(200, picture(200, 150, 1), "image/jpeg")
        if fault == "reset":
            self.close_connection = True
            self.connection.close()
            return None
        if fault == "truncated":
            body = picture(400, 300, 7)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body) * 2))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return None
        if fault == "lying-type":
            return self._send(200, picture(300, 200, 11), "text/html")
        if fault == "html":
            return self._send(200, b"<!DOCTYPE html><html><body>Not an image</body></html>", "image/jpeg")
        if fault == "huge":
            return self._send(200, b"\xff\xd8\xff" + b"\x00" * 3_000_000, "image/jpeg")
        if fault == "redirect-loop":
            return self._send(302, b"", "text/plain", {"Location": "/fault/redirect-loop"})
        if fault == "redirect-to":
            return self._send(302, b"", "text/plain", {"Location": f"http://{parts[2]}/gen/200x150/5.jpg"})
        if fault == "noai":
            return self._send(200, picture(200, 150, 3), "image/jpeg", {"X-Robots-Tag": "googlebot: noindex, noai"})
        return self._send(404, b"unknown route", "text/plain")

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

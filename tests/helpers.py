"""Helpers the tests import explicitly (``from helpers import ...``): skip-or-fail, the session's
shared demo run, a kill -9 at a chosen point, ``accelerate launch`` on CPU, free loopback ports, a
real oxigraph server and a SPARQL fault proxy. conftest.py holds only fixtures and imports from
here; nothing imports conftest.

Every server listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI (ENTITYNET_TEST_STRICT=1), where nothing may be missing."""
    if os.environ.get("ENTITYNET_TEST_STRICT") == "1":
        pytest.fail(f"{reason} (ENTITYNET_TEST_STRICT=1: CI must provide it)")
    pytest.skip(reason)


DEMO = [sys.executable, "-m", "entitynet", "demo", "--size", "small", "--out"]


def fingerprint(root: Path) -> dict[str, list[int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(path.relative_to(root)): [path.stat().st_size, path.stat().st_mtime_ns]
            for path in root.rglob("*") if path.is_file() and not path.is_symlink()}


def write_json_atomic(path: Path, value: object) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


class SharedDemo:
    """``entitynet demo --size small --out FOLDER/run`` made once for every pytest process of a
    session: pytest-xdist's workers share ``folder`` and take turns at a file lock, and the first
    to ask starts the command. It runs in the background (a fresh interpreter under this process's
    environment and umask, as a newcomer runs it) while the tests that do not need it run; its
    exit status, output and a fingerprint of what it made land in ``folder``, where every process
    reads them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.out = folder / "run"
        self.result = folder / "result.json"
        self.lock = FileLock(f"{folder}.lock")
        self.process: subprocess.Popen[str] | None = None
        self.recorder: threading.Thread | None = None

    def start(self) -> None:
        """Start the demo unless a process of this session already did."""
        with self.lock:
            if self.folder.exists():
                return
            self.folder.mkdir(parents=True)
            with open(self.folder / "stdout.txt", "w") as stdout, open(self.folder / "stderr.txt", "w") as stderr:
                # its own process group, so that a session cut short stops the demo and all it started
                self.process = subprocess.Popen([*DEMO, str(self.out)], stdout=stdout, stderr=stderr, text=True,
                                                start_new_session=True)
        self.recorder = threading.Thread(target=self._record, daemon=True)
        self.recorder.start()

    def _record(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        write_json_atomic(self.result, {"returncode": code, "fingerprint": fingerprint(self.out) if code == 0 else {}})

    def wait(self, seconds: float) -> tuple[subprocess.CompletedProcess[str], dict[str, list[int]]]:
        """The finished command (its exit status and what it printed) and the fingerprint of the run
        it made, once it ended; the test fails after ``seconds``."""
        self.start()
        deadline = time.monotonic() + seconds
        while not self.result.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"the session's demo ({self.out}) did not finish within {seconds:.0f}s")
            time.sleep(0.2)
        result = json.loads(self.result.read_text())
        done = subprocess.CompletedProcess([*DEMO, str(self.out)], result["returncode"],
                                           (self.folder / "stdout.txt").read_text(),
                                           (self.folder / "stderr.txt").read_text())
        return done, result["fingerprint"]

    def stop(self, abandon: bool) -> None:
        """In the process that started it, at the end of its session: wait for the demo to end (a
        process of this session may still need it), or stop it when the session was cut short."""
        if self.process is None:
            return
        if abandon and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=3600)
        assert self.recorder is not None
        self.recorder.join(timeout=600)


def kill_when(command: list[str], appears: Path, seconds: float) -> None:
    """Start ``command`` and SIGKILL it the moment ``appears`` exists (or after ``seconds``): kill -9
    at a chosen point of a real run."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    while not appears.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def accelerate_launch(arguments: list[str], seconds: float, environment: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:
    """`accelerate launch --multi_gpu --num_processes 2` on CPU processes: its output, or the
    test fails after ``seconds`` with every process it started stopped (a rank left waiting at a
    barrier would otherwise outlive the test)."""
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        skip_or_fail("accelerate is not installed (pip install 'entitynet[train]')")
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *arguments]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(environment or {})}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"accelerate launch did not finish in {seconds:.0f}s:\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {seconds}s")


def oxigraph_binary() -> str:
    found = shutil.which("oxigraph") or str(Path(sys.executable).parent / "oxigraph")
    if not Path(found).exists():
        raise RuntimeError("the oxigraph server binary is missing: pip install 'entitynet[test]'")
    return found


class OxigraphServer:
    """``oxigraph serve-read-only`` on a free loopback port, loaded with one file."""

    def __init__(self, data: Path, folder: Path) -> None:
        binary = oxigraph_binary()
        subprocess.run([binary, "load", "--location", str(folder), "--file", str(data)], check=True, capture_output=True, timeout=120)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/query"
        self.process = subprocess.Popen(
            [binary, "serve-read-only", "--location", str(folder), "--bind", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_ready(f"{self.url}?query=ASK%7B%7D")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class FaultProxy(ThreadingHTTPServer):
    """Forwards SPARQL requests to a real endpoint, injecting scripted faults.

    ``script`` is consumed one fault per request ("ok" forwards untouched); ``then`` is the
    behaviour once the script is exhausted ("ok", or a fault that never stops).
    """

    daemon_threads = True
    FAULTS = ("ok", "429", "503", "500", "hang", "truncated", "html", "reset", "429-long")

    def __init__(self, upstream: str, script: list[str] | None = None, then: str = "ok", hang: float = 2.0) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.script = list(script or [])
        self.then = then
        self.hang = hang
        self.lock = threading.Lock()
        self.requests: list[dict[str, str]] = []  # headers of every request received
        self.forwarded_rows: list[int] = []  # binding counts of the answers passed through
        assert all(f in self.FAULTS for f in self.script + [then])
        self.url = f"http://127.0.0.1:{self.server_address[1]}/query"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def next_fault(self, headers: dict[str, str]) -> str:
        with self.lock:
            self.requests.append(headers)
            return self.script.pop(0) if self.script else self.then

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: FaultProxy

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fault = self.server.next_fault(dict(self.headers))
        if fault == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "hang":
            time.sleep(self.server.hang)
            return
        if fault in ("429", "503", "500", "429-long"):
            self.send_response(int(fault[:3]))
            if fault == "429":
                self.send_header("Retry-After", "1")
            if fault == "429-long":
                self.send_header("Retry-After", "3600")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"slow down")
            return
        if fault == "html":
            page = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
            self._send(200, "text/html", page)
            return
        request = urllib.request.Request(
            self.server.upstream,
            data=body,
            headers={k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, kind, payload = answer.status, answer.headers.get("Content-Type", ""), answer.read()
        if fault == "truncated":
            payload = payload[: len(payload) // 2]
        else:
            self.server.forwarded_rows.append(len(json.loads(payload)["results"]["bindings"]))
        self._send(status, kind, payload)

    def _send(self, status: int, kind: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

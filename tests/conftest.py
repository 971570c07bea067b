"""Shared fixtures: isolated caches, the sample graph, a real oxigraph server, a fault proxy.

Every server listens on 127.0.0.1 and is stopped by its fixture; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Set before any test module imports datasets, transformers or huggingface_hub, which read these
# once at import: no Hub lookups, and a datasets cache of this session's own (datasets keys a local
# folder's cache by its card and folder name, so a cache shared with earlier sessions could hand a
# test another build's rows).
_SESSION_CACHE = tempfile.mkdtemp(prefix="entitynet-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_CACHE, "datasets")

from entitynet.config import preset_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
SAMPLE = Path(str(preset_path("demo"))).parent / "samples" / "kg-sample.ttl"


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No Hub lookups, and EntityNet's own cache (the WordNet copy) in a temporary folder."""
    saved = {key: os.environ.get(key) for key in ("ENTITYNET_CACHE",)}
    os.environ["ENTITYNET_CACHE"] = str(tmp_path_factory.mktemp("entitynet-cache"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI (ENTITYNET_TEST_STRICT=1), where nothing may be missing."""
    if os.environ.get("ENTITYNET_TEST_STRICT") == "1":
        pytest.fail(f"{reason} (ENTITYNET_TEST_STRICT=1: CI must provide it)")
    pytest.skip(reason)


def kill_when(command: list[str], appears: Path, seconds: float) -> None:
    """Start ``command`` and SIGKILL it the moment ``appears`` exists (or after ``seconds``): kill -9
    at a chosen point of a real run."""
    import signal

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
    import signal

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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run made by ``entitynet demo --size small`` (README's main job, smaller): its dataset
    feeds the demo's and the trainer's tests."""
    from entitynet.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), "--size", "small", "-q"]) == 0
    return out


@pytest.fixture(scope="session")
def queried_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the demo config (Wikidata sample only) up to the queries stage; tests that change
    it work on a copy."""
    from entitynet.cli import main

    run = tmp_path_factory.mktemp("queried") / "run"
    for stage in (["kg", "--sources", "wikidata"], ["enrich"], ["queries"]):
        assert main(["-q", stage[0], "--run", str(run), "--config", "demo", *stage[1:]]) == 0
    return run


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        skip_or_fail(f"shared real data not found at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def wordnet_reader():
    from entitynet.kg import wordnet

    try:
        return wordnet.load_wordnet()
    except wordnet.WordNetMissing as missing:
        skip_or_fail(str(missing))


@pytest.fixture(scope="session")
def sample_ttl() -> Path:
    assert SAMPLE.is_file(), f"the packaged sample graph is missing: {SAMPLE}"
    return SAMPLE


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


@pytest.fixture(scope="session")
def oxigraph(sample_ttl: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OxigraphServer]:
    server = OxigraphServer(sample_ttl, tmp_path_factory.mktemp("oxigraph"))
    yield server
    server.stop()


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


@pytest.fixture
def fault_proxy(oxigraph: OxigraphServer) -> Iterator[type]:
    """A factory: ``fault_proxy(script=[...], then="ok")`` -> a running FaultProxy."""
    started: list[FaultProxy] = []

    def start(script: list[str] | None = None, then: str = "ok", hang: float = 2.0) -> FaultProxy:
        proxy = FaultProxy(oxigraph.url, script, then, hang)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()

"""Shared fixtures: isolated caches, one finished demo run per session (made in the background while
the tests that do not need it run, and under pytest-xdist once for all workers), a run up to its queries, the
sample graph, a real oxigraph server, a fault proxy. Helpers live in helpers.py, imported from there
(``from helpers import ...``); no test imports this file.

Every server listens on 127.0.0.1 and is stopped by its fixture; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before any test module imports datasets, transformers, huggingface_hub or torch, which read
# these once at import: no Hub lookups, and a datasets cache of this session's own (datasets keys a local
# folder's cache by its card and folder name, so a cache shared with earlier sessions could hand a
# test another build's rows).
_SESSION_CACHE = tempfile.mkdtemp(prefix="entitynet-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_CACHE, "datasets")
# One torch (OpenMP) thread per process, unless the caller chose: the tests' models are tiny, so a
# second thread gains nothing, and under `pytest -n 2` two workers of two threads each (and the
# processes they start, which inherit this) would oversubscribe two cores, where spinning threads
# wait for each other: a 6-step tiny training took 8.7 s with two threads, 1.1 s with one, on a
# busy 2-core machine. Processes the tests compare bit for bit all start with the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from helpers import REALDATA, FaultProxy, OxigraphServer, SharedDemo, fingerprint, skip_or_fail  # noqa: E402

from entitynet.config import preset_path  # noqa: E402

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


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every process of this pytest session sees: its base temporary folder, or under
    pytest-xdist, the one that holds every worker's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def session_demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 isolated_environment: None) -> Iterator[SharedDemo]:
    """The session's one demo run (see ``demo_made``), shared by the processes of the session."""
    demo = SharedDemo(session_folder(tmp_path_factory) / "demo")
    yield demo
    demo.stop(abandon=bool(request.session.shouldfail or request.session.shouldstop))


@pytest.fixture(scope="session", autouse=True)
def demo_in_background(request: pytest.FixtureRequest, session_demo: SharedDemo) -> None:
    """Start the session's demo at once when a selected test needs it: the tests run before
    those that need it (``pytest_collection_modifyitems``) run while it is made."""
    if any("demo_made" in item.fixturenames for item in request.session.items):
        session_demo.start()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that need the session's demo run last, each in its own order, so that the demo
    (started in the background) is made while the others run."""
    waiting = {item.path for item in items if "demo_made" in item.fixturenames}
    items.sort(key=lambda item: item.path in waiting)


@pytest.fixture(scope="session")
def demo_made(session_demo: SharedDemo) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """``entitynet demo --size small`` (README's main job, smaller), run once per session as a
    newcomer runs it, in a fresh interpreter under this process's environment and umask: the finished
    run and what the command printed. The session's one demo made from scratch and left to finish
    (under pytest-xdist, one for all the workers): the other demo commands of the tests rerun copies
    of it, or start runs only to kill them (slow).

    Shared by every test that needs a finished run, so none may change it: a test that reruns or
    retrains works on a copy (``shutil.copytree``; a run's recorded paths are relative, so a copy
    is complete). Each process checks at the end of its session that no file of it changed."""
    done, before = session_demo.wait(seconds=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    yield session_demo.out, done
    changed = sorted({(name, tuple(seen)) for name, seen in before.items()}
                     ^ {(name, tuple(seen)) for name, seen in fingerprint(session_demo.out).items()})
    assert not changed, f"a test changed the session's demo run instead of a copy of it: {changed[:8]}"


@pytest.fixture(scope="session")
def demo_run(demo_made: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    """The session's finished demo run (see ``demo_made``): read it, or copy it to change it."""
    return demo_made[0]


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


@pytest.fixture(scope="session")
def oxigraph(sample_ttl: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OxigraphServer]:
    server = OxigraphServer(sample_ttl, tmp_path_factory.mktemp("oxigraph"))
    yield server
    server.stop()


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

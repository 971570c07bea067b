"""The run directory: where every stage reads its inputs and writes its one artifact.

Its file names are in ``layout.py``; beside the artifacts a run holds

- ``RUN/config/<stage>.yaml``   the resolved configuration the stage ran with (no secrets: configs
  only ever name environment variables),
- ``RUN/stages/<stage>.json``   written last, when the stage finished: fingerprint of its config,
  timing, package versions and the stage's statistics,
- ``RUN/cache/<stage>/``        what lets an interrupted stage resume (fetched pages, stores).

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a
crash leaves either the old file or the new one, never half of one. Temporary files and folders
are made by ``tempfile``, which creates them 0600 and 0700 whatever the umask; ``atomic_path`` and
``temporary_folder`` give them the modes any new file and folder gets (0644 and 0755 under the
usual umask 022), so colleagues on a shared machine can read a dataset, a model or results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from entitynet import layout

logger = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as ``accelerate launch`` and torchrun set
    them (0 and 1 in a plain process)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class StageError(RuntimeError):
    """A stage cannot go on; its message says why in one line (the CLI prints it and exits 1)."""


class StageConfigChanged(StageError):
    """A finished stage would be re-run with a different configuration or different inputs."""


class MissingInput(StageError):
    """A stage was started before the stages it reads from finished."""


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``os.umask`` can only
    read it by setting it, and a thread creating a file meanwhile would get the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        current = os.umask(0o022)
        os.umask(current)
    return current


_UMASK_LOCK = threading.Lock()


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~umask()


def new_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0777 less the umask."""
    return 0o777 & ~umask()


def temporary_folder(parent: Path, prefix: str) -> Path:
    """A new folder in ``parent`` (made if missing) to assemble something that is then renamed into
    place; it has the mode of any new folder, not ``mkdtemp``'s 0700."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, new_folder_mode())
    return folder


def shown(recorded: str) -> str:
    """A path a stage recorded in its statistics, for a summary line: a relative one is inside the
    run directory (which may have moved since it was recorded); an absolute one comes from an older marker."""
    return recorded if Path(recorded).is_absolute() else f"RUN/{recorded}"


def swap_in(staging: Path, final: Path) -> None:
    """``staging`` (a folder assembled beside ``final``) becomes ``final``; what was at ``final`` is
    renamed aside first and then removed whole, so a reader sees the old folder, none, or the new one."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes new files and folders get under the umask.
    For what libraries write through temporary files of their own (safetensors' ``save_file``
    makes its file 0600), called on a folder this process has just written, before it is renamed
    into place. Execute bits a file has are kept where the umask allows them."""
    file_mode, folder_mode = new_file_mode(), new_folder_mode()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, folder_mode)
        else:
            os.chmod(path, file_mode | (path.stat().st_mode & 0o111 & folder_mode))


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.
    The file has the mode of any new file (``mkstemp`` makes it 0600), whatever writes it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, new_file_mode())
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def fingerprint(settings: Any) -> str:
    """A stable hash of JSON-able settings: equal settings, equal fingerprint."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    stage: str
    skipped: bool
    seconds: float
    stats: dict[str, Any]


@dataclass(frozen=True)
class Context:
    """What a stage's ``make(config, context)`` gets from the runner (``pipeline``) besides the
    configuration. The runner keeps the books (fingerprints, skip or redo, markers); a stage only
    makes its artifacts, and knows nothing of completion."""

    name: str  # the stage: RUN/cache/<name>/, the prefix of its messages
    run_dir: RunDir
    force: bool = False  # --force: make it from nothing (the runner already forgot the stage)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the command's own options (download --retry-failures)
    fingerprint: str = ""  # what the marker will hold: stamps a folder made piece by piece
    prepared: Any = None  # what the stage's setup() found (an import's resolved source)
    earlier: tuple[str, ...] = ()  # the flow's stages before this one, in order
    replaces: tuple[str, ...] = ()  # a door only: the stages it stands in for

    def path(self, name: str) -> Path:
        return self.run_dir.path(name)

    @property
    def cache(self) -> Path:
        """RUN/cache/<name>/, made on first use."""
        return self.run_dir.cache_dir(self.name)


class StatsRecord:
    """Mixin for the counters a client keeps (a dataclass): ``as_dict()`` is what the stage records,
    field by field, counters sorted by key, seconds rounded to milliseconds."""

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, StatsRecord):
                return value.as_dict()
            if isinstance(value, Counter):
                return dict(sorted(value.items()))
            return round(value, 3) if isinstance(value, float) else value

        return {item.name: plain(getattr(self, item.name)) for item in dataclasses.fields(self)}  # type: ignore[arg-type]


class RunDir:
    """One run's folder, made on first use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def check_version(self) -> None:
        """Refuse a run directory made by another version of the layout (this one reads its own
        only: the project is 0.1, formats change by a bump, not by upgrade code); stamp a new one."""
        from entitynet import __version__, layout

        stamp = self.root / layout.RUN_MARKER
        if stamp.exists():
            try:
                made = json.loads(stamp.read_text(encoding="utf-8"))
                version = int(made["layout"])
            except (OSError, ValueError, KeyError, TypeError):
                raise StageError(f"{stamp}: unreadable; is {self.root} a run directory?") from None
            if version != layout.LAYOUT_VERSION:
                raise StageError(
                    f"{self.root} was made by entitynet {made.get('entitynet', '?')} (run-directory layout {version}); "
                    f"this is entitynet {__version__} (layout {layout.LAYOUT_VERSION}), which reads its own layout only: "
                    f"use another --run and run the stages again there (or the entitynet version that made it)")
        elif any((self.root / name).exists() for name in (layout.STAGES, layout.CONFIG, layout.CACHE)):
            # stages ran here before any layout was stamped: layout 1, whose shapes this version no longer reads
            raise StageError(
                f"{self.root} holds stages of a run made before run directories recorded their layout (layout 1); "
                f"this is entitynet {__version__} (layout {layout.LAYOUT_VERSION}), which reads its own layout only: "
                f"use another --run and run the stages again there")
        else:
            self.stamp()

    def stamp(self) -> None:
        """RUN/run.json: the layout this run directory is written in (once, by what writes it first)."""
        from entitynet import __version__, layout

        stamp = self.root / layout.RUN_MARKER
        if not stamp.exists():
            write_text_atomic(stamp, json.dumps({"layout": layout.LAYOUT_VERSION, "entitynet": __version__}) + "\n")

    def path(self, name: str) -> Path:
        return self.root / name

    def cache_dir(self, stage: str) -> Path:
        folder = self.root / layout.CACHE / stage
        folder.mkdir(parents=True, exist_ok=True)
        self.stamp()
        return folder

    def marker(self, stage: str) -> Path:
        return self.root / layout.STAGES / f"{stage}.json"

    def config_file(self, stage: str) -> Path:
        return self.root / layout.CONFIG / f"{stage}.yaml"

    def recorded_config(self, stage: str) -> dict[str, Any]:
        """The settings a stage last ran with (RUN/config/<stage>.yaml), or {} if it never ran."""
        path = self.config_file(stage)
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}

    def state(self, stage: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.marker(stage).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def reset(self, stage: str, keep_cache: bool = False) -> None:
        """Forget a stage (``--force``): its marker, and its cache unless ``keep_cache``.

        Its artifacts are replaced when the rerun succeeds.
        """
        self.marker(stage).unlink(missing_ok=True)
        if not keep_cache:
            shutil.rmtree(self.root / layout.CACHE / stage, ignore_errors=True)

    def run_stage(
        self,
        stage: str,
        settings: dict[str, Any],
        outputs: list[Path],
        work: Callable[[], dict[str, Any]],
        force: bool = False,
        requires: tuple[str, ...] = (),
        cache_survives_force: bool = False,
        identity: dict[str, Any] | None = None,
    ) -> StageResult:
        """Run ``work`` unless the stage already finished with these settings and inputs, and keep
        the books of it: ``decide``, then ``begin``, ``work`` and ``finish``. The runner
        (``pipeline``) composes these steps itself, on every process of a launch; this is the
        one-process composition, for stages made by hand (tests fake finished upstream stages).
        ``force`` forgets the stage first, keeping its cache when ``cache_survives_force``."""
        identity = settings if identity is None else identity
        inputs = self.inputs(stage, requires)
        if force:
            self.reset(stage, keep_cache=cache_survives_force)
        else:
            done = self.decide(stage, settings, identity, inputs, outputs)
            if done is not None:
                return StageResult(stage, True, 0.0, done.get("stats", {}))
        self.begin(stage, settings, outputs)
        started = time.monotonic()
        stats = work()
        seconds = time.monotonic() - started
        self.finish(stage, identity, inputs, seconds, stats)
        return StageResult(stage, False, seconds, stats)

    def decide(
        self, stage: str, settings: dict[str, Any], identity: dict[str, Any], inputs: dict[str, str], outputs: list[Path]
    ) -> dict[str, Any] | None:
        """The one rule of skip or redo, taken alike on every process: the stage's marker when it
        finished with these settings and inputs and its ``outputs`` exist (skip it), None when it
        has to be made. A finished stage whose settings or inputs differ is refused
        (``StageConfigChanged``) rather than silently overwritten.

        ``settings`` (as recorded in RUN/config/<stage>.yaml) and ``identity`` (what the
        fingerprint hashes: the settings without those of how it runs, ``typed_config.identity``)
        are as spelled; ``inputs`` are the fingerprints of the stages it reads (``inputs()``).
        A marker matches when its fingerprint is that of these settings with the run's own paths
        relative to it."""
        settings, identity = self.within(settings), self.within(identity)
        state = self.state(stage)
        if state is None or not all(path.exists() for path in outputs):
            return None
        if state.get("fingerprint") == _key(identity, inputs):
            if rank_and_world()[0] == 0:
                logger.info("%s: already complete in %s, skipping (use --force to redo it)", stage, self.root)
            return state
        raise StageConfigChanged(
            f"{stage}: {self.root} holds a finished {stage} stage made with a different configuration or inputs "
            f"({self._changes(stage, state, settings, identity, inputs)}; see {self.config_file(stage)}); "
            "pass --force to redo it, or use another --run"
        )

    def begin(self, stage: str, settings: dict[str, Any], outputs: list[Path]) -> None:
        """Before the main process makes a stage: the settings it makes it with are recorded, and
        the temporary files of a run killed mid-write (kill -9 skips cleanup) go."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.stamp()  # before anything of the stage's: a kill from here on leaves a stamped folder
        for output in outputs:
            for stale in output.parent.glob(f".{output.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        write_text_atomic(self.config_file(stage), yaml.safe_dump(self.within(settings), sort_keys=False))

    def finish(self, stage: str, identity: dict[str, Any], inputs: dict[str, str], seconds: float,
               stats: dict[str, Any]) -> None:
        """The stage's marker, written last: from now on it is complete with these settings and inputs."""
        record = {
            "stage": stage,
            "fingerprint": _key(self.within(identity), inputs),
            "inputs": inputs,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "versions": package_versions(),
            "stats": stats,
        }
        self.stamp()  # a marker is never written into an unstamped folder: that is what layout 1 looked like
        write_text_atomic(self.marker(stage), json.dumps(record, indent=2, sort_keys=False) + "\n")

    def inputs(self, stage: str, requires: tuple[str, ...]) -> dict[str, str]:
        """The fingerprints of the finished stages ``stage`` reads from."""
        inputs = {}
        for upstream in requires:
            upstream_state = self.state(upstream)
            if upstream_state is None:
                raise MissingInput(
                    f"{stage}: {self.root} has no finished {upstream} stage; run 'entitynet {upstream} --run {self.root}' first"
                )
            inputs[upstream] = upstream_state["fingerprint"]
        return inputs

    def fingerprint(self, identity: dict[str, Any], inputs: dict[str, str]) -> str:
        """What the stage's marker will hold for these settings and inputs. A stage that makes its
        artifact piece by piece stamps the folder with it, so pieces of two configurations never mix."""
        return _key(self.within(identity), inputs)

    def within(self, settings: Any, base: Path | None = None) -> Any:
        """``settings`` with every absolute path inside the run written relative to ``base``
        (default: the run itself), so a run moved, copied or named another way (a relative or an
        absolute --run, another working directory) records, and fingerprints, the same settings."""
        root = os.path.realpath(self.root)
        start = os.path.realpath(base if base is not None else self.root)

        def rewrite(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: rewrite(item) for key, item in value.items()}
            if isinstance(value, list):
                return [rewrite(item) for item in value]
            if isinstance(value, str) and os.path.isabs(value):
                real = os.path.realpath(value)
                if real == root or real.startswith(root + os.sep):
                    return os.path.relpath(real, start)
            return value

        return rewrite(settings)

    def _changes(self, stage: str, state: dict[str, Any], settings: dict[str, Any], identity: dict[str, Any],
                 inputs: dict[str, str]) -> str:
        """What differs from the finished stage: the dotted keys of its settings, the stages it read."""
        recorded = _dotted(_less_runtime(self.recorded_config(stage), settings, identity))
        current = _dotted(identity)
        keys = sorted(key for key in set(recorded) | set(current) if recorded.get(key) != current.get(key))
        redone = sorted(name for name in set(inputs) | set(state.get("inputs", {}))
                        if inputs.get(name) != state.get("inputs", {}).get(name))
        parts = [f"{', '.join(keys)} differ{'s' if len(keys) == 1 else ''}"] if keys else []
        parts += [f"its input{'s' if len(redone) > 1 else ''} {', '.join(redone)} changed"] if redone else []
        return "; ".join(parts) or "its fingerprint differs"


def _key(identity: dict[str, Any], inputs: dict[str, str]) -> str:
    return fingerprint({"settings": identity, "inputs": inputs}) if inputs else fingerprint(identity)


def _dotted(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict) or not values:
        return {prefix.rstrip("."): values} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_dotted(value, f"{prefix}{key}."))
    return flat


def _less_runtime(recorded: Any, settings: Any, identity: Any) -> Any:
    """``recorded`` without the keys that ``identity`` leaves out of ``settings``."""
    if not (isinstance(recorded, dict) and isinstance(settings, dict) and isinstance(identity, dict)):
        return recorded
    return {
        key: _less_runtime(value, settings.get(key), identity.get(key))
        for key, value in recorded.items()
        if not (key in settings and key not in identity)
    }


PACKAGES = ("entitynet", "datasets", "huggingface_hub", "pyarrow", "Pillow", "requests", "urllib3", "pyoxigraph", "nltk")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's version and those of the installed ``names`` (missing ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions

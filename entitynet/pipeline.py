"""The flow in one table, and the runner that keeps its books.

The CLI, ``entitynet run`` and ``entitynet demo`` compose stages from ``STAGES``; nothing else
lists them. An entry names its module as a string, imported only when the stage runs or reports,
so reading the table costs nothing and a stage may live in an optional extra (a stage in
``entitynet.training`` needs torch; the library must not import it otherwise).

A stage's module says what it makes and how, and knows nothing of completion (datatrove's
``PipelineExecutor`` is the model: the steps make, the executor keeps the books)::

    settings(config, context) -> dict     # named config sections (dataclasses) or plain values: all
                                          # are recorded in RUN/config/<name>.yaml, and what the schema
                                          # does not mark ``runtime`` enters the fingerprint
    make(config, context) -> dict         # makes the artifacts; returns the stage's statistics
    summary(stats) -> str                 # what the CLI prints after the stage
    check(config, run_dir) -> None        # optional: what can be known to fail, before any stage runs
    discard(config, run_dir) -> None      # optional: what --force removes besides the marker and cache
                                          # (called on the main process; every process then waits)
    setup(config, context) -> Any         # optional: what settings() and make() both need, found once
                                          # (an import's resolved source): context.prepared
    again(context) -> bool                # optional: make it again though it finished, its cache kept
                                          # (download --retry-failures)

``context`` is a ``rundir.Context``: the run directory, --force, the command's options, the
fingerprint the marker will hold. No stage imports this module: the runner (``Stage.run``,
``run_stages``) computes fingerprints, skips or redoes with one rule on every process
(``RunDir.decide``), and writes the settings, markers and statistics on the main one.

Adding a stage: write that module, add its file names to ``layout.py``, and append an entry
here; ``entitynet run`` and ``--until`` pick it up. A stage of an extra sets ``extra`` so a
missing install is reported as ``pip install 'entitynet[<extra>]'`` instead of a traceback.

A door (``DOORS``: ``entitynet import``) writes from outside what some stages would have made.
It is not a step of the flow, so ``entitynet run`` never runs it. Once it started in a run
directory, it stands in for the stages it ``replaces``: their dependents read from it (their
requirement on ``search`` becomes one on ``import``), ``entitynet run`` passes them by, and they
refuse to run there (``Replaced``), so nothing overwrites what the door brought in.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, is_dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from entitynet import layout
from entitynet.rundir import Context, RunDir, StageError, StageResult, rank_and_world
from entitynet.typed_config import identity as typed_identity
from entitynet.typed_config import to_dict

if TYPE_CHECKING:
    from entitynet.config import Config


logger = logging.getLogger(__name__)


class ExtraMissing(StageError):
    """A stage's module needs an optional extra that is not installed."""


class Replaced(StageError):
    """A stage was asked to run in a run directory where a door (an import) stands in for it."""


@dataclass(frozen=True)
class Stage:
    name: str  # the subcommand, RUN/stages/<name>.json, RUN/config/<name>.yaml, RUN/cache/<name>/
    module: str  # imported when the stage runs: provides settings(), make() and summary()
    artifacts: tuple[str, ...]  # what it writes, relative to RUN (names from layout.py)
    requires: tuple[str, ...] = ()  # stages whose artifacts it reads: finished first, fingerprints chained
    keep_cache_on_force: bool = False  # --force keeps RUN/cache/<name>/ (caches keyed by exactly what they hold)
    extra: str | None = None  # the pip extra its module needs, if any
    replaces: tuple[str, ...] = ()  # a door only: the stages whose artifacts it writes instead
    wanted: Callable[[Config], bool] | None = None  # `entitynet run` leaves the stage out when this says no
    everywhere: bool = False  # under a multi-process launch every process runs it (it splits its own work)
    command: str | None = None  # `entitynet <name>`'s one-line help (the CLI makes the command); None: no command of its own

    def enabled(self, config: Config) -> bool:
        return self.wanted is None or self.wanted(config)

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ImportError as missing:
            if self.extra is None:
                raise
            raise ExtraMissing(
                f"{self.name}: {missing.name} is not installed; pip install 'entitynet[{self.extra}]'"
            ) from None

    def outputs(self, run_dir: RunDir) -> list[Path]:
        return [run_dir.path(name) for name in self.artifacts]

    def run(self, config: Config | None, run_dir: RunDir, force: bool = False, **options: Any) -> StageResult:
        """This stage alone (a subcommand): ``--force`` forgets it first (``forget``), then ``make``.
        The layout of an existing run directory is checked first, as ``entitynet run``'s preflight
        does (a mistyped --run is not made a folder by it)."""
        if run_dir.root.is_dir():
            run_dir.check_version()
        if force:
            rank, world = rank_and_world()
            if rank == 0:
                run_dir.reset(self.name, keep_cache=self.keep_cache_on_force)
            discard = getattr(self.load(), "discard", None)
            if discard is not None:
                if rank == 0:
                    discard(config, run_dir)
                if world > 1:
                    barrier(config, run_dir)()
        return make(self, config, run_dir, force, options)

    def summary(self, stats: dict[str, Any]) -> str:
        return self.load().summary(stats)

    def upstream(self, run_dir: RunDir) -> tuple[str, ...]:
        """The stages this one reads from in ``run_dir``: ``requires``, with the stages a door
        replaced there read from the door. A stage the door replaced refuses to run."""
        door = door_of(run_dir)
        if door is None:
            return self.requires
        if self.name in door.replaces:
            raise Replaced(
                f"{self.name}: {run_dir.root} was made by 'entitynet {door.name}' ({run_dir.config_file(door.name)}), "
                f"which stands in for {', '.join(door.replaces)}; continue with 'entitynet download --run {run_dir.root}' "
                "and 'entitynet build', or use another --run"
            )
        return tuple(dict.fromkeys(door.name if name in door.replaces else name for name in self.requires))


# In flow order. Adding one: see the module docstring.
STAGES: tuple[Stage, ...] = (
    Stage("kg", "entitynet.kg.stage", (layout.ENTITIES,),
          command="Harvest entities from Wikidata (SPARQL) and WordNet into RUN/entities.parquet."),
    Stage("enrich", "entitynet.enrich.stage", (layout.NATURAL_TYPES, layout.ATTRIBUTES), ("kg",),
          keep_cache_on_force=True,  # LLM answers are keyed by model, prompt and parameters
          command="Choose natural types and make visual attributes: RUN/natural_types.parquet, RUN/attributes.parquet."),
    Stage("queries", "entitynet.queries", (layout.QUERIES,), ("kg", "enrich"),
          command="Make the search queries (noun, attr, attrnoun, wordnet-noun): RUN/queries.parquet."),
    Stage("search", "entitynet.search.stage", (layout.CANDIDATES,), ("queries",),
          keep_cache_on_force=True,  # engine answers are keyed by exactly what was asked
          command="Ask an image search engine (or a local pool) for candidates: RUN/candidates/part-NNNNN.parquet."),
    Stage("download", "entitynet.download.stage", (layout.IMAGES,), ("search",), everywhere=True,
          command="Fetch, validate, resize and deduplicate the candidates: RUN/images/shard-NNNNN.parquet, failures, "
                  "duplicates."),
    Stage("build", "entitynet.build.stage", (layout.DATASET,), ("download",),
          command="Build the Hugging Face dataset (configs entitynet and livingthings) and its card: RUN/dataset/."),
    Stage("train", "entitynet.training.stage", (layout.MODEL,), ("build",), extra="train",
          wanted=lambda config: config.train.enabled, everywhere=True),
    Stage("eval", "entitynet.training.evaluation.stage", (layout.EVAL,), ("train",), extra="train",
          wanted=lambda config: config.train.enabled and config.eval.enabled, everywhere=True),
    Stage("push", "entitynet.push", (), ("build",),
          wanted=lambda config: bool(config.push.dataset_repo or config.push.model_repo)),
)


# Doors in from outside (DESIGN.md); `entitynet convert` is the other one, but it makes no run directory.
DOORS: tuple[Stage, ...] = (
    Stage("import", "entitynet.imports.stage", (layout.ENTITIES, layout.NATURAL_TYPES, layout.QUERIES, layout.CANDIDATES),
          replaces=("kg", "enrich", "queries", "search")),
)


def door_of(run_dir: RunDir) -> Stage | None:
    """The door that was used in ``run_dir`` (from the moment it started: its recorded settings)."""
    return next((door for door in DOORS if run_dir.config_file(door.name).exists()), None)


def _plain(settings: dict[str, Any], convert: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    return {name: convert(value) if is_dataclass(value) else value for name, value in settings.items()}


def make(entry: Stage, config: Config | None, run_dir: RunDir, force: bool = False,
         options: dict[str, Any] | None = None) -> StageResult:
    """``entry``'s module makes its artifacts unless the stage finished with these settings and
    inputs; the books are kept here. Every process of a launch takes the same decision
    (``RunDir.decide``) and, if it makes the stage, does its share; the main one records the
    settings first and the marker last. ``force`` makes it whatever its marker says (the caller
    forgot the stage already)."""
    module = entry.load()
    rank, _ = rank_and_world()
    flow = names()
    earlier = tuple(flow[:flow.index(entry.name)]) if entry.name in flow else ()
    context = Context(entry.name, run_dir, force, dict(options or {}), earlier=earlier, replaces=entry.replaces)
    setup = getattr(module, "setup", None)
    if setup is not None:
        context = replace(context, prepared=setup(config, context))
    sections = module.settings(config, context)
    settings, identity = _plain(sections, to_dict), _plain(sections, typed_identity)
    inputs = run_dir.inputs(entry.name, entry.upstream(run_dir))
    outputs = entry.outputs(run_dir)
    again = getattr(module, "again", None)
    redo = again is not None and again(context)
    if redo and rank == 0 and run_dir.state(entry.name) is not None:
        run_dir.reset(entry.name, keep_cache=True)
    if not (force or redo):
        done = run_dir.decide(entry.name, settings, identity, inputs, outputs)
        if done is not None:
            return StageResult(entry.name, True, 0.0, done.get("stats", {}))
    context = replace(context, fingerprint=run_dir.fingerprint(identity, inputs))
    if rank == 0:
        run_dir.begin(entry.name, settings, outputs)
    started = time.monotonic()
    stats = module.make(config, context)
    seconds = time.monotonic() - started
    if rank == 0:
        run_dir.finish(entry.name, identity, inputs, seconds, stats)
    return StageResult(entry.name, False, seconds, stats)


def names() -> list[str]:
    return [entry.name for entry in STAGES]


def stage(name: str) -> Stage:
    for entry in STAGES + DOORS:
        if entry.name == name:
            return entry
    raise KeyError(f"no stage {name!r}; the stages are {', '.join(names())}")


def stages(first: str | None = None, last: str | None = None) -> tuple[Stage, ...]:
    """The stages from ``first`` to ``last``, both included (None: from the start / to the end)."""
    all_names = names()
    start = all_names.index(stage(first).name) if first else 0
    end = all_names.index(stage(last).name) + 1 if last else len(STAGES)
    return STAGES[start:end]


def run_stages(
    config: Config,
    run_dir: RunDir,
    chosen: Iterable[Stage],
    force: bool = False,
    report: Callable[[Stage, StageResult], None] | None = None,
) -> list[StageResult]:
    """Run ``chosen`` in order (each skipped if finished, left out if its config does not want it);
    ``report`` hears of every result on the main process. Stages a door replaced in ``run_dir``
    are passed by.

    Under ``accelerate launch`` (WORLD_SIZE > 1) every process calls this: the main process runs
    the stages that do not split their work while the others wait at a barrier; download, train
    and eval run everywhere. A failure on one process ends the launch (the launcher stops the rest).
    """
    chosen, door = list(chosen), door_of(run_dir)
    replaced = [entry.name for entry in chosen if door is not None and entry.name in door.replaces]
    if replaced:
        logger.info("%s: made by 'entitynet %s' in %s", ", ".join(replaced), door.name, run_dir.root)  # type: ignore[union-attr]
    chosen = [entry for entry in chosen if entry.enabled(config) and entry.name not in replaced]
    preflight(config, run_dir, chosen)
    if force:
        forget(config, run_dir, chosen)
    rank, world = rank_and_world()
    wait = barrier(config, run_dir) if world > 1 else None
    results = []
    for entry in chosen:
        if wait is not None and rank != 0 and not entry.everywhere:
            wait()
            continue
        result = make(entry, config, run_dir, force)
        if wait is not None:
            wait()
        if report is not None and rank == 0:
            report(entry, result)
        results.append(result)
    return results


def preflight(config: Config, run_dir: RunDir, chosen: Iterable[Stage]) -> None:
    """What can be known to fail is found before any stage runs: a run directory made by an
    incompatible version, a missing extra, and each stage's own ``check(config, run_dir)`` (keys
    missing from the environment, a pool or dump that does not exist, a trainer configuration
    that does not load)."""
    run_dir.check_version()
    for entry in chosen:
        check = getattr(entry.load(), "check", None)
        if check is not None:
            check(config, run_dir)


def forget(config: Config, run_dir: RunDir, chosen: Iterable[Stage]) -> None:
    """``--force`` forgets every chosen stage before the first one runs (its marker, its cache
    unless kept, and what its module's ``discard(config, run_dir)`` names, such as the trainer's
    checkpoints), so that after an interrupt the same command without --force finishes the redo:
    no stage after the interrupted one is taken as complete from before it."""
    rank, world = rank_and_world()
    for entry in chosen:
        if rank == 0:
            run_dir.reset(entry.name, keep_cache=entry.keep_cache_on_force)
            discard = getattr(entry.load(), "discard", None)
            if discard is not None:
                discard(config, run_dir)
    if world > 1:
        barrier(config, run_dir)()


def barrier(config: Config, run_dir: RunDir) -> Callable[[], None]:
    """Accelerate's process group (the one the trainer then uses), with the trainer's timeout
    (``process_group_timeout``): the other processes wait there while the main one runs a stage
    of its own."""
    from datetime import timedelta

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    minutes = config.train.process_group_timeout
    # The first PartialState fixes the process group for the whole process: without cpu= from the
    # launcher's ACCELERATE_USE_CPU it would be a one-process state on CPU machines (no barrier at all).
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu, timeout=timedelta(minutes=minutes)).wait_for_everyone
